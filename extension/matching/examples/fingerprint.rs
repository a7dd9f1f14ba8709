//! Timing and a digest of the full output of `reconcile` (every match, its
//! score, grade, group and reasons, in order) on synthetic ledgers of 2,000
//! to 100,000 invoices, for several seeds and rule sets. Run it before and
//! after changing the matcher: a speed-up must not move a digest. With a
//! DIR, it also writes each result's Debug text there, to diff.
//!
//!     cargo run --release -p tenancy_matching --example fingerprint [--all] [DIR]
//!
//! `--all` also runs the wide and one-invoice rules on every large ledger.

use rust_decimal::Decimal;
use std::time::Instant;
mod synthetic;

use synthetic::ledger;
use tenancy_matching::{reconcile, Rules};

/// FNV-1a, 64 bits: stable across Rust versions, unlike std's hashers.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn rule_sets() -> Vec<(&'static str, Rules)> {
    let wide = Rules {
        amount_tolerance: Decimal::new(100, 2),
        amount_tolerance_pct: Decimal::ONE,
        fee_ceiling: Decimal::new(50, 0),
        days_before: 15,
        days_after: 120,
        max_invoices_per_payment: 8,
        allow_currency_mismatch: true,
        ..Rules::default()
    };
    let single = Rules {
        max_invoices_per_payment: 1,
        ..Rules::default()
    };
    vec![
        ("default", Rules::default()),
        ("wide", wide),
        ("single", single),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = args.iter().any(|a| a == "--all");
    let dir = args.iter().find(|a| *a != "--all");
    for (name, rules) in rule_sets() {
        for n in [2_000, 10_000, 100_000] {
            for seed in [1, 7, 42, 99, 2024] {
                // The non-default rule sets on the large ledger only once, to keep it quick.
                if !all && name != "default" && n == 100_000 && seed != 42 {
                    continue;
                }
                let l = ledger(seed, n);
                let started = Instant::now();
                let matches = reconcile(&l.invoices, &l.transactions, &rules).expect("valid");
                let ms = started.elapsed().as_secs_f64() * 1e3;
                let text = format!("{matches:#?}");
                println!(
                    "{name:<8} n={n:<7} seed={seed:<5} {:>7} matches {:016x} {ms:>9.1} ms",
                    matches.len(),
                    fnv1a(text.as_bytes())
                );
                if let Some(dir) = &dir {
                    std::fs::write(format!("{dir}/{name}_{n}_{seed}.txt"), text).expect("write");
                }
            }
        }
    }
}
