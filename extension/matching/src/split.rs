//! Split payments: one payment settling several invoices of the same
//! payer, found by a bounded subset sum over the payer's open invoices.

use crate::allocate::{evidence, Books};
use crate::candidates::{Candidate, Named};
use crate::index::{AmountIndex, NameFits, Prepared};
use crate::output::{Grade, Match, Reason};
use crate::score::{date_fit, round4, W_AMOUNT, W_COUNTERPARTY, W_DATE, W_REFERENCE};
use crate::subset_sum::SubsetSum;
use crate::text::RefEvidence;
use crate::Day;
use rust_decimal::Decimal;

/// At most this many invoices are tried for one split payment: the payer's
/// open invoices, those named in the description first, then those issued
/// closest to the payment; the invoices a batch pays are often a month old.
pub(crate) const SPLIT_CANDIDATES: usize = 24;

/// One payment settling several invoices of the same counterparty. Only a
/// unique subset that scores `min_auto_score` (every invoice number in the
/// description) may be `auto`; without invoice numbers it stays a suggestion.
pub(crate) struct Split {
    pub(crate) t: usize,
    pub(crate) invoices: Vec<usize>,
    /// Subsets that fit the amount, counted up to two (two: not unique).
    pub(crate) fits: usize,
    pub(crate) counterparty: f64,
    pub(crate) score: f64,
}

/// The best subset of 2..=max_invoices_per_payment untouched invoices in
/// `pool` whose open amounts sum to payment `ti`: a bounded subset-sum,
/// invoices named in the description first, then those issued closest to
/// the payment. `named` (sorted) holds the invoices of the pool that the
/// description may name; it names none of the others.
pub(crate) fn find_split(
    p: &Prepared,
    ti: usize,
    mut pool: Vec<usize>,
    named: &[usize],
    open: &[Decimal],
    names: &mut NameFits,
) -> Option<Split> {
    let (rules, invoices, t) = (p.rules, p.invoices, &p.transactions[ti]);
    let max_k = rules.max_invoices_per_payment;
    if max_k < 2 {
        return None;
    }
    let reference = |i: usize| {
        named
            .binary_search(&i)
            .ok()
            .and_then(|_| p.reference(i, ti))
    };
    pool.sort_unstable();
    pool.dedup();
    // Untouched (`open[i] == f.open`), positive and below the payment; the
    // cheap tests first. On units when the payment has them.
    let paid = p.keys.units(t.amount);
    pool.retain(|&i| {
        let f = p.facts(i);
        p.same_currency(f, ti)
            && p.in_window(f, ti)
            && f.key >= 0
            && paid.map_or_else(|| f.open < t.amount, |paid| f.key < paid)
            && (names.fits(p, f.name, ti) || reference(i) == Some(RefEvidence::Exact))
            && open[i] == f.open
    });
    if pool.len() < 2 {
        return None;
    }
    let unnamed = |i: usize| reference(i).is_none();
    // The first SPLIT_CANDIDATES by (unnamed, distance, position): as the
    // keys are unique, those picked and their order are those of a full sort.
    let mut ranked: Vec<(bool, Day, usize)> = pool
        .iter()
        .map(|&i| (unnamed(i), (t.booked_on - p.facts(i).issue).abs(), i))
        .collect();
    if ranked.len() > SPLIT_CANDIDATES {
        ranked.select_nth_unstable(SPLIT_CANDIDATES);
        ranked.truncate(SPLIT_CANDIDATES);
    }
    ranked.sort_unstable();
    let pool: Vec<usize> = ranked.into_iter().map(|(_, _, i)| i).collect();
    // The same search on units, when the amounts and the tolerance are whole
    // numbers of them (as `SubsetSum::run` would find, at a finer scale).
    let found = match (paid, p.keys.units(rules.amount_tolerance)) {
        (Some(paid), Some(tolerance)) => {
            let amounts: Vec<i64> = pool.iter().map(|&i| p.facts(i).key).collect();
            SubsetSum::search(&amounts, paid, tolerance, max_k)
        }
        _ => {
            let amounts: Vec<Decimal> = pool.iter().map(|&i| open[i]).collect();
            SubsetSum::run(&amounts, t.amount, rules.amount_tolerance, max_k)
        }
    };
    let fits = found.len().min(2);
    // The preferred subset is the one that needs the shortest head of the
    // ranked pool (then the fewest invoices): what a smaller pool would
    // have found. Many invoices deep in the pool fit by coincidence more
    // often than a few near the top.
    let best: Vec<usize> = found
        .iter()
        .min_by_key(|f| (f.last().copied(), f.len(), f.as_slice()))?
        .iter()
        .map(|&k| pool[k])
        .collect();
    let with_ref = best.iter().filter(|&&i| !unnamed(i)).count();
    let ref_frac = with_ref as f64 / best.len() as f64;
    let counterparty = best
        .iter()
        .map(|&i| names.get(p, p.facts(i).name, ti))
        .fold(1.0_f64, f64::min);
    let date = best
        .iter()
        .filter_map(|&i| date_fit(rules, &invoices[i], t))
        .fold(1.0_f64, f64::min);
    let score =
        round4(W_AMOUNT + W_REFERENCE * ref_frac + W_DATE * date + W_COUNTERPARTY * counterparty);
    Some(Split {
        t: ti,
        invoices: best,
        fits,
        counterparty,
        score,
    })
}

/// Payments whose description names two or more invoices exactly, and whose
/// amount is the sum of named invoices: as strong as a whole settlement with
/// a reference, so they are allocated in the first pass, by score. The named
/// invoices are the candidates with an exact reference.
pub(crate) fn named_splits(p: &Prepared, cands: &[Candidate], open: &[Decimal]) -> Vec<Split> {
    let mut named: Vec<(usize, usize)> = cands
        .iter()
        .filter(|c| c.reference == Some(RefEvidence::Exact))
        .map(|c| (c.t, c.inv))
        .collect();
    named.sort_unstable();
    let mut fits = NameFits::default();
    let mut out: Vec<Split> = named
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|pairs| pairs.len() >= 2)
        .filter_map(|pairs| {
            let pool: Vec<usize> = pairs.iter().map(|&(_, inv)| inv).collect();
            find_split(p, pairs[0].0, pool.clone(), &pool, open, &mut fits)
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.t.cmp(&b.t)));
    out
}

/// Allocates a split if the payment and all its invoices are untouched.
pub(crate) fn apply_split(s: &Split, p: &Prepared, books: &mut Books) {
    let t = &p.transactions[s.t];
    if books.t_left[s.t] != t.amount
        || s.invoices
            .iter()
            .any(|&i| books.open[i] != p.invoices[i].open_amount)
    {
        return;
    }
    let unique = s.fits == 1;
    let auto = unique && s.score >= p.rules.min_auto_score;
    let mut remaining = t.amount;
    for &i in &s.invoices {
        let allocated = books.open[i].min(remaining);
        remaining -= allocated;
        books.open[i] -= allocated;
        let inv = &p.invoices[i];
        let mut reasons = vec![Reason::SplitPayment {
            invoices: s.invoices.len(),
        }];
        let similarity = books.similarity(s.counterparty);
        reasons.extend(evidence(inv, t, p.reference(i, s.t), similarity));
        if !unique {
            reasons.push(Reason::Ambiguous { candidates: s.fits });
        }
        books.matches.push(Match {
            invoice: i,
            transaction: s.t,
            allocated,
            score: s.score,
            grade: if auto { Grade::Auto } else { Grade::Suggested },
            group: 0,
            reasons,
        });
    }
    books.t_left[s.t] = Decimal::ZERO;
}

/// Split payments among what the first pass left: the payer's open
/// invoices (by counterparty or named in the description) near the payment.
pub(crate) fn split_payments(
    p: &Prepared,
    amounts: &AmountIndex,
    named: &Named,
    books: &mut Books,
    step: &mut dyn FnMut(),
) {
    if p.rules.max_invoices_per_payment < 2 {
        return;
    }
    let mut fits = NameFits::default();
    for (ti, t) in p.transactions.iter().enumerate() {
        step();
        if t.amount <= Decimal::ZERO || books.t_left[ti] != t.amount {
            continue;
        }
        // Those the description does not name need a counterparty that fits
        // to pass `find_split`, and then `payers_invoices` has them.
        let named = named.of(ti);
        let mut pool = named.to_vec();
        let paid = p.keys.units(t.amount);
        amounts.payers_invoices(p, ti, paid, &mut fits, &mut pool);
        if let Some(s) = find_split(p, ti, pool, named, &books.open, &mut fits) {
            apply_split(&s, p, books);
        }
    }
}
