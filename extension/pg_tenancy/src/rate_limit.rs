//! Per-tenant request budgets, counted in shared memory.
//!
//! `tenancy.pre_request()` calls `_rate_limit_take` once per HTTP request.
//! The counters (`tenancy_ratelimit::Table`) live in one shared-memory
//! segment behind one lightweight lock, so a request costs a hash probe, not a
//! table write, and every backend sees the same counts: N parallel clients get
//! exactly the budget. Counters are not transactional (a rolled-back request
//! still counted) and start again from zero when the server restarts.

use crate::guc;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::{pg_shmem_init, PgLwLock};
use std::sync::atomic::{AtomicBool, Ordering};
use tenancy_ratelimit::{Decision, Key, Table};

/// Distinct (tenant, user) keys with a live window at once; 48 bytes each.
pub const SLOTS: usize = 16_384;

#[derive(Clone, Copy)]
pub struct Counters(Table<SLOTS>);

// SAFETY: plain data -- no pointers, no heap -- valid in any process that
// maps it, as shared memory must be.
#[allow(unsafe_code)]
unsafe impl PGRXSharedMemory for Counters {}

// SAFETY: a static with a unique, NUL-terminated name, initialized once by
// pg_shmem_init! in _PG_init while the postmaster preloads the library.
#[allow(unsafe_code)]
static COUNTERS: PgLwLock<Counters> = unsafe { PgLwLock::new(c"pg_tenancy rate limits") };

/// Set in the postmaster when the segment was requested; forked backends
/// inherit it. Without shared_preload_libraries there are no counters.
static READY: AtomicBool = AtomicBool::new(false);

// pg_shmem_init! tests the features of other PostgreSQL versions and uses
// unsafe hooks: both are pgrx's, not ours.
#[allow(unexpected_cfgs, unsafe_code)]
pub fn init() {
    // SAFETY: a flag the postmaster sets while it loads preloaded libraries;
    // read in _PG_init, by the process that set it.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    if preloading {
        pg_shmem_init!(COUNTERS = Counters(Table::new()));
        READY.store(true, Ordering::Relaxed);
    }
}

fn key_part(id: Option<pgrx::Uuid>) -> u128 {
    id.map_or(0, |u| u128::from_be_bytes(*u.as_bytes()))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn positive(value: Option<i32>, default: i32) -> u32 {
    u32::try_from(value.unwrap_or(default)).unwrap_or(1).max(1)
}

/// Counts one request of `user` in `tenant` (NULL user: the tenant as a
/// whole) against `requests` per `window_seconds` (NULL: the settings
/// tenancy.rate_limit_requests / tenancy.rate_limit_window). One row:
/// allowed, the budget, what remains and when the window resets (seconds);
/// when limited, reset_seconds is the Retry-After. With tenancy.rate_limit
/// off: allowed and NULLs. When every slot is taken: not allowed and NULLs.
#[pg_extern(volatile, parallel_unsafe, name = "_rate_limit_take")]
pub fn rate_limit_take(
    tenant: pgrx::Uuid,
    user: Option<pgrx::Uuid>,
    requests: Option<i32>,
    window_seconds: Option<i32>,
) -> TableIterator<
    'static,
    (
        name!(allowed, bool),
        name!(rate_limit, Option<i32>),
        name!(remaining, Option<i32>),
        name!(reset_seconds, Option<i32>),
    ),
> {
    if !guc::RATE_LIMIT.get() {
        return TableIterator::once((true, None, None, None));
    }
    if !READY.load(Ordering::Relaxed) {
        crate::error::raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "rate limits need pg_tenancy in shared_preload_libraries",
            "Add pg_tenancy to shared_preload_libraries (see sql/postgresql.conf) and restart, or turn the limits off with tenancy.rate_limit = off.",
        );
    }
    let budget = positive(requests, guc::RATE_LIMIT_REQUESTS.get());
    let window = positive(window_seconds, guc::RATE_LIMIT_WINDOW.get());
    let key = Key {
        tenant: key_part(Some(tenant)),
        user: key_part(user),
    };
    let decision = COUNTERS.exclusive().0.hit(key, unix_now(), budget, window);
    let int = |v: u32| Some(i32::try_from(v).unwrap_or(i32::MAX));
    let limit = int(budget);
    TableIterator::once(match decision {
        Decision::Allowed {
            remaining,
            reset_in,
        } => (true, limit, int(remaining), int(reset_in)),
        Decision::Limited { retry_after } => (false, limit, Some(0), int(retry_after)),
        Decision::Full => (false, None, None, None),
    })
}

/// Keys with a live window now (monitoring: compare with the capacity).
#[pg_extern(volatile, parallel_unsafe)]
fn rate_limit_stats() -> TableIterator<'static, (name!(live_keys, i64), name!(capacity, i64))> {
    let live = if READY.load(Ordering::Relaxed) {
        COUNTERS.share().0.live(unix_now()) as i64
    } else {
        0
    };
    TableIterator::once((live, SLOTS as i64))
}
