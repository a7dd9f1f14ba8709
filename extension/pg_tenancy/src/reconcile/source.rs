//! What a relation must look like to be reconciled: the conventional
//! columns, their types and how NULLs read, checked against the catalog with
//! errors naming the relation and column; and the query that reads them.

use crate::error::raise as fail;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use std::collections::HashMap;

/// Day numbers count from this date; any fixed epoch works for the matcher.
const EPOCH: &str = "DATE '2000-01-01'";

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    /// An id: a uuid's 16 bytes, any other type as text (`id.rs`).
    Id,
    /// Read as text; any type.
    Text,
    /// An amount: a numeric-category type, read exactly as numeric.
    Amount,
    /// A date, or a timestamp read as its date.
    Date,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Nulls {
    /// NULL is an error naming the column.
    Refused,
    /// NULL is allowed (a missing due date).
    Allowed,
    /// NULL reads as '' (no reference, no description).
    Empty,
}

pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub nulls: Nulls,
}

const fn col(name: &'static str, kind: Kind, nulls: Nulls) -> Column {
    Column { name, kind, nulls }
}

pub const INVOICE_COLUMNS: [Column; 8] = [
    col("id", Kind::Id, Nulls::Refused),
    col("amount", Kind::Amount, Nulls::Refused),
    col("currency", Kind::Text, Nulls::Refused),
    col("issue_date", Kind::Date, Nulls::Refused),
    col("due_date", Kind::Date, Nulls::Allowed),
    col("reference", Kind::Text, Nulls::Empty),
    col("counterparty", Kind::Text, Nulls::Empty),
    col("open_amount", Kind::Amount, Nulls::Refused),
];

pub const TRANSACTION_COLUMNS: [Column; 6] = [
    col("id", Kind::Id, Nulls::Refused),
    col("amount", Kind::Amount, Nulls::Refused),
    col("currency", Kind::Text, Nulls::Refused),
    col("booked_on", Kind::Date, Nulls::Refused),
    col("description", Kind::Text, Nulls::Empty),
    col("counterparty", Kind::Text, Nulls::Empty),
];

/// Optional on transactions: what is left after earlier matches (the
/// reference ledger maintains it). When present it is what may be allocated.
pub const UNMATCHED: Column = col("unmatched_amount", Kind::Amount, Nulls::Refused);
/// Optional: when present, every visible row must belong to the current tenant.
const TENANT: &str = "tenant_id";

/// A relation as the matcher needs it: its name for messages and the query
/// that reads the conventional columns (plus the optional ones it has).
#[derive(Clone)]
pub struct Source {
    pub name: String,
    /// The query, without an order.
    pub query: String,
    /// The column to order by for reading in windows.
    pub order: String,
    pub has_unmatched: bool,
    /// The id column is a uuid, read as its bytes.
    pub uuid_id: bool,
    /// Each row's tenant is checked (the query's last column): a relation
    /// with a tenant_id that is not read by tenant (`by_tenant`).
    pub checks_tenant: bool,
    /// The query reads the current tenant's rows only ($1).
    pub by_tenant: bool,
    /// Only open rows are read (the filter on the open column).
    pub filtered: bool,
}

impl Source {
    /// The query, in date order when `ordered`.
    pub fn query(&self, ordered: bool) -> String {
        if ordered {
            format!("{} ORDER BY \"{}\"", self.query, self.order)
        } else {
            self.query.clone()
        }
    }
}

/// The relation's name, schema-qualified and quoted (so the query reads
/// this relation whatever the search_path), its kind and its columns with
/// their type category ('N' numeric, 'D' date/time, ...; 'uuid' for a
/// uuid, whose category 'U' is any user type's).
/// And whether it is tenant-scoped by its tenant_id column (tenancy.enable:
/// its policy, forced, and the key to tenancy.tenants on that column).
fn catalog(oid: pg_sys::Oid) -> (String, String, HashMap<String, String>, bool) {
    let read = Spi::connect(|client| {
        let rows = client.select(
            "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname),
                    c.relkind::text, a.attname::text,
                    CASE WHEN a.atttypid = 'pg_catalog.uuid'::pg_catalog.regtype THEN 'uuid'
                         ELSE t.typcategory::text END,
                    c.relrowsecurity AND c.relforcerowsecurity
                    AND EXISTS (SELECT 1 FROM pg_catalog.pg_policy p
                                WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation')
                    AND tenancy._tenant_column(c.oid) = 'tenant_id'
             FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
             WHERE c.oid = $1",
            None,
            &[DatumWithOid::from(oid)],
        )?;
        let (mut name, mut relkind, mut types, mut scoped) =
            (String::new(), String::new(), HashMap::new(), false);
        for row in rows {
            name = row.get(1)?.unwrap_or_default();
            relkind = row.get(2)?.unwrap_or_default();
            if let (Some(n), Some(c)) = (row.get::<String>(3)?, row.get::<String>(4)?) {
                types.insert(n, c);
            }
            scoped = row.get::<bool>(5)?.unwrap_or_default();
        }
        Ok::<_, pgrx::spi::SpiError>((name, relkind, types, scoped))
    });
    read.unwrap_or_else(|e| {
        crate::error::internal(
            format_args!("reading the catalog entry of relation {}", oid.to_u32()),
            e,
        )
    })
}

/// The invoices of relation `oid` that are still open (`open_amount` is
/// not 0), by issue date: settled history is never read, and a partial
/// index on (tenant, issue date) with the query's predicate serves it.
pub fn invoices(oid: pg_sys::Oid) -> Source {
    inspect(
        oid,
        "invoices",
        &INVOICE_COLUMNS,
        None,
        Some("open_amount"),
        "issue_date",
    )
}

/// The transactions of relation `oid`, by booking date; when it has an
/// `unmatched_amount`, only those with something left (as for invoices).
pub fn transactions(oid: pg_sys::Oid) -> Source {
    let unmatched = Some(UNMATCHED.name);
    inspect(
        oid,
        "transactions",
        &TRANSACTION_COLUMNS,
        Some(&UNMATCHED),
        unmatched,
        "booked_on",
    )
}

/// Checks that `oid` is a relation with `columns` of the right types and
/// builds the query that reads them (and `optional`, when it has it): the
/// rows whose `open` column, when the relation has it, is not 0, ordered
/// by the date column `order`.
fn inspect(
    oid: pg_sys::Oid,
    what: &str,
    columns: &[Column],
    optional: Option<&Column>,
    open: Option<&str>,
    order: &str,
) -> Source {
    let (name, relkind, types, scoped) = catalog(oid);
    if !matches!(relkind.as_str(), "r" | "v" | "m" | "p" | "f") {
        fail(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("{what} relation {name} is not a table or view"),
            "Pass a table, view or materialized view.",
        );
    }
    let expected = || {
        columns
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let uuid_id = types.get("id").is_some_and(|t| t == "uuid");
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
            Kind::Id if uuid_id => format!("\"{}\"", c.name),
            Kind::Id | Kind::Text => format!("\"{}\"::text", c.name),
            Kind::Amount => {
                if category != "N" {
                    fail(
                        PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                        format!("column \"{}\" of {name} is not a number", c.name),
                        "Amounts must be numeric (or an integer type).",
                    );
                }
                format!("\"{}\"::numeric", c.name)
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
        select.push(format!("\"{}\"::numeric", c.name));
    }
    let has_unmatched = optional.is_some();
    let has_tenant = types.contains_key(TENANT);
    // On a tenant-scoped table, the current tenant as a parameter ($1,
    // `read::open`): row level security already keeps the rows to it, but a
    // policy does not tell Citus where to look, and this sends the read to
    // the one worker that holds the tenant. Elsewhere every visible row is
    // read, and one of another tenant is refused (the last column).
    let by_tenant = has_tenant && scoped;
    let checks_tenant = has_tenant && !by_tenant;
    if checks_tenant {
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
    let open = open.filter(|c| types.contains_key(*c));
    let mut filters = Vec::new();
    if let Some(c) = open {
        // NULL is read (and refused, naming the row): only 0 is settled.
        // Written so, rather than IS DISTINCT FROM, so that a partial index
        // with this very predicate serves it (see `read::open`).
        filters.push(format!("(\"{c}\" <> 0 OR \"{c}\" IS NULL)"));
    }
    if by_tenant {
        filters.push(format!("\"{TENANT}\" = $1"));
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    };
    // Reconciliation in windows (tenancy_matching::Windows) reads by date;
    // within a window rows are matched in the order of their ids.
    Source {
        query: format!("SELECT {list} FROM {name}{filter}"),
        name,
        order: order.to_string(),
        has_unmatched,
        uuid_id,
        checks_tenant,
        by_tenant,
        filtered: open.is_some(),
    }
}
