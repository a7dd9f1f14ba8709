//! Reading a source's rows as the caller: every unsafe step of reading is
//! here (`watch` has the signal mask of the matcher's thread). A source is
//! read through a cursor opened with SPI, a batch at a time, each row
//! taken from the executor's slot as it comes (`fetch`), so that no batch
//! of tuples is copied or held; each value is read with errors naming the
//! relation, the row and the column. Amounts are read from numeric's
//! stored form (`numeric.rs`), not through text.

use super::id::Id;
use super::numeric;
use super::source::{Column, Nulls, Source};
use crate::error::raise as fail;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use rust_decimal::Decimal;
use std::ffi::{CStr, CString};
use tenancy_matching::MAX_AMOUNT;

/// One row of a source, its columns taken apart once, read with errors
/// naming the column.
pub struct Row<'a> {
    source: &'a Source,
    values: &'a [pg_sys::Datum],
    nulls: &'a [bool],
    /// Empty text until read (the first column).
    pub id: Id,
}

/// The bytes of a varlena datum (text, numeric) after its header,
/// detoasted if it is compressed or stored out of line (a long value read
/// straight from a table).
///
/// # Safety
///
/// `d` must be a non-null varlena datum that stays valid while the bytes
/// are used.
#[allow(unsafe_code)]
unsafe fn text_bytes<'a>(d: pg_sys::Datum) -> &'a [u8] {
    let mut p = d.cast_mut_ptr::<pg_sys::varlena>();
    // SAFETY: the caller's promise; detoasting copies into the current
    // memory context, `fetch`'s, which lives until the row is taken.
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
        // slot it comes from stays valid until the row is taken.
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
            match &self.id {
                Id::Text(s) if s.is_empty() => {
                    format!("{}: a row has a NULL \"{column}\"", self.source.name)
                }
                id => format!("{}: row {id} has a NULL \"{column}\"", self.source.name),
            },
            "Give the column a value, or filter such rows out with a view.",
        )
    }

    /// An amount: a numeric, read exactly.
    pub fn amount(&self, i: usize, c: &Column) -> Decimal {
        let Some(d) = self.datum(i) else {
            self.null(c.name)
        };
        // SAFETY: the query casts every amount to numeric, a varlena, and
        // the slot it comes from stays valid until the row is taken.
        #[allow(unsafe_code)]
        let bytes = unsafe { text_bytes(d) };
        match numeric::decode(bytes) {
            Some(value) if value.abs() < MAX_AMOUNT => value,
            _ => {
                // SAFETY: numeric_out of a numeric datum returns a C string.
                #[allow(unsafe_code)]
                let text: Option<&CStr> =
                    unsafe { pgrx::direct_function_call(pg_sys::numeric_out, &[Some(d)]) };
                let text = text.map(CStr::to_string_lossy).unwrap_or_default();
                fail(
                    PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                    format!(
                        "{}: row {} has \"{}\" = {text}, which is not an amount tenancy.reconcile handles",
                        self.source.name, self.id, c.name
                    ),
                    "Amounts must be finite, below 10^20 in magnitude, with at most 28 significant digits.",
                )
            }
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

/// Opens a cursor for the source's query, as the caller (so row level
/// security applies), and returns its name. It stays open until the end of
/// the transaction or `close`.
///
/// Open rows are planned with sequential scans off. Under row level
/// security the planner uses a column's statistics only with leakproof
/// operators, and numeric's are not: it cannot see that few rows are open,
/// and would scan years of settled rows instead of the partial index that
/// holds the open ones. For the same reason it costs the read by every
/// row of the table, and beside years of history that cost would have it
/// compile the query with JIT: tens of milliseconds and 10 MB of memory a
/// call, for simple expressions. So the read is planned with `jit` off.
///
/// A read by date (`ordered`: open rows past `tenancy.reconcile_memory`,
/// read in windows) is planned with index scans off: the rows are then
/// read in the heap's order (a bitmap scan) and sorted within `work_mem`,
/// spilling to disk, instead of fetched in date order from all over a
/// heap larger than shared buffers, both relations at once. At 1,000,000
/// open invoices and transactions reading took 5.1 s, now 2.9 s.
///
/// The settings are back as they were once the cursor is planned (as for a
/// function's SET clause).
pub fn open(source: &Source, ordered: bool) -> String {
    // SAFETY: a new GUC nest level, closed below on success; on an error the
    // transaction's abort closes it.
    #[allow(unsafe_code)]
    let level = unsafe { pg_sys::NewGUCNestLevel() };
    crate::guc::set_in_level(c"jit", "off");
    if source.filtered {
        crate::guc::set_in_level(c"enable_seqscan", "off");
    }
    if ordered {
        crate::guc::set_in_level(c"enable_indexscan", "off");
    }
    // A tenant-scoped source reads the current tenant's rows ($1); with no
    // tenant set, the error every tenant-scoped read gives (TN001).
    let tenant = if source.by_tenant {
        match crate::context::current_tenant_id() {
            Some(t) => Some(t),
            None => {
                let _ = Spi::run("SELECT tenancy.tenant_context_required()");
                unreachable!("tenant_context_required() raises")
            }
        }
    } else {
        None
    };
    let opened = Spi::connect(|client| {
        let args = match tenant {
            Some(t) => vec![t.into()],
            None => vec![],
        };
        let cursor = client.try_open_cursor(source.query(ordered).as_str(), &args)?;
        Ok::<_, pgrx::spi::SpiError>(cursor.detach_into_name())
    });
    // SAFETY: the level opened above, nothing nested left open since.
    #[allow(unsafe_code)]
    unsafe {
        pg_sys::AtEOXact_GUC(true, level);
    }
    opened.unwrap_or_else(|e| internal(source, &e))
}

/// Closes a cursor `open` returned, if it is still open.
pub fn close(cursor: &str) {
    let _ = Spi::connect(|client| client.find_cursor(cursor).map(drop));
}

fn internal(source: &Source, e: &pgrx::spi::SpiError) -> ! {
    crate::error::internal(format_args!("reading {}", source.name), e)
}

/// Reads up to `n` rows from the cursor `cursor` of `source` with `f`,
/// appending the rows `f` keeps to `out` with their ids. Returns how many
/// rows were read: fewer than `n` at the end.
///
/// The rows come straight from the executor's slots (a `DestReceiver` of
/// our own), not through SPI's result table, which copied each row into a
/// new tuple first: about a quarter of reading at 100,000 invoices.
/// Values detoasted for a row live in a memory context reset after it.
pub fn fetch<T>(
    source: &Source,
    cursor: &str,
    n: usize,
    mut f: impl FnMut(&Row) -> Option<T>,
    out: &mut std::collections::VecDeque<(Id, T)>,
) -> usize {
    let Ok(name) = CString::new(cursor) else {
        internal(source, &pgrx::spi::SpiError::CursorNotFound(cursor.into()))
    };
    // SAFETY: looks the portal up by name; null when there is none.
    #[allow(unsafe_code)]
    let portal = unsafe { pg_sys::GetPortalByName(name.as_ptr()) };
    if portal.is_null() {
        internal(source, &pgrx::spi::SpiError::CursorNotFound(cursor.into()));
    }
    let mut memory = PgMemoryContexts::new("tenancy.reconcile row");
    let mut row = |slot: *mut pg_sys::TupleTableSlot| {
        // SAFETY: a slot the executor hands the receiver: valid, with its
        // descriptor, until the receiver returns. Its values are complete
        // once slot_getsomeattrs_int has run for every attribute.
        #[allow(unsafe_code)]
        let (values, nulls) = unsafe {
            let natts = (*(*slot).tts_tupleDescriptor).natts;
            if i32::from((*slot).tts_nvalid) < natts {
                pg_sys::slot_getsomeattrs_int(slot, natts);
            }
            let natts = usize::try_from(natts).unwrap_or(0);
            (
                std::slice::from_raw_parts((*slot).tts_values, natts),
                std::slice::from_raw_parts((*slot).tts_isnull, natts),
            )
        };
        let mut r = Row {
            source,
            values,
            nulls,
            id: Id::Text(Box::default()),
        };
        // SAFETY: values read while the slot is valid; what detoasting
        // copies goes to `memory`, reset once the row is taken.
        #[allow(unsafe_code)]
        unsafe {
            memory.switch_to(|_| {
                r.id = match r.datum(0) {
                    // A uuid datum points to its 16 bytes.
                    Some(d) if source.uuid_id => Id::uuid(*d.cast_mut_ptr::<[u8; 16]>()),
                    Some(d) => Id::Text(r.string(d, "id").into()),
                    None => r.null("id"),
                };
                if let Some(v) = f(&r) {
                    out.push_back((r.id, v));
                }
            });
            // Only a detoasted value leaves something to free: resetting an
            // empty context is a call into Postgres per row for nothing.
            if !(*memory.value()).isReset {
                memory.reset();
            }
        }
    };
    let mut receiver = Receiver {
        dest: pg_sys::DestReceiver {
            receiveSlot: Some(receive),
            rStartup: Some(startup),
            rShutdown: Some(nothing),
            rDestroy: Some(nothing),
            mydest: pg_sys::CommandDest::DestNone,
        },
        row: &mut row,
    };
    // SAFETY: the portal `open` opened in this transaction, run forward
    // into `receiver`, whose Postgres part comes first (repr(C)). An error
    // in a row unwinds through the executor as any other.
    #[allow(unsafe_code)]
    let read = unsafe {
        pg_sys::PortalRunFetch(
            portal,
            pg_sys::FetchDirection::FETCH_FORWARD,
            std::ffi::c_long::try_from(n).unwrap_or(std::ffi::c_long::MAX),
            std::ptr::addr_of_mut!(receiver).cast(),
        )
    };
    usize::try_from(read).unwrap_or(usize::MAX)
}

/// A `DestReceiver` that hands each row's slot to `row`.
#[repr(C)]
struct Receiver<'a> {
    dest: pg_sys::DestReceiver,
    row: &'a mut dyn FnMut(*mut pg_sys::TupleTableSlot),
}

#[pg_guard]
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn receive(
    slot: *mut pg_sys::TupleTableSlot,
    dest: *mut pg_sys::DestReceiver,
) -> bool {
    // SAFETY: `fetch` passes a Receiver, which begins with the DestReceiver.
    #[allow(unsafe_code)]
    let receiver = unsafe { &mut *dest.cast::<Receiver>() };
    (receiver.row)(slot);
    true
}

#[pg_guard]
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn startup(
    _dest: *mut pg_sys::DestReceiver,
    _operation: std::ffi::c_int,
    _desc: pg_sys::TupleDesc,
) {
}

#[pg_guard]
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn nothing(_dest: *mut pg_sys::DestReceiver) {}
