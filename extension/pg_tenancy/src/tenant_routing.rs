//! On Citus: a statement over tenant-scoped tables goes to the one worker
//! that holds the current tenant, not to every shard.
//!
//! Row level security keeps a statement to the current tenant's rows, but
//! Citus chooses the shards before any policy runs, and a policy's
//! `tenant_id = tenancy._scope()` is a function call it cannot route by. So
//! a read or write that does not name its tenant ran on every shard, and
//! Citus refused PostgREST's PATCH there altogether (its body is unpacked
//! by functions Citus will not send to every shard). Before Citus plans a
//! statement, this module finds each table a policy keeps to the current
//! tenant and adds the same condition with the tenant as a constant
//! (`tenant_id = '<tenant>'`), as a security qual of that table: the policy
//! already requires it, so no result changes, and joins stay what they
//! were. Citus prunes the shards by it; it does not print security quals
//! for the shards, where each shard's own policies decide, as before.
//!
//! A plan holding the constant is right for that tenant only. Plans that
//! Postgres keeps (prepared statements, PL/pgSQL) carry an invalidation
//! item, and when the context changes to another tenant (`session`,
//! `request`) those plans are invalidated, and planned again when next
//! used. A stale plan could only send a statement to the wrong worker,
//! where the worker's policies, which read the signed context, find no row
//! of the current tenant: never another tenant's rows.
//!
//! Connections Citus opens to run shards are left alone (the statement
//! names its shards already), and so is all of it without Citus
//! (`citus_planner` calls this only there).

use pgrx::pg_sys;
use pgrx::PgList;
use std::cell::Cell;
use std::ffi::{c_void, CStr};

/// The `=` operator of uuid: how `tenancy.enable` writes the policies.
const UUID_EQ: pg_sys::Oid = pg_sys::Oid::from_u32(2972);

thread_local! {
    /// The tenant whose constant plans kept by Postgres may hold.
    static BAKED: Cell<Option<[u8; 16]>> = const { Cell::new(None) };
}

/// What the walk over one statement needs and finds.
struct Walk {
    tenancy: pg_sys::Oid,
    /// Each table to route by, with the comparison its policies require.
    found: Vec<(*mut pg_sys::RangeTblEntry, *mut pg_sys::OpExpr)>,
    /// Tables written by an UPDATE or DELETE that names their tenant
    /// column itself, left as they are (`writes`).
    skip: Vec<*const pg_sys::RangeTblEntry>,
    /// The statement calls, in FROM, a function of the database's own that
    /// is not immutable: it is left as it is (`add_tenant_quals`).
    user_functions: bool,
}

/// Adds the current tenant as a constant beside each policy of `query`
/// that keeps a table to it. Returns whether it added one (the plan is
/// then for this tenant only: `mark_plan`).
///
/// A statement with a function of the database's own (not a built-in
/// one) in FROM that is not immutable is left as it is: routed to one
/// worker, Citus would run the function there, inside the shard's query,
/// where one that reads distributed tables (`tenancy.reconcile`) fails
/// ("cannot execute a distributed query from a query on a shard"); over
/// every shard it runs the function on the coordinator first, as before.
///
/// # Safety
/// `query` is the planner's input, not shared with anyone else.
#[allow(unsafe_code)]
pub unsafe fn add_tenant_quals(query: *mut pg_sys::Query) -> bool {
    if query.is_null() || crate::signed::citus_internal() {
        return false;
    }
    // SAFETY: a NUL-terminated name; missing_ok.
    let tenancy = pg_sys::get_namespace_oid(c"tenancy".as_ptr(), true);
    if tenancy == pg_sys::InvalidOid {
        return false;
    }
    let mut walk = Walk {
        tenancy,
        found: Vec::new(),
        skip: Vec::new(),
        user_functions: false,
    };
    // SAFETY: the walker only reads the tree; `walk` outlives the call.
    pg_sys::query_tree_walker(
        query,
        Some(walker),
        (&raw mut walk).cast(),
        pg_sys::QTW_EXAMINE_RTES_BEFORE as i32,
    );
    if walk.found.is_empty() || walk.user_functions {
        return false;
    }
    let Some(tenant) = crate::context::current_tenant_id().map(|t| *t.as_bytes()) else {
        return false; // no tenant: the policies raise, as without this
    };
    let mut added = false;
    for &(rte, scoped) in &walk.found {
        if !walk.skip.contains(&rte.cast_const()) {
            add_to_entry(&mut *rte, scoped, tenant);
            added = true;
        }
    }
    if added {
        context_changed_to(Some(tenant));
        BAKED.set(Some(tenant));
    }
    added
}

/// Makes `plan`, which holds the current tenant as a constant, one that
/// `context_changed` invalidates if Postgres keeps it.
///
/// # Safety
/// `plan` is the planner's result, in the current memory context.
#[allow(unsafe_code)]
pub unsafe fn mark_plan(plan: *mut pg_sys::PlannedStmt) {
    if plan.is_null() {
        return;
    }
    // SAFETY: a node of the planner's result's memory context; the
    // plan cache copies the plan with it.
    let item = pg_sys::palloc0(std::mem::size_of::<pg_sys::PlanInvalItem>())
        .cast::<pg_sys::PlanInvalItem>();
    (*item).type_ = pg_sys::NodeTag::T_PlanInvalItem;
    (*item).cacheId = pg_sys::SysCacheIdentifier::PROCOID as i32;
    (*item).hashValue = marker();
    (*plan).invalItems = pg_sys::lappend((*plan).invalItems, item.cast());
}

/// The context's tenant is now `tenant`: plans kept for another tenant
/// are planned again when next used.
pub fn context_changed(tenant: Option<pgrx::Uuid>) {
    context_changed_to(tenant.map(|t| *t.as_bytes()));
}

fn context_changed_to(tenant: Option<[u8; 16]>) {
    if BAKED.get().is_some_and(|b| Some(b) != tenant) {
        invalidate();
    }
}

/// Invalidates every kept plan `mark_plan` marked, as Postgres does when
/// a function they use changes.
fn invalidate() {
    BAKED.set(None);
    // SAFETY: runs this backend's syscache callbacks for one hash value:
    // the plan cache's callback marks the plans holding it as invalid.
    #[allow(unsafe_code)]
    unsafe {
        pg_sys::CallSyscacheCallbacks(pg_sys::SysCacheIdentifier::PROCOID as i32, marker());
    }
}

/// The hash value of marked plans' invalidation item: that of function
/// oid 0, which no function has.
fn marker() -> u32 {
    // SAFETY: hashes a key; reads no catalog.
    #[allow(unsafe_code)]
    unsafe {
        let zero = pg_sys::Datum::from(0usize);
        pg_sys::GetSysCacheHashValue(
            pg_sys::SysCacheIdentifier::PROCOID as i32,
            zero,
            zero,
            zero,
            zero,
        )
    }
}

#[allow(unsafe_code)]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn walker(node: *mut pg_sys::Node, context: *mut c_void) -> bool {
    // SAFETY (whole function): nodes of the planner's input; `context` is
    // the `Walk` of add_tenant_quals.
    if node.is_null() {
        return false;
    }
    match (*node).type_ {
        pg_sys::NodeTag::T_Query => {
            writes(&*node.cast(), &mut *context.cast());
            pg_sys::query_tree_walker(
                node.cast(),
                Some(walker),
                context,
                pg_sys::QTW_EXAMINE_RTES_BEFORE as i32,
            )
        }
        pg_sys::NodeTag::T_RangeTblEntry => {
            note_entry(&mut *node.cast(), &mut *context.cast());
            false
        }
        _ => pg_sys::expression_tree_walker(node, Some(walker), context),
    }
}

/// Leaves alone the table an UPDATE or DELETE writes when its WHERE
/// names the tenant column: Citus routes it by that, and a tenant there
/// that is not the current one (which the policies leave no row of) with
/// the constant beside it would leave no shard at all, where Citus 13.2
/// fails a write inside WITH ("could not find valid entry for shard 0").
///
/// # Safety
/// `q` is a query of the planner's input.
#[allow(unsafe_code)]
unsafe fn writes(q: &pg_sys::Query, walk: &mut Walk) {
    if !matches!(
        q.commandType,
        pg_sys::CmdType::CMD_UPDATE | pg_sys::CmdType::CMD_DELETE
    ) || q.resultRelation < 1
        || q.jointree.is_null()
    {
        return;
    }
    let Some(target) =
        PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable).get_ptr(q.resultRelation as usize - 1)
    else {
        return;
    };
    let quals = PgList::<pg_sys::Node>::from_pg((*target).securityQuals);
    let Some(scoped) = quals.iter_ptr().find_map(|e| required(e, walk.tenancy)) else {
        return;
    };
    let mut named: *mut pg_sys::Bitmapset = std::ptr::null_mut();
    pg_sys::pull_varattnos(
        (*q.jointree).quals,
        q.resultRelation as pg_sys::Index,
        &mut named,
    );
    let column = i32::from(column_of(scoped)) - pg_sys::FirstLowInvalidHeapAttributeNumber;
    if pg_sys::bms_is_member(column, named) {
        walk.skip.push(target);
    }
}

/// Notes a table whose policies require `column = tenancy._scope()` (or
/// `tenant_scope()`), and a function of the database's own in FROM that
/// is not immutable.
///
/// # Safety
/// `rte` is an entry of the planner's input.
#[allow(unsafe_code)]
unsafe fn note_entry(rte: &mut pg_sys::RangeTblEntry, walk: &mut Walk) {
    if rte.rtekind == pg_sys::RTEKind::RTE_FUNCTION {
        walk.user_functions |= user_functions_walker(rte.functions.cast(), std::ptr::null_mut());
        return;
    }
    if rte.rtekind != pg_sys::RTEKind::RTE_RELATION || rte.securityQuals.is_null() {
        return;
    }
    let quals = PgList::<pg_sys::Node>::from_pg(rte.securityQuals);
    // The quals of all levels hold together: one that requires it is enough.
    let scoped = quals.iter_ptr().find_map(|e| required(e, walk.tenancy));
    if let Some(scoped) = scoped {
        walk.found.push((rte, scoped));
    }
}

/// Whether `node` calls a function of the database's own (not built in)
/// that is not immutable: one that may read distributed tables. Built-in
/// ones, such as the `json_to_recordset` of PostgREST's PATCH, do not.
#[allow(unsafe_code)]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn user_functions_walker(
    node: *mut pg_sys::Node,
    context: *mut c_void,
) -> bool {
    // SAFETY: an expression of the planner's input; the callback reads the
    // syscache only.
    if node.is_null() {
        return false;
    }
    if (*node).type_ == pg_sys::NodeTag::T_Query {
        return false; // its tables are walked on their own
    }
    pg_sys::check_functions_in_node(node, Some(user_mutable), context)
        || pg_sys::expression_tree_walker(node, Some(user_functions_walker), context)
}

#[allow(unsafe_code)]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn user_mutable(f: pg_sys::Oid, _context: *mut c_void) -> bool {
    // SAFETY: a syscache lookup of a function the query calls.
    f.to_u32() >= pg_sys::FirstNormalObjectId
        && pg_sys::func_volatile(f) != pg_sys::PROVOLATILE_IMMUTABLE as std::ffi::c_char
}

/// Adds `column = '<tenant>'` to the security quals of `rte`, beside the
/// comparison `scoped` with `tenancy._scope()` its policies require.
///
/// # Safety
/// `rte` is an entry of the planner's input and `scoped` one of its
/// security quals' comparisons (`required`).
#[allow(unsafe_code)]
unsafe fn add_to_entry(
    rte: &mut pg_sys::RangeTblEntry,
    scoped: *mut pg_sys::OpExpr,
    tenant: [u8; 16],
) {
    let bytes = pg_sys::palloc(16).cast::<u8>();
    std::ptr::copy_nonoverlapping(tenant.as_ptr(), bytes, 16);
    let constant = pg_sys::makeConst(
        pg_sys::UUIDOID,
        -1,
        pg_sys::InvalidOid,
        16,
        pg_sys::Datum::from(bytes),
        false,
        false,
    );
    let qual = pg_sys::copyObjectImpl(scoped.cast()).cast::<pg_sys::OpExpr>();
    let column = column(qual).cast::<pg_sys::Node>();
    let mut args = PgList::<pg_sys::Node>::new();
    args.push(column);
    args.push(constant.cast());
    (*qual).args = args.into_pg();
    (*qual).location = -1;
    rte.securityQuals = pg_sys::lappend(rte.securityQuals, qual.cast());
}

/// The `column = tenancy._scope()` comparison that the qual `node`
/// requires to hold, if there is one: the comparison itself, one arm of an
/// AND, or every arm of an OR but the constant false ones (a permissive
/// policy that grants nothing), all on the same column.
///
/// # Safety
/// `node` is an expression of the planner's input.
#[allow(unsafe_code)]
unsafe fn required(node: *mut pg_sys::Node, tenancy: pg_sys::Oid) -> Option<*mut pg_sys::OpExpr> {
    if node.is_null() {
        return None;
    }
    match (*node).type_ {
        pg_sys::NodeTag::T_OpExpr => {
            let op = node.cast::<pg_sys::OpExpr>();
            let args = PgList::<pg_sys::Node>::from_pg((*op).args);
            let (Some(a), Some(b)) = (args.get_ptr(0), args.get_ptr(1)) else {
                return None;
            };
            let column_and_scope = |v: *mut pg_sys::Node, f: *mut pg_sys::Node| {
                (*v).type_ == pg_sys::NodeTag::T_Var
                    && (*v.cast::<pg_sys::Var>()).varlevelsup == 0
                    && is_scope(f, tenancy)
            };
            ((*op).opno == UUID_EQ
                && args.len() == 2
                && (column_and_scope(a, b) || column_and_scope(b, a)))
            .then_some(op)
        }
        pg_sys::NodeTag::T_BoolExpr => {
            let b = node.cast::<pg_sys::BoolExpr>();
            let args = PgList::<pg_sys::Node>::from_pg((*b).args);
            match (*b).boolop {
                pg_sys::BoolExprType::AND_EXPR => {
                    args.iter_ptr().find_map(|a| required(a, tenancy))
                }
                pg_sys::BoolExprType::OR_EXPR => {
                    let mut found: Option<*mut pg_sys::OpExpr> = None;
                    for a in args.iter_ptr() {
                        if is_false(a) {
                            continue;
                        }
                        let r = required(a, tenancy)?;
                        if found.is_some_and(|f| column_of(f) != column_of(r)) {
                            return None;
                        }
                        found = Some(r);
                    }
                    found
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The column a comparison `required` found is on.
#[allow(unsafe_code)]
unsafe fn column(op: *mut pg_sys::OpExpr) -> *mut pg_sys::Var {
    // SAFETY: an OpExpr `required` checked: one of its arguments is a Var.
    PgList::<pg_sys::Node>::from_pg((*op).args)
        .iter_ptr()
        .find(|a| (**a).type_ == pg_sys::NodeTag::T_Var)
        .map_or(std::ptr::null_mut(), |v| v.cast())
}

/// Its attribute number.
#[allow(unsafe_code)]
unsafe fn column_of(op: *mut pg_sys::OpExpr) -> pg_sys::AttrNumber {
    // SAFETY: as for `column`.
    let v = column(op);
    if v.is_null() {
        0
    } else {
        (*v).varattno
    }
}

#[allow(unsafe_code)]
unsafe fn is_false(node: *mut pg_sys::Node) -> bool {
    // SAFETY: a node of the planner's input.
    if (*node).type_ != pg_sys::NodeTag::T_Const {
        return false;
    }
    let c = &*node.cast::<pg_sys::Const>();
    c.consttype == pg_sys::BOOLOID && !c.constisnull && c.constvalue.value() == 0
}

/// A call of `tenancy._scope()` or `tenancy.tenant_scope()`.
#[allow(unsafe_code)]
unsafe fn is_scope(node: *mut pg_sys::Node, tenancy: pg_sys::Oid) -> bool {
    // SAFETY: a node of the planner's input; the function's name is read
    // from the syscache and freed.
    if (*node).type_ != pg_sys::NodeTag::T_FuncExpr {
        return false;
    }
    let f = &*node.cast::<pg_sys::FuncExpr>();
    if !f.args.is_null()
        || f.funcresulttype != pg_sys::UUIDOID
        || pg_sys::get_func_namespace(f.funcid) != tenancy
    {
        return false;
    }
    let name = pg_sys::get_func_name(f.funcid);
    if name.is_null() {
        return false;
    }
    let scope = matches!(CStr::from_ptr(name).to_bytes(), b"_scope" | b"tenant_scope");
    pg_sys::pfree(name.cast());
    scope
}
