//! Reading the tenant/user context of the current transaction.
//!
//! Readers are STABLE and PARALLEL SAFE so that a policy written as
//! `tenant_id = (select tenancy.tenant_scope())` is evaluated once per
//! statement (an initPlan), never per row. An empty string means "unset":
//! PostgREST and `RESET` leave `''` behind rather than NULL. The context is
//! set by `session.rs`.

use crate::guc;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

fn read(setting: &pgrx::guc::GucSetting<Option<CString>>, name: &CStr) -> Option<pgrx::Uuid> {
    let value = setting.get()?;
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() {
        return None;
    }
    match parse_uuid(text) {
        Some(id) => Some(id),
        None => crate::error::raise(
            PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
            format!(
                "{} holds \"{text}\", which is not a uuid",
                name.to_string_lossy()
            ),
            "Set the context with tenancy.set_tenant() or tenancy.pre_request(), never by hand.",
        ),
    }
}

/// A uuid in any of the forms the uuid crate reads.
pub fn parse_uuid(text: &str) -> Option<pgrx::Uuid> {
    let id = uuid::Uuid::parse_str(text).ok()?;
    Some(pgrx::Uuid::from_bytes(*id.as_bytes()))
}

/// The tenant of the current transaction, or NULL when none is set. On a
/// Citus worker it is the coordinator's, from the signed context. A
/// database login bound to exactly one tenant (`logins`) is in it without
/// setting it.
#[pg_extern(stable, parallel_safe)]
pub fn current_tenant_id() -> Option<pgrx::Uuid> {
    read(&guc::TENANT, guc::TENANT_ID)
        .or_else(|| crate::signed::current().map(|s| s.tenant))
        .or_else(|| {
            // A connection Citus opened to run a shard of another node's
            // statement may not query the (distributed) bindings; the
            // coordinator signs what it needs. Without that, no tenant: fail
            // closed. (Only this read skips the login: a spoofed
            // application_name gains nothing, it loses the login's tenant.)
            if crate::signed::citus_internal() {
                return None;
            }
            crate::logins::session().and_then(|l| l.only_tenant())
        })
}

/// The user (JWT `sub`) of the current transaction, or NULL when none is set.
#[pg_extern(stable, parallel_safe)]
pub fn current_user_id() -> Option<pgrx::Uuid> {
    read(&guc::USER, guc::USER_ID).or_else(|| crate::signed::current().and_then(|s| s.user))
}

/// True inside an explicit `BEGIN … COMMIT` block. `set_tenant` uses it to
/// warn an analyst whose autocommit statement would drop the context at once.
#[pg_extern(volatile, parallel_restricted, name = "_in_transaction_block")]
fn in_transaction_block() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: reads the state of the current transaction; no arguments.
    unsafe {
        pg_sys::IsTransactionBlock()
    }
}
