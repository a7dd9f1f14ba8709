//! On Citus, UPDATE and DELETE through a simple view: PostgREST's PATCH and
//! DELETE on the api views.
//!
//! Postgres turns a write through an automatically updatable view into the
//! same write of the view's table, and keeps the view in the statement's
//! range table, first, marked as not written in FROM: so that the caller's
//! privileges on the view are checked too. Citus 13.2 refuses every such
//! statement whose table is a Citus table ("cannot modify views when the
//! query contains citus tables"): it takes that entry for a write of the
//! view itself, which it cannot run. What it would plan is the write of the
//! table, which it runs. So before Citus plans the statement, the view's
//! entry is marked as if written in FROM, and the table's as the target of
//! a plain write. Those marks are read only where a query is printed back
//! as SQL (ruleutils, and Citus' copy of it for the shards), and only for
//! entries of the join tree: the statement printed for a shard is then the
//! UPDATE or DELETE of the table, and the statement run on the coordinator,
//! its plan and the privileges checked stay as they were.
//! Nothing happens without Citus (`citus_planner` calls this only there), for other
//! statements, for views with INSTEAD OF triggers or rules (their
//! statement's target is the view itself), or where a view limits the rows
//! in a way Citus would not carry to the shards (a security barrier, whose
//! WHERE becomes a security qual, or a check option): Citus' refusal stands
//! there, and such a write fails closed.

use pgrx::pg_sys;

/// Marks the entry of a view that `query`, or a query of its WITH clause,
/// updates or deletes through.
///
/// # Safety
/// `query` is a rewritten query the planner was given, or NULL.
#[allow(unsafe_code)]
pub unsafe fn mark_written_views(query: *mut pg_sys::Query) {
    // SAFETY (whole function): the query tree is the planner's input, alive
    // and not shared with another backend; lists are walked as Postgres
    // built them.
    if query.is_null() {
        return;
    }
    let q = &mut *query;
    if matches!(q.commandType, pg_sys::CmdType::CMD_UPDATE | pg_sys::CmdType::CMD_DELETE)
        // The target is the view's table, appended after the view.
        && q.resultRelation > 1
    {
        let rtable = pgrx::PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable);
        let first = rtable.get_ptr(0);
        let target = rtable.get_ptr(q.resultRelation as usize - 1);
        if let (Some(view), Some(target)) = (first, target) {
            let (view, target) = (&mut *view, &mut *target);
            if view.rtekind == pg_sys::RTEKind::RTE_RELATION
                && view.relkind as u8 == pg_sys::RELKIND_VIEW
                && !view.inFromCl
                && target.rtekind == pg_sys::RTEKind::RTE_RELATION
                && matches!(target.relkind as u8, pg_sys::RELKIND_RELATION | pg_sys::RELKIND_PARTITIONED_TABLE)
                // Last: it opens the statement's views.
                && !filters_apart(q)
            {
                view.inFromCl = true;
                // The table took the view's place in the join tree, with
                // the mark it had in the view's FROM: as the target of a
                // plain UPDATE or DELETE it has none (else Citus prints it
                // twice for the shards: "table name ... specified more
                // than once").
                target.inFromCl = false;
            }
        }
    }
    let ctes = pgrx::PgList::<pg_sys::CommonTableExpr>::from_pg(q.cteList);
    for cte in ctes.iter_ptr() {
        let inner = (*cte).ctequery;
        if !inner.is_null() && (*inner).type_ == pg_sys::NodeTag::T_Query {
            mark_written_views(inner.cast());
        }
    }
}

/// Whether a view of the statement limits the rows it writes in a way that
/// Citus does not print for the shards: a security barrier (its WHERE
/// becomes a security qual of the table) or a check option. Citus' refusal
/// then stands: such a write fails closed.
///
/// # Safety
/// `q` is a rewritten query the planner was given.
#[allow(unsafe_code)]
unsafe fn filters_apart(q: &pg_sys::Query) -> bool {
    // SAFETY (whole function): lists of the planner's input; each view was
    // locked by the rewriter, and the relcache reference taken here is
    // given back before returning (nothing in between raises).
    let checks = pgrx::PgList::<pg_sys::WithCheckOption>::from_pg(q.withCheckOptions);
    if checks
        .iter_ptr()
        .any(|c| (*c).kind == pg_sys::WCOKind::WCO_VIEW_CHECK)
    {
        return true;
    }
    let rtable = pgrx::PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable);
    let found = rtable.iter_ptr().any(|rte| {
        if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION
            || (*rte).relkind as u8 != pg_sys::RELKIND_VIEW
        {
            return false;
        }
        let rel = pg_sys::RelationIdGetRelation((*rte).relid);
        if rel.is_null() {
            return true;
        }
        let options = (*rel).rd_options as *const pg_sys::ViewOptions;
        let apart = !options.is_null()
            && ((*options).security_barrier
                || (*options).check_option
                    != pg_sys::ViewOptCheckOption::VIEW_OPTION_CHECK_OPTION_NOT_SET);
        pg_sys::RelationClose(rel);
        apart
    });
    found
}
