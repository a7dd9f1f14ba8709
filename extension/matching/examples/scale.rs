//! How the cost of a payment grows with the number of customers and of open
//! items, on the easiest ledger there is (`synthetic::easy_ledger`): each
//! invoice paid exactly by one payment naming its number.
//!
//!     cargo run --release -p tenancy_matching --example scale [N ...] [--customers C ...] [--memory MB]
//!
//! Prints the matching time per payment for every (N, C) asked. With
//! `--memory`, the rows are matched in date windows under that budget, as
//! `tenancy.reconcile` does when they exceed `tenancy.reconcile_memory`.

mod synthetic;

use std::time::Instant;
use synthetic::easy_ledger;
use tenancy_matching::{reconcile_watched, Grade, Match, Phase, Rules, Watch, Windows};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let at = |flag: &str| args.iter().position(|a| a == flag).unwrap_or(args.len());
    let (split, memory_at) = (at("--customers"), at("--memory"));
    let parse = |s: &[String]| -> Vec<usize> { s.iter().filter_map(|a| a.parse().ok()).collect() };
    let mut sizes = parse(&args[..split.min(memory_at)]);
    let mut customers = parse(args.get(split + 1..memory_at.max(split + 1)).unwrap_or(&[]));
    let memory = parse(args.get(memory_at + 1..).unwrap_or(&[]))
        .first()
        .map(|mb| mb << 20);
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
            let mut phases = Phases::default();
            let matches = match memory {
                None => {
                    reconcile_watched(&l.invoices, &l.transactions, &Rules::default(), &mut phases)
                        .expect("valid")
                }
                Some(budget) => windowed(l.invoices, l.transactions, budget, &mut phases),
            };
            phases.tick(Phase::Preparing, 0);
            let s = started.elapsed().as_secs_f64();
            let auto = matches.iter().filter(|m| m.grade == Grade::Auto).count();
            println!(
                "n={n:<8} customers={c:<7} {:>9.1} ms  {:>6.2} us per payment  {} matches, {auto} auto",
                s * 1e3,
                s * 1e6 / n as f64,
                matches.len()
            );
            println!("  {}", phases.report());
        }
    }
}

/// The matches of windows under `budget` bytes, the sources sorted by date
/// as `Windows` takes them.
fn windowed(
    invoices: Vec<tenancy_matching::Invoice>,
    transactions: Vec<tenancy_matching::Transaction>,
    budget: usize,
    watch: &mut dyn Watch,
) -> Vec<Match> {
    let mut invoices: Vec<(String, _)> = invoices
        .into_iter()
        .enumerate()
        .map(|(k, i)| (format!("{k:08}"), i))
        .collect();
    let mut payments: Vec<(String, _)> = transactions
        .into_iter()
        .enumerate()
        .map(|(k, t)| (format!("{k:08}"), t))
        .collect();
    invoices.sort_by_key(|(_, i)| i.issue_date);
    payments.sort_by_key(|(_, t)| t.booked_on);
    let (mut invoices, mut payments) = (invoices.into_iter(), payments.into_iter());
    let mut w = Windows::new(Rules::default(), budget).expect("valid rules");
    let mut all = Vec::new();
    while let Some(keyed) = w
        .next(&mut || invoices.next(), &mut || payments.next(), watch)
        .expect("fits the budget")
    {
        all.extend(keyed.into_iter().map(|k| k.matched));
    }
    eprintln!("{} window(s)", w.counts().windows);
    all
}

/// The time spent in each phase, summed over windows.
#[derive(Default)]
struct Phases {
    at: Option<(Phase, Instant)>,
    spent: Vec<(Phase, f64)>,
}

impl Watch for Phases {
    fn tick(&mut self, phase: Phase, _done: usize) {
        let now = Instant::now();
        match self.at {
            Some((p, _)) if p == phase => return,
            Some((p, since)) => {
                let ms = now.duration_since(since).as_secs_f64() * 1e3;
                match self.spent.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, total)) => *total += ms,
                    None => self.spent.push((p, ms)),
                }
            }
            None => {}
        }
        self.at = Some((phase, now));
    }
}

impl Phases {
    fn report(&self) -> String {
        let parts: Vec<String> = self
            .spent
            .iter()
            .map(|(p, ms)| format!("{p:?} {ms:.1} ms"))
            .collect();
        parts.join(", ")
    }
}
