//! On Citus, one writer at a time of the extension's shared tables.
//!
//! The shared tables (tenants, roles, grants, …) are Citus reference
//! tables. Citus locks a reference table's shard when a statement writes
//! it, and then the reference tables it points to: a transaction that
//! writes a parent and then a child (create_tenant) and one that writes a
//! child (add_member) take those locks in opposite orders and deadlock. So
//! before a statement of a coordinator's transaction writes one of them,
//! the transaction takes one lock, held until it ends: such transactions
//! follow one another, and each takes Citus' locks unopposed. The lock is
//! an advisory one of a kind no SQL function can take (its fourth field is
//! 3; pg_advisory_lock uses 1 and 2), so no session can hold it to stall
//! everyone's administration.
//! Nothing happens without Citus, for reads, or in the connections Citus
//! opens to run a shard (the coordinator's transaction holds the lock).
//! Statements that do not pass through the executor (COPY into a shared
//! table, TRUNCATE) take no lock: a DBA's bulk work, which may deadlock with
//! concurrent administration and then is retried.

use pgrx::pg_sys;

/// The lock's key ("pg_tenancy shared tables").
const KEY: (u32, u32) = (0x7067_5f74, 0x656e_0001);

static mut PREVIOUS: pg_sys::ExecutorStart_hook_type = None;

/// Installs the executor hook, only where Citus is loaded (it is preloaded
/// before pg_tenancy): a single node runs no hook at all. Called from
/// _PG_init.
pub fn init() {
    if !crate::guc::citus_loaded() {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: _PG_init runs once per backend before any query; the previous
    // hook is kept and called.
    unsafe {
        PREVIOUS = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
    }
}

/// The tables tenancy.scale_out() makes reference tables.
const SHARED: [&str; 9] = [
    "tenants",
    "resources",
    "roles",
    "role_permissions",
    "user_roles",
    "rate_limits",
    "reconcile_rules",
    "sql_logins",
    "all_tenants",
];

/// Whether the statement writes one of the shared tables.
///
/// # Safety
/// `desc` is the executor's QueryDesc with a planned statement.
#[allow(unsafe_code)]
unsafe fn writes_shared(desc: *mut pg_sys::QueryDesc) -> bool {
    // SAFETY (whole function): the planned statement and its range table
    // are the executor's, alive for the call; get_namespace_oid,
    // get_rel_namespace and get_rel_name are syscache lookups inside the
    // statement's transaction; get_rel_name's copy is checked for NULL.
    let stmt = (*desc).plannedstmt;
    // A SELECT writes only through a data-modifying WITH.
    if stmt.is_null()
        || ((*stmt).commandType == pg_sys::CmdType::CMD_SELECT && !(*stmt).hasModifyingCTE)
    {
        return false;
    }
    let schema = pg_sys::get_namespace_oid(c"tenancy".as_ptr(), true);
    if schema == pg_sys::InvalidOid {
        return false;
    }
    let rtable = pgrx::PgList::<pg_sys::RangeTblEntry>::from_pg((*stmt).rtable);
    let found = rtable.iter_ptr().any(|rte| {
        (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION
            && (*rte).relkind as u8 == pg_sys::RELKIND_RELATION
            && pg_sys::get_rel_namespace((*rte).relid) == schema
            && {
                let name = pg_sys::get_rel_name((*rte).relid);
                !name.is_null()
                    && SHARED.contains(&std::ffi::CStr::from_ptr(name).to_str().unwrap_or_default())
            }
    });
    found
}

#[allow(unsafe_code)]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn executor_start(desc: *mut pg_sys::QueryDesc, eflags: i32) {
    // SAFETY: desc is the executor's; the lock tag is filled in whole and
    // LockAcquire copies it; the transaction-level lock is released at its
    // end (or raises an ERROR, e.g. on a deadlock, which pg_guard carries).
    if !crate::signed::citus_internal() && writes_shared(desc) {
        let tag = pg_sys::LOCKTAG {
            locktag_field1: pg_sys::MyDatabaseId.to_u32(),
            locktag_field2: KEY.0,
            locktag_field3: KEY.1,
            locktag_field4: 3,
            locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
            locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
        };
        pg_sys::LockAcquire(&tag, pg_sys::ExclusiveLock as i32, false, false);
    }
    // SAFETY: PREVIOUS was read from ExecutorStart_hook once in init. The
    // previous hook (Citus') is called directly, not through pgrx's FFI
    // guard: that guard would turn an ERROR with one of our own SQLSTATEs
    // (TN0xx, raised while Citus evaluates a statement's functions) into
    // XX000. An ERROR then leaves through this frame, which holds nothing
    // that needs dropping (the lock tag is plain data).
    let previous = PREVIOUS;
    match previous {
        Some(previous) => previous(desc, eflags),
        None => pg_sys::standard_ExecutorStart(desc, eflags),
    }
}
