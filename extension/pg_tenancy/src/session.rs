//! Setting the context of a transaction: tenant and user, and the user's
//! grants handed to RBAC so that its checks in this transaction need no
//! query. Above `context` (which only reads) and `rbac` (which reads the
//! context): nothing below imports this module.

use crate::guc;
use pgrx::prelude::*;

/// Sets tenant and user for the rest of the current transaction only.
/// Internal: called by `set_tenant` and `_job_context`, which validate the
/// tenant first. The session's login must be bound to the tenant, or (with
/// no user: SQL) may enter every tenant (`logins`); a login bound to tenants
/// gets no other one, with or without a user.
/// `grants` ('resource.action' strings), when given, are the user's
/// permissions read in the same statement, so RBAC checks in this
/// transaction need no further query (no caller passes them since
/// pre_request's work moved to `request.rs`; the released signature keeps
/// the argument).
#[pg_extern(volatile, parallel_unsafe, name = "_set_context")]
pub fn set_context(
    tenant_id: Option<pgrx::Uuid>,
    user_id: Option<pgrx::Uuid>,
    grants: default!(Option<Vec<Option<String>>>, "NULL"),
) {
    if let Some(tenant) = tenant_id {
        if let Some(login) = crate::logins::session() {
            match user_id {
                None => login.check_entry(tenant, || crate::logins::slug(tenant)),
                Some(_) => crate::logins::refuse_user(&login),
            }
        }
    }
    let text = |id: Option<pgrx::Uuid>| id.map(|v| v.to_string()).unwrap_or_default();
    guc::set_local(guc::TENANT_ID, &text(tenant_id));
    guc::set_local(guc::USER_ID, &text(user_id));
    crate::tenant_routing::context_changed(tenant_id);
    if let (Some(tenant), Some(user), Some(grants)) = (tenant_id, user_id, grants) {
        crate::rbac::remember_grants(
            tenant,
            user,
            crate::rbac::grants(grants.into_iter().flatten()),
        );
    }
    crate::signed::hand_on(tenant_id, user_id);
}
