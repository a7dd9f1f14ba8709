//! The evidence of a match as JSON text, the `reasons` column of
//! `tenancy.reconcile`. Amounts are written as JSON numbers with their exact
//! decimal digits (Postgres reads them into `jsonb` as `numeric`), never
//! through a float.

use crate::Reason;
use std::fmt::Write;

/// `[{"kind": "amount_equal"}, {"kind": "date", "days_after_issue": 3, ...}]`
pub fn reasons_json(reasons: &[Reason]) -> String {
    let mut out = String::from("[");
    for (i, r) in reasons.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&reason_json(r));
    }
    out.push(']');
    out
}

fn reason_json(r: &Reason) -> String {
    let kind = |k: &str| format!("{{\"kind\": \"{k}\"");
    let mut s = match r {
        Reason::AmountEqual => kind("amount_equal"),
        Reason::AmountWithinTolerance { difference } => {
            format!(
                "{}, \"difference\": {difference}",
                kind("amount_within_tolerance")
            )
        }
        Reason::BankFee { fee } => format!("{}, \"fee\": {fee}", kind("bank_fee")),
        Reason::PartialPayment { remaining } => {
            format!("{}, \"remaining\": {remaining}", kind("partial_payment"))
        }
        Reason::Overpayment { excess } => format!("{}, \"excess\": {excess}", kind("overpayment")),
        Reason::SplitPayment { invoices } => {
            format!("{}, \"invoices\": {invoices}", kind("split_payment"))
        }
        Reason::Date {
            days_after_issue,
            days_after_due,
        } => {
            let due = days_after_due.map_or("null".to_string(), |d| d.to_string());
            format!(
                "{}, \"days_after_issue\": {days_after_issue}, \"days_after_due\": {due}",
                kind("date")
            )
        }
        Reason::Reference { reference, exact } => format!(
            "{}, \"reference\": {}, \"exact\": {exact}",
            kind("reference"),
            quote(reference)
        ),
        Reason::NoReference => kind("no_reference"),
        Reason::Counterparty { similarity } => {
            format!("{}, \"similarity\": {similarity}", kind("counterparty"))
        }
        Reason::Ambiguous { candidates } => {
            format!("{}, \"candidates\": {candidates}", kind("ambiguous"))
        }
        Reason::CurrencyDiffers {
            invoice,
            transaction,
        } => format!(
            "{}, \"invoice_currency\": {}, \"transaction_currency\": {}",
            kind("currency_differs"),
            quote(invoice),
            quote(transaction)
        ),
    };
    s.push('}');
    s
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
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
    out
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
