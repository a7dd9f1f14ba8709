//! On Citus: a call of a distributed function with NULL for its
//! distribution argument is refused with an error, before Citus plans it.
//!
//! Citus 13.2 sends `SELECT f(...)` and `SELECT * FROM f(...)` of a function
//! distributed by an argument (`create_distributed_function(..., '$1')`)
//! to the node that holds that argument's value, and looks the value up
//! without checking for NULL: the node planning such a call crashes, and
//! every backend of it restarts. Postgres removes the call first only for a
//! STRICT function returning one value (which is left to it). The
//! privilege to execute the function is checked where the call runs, after
//! that: whoever may run SQL could take the coordinator down with
//! `SELECT * FROM f(NULL)`, with or without the privilege. So before Citus
//! plans a SELECT, each function called at its top level whose argument is
//! NULL (a constant, a bound parameter, or what Postgres folds into one) is
//! looked up in Citus' catalog, and if that argument is its distribution
//! argument the call is refused (22004). A database without the citus
//! extension has no such functions.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgList;

/// Refuses `query` if it calls a distributed function with NULL for its
/// distribution argument, in a form Citus would send to one node.
///
/// # Safety
/// `query` is the planner's input; `bound` its parameters or NULL.
#[allow(unsafe_code)]
pub unsafe fn refuse_null_distribution_arguments(
    query: *mut pg_sys::Query,
    bound: pg_sys::ParamListInfo,
) {
    if query.is_null() || crate::signed::citus_internal() {
        return;
    }
    let q = &*query;
    if q.commandType != pg_sys::CmdType::CMD_SELECT {
        return;
    }
    let mut calls: Vec<*mut pg_sys::FuncExpr> = Vec::new();
    let mut push = |e: *mut pg_sys::Node| {
        let e = pg_sys::strip_implicit_coercions(e);
        if !e.is_null() && (*e).type_ == pg_sys::NodeTag::T_FuncExpr {
            calls.push(e.cast());
        }
    };
    for t in PgList::<pg_sys::TargetEntry>::from_pg(q.targetList).iter_ptr() {
        push((*t).expr.cast());
    }
    for rte in PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable).iter_ptr() {
        if (*rte).rtekind == pg_sys::RTEKind::RTE_FUNCTION {
            for f in PgList::<pg_sys::RangeTblFunction>::from_pg((*rte).functions).iter_ptr() {
                push((*f).funcexpr);
            }
        }
    }
    for call in calls {
        // Postgres replaces such a call by NULL itself, before Citus looks.
        if !(*call).funcretset && pg_sys::func_strict((*call).funcid) {
            continue;
        }
        let args = PgList::<pg_sys::Node>::from_pg((*call).args);
        let nulls: Vec<usize> = (0..args.len())
            .filter(|&i| args.get_ptr(i).is_some_and(|a| folds_to_null(a, bound)))
            .collect();
        if nulls.is_empty() {
            continue;
        }
        if let Some(i) = distribution_argument((*call).funcid) {
            if nulls.contains(&i) {
                refuse((*call).funcid, i);
            }
        }
    }
}

/// Whether `arg` is NULL once Postgres has folded its constants and bound
/// parameters, as it does before Citus looks.
///
/// # Safety
/// `arg` is an expression of the planner's input; `bound` as above.
#[allow(unsafe_code)]
unsafe fn folds_to_null(arg: *mut pg_sys::Node, bound: pg_sys::ParamListInfo) -> bool {
    let folded = {
        // A planner state with nothing but the parameters, which is all
        // that folding reads of it (and where it notes what it inlined).
        let glob = pg_sys::palloc0(std::mem::size_of::<pg_sys::PlannerGlobal>())
            .cast::<pg_sys::PlannerGlobal>();
        (*glob).type_ = pg_sys::NodeTag::T_PlannerGlobal;
        (*glob).boundParams = bound;
        let root = pg_sys::palloc0(std::mem::size_of::<pg_sys::PlannerInfo>())
            .cast::<pg_sys::PlannerInfo>();
        (*root).type_ = pg_sys::NodeTag::T_PlannerInfo;
        (*root).glob = glob;
        let copy = pg_sys::copyObjectImpl(arg.cast()).cast::<pg_sys::Node>();
        pg_sys::strip_implicit_coercions(pg_sys::eval_const_expressions(root, copy))
    };
    !folded.is_null()
        && (*folded).type_ == pg_sys::NodeTag::T_Const
        && (*folded.cast::<pg_sys::Const>()).constisnull
}

/// The distribution argument (from 0) of function `f`, if Citus has it
/// distributed by one.
fn distribution_argument(f: pg_sys::Oid) -> Option<usize> {
    // SAFETY: a catalog lookup by name, with a NUL-terminated name.
    #[allow(unsafe_code)]
    let catalog = unsafe {
        pg_sys::get_relname_relid(c"pg_dist_object".as_ptr(), pg_sys::PG_CATALOG_NAMESPACE.into())
    };
    if catalog == pg_sys::InvalidOid {
        return None;
    }
    let found = Spi::get_one_with_args::<i32>(
        "SELECT distribution_argument_index FROM pg_catalog.pg_dist_object
         WHERE classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND objid = $1 AND objsubid = 0",
        &[f.into()],
    );
    match found {
        Ok(i) => i.and_then(|i| usize::try_from(i).ok()),
        Err(pgrx::spi::SpiError::InvalidPosition) => None,
        Err(e) => crate::error::internal("reading pg_dist_object", e),
    }
}

fn refuse(f: pg_sys::Oid, i: usize) -> ! {
    // SAFETY: the function's name as regprocedure prints it, a palloc'd C
    // string, copied at once.
    #[allow(unsafe_code)]
    let name = unsafe { std::ffi::CStr::from_ptr(pg_sys::format_procedure(f)) }
        .to_string_lossy()
        .into_owned();
    crate::error::raise(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        format!("argument {} of {name}, which Citus routes the call by, is NULL", i + 1),
        "Pass the value (a tenant's id) to route the call by: Citus cannot route a call without one.",
    )
}
