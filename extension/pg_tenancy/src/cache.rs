//! What backends keep of the extension's tables between transactions
//! (pre_request's lookups, a login's bindings) and how it is dropped the
//! moment a change commits anywhere.
//!
//! Every table those caches read has a statement trigger, `tenancy._changed`,
//! that queues a relcache invalidation of the table: Postgres sends it to
//! every backend when the transaction commits (and applies it in this one at
//! its next command). Each backend accepts invalidations at the start of its
//! next transaction, and `_pre_request` accepts them again before it reads;
//! the callbacks registered here then move `generation` on, and a cache
//! built in an earlier generation is stale. Role memberships and role
//! attributes (superuser) live in catalogs whose changes arrive as syscache
//! invalidations: those move it on too. A backend that falls behind the
//! invalidation queue is reset, which calls back for every relation.

use pgrx::prelude::*;
use std::cell::{Cell, RefCell};

/// The tables whose changes drop the caches (triggers on each).
const TABLES: [&std::ffi::CStr; 7] = [
    c"tenants",
    c"roles",
    c"role_permissions",
    c"user_roles",
    c"rate_limits",
    c"sql_logins",
    c"all_tenants",
];

thread_local! {
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    /// The oids of `TABLES`; empty until resolved (then every relation
    /// counts), and emptied when one of them changes (it may have been
    /// dropped and created again).
    static WATCHED: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
}

fn bump() {
    GENERATION.set(GENERATION.get().wrapping_add(1));
}

#[allow(unsafe_code)]
#[pg_guard]
unsafe extern "C-unwind" fn relation_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // Autovacuum's statistics send one for every table it visits: only ours
    // (or a reset of all, InvalidOid) count. No catalog access here.
    let ours = relid == pg_sys::InvalidOid
        || WATCHED.with(|w| {
            w.try_borrow()
                .map_or(true, |w| w.is_empty() || w.contains(&relid))
        });
    if ours {
        bump();
        if relid != pg_sys::InvalidOid {
            WATCHED.with(|w| {
                if let Ok(mut w) = w.try_borrow_mut() {
                    w.clear();
                }
            });
        }
    }
}

#[allow(unsafe_code)]
#[pg_guard]
unsafe extern "C-unwind" fn role_changed(_arg: pg_sys::Datum, _cacheid: i32, _hash: u32) {
    bump();
}

/// The oids of `TABLES`, or none if one cannot be found.
fn resolve() -> Vec<pg_sys::Oid> {
    // SAFETY: catalog lookups by name, with NUL-terminated static strings,
    // in a transaction (every caller runs inside one).
    #[allow(unsafe_code)]
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"tenancy".as_ptr(), true);
        if schema == pg_sys::InvalidOid {
            return Vec::new();
        }
        let oids: Vec<pg_sys::Oid> = TABLES
            .iter()
            .map(|t| pg_sys::get_relname_relid(t.as_ptr(), schema))
            .collect();
        if oids.contains(&pg_sys::InvalidOid) {
            return Vec::new();
        }
        oids
    }
}

/// The current generation of what the tables hold, as far as this backend
/// knows. A value cached with an older one is stale.
pub fn generation() -> u64 {
    if !WATCHING.replace(true) {
        // SAFETY: registers plain functions once per backend.
        #[allow(unsafe_code)]
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(Some(relation_changed), pg_sys::Datum::from(0));
            for cache in [
                pg_sys::SysCacheIdentifier::AUTHOID,
                pg_sys::SysCacheIdentifier::AUTHMEMROLEMEM,
            ] {
                pg_sys::CacheRegisterSyscacheCallback(
                    cache as i32,
                    Some(role_changed),
                    pg_sys::Datum::from(0),
                );
            }
        }
        bump();
    }
    if WATCHED.with(|w| w.borrow().is_empty()) {
        let oids = resolve();
        WATCHED.with(|w| *w.borrow_mut() = oids);
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

/// On Citus the trigger fires on a placement of the table (a shard named
/// `<table>_<shard id>`); the caches watch the table itself.
fn shard_of(name: &str) -> Option<&std::ffi::CStr> {
    let (table, id) = name.rsplit_once('_')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    TABLES.iter().copied().find(|t| t.to_bytes() == table.as_bytes())
}

/// Queues a relcache invalidation of the table the trigger fired on, sent
/// to every backend when the transaction commits (on Citus, also when the
/// prepared transaction commits): their caches of the extension's tables
/// are dropped then.
#[pg_trigger]
fn _changed<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    let relation = trigger.relation()?;
    let mut relids = vec![relation.oid()];
    if let Some(table) = shard_of(relation.name()) {
        // SAFETY: a catalog lookup by name, in the trigger's transaction.
        #[allow(unsafe_code)]
        let relid = unsafe { pg_sys::get_relname_relid(table.as_ptr(), relation.namespace_oid()) };
        if relid != pg_sys::InvalidOid {
            relids.push(relid);
        }
    }
    for relid in relids {
        // SAFETY: queues an invalidation message for an existing relation.
        #[allow(unsafe_code)]
        unsafe {
            pg_sys::CacheInvalidateRelcacheByRelid(relid);
        }
    }
    Ok(None)
}
