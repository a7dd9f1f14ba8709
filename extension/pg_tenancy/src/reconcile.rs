//! `tenancy._reconcile`: the glue between two relations and the pure matcher
//! in `extension/matching`. It reads the relations with SPI as the caller (so
//! row level security scopes them to the current tenant), checks their shape
//! and values with errors that name the relation and column, runs the
//! matcher and streams its matches. `tenancy.reconcile` (src/sql/reconcile.sql)
//! wraps it: it merges the tenant's rules with the per-call overrides and turns
//! `reasons` into jsonb.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::{AnyNumeric, PgRelation};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;
use tenancy_matching::{explain, Grade, Invoice, Rules, Transaction, MAX_AMOUNT};

const RANGES: &str =
    "Ranges: amount_tolerance >= 0, amount_tolerance_pct 0..100, fee_ceiling >= 0, \
days_before and days_after 0..3660, min_auto_score 0..1, max_invoices_per_payment 1..10.";

/// Day numbers count from this date; any fixed epoch works for the matcher.
const EPOCH: &str = "DATE '2000-01-01'";

use crate::error::raise as fail;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Read as text; any type.
    Text,
    /// An amount: a numeric-category type, read exactly as numeric.
    Amount,
    /// A date, or a timestamp read as its date.
    Date,
}

#[derive(Clone, Copy, PartialEq)]
enum Nulls {
    /// NULL is an error naming the column.
    Refused,
    /// NULL is allowed (a missing due date).
    Allowed,
    /// NULL reads as '' (no reference, no description).
    Empty,
}

struct Column {
    name: &'static str,
    kind: Kind,
    nulls: Nulls,
}

const fn col(name: &'static str, kind: Kind, nulls: Nulls) -> Column {
    Column { name, kind, nulls }
}

const INVOICE_COLUMNS: [Column; 8] = [
    col("id", Kind::Text, Nulls::Refused),
    col("amount", Kind::Amount, Nulls::Refused),
    col("currency", Kind::Text, Nulls::Refused),
    col("issue_date", Kind::Date, Nulls::Refused),
    col("due_date", Kind::Date, Nulls::Allowed),
    col("reference", Kind::Text, Nulls::Empty),
    col("counterparty", Kind::Text, Nulls::Empty),
    col("open_amount", Kind::Amount, Nulls::Refused),
];

const TRANSACTION_COLUMNS: [Column; 6] = [
    col("id", Kind::Text, Nulls::Refused),
    col("amount", Kind::Amount, Nulls::Refused),
    col("currency", Kind::Text, Nulls::Refused),
    col("booked_on", Kind::Date, Nulls::Refused),
    col("description", Kind::Text, Nulls::Empty),
    col("counterparty", Kind::Text, Nulls::Empty),
];

/// Optional on transactions: what is left after earlier matches (the
/// reference ledger maintains it). When present it is what may be allocated.
const UNMATCHED: Column = col("unmatched_amount", Kind::Amount, Nulls::Refused);
/// Optional: when present, every visible row must belong to the current tenant.
const TENANT: &str = "tenant_id";

/// A relation as the matcher needs it: its name for messages and the query
/// that reads the conventional columns (plus the optional ones it has).
struct Source {
    name: String,
    query: String,
    has_unmatched: bool,
    has_tenant: bool,
}

fn inspect(rel: &PgRelation, what: &str, columns: &[Column], optional: Option<&Column>) -> Source {
    let oid = rel.oid();
    let name: String =
        Spi::get_one_with_args("SELECT $1::regclass::text", &[DatumWithOid::from(oid)])
            .ok()
            .flatten()
            .unwrap_or_else(|| rel.name().to_string());
    let relkind = rel.rd_rel;
    #[allow(unsafe_code)]
    let relkind = unsafe { (*relkind).relkind } as u8;
    if !matches!(relkind, b'r' | b'v' | b'm' | b'p' | b'f') {
        fail(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("{what} relation {name} is not a table or view"),
            "Pass a table, view or materialized view.",
        );
    }
    // name -> type category ('N' numeric, 'D' date/time, ...)
    let types: HashMap<String, String> = Spi::connect(|client| {
        let rows = client.select(
            "SELECT a.attname::text, t.typcategory::text
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            None,
            &[DatumWithOid::from(oid)],
        )?;
        let mut out = HashMap::new();
        for row in rows {
            let n: String = row.get(1)?.unwrap_or_default();
            let c: String = row.get(2)?.unwrap_or_default();
            out.insert(n, c);
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .unwrap_or_else(|e| panic!("reading the columns of {name} failed: {e}"));

    let expected = || {
        columns
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut select = Vec::new();
    for c in columns {
        let Some(category) = types.get(c.name) else {
            fail(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!("{what} relation {name} has no column \"{}\"", c.name),
                &format!(
                    "tenancy.reconcile needs {what} columns {}; a view can rename yours.",
                    expected()
                ),
            );
        };
        let expr = match c.kind {
            Kind::Text => format!("\"{}\"::text", c.name),
            Kind::Amount => {
                if category != "N" {
                    fail(
                        PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                        format!("column \"{}\" of {name} is not a number", c.name),
                        "Amounts must be numeric (or an integer type).",
                    );
                }
                format!("\"{}\"::numeric::text", c.name)
            }
            Kind::Date => {
                if category != "D" {
                    fail(
                        PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                        format!("column \"{}\" of {name} is not a date", c.name),
                        "Dates must be date, timestamp or timestamptz.",
                    );
                }
                format!("(\"{}\"::date - {EPOCH})", c.name)
            }
        };
        select.push(expr);
    }
    let optional = optional.filter(|c| types.get(c.name).is_some_and(|t| t == "N"));
    if let Some(c) = optional {
        select.push(format!("\"{}\"::numeric::text", c.name));
    }
    let has_unmatched = optional.is_some();
    let has_tenant = types.contains_key(TENANT);
    if has_tenant {
        select.push(format!(
            "\"{TENANT}\"::text IS DISTINCT FROM (SELECT tenancy.current_tenant_id()::text)"
        ));
    }
    let list = select
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{e} AS _c{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    // Ordered by id so that the same rows always give the same matches.
    let query = format!("SELECT {list} FROM {name} ORDER BY \"id\"");
    Source {
        name,
        query,
        has_unmatched,
        has_tenant,
    }
}

/// One row of a source, its columns taken apart once, read with errors
/// naming the column.
struct Row<'a> {
    source: &'a Source,
    values: &'a [pg_sys::Datum],
    nulls: &'a [bool],
    id: String,
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

    fn text(&self, i: usize, c: &Column) -> Option<String> {
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

    fn null(&self, column: &str) -> ! {
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

    fn amount(&self, i: usize, c: &Column) -> Decimal {
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
    fn day(&self, i: usize, c: &Column) -> Option<i32> {
        let v = self.datum(i).map(|d| d.value() as i32);
        if v.is_none() && c.nulls == Nulls::Refused {
            self.null(c.name);
        }
        v
    }

    /// The query's last column: whether the row's tenant is not the current one.
    fn foreign_tenant(&self, i: usize) {
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
fn read<T>(source: &Source, mut f: impl FnMut(&Row) -> Option<T>) -> (Vec<String>, Vec<T>) {
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
    .unwrap_or_else(|e| panic!("reading {} failed: {e}", source.name))
}

fn invoices(source: &Source) -> (Vec<String>, Vec<Invoice>) {
    let c = &INVOICE_COLUMNS;
    read(source, |r| {
        if source.has_tenant {
            r.foreign_tenant(c.len());
        }
        let inv = Invoice {
            amount: r.amount(1, &c[1]),
            currency: r.text(2, &c[2]).unwrap_or_default(),
            issue_date: r.day(3, &c[3]).unwrap_or_default(),
            due_date: r.day(4, &c[4]),
            reference: r.text(5, &c[5]).unwrap_or_default(),
            counterparty: r.text(6, &c[6]).unwrap_or_default(),
            open_amount: r.amount(7, &c[7]),
        };
        if inv.amount <= Decimal::ZERO {
            fail(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "{}: invoice {} has amount {}; invoice amounts must be positive",
                    source.name, r.id, inv.amount
                ),
                "Credit notes are not invoices: filter them out with a view.",
            );
        }
        if inv.open_amount < Decimal::ZERO || inv.open_amount > inv.amount {
            fail(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "{}: invoice {} has open_amount {} outside 0..{}",
                    source.name, r.id, inv.open_amount, inv.amount
                ),
                "open_amount is what is still unpaid: between 0 and amount.",
            );
        }
        Some(inv)
    })
}

fn transactions(source: &Source) -> (Vec<String>, Vec<Transaction>) {
    let c = &TRANSACTION_COLUMNS;
    read(source, |r| {
        let mut next = c.len();
        let amount = r.amount(1, &c[1]);
        if amount.is_zero() {
            fail(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("{}: transaction {} has amount 0", source.name, r.id),
                "Filter out zero-amount lines with a view.",
            );
        }
        // Money going out (negative) is never matched to an invoice.
        let mut available = amount.max(Decimal::ZERO);
        if source.has_unmatched {
            available = available.min(r.amount(next, &UNMATCHED));
            next += 1;
        }
        if source.has_tenant {
            r.foreign_tenant(next);
        }
        if available <= Decimal::ZERO {
            return None;
        }
        Some(Transaction {
            amount: available,
            currency: r.text(2, &c[2]).unwrap_or_default(),
            booked_on: r.day(3, &c[3]).unwrap_or_default(),
            description: r.text(4, &c[4]).unwrap_or_default(),
            counterparty: r.text(5, &c[5]).unwrap_or_default(),
        })
    })
}

fn decimal(rule: &str, v: Option<AnyNumeric>, default: Decimal) -> Decimal {
    match v {
        None => default,
        Some(n) => Decimal::from_str(&n.to_string()).unwrap_or_else(|_| {
            fail(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("rule {rule} = {n} is not a finite number"),
                RANGES,
            )
        }),
    }
}

fn numeric(d: Decimal) -> AnyNumeric {
    AnyNumeric::try_from(d.to_string().as_str()).expect("a decimal is a valid numeric")
}

/// Candidate matches between two relations. Called by `tenancy.reconcile`;
/// NULL rules take the built-in defaults.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(volatile, name = "_reconcile")]
fn reconcile_relations(
    invoices_rel: Option<PgRelation>,
    transactions_rel: Option<PgRelation>,
    amount_tolerance: Option<AnyNumeric>,
    amount_tolerance_pct: Option<AnyNumeric>,
    fee_ceiling: Option<AnyNumeric>,
    days_before: Option<i32>,
    days_after: Option<i32>,
    min_auto_score: Option<AnyNumeric>,
    max_invoices_per_payment: Option<i32>,
    allow_currency_mismatch: Option<bool>,
) -> TableIterator<
    'static,
    (
        name!(invoice_id, String),
        name!(transaction_id, String),
        name!(allocated_amount, AnyNumeric),
        name!(score, AnyNumeric),
        name!(grade, String),
        name!(group_id, i64),
        name!(reasons, String),
    ),
> {
    let (Some(invoices_rel), Some(transactions_rel)) = (invoices_rel, transactions_rel) else {
        fail(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "tenancy.reconcile needs an invoices relation and a transactions relation, not NULL",
            "Call tenancy.reconcile('ledger.invoices', 'ledger.bank_transactions').",
        );
    };
    let d = Rules::default();
    let rules = Rules {
        amount_tolerance: decimal("amount_tolerance", amount_tolerance, d.amount_tolerance),
        amount_tolerance_pct: decimal(
            "amount_tolerance_pct",
            amount_tolerance_pct,
            d.amount_tolerance_pct,
        ),
        fee_ceiling: decimal("fee_ceiling", fee_ceiling, d.fee_ceiling),
        days_before: days_before.unwrap_or(d.days_before),
        days_after: days_after.unwrap_or(d.days_after),
        min_auto_score: min_auto_score
            .map(|n| f64::try_from(n).unwrap_or(f64::NAN))
            .unwrap_or(d.min_auto_score),
        max_invoices_per_payment: max_invoices_per_payment
            .map(|n| usize::try_from(n).unwrap_or(0))
            .unwrap_or(d.max_invoices_per_payment),
        allow_currency_mismatch: allow_currency_mismatch.unwrap_or(d.allow_currency_mismatch),
    };
    let started = std::time::Instant::now();
    let inv_source = inspect(&invoices_rel, "invoices", &INVOICE_COLUMNS, None);
    let tx_source = inspect(
        &transactions_rel,
        "transactions",
        &TRANSACTION_COLUMNS,
        Some(&UNMATCHED),
    );
    let (inv_ids, invs) = invoices(&inv_source);
    let (tx_ids, txs) = transactions(&tx_source);
    let read = started.elapsed();
    let matches = tenancy_matching::reconcile(&invs, &txs, &rules).unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            e.to_string(),
            RANGES,
        )
    });
    // For DBAs and the benchmark: where the time of a call goes
    // (SET client_min_messages = debug1 shows it).
    pgrx::debug1!(
        "tenancy.reconcile: read {} invoices and {} transactions in {:.1} ms, matched in {:.1} ms: {} matches",
        invs.len(),
        txs.len(),
        read.as_secs_f64() * 1e3,
        (started.elapsed() - read).as_secs_f64() * 1e3,
        matches.len()
    );
    // Scores are rounded to four decimals, so few distinct ones repeat over
    // many rows: each is converted to numeric once.
    let mut scores: HashMap<u64, AnyNumeric> = HashMap::new();
    TableIterator::new(matches.into_iter().map(move |m| {
        let score = scores
            .entry(m.score.to_bits())
            .or_insert_with(|| {
                numeric(Decimal::from_str(&format!("{:.4}", m.score)).unwrap_or_default())
            })
            .clone();
        (
            inv_ids[m.invoice].clone(),
            tx_ids[m.transaction].clone(),
            numeric(m.allocated),
            score,
            match m.grade {
                Grade::Auto => "auto".to_string(),
                Grade::Suggested => "suggested".to_string(),
            },
            i64::try_from(m.group).unwrap_or(i64::MAX),
            explain::reasons_json(&m.reasons),
        )
    }))
}
