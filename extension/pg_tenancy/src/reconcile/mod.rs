//! `tenancy._reconcile`: the glue between two relations and the pure matcher
//! in `extension/matching`. It checks the relations' shape (`source`),
//! reads them with SPI as the caller, so that row level security scopes
//! them to the current tenant (`read`, where all unsafe code is), checks
//! their values with errors that name the relation, row and column, runs
//! the matcher and streams its matches. `tenancy.reconcile`
//! (src/sql/reconcile.sql) wraps it: it hands over the tenant's rules with
//! the per-call overrides (`rules`) and turns `reasons` into jsonb.

mod read;
mod rules;
mod source;

use crate::error::raise as fail;
use pgrx::prelude::*;
use pgrx::{AnyNumeric, PgRelation};
use read::read;
use rust_decimal::Decimal;
use source::{inspect, Source, INVOICE_COLUMNS, TRANSACTION_COLUMNS, UNMATCHED};
use std::collections::HashMap;
use std::str::FromStr;
use tenancy_matching::{explain, Grade, Invoice, Transaction};

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

fn numeric(d: Decimal) -> AnyNumeric {
    // A decimal's text is always a valid numeric.
    AnyNumeric::try_from(d.to_string().as_str()).unwrap_or_default()
}

/// Candidate matches between two relations. Called by `tenancy.reconcile`
/// with the rules of the call as the text of one JSON object.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, name = "_reconcile")]
fn reconcile_relations(
    invoices_rel: Option<PgRelation>,
    transactions_rel: Option<PgRelation>,
    rules: Option<&str>,
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
    let rules = rules::parse(rules);
    let started = std::time::Instant::now();
    let inv_source = inspect(invoices_rel.oid(), "invoices", &INVOICE_COLUMNS, None);
    let tx_source = inspect(
        transactions_rel.oid(),
        "transactions",
        &TRANSACTION_COLUMNS,
        Some(&UNMATCHED),
    );
    let (inv_ids, invs) = invoices(&inv_source);
    let (tx_ids, txs) = transactions(&tx_source);
    let read = started.elapsed();
    let matches = tenancy_matching::reconcile(&invs, &txs, &rules).unwrap_or_else(|e| {
        // The glue has checked the amounts and the rules already.
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            e.to_string(),
            &tenancy_matching::rules::ranges(),
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
