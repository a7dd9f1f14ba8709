//! The planner hook, installed only where Citus is loaded. Before Citus
//! plans a statement, pg_tenancy:
//!
//! - refuses a call of a distributed function with NULL for its
//!   distribution argument, which crashes Citus 13.2 (`distributed_calls`);
//! - lets Citus plan UPDATE and DELETE through simple views, PostgREST's
//!   PATCH and DELETE (`view_writes`);
//! - adds the current tenant as a constant beside the policies that keep
//!   tables to it, so that Citus sends the statement to the one worker that
//!   holds the tenant (`tenant_routing`).
//!
//! Queries these steps run themselves (catalog lookups, the context) are
//! planned through this hook too: there it only calls Citus.

use pgrx::pg_sys;
use std::cell::Cell;

static mut PREVIOUS: pg_sys::planner_hook_type = None;

thread_local! {
    /// Inside the steps above.
    static OURS: Cell<bool> = const { Cell::new(false) };
}

/// Installs the planner hook, only where Citus is loaded (it is preloaded
/// before pg_tenancy, so this hook runs before Citus'). Called from
/// _PG_init.
pub fn init() {
    if !crate::guc::citus_loaded() {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: _PG_init runs once per backend before any query; the previous
    // hook is kept and called.
    unsafe {
        PREVIOUS = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(plan);
    }
}

/// Clears `OURS` when the steps end, by an error too.
struct Ours;

impl Drop for Ours {
    fn drop(&mut self) {
        OURS.set(false);
    }
}

#[allow(unsafe_code)]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn plan(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: std::ffi::c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    let for_tenant = !OURS.get() && {
        OURS.set(true);
        let _ours = Ours;
        // SAFETY: parse is the planner's input, not shared with another
        // backend; bound_params its parameters.
        crate::distributed_calls::refuse_null_distribution_arguments(parse, bound_params);
        crate::view_writes::mark_written_views(parse);
        crate::tenant_routing::add_tenant_quals(parse)
    };
    // SAFETY: PREVIOUS was read from planner_hook once in init. As in
    // shared_writes, the previous hook (Citus') is called directly: an
    // ERROR it raises leaves through this frame, which holds nothing that
    // needs dropping, with its own SQLSTATE.
    let previous = PREVIOUS;
    let plan = match previous {
        Some(previous) => previous(parse, query_string, cursor_options, bound_params),
        None => pg_sys::standard_planner(parse, query_string, cursor_options, bound_params),
    };
    if for_tenant {
        // SAFETY: the plan just made, in the planner's memory context.
        crate::tenant_routing::mark_plan(plan);
    }
    plan
}
