//! What the matcher reads: invoices and bank transactions, as the
//! extension hands them over, and the errors for input it cannot use.

use crate::rules::RuleError;
use rust_decimal::Decimal;

/// A date as a day number (any fixed epoch; the glue uses Postgres' own).
pub type Day = i32;

#[derive(Clone, Debug, Default, PartialEq)]
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

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transaction {
    /// Money received is positive; payments out (negative) are never matched.
    pub amount: Decimal,
    pub currency: String,
    pub booked_on: Day,
    pub description: String,
    pub counterparty: String,
}

/// Amounts must be smaller than this (10^20) in magnitude. Sums of ten of
/// them, a percentage of one and every window around one then stay far
/// inside what a `Decimal` holds (about 7.9 * 10^28), so no arithmetic on
/// amounts can overflow. Ten times a country's yearly product in the
/// smallest currency units is still far below it.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(0x6310_0000, 0x6BC7_5E2D, 0x5, false, 0);

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
    Rules(RuleError),
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
            InputError::Rules(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for InputError {}

impl From<RuleError> for InputError {
    fn from(e: RuleError) -> Self {
        InputError::Rules(e)
    }
}

/// Errors unless every amount is one the matcher handles.
pub(crate) fn validate(
    invoices: &[Invoice],
    transactions: &[Transaction],
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
    match transactions
        .iter()
        .position(|t| t.amount.abs() >= MAX_AMOUNT)
    {
        Some(index) => Err(InputError::AmountTooLarge {
            what: "transaction",
            index,
        }),
        None => Ok(()),
    }
}
