//! The app-side baseline of `scripts/bench_reconcile`: what an application
//! service does without pg_tenancy's reconcile -- load the tenant's open
//! invoices and unmatched transactions over a connection, then run the same
//! matcher (`tenancy_matching`) on them in its own memory. Prints the best
//! of RUNS: load time, match time and the number of matches.
//!
//!     app_side DATABASE_URL TENANT INVOICES TRANSACTIONS [RUNS]

use rust_decimal::Decimal;
use sqlx::{Connection, Executor, PgConnection, Row};
use std::time::{Duration, Instant};
use tenancy_matching::{reconcile, Invoice, Rules, Transaction};

async fn load(
    c: &mut PgConnection,
    invoices: &str,
    transactions: &str,
) -> Result<(Vec<(String, Invoice)>, Vec<(String, Transaction)>), sqlx::Error> {
    let day = |d: Option<i32>| d.unwrap_or_default();
    let invs = sqlx::query(&format!(
        "SELECT id::text, amount, currency, issue_date - DATE '2000-01-01', due_date - DATE '2000-01-01',
                reference, counterparty, open_amount
         FROM {invoices} WHERE (open_amount <> 0 OR open_amount IS NULL)"
    ))
    .fetch_all(&mut *c)
    .await?
    .iter()
    .map(|r| {
        (
            r.get::<String, _>(0),
            Invoice {
                amount: r.get(1),
                currency: r.get(2),
                issue_date: day(r.get(3)),
                due_date: r.get(4),
                reference: r.get::<Option<String>, _>(5).unwrap_or_default(),
                counterparty: r.get::<Option<String>, _>(6).unwrap_or_default(),
                open_amount: r.get(7),
            },
        )
    })
    .collect();
    let txs = sqlx::query(&format!(
        "SELECT id::text, least(amount, unmatched_amount), currency, booked_on - DATE '2000-01-01',
                description, counterparty
         FROM {transactions} WHERE (unmatched_amount <> 0 OR unmatched_amount IS NULL)"
    ))
    .fetch_all(&mut *c)
    .await?
    .iter()
    .map(|r| {
        (
            r.get::<String, _>(0),
            Transaction {
                amount: r.get::<Decimal, _>(1),
                currency: r.get(2),
                booked_on: day(r.get(3)),
                description: r.get::<Option<String>, _>(4).unwrap_or_default(),
                counterparty: r.get::<Option<String>, _>(5).unwrap_or_default(),
            },
        )
    })
    .collect();
    Ok((invs, txs))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        return Err("usage: app_side DATABASE_URL TENANT INVOICES TRANSACTIONS [RUNS]".into());
    }
    let runs: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut c = PgConnection::connect(&args[1]).await?;
    let mut best: Option<(Duration, Duration, usize)> = None;
    for _ in 0..runs {
        c.execute("BEGIN").await?;
        sqlx::query("SELECT tenancy.set_tenant($1)")
            .bind(&args[2])
            .execute(&mut c)
            .await?;
        c.execute("SET LOCAL ROLE authenticated").await?;
        let started = Instant::now();
        let (invs, txs) = load(&mut c, &args[3], &args[4]).await?;
        let (invoice_ids, invoices): (Vec<String>, Vec<Invoice>) = invs.into_iter().unzip();
        let (transaction_ids, transactions): (Vec<String>, Vec<Transaction>) =
            txs.into_iter().unzip();
        let loaded = started.elapsed();
        let matches = reconcile(&invoices, &transactions, &Rules::default())?;
        // Named by their ids, as reconcile returns them.
        let named: Vec<(&str, &str)> = matches
            .iter()
            .map(|m| {
                (
                    invoice_ids[m.invoice].as_str(),
                    transaction_ids[m.transaction].as_str(),
                )
            })
            .collect();
        let total = started.elapsed();
        c.execute("ROLLBACK").await?;
        if best.is_none_or(|(t, _, _)| total < t) {
            best = Some((total, loaded, named.len()));
        }
    }
    if let Some((total, loaded, n)) = best {
        println!(
            "app-side {:.1} ms load {:.1} ms match {:.1} ms matches {n}",
            total.as_secs_f64() * 1e3,
            loaded.as_secs_f64() * 1e3,
            (total - loaded).as_secs_f64() * 1e3
        );
    }
    Ok(())
}
