//! On Citus, one writer at a time of the extension's shared tables.
//!
//! The shared tables (tenants, roles, grants, …) are Citus reference
//! tables. Citus locks a reference table's shard when a statement writes
//! it, and then the reference tables it points to: a transaction that
//! writes a parent and then a child (create_tenant) and one that writes a
//! child (add_member) take those locks in opposite orders and deadlock. So
//! before a statement of a coordinator's transaction writes one of them,
//! the transaction takes one advisory lock, held until it ends: such
//! transactions follow one another, and each takes Citus' locks unopposed.
//! Nothing happens without Citus, for reads, or in the connections Citus
//! opens to run a shard (the coordinator's transaction holds the lock).

use pgrx::pg_sys;
use std::cell::Cell;

/// The advisory lock's key ("pg_tenancy shared tables").
const KEY: i64 = 0x7067_5f74_656e_0001;

static mut PREVIOUS: pg_sys::ExecutorStart_hook_type = None;

thread_local! {
    /// Whether Citus is loaded in this backend: fixed once it starts.
    static CITUS: Cell<Option<bool>> = const { Cell::new(None) };
}

fn citus() -> bool {
    CITUS.with(|c| {
        *c.get().get_or_insert_with(|| {
            crate::guc::get(c"citus.propagate_set_commands").is_some()
        })
    })
}

/// Installs the executor hook; called from _PG_init.
pub fn init() {
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
    let stmt = (*desc).plannedstmt;
    if stmt.is_null() || (*stmt).commandType == pg_sys::CmdType::CMD_SELECT {
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
    if citus() && !crate::signed::citus_internal() && writes_shared(desc) {
        pgrx::direct_function_call::<()>(
            pg_sys::pg_advisory_xact_lock_int8,
            &[pgrx::IntoDatum::into_datum(KEY)],
        );
    }
    match PREVIOUS {
        Some(previous) => previous(desc, eflags),
        None => pg_sys::standard_ExecutorStart(desc, eflags),
    }
}
