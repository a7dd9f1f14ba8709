//! The evidence of a match, the `reasons` column of `tenancy.reconcile`:
//! each reason is an object of a `kind` and up to two fields (`fields`),
//! which the extension turns into `jsonb`. Amounts keep their exact decimal
//! digits (`jsonb` holds them as `numeric`), never going through a float.

use crate::Reason;
use rust_decimal::Decimal;

/// The value of a field of a reason.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Int(i64),
    Amount(Decimal),
    Text(&'a str),
    Bool(bool),
    Null,
}

/// A reason's fields after its kind, in the order they are written.
pub type Fields<'a> = [Option<(&'static str, Value<'a>)>; 2];

/// The `kind` of a reason and its other fields.
pub fn fields(r: &Reason) -> (&'static str, Fields<'_>) {
    use Value::{Amount, Bool, Int, Text};
    let count = |n: usize| Int(i64::try_from(n).unwrap_or(i64::MAX));
    let one = |k, v| [Some((k, v)), None];
    match r {
        Reason::AmountEqual => ("amount_equal", [None, None]),
        Reason::AmountWithinTolerance { difference } => (
            "amount_within_tolerance",
            one("difference", Amount(*difference)),
        ),
        Reason::BankFee { fee } => ("bank_fee", one("fee", Amount(*fee))),
        Reason::PartialPayment { remaining } => {
            ("partial_payment", one("remaining", Amount(*remaining)))
        }
        Reason::Overpayment { excess } => ("overpayment", one("excess", Amount(*excess))),
        Reason::SplitPayment { invoices } => ("split_payment", one("invoices", count(*invoices))),
        Reason::Date {
            days_after_issue,
            days_after_due,
        } => (
            "date",
            [
                Some(("days_after_issue", Int((*days_after_issue).into()))),
                Some((
                    "days_after_due",
                    days_after_due.map_or(Value::Null, |d| Int(d.into())),
                )),
            ],
        ),
        Reason::Reference { reference, exact } => (
            "reference",
            [
                Some(("reference", Text(reference))),
                Some(("exact", Bool(*exact))),
            ],
        ),
        Reason::NoReference => ("no_reference", [None, None]),
        Reason::Counterparty { similarity } => {
            ("counterparty", one("similarity", Amount(*similarity)))
        }
        Reason::Ambiguous { candidates } => ("ambiguous", one("candidates", count(*candidates))),
        Reason::Tie { candidates } => ("tie", one("candidates", count(*candidates))),
        Reason::OutsideWindow { days } => ("outside_window", one("days", Int((*days).into()))),
        Reason::CurrencyDiffers {
            invoice,
            transaction,
        } => (
            "currency_differs",
            [
                Some(("invoice_currency", Text(invoice))),
                Some(("transaction_currency", Text(transaction))),
            ],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_is_its_kind_and_fields_with_exact_amounts() {
        let bank_fee = Reason::BankFee {
            fee: Decimal::new(1250, 2),
        };
        let fee = fields(&bank_fee);
        assert_eq!(
            fee,
            (
                "bank_fee",
                [Some(("fee", Value::Amount(Decimal::new(1250, 2)))), None]
            )
        );
        assert_eq!(fee.1[0].unwrap().1, Value::Amount("12.50".parse().unwrap()));
        assert_eq!(
            fields(&Reason::Date {
                days_after_issue: 3,
                days_after_due: None,
            }),
            (
                "date",
                [
                    Some(("days_after_issue", Value::Int(3))),
                    Some(("days_after_due", Value::Null))
                ]
            )
        );
        let r = Reason::Reference {
            reference: "INV-7".into(),
            exact: false,
        };
        assert_eq!(
            fields(&r),
            (
                "reference",
                [
                    Some(("reference", Value::Text("INV-7"))),
                    Some(("exact", Value::Bool(false)))
                ]
            )
        );
        assert_eq!(fields(&Reason::NoReference), ("no_reference", [None, None]));
    }
}
