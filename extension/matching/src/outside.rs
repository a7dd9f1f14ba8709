//! A wider net for suggestions than for `auto`: a payment that nothing else
//! took, that names an invoice's number exactly and pays exactly what is
//! still open on it, but falls outside the invoice's date window by at most
//! `Rules::suggestion_days` days (a prepayment a week before the invoice
//! date, a payment a month late), is offered as a suggestion with the gap as
//! a reason. Never `auto`, and looked for only after every other pass, so it
//! never takes an invoice or a payment from a match inside the window.

use crate::allocate::{evidence, Books};
use crate::index::{NameFits, Prepared};
use crate::output::{Grade, Match, Reason};
use crate::refs::RefSweep;
use crate::score::{round4, W_AMOUNT, W_COUNTERPARTY, W_REFERENCE};
use crate::text::RefEvidence;
use rust_decimal::Decimal;

/// How far payment day `day` lies outside `[from, to]`, in days (0 inside).
fn days_outside(from: i32, to: i32, day: i32) -> i32 {
    if day < from {
        from - day
    } else {
        day.saturating_sub(to).max(0)
    }
}

pub(crate) fn outside_window(p: &Prepared, books: &mut Books) {
    let margin = p.rules.suggestion_days;
    if margin == 0 {
        return;
    }
    let mut left: Vec<usize> = (0..p.transactions.len())
        .filter(|&t| {
            let amount = p.transactions[t].amount;
            amount > Decimal::ZERO && books.t_left[t] == amount
        })
        .collect();
    if left.is_empty() {
        return;
    }
    left.sort_unstable_by_key(|&t| (p.transactions[t].booked_on, t));
    let open: Vec<bool> = (0..p.order.len())
        .map(|k| books.open[p.order[k] as usize] > Decimal::ZERO)
        .collect();
    let mut sweep = RefSweep::new(p, margin, &|k| open[k]);
    let mut fits = NameFits::default();
    let mut found = Vec::new();
    for t in left {
        let payment = &p.transactions[t];
        found.clear();
        sweep.lookup(
            &p.order,
            p.description(t),
            payment.booked_on,
            false,
            &mut found,
        );
        // The closest in time, then the better counterparty, then the first.
        let mut best: Option<(i32, f64, usize)> = None;
        for n in found.iter().filter(|n| n.named) {
            let f = p.facts_at(n.place as usize);
            let outside = days_outside(f.from, f.to, payment.booked_on);
            if outside == 0
                || books.open[n.inv] != payment.amount
                || !p.same_currency(f, t)
                || p.reference_at(n.place as usize).find_in(p.description(t))
                    != Some(RefEvidence::Exact)
            {
                continue;
            }
            let counterparty = fits.get(p, f.name, t);
            let better =
                best.is_none_or(|(o, c, inv)| (outside, -counterparty, n.inv) < (o, -c, inv));
            if better {
                best = Some((outside, counterparty, n.inv));
            }
        }
        let Some((outside, counterparty, inv)) = best else {
            continue;
        };
        let allocated = payment.amount;
        books.open[inv] -= allocated;
        books.t_left[t] = Decimal::ZERO;
        let similarity = books.similarity(counterparty);
        let mut reasons = vec![Reason::AmountEqual];
        reasons.extend(evidence(
            &p.invoices[inv],
            payment,
            Some(RefEvidence::Exact),
            similarity,
        ));
        reasons.push(Reason::OutsideWindow { days: outside });
        books.matches.push(Match {
            invoice: inv,
            transaction: t,
            allocated,
            score: round4(W_AMOUNT + W_REFERENCE + W_COUNTERPARTY * counterparty),
            grade: Grade::Suggested,
            group: 0,
            reasons,
        });
    }
}
