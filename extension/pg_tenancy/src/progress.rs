//! Progress of running reconciliations, for DBAs: one slot per backend in
//! shared memory, written by its backend as `tenancy.reconcile` reads and
//! matches, read by the view `tenancy.reconcile_progress` (the way
//! `pg_stat_progress_*` works for Postgres' own long commands). A slot
//! holds counters only: the statement that runs comes from
//! `pg_stat_activity`.

use crate::shmem::Segment;
use pgrx::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

/// One backend's slot. All atomics, so that readers never see a torn
/// value; `changes` is odd while its backend writes (a sequence lock), so
/// that a reader sees the fields of one moment.
#[repr(C)]
struct Slot {
    changes: AtomicU32,
    pid: AtomicU32,
    phase: AtomicU32,
    tenant: [AtomicU64; 2],
    started: AtomicI64,
    invoices: AtomicU64,
    payments: AtomicU64,
    matches: AtomicU64,
    windows: AtomicU64,
}

/// What a reconciliation is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Reading = 1,
    Matching = 2,
    Returning = 3,
}

const PHASES: [&str; 4] = ["", "reading", "matching", "returning rows"];

fn slots() -> usize {
    // SAFETY: read in the postmaster's shared memory request phase, where
    // Postgres has set it.
    #[allow(unsafe_code)]
    let backends = unsafe { pg_sys::MaxBackends };
    usize::try_from(backends).unwrap_or(0)
}

fn size() -> usize {
    slots() * std::mem::size_of::<Slot>()
}

pub static SEGMENT: Segment = Segment::new(c"pg_tenancy reconcile progress", size);

fn all() -> &'static [Slot] {
    match SEGMENT.get() {
        // SAFETY: the segment holds `len / size_of::<Slot>()` zeroed slots,
        // for the life of the server; a zeroed atomic is a valid one.
        #[allow(unsafe_code)]
        Some((base, len, _)) => unsafe {
            std::slice::from_raw_parts(base.cast::<Slot>(), len / std::mem::size_of::<Slot>())
        },
        None => &[],
    }
}

/// This backend's slot, if the segment exists.
fn mine() -> Option<&'static Slot> {
    // SAFETY: MyBackendId is set when the backend starts, 1..=MaxBackends.
    #[allow(unsafe_code)]
    let id = unsafe { pg_sys::MyBackendId };
    all().get(usize::try_from(id).ok()?.checked_sub(1)?)
}

impl Slot {
    fn write(&self, f: impl FnOnce(&Slot)) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        f(self);
        self.changes.fetch_add(1, Ordering::Release);
    }
}

/// A reconciliation being reported. Copy it freely; the slot is cleared by
/// `finish`, and at the end of the transaction whatever happens.
#[derive(Clone, Copy)]
pub struct Report {
    slot: Option<&'static Slot>,
}

static CALLBACK: AtomicBool = AtomicBool::new(false);

#[allow(unsafe_code)]
#[pg_guard]
unsafe extern "C-unwind" fn at_transaction_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    if matches!(
        event,
        XACT_EVENT_COMMIT | XACT_EVENT_ABORT | XACT_EVENT_PREPARE
    ) {
        Report { slot: mine() }.finish();
    }
}

impl Report {
    /// Starts reporting a reconciliation of `tenant` by this backend.
    pub fn start(tenant: Option<pgrx::Uuid>) -> Report {
        let slot = mine();
        if slot.is_some() && !CALLBACK.swap(true, Ordering::Relaxed) {
            // SAFETY: a plain function, registered once per backend.
            #[allow(unsafe_code)]
            unsafe {
                pg_sys::RegisterXactCallback(Some(at_transaction_end), std::ptr::null_mut());
            }
        }
        let (hi, lo) = tenant.map_or((0, 0), |t| {
            let v = u128::from_be_bytes(*t.as_bytes());
            ((v >> 64) as u64, v as u64)
        });
        // SAFETY: reads of the backend's own globals.
        #[allow(unsafe_code)]
        let (pid, now) = unsafe { (pg_sys::MyProcPid, pg_sys::GetCurrentTimestamp()) };
        if let Some(s) = slot {
            s.write(|s| {
                s.pid.store(pid as u32, Ordering::Relaxed);
                s.phase.store(Phase::Reading as u32, Ordering::Relaxed);
                s.tenant[0].store(hi, Ordering::Relaxed);
                s.tenant[1].store(lo, Ordering::Relaxed);
                s.started.store(now, Ordering::Relaxed);
                for c in [&s.invoices, &s.payments, &s.matches, &s.windows] {
                    c.store(0, Ordering::Relaxed);
                }
            });
        }
        Report { slot }
    }

    pub fn phase(&self, phase: Phase) {
        if let Some(s) = self.slot {
            s.write(|s| s.phase.store(phase as u32, Ordering::Relaxed));
        }
    }

    /// Rows read so far from the invoices, or from the transactions.
    pub fn read(&self, invoices: bool, rows: usize) {
        if let Some(s) = self.slot {
            s.write(|s| {
                s.phase.store(Phase::Reading as u32, Ordering::Relaxed);
                let counter = if invoices { &s.invoices } else { &s.payments };
                counter.store(rows as u64, Ordering::Relaxed);
            });
        }
    }

    /// Matches made and windows matched so far.
    pub fn matched(&self, matches: usize, windows: usize) {
        if let Some(s) = self.slot {
            s.write(|s| {
                s.matches.store(matches as u64, Ordering::Relaxed);
                s.windows.store(windows as u64, Ordering::Relaxed);
            });
        }
    }

    /// Clears the slot: nothing runs any more.
    pub fn finish(&self) {
        // Every transaction's end calls this once a backend has reported:
        // a slot already clear is left alone.
        if let Some(s) = self.slot.filter(|s| s.pid.load(Ordering::Relaxed) != 0) {
            s.write(|s| s.pid.store(0, Ordering::Relaxed));
        }
    }
}

/// The reconciliations running now, one row per backend. Read by the view
/// `tenancy.reconcile_progress`, which adds what `pg_stat_activity` knows.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_safe, name = "_reconcile_progress")]
fn running() -> TableIterator<
    'static,
    (
        name!(pid, i32),
        name!(tenant_id, Option<pgrx::Uuid>),
        name!(phase, String),
        name!(started_at, TimestampWithTimeZone),
        name!(invoices_read, i64),
        name!(transactions_read, i64),
        name!(matches, i64),
        name!(windows, i64),
    ),
> {
    let mut rows = Vec::new();
    for s in all() {
        // A sequence lock: read until no write ran in between.
        let row = loop {
            let before = s.changes.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let pid = s.pid.load(Ordering::Relaxed);
            let row = (
                pid as i32,
                [
                    s.tenant[0].load(Ordering::Relaxed),
                    s.tenant[1].load(Ordering::Relaxed),
                ],
                s.phase.load(Ordering::Relaxed),
                s.started.load(Ordering::Relaxed),
                [
                    s.invoices.load(Ordering::Relaxed),
                    s.payments.load(Ordering::Relaxed),
                    s.matches.load(Ordering::Relaxed),
                    s.windows.load(Ordering::Relaxed),
                ],
            );
            std::sync::atomic::fence(Ordering::Acquire);
            if s.changes.load(Ordering::Relaxed) == before {
                break row;
            }
        };
        let (pid, tenant, phase, started, counts) = row;
        if pid == 0 {
            continue;
        }
        let tenant = (tenant != [0, 0]).then(|| {
            let v = (u128::from(tenant[0]) << 64) | u128::from(tenant[1]);
            pgrx::Uuid::from_bytes(v.to_be_bytes())
        });
        let phase = PHASES.get(phase as usize).copied().unwrap_or_default();
        let Ok(started) = TimestampWithTimeZone::try_from(started) else {
            continue;
        };
        let count = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        rows.push((
            pid,
            tenant,
            phase.to_string(),
            started,
            count(counts[0]),
            count(counts[1]),
            count(counts[2]),
            count(counts[3]),
        ));
    }
    TableIterator::new(rows)
}
