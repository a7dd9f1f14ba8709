//! How well an invoice and a payment fit: the amount, date, invoice number
//! and counterparty evidence, each scored, and their weighted sum.

use crate::index::Prepared;
use crate::input::{Invoice, Transaction};
use crate::rules::{term_end, Rules};
use crate::text::RefEvidence;
use crate::Day;
use rust_decimal::Decimal;

pub(crate) const W_AMOUNT: f64 = 0.45;
pub(crate) const W_REFERENCE: f64 = 0.30;
pub(crate) const W_DATE: f64 = 0.10;
pub(crate) const W_COUNTERPARTY: f64 = 0.15;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AmountFit {
    Equal,
    Tolerance,
    Fee,
    Partial,
    Over,
}

impl AmountFit {
    /// The payment settles the invoice by itself (equal, rounding or fee).
    pub(crate) fn settles_whole(self) -> bool {
        matches!(
            self,
            AmountFit::Equal | AmountFit::Tolerance | AmountFit::Fee
        )
    }
}

/// An integer that orders as `f64::total_cmp` orders floats (its own
/// definition): sorting on it is sorting by score, with cheaper comparisons.
pub(crate) fn total_order(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

pub(crate) fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// 1 inside [issue, due + 3 days], falling to 0.3 at the edges of the window;
/// None outside the window.
pub(crate) fn date_fit(rules: &Rules, inv: &Invoice, t: &Transaction) -> Option<f64> {
    date_score(rules, inv.issue_date, term_end(inv), t.booked_on)
}

/// `date_fit` of a payment on day `d` for an invoice issued on `issue` whose
/// term ends on `end`.
pub(crate) fn date_score(rules: &Rules, issue: Day, end: Day, d: Day) -> Option<f64> {
    let (lo, hi) = (issue - rules.days_before, end + rules.days_after);
    if d < lo || d > hi {
        return None;
    }
    if d >= issue && d <= end + 3 {
        return Some(1.0);
    }
    let (dist, span) = if d < issue {
        (issue - d, rules.days_before.max(1))
    } else {
        (d - end - 3, (rules.days_after - 3).max(1))
    };
    Some(1.0 - 0.7 * (f64::from(dist) / f64::from(span)).min(1.0))
}

pub(crate) fn amount_fit(
    rules: &Rules,
    open: Decimal,
    paid: Decimal,
    has_reference: bool,
) -> Option<AmountFit> {
    let gap = open - paid;
    if gap.is_zero() {
        Some(AmountFit::Equal)
    } else if gap.abs() <= rules.tolerance(open) {
        Some(AmountFit::Tolerance)
    } else if gap > Decimal::ZERO && gap <= rules.fee_ceiling {
        Some(AmountFit::Fee)
    } else if gap > Decimal::ZERO && has_reference {
        Some(AmountFit::Partial)
    } else if gap < Decimal::ZERO && has_reference {
        Some(AmountFit::Over)
    } else {
        None
    }
}

pub(crate) fn amount_score(fit: AmountFit) -> f64 {
    match fit {
        AmountFit::Equal => 1.0,
        AmountFit::Tolerance => 0.9,
        AmountFit::Fee => 0.75,
        AmountFit::Partial => 0.6,
        AmountFit::Over => 0.4,
    }
}

pub(crate) fn reference_score(r: Option<RefEvidence>) -> f64 {
    match r {
        Some(RefEvidence::Exact) => 1.0,
        Some(RefEvidence::Typo) => 0.6,
        None => 0.0,
    }
}

/// `amount_fit` on integer units, for a payment of `paid` units under
/// rules without a percentage tolerance: the amounts are whole numbers of
/// units, so a gap is within a tolerance or fee exactly when it is within
/// the whole units of it, and no decimal operation is needed.
#[derive(Clone, Copy)]
pub(crate) struct UnitFit {
    pub(crate) tolerance: i64,
    pub(crate) fee: i64,
    pub(crate) paid: i64,
}

/// `UnitFit` without the payment, when the open amounts have units.
pub(crate) fn unit_rules(p: &Prepared) -> Option<UnitFit> {
    let rules = p.rules;
    if !rules.amount_tolerance_pct.is_zero() {
        return None;
    }
    Some(UnitFit {
        tolerance: p.keys.floor(rules.amount_tolerance)?,
        fee: p.keys.floor(rules.fee_ceiling)?,
        paid: 0,
    })
}

impl UnitFit {
    /// For a payment of `paid`, if that is a whole number of units.
    pub(crate) fn paying(self, p: &Prepared, paid: Decimal) -> Option<UnitFit> {
        let paid = p.keys.units(paid)?;
        Some(UnitFit { paid, ..self })
    }

    /// `amount_fit` of an invoice whose open amount is `open` units.
    pub(crate) fn fit(self, open: i64, has_reference: bool) -> Option<AmountFit> {
        let gap = open - self.paid;
        if gap == 0 {
            Some(AmountFit::Equal)
        } else if gap.abs() <= self.tolerance {
            Some(AmountFit::Tolerance)
        } else if gap > 0 && gap <= self.fee {
            Some(AmountFit::Fee)
        } else if gap > 0 && has_reference {
            Some(AmountFit::Partial)
        } else if gap < 0 && has_reference {
            Some(AmountFit::Over)
        } else {
            None
        }
    }
}
