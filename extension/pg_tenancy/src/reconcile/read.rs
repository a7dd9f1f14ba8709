//! Reading a source's rows as the caller, with SPI: every unsafe step of
//! reconciliation is here. Each result tuple is taken apart with one call
//! into Postgres, and each value is read with errors naming the relation,
//! the row and the column.

use super::source::{Column, Nulls, Source};
use crate::error::raise as fail;
use pgrx::prelude::*;
use rust_decimal::Decimal;
use std::str::FromStr;
use tenancy_matching::MAX_AMOUNT;

/// One row of a source, its columns taken apart once, read with errors
/// naming the column.
pub struct Row<'a> {
    source: &'a Source,
    values: &'a [pg_sys::Datum],
    nulls: &'a [bool],
    pub id: String,
}

/// The bytes of a text datum, detoasted if it is compressed or stored out
/// of line (a long value read straight from a table).
///
/// # Safety
///
/// `d` must be a non-null text datum that stays valid while the bytes are used.
#[allow(unsafe_code)]
unsafe fn text_bytes<'a>(d: pg_sys::Datum) -> &'a [u8] {
    let mut p = d.cast_mut_ptr::<pg_sys::varlena>();
    // SAFETY: the caller's promise; detoasting copies into the current
    // memory context, SPI's, which lives until the read is done.
    unsafe {
        if pgrx::varlena::varatt_is_1b_e(p) || pgrx::varlena::varatt_is_4b_c(p) {
            p = pg_sys::pg_detoast_datum_packed(p);
        }
        pgrx::varlena::varlena_to_byte_slice(p)
    }
}

impl Row<'_> {
    fn datum(&self, i: usize) -> Option<pg_sys::Datum> {
        (!self.nulls[i]).then(|| self.values[i])
    }

    pub fn text(&self, i: usize, c: &Column) -> Option<String> {
        match (self.datum(i), c.nulls) {
            (Some(d), _) => Some(self.string(d, c.name)),
            (None, Nulls::Empty) => Some(String::new()),
            (None, Nulls::Allowed) => None,
            (None, Nulls::Refused) => self.null(c.name),
        }
    }

    /// A column the query casts to text.
    fn string(&self, d: pg_sys::Datum, column: &str) -> String {
        // SAFETY: the query casts every text column to text, and the tuple
        // it comes from stays in SPI's result until the read is done.
        #[allow(unsafe_code)]
        let bytes = unsafe { text_bytes(d) };
        match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => fail(
                PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
                format!(
                    "{}: row {} has a \"{column}\" that is not valid UTF-8",
                    self.source.name, self.id
                ),
                "tenancy.reconcile reads text in UTF-8: use a UTF8 database.",
            ),
        }
    }

    pub fn null(&self, column: &str) -> ! {
        fail(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            if self.id.is_empty() {
                format!("{}: a row has a NULL \"{column}\"", self.source.name)
            } else {
                format!(
                    "{}: row {} has a NULL \"{column}\"",
                    self.source.name, self.id
                )
            },
            "Give the column a value, or filter such rows out with a view.",
        )
    }

    pub fn amount(&self, i: usize, c: &Column) -> Decimal {
        let text = self.text(i, c).unwrap_or_default();
        // A decimal holds 28 or 29 digits; beyond that, parsing rounds. A
        // longer text is kept only if it reads back the same: money is exact.
        let exact = |d: &Decimal| {
            text.bytes().filter(u8::is_ascii_digit).count() <= 28 || d.to_string() == text
        };
        match Decimal::from_str(&text) {
            Ok(d) if d.abs() < MAX_AMOUNT && exact(&d) => d,
            _ => fail(
                PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                format!(
                    "{}: row {} has \"{}\" = {text}, which is not an amount tenancy.reconcile handles",
                    self.source.name, self.id, c.name
                ),
                "Amounts must be finite, below 10^20 in magnitude, with at most 28 significant digits.",
            ),
        }
    }

    /// A column the query turns into a day number (an integer).
    pub fn day(&self, i: usize, c: &Column) -> Option<i32> {
        let v = self.datum(i).map(|d| d.value() as i32);
        if v.is_none() && c.nulls == Nulls::Refused {
            self.null(c.name);
        }
        v
    }

    /// The query's last column: whether the row's tenant is not the current one.
    pub fn foreign_tenant(&self, i: usize) {
        if self.datum(i).is_none_or(|d| d.value() != 0) {
            fail(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!(
                    "{} shows rows of another tenant (row {})",
                    self.source.name, self.id
                ),
                "Make the table tenant-scoped with tenancy.enable(), or reconcile a view that keeps only your tenant's rows.",
            );
        }
    }
}

/// Reads every row of a source with `f`, as the caller. Each tuple is taken
/// apart with one call into Postgres rather than one per column.
pub fn read<T>(source: &Source, mut f: impl FnMut(&Row) -> Option<T>) -> (Vec<String>, Vec<T>) {
    Spi::connect(|client| {
        let n = client.select(source.query.as_str(), None, &[])?.len();
        let mut ids = Vec::with_capacity(n);
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return Ok::<_, pgrx::spi::SpiError>((ids, out));
        }
        // SAFETY: the select just run left its n rows in SPI_tuptable, which
        // stays until this connection ends; nothing else runs SPI meanwhile.
        #[allow(unsafe_code)]
        let (tuples, desc) = unsafe {
            let table = &*pg_sys::SPI_tuptable;
            (std::slice::from_raw_parts(table.vals, n), table.tupdesc)
        };
        // SAFETY: the result's descriptor, valid while the tuples are.
        #[allow(unsafe_code)]
        let natts = usize::try_from(unsafe { (*desc).natts }).unwrap_or(0);
        let mut values = vec![pg_sys::Datum::from(0usize); natts];
        let mut nulls = vec![true; natts];
        for &tuple in tuples {
            // SAFETY: a tuple of the result with its descriptor, into arrays
            // of the descriptor's width.
            #[allow(unsafe_code)]
            unsafe {
                pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr())
            };
            let mut r = Row {
                source,
                values: &values,
                nulls: &nulls,
                id: String::new(),
            };
            r.id = match r.datum(0) {
                Some(d) => r.string(d, "id"),
                None => r.null("id"),
            };
            if let Some(v) = f(&r) {
                ids.push(r.id);
                out.push(v);
            }
        }
        Ok((ids, out))
    })
    .unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("reading {} failed: {e}", source.name),
            "This is a bug in pg_tenancy: please report it with the statement that hit it.",
        )
    })
}
