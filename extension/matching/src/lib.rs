//! Matching invoices against bank transactions, with the evidence for every
//! match. Pure Rust with exact decimals: no Postgres, no floats for money.
//!
//! The result is deterministic for the same input: candidates are ranked by
//! score and then by their positions in the input, never by hash order.

mod allocate;
mod candidates;
pub mod explain;
mod index;
mod input;
mod names;
mod output;
mod outside;
mod refs;
pub mod rules;
mod score;
mod split;
mod subset_sum;
mod text;
mod units;
pub mod watch;
pub mod windows;

pub use input::{Day, InputError, Invoice, Transaction, MAX_AMOUNT};
pub use output::{Grade, Match, Reason};
pub use rules::Rules;
pub use watch::{Phase, Unwatched, Watch};
pub use windows::{Counts, Key as RowKey, Keyed, WindowError, Windows};

use allocate::{allocate, Books, Rivals};
use index::Prepared;
use rust_decimal::Decimal;
use split::{apply_split, named_splits, split_payments};

/// Matches invoices against transactions. Each transaction is allocated at
/// most its amount, each invoice at most its open amount (tied alternatives
/// aside, see `Reason::Tie`).
pub fn reconcile(
    invoices: &[Invoice],
    transactions: &[Transaction],
    rules: &Rules,
) -> Result<Vec<Match>, InputError> {
    reconcile_watched(invoices, transactions, rules, &mut Unwatched)
}

/// `reconcile`, telling `watch` how it goes (and letting it stop the call).
pub fn reconcile_watched(
    invoices: &[Invoice],
    transactions: &[Transaction],
    rules: &Rules,
    watch: &mut dyn Watch,
) -> Result<Vec<Match>, InputError> {
    matched(invoices, transactions, rules, watch).map(|(matches, _)| matches)
}

/// The matches, and what is still open on each invoice after them.
fn matched(
    invoices: &[Invoice],
    transactions: &[Transaction],
    rules: &Rules,
    watch: &mut dyn Watch,
) -> Result<(Vec<Match>, Vec<Decimal>), InputError> {
    input::validate(invoices, transactions)?;
    rules.check()?;
    // No gap between two valid amounts reaches MAX_AMOUNT, so a larger
    // tolerance or fee ceiling accepts exactly what MAX_AMOUNT does, and
    // bounded, sums with them cannot overflow.
    let rules = &Rules {
        amount_tolerance: rules.amount_tolerance.min(MAX_AMOUNT),
        fee_ceiling: rules.fee_ceiling.min(MAX_AMOUNT),
        ..rules.clone()
    };
    watch.tick(Phase::Preparing, 0);
    let p = Prepared::new(invoices, transactions, rules, watch);
    let amounts = index::AmountIndex::new(&p);
    watch.tick(Phase::Candidates, 0);
    let (mut cands, named_by_t) = candidates::candidates(&p, &amounts, watch);
    watch.tick(Phase::Allocating, 0);
    // (score, t, inv) is unique per candidate: an unstable sort is as good.
    cands.sort_unstable_by_key(|c| (!score::total_order(c.score), c.t, c.inv));

    // Who else each payment and invoice could be settled by, for ties.
    let rivals = Rivals::new(&cands, transactions.len(), invoices.len());
    let mut books = Books {
        t_left: transactions
            .iter()
            .map(|t| t.amount.max(Decimal::ZERO))
            .collect(),
        open: invoices.iter().map(|i| i.open_amount).collect(),
        matches: Vec::new(),
        similarities: Vec::new(),
    };
    // First, by score: whole settlements, partial payments naming their
    // invoice, and payments naming every invoice they split into. Then split
    // payments among what is left, then the rest (overpayments, partial
    // payments on a mistyped number): a payment that exactly covers several
    // invoices is a split, not an overpayment of the first one.
    let named = named_splits(&p, &cands, &books.open);
    let mut named = named.iter().peekable();
    let mut ticks = Ticks::new(watch);
    for c in cands.iter().filter(|c| c.first_pass()) {
        while let Some(s) = named.next_if(|s| s.score > c.score) {
            apply_split(s, &p, &mut books);
        }
        allocate(c, &p, &rivals, &mut books);
        ticks.step();
    }
    for s in named {
        apply_split(s, &p, &mut books);
    }
    split_payments(&p, &amounts, &named_by_t, &mut books, &mut || ticks.step());
    for c in cands.iter().filter(|c| !c.first_pass()) {
        allocate(c, &p, &rivals, &mut books);
        ticks.step();
    }
    outside::outside_window(&p, &mut books);

    let mut matches = books.matches;

    matches.sort_by(|a, b| {
        a.transaction
            .cmp(&b.transaction)
            .then(a.invoice.cmp(&b.invoice))
    });
    // Groups are numbered by transaction, in output order.
    let mut group = (0, None);
    for m in &mut matches {
        if group.1 != Some(m.transaction) {
            group = (group.0 + 1, Some(m.transaction));
        }
        m.group = group.0;
    }
    Ok((matches, books.open))
}

/// Steps of the allocation, told to the watch every `EVERY` of them.
struct Ticks<'a> {
    watch: &'a mut dyn Watch,
    done: usize,
}

impl<'a> Ticks<'a> {
    const EVERY: usize = 4_096;

    fn new(watch: &'a mut dyn Watch) -> Self {
        Ticks { watch, done: 0 }
    }

    fn step(&mut self) {
        self.done += 1;
        if self.done % Self::EVERY == 0 {
            self.watch.tick(Phase::Allocating, self.done);
        }
    }
}

#[cfg(test)]
mod tests;
