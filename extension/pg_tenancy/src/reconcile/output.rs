//! The columns of `_reconcile`'s rows as Postgres datums, copied from
//! values already in their stored forms (`rows.rs`): amounts as numeric
//! (`numeric.rs`), `reasons` as jsonb (`jsonb.rs`), from the matcher's
//! fields (`tenancy_matching::explain::fields`). Going through text instead
//! (a decimal's digits read back by `numeric_in`, JSON text parsed by
//! `jsonb_in`) cost about a quarter of a call at 100,000 invoices.
//!
//! Each datum is allocated in the current memory context: the row's, which
//! Postgres resets before it asks for the next row.

use pgrx::pg_sys;
use pgrx::prelude::*;

/// A datum built here, returned as a column of SQL type `$sql`.
macro_rules! column {
    ($name:ident, $sql:literal, $oid:expr) => {
        pub struct $name(pg_sys::Datum);

        impl $name {
            /// A copy of `bytes`, a value of this type in its stored form.
            pub fn copied(bytes: &[u8]) -> Self {
                $name(datum(bytes))
            }
        }

        impl IntoDatum for $name {
            fn into_datum(self) -> Option<pg_sys::Datum> {
                Some(self.0)
            }
            fn type_oid() -> pg_sys::Oid {
                $oid
            }
        }

        // SAFETY: returns the datum, as the trait asks; it is always one of
        // type `$sql`, built below.
        #[allow(unsafe_code)]
        unsafe impl pgrx::callconv::BoxRet for $name {
            unsafe fn box_into<'fcx>(
                self,
                fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
            ) -> pgrx::datum::Datum<'fcx> {
                // SAFETY: a datum of the declared type, valid for the call.
                unsafe { fcinfo.return_raw_datum(self.0) }
            }
        }

        pgrx::pgrx_sql_entity_graph::metadata::impl_sql_translatable!($name, $sql);
    };
}

column!(Text, "TEXT", pg_sys::TEXTOID);
column!(Numeric, "numeric", pg_sys::NUMERICOID);
column!(Jsonb, "jsonb", pg_sys::JSONBOID);

/// The 4-byte varlena header of a value of `size` bytes, the header
/// included (Postgres' `SET_VARSIZE`): the size in the upper 30 bits on a
/// little-endian machine, in the lower 30 on a big-endian one. Every value
/// written in stored form here starts with it.
pub(super) fn varlena_header(size: u32) -> [u8; 4] {
    if cfg!(target_endian = "little") {
        (size << 2).to_ne_bytes()
    } else {
        (size & 0x3FFF_FFFF).to_ne_bytes()
    }
}

/// A varlena datum of `bytes` (a varlena, its header included), copied
/// into the current memory context.
fn datum(bytes: &[u8]) -> pg_sys::Datum {
    // SAFETY: palloc returns `len` writable bytes (or raises); `bytes`
    // does not overlap them.
    #[allow(unsafe_code)]
    unsafe {
        let p = pg_sys::palloc(bytes.len()).cast::<u8>();
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        pg_sys::Datum::from(p)
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::super::{jsonb, numeric, rows};
    use super::*;
    use rust_decimal::Decimal;
    use std::ffi::CString;
    use std::str::FromStr;
    use tenancy_matching::Reason;

    /// The bytes of a varlena datum with a 4-byte header.
    #[allow(unsafe_code)]
    fn bytes(d: pg_sys::Datum) -> Vec<u8> {
        // SAFETY: a datum built here or by an input function: a varlena
        // with a 4-byte header, its size in the upper 30 bits.
        unsafe {
            let p = d.cast_mut_ptr::<u8>();
            let size = u32::from_ne_bytes(*p.cast::<[u8; 4]>()) >> 2;
            std::slice::from_raw_parts(p, size as usize).to_vec()
        }
    }

    /// How the input function `f` stores `text`.
    #[allow(unsafe_code)]
    fn stored(input: unsafe fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum, text: &str) -> Vec<u8> {
        let c = CString::new(text).unwrap();
        // SAFETY: the input function of a type, given a C string (numeric_in
        // also takes a type oid and typmod, which it ignores when unset).
        let d = unsafe {
            pgrx::direct_function_call_as_datum(
                input,
                &[
                    Some(pg_sys::Datum::from(c.as_ptr())),
                    Some(pg_sys::Datum::from(pg_sys::InvalidOid)),
                    Some(pg_sys::Datum::from(-1_i32)),
                ],
            )
        };
        bytes(d.expect("a value"))
    }

    #[pg_test]
    fn amounts_are_the_numerics_their_text_reads_as() {
        for s in [
            "0",
            "1",
            "-5",
            "12.50",
            "-0.01",
            "0.0000",
            "99999999999999999.99",
            "9223372036854775807",
            "9223372036854775808",
            "-123456789012345678901234.5678",
            "0.0000000000000000000000000001",
            "1.2345678901234567890123456789",
            "-0.00",
            "100000",
            "10000.0000",
            "-79228162514264337593543950335",
            "7.9228162514264337593543950335",
            "9223372036854.775",
            "-9223372036854775",
            "9223372036854.775807",
            "922337203685477580.7",
            "922337203.6854775807",
        ] {
            let d = Decimal::from_str(s).unwrap();
            let mut encoded = Vec::new();
            numeric::encode(d, &mut encoded);
            assert_eq!(
                bytes(Numeric::copied(&encoded).0),
                stored(pg_sys::numeric_in, &d.to_string()),
                "{s}"
            );
        }
    }

    #[pg_test]
    fn reasons_are_the_jsonb_their_text_reads_as() {
        let amount = |s: &str| Decimal::from_str(s).unwrap();
        let all = vec![
            Reason::AmountEqual,
            Reason::AmountWithinTolerance {
                difference: amount("0.50"),
            },
            Reason::BankFee {
                fee: amount("12.50"),
            },
            Reason::PartialPayment {
                remaining: amount("8686.31"),
            },
            Reason::Overpayment {
                excess: amount("-0.01"),
            },
            Reason::SplitPayment { invoices: 3 },
            Reason::Date {
                days_after_issue: 13,
                days_after_due: Some(-17),
            },
            Reason::Date {
                days_after_issue: -2,
                days_after_due: None,
            },
            Reason::Reference {
                reference: "INV-\"7\"\n\\ é ✓".into(),
                exact: false,
            },
            Reason::Reference {
                reference: String::new(),
                exact: true,
            },
            Reason::NoReference,
            Reason::Counterparty {
                similarity: amount("0.8333"),
            },
            Reason::Counterparty {
                similarity: amount("1"),
            },
            Reason::Ambiguous { candidates: 2 },
            Reason::Tie { candidates: 4 },
            Reason::OutsideWindow { days: 7 },
            Reason::CurrencyDiffers {
                invoice: "EUR".into(),
                transaction: "usd".into(),
            },
        ];
        // The JSON text reconcile returned before 0.8.0, parsed by jsonb_in.
        let text = r#"[{"kind": "amount_equal"}, {"kind": "amount_within_tolerance", "difference": 0.50}, {"kind": "bank_fee", "fee": 12.50}, {"kind": "partial_payment", "remaining": 8686.31}, {"kind": "overpayment", "excess": -0.01}, {"kind": "split_payment", "invoices": 3}, {"kind": "date", "days_after_issue": 13, "days_after_due": -17}, {"kind": "date", "days_after_issue": -2, "days_after_due": null}, {"kind": "reference", "reference": "INV-\"7\"\u000a\\ é ✓", "exact": false}, {"kind": "reference", "reference": "", "exact": true}, {"kind": "no_reference"}, {"kind": "counterparty", "similarity": 0.8333}, {"kind": "counterparty", "similarity": 1}, {"kind": "ambiguous", "candidates": 2}, {"kind": "tie", "candidates": 4}, {"kind": "outside_window", "days": 7}, {"kind": "currency_differs", "invoice_currency": "EUR", "transaction_currency": "usd"}]"#;
        let one = r#"[{"kind": "date", "days_after_issue": -2, "days_after_due": null}]"#;
        // More than 32 elements, where entries hold offsets, and a long string.
        let twice = [all.clone(), all.clone()].concat();
        let twice_text = format!(
            "[{}, {}]",
            &text[1..text.len() - 1],
            &text[1..text.len() - 1]
        );
        let long = "R".repeat(5000);
        let long_reason = vec![
            Reason::Reference {
                reference: long.clone(),
                exact: true,
            },
            Reason::BankFee { fee: amount("1.5") },
        ];
        let long_text = format!(
            r#"[{{"kind": "reference", "reference": "{long}", "exact": true}}, {{"kind": "bank_fee", "fee": 1.5}}]"#
        );
        for (reasons, text) in [
            (vec![], "[]"),
            (all.clone(), text),
            (vec![all[7].clone()], one),
            (twice, twice_text.as_str()),
            (long_reason, long_text.as_str()),
        ] {
            let mut encoded = Vec::new();
            jsonb::reasons(&reasons, &mut encoded).expect("short enough");
            assert_eq!(
                bytes(Jsonb::copied(&encoded).0),
                stored(pg_sys::jsonb_in, text),
                "{text}"
            );
        }
    }

    #[pg_test]
    fn ids_and_grades_are_the_text_they_read_as() {
        for s in [
            "",
            "auto",
            "0b6f4a2e-8d5c-4c1e-9a57-3f1d2e4b6c8a",
            "INV-\"7\" é ✓",
        ] {
            let mut encoded = Vec::new();
            rows::text(s, &mut encoded);
            assert_eq!(
                bytes(Text::copied(&encoded).0),
                stored(pg_sys::textin, s),
                "{s}"
            );
        }
    }
}
