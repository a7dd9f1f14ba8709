//! Every GUC of the extension, under the reserved `tenancy.` prefix.
//!
//! `tenancy.tenant_id` and `tenancy.user_id` hold the request context. They are
//! `PGC_SUSET`: only superuser code — the extension's SECURITY DEFINER
//! functions (`set_tenant`, `pre_request`) — can set them, so an API role can
//! never `set_config('tenancy.tenant_id', …)` its way into another tenant.
//! The prefix is reserved, so a typo such as `tenancy.tenantid` is an error
//! instead of a silently ignored placeholder.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::{pg_guard, pg_sys, PgLogLevel, PgSqlErrorCode};
use std::ffi::{CStr, CString};

/// The names of the settings the extension sets itself, transaction-locally.
pub const TENANT_ID: &CStr = c"tenancy.tenant_id";
pub const USER_ID: &CStr = c"tenancy.user_id";
pub const IDEMPOTENCY_KEY: &CStr = c"tenancy.idempotency_key";

pub static TENANT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static USER: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static CLAIMED_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static IDEMPOTENCY_TTL: GucSetting<i32> = GucSetting::<i32>::new(86_400);
pub static IDEMPOTENCY_CONFLICT_STATUS: GucSetting<i32> = GucSetting::<i32>::new(422);
pub static RATE_LIMIT: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static RATE_LIMIT_REQUESTS: GucSetting<i32> = GucSetting::<i32>::new(1_000);
pub static RATE_LIMIT_WINDOW: GucSetting<i32> = GucSetting::<i32>::new(3_600);
pub static AUDIT_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(7 * 365 + 2);
pub static AUDIT_MAINTENANCE: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Slots of the rate-limit table (sized at server start).
pub static RATE_LIMIT_KEYS: GucSetting<i32> = GucSetting::<i32>::new(262_144);
/// (tenant, user) entries each backend keeps of what pre_request looked up.
pub static REQUEST_CACHE: GucSetting<i32> = GucSetting::<i32>::new(10_000);
/// The signed context Citus carries to workers (`signed.rs`).
pub const CONTEXT: &CStr = c"tenancy.context";
pub static SIGNED_CONTEXT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// The key every node of a Citus cluster shares; empty: single node.
/// Defined by hand (not through GucRegistry) for its show hook: GUC flags
/// only hide a value from roles without pg_read_all_settings, and anyone
/// who reads the key can sign any tenant's context.
static mut CONTEXT_KEY: *mut std::ffi::c_char = std::ptr::null_mut();
pub static CONTEXT_LIFETIME: GucSetting<i32> = GucSetting::<i32>::new(600);
/// kB; 256 MB.
pub static RECONCILE_MEMORY: GucSetting<i32> = GucSetting::<i32>::new(256 * 1024);

pub fn init() {
    GucRegistry::define_string_guc(
        TENANT_ID,
        c"Tenant of the current transaction (set by tenancy.set_tenant or tenancy.pre_request).",
        c"Transaction-local; empty means no tenant. Only the extension's own functions may set it.",
        &TENANT,
        GucContext::Suset,
        GucFlags::DISALLOW_IN_FILE,
    );
    GucRegistry::define_string_guc(
        USER_ID,
        c"User (JWT sub) of the current transaction.",
        c"Transaction-local; empty means no user. Only the extension's own functions may set it.",
        &USER,
        GucContext::Suset,
        GucFlags::DISALLOW_IN_FILE,
    );
    GucRegistry::define_string_guc(
        IDEMPOTENCY_KEY,
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
    GucRegistry::define_bool_guc(
        c"tenancy.rate_limit",
        c"Whether tenancy.pre_request() counts requests against per-tenant budgets (default on).",
        c"Budgets: tenancy.rate_limits per tenant, else tenancy.rate_limit_requests per tenancy.rate_limit_window.",
        &RATE_LIMIT,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenancy.rate_limit_requests",
        c"Requests per window for tenants without a row in tenancy.rate_limits (default 1000).",
        c"Counted per user of a tenant; over budget, PostgREST answers 429 with Retry-After.",
        &RATE_LIMIT_REQUESTS,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenancy.rate_limit_window",
        c"Length of a rate-limit window for tenants without a row in tenancy.rate_limits (default 1 h).",
        c"A window starts with a key's first request.",
        &RATE_LIMIT_WINDOW,
        1,
        31 * 86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"tenancy.audit_retention",
        c"How long audit log entries are kept, in days (default 7 years).",
        c"tenancy.audit_maintain() drops monthly partitions that lie wholly before now() minus this.",
        &AUDIT_RETENTION,
        1,
        100 * 366,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"tenancy.audit_maintenance",
        c"Set only inside tenancy.audit_maintain(): lets it move rows out of the default partition.",
        c"Everyone else, owners included, gets an error on UPDATE or DELETE of tenancy.audit_log.",
        &AUDIT_MAINTENANCE,
        GucContext::Suset,
        GucFlags::DISALLOW_IN_FILE,
    );
    GucRegistry::define_int_guc(
        c"tenancy.rate_limit_keys",
        c"How many keys (users, or tenants as a whole) the rate-limit counters hold (default 262144).",
        c"48 bytes each, in shared memory sized at server start. When the keys near a new one all hold live windows, the window nearest its end is recycled: nobody is refused.",
        &RATE_LIMIT_KEYS,
        1024,
        i32::MAX / 64,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenancy.request_cache",
        c"How many (tenant, user) lookups of tenancy.pre_request() each backend keeps (default 10000; 0: none).",
        c"Dropped as soon as a change to tenants, roles, permissions, members or rate limits commits; when full, emptied.",
        &REQUEST_CACHE,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenancy.reconcile_memory",
        c"Memory one tenancy.reconcile call may hold for its open items (default 256 MB).",
        c"Larger open sets are matched in windows of payment days that fit; a single day that does not fit is an error naming this setting.",
        &RECONCILE_MEMORY,
        1024,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_string_guc(
        CONTEXT,
        c"The current transaction's context, signed by the coordinator for Citus workers.",
        c"Set by tenancy.set_tenant() and tenancy.pre_request() when tenancy.context_key is set; a worker believes it only with a valid signature. Hidden from non-superusers.",
        &SIGNED_CONTEXT,
        GucContext::Userset,
        GucFlags::SUPERUSER_ONLY | GucFlags::DISALLOW_IN_FILE,
    );
    #[allow(unsafe_code)]
    // SAFETY: called once from _PG_init; the name and texts are static, and
    // the variable is a static Postgres owns the string of from then on.
    unsafe {
        pg_sys::DefineCustomStringVariable(
            c"tenancy.context_key".as_ptr(),
            c"Secret that signs the context the coordinator hands to Citus workers (empty: single node).".as_ptr(),
            c"The same value on every node, at least 32 characters, in postgresql.conf. Nobody can read it back: SHOW answers whether it is set.".as_ptr(),
            &raw mut CONTEXT_KEY,
            c"".as_ptr(),
            pg_sys::GucContext::PGC_SIGHUP,
            pg_sys::GUC_SUPERUSER_ONLY as i32,
            None,
            None,
            Some(show_context_key),
        );
    }
    GucRegistry::define_int_guc(
        c"tenancy.context_lifetime",
        c"How long after tenancy.set_tenant() or pre_request() a transaction on a worker may begin with the signed context (default 10 min).",
        c"A worker connection first used later in the same transaction is refused; set the tenant again. Shorter limits how long a captured line could be replayed.",
        &CONTEXT_LIFETIME,
        10,
        7 * 86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    #[allow(unsafe_code)]
    // SAFETY: called once from _PG_init, with a NUL-terminated static string.
    unsafe {
        pg_sys::MarkGUCPrefixReserved(c"tenancy".as_ptr());
    }
}

/// What SHOW, current_setting() and pg_settings say of the key, to anyone.
#[allow(unsafe_code)]
#[pg_guard]
unsafe extern "C-unwind" fn show_context_key() -> *const std::ffi::c_char {
    if context_key().is_some() {
        c"(set; not shown)".as_ptr()
    } else {
        c"".as_ptr()
    }
}

/// The shared key of a Citus cluster, None when not set.
pub fn context_key() -> Option<Vec<u8>> {
    #[allow(unsafe_code)]
    // SAFETY: the GUC machinery keeps the variable a valid C string (or
    // NULL before it is defined); it is copied before anything can change it.
    unsafe {
        let p = CONTEXT_KEY;
        if p.is_null() {
            return None;
        }
        let key = CStr::from_ptr(p).to_bytes();
        (!key.is_empty()).then(|| key.to_vec())
    }
}

/// Whether this node has the key (for the SQL side, which cannot read it).
#[pgrx::pg_extern(stable, parallel_safe, name = "_context_key_set")]
fn context_key_set() -> bool {
    context_key().is_some()
}

thread_local! {
    static CITUS: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Whether Citus is loaded in this server (preloaded before pg_tenancy, so
/// fixed once a backend starts).
pub fn citus_loaded() -> bool {
    CITUS.with(|c| {
        *c.get()
            .get_or_insert_with(|| get(c"citus.propagate_set_commands").is_some())
    })
}

/// The value of any setting, None when it does not exist.
pub fn get(name: &CStr) -> Option<String> {
    #[allow(unsafe_code)]
    // SAFETY: a NUL-terminated name; missing_ok returns NULL instead of
    // raising; the value is copied before anything can change it.
    unsafe {
        let p = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}

/// Sets `name` to `value` for the rest of the current transaction, as
/// `set_config(name, value, true)` does: Postgres itself refuses the
/// superuser-only settings to a caller not running with superuser rights.
pub fn set_local(name: &CStr, value: &str) {
    // SAFETY: reads the current user's attribute.
    #[allow(unsafe_code)]
    let superuser = unsafe { pg_sys::superuser() };
    set_local_as(name, value, superuser);
}

/// `set_local` of a superuser-only setting by the extension's own code
/// after it has checked who may have it set (the request hook, once it has
/// validated the token): `trusted` sets it whoever the caller is.
pub fn set_local_as(name: &CStr, value: &str, trusted: bool) {
    set(name, value, trusted, pg_sys::GucAction::GUC_ACTION_LOCAL);
}

/// Sets an ordinary setting until the GUC nest level the caller opened with
/// `NewGUCNestLevel` is closed with `AtEOXact_GUC` (a function's SET
/// clause).
pub fn set_in_level(name: &CStr, value: &str) {
    set(name, value, false, pg_sys::GucAction::GUC_ACTION_SAVE);
}

fn set(name: &CStr, value: &str, trusted: bool, action: pg_sys::GucAction::Type) {
    let Ok(value) = CString::new(value) else {
        crate::error::raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "the value for {} contains a NUL byte",
                name.to_string_lossy()
            ),
            "Pass text without NUL bytes.",
        );
    };
    #[allow(unsafe_code)]
    // SAFETY: both strings are NUL-terminated and outlive the call, which
    // copies them; on failure it raises an ERROR (elevel ERROR), which pgrx
    // turns into a Rust panic that unwinds to the function's boundary.
    unsafe {
        let context = if trusted {
            pg_sys::GucContext::PGC_SUSET
        } else {
            pg_sys::GucContext::PGC_USERSET
        };
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            context,
            pg_sys::GucSource::PGC_S_SESSION,
            action,
            true,
            PgLogLevel::ERROR as i32,
            false,
        );
    }
}
