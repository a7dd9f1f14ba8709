//! What the idempotency functions (`src/sql/idempotency.sql`) need from
//! Rust: the key claimed by this transaction, and the two settings.

use crate::guc;
use pgrx::prelude::*;

/// Remembers the idempotency key claimed by this transaction (internal).
#[pg_extern(volatile, parallel_unsafe, name = "_set_claimed_key")]
fn set_claimed_key(key: Option<&str>) {
    guc::set_local(guc::IDEMPOTENCY_KEY, key.unwrap_or_default());
}

/// The key claimed by this transaction, or NULL.
#[pg_extern(stable, parallel_safe, name = "_claimed_key")]
pub fn claimed_key() -> Option<String> {
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
