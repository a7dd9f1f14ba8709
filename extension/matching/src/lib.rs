//! Matching invoices against bank transactions, with the evidence for every
//! match. Pure Rust with exact decimals: no Postgres, no floats for money.
//!
//! The result is deterministic for the same input: candidates are ranked by
//! score and then by their positions in the input, never by hash order.

pub mod explain;
pub mod synthetic;
pub mod text;

use rust_decimal::Decimal;
use std::collections::HashMap;
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
    InvoiceAmountNotPositive { invoice: usize },
    OpenAmountOutOfRange { invoice: usize },
    BadRules { rule: &'static str },
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

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn tolerance(rules: &Rules, open: Decimal) -> Decimal {
    rules
        .amount_tolerance
        .max(open * rules.amount_tolerance_pct / Decimal::ONE_HUNDRED)
}

/// 1 inside [issue, due + 3 days], falling to 0.3 at the edges of the window;
/// None outside the window.
fn date_fit(rules: &Rules, inv: &Invoice, t: &Transaction) -> Option<f64> {
    let end = inv.due_date.unwrap_or(inv.issue_date).max(inv.issue_date);
    let (lo, hi) = (inv.issue_date - rules.days_before, end + rules.days_after);
    let d = t.booked_on;
    if d < lo || d > hi {
        return None;
    }
    if d >= inv.issue_date && d <= end + 3 {
        return Some(1.0);
    }
    let (dist, span) = if d < inv.issue_date {
        (inv.issue_date - d, rules.days_before.max(1))
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

/// Where invoice numbers can be looked up from description tokens.
struct RefIndex {
    by_full: HashMap<String, Vec<usize>>,
    by_digits: HashMap<String, Vec<usize>>,
    by_deletion: HashMap<String, Vec<usize>>,
}

fn deletions(s: &str) -> impl Iterator<Item = String> + '_ {
    (0..s.len()).map(move |i| format!("{}{}", &s[..i], &s[i + 1..]))
}

impl RefIndex {
    fn new(invoices: &[Invoice]) -> Self {
        let mut idx = RefIndex {
            by_full: HashMap::new(),
            by_digits: HashMap::new(),
            by_deletion: HashMap::new(),
        };
        for (i, inv) in invoices.iter().enumerate() {
            let full = text::normalize(&inv.reference);
            if full.is_empty() {
                continue;
            }
            idx.by_full.entry(full).or_default().push(i);
            let d = text::digits(&inv.reference);
            if d.len() >= 3 {
                idx.by_digits.entry(d.clone()).or_default().push(i);
            }
            if d.len() >= 4 {
                for del in deletions(&d) {
                    idx.by_deletion.entry(del).or_default().push(i);
                }
            }
        }
        idx
    }

    /// Invoices whose number may appear among the tokens (verified later).
    fn lookup(&self, tokens: &[String], out: &mut Vec<usize>) {
        for t in tokens {
            if let Some(v) = self.by_full.get(t) {
                out.extend(v);
            }
            let d = text::digits(t);
            if d.len() < 3 {
                continue;
            }
            for map in [&self.by_digits, &self.by_deletion] {
                if let Some(v) = map.get(&d) {
                    out.extend(v);
                }
            }
            if d.len() >= 4 {
                for del in deletions(&d) {
                    for map in [&self.by_digits, &self.by_deletion] {
                        if let Some(v) = map.get(&del) {
                            out.extend(v);
                        }
                    }
                }
            }
        }
    }
}

fn validate(invoices: &[Invoice], rules: &Rules) -> Result<(), InputError> {
    for (i, inv) in invoices.iter().enumerate() {
        if inv.amount <= Decimal::ZERO {
            return Err(InputError::InvoiceAmountNotPositive { invoice: i });
        }
        if inv.open_amount < Decimal::ZERO || inv.open_amount > inv.amount {
            return Err(InputError::OpenAmountOutOfRange { invoice: i });
        }
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

/// Candidate (transaction, invoice) pairs with their evidence and score.
fn candidates(
    invoices: &[Invoice],
    transactions: &[Transaction],
    rules: &Rules,
    refs: &RefIndex,
) -> Vec<Candidate> {
    let mut by_currency: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, inv) in invoices.iter().enumerate() {
        if inv.open_amount > Decimal::ZERO {
            by_currency
                .entry(inv.currency.as_str())
                .or_default()
                .push(i);
        }
    }
    for list in by_currency.values_mut() {
        list.sort_by(|a, b| {
            invoices[*a]
                .open_amount
                .cmp(&invoices[*b].open_amount)
                .then(a.cmp(b))
        });
    }
    let widest = rules.amount_tolerance.max(rules.fee_ceiling);
    let mut out = Vec::new();
    let mut pool = Vec::new();
    for (ti, t) in transactions.iter().enumerate() {
        if t.amount <= Decimal::ZERO {
            continue;
        }
        let tokens = text::tokens(&t.description);
        pool.clear();
        refs.lookup(&tokens, &mut pool);
        if let Some(list) = by_currency.get(t.currency.as_str()) {
            // Amounts near the payment: [amount - tolerance, amount + max(tolerance, fee)];
            // the percentage tolerance is checked exactly below.
            let pct_slack =
                t.amount * rules.amount_tolerance_pct / Decimal::ONE_HUNDRED * Decimal::TWO;
            let lo = t.amount - rules.amount_tolerance - pct_slack;
            let hi = t.amount + widest + pct_slack;
            let start = list.partition_point(|i| invoices[*i].open_amount < lo);
            pool.extend(
                list[start..]
                    .iter()
                    .take_while(|i| invoices[**i].open_amount <= hi),
            );
        }
        pool.sort_unstable();
        pool.dedup();
        for &ii in pool.iter() {
            let inv = &invoices[ii];
            if inv.open_amount <= Decimal::ZERO {
                continue;
            }
            let same_currency = inv.currency == t.currency;
            if !same_currency && !rules.allow_currency_mismatch {
                continue;
            }
            let Some(date) = date_fit(rules, inv, t) else {
                continue;
            };
            let reference = text::find_reference(&inv.reference, &tokens);
            let fit = if same_currency {
                match amount_fit(rules, inv.open_amount, t.amount, reference.is_some()) {
                    Some(f) => f,
                    None => continue,
                }
            } else if reference == Some(RefEvidence::Exact) {
                AmountFit::Partial
            } else {
                continue;
            };
            let mut counterparty =
                text::counterparty_similarity(&inv.counterparty, &t.counterparty);
            if text::mentions(&tokens, &inv.counterparty) {
                counterparty = 1.0;
            }
            // A near amount alone is common in a large ledger: a fee or a
            // rounding gap counts only with a reference or the counterparty.
            if matches!(fit, AmountFit::Fee | AmountFit::Tolerance)
                && reference.is_none()
                && counterparty < 0.5
            {
                continue;
            }
            let score = round4(
                W_AMOUNT * amount_score(fit)
                    + W_REFERENCE * reference_score(reference)
                    + W_DATE * date
                    + W_COUNTERPARTY * counterparty,
            );
            out.push(Candidate {
                t: ti,
                inv: ii,
                fit,
                reference,
                counterparty,
                same_currency,
                score,
            });
        }
    }
    out
}

/// The date, invoice number and counterparty evidence of a pair.
fn evidence(
    inv: &Invoice,
    t: &Transaction,
    reference: Option<RefEvidence>,
    counterparty: f64,
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
        Reason::Counterparty {
            similarity: Decimal::from_f64_retain(counterparty)
                .unwrap_or_default()
                .round_dp(2),
        },
    ]
}

fn reasons_for(
    c: &Candidate,
    inv: &Invoice,
    t: &Transaction,
    allocated: Decimal,
    open_after: Decimal,
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
    r.extend(evidence(inv, t, c.reference, c.counterparty));
    if inv.currency != t.currency {
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
    validate(invoices, rules)?;
    let refs = RefIndex::new(invoices);
    let mut cands = candidates(invoices, transactions, rules, &refs);
    cands.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.t.cmp(&b.t))
            .then(a.inv.cmp(&b.inv))
    });

    // How many candidates each transaction and invoice has near a score.
    let mut per_t: HashMap<usize, Vec<f64>> = HashMap::new();
    let mut per_inv: HashMap<usize, Vec<f64>> = HashMap::new();
    for c in &cands {
        if c.fit.settles_whole() {
            per_t.entry(c.t).or_default().push(c.score);
            per_inv.entry(c.inv).or_default().push(c.score);
        }
    }
    let mut t_left: Vec<Decimal> = transactions
        .iter()
        .map(|t| t.amount.max(Decimal::ZERO))
        .collect();
    let mut open: Vec<Decimal> = invoices.iter().map(|i| i.open_amount).collect();
    let mut matches = Vec::new();
    // First, by score: whole settlements, partial payments naming their
    // invoice, and payments naming every invoice they split into. Then split
    // payments among what is left, then the rest (overpayments, partial
    // payments on a mistyped number): a payment that exactly covers several
    // invoices is a split, not an overpayment of the first one.
    let named = named_splits(invoices, transactions, rules, &cands, &open);
    let mut named = named.iter().peekable();
    for c in cands.iter().filter(|c| c.first_pass()) {
        while let Some(s) = named.next_if(|s| s.score > c.score) {
            apply_split(
                s,
                invoices,
                transactions,
                rules,
                &mut t_left,
                &mut open,
                &mut matches,
            );
        }
        allocate(
            c,
            invoices,
            transactions,
            rules,
            &per_t,
            &per_inv,
            &mut t_left,
            &mut open,
            &mut matches,
        );
    }
    for s in named {
        apply_split(
            s,
            invoices,
            transactions,
            rules,
            &mut t_left,
            &mut open,
            &mut matches,
        );
    }
    split_payments(
        invoices,
        transactions,
        rules,
        &refs,
        &mut t_left,
        &mut open,
        &mut matches,
    );
    for c in cands.iter().filter(|c| !c.first_pass()) {
        allocate(
            c,
            invoices,
            transactions,
            rules,
            &per_t,
            &per_inv,
            &mut t_left,
            &mut open,
            &mut matches,
        );
    }

    matches.sort_by(|a, b| {
        a.transaction
            .cmp(&b.transaction)
            .then(a.invoice.cmp(&b.invoice))
    });
    let mut groups: HashMap<usize, usize> = HashMap::new();
    for m in &mut matches {
        let next = groups.len() + 1;
        m.group = *groups.entry(m.transaction).or_insert(next);
    }
    Ok(matches)
}

/// Candidates within the tie margin of `score`, besides the one at hand.
fn rivals(scores: Option<&Vec<f64>>, score: f64) -> usize {
    scores.map_or(0, |s| {
        s.iter()
            .filter(|x| **x >= score - TIE_MARGIN)
            .count()
            .saturating_sub(1)
    })
}

/// Allocates one candidate pair if both sides still have room.
#[allow(clippy::too_many_arguments)]
fn allocate(
    c: &Candidate,
    invoices: &[Invoice],
    transactions: &[Transaction],
    rules: &Rules,
    per_t: &HashMap<usize, Vec<f64>>,
    per_inv: &HashMap<usize, Vec<f64>>,
    t_left: &mut [Decimal],
    open: &mut [Decimal],
    matches: &mut Vec<Match>,
) {
    let (t, inv) = (&transactions[c.t], &invoices[c.inv]);
    if t_left[c.t].is_zero() || open[c.inv].is_zero() {
        return;
    }
    let whole = c.fit.settles_whole();
    if whole && (t_left[c.t] != t.amount || open[c.inv] != inv.open_amount) {
        return; // a full settlement needs both sides untouched
    }
    let allocated = if inv.currency != t.currency {
        open[c.inv]
    } else {
        t_left[c.t].min(open[c.inv])
    };
    if allocated <= Decimal::ZERO {
        return;
    }
    open[c.inv] -= allocated;
    t_left[c.t] -= allocated;
    if whole || inv.currency != t.currency {
        t_left[c.t] = Decimal::ZERO; // the payment is spent (fee or tolerance)
    }
    if matches!(c.fit, AmountFit::Fee | AmountFit::Tolerance) {
        open[c.inv] = Decimal::ZERO; // settled; the gap is a fee or rounding
    }
    let ties = rivals(per_t.get(&c.t), c.score).max(rivals(per_inv.get(&c.inv), c.score));
    let mut reasons = reasons_for(c, inv, t, allocated, open[c.inv]);
    if ties > 0 {
        reasons.push(Reason::Ambiguous {
            candidates: ties + 1,
        });
    }
    let auto = ties == 0 && c.score >= rules.min_auto_score && inv.currency == t.currency;
    matches.push(Match {
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

/// Invoices by the words of their counterparty's name.
fn name_index(invoices: &[Invoice]) -> HashMap<String, Vec<usize>> {
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, inv) in invoices.iter().enumerate() {
        for word in text::name_tokens(&inv.counterparty) {
            by_name.entry(word).or_default().push(i);
        }
    }
    by_name
}

/// The best subset of 2..=max_invoices_per_payment untouched invoices in
/// `pool` whose open amounts sum to the payment: a bounded subset-sum,
/// invoices named in the description first, then those issued closest to
/// the payment.
fn find_split(
    invoices: &[Invoice],
    ti: usize,
    t: &Transaction,
    tokens: &[String],
    mut pool: Vec<usize>,
    rules: &Rules,
    open: &[Decimal],
) -> Option<Split> {
    let max_k = rules.max_invoices_per_payment;
    if max_k < 2 {
        return None;
    }
    pool.sort_unstable();
    pool.dedup();
    pool.retain(|&i| {
        let inv = &invoices[i];
        inv.currency == t.currency
            && open[i] > Decimal::ZERO
            && open[i] == inv.open_amount
            && open[i] < t.amount
            && date_fit(rules, inv, t).is_some()
            && (text::counterparty_similarity(&inv.counterparty, &t.counterparty) >= 0.5
                || text::mentions(tokens, &inv.counterparty)
                || text::find_reference(&inv.reference, tokens) == Some(RefEvidence::Exact))
    });
    if pool.len() < 2 {
        return None;
    }
    let unnamed = |i: usize| text::find_reference(&invoices[i].reference, tokens).is_none();
    pool.sort_by_cached_key(|&i| (unnamed(i), (t.booked_on - invoices[i].issue_date).abs(), i));
    pool.truncate(SPLIT_CANDIDATES);
    let amounts: Vec<Decimal> = pool.iter().map(|&i| open[i]).collect();
    let found = SubsetSum::run(&amounts, t.amount, rules.amount_tolerance, max_k);
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
    let with_ref = best
        .iter()
        .filter(|&&i| text::find_reference(&invoices[i].reference, tokens).is_some())
        .count();
    let ref_frac = with_ref as f64 / best.len() as f64;
    let counterparty = best
        .iter()
        .map(|&i| {
            if text::mentions(tokens, &invoices[i].counterparty) {
                1.0
            } else {
                text::counterparty_similarity(&invoices[i].counterparty, &t.counterparty)
            }
        })
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
fn named_splits(
    invoices: &[Invoice],
    transactions: &[Transaction],
    rules: &Rules,
    cands: &[Candidate],
    open: &[Decimal],
) -> Vec<Split> {
    let mut named: HashMap<usize, Vec<usize>> = HashMap::new();
    for c in cands {
        if c.reference == Some(RefEvidence::Exact) {
            named.entry(c.t).or_default().push(c.inv);
        }
    }
    let mut out: Vec<Split> = named
        .into_iter()
        .filter(|(_, pool)| pool.len() >= 2)
        .filter_map(|(ti, pool)| {
            let t = &transactions[ti];
            let tokens = text::tokens(&t.description);
            find_split(invoices, ti, t, &tokens, pool, rules, open)
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.t.cmp(&b.t)));
    out
}

/// Allocates a split if the payment and all its invoices are untouched.
fn apply_split(
    s: &Split,
    invoices: &[Invoice],
    transactions: &[Transaction],
    rules: &Rules,
    t_left: &mut [Decimal],
    open: &mut [Decimal],
    matches: &mut Vec<Match>,
) {
    let t = &transactions[s.t];
    if t_left[s.t] != t.amount
        || s.invoices
            .iter()
            .any(|&i| open[i] != invoices[i].open_amount)
    {
        return;
    }
    let tokens = text::tokens(&t.description);
    let unique = s.fits == 1;
    let auto = unique && s.score >= rules.min_auto_score;
    let mut remaining = t.amount;
    for &i in &s.invoices {
        let allocated = open[i].min(remaining);
        remaining -= allocated;
        open[i] -= allocated;
        let inv = &invoices[i];
        let mut reasons = vec![Reason::SplitPayment {
            invoices: s.invoices.len(),
        }];
        let reference = text::find_reference(&inv.reference, &tokens);
        reasons.extend(evidence(inv, t, reference, s.counterparty));
        if !unique {
            reasons.push(Reason::Ambiguous { candidates: s.fits });
        }
        matches.push(Match {
            invoice: i,
            transaction: s.t,
            allocated,
            score: s.score,
            grade: if auto { Grade::Auto } else { Grade::Suggested },
            group: 0,
            reasons,
        });
    }
    t_left[s.t] = Decimal::ZERO;
}

/// Split payments among what the first pass left: the payer's open
/// invoices (by counterparty or named in the description) near the payment.
#[allow(clippy::too_many_arguments)]
fn split_payments(
    invoices: &[Invoice],
    transactions: &[Transaction],
    rules: &Rules,
    refs: &RefIndex,
    t_left: &mut [Decimal],
    open: &mut [Decimal],
    matches: &mut Vec<Match>,
) {
    if rules.max_invoices_per_payment < 2 {
        return;
    }
    let by_name = name_index(invoices);
    for (ti, t) in transactions.iter().enumerate() {
        if t.amount <= Decimal::ZERO || t_left[ti] != t.amount {
            continue;
        }
        let tokens = text::tokens(&t.description);
        let mut pool: Vec<usize> = Vec::new();
        refs.lookup(&tokens, &mut pool);
        for word in text::name_tokens(&t.counterparty)
            .iter()
            .chain(tokens.iter())
        {
            if let Some(list) = by_name.get(word) {
                pool.extend(list);
            }
        }
        if let Some(s) = find_split(invoices, ti, t, &tokens, pool, rules, open) {
            apply_split(&s, invoices, transactions, rules, t_left, open, matches);
        }
    }
}

/// Most subsets that fit one payment looked at before the search stops (it
/// is ambiguous by then anyway).
const SPLIT_FITS: usize = 64;
/// Most partial subsets tried for one payment, so that many invoices of
/// similar amounts and a high `max_invoices_per_payment` cannot make the
/// search explode; it reports what it found by then.
const SPLIT_STEPS: usize = 50_000;

/// Subsets of 2..=max_k positive amounts that sum to `target` within `tol`:
/// a depth-first search over the amounts in ascending order, so a branch
/// ends at the first amount that overshoots, the last amount of a subset is
/// found by binary search, and a branch is cut when even the largest amounts
/// cannot make up what is missing.
struct SubsetSum {
    /// (amount, position in the pool), ascending.
    sorted: Vec<(Decimal, usize)>,
    /// `largest[r]`: the sum of the `r` largest amounts.
    largest: Vec<Decimal>,
    target: Decimal,
    tol: Decimal,
    max_k: usize,
    steps: usize,
    chosen: Vec<usize>,
    found: Vec<Vec<usize>>,
}

impl SubsetSum {
    /// Up to SPLIT_FITS subsets that fit, each as ascending positions in `amounts`.
    fn run(amounts: &[Decimal], target: Decimal, tol: Decimal, max_k: usize) -> Vec<Vec<usize>> {
        let mut sorted: Vec<(Decimal, usize)> =
            amounts.iter().enumerate().map(|(k, a)| (*a, k)).collect();
        sorted.sort();
        let mut largest = vec![Decimal::ZERO];
        for (a, _) in sorted.iter().rev().take(max_k) {
            largest.push(largest[largest.len() - 1] + a);
        }
        let mut search = SubsetSum {
            sorted,
            largest,
            target,
            tol,
            max_k,
            steps: 0,
            chosen: Vec::with_capacity(max_k),
            found: Vec::new(),
        };
        if max_k >= 2 && search.sorted.len() >= 2 {
            search.dfs(0, Decimal::ZERO);
        }
        for f in &mut search.found {
            f.sort_unstable();
        }
        search.found
    }

    fn done(&self) -> bool {
        self.found.len() >= SPLIT_FITS || self.steps >= SPLIT_STEPS
    }

    /// Extends `chosen` (whose amounts add up to `sum`) with amounts from
    /// position `from` on.
    fn dfs(&mut self, from: usize, sum: Decimal) {
        self.steps += 1;
        let n = self.sorted.len();
        let chosen = self.chosen.len();
        let (lo, hi) = (self.target - self.tol - sum, self.target + self.tol - sum);
        let left = self.max_k - chosen;
        if self.largest[left.min(n - from).min(self.largest.len() - 1)] < lo {
            return;
        }
        if left == 1 {
            // The last amount: any in [lo, hi].
            let start = from + self.sorted[from..].partition_point(|(a, _)| *a < lo);
            for k in start..n {
                if self.sorted[k].0 > hi || self.found.len() >= SPLIT_FITS {
                    break;
                }
                self.record(k);
            }
            return;
        }
        for k in from..n {
            let a = self.sorted[k].0;
            if a > hi || self.done() {
                return;
            }
            if chosen >= 1 && a >= lo {
                self.record(k);
            }
            if k + 1 < n {
                self.chosen.push(k);
                self.dfs(k + 1, sum + a);
                self.chosen.pop();
            }
        }
    }

    fn record(&mut self, last: usize) {
        let mut subset: Vec<usize> = self.chosen.iter().map(|&k| self.sorted[k].1).collect();
        subset.push(self.sorted[last].1);
        self.found.push(subset);
    }
}

#[cfg(test)]
mod tests;
