//! The values of `_reconcile`'s rows built as Postgres datums directly:
//! amounts as `numeric` from a decimal's integer and scale, and `reasons` as
//! `jsonb` from the matcher's fields (`tenancy_matching::explain::fields`).
//! Going through text instead (a decimal's digits read back by
//! `numeric_in`, JSON text parsed by `jsonb_in`) cost about a quarter of a
//! call at 100,000 invoices.
//!
//! Each datum is allocated in the current memory context: the row's, which
//! Postgres resets before it asks for the next row.

use pgrx::pg_sys;
use pgrx::prelude::*;
use rust_decimal::Decimal;
use std::ffi::{c_char, c_int, CString};
use tenancy_matching::explain::{self, Value};
use tenancy_matching::Reason;

/// A datum built here, returned as a column of SQL type `$sql`.
macro_rules! column {
    ($name:ident, $sql:literal, $oid:expr) => {
        pub struct $name(pg_sys::Datum);

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

column!(Numeric, "numeric", pg_sys::NUMERICOID);
column!(Jsonb, "jsonb", pg_sys::JSONBOID);

/// `d` as a `numeric` of the same digits and display scale (12.50 stays
/// 12.50), as `numeric_in` would read its text.
pub fn numeric(d: Decimal) -> Numeric {
    Numeric(pg_sys::Datum::from(numeric_ptr(d)))
}

fn numeric_ptr(d: Decimal) -> pg_sys::Numeric {
    let scale = c_int::try_from(d.scale()).unwrap_or(c_int::MAX);
    // The function scales the integer up by at most 1000 first; where that
    // would overflow, PostgreSQL before 15.2 took a path that lost digits.
    // Such amounts (beyond 15 digits) go through their text instead.
    let fast = i64::try_from(d.mantissa())
        .ok()
        .filter(|m| m.checked_mul(1000).is_some());
    match fast {
        // SAFETY: a plain function of two integers that returns a new
        // numeric (palloc'd); the scale of a decimal is at most 28.
        #[allow(unsafe_code)]
        Some(m) => unsafe { pg_sys::int64_div_fast_to_numeric(m, scale) },
        // Through its text, which is always a numeric's.
        None => {
            let text = CString::new(d.to_string()).unwrap_or_default();
            // SAFETY: numeric_in of a valid C string returns a numeric.
            #[allow(unsafe_code)]
            let datum = unsafe {
                pgrx::direct_function_call_as_datum(
                    pg_sys::numeric_in,
                    &[
                        Some(pg_sys::Datum::from(text.as_ptr())),
                        Some(pg_sys::Datum::from(pg_sys::InvalidOid)),
                        Some(pg_sys::Datum::from(-1_i32)),
                    ],
                )
            };
            match datum {
                Some(d) => d.cast_mut_ptr(),
                None => crate::error::internal("numeric_in of an amount", "no value"),
            }
        }
    }
}

/// The reasons as a `jsonb` array of objects, `[{"kind": ..., ...}, ...]`.
pub fn reasons(reasons: &[Reason]) -> Jsonb {
    let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
    // SAFETY: the documented way to build a jsonb value: a sequence of
    // pushJsonbValue calls on one parse state, then JsonbValueToJsonb. The
    // strings pushed are borrowed from `reasons` and from static keys, which
    // outlive the call; JsonbValueToJsonb copies them into the result.
    #[allow(unsafe_code)]
    unsafe {
        use pg_sys::JsonbIteratorToken::{
            WJB_BEGIN_ARRAY, WJB_BEGIN_OBJECT, WJB_END_ARRAY, WJB_END_OBJECT, WJB_KEY, WJB_VALUE,
        };
        let push = |state: &mut *mut pg_sys::JsonbParseState, token, value: Option<Value>| {
            let mut v = value.map(scalar);
            pg_sys::pushJsonbValue(
                state,
                token,
                v.as_mut().map_or(std::ptr::null_mut(), |v| v as *mut _),
            )
        };
        push(&mut state, WJB_BEGIN_ARRAY, None);
        for r in reasons {
            let (kind, fields) = explain::fields(r);
            push(&mut state, WJB_BEGIN_OBJECT, None);
            push(&mut state, WJB_KEY, Some(Value::Text("kind")));
            push(&mut state, WJB_VALUE, Some(Value::Text(kind)));
            for (name, value) in fields.into_iter().flatten() {
                push(&mut state, WJB_KEY, Some(Value::Text(name)));
                push(&mut state, WJB_VALUE, Some(value));
            }
            push(&mut state, WJB_END_OBJECT, None);
        }
        let array = push(&mut state, WJB_END_ARRAY, None);
        Jsonb(pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(array)))
    }
}

/// A scalar jsonb value; a string borrows its bytes.
fn scalar(v: Value) -> pg_sys::JsonbValue {
    // SAFETY: an all-zero JsonbValue is a valid (null) value; each arm
    // below sets the type and the one union field it reads.
    #[allow(unsafe_code)]
    let mut j: pg_sys::JsonbValue = unsafe { std::mem::zeroed() };
    match v {
        Value::Null => j.type_ = pg_sys::jbvType::jbvNull,
        Value::Bool(b) => {
            j.type_ = pg_sys::jbvType::jbvBool;
            j.val.boolean = b;
        }
        Value::Int(n) => {
            j.type_ = pg_sys::jbvType::jbvNumeric;
            j.val.numeric = numeric_ptr(Decimal::from(n));
        }
        Value::Amount(d) => {
            j.type_ = pg_sys::jbvType::jbvNumeric;
            j.val.numeric = numeric_ptr(d);
        }
        Value::Text(s) => {
            j.type_ = pg_sys::jbvType::jbvString;
            j.val.string = pg_sys::JsonbValue__bindgen_ty_1__bindgen_ty_1 {
                len: c_int::try_from(s.len()).unwrap_or(c_int::MAX),
                val: s.as_ptr().cast::<c_char>().cast_mut(),
            };
        }
    }
    j
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;
    use std::ffi::CStr;
    use std::str::FromStr;

    /// The text of a datum by its type's output function.
    #[allow(unsafe_code)]
    fn out(f: unsafe fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum, d: pg_sys::Datum) -> String {
        // SAFETY: an output function of the datum's type.
        let text: Option<&CStr> = unsafe { pgrx::direct_function_call(f, &[Some(d)]) };
        text.expect("a value").to_string_lossy().into_owned()
    }

    /// What `text` reads as through the input function `f` and back.
    #[allow(unsafe_code)]
    fn through_text(
        input: unsafe fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum,
        output: unsafe fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum,
        text: &str,
    ) -> String {
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
        out(output, d.expect("a value"))
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
            // Either side of where the text path takes over.
            "9223372036854.775",
            "-9223372036854775",
            "9223372036854.775807",
            "922337203685477580.7",
            "922337203.6854775807",
        ] {
            let d = Decimal::from_str(s).unwrap();
            assert_eq!(
                out(pg_sys::numeric_out, numeric(d).0),
                through_text(pg_sys::numeric_in, pg_sys::numeric_out, &d.to_string()),
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
        for (reasons, text) in [
            (vec![], "[]"),
            (all.clone(), text),
            (vec![all[7].clone()], one),
        ] {
            assert_eq!(
                out(pg_sys::jsonb_out, super::reasons(&reasons).0),
                through_text(pg_sys::jsonb_in, pg_sys::jsonb_out, text),
            );
        }
    }
}
