//! Every GUC of the extension, under the reserved `tenancy.` prefix.
//!
//! `tenancy.tenant_id` and `tenancy.user_id` hold the request context. They are
//! `PGC_SUSET`: only superuser code — the extension's SECURITY DEFINER
//! functions (`set_tenant`, `pre_request`) — can set them, so an API role can
//! never `set_config('tenancy.tenant_id', …)` its way into another tenant.
//! The prefix is reserved, so a typo such as `tenancy.tenantid` is an error
//! instead of a silently ignored placeholder.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

pub const TENANT_ID: &str = "tenancy.tenant_id";
pub const USER_ID: &str = "tenancy.user_id";

pub const IDEMPOTENCY_KEY: &str = "tenancy.idempotency_key";

pub static TENANT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static USER: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static CLAIMED_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static IDEMPOTENCY_TTL: GucSetting<i32> = GucSetting::<i32>::new(86_400);
pub static IDEMPOTENCY_CONFLICT_STATUS: GucSetting<i32> = GucSetting::<i32>::new(422);

pub fn init() {
    GucRegistry::define_string_guc(
        c"tenancy.tenant_id",
        c"Tenant of the current transaction (set by tenancy.set_tenant or tenancy.pre_request).",
        c"Transaction-local; empty means no tenant. Only the extension's own functions may set it.",
        &TENANT,
        GucContext::Suset,
        GucFlags::DISALLOW_IN_FILE,
    );
    GucRegistry::define_string_guc(
        c"tenancy.user_id",
        c"User (JWT sub) of the current transaction.",
        c"Transaction-local; empty means no user. Only the extension's own functions may set it.",
        &USER,
        GucContext::Suset,
        GucFlags::DISALLOW_IN_FILE,
    );
    GucRegistry::define_string_guc(
        c"tenancy.idempotency_key",
        c"Idempotency key claimed by the current transaction.",
        c"Transaction-local; set by tenancy.idempotency_claim and read by tenancy.idempotency_complete.",
        &CLAIMED_KEY,
        GucContext::Suset,
        GucFlags::DISALLOW_IN_FILE,
    );
    GucRegistry::define_int_guc(
        c"tenancy.idempotency_ttl",
        c"How long a completed idempotency key is replayed (default 24 h).",
        c"Expired keys count as new and are deleted by tenancy.purge_idempotency_keys().",
        &IDEMPOTENCY_TTL,
        60,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"tenancy.idempotency_conflict_status",
        c"HTTP status for a reused idempotency key with a different request: 422 (default) or 409.",
        c"draft-ietf-httpapi-idempotency-key-header recommends 422; some clients expect 409.",
        &IDEMPOTENCY_CONFLICT_STATUS,
        409,
        422,
        GucContext::Suset,
        GucFlags::default(),
    );
    #[allow(unsafe_code)]
    unsafe {
        pgrx::pg_sys::MarkGUCPrefixReserved(c"tenancy".as_ptr());
    }
}
