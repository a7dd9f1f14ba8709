//! Accuracy of the matcher on a synthetic ledger with ground truth:
//! precision of `auto`, recall of `auto` + `suggested`, and `auto` matches
//! among ambiguous duplicates (must be zero).
//!
//!     cargo run --release -p tenancy_matching --example accuracy [invoices] [seed]

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;
mod synthetic;

use synthetic::{ledger, Scenario};
use tenancy_matching::{reconcile, Grade, Reason, Rules};

fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.2}%", 100.0 * a as f64 / b as f64)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(42);
    let l = ledger(seed, n);
    let started = Instant::now();
    let matches = reconcile(&l.invoices, &l.transactions, &Rules::default()).expect("valid ledger");
    let elapsed = started.elapsed();

    let truth: HashSet<(usize, usize)> = l.truth.iter().copied().collect();
    let ambiguous = |t: usize| l.scenario[t] == Scenario::AmbiguousDuplicate;
    let auto: Vec<_> = matches.iter().filter(|m| m.grade == Grade::Auto).collect();
    let auto_right = auto
        .iter()
        .filter(|m| truth.contains(&(m.invoice, m.transaction)))
        .count();
    let found: HashSet<(usize, usize)> =
        matches.iter().map(|m| (m.invoice, m.transaction)).collect();
    let counted: Vec<_> = l.truth.iter().filter(|(_, t)| !ambiguous(*t)).collect();
    let recalled = counted.iter().filter(|p| found.contains(p)).count();
    let auto_found: HashSet<(usize, usize)> =
        auto.iter().map(|m| (m.invoice, m.transaction)).collect();
    let auto_recalled = counted.iter().filter(|p| auto_found.contains(p)).count();
    let auto_on_ambiguous = auto.iter().filter(|m| ambiguous(m.transaction)).count();

    println!(
        "ledger: {} invoices, {} transactions, {} true pairs (seed {seed})",
        l.invoices.len(),
        l.transactions.len(),
        l.truth.len()
    );
    println!(
        "matched in {:.1} ms: {} rows, {} auto",
        elapsed.as_secs_f64() * 1e3,
        matches.len(),
        auto.len()
    );
    println!(
        "auto precision               {} ({auto_right}/{})   target >= 99.5%",
        pct(auto_right, auto.len()),
        auto.len()
    );
    println!(
        "recall, auto + suggested     {} ({recalled}/{})   target >= 97%",
        pct(recalled, counted.len()),
        counted.len()
    );
    println!(
        "recall, auto only            {} ({auto_recalled}/{})",
        pct(auto_recalled, counted.len()),
        counted.len()
    );
    println!("auto among ambiguous dups    {auto_on_ambiguous}   target 0");
    // Suggestions cast a wider net: tied alternatives and payments outside
    // the date window lower their precision by design.
    let suggested: Vec<_> = matches
        .iter()
        .filter(|m| m.grade == Grade::Suggested)
        .collect();
    let suggested_right = suggested
        .iter()
        .filter(|m| truth.contains(&(m.invoice, m.transaction)))
        .count();
    println!(
        "suggested precision          {} ({suggested_right}/{})",
        pct(suggested_right, suggested.len()),
        suggested.len()
    );
    let is_tie =
        |m: &&tenancy_matching::Match| m.reasons.iter().any(|r| matches!(r, Reason::Tie { .. }));
    let mut ties: BTreeMap<usize, (usize, bool)> = BTreeMap::new();
    for m in matches.iter().filter(is_tie) {
        let e = ties.entry(m.transaction).or_default();
        e.0 += 1;
        e.1 |= truth.contains(&(m.invoice, m.transaction));
    }
    let with_truth = ties.values().filter(|(_, right)| *right).count();
    let rows: usize = ties.values().map(|(n, _)| n).sum();
    println!(
        "tie cases                    {} payments offered {rows} tied rows; the true invoice among them in {}",
        ties.len(),
        pct(with_truth, ties.len())
    );
    let outside = matches
        .iter()
        .filter(|m| {
            m.reasons
                .iter()
                .any(|r| matches!(r, Reason::OutsideWindow { .. }))
        })
        .count();
    println!("outside the date window      {outside} suggested");
    println!();
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>10}",
        "scenario", "pairs", "found", "auto", "wrong auto"
    );
    let mut by: BTreeMap<Scenario, (usize, usize, usize, usize)> = BTreeMap::new();
    for &(i, t) in &l.truth {
        let e = by.entry(l.scenario[t]).or_default();
        e.0 += 1;
        e.1 += usize::from(found.contains(&(i, t)));
        e.2 += usize::from(auto_found.contains(&(i, t)));
    }
    for m in &auto {
        if !truth.contains(&(m.invoice, m.transaction)) {
            by.entry(l.scenario[m.transaction]).or_default().3 += 1;
        }
    }
    for (s, (pairs, f, a, wrong)) in by {
        println!(
            "{:<24} {:>8} {:>8} {:>8} {:>10}",
            format!("{s:?}"),
            pairs,
            f,
            a,
            wrong
        );
    }
}
