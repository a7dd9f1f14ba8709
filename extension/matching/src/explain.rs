//! The evidence of a match, the `reasons` column of `tenancy.reconcile`:
//! each reason is an object of a `kind` and up to two fields (`fields`),
//! which the extension turns into `jsonb` directly and `reasons_json`
//! writes as JSON text. Amounts keep their exact decimal digits (`jsonb`
//! holds them as `numeric`), never going through a float.

use crate::Reason;
use rust_decimal::Decimal;
use std::fmt::Write;

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

/// `[{"kind": "amount_equal"}, {"kind": "date", "days_after_issue": 3, ...}]`
pub fn reasons_json(reasons: &[Reason]) -> String {
    let mut out = String::with_capacity(64 * reasons.len() + 2);
    out.push('[');
    for (i, r) in reasons.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let (kind, fields) = fields(r);
        out.push_str("{\"kind\": ");
        quote(&mut out, kind);
        for (name, value) in fields.iter().flatten() {
            out.push_str(", ");
            quote(&mut out, name);
            out.push_str(": ");
            // Writing to a String cannot fail.
            let _ = match value {
                Value::Int(n) => write!(out, "{n}"),
                Value::Amount(d) => write!(out, "{d}"),
                Value::Text(s) => {
                    quote(&mut out, s);
                    Ok(())
                }
                Value::Bool(b) => write!(out, "{b}"),
                Value::Null => write!(out, "null"),
            };
        }
        out.push('}');
    }
    out.push(']');
    out
}

/// `s` as a JSON string literal, appended to `out`.
fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn reasons_are_json_with_exact_amounts() {
        let json = reasons_json(&[
            Reason::BankFee {
                fee: Decimal::new(1250, 2),
            },
            Reason::Date {
                days_after_issue: 3,
                days_after_due: None,
            },
            Reason::Reference {
                reference: "INV-\"7\"\n".into(),
                exact: false,
            },
        ]);
        assert_eq!(
            json,
            "[{\"kind\": \"bank_fee\", \"fee\": 12.50}, \
             {\"kind\": \"date\", \"days_after_issue\": 3, \"days_after_due\": null}, \
             {\"kind\": \"reference\", \"reference\": \"INV-\\\"7\\\"\\u000a\", \"exact\": false}]"
        );
    }

    #[test]
    fn no_reasons_is_an_empty_array() {
        assert_eq!(reasons_json(&[]), "[]");
    }
}
