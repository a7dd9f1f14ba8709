//! Writes a synthetic ledger with ground truth as CSV files for the
//! reconciliation benchmark (scripts/bench_reconcile loads them with COPY):
//! invoices.csv, transactions.csv and truth.csv in DIR. Ids are row numbers;
//! dates are day numbers from 2000-01-01. With CUSTOMERS, the easy ledger
//! of that many customers (`synthetic::easy_ledger`) instead.
//!
//!     cargo run --release -p tenancy_matching --example ledger_csv -- N SEED DIR [CUSTOMERS]

use std::fs::File;
use std::io::{BufWriter, Write};
mod synthetic;

use synthetic::{easy_ledger, ledger};

fn field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(42);
    let dir = args.get(3).cloned().unwrap_or_else(|| ".".into());
    let l = match args.get(4).and_then(|s| s.parse().ok()) {
        Some(customers) => easy_ledger(seed, n, customers),
        None => ledger(seed, n),
    };
    let mut w = BufWriter::new(File::create(format!("{dir}/invoices.csv"))?);
    for (i, inv) in l.invoices.iter().enumerate() {
        let due = inv.due_date.map(|d| d.to_string()).unwrap_or_default();
        writeln!(
            w,
            "{i},{},{},{},{due},{},{},{}",
            inv.amount,
            inv.currency,
            inv.issue_date,
            field(&inv.reference),
            field(&inv.counterparty),
            inv.open_amount
        )?;
    }
    let mut w = BufWriter::new(File::create(format!("{dir}/transactions.csv"))?);
    for (i, t) in l.transactions.iter().enumerate() {
        writeln!(
            w,
            "{i},{},{},{},{},{}",
            t.amount,
            t.currency,
            t.booked_on,
            field(&t.description),
            field(&t.counterparty)
        )?;
    }
    let mut w = BufWriter::new(File::create(format!("{dir}/truth.csv"))?);
    for (inv, t) in &l.truth {
        writeln!(w, "{inv},{t}")?;
    }
    Ok(())
}
