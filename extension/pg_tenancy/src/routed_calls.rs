//! On Citus, a call of a distributed function whose distribution argument
//! is NULL is refused before Citus plans it.
//!
//! Citus 13.2 routes `SELECT f(…)` and `SELECT … FROM f(…)` of a function
//! distributed by an argument to the node that holds that argument's shard,
//! and looks the shard up while planning without checking for NULL: the
//! node crashes (a segmentation fault, and Postgres restarts every backend).
//! Any role that may name such a function — `ledger_routed.reconcile_for`,
//! or a DBA's own — could take the coordinator down with `SELECT * FROM
//! f(NULL)`. So where Citus is loaded, a planner hook looks at those two
//! forms only, and reads Citus' catalog only when such a call has an
//! argument that is NULL once constants are folded (a literal, a cast of
//! one, or a bound parameter): a NULL distribution argument is then
//! `22004`, naming the function.

use crate::error::raise;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgList;

static mut PREVIOUS: pg_sys::planner_hook_type = None;

/// Installs the planner hook, only where Citus is loaded (it is preloaded
/// before pg_tenancy, so this runs first, then Citus' planner). Called from
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
        pg_sys::planner_hook = Some(planner);
    }
}

#[allow(unsafe_code)]
#[pg_guard]
unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: std::ffi::c_int,
    bound: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: the parse tree and parameters are the planner's, alive for
    // the call; refuse() raises an ERROR through pg_guard before anything
    // is planned.
    if let Some((function, nulls)) = unsafe { null_argument_call(parse, bound) } {
        refuse(function, &nulls);
    }
    // SAFETY: PREVIOUS was read from planner_hook once in init. Called
    // directly, as shared_writes.rs calls Citus' executor hook: an ERROR
    // leaves through this frame, which holds nothing that needs dropping.
    let previous = unsafe { PREVIOUS };
    match previous {
        Some(previous) => unsafe { previous(parse, query_string, cursor_options, bound) },
        None => unsafe { pg_sys::standard_planner(parse, query_string, cursor_options, bound) },
    }
}

/// The function of a call in a form Citus routes, and the positions of its
/// arguments that are NULL.
///
/// # Safety
///
/// `q` is a parse tree the planner was given, `bound` its parameters.
#[allow(unsafe_code)]
unsafe fn null_argument_call(
    q: *mut pg_sys::Query,
    bound: pg_sys::ParamListInfo,
) -> Option<(pg_sys::Oid, Vec<usize>)> {
    // SAFETY (whole function): nodes of the parse tree are read, never
    // changed; arguments are folded on copies.
    unsafe {
        if q.is_null() || (*q).commandType != pg_sys::CmdType::CMD_SELECT {
            return None;
        }
        calls(q).into_iter().find_map(|call| {
            let args = PgList::<pg_sys::Node>::from_pg((*call).args);
            let nulls: Vec<usize> = args
                .iter_ptr()
                .enumerate()
                .filter(|&(_, arg)| is_null(arg, bound))
                .map(|(i, _)| i)
                .collect();
            (!nulls.is_empty()).then(|| ((*call).funcid, nulls))
        })
    }
}

/// The calls of `SELECT f(…)` (the one target) and of `SELECT … FROM f(…)`
/// (the one item of FROM).
#[allow(unsafe_code)]
unsafe fn calls(q: *mut pg_sys::Query) -> Vec<*mut pg_sys::FuncExpr> {
    let func = |node: *mut pg_sys::Node| {
        // SAFETY: a node of the parse tree, or NULL.
        (!node.is_null() && unsafe { (*node).type_ } == pg_sys::NodeTag::T_FuncExpr)
            .then(|| node.cast::<pg_sys::FuncExpr>())
    };
    let mut found = Vec::new();
    // SAFETY: the caller's promise; lists are read through PgList.
    unsafe {
        let targets = PgList::<pg_sys::TargetEntry>::from_pg((*q).targetList);
        if targets.len() == 1 {
            if let Some(target) = targets.get_ptr(0) {
                found.extend(func((*target).expr.cast()));
            }
        }
        let tree = (*q).jointree;
        if tree.is_null() {
            return found;
        }
        let from = PgList::<pg_sys::Node>::from_pg((*tree).fromlist);
        let Some(item) = from.get_ptr(0).filter(|_| from.len() == 1) else {
            return found;
        };
        if (*item).type_ != pg_sys::NodeTag::T_RangeTblRef {
            return found;
        }
        let index = (*item.cast::<pg_sys::RangeTblRef>()).rtindex;
        let rtable = PgList::<pg_sys::RangeTblEntry>::from_pg((*q).rtable);
        let Some(rte) = usize::try_from(index - 1)
            .ok()
            .and_then(|i| rtable.get_ptr(i))
        else {
            return found;
        };
        if (*rte).rtekind != pg_sys::RTEKind::RTE_FUNCTION {
            return found;
        }
        let functions = PgList::<pg_sys::RangeTblFunction>::from_pg((*rte).functions);
        if functions.len() == 1 {
            if let Some(f) = functions.get_ptr(0) {
                found.extend(func((*f).funcexpr));
            }
        }
    }
    found
}

/// Whether an argument is NULL once its constants are folded, as the
/// planner folds them before Citus looks at it.
#[allow(unsafe_code)]
unsafe fn is_null(arg: *mut pg_sys::Node, bound: pg_sys::ParamListInfo) -> bool {
    // SAFETY: folding works on a copy, in the current (planning) memory
    // context; parameters are read from the planner's list, through its
    // fetch hook when it has one (speculatively: nothing is evaluated).
    unsafe {
        let copy = pg_sys::copyObjectImpl(arg.cast()).cast::<pg_sys::Node>();
        let node = pg_sys::strip_implicit_coercions(pg_sys::eval_const_expressions(
            std::ptr::null_mut(),
            copy,
        ));
        match (*node).type_ {
            pg_sys::NodeTag::T_Const => (*node.cast::<pg_sys::Const>()).constisnull,
            pg_sys::NodeTag::T_Param => {
                let param = node.cast::<pg_sys::Param>();
                if (*param).paramkind != pg_sys::ParamKind::PARAM_EXTERN || bound.is_null() {
                    return false;
                }
                let id = (*param).paramid;
                if id < 1 || id > (*bound).numParams {
                    return false;
                }
                let value = match (*bound).paramFetch {
                    Some(fetch) => {
                        let mut workspace = pg_sys::ParamExternData::default();
                        fetch(bound, id, true, &mut workspace)
                    }
                    None => (*bound).params.as_mut_ptr().add((id - 1) as usize),
                };
                !value.is_null() && (*value).isnull
            }
            _ => false,
        }
    }
}

/// Raises 22004 when `function` is distributed by one of the arguments at
/// `nulls` (Citus' catalog, readable by everyone, says which).
fn refuse(function: pg_sys::Oid, nulls: &[usize]) {
    let routed_by = Spi::connect(|client| {
        let catalog = client
            .select(
                "SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_object') IS NOT NULL",
                None,
                &[],
            )?
            .first()
            .get_one::<bool>()?;
        if catalog != Some(true) {
            return Ok(None);
        }
        let rows = client.select(
            "SELECT distribution_argument_index FROM pg_catalog.pg_dist_object
             WHERE classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND objid = $1",
            None,
            &[function.into()],
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.first().get_one::<i32>()
    })
    .unwrap_or_else(|e: pgrx::spi::SpiError| crate::error::internal("reading pg_dist_object", e));
    let Some(index) = routed_by.and_then(|i| usize::try_from(i).ok()) else {
        return;
    };
    if nulls.contains(&index) {
        let name = Spi::get_one_with_args::<String>(
            "SELECT $1::pg_catalog.regprocedure::text",
            &[function.into()],
        )
        .ok()
        .flatten()
        .unwrap_or_else(|| format!("function {}", function.to_u32()));
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{name} is routed by its argument {}, which is NULL", index + 1),
            "Citus runs this function on the node that holds that argument's rows: pass a value (e.g. the current tenant's id).",
        );
    }
}
