//! Per-tenant request budgets, counted in shared memory.
//!
//! `tenancy.pre_request()` counts each HTTP request here (`take`). The
//! counters (`tenancy_ratelimit::Table`) live in one shared-memory segment of
//! `tenancy.rate_limit_keys` slots, sized when the server starts, behind one
//! lightweight lock: a request costs a hash probe, not a table write, and
//! every backend sees the same counts, so N parallel clients get exactly the
//! budget. Counters are not transactional (a rolled-back request still
//! counted) and start again from zero when the server restarts. A full table
//! recycles the window nearest its end: nobody is refused because others are
//! active.

use crate::guc;
use crate::shmem::Segment;
use pgrx::prelude::*;
use tenancy_ratelimit::{Decision, Key, Slot, Table};

fn slots() -> usize {
    usize::try_from(guc::RATE_LIMIT_KEYS.get()).unwrap_or(0)
}

fn size() -> usize {
    slots() * std::mem::size_of::<Slot>()
}

/// Zeroed when the server starts: `Slot::EMPTY` is all zeros.
pub static SEGMENT: Segment = Segment::new(c"pg_tenancy rate limits", size);

/// Runs `f` on the table, under its lock (exclusive: a hit writes); None
/// without shared memory (the library was not preloaded).
fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> Option<R> {
    let (base, len, lock) = SEGMENT.get()?;
    let mode = pg_sys::LWLockMode::LW_EXCLUSIVE;
    // SAFETY: the segment's slots, for the life of the server, behind its
    // lock; nothing in `f` can raise an error (it is plain computation), so
    // the lock is always released here (and an ERROR would release it too).
    #[allow(unsafe_code)]
    let result = unsafe {
        pg_sys::LWLockAcquire(lock, mode);
        let slots =
            std::slice::from_raw_parts_mut(base.cast::<Slot>(), len / std::mem::size_of::<Slot>());
        let result = f(&mut Table::new(slots));
        pg_sys::LWLockRelease(lock);
        result
    };
    Some(result)
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

/// One request counted: the budget, and what the table decided.
pub struct Taken {
    pub budget: u32,
    /// The window's length in seconds.
    pub window: u32,
    pub decision: Decision,
}

/// Counts one request of `user` in `tenant` (None: the tenant as a whole)
/// against `requests` per `window_seconds` (None: the settings
/// tenancy.rate_limit_requests / tenancy.rate_limit_window). None when
/// counting is off (tenancy.rate_limit). Without shared memory, an error
/// naming the fix.
pub fn take(
    tenant: pgrx::Uuid,
    user: Option<pgrx::Uuid>,
    requests: Option<i32>,
    window_seconds: Option<i32>,
) -> Option<Taken> {
    if !guc::RATE_LIMIT.get() {
        return None;
    }
    let budget = positive(requests, guc::RATE_LIMIT_REQUESTS.get());
    let window = positive(window_seconds, guc::RATE_LIMIT_WINDOW.get());
    let key = Key {
        tenant: key_part(Some(tenant)),
        user: key_part(user),
    };
    let decision = with_table(|t| t.hit(key, unix_now(), budget, window)).unwrap_or_else(|| {
        crate::error::raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "rate limits need pg_tenancy in shared_preload_libraries",
            "Add pg_tenancy to shared_preload_libraries (see sql/postgresql.conf) and restart, or turn the limits off with tenancy.rate_limit = off.",
        )
    });
    Some(Taken {
        budget,
        window,
        decision,
    })
}

/// Counts one request of `user` in `tenant` (NULL user: the tenant as a
/// whole) against `requests` per `window_seconds` (NULL: the settings). One
/// row: allowed, the budget, what remains and when the window resets
/// (seconds); when limited, reset_seconds is the Retry-After. With
/// tenancy.rate_limit off: allowed and NULLs. For DBAs and tests; requests
/// are counted by tenancy.pre_request().
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
    let int = |v: u32| Some(i32::try_from(v).unwrap_or(i32::MAX));
    TableIterator::once(match take(tenant, user, requests, window_seconds) {
        None => (true, None, None, None),
        Some(Taken {
            budget,
            decision:
                Decision::Allowed {
                    remaining,
                    reset_in,
                },
            ..
        }) => (true, int(budget), int(remaining), int(reset_in)),
        Some(Taken {
            budget,
            decision: Decision::Limited { retry_after },
            ..
        }) => (false, int(budget), Some(0), int(retry_after)),
    })
}

/// Keys with a live window now, and how many the table holds
/// (tenancy.rate_limit_keys): for monitoring.
#[pg_extern(volatile, parallel_unsafe)]
fn rate_limit_stats() -> TableIterator<'static, (name!(live_keys, i64), name!(capacity, i64))> {
    let now = unix_now();
    // SAFETY: the segment's slots, read under its lock held shared (a
    // request's count takes it exclusive); plain computation in between.
    #[allow(unsafe_code)]
    let live = SEGMENT.get().map_or(0, |(base, len, lock)| unsafe {
        pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_SHARED);
        let slots =
            std::slice::from_raw_parts(base.cast::<Slot>(), len / std::mem::size_of::<Slot>());
        let live = tenancy_ratelimit::live(slots, now);
        pg_sys::LWLockRelease(lock);
        live
    });
    let capacity = SEGMENT
        .get()
        .map_or(0, |(_, len, _)| len / std::mem::size_of::<Slot>());
    TableIterator::once((
        i64::try_from(live).unwrap_or(i64::MAX),
        i64::try_from(capacity).unwrap_or(i64::MAX),
    ))
}
