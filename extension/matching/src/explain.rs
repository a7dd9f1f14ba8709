//! The evidence of a match as JSON text, the `reasons` column of
//! `tenancy.reconcile`. Amounts are written as JSON numbers with their exact
//! decimal digits (Postgres reads them into `jsonb` as `numeric`), never
//! through a float.

use crate::Reason;
use std::fmt::Write;

/// `[{"kind": "amount_equal"}, {"kind": "date", "days_after_issue": 3, ...}]`
pub fn reasons_json(reasons: &[Reason]) -> String {
    let mut out = String::with_capacity(64 * reasons.len() + 2);
    out.push('[');
    for (i, r) in reasons.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        // Writing to a String cannot fail.
        let _ = write_reason(&mut out, r);
    }
    out.push(']');
    out
}

/// One reason as a JSON object, appended to `out`.
fn write_reason(out: &mut String, r: &Reason) -> std::fmt::Result {
    let kind = match r {
        Reason::AmountEqual => "amount_equal",
        Reason::AmountWithinTolerance { .. } => "amount_within_tolerance",
        Reason::BankFee { .. } => "bank_fee",
        Reason::PartialPayment { .. } => "partial_payment",
        Reason::Overpayment { .. } => "overpayment",
        Reason::SplitPayment { .. } => "split_payment",
        Reason::Date { .. } => "date",
        Reason::Reference { .. } => "reference",
        Reason::NoReference => "no_reference",
        Reason::Counterparty { .. } => "counterparty",
        Reason::Ambiguous { .. } => "ambiguous",
        Reason::Tie { .. } => "tie",
        Reason::OutsideWindow { .. } => "outside_window",
        Reason::CurrencyDiffers { .. } => "currency_differs",
    };
    write!(out, "{{\"kind\": \"{kind}\"")?;
    match r {
        Reason::AmountEqual | Reason::NoReference => {}
        Reason::AmountWithinTolerance { difference } => {
            write!(out, ", \"difference\": {difference}")?
        }
        Reason::BankFee { fee } => write!(out, ", \"fee\": {fee}")?,
        Reason::PartialPayment { remaining } => write!(out, ", \"remaining\": {remaining}")?,
        Reason::Overpayment { excess } => write!(out, ", \"excess\": {excess}")?,
        Reason::SplitPayment { invoices } => write!(out, ", \"invoices\": {invoices}")?,
        Reason::Date {
            days_after_issue,
            days_after_due,
        } => {
            write!(
                out,
                ", \"days_after_issue\": {days_after_issue}, \"days_after_due\": "
            )?;
            match days_after_due {
                Some(d) => write!(out, "{d}")?,
                None => out.push_str("null"),
            }
        }
        Reason::Reference { reference, exact } => {
            out.push_str(", \"reference\": ");
            quote(out, reference);
            write!(out, ", \"exact\": {exact}")?
        }
        Reason::Counterparty { similarity } => write!(out, ", \"similarity\": {similarity}")?,
        Reason::Ambiguous { candidates } | Reason::Tie { candidates } => {
            write!(out, ", \"candidates\": {candidates}")?
        }
        Reason::OutsideWindow { days } => write!(out, ", \"days\": {days}")?,
        Reason::CurrencyDiffers {
            invoice,
            transaction,
        } => {
            out.push_str(", \"invoice_currency\": ");
            quote(out, invoice);
            out.push_str(", \"transaction_currency\": ");
            quote(out, transaction);
        }
    }
    out.push('}');
    Ok(())
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
