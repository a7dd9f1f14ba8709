//! Matching invoices against bank transactions, with the evidence for every
//! match. Pure Rust with exact decimals: no Postgres, no floats for money.
//!
//! The result is deterministic for the same input: candidates are ranked by
//! score and then by their positions in the input, never by hash order.

pub mod explain;
mod index;
mod refs;
mod subset_sum;
pub mod synthetic;
pub mod text;
mod units;

use index::{AmountIndex, Facts, NameFits, NameIndex, Prepared};
use refs::{Found, RefSweep};
use rust_decimal::Decimal;
use subset_sum::SubsetSum;
use text::RefEvidence;

/// A date as a day number (any fixed epoch; the glue uses Postgres' own).
pub type Day = i32;

#[derive(Clone, Debug, PartialEq)]
pub struct Invoice {
    pub amount: Decimal,
    pub open_amount: Decimal,
    pub currency: String,
    pub issue_date: Day,
    pub due_date: Option<Day>,
    /// The invoice number, e.g. "INV-1042".
    pub reference: String,
    pub counterparty: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Transaction {
    /// Money received is positive; payments out (negative) are never matched.
    pub amount: Decimal,
    pub currency: String,
    pub booked_on: Day,
    pub description: String,
    pub counterparty: String,
}

/// Per-tenant rules, overridable per call.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// Largest difference, in currency units, still counted as the same amount.
    pub amount_tolerance: Decimal,
    /// The same, as a percentage of the invoice's open amount (the larger wins).
    pub amount_tolerance_pct: Decimal,
    /// Largest shortfall reported as a bank fee deducted from the payment.
    pub fee_ceiling: Decimal,
    /// How many days before the issue date a payment may arrive.
    pub days_before: i32,
    /// How many days after the due date (or issue date) a payment may arrive.
    pub days_after: i32,
    /// Lowest score graded `auto`; ties and near-ties are never `auto`.
    pub min_auto_score: f64,
    /// Most invoices one payment may settle.
    pub max_invoices_per_payment: usize,
    /// Whether an invoice and a payment in different currencies may match
    /// (then only on the invoice number, and never `auto`).
    pub allow_currency_mismatch: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            amount_tolerance: Decimal::new(1, 2),
            amount_tolerance_pct: Decimal::ZERO,
            fee_ceiling: Decimal::new(25, 0),
            days_before: 5,
            days_after: 60,
            min_auto_score: 0.8,
            max_invoices_per_payment: 5,
            allow_currency_mismatch: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grade {
    Auto,
    Suggested,
}

/// The evidence behind a match, as `reasons` reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    AmountEqual,
    AmountWithinTolerance {
        difference: Decimal,
    },
    BankFee {
        fee: Decimal,
    },
    PartialPayment {
        remaining: Decimal,
    },
    Overpayment {
        excess: Decimal,
    },
    SplitPayment {
        invoices: usize,
    },
    /// Days from the issue date to the booking, and from the due date.
    Date {
        days_after_issue: i32,
        days_after_due: Option<i32>,
    },
    Reference {
        reference: String,
        exact: bool,
    },
    NoReference,
    Counterparty {
        similarity: Decimal,
    },
    /// Other candidates scored within the tie margin.
    Ambiguous {
        candidates: usize,
    },
    CurrencyDiffers {
        invoice: String,
        transaction: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    /// Index into the invoices given.
    pub invoice: usize,
    /// Index into the transactions given.
    pub transaction: usize,
    pub allocated: Decimal,
    /// 0..1, rounded to 4 decimals.
    pub score: f64,
    pub grade: Grade,
    /// Matches of the same payment share a group (1, 2, ... in output order).
    pub group: usize,
    pub reasons: Vec<Reason>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputError {
    InvoiceAmountNotPositive {
        invoice: usize,
    },
    /// An amount of `MAX_AMOUNT` or more (in magnitude).
    AmountTooLarge {
        what: &'static str,
        index: usize,
    },
    OpenAmountOutOfRange {
        invoice: usize,
    },
    BadRules {
        rule: &'static str,
    },
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputError::InvoiceAmountNotPositive { invoice } => {
                write!(
                    f,
                    "invoice #{} has an amount that is zero or negative",
                    invoice + 1
                )
            }
            InputError::OpenAmountOutOfRange { invoice } => {
                write!(
                    f,
                    "invoice #{} has an open_amount below zero or above its amount",
                    invoice + 1
                )
            }
            InputError::AmountTooLarge { what, index } => write!(
                f,
                "{what} #{} has an amount of 10^20 or more, beyond what reconcile handles",
                index + 1
            ),
            InputError::BadRules { rule } => write!(f, "rule {rule} is out of range"),
        }
    }
}

impl std::error::Error for InputError {}

/// Scores closer than this are a tie: never `auto`.
const TIE_MARGIN: f64 = 0.05;
/// At most this many invoices are tried for one split payment: the payer's
/// open invoices, those named in the description first, then those issued
/// closest to the payment; the invoices a batch pays are often a month old.
const SPLIT_CANDIDATES: usize = 24;

const W_AMOUNT: f64 = 0.45;
const W_REFERENCE: f64 = 0.30;
const W_DATE: f64 = 0.10;
const W_COUNTERPARTY: f64 = 0.15;

#[derive(Clone, Copy, Debug, PartialEq)]
enum AmountFit {
    Equal,
    Tolerance,
    Fee,
    Partial,
    Over,
}

impl AmountFit {
    /// The payment settles the invoice by itself (equal, rounding or fee).
    fn settles_whole(self) -> bool {
        matches!(
            self,
            AmountFit::Equal | AmountFit::Tolerance | AmountFit::Fee
        )
    }
}

#[derive(Clone, Debug)]
struct Candidate {
    t: usize,
    inv: usize,
    fit: AmountFit,
    reference: Option<RefEvidence>,
    counterparty: f64,
    same_currency: bool,
    score: f64,
}

impl Candidate {
    /// Allocated before split payments, in score order: a whole settlement
    /// with an invoice number or the exact amount, and a partial payment
    /// from the invoice's counterparty naming it exactly. A fee-sized gap
    /// without an invoice number is weaker evidence than several of the
    /// payer's invoices adding up to the cent, so it waits for the split
    /// search; so do overpayments, partial payments on a mistyped number or
    /// from someone else, and every match across currencies.
    fn first_pass(&self) -> bool {
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

/// An integer that orders as `f64::total_cmp` orders floats (its own
/// definition): sorting on it is sorting by score, with cheaper comparisons.
fn total_order(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn tolerance(rules: &Rules, open: Decimal) -> Decimal {
    if rules.amount_tolerance_pct.is_zero() {
        return rules.amount_tolerance; // not negative: the same, without a division
    }
    rules
        .amount_tolerance
        .max(open * rules.amount_tolerance_pct / Decimal::ONE_HUNDRED)
}

/// The last day of the invoice's term: its due date, or its issue date.
fn term_end(inv: &Invoice) -> Day {
    inv.due_date.unwrap_or(inv.issue_date).max(inv.issue_date)
}

/// The first and last day a payment of the invoice may arrive. Wrapping
/// as `date_fit` does in release builds, where it never panics: an invoice
/// dated near the end of time then has a window that holds no day.
fn date_window(rules: &Rules, inv: &Invoice) -> (Day, Day) {
    (
        inv.issue_date.wrapping_sub(rules.days_before),
        term_end(inv).wrapping_add(rules.days_after),
    )
}

/// 1 inside [issue, due + 3 days], falling to 0.3 at the edges of the window;
/// None outside the window.
fn date_fit(rules: &Rules, inv: &Invoice, t: &Transaction) -> Option<f64> {
    date_score(rules, inv.issue_date, term_end(inv), t.booked_on)
}

/// `date_fit` of a payment on day `d` for an invoice issued on `issue` whose
/// term ends on `end`.
fn date_score(rules: &Rules, issue: Day, end: Day, d: Day) -> Option<f64> {
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

fn amount_fit(
    rules: &Rules,
    open: Decimal,
    paid: Decimal,
    has_reference: bool,
) -> Option<AmountFit> {
    let gap = open - paid;
    if gap.is_zero() {
        Some(AmountFit::Equal)
    } else if gap.abs() <= tolerance(rules, open) {
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

fn amount_score(fit: AmountFit) -> f64 {
    match fit {
        AmountFit::Equal => 1.0,
        AmountFit::Tolerance => 0.9,
        AmountFit::Fee => 0.75,
        AmountFit::Partial => 0.6,
        AmountFit::Over => 0.4,
    }
}

fn reference_score(r: Option<RefEvidence>) -> f64 {
    match r {
        Some(RefEvidence::Exact) => 1.0,
        Some(RefEvidence::Typo) => 0.6,
        None => 0.0,
    }
}

/// Amounts must be smaller than this (10^20) in magnitude. Sums of ten of
/// them, a percentage of one and every window around one then stay far
/// inside what a `Decimal` holds (about 7.9 * 10^28), so no arithmetic on
/// amounts can overflow. Ten times a country's yearly product in the
/// smallest currency units is still far below it.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(0x6310_0000, 0x6BC7_5E2D, 0x5, false, 0);

fn validate(
    invoices: &[Invoice],
    transactions: &[Transaction],
    rules: &Rules,
) -> Result<(), InputError> {
    for (i, inv) in invoices.iter().enumerate() {
        if inv.amount <= Decimal::ZERO {
            return Err(InputError::InvoiceAmountNotPositive { invoice: i });
        }
        if inv.amount >= MAX_AMOUNT {
            return Err(InputError::AmountTooLarge {
                what: "invoice",
                index: i,
            });
        }
        if inv.open_amount < Decimal::ZERO || inv.open_amount > inv.amount {
            return Err(InputError::OpenAmountOutOfRange { invoice: i });
        }
    }
    if let Some(index) = transactions
        .iter()
        .position(|t| t.amount.abs() >= MAX_AMOUNT)
    {
        return Err(InputError::AmountTooLarge {
            what: "transaction",
            index,
        });
    }
    let checks: [(bool, &'static str); 7] = [
        (rules.amount_tolerance >= Decimal::ZERO, "amount_tolerance"),
        (
            rules.amount_tolerance_pct >= Decimal::ZERO
                && rules.amount_tolerance_pct <= Decimal::ONE_HUNDRED,
            "amount_tolerance_pct",
        ),
        (rules.fee_ceiling >= Decimal::ZERO, "fee_ceiling"),
        (
            rules.days_before >= 0 && rules.days_before <= 3660,
            "days_before",
        ),
        (
            rules.days_after >= 0 && rules.days_after <= 3660,
            "days_after",
        ),
        (
            (0.0..=1.0).contains(&rules.min_auto_score),
            "min_auto_score",
        ),
        (
            (1..=10).contains(&rules.max_invoices_per_payment),
            "max_invoices_per_payment",
        ),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, rule)) => Err(InputError::BadRules { rule }),
        None => Ok(()),
    }
}

/// Candidate (transaction, invoice) pairs with their evidence and score:
/// the invoices whose number the description may carry, and those of about
/// the payment's amount, in the payment's date window. Also the invoices
/// each description may name, for the split search.
fn candidates(p: &Prepared) -> (Vec<Candidate>, Named) {
    let rules = p.rules;
    let amounts = AmountIndex::new(p);
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
    // The payments by day, as `RefSweep` takes them.
    let mut by_day: Vec<usize> = (0..p.transactions.len())
        .filter(|&ti| p.transactions[ti].amount > Decimal::ZERO)
        .collect();
    by_day.sort_unstable_by_key(|&ti| (p.transactions[ti].booked_on, ti));
    let mut sweep = RefSweep::new(p);
    let mut named_pairs = Vec::new();
    for ti in by_day {
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
    (out, Named::new(p.transactions.len(), &named_pairs))
}

/// Per payment: the invoices its description may name, ascending.
struct Named {
    /// Those of payment `t`: `invoices[starts[t]..starts[t + 1]]`.
    starts: Vec<usize>,
    invoices: Vec<usize>,
}

impl Named {
    /// From (payment, invoice) pairs, each payment's by invoice.
    fn new(payments: usize, pairs: &[(usize, usize)]) -> Self {
        let mut starts = vec![0; payments + 1];
        for &(t, _) in pairs {
            starts[t + 1] += 1;
        }
        for t in 1..starts.len() {
            starts[t] += starts[t - 1];
        }
        let mut fill = starts.clone();
        let mut invoices = vec![0; pairs.len()];
        for &(t, inv) in pairs {
            invoices[fill[t]] = inv;
            fill[t] += 1;
        }
        Named { starts, invoices }
    }

    fn of(&self, t: usize) -> &[usize] {
        &self.invoices[self.starts[t]..self.starts[t + 1]]
    }
}

/// `RefSweep::lookup` for payment `ti`, appended to `out` by invoice, each once.
fn lookup(p: &Prepared, sweep: &mut RefSweep, ti: usize, unnamed_too: bool, out: &mut Vec<Found>) {
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
fn unnamed_may_fit(
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

/// `amount_fit` on integer units, for a payment of `paid` units under
/// rules without a percentage tolerance: the amounts are whole numbers of
/// units, so a gap is within a tolerance or fee exactly when it is within
/// the whole units of it, and no decimal operation is needed.
#[derive(Clone, Copy)]
struct UnitFit {
    tolerance: i64,
    fee: i64,
    paid: i64,
}

/// `UnitFit` without the payment, when the open amounts have units.
fn unit_rules(p: &Prepared) -> Option<UnitFit> {
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
    fn paying(self, p: &Prepared, paid: Decimal) -> Option<UnitFit> {
        let paid = p.keys.units(paid)?;
        Some(UnitFit { paid, ..self })
    }

    /// `amount_fit` of an invoice whose open amount is `open` units.
    fn fit(self, open: i64, has_reference: bool) -> Option<AmountFit> {
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

/// Payment `ti` and invoice `ii` (whose facts are `f`) as a candidate, if
/// the evidence is enough; `reference` is `p.reference(ii, ti)`, `units`
/// the payment's `UnitFit`.
fn candidate(
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

/// The date, invoice number and counterparty evidence of a pair.
fn evidence(
    inv: &Invoice,
    t: &Transaction,
    reference: Option<RefEvidence>,
    similarity: Decimal,
) -> [Reason; 3] {
    [
        Reason::Date {
            days_after_issue: t.booked_on - inv.issue_date,
            days_after_due: inv.due_date.map(|d| t.booked_on - d),
        },
        match reference {
            Some(e) => Reason::Reference {
                reference: inv.reference.clone(),
                exact: e == RefEvidence::Exact,
            },
            None => Reason::NoReference,
        },
        Reason::Counterparty { similarity },
    ]
}

/// The allocation so far: what each payment and invoice has left, the
/// matches made, and the counterparty similarities as decimals.
struct Books {
    t_left: Vec<Decimal>,
    open: Vec<Decimal>,
    matches: Vec<Match>,
    similarities: Vec<(u64, Decimal)>,
}

/// How many similarities `Books` keeps: a ledger has few distinct ones.
const SIMILARITIES: usize = 64;

impl Books {
    /// A counterparty fit as `Reason::Counterparty` reports it. Converting
    /// a float costs hundreds of instructions, so the decimals of the
    /// first few distinct fits are kept.
    fn similarity(&mut self, counterparty: f64) -> Decimal {
        let bits = counterparty.to_bits();
        if let Some(&(_, d)) = self.similarities.iter().find(|s| s.0 == bits) {
            return d;
        }
        let d = Decimal::from_f64_retain(counterparty)
            .unwrap_or_default()
            .round_dp(2);
        if self.similarities.len() < SIMILARITIES {
            self.similarities.push((bits, d));
        }
        d
    }
}

fn reasons_for(
    c: &Candidate,
    inv: &Invoice,
    t: &Transaction,
    allocated: Decimal,
    open_after: Decimal,
    similarity: Decimal,
) -> Vec<Reason> {
    let mut r = Vec::new();
    match c.fit {
        AmountFit::Equal => r.push(Reason::AmountEqual),
        AmountFit::Tolerance => r.push(Reason::AmountWithinTolerance {
            difference: (inv.open_amount - t.amount).abs(),
        }),
        AmountFit::Fee => r.push(Reason::BankFee {
            fee: inv.open_amount - t.amount,
        }),
        AmountFit::Partial => r.push(Reason::PartialPayment {
            remaining: open_after,
        }),
        AmountFit::Over => r.push(Reason::Overpayment {
            excess: t.amount - allocated,
        }),
    }
    r.extend(evidence(inv, t, c.reference, similarity));
    if !c.same_currency {
        r.push(Reason::CurrencyDiffers {
            invoice: inv.currency.clone(),
            transaction: t.currency.clone(),
        });
    }
    r
}

/// Matches invoices against transactions. Each transaction is allocated at
/// most its amount, each invoice at most its open amount.
pub fn reconcile(
    invoices: &[Invoice],
    transactions: &[Transaction],
    rules: &Rules,
) -> Result<Vec<Match>, InputError> {
    validate(invoices, transactions, rules)?;
    // No gap between two valid amounts reaches MAX_AMOUNT, so a larger
    // tolerance or fee ceiling accepts exactly what MAX_AMOUNT does, and
    // bounded, sums with them cannot overflow.
    let rules = &Rules {
        amount_tolerance: rules.amount_tolerance.min(MAX_AMOUNT),
        fee_ceiling: rules.fee_ceiling.min(MAX_AMOUNT),
        ..rules.clone()
    };
    let p = Prepared::new(invoices, transactions, rules);
    let (mut cands, named_by_t) = candidates(&p);
    // (score, t, inv) is unique per candidate: an unstable sort is as good.
    cands.sort_unstable_by_key(|c| (!total_order(c.score), c.t, c.inv));

    // How many candidates each transaction and invoice has near a score.
    let whole = || cands.iter().filter(|c| c.fit.settles_whole());
    let per_t = ScoresBy::new(transactions.len(), whole().map(|c| (c.t, c.score)));
    let per_inv = ScoresBy::new(invoices.len(), whole().map(|c| (c.inv, c.score)));
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
    for c in cands.iter().filter(|c| c.first_pass()) {
        while let Some(s) = named.next_if(|s| s.score > c.score) {
            apply_split(s, &p, &mut books);
        }
        allocate(c, &p, &per_t, &per_inv, &mut books);
    }
    for s in named {
        apply_split(s, &p, &mut books);
    }
    split_payments(&p, &named_by_t, &mut books);
    for c in cands.iter().filter(|c| !c.first_pass()) {
        allocate(c, &p, &per_t, &per_inv, &mut books);
    }

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
    Ok(matches)
}

/// The scores of the whole settlements of each transaction (or invoice),
/// all in one vector.
struct ScoresBy {
    /// Those of `k`: `scores[starts[k]..starts[k + 1]]`.
    starts: Vec<usize>,
    scores: Vec<f64>,
}

impl ScoresBy {
    fn new(n: usize, items: impl Iterator<Item = (usize, f64)> + Clone) -> Self {
        let mut starts = vec![0; n + 1];
        for (k, _) in items.clone() {
            starts[k + 1] += 1;
        }
        for k in 1..starts.len() {
            starts[k] += starts[k - 1];
        }
        let mut fill = starts.clone();
        let mut scores = vec![0.0; starts[n]];
        for (k, score) in items {
            scores[fill[k]] = score;
            fill[k] += 1;
        }
        ScoresBy { starts, scores }
    }

    fn of(&self, k: usize) -> &[f64] {
        &self.scores[self.starts[k]..self.starts[k + 1]]
    }
}

/// Candidates within the tie margin of `score`, besides the one at hand.
fn rivals(scores: &[f64], score: f64) -> usize {
    scores
        .iter()
        .filter(|x| **x >= score - TIE_MARGIN)
        .count()
        .saturating_sub(1)
}

/// Allocates one candidate pair if both sides still have room.
fn allocate(c: &Candidate, p: &Prepared, per_t: &ScoresBy, per_inv: &ScoresBy, books: &mut Books) {
    let (t, inv) = (&p.transactions[c.t], &p.invoices[c.inv]);
    if books.t_left[c.t].is_zero() || books.open[c.inv].is_zero() {
        return;
    }
    let whole = c.fit.settles_whole();
    if whole && (books.t_left[c.t] != t.amount || books.open[c.inv] != inv.open_amount) {
        return; // a full settlement needs both sides untouched
    }
    let allocated = if !c.same_currency {
        books.open[c.inv]
    } else {
        books.t_left[c.t].min(books.open[c.inv])
    };
    if allocated <= Decimal::ZERO {
        return;
    }
    books.open[c.inv] -= allocated;
    books.t_left[c.t] -= allocated;
    if whole || !c.same_currency {
        books.t_left[c.t] = Decimal::ZERO; // the payment is spent (fee or tolerance)
    }
    if matches!(c.fit, AmountFit::Fee | AmountFit::Tolerance) {
        books.open[c.inv] = Decimal::ZERO; // settled; the gap is a fee or rounding
    }
    let ties = rivals(per_t.of(c.t), c.score).max(rivals(per_inv.of(c.inv), c.score));
    let similarity = books.similarity(c.counterparty);
    let mut reasons = reasons_for(c, inv, t, allocated, books.open[c.inv], similarity);
    if ties > 0 {
        reasons.push(Reason::Ambiguous {
            candidates: ties + 1,
        });
    }
    let auto = ties == 0 && c.score >= p.rules.min_auto_score && c.same_currency;
    books.matches.push(Match {
        invoice: c.inv,
        transaction: c.t,
        allocated,
        score: c.score,
        grade: if auto { Grade::Auto } else { Grade::Suggested },
        group: 0,
        reasons,
    });
}

/// One payment settling several invoices of the same counterparty. Only a
/// unique subset that scores `min_auto_score` (every invoice number in the
/// description) may be `auto`; without invoice numbers it stays a suggestion.
struct Split {
    t: usize,
    invoices: Vec<usize>,
    /// Subsets that fit the amount, counted up to two (two: not unique).
    fits: usize,
    counterparty: f64,
    score: f64,
}

/// The best subset of 2..=max_invoices_per_payment untouched invoices in
/// `pool` whose open amounts sum to payment `ti`: a bounded subset-sum,
/// invoices named in the description first, then those issued closest to
/// the payment. `named` (sorted) holds the invoices of the pool that the
/// description may name; it names none of the others.
fn find_split(
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
fn named_splits(p: &Prepared, cands: &[Candidate], open: &[Decimal]) -> Vec<Split> {
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
fn apply_split(s: &Split, p: &Prepared, books: &mut Books) {
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
fn split_payments(p: &Prepared, named: &Named, books: &mut Books) {
    if p.rules.max_invoices_per_payment < 2 {
        return;
    }
    let by_name = NameIndex::new(p, &books.open);
    let mut fits = NameFits::default();
    for (ti, t) in p.transactions.iter().enumerate() {
        if t.amount <= Decimal::ZERO || books.t_left[ti] != t.amount {
            continue;
        }
        // Those the description does not name need a counterparty that fits
        // to pass `find_split`, and then `payers_invoices` has them.
        let named = named.of(ti);
        let mut pool = named.to_vec();
        let paid = p.keys.units(t.amount);
        by_name.payers_invoices(p, ti, paid, &mut fits, &mut pool);
        if let Some(s) = find_split(p, ti, pool, named, &books.open, &mut fits) {
            apply_split(&s, p, books);
        }
    }
}

#[cfg(test)]
mod tests;
