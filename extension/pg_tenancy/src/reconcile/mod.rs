//! `tenancy._reconcile`: the glue between two relations and the pure matcher
//! in `extension/matching`. It checks the relations' shape (`source`), reads
//! their open rows with SPI as the caller, so that row level security scopes
//! them to the current tenant (`read`, where the unsafe reading is), checks
//! their values with errors that name the relation, row and column, and
//! matches them in windows of payment days under the memory budget
//! `tenancy.reconcile_memory` (`tenancy_matching::Windows`), streaming each
//! window's matches before reading the next, their amounts and reasons
//! written in their stored forms on a helper thread while the rows before
//! them are returned (`rows`, `output`). `tenancy.reconcile`
//! (src/sql/reconcile.sql) wraps it: it hands over the tenant's rules with
//! the per-call overrides (`rules`).

mod id;
mod jsonb;
mod numeric;
mod output;
mod read;
mod rows;
pub mod rules;
mod source;
mod watch;

use crate::error::raise as fail;
use crate::progress::{Phase, Report};
use id::Id;
use output::{Jsonb, Numeric, Text};
use pgrx::prelude::*;
use pgrx::PgRelation;
use read::Row;
use rows::Rows;
use rust_decimal::Decimal;
use source::{Source, INVOICE_COLUMNS, TRANSACTION_COLUMNS, UNMATCHED};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tenancy_matching::{Invoice, Keyed, Transaction, WindowError, Windows};

/// Rows fetched from a cursor at a time.
const BATCH: usize = 1_000;

/// An invoice row, checked.
fn invoice(source: &Source, r: &Row) -> Option<Invoice> {
    let c = &INVOICE_COLUMNS;
    {
        if source.checks_tenant {
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
    }
}

/// A transaction row, checked; None for money going out or nothing left.
fn transaction(source: &Source, r: &Row) -> Option<Transaction> {
    let c = &TRANSACTION_COLUMNS;
    {
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
        if source.checks_tenant {
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
    }
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
        name!(invoice_id, Text),
        name!(transaction_id, Text),
        name!(allocated_amount, Numeric),
        name!(score, Numeric),
        name!(grade, Text),
        name!(group_id, i64),
        name!(reasons, Jsonb),
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
    let budget = usize::try_from(crate::guc::RECONCILE_MEMORY.get())
        .unwrap_or(0)
        .saturating_mul(1024);
    let windows = Windows::new(rules, budget).unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            e.to_string(),
            &tenancy_matching::rules::ranges(),
        )
    });
    let report = Report::start(crate::context::current_tenant_id());
    let run = Run {
        invoices: Reader::open(source::invoices(invoices_rel.oid()), false, invoice, report),
        payments: Reader::open(
            source::transactions(transactions_rel.oid()),
            false,
            transaction,
            report,
        ),
        report,
        windows,
        budget,
        out: Rows::default(),
        matching: Duration::ZERO,
        started: Instant::now(),
        whole_tried: false,
        done_matching: false,
        done: false,
    };
    TableIterator::new(run)
}

/// The rows of one source, read through its cursor a batch at a time.
struct Reader<T> {
    source: Source,
    cursor: String,
    rows: VecDeque<(Id, T)>,
    ended: bool,
    read: usize,
    /// Time spent fetching and taking rows apart.
    time: Duration,
    convert: fn(&Source, &Row) -> Option<T>,
    report: Report,
}

impl<T> Reader<T> {
    /// Reads `source` in any order, or by date when `ordered`.
    fn open(
        source: Source,
        ordered: bool,
        convert: fn(&Source, &Row) -> Option<T>,
        report: Report,
    ) -> Self {
        Reader {
            cursor: read::open(&source, ordered),
            source,
            rows: VecDeque::new(),
            ended: false,
            read: 0,
            time: Duration::ZERO,
            convert,
            report,
        }
    }

    fn next(&mut self) -> Option<(Id, T)> {
        while self.rows.is_empty() && !self.ended {
            let started = Instant::now();
            let (source, convert) = (&self.source, self.convert);
            let n = read::fetch(
                source,
                &self.cursor,
                BATCH,
                |r| convert(source, r),
                &mut self.rows,
            );
            self.read += n;
            self.report.read(source.order == "issue_date", self.read);
            pgrx::check_for_interrupts!();
            if n < BATCH {
                self.ended = true;
                read::close(&self.cursor);
            }
            self.time += started.elapsed();
        }
        self.rows.pop_front()
    }

    /// The same source again from its start, by date.
    fn reopen_ordered(&mut self) {
        if !self.ended {
            read::close(&self.cursor);
        }
        let time = self.time;
        *self = Reader::open(self.source.clone(), true, self.convert, self.report);
        self.time = time;
    }
}

/// One call of `_reconcile` as it streams: its two sources, the windows,
/// and the matches of the current window not yet returned.
struct Run {
    invoices: Reader<Invoice>,
    payments: Reader<Transaction>,
    report: Report,
    windows: Windows<Id>,
    /// Bytes a window may hold (`tenancy.reconcile_memory`).
    budget: usize,
    out: Rows,
    /// Time spent matching (the rest of the call is reading and writing).
    matching: Duration,
    started: Instant,
    /// Whether reading everything at once, in any order, was tried.
    whole_tried: bool,
    /// Every window has been matched.
    done_matching: bool,
    done: bool,
}

impl Run {
    /// Reads both sources in any order, as one window, if they fit the
    /// budget: most calls, and without the cost of ordering by date. When
    /// they do not, what was read is dropped and both are read again by
    /// date, in windows.
    fn whole(&mut self) -> Option<Vec<Keyed<Id>>> {
        let mut invoices = Vec::new();
        let mut payments = Vec::new();
        let mut bytes = 0;
        while bytes <= self.budget {
            let Some(row) = self.invoices.next() else {
                break;
            };
            bytes += tenancy_matching::windows::invoice_bytes(&row.0, &row.1);
            invoices.push(row);
        }
        while bytes <= self.budget {
            let Some(row) = self.payments.next() else {
                break;
            };
            bytes += tenancy_matching::windows::payment_bytes(&row.0, &row.1);
            payments.push(row);
            pgrx::check_for_interrupts!();
        }
        if bytes > self.budget || !self.invoices.ended || !self.payments.ended {
            self.invoices.reopen_ordered();
            self.payments.reopen_ordered();
            return None;
        }
        let started = Instant::now();
        let matched = self
            .windows
            .whole(invoices, payments, &mut watch::Backend(self.report));
        self.matching += started.elapsed();
        Some(matched.unwrap_or_else(|e| self.refuse(e)))
    }

    /// Reads and matches the next window; false when there is none.
    fn next_window(&mut self) -> bool {
        if !self.whole_tried {
            self.whole_tried = true;
            if let Some(matches) = self.whole() {
                self.report.matched(matches.len(), 1);
                self.report.phase(Phase::Returning);
                self.out = Rows::new(matches, &mut watch::Backend(self.report));
                self.done_matching = true;
                return true;
            }
        }
        if self.done_matching {
            return false;
        }
        let started = Instant::now();
        let reading = self.invoices.time + self.payments.time;
        let (invoices, payments) = (&mut self.invoices, &mut self.payments);
        let window = self.windows.next(
            &mut || invoices.next(),
            &mut || payments.next(),
            &mut watch::Backend(self.report),
        );
        let read = self.invoices.time + self.payments.time - reading;
        self.matching += started.elapsed().saturating_sub(read);
        let counts = self.windows.counts();
        self.report.matched(counts.matches, counts.windows);
        match window {
            Ok(Some(matches)) => {
                self.out = Rows::new(matches, &mut watch::Backend(self.report));
                self.report.phase(Phase::Returning);
                true
            }
            Ok(None) => false,
            Err(e) => self.refuse(e),
        }
    }

    fn refuse(&self, e: WindowError) -> ! {
        match e {
            WindowError::BudgetTooSmall { needed, budget, .. } => fail(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                e.to_string(),
                &format!(
                    "Raise tenancy.reconcile_memory (now {} MB) to at least {} MB, e.g. ALTER ROLE ... SET tenancy.reconcile_memory = '{}MB' as a superuser.",
                    budget >> 20,
                    needed.div_ceil(1 << 20),
                    needed.div_ceil(1 << 20).next_power_of_two()
                ),
            ),
            WindowError::Input(e) => fail(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                e.to_string(),
                &tenancy_matching::rules::ranges(),
            ),
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.report.finish();
        let counts = self.windows.counts();
        let total = self.started.elapsed();
        // For DBAs and the benchmark: where the time of a call goes
        // (SET client_min_messages = debug1 shows it).
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let read = self.invoices.time + self.payments.time;
        pgrx::debug1!(
            "tenancy.reconcile: read {} invoices and {} transactions in {:.1} ms, matched in {:.1} ms in {} window(s), {} matches returned in {:.1} ms ({:.1} ms in all)",
            self.invoices.read,
            self.payments.read,
            ms(read),
            ms(self.matching),
            counts.windows,
            counts.matches,
            ms(total.saturating_sub(read + self.matching)),
            ms(total)
        );
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.report.finish();
    }
}

impl Iterator for Run {
    type Item = rows::Output;

    fn next(&mut self) -> Option<rows::Output> {
        loop {
            if let Some(row) = self.out.next() {
                return Some(row);
            }
            if self.done || !self.next_window() {
                if !self.done {
                    self.finish();
                }
                return None;
            }
        }
    }
}
