//! What the matcher answers: matches, their grade and the evidence for them.

use rust_decimal::Decimal;

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
    /// One of `candidates` rows offered for the same payment because their
    /// invoices fit it equally well: alternatives, of which a person picks
    /// one (their allocations are not added up).
    Tie {
        candidates: usize,
    },
    /// The payment names the invoice and pays exactly its open amount, but
    /// falls this many days outside the date window: only suggested.
    OutsideWindow {
        days: i32,
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
