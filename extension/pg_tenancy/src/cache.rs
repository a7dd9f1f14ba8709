//! What backends keep of the extension's tables between transactions
//! (pre_request's lookups, a login's bindings) and how it is dropped the
//! moment a change commits anywhere.
//!
//! Every table those caches read has a statement trigger, `tenancy._changed`,
//! that queues a relcache invalidation of the table: Postgres sends it to
//! every backend when the transaction commits (and applies it in this one at
//! its next command). Each backend accepts invalidations at the start of its
//! next transaction, and `_pre_request` accepts them again before it reads;
//! the callback registered here then moves `generation` on, and a cache
//! built in an earlier generation is stale. A backend that falls behind the
//! invalidation queue is reset, which calls back too.

use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    static WATCHING: Cell<bool> = const { Cell::new(false) };
}

#[allow(unsafe_code)]
#[pg_guard]
unsafe extern "C-unwind" fn invalidated(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    // Any relation: those of the caches are the ones that matter, and the
    // others change rarely outside DDL, so a check is not worth it.
    GENERATION.set(GENERATION.get().wrapping_add(1));
}

/// The current generation of what the tables hold, as far as this backend
/// knows. A value cached with an older one is stale.
pub fn generation() -> u64 {
    if !WATCHING.replace(true) {
        // SAFETY: registers a plain function once per backend.
        #[allow(unsafe_code)]
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(Some(invalidated), pg_sys::Datum::from(0));
        }
        GENERATION.set(GENERATION.get().wrapping_add(1));
    }
    GENERATION.get()
}

/// Takes in the invalidations other backends committed since this
/// transaction began (nearly free when there are none): a change that
/// committed before this statement is then seen even if the transaction
/// started earlier.
pub fn catch_up() {
    // SAFETY: a plain call, allowed at any point of a transaction.
    #[allow(unsafe_code)]
    unsafe {
        pg_sys::AcceptInvalidationMessages();
    }
}

/// Queues a relcache invalidation of the table the trigger fired on, sent
/// to every backend when the transaction commits: their caches of the
/// extension's tables are dropped then.
#[pg_trigger]
fn _changed<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    let relid = trigger.relation()?.oid();
    // SAFETY: queues an invalidation message for an existing relation.
    #[allow(unsafe_code)]
    unsafe {
        pg_sys::CacheInvalidateRelcacheByRelid(relid);
    }
    Ok(None)
}
