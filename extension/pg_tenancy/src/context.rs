//! The tenant/user context of the current transaction.
//!
//! Readers are STABLE and PARALLEL SAFE so that a policy written as
//! `tenant_id = (select tenancy.tenant_scope())` is evaluated once per
//! statement (an initPlan), never per row. An empty string means "unset":
//! PostgREST and `RESET` leave `''` behind rather than NULL.

use crate::guc;
use pgrx::prelude::*;
use pgrx::PgLogLevel;
use std::ffi::CString;

fn read(setting: &pgrx::guc::GucSetting<Option<CString>>, name: &str) -> Option<pgrx::Uuid> {
    let value = setting.get()?;
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() {
        return None;
    }
    match uuid::Uuid::parse_str(text) {
        Ok(id) => Some(pgrx::Uuid::from_bytes(*id.as_bytes())),
        Err(_) => crate::error::raise(
            PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
            format!("{name} holds \"{text}\", which is not a uuid"),
            "Set the context with tenancy.set_tenant() or tenancy.pre_request(), never by hand.",
        ),
    }
}

/// The tenant of the current transaction, or NULL when none is set.
#[pg_extern(stable, parallel_safe)]
pub fn current_tenant_id() -> Option<pgrx::Uuid> {
    read(&guc::TENANT, guc::TENANT_ID)
}

/// The user (JWT `sub`) of the current transaction, or NULL when none is set.
#[pg_extern(stable, parallel_safe)]
pub fn current_user_id() -> Option<pgrx::Uuid> {
    read(&guc::USER, guc::USER_ID)
}

/// True inside an explicit `BEGIN … COMMIT` block. `set_tenant` uses it to
/// warn an analyst whose autocommit statement would drop the context at once.
#[pg_extern(volatile, parallel_restricted, name = "_in_transaction_block")]
fn in_transaction_block() -> bool {
    #[allow(unsafe_code)]
    unsafe {
        pg_sys::IsTransactionBlock()
    }
}

fn set_local(name: &str, value: Option<pgrx::Uuid>) {
    let name = CString::new(name).expect("GUC names have no NUL");
    let value =
        CString::new(value.map(|v| v.to_string()).unwrap_or_default()).expect("a uuid has no NUL");
    set_local_raw(&name, &value);
}

fn set_local_raw(name: &CString, value: &CString) {
    #[allow(unsafe_code)]
    unsafe {
        // Same call as set_config(name, value, true): Postgres itself refuses a
        // caller that is not running with superuser rights (PGC_SUSET).
        let context = if pg_sys::superuser() {
            pg_sys::GucContext::PGC_SUSET
        } else {
            pg_sys::GucContext::PGC_USERSET
        };
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            context,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            PgLogLevel::ERROR as i32,
            false,
        );
    }
}

/// Sets tenant and user for the rest of the current transaction only.
/// Internal: called by `set_tenant` and `pre_request`, which validate first.
/// `grants` ('resource.action' strings), when given, are the user's
/// permissions read in the same statement, so RBAC checks in this
/// transaction need no further query.
#[pg_extern(volatile, parallel_unsafe, name = "_set_context")]
pub fn set_context(
    tenant_id: Option<pgrx::Uuid>,
    user_id: Option<pgrx::Uuid>,
    grants: default!(Option<Vec<Option<String>>>, "NULL"),
) {
    set_local(guc::TENANT_ID, tenant_id);
    set_local(guc::USER_ID, user_id);
    if let (Some(tenant), Some(user), Some(grants)) = (tenant_id, user_id, grants) {
        crate::rbac::remember_grants(tenant, user, grants.into_iter().flatten());
    }
}

/// Remembers the idempotency key claimed by this transaction (internal).
#[pg_extern(volatile, parallel_unsafe, name = "_set_claimed_key")]
fn set_claimed_key(key: Option<&str>) {
    let name = CString::new(guc::IDEMPOTENCY_KEY).expect("GUC names have no NUL");
    let value = CString::new(key.unwrap_or_default()).unwrap_or_default();
    set_local_raw(&name, &value);
}

/// The key claimed by this transaction, or NULL.
#[pg_extern(stable, parallel_safe, name = "_claimed_key")]
fn claimed_key() -> Option<String> {
    let value = guc::CLAIMED_KEY.get()?;
    let text = value.to_str().ok()?.to_string();
    (!text.is_empty()).then_some(text)
}

/// Seconds a completed idempotency key lives (GUC tenancy.idempotency_ttl).
#[pg_extern(stable, parallel_safe)]
fn idempotency_ttl_seconds() -> i32 {
    guc::IDEMPOTENCY_TTL.get()
}

/// 422 or 409: the status for a key reused with another request.
#[pg_extern(stable, parallel_safe)]
fn idempotency_conflict_status() -> i32 {
    if guc::IDEMPOTENCY_CONFLICT_STATUS.get() == 409 {
        409
    } else {
        422
    }
}
