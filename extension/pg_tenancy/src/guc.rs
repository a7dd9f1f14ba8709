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

pub static TENANT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static USER: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

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
    #[allow(unsafe_code)]
    unsafe {
        pgrx::pg_sys::MarkGUCPrefixReserved(c"tenancy".as_ptr());
    }
}
