//! The candidate pairs: for each payment, the invoices its description may
//! name and those of about its amount in its date window, with their
//! evidence and score.

use crate::index::{AmountIndex, Facts, Grouped, NameFits, Prepared};
use crate::refs::{Found, RefSweep};
use crate::score::{
    amount_fit, amount_score, date_score, reference_score, round4, unit_rules, AmountFit, UnitFit,
    W_AMOUNT, W_COUNTERPARTY, W_DATE, W_REFERENCE,
};
use crate::text::RefEvidence;
use crate::watch::{Phase, Watch, PARALLEL_FROM};
use rust_decimal::Decimal;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub(crate) t: usize,
    pub(crate) inv: usize,
    pub(crate) fit: AmountFit,
    pub(crate) reference: Option<RefEvidence>,
    pub(crate) counterparty: f64,
    pub(crate) same_currency: bool,
    pub(crate) score: f64,
}

impl Candidate {
    /// Allocated before split payments, in score order: a whole settlement
    /// with an invoice number or the exact amount, and a partial payment
    /// from the invoice's counterparty naming it exactly. A fee-sized gap
    /// without an invoice number is weaker evidence than several of the
    /// payer's invoices adding up to the cent, so it waits for the split
    /// search; so do overpayments, partial payments on a mistyped number or
    /// from someone else, and every match across currencies.
    pub(crate) fn first_pass(&self) -> bool {
        if !self.same_currency {
            return false;
        }
        match self.fit {
            AmountFit::Equal => true,
            AmountFit::Tolerance | AmountFit::Fee => self.reference.is_some(),
            AmountFit::Partial => {
                self.reference == Some(RefEvidence::Exact) && self.counterparty >= 0.5
            }
            AmountFit::Over => false,
        }
    }
}

/// Payments between two ticks of the watch (or checks of the stop flag).
const TICK_EVERY: usize = 1_024;

/// Candidate (transaction, invoice) pairs with their evidence and score:
/// the invoices whose number the description may carry, and those of about
/// the payment's amount, in the payment's date window. Also the invoices
/// each description may name, for the split search. The payments are
/// looked up in two halves by date, on two threads when there are enough.
pub(crate) fn candidates(
    p: &Prepared,
    amounts: &AmountIndex,
    watch: &mut dyn Watch,
) -> (Vec<Candidate>, Named) {
    // The payments by day, as `RefSweep` takes them.
    let mut by_day: Vec<usize> = (0..p.transactions.len())
        .filter(|&ti| p.transactions[ti].amount > Decimal::ZERO)
        .collect();
    by_day.sort_unstable_by_key(|&ti| (p.transactions[ti].booked_on, ti));
    let (first, second) = by_day.split_at(by_day.len() / 2);
    let stop = AtomicBool::new(false);
    let mut one = if by_day.len() < 2 * PARALLEL_FROM {
        None
    } else {
        std::thread::scope(|s| {
            let mut helper = None;
            let helped = watch.spawning(&mut || {
                helper =
                    Some(s.spawn(|| {
                        lookups(p, amounts, second, &mut |_| !stop.load(Ordering::Relaxed))
                    }));
            });
            let helper = helper.filter(|_| helped)?;
            // Should `tick` unwind, the helper stops before the scope joins it.
            let stop_helper = StopOnDrop(&stop);
            let mut out = lookups(p, amounts, first, &mut |done| {
                watch.tick(Phase::Candidates, done);
                true
            });
            let theirs = helper
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            drop(stop_helper);
            out.0.extend(theirs.0);
            out.1.extend(theirs.1);
            Some(out)
        })
    };
    let (out, named_pairs) = one.take().unwrap_or_else(|| {
        lookups(p, amounts, &by_day, &mut |done| {
            watch.tick(Phase::Candidates, done);
            true
        })
    });
    (
        out,
        Grouped::new(p.transactions.len(), named_pairs.iter().copied()),
    )
}

/// Sets the flag when dropped, also while unwinding.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The candidates of the payments `by_day` (ascending by day), and the
/// (payment, invoice) pairs each description may name. `go` is asked every
/// `TICK_EVERY` payments whether to go on; when it says no, what is found
/// so far is returned (the caller is stopping anyway).
fn lookups(
    p: &Prepared,
    amounts: &AmountIndex,
    by_day: &[usize],
    go: &mut dyn FnMut(usize) -> bool,
) -> (Vec<Candidate>, Vec<(usize, usize)>) {
    let (Some(&first), Some(&last)) = (by_day.first(), by_day.last()) else {
        return (Vec::new(), Vec::new());
    };
    let (from, to) = (
        p.transactions[first].booked_on,
        p.transactions[last].booked_on,
    );
    let rules = p.rules;
    let widest = rules.amount_tolerance.max(rules.fee_ceiling);
    let mut out = Vec::new();
    let mut named = Vec::new();
    let mut fits = NameFits::default();
    let mut payers = Vec::new();
    // An invoice the description does not name is a candidate only with an
    // equal amount, a rounding gap or a fee (`amount_fit`). With exact sums
    // all of those are in the window of amounts below, so `RefSweep` need
    // not return them too.
    let unnamed_too = !p.exact_sums;
    // A percentage tolerance q accepts an invoice of `open` for a payment of
    // `paid` when |open - paid| <= open * q: from paid / (1 + q), which is
    // above paid - paid * q, up to paid / (1 - q) = paid + paid * q / (1 - q)
    // (no bound when q is 1). The window takes twice those slacks, so that
    // rounding never narrows it; per unit paid, worked out once here.
    let q = rules.amount_tolerance_pct / Decimal::ONE_HUNDRED;
    let below = q * Decimal::TWO;
    let above = below.checked_div(Decimal::ONE - q);
    let unit_rules = unit_rules(p);
    // Only the invoices whose window meets these payments' days.
    let mut sweep = RefSweep::new(p, 0, &|k| {
        let f = p.facts_at(k);
        f.from <= to && f.to >= from
    });
    let mut named_pairs = Vec::new();
    for (done, &ti) in by_day.iter().enumerate() {
        if done % TICK_EVERY == 0 && done > 0 && !go(done) {
            break;
        }
        let t = &p.transactions[ti];
        let units = unit_rules.and_then(|u| u.paying(p, t.amount));
        named.clear();
        lookup(p, &mut sweep, ti, unnamed_too, &mut named);
        named_pairs.extend(named.iter().filter(|n| n.named).map(|n| (ti, n.inv)));
        for n in &named {
            let reference = if n.named {
                p.reference_at(n.place as usize).find_in(p.description(ti))
            } else {
                None
            };
            let f = p.facts_at(n.place as usize);
            out.extend(candidate(p, ti, n.inv, f, reference, units, &mut fits));
        }
        // Amounts near the payment: [amount - tolerance, amount + max(tolerance, fee)],
        // widened by the percentage's slacks; `amount_fit` checks exactly.
        // (Without a percentage: the same bounds, without decimal products.)
        let (lo, hi) = if q.is_zero() {
            (t.amount - rules.amount_tolerance, t.amount + widest)
        } else {
            let hi = above
                .and_then(|r| t.amount.checked_mul(r))
                .and_then(|s| (t.amount + widest).checked_add(s));
            (
                t.amount - rules.amount_tolerance - t.amount * below,
                hi.unwrap_or(Decimal::MAX),
            )
        };
        // Of those, the ones `unnamed_may_fit` lets through: the invoices of
        // the payers that fit, and anyone's of the exact amount.
        payers.clear();
        payers.extend_from_slice(fits.fitting(p, ti));
        let keys = &p.keys;
        let (lo_key, hi_key) = (keys.at_least(lo), keys.at_most(hi));
        let exact = (lo <= t.amount && t.amount <= hi)
            .then(|| (None, keys.at_least(t.amount), keys.at_most(t.amount)));
        let near = payers
            .iter()
            .map(|&name| (Some(name), lo_key, hi_key))
            .chain(exact);
        for (name, lo, hi) in near {
            for e in amounts.near(p, ti, name, lo, hi) {
                let ii = e.inv as usize;
                if (name.is_some() || payers.binary_search(&e.name).is_err())
                    && (e.from..=e.to).contains(&t.booked_on)
                    && named.binary_search_by_key(&ii, |n| n.inv).is_err()
                {
                    let f = p.facts_at(e.place as usize);
                    out.extend(candidate(p, ti, ii, f, None, units, &mut fits));
                }
            }
        }
    }
    (out, named_pairs)
}

/// Per payment: the invoices its description may name, ascending.
pub(crate) type Named = Grouped<usize>;

/// `RefSweep::lookup` for payment `ti`, appended to `out` by invoice, each once.
pub(crate) fn lookup(
    p: &Prepared,
    sweep: &mut RefSweep,
    ti: usize,
    unnamed_too: bool,
    out: &mut Vec<Found>,
) {
    let start = out.len();
    sweep.lookup(
        &p.order,
        p.description(ti),
        p.transactions[ti].booked_on,
        unnamed_too,
        out,
    );
    out[start..].sort_unstable();
    let mut kept = start;
    for k in start..out.len() {
        if kept > start && out[kept - 1].inv == out[k].inv {
            out[kept - 1].named |= out[k].named;
        } else {
            out[kept] = out[k];
            kept += 1;
        }
    }
    out.truncate(kept);
}

/// Whether an invoice whose number the description does not carry may still
/// be a candidate: only with the exact amount or a counterparty that fits
/// (a fee or rounding gap needs one, see `candidate`).
pub(crate) fn unnamed_may_fit(
    p: &Prepared,
    ti: usize,
    f: &Facts,
    units: Option<UnitFit>,
    fits: &mut NameFits,
) -> bool {
    fits.fits(p, f.name, ti)
        || units.map_or_else(
            || (f.open - p.transactions[ti].amount).is_zero(),
            |u| f.key == u.paid,
        )
}

/// Payment `ti` and invoice `ii` (whose facts are `f`) as a candidate, if
/// the evidence is enough; `reference` is `p.reference(ii, ti)`, `units`
/// the payment's `UnitFit`.
pub(crate) fn candidate(
    p: &Prepared,
    ti: usize,
    ii: usize,
    f: &Facts,
    reference: Option<RefEvidence>,
    units: Option<UnitFit>,
    fits: &mut NameFits,
) -> Option<Candidate> {
    let (rules, t) = (p.rules, &p.transactions[ti]);
    // `f.open <= 0`, without comparing decimals.
    if f.open.is_zero() || f.open.is_sign_negative() {
        return None;
    }
    let same_currency = p.same_currency(f, ti);
    if !same_currency && !rules.allow_currency_mismatch {
        return None;
    }
    if reference.is_none() && !unnamed_may_fit(p, ti, f, units, fits) {
        return None;
    }
    let fit = if same_currency {
        match units {
            Some(u) => u.fit(f.key, reference.is_some())?,
            None => amount_fit(rules, f.open, t.amount, reference.is_some())?,
        }
    } else if reference == Some(RefEvidence::Exact) {
        AmountFit::Partial
    } else {
        return None;
    };
    let counterparty = fits.get(p, f.name, ti);
    // A near amount alone is common in a large ledger: a fee or a
    // rounding gap counts only with a reference or the counterparty.
    if matches!(fit, AmountFit::Fee | AmountFit::Tolerance)
        && reference.is_none()
        && counterparty < 0.5
    {
        return None;
    }
    let date = date_score(rules, f.issue, f.end, t.booked_on)?;
    let score = round4(
        W_AMOUNT * amount_score(fit)
            + W_REFERENCE * reference_score(reference)
            + W_DATE * date
            + W_COUNTERPARTY * counterparty,
    );
    Some(Candidate {
        t: ti,
        inv: ii,
        fit,
        reference,
        counterparty,
        same_currency,
        score,
    })
}
