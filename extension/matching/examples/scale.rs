//! How the cost of a payment grows with the number of customers and of open
//! items, on the easiest ledger there is (`synthetic::easy_ledger`): each
//! invoice paid exactly by one payment naming its number.
//!
//!     cargo run --release -p tenancy_matching --example scale [N ...] [--customers C ...]
//!
//! Prints the matching time per payment for every (N, C) asked.

mod synthetic;

use std::time::Instant;
use synthetic::easy_ledger;
use tenancy_matching::{reconcile, Grade, Rules};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args
        .iter()
        .position(|a| a == "--customers")
        .unwrap_or(args.len());
    let parse = |s: &[String]| -> Vec<usize> { s.iter().filter_map(|a| a.parse().ok()).collect() };
    let mut sizes = parse(&args[..split]);
    let mut customers = parse(args.get(split + 1..).unwrap_or(&[]));
    if sizes.is_empty() {
        sizes = vec![100_000];
    }
    if customers.is_empty() {
        customers = vec![400, 4_000, 40_000];
    }
    for &n in &sizes {
        for &c in &customers {
            let l = easy_ledger(42, n, c);
            let started = Instant::now();
            let matches =
                reconcile(&l.invoices, &l.transactions, &Rules::default()).expect("valid");
            let s = started.elapsed().as_secs_f64();
            let auto = matches.iter().filter(|m| m.grade == Grade::Auto).count();
            println!(
                "n={n:<8} customers={c:<7} {:>9.1} ms  {:>6.2} us per payment  {} matches, {auto} auto",
                s * 1e3,
                s * 1e6 / n as f64,
                matches.len()
            );
        }
    }
}
