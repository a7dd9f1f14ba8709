//! The tenant context on Citus workers.
//!
//! On one node the context lives in superuser-only settings that only the
//! extension's code sets. Citus runs a statement's shards on other nodes, in
//! connections of the current role, and carries nothing there but `SET
//! LOCAL` statements. So when `tenancy.context_key` is set, the coordinator
//! also signs what a worker needs — tenant, user, the role a SQL login acts
//! as, the grants, and for its audit entries the login and the HTTP request's
//! path and id — into `tenancy.context` with `SET LOCAL`, which Citus
//! forwards; a worker believes that line only with a valid signature of the
//! shared key, in a connection opened for the backend that signed it (Citus'
//! global process id), and within `tenancy.context_lifetime`. The line is hidden from
//! non-superusers, and a line anyone writes by hand is refused, never
//! believed. The format is `tenancy_signed_context`'s.

use crate::guc;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;
use tenancy_signed_context::Context;

/// A verified context, with its ids parsed once.
pub struct Signed {
    pub context: Context,
    pub tenant: pgrx::Uuid,
    pub user: Option<pgrx::Uuid>,
}

thread_local! {
    /// The last line verified in this backend (a worker serves one
    /// transaction's line many times: once per row a policy checks).
    static VERIFIED: RefCell<Option<(Vec<u8>, Vec<u8>, String, Rc<Signed>)>> = const { RefCell::new(None) };
    /// This backend's global process id (Citus'), once read.
    static GPID: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The origin this backend signs with: its global process id, which Citus
/// puts into the application name of every connection it opens for it
/// (and of those opened from there in turn); empty without Citus.
/// Only a gpid read is kept: a backend that started before Citus was set up
/// in its database reads it again once it is.
fn own_origin() -> String {
    if let Some(gpid) = GPID.with(|g| g.borrow().clone()) {
        return gpid;
    }
    if !guc::citus_loaded() {
        return String::new();
    }
    let exists = Spi::get_one::<bool>(
        "SELECT pg_catalog.to_regprocedure('pg_catalog.citus_backend_gpid()') IS NOT NULL",
    );
    if exists != Ok(Some(true)) {
        return String::new();
    }
    match Spi::get_one::<i64>("SELECT pg_catalog.citus_backend_gpid()") {
        Ok(Some(gpid)) => {
            let gpid = gpid.to_string();
            GPID.with(|g| *g.borrow_mut() = Some(gpid.clone()));
            gpid
        }
        Ok(None) => String::new(),
        Err(e) => crate::error::internal("reading citus_backend_gpid()", e),
    }
}

/// The origin a line must carry to be believed here: the global process id
/// in the application name this connection was opened with (its reset
/// value: a SET, forwarded or not, cannot change it), empty for a
/// connection Citus did not open. Read once per backend.
fn connection_origin() -> String {
    thread_local! {
        static ORIGIN: std::cell::OnceCell<String> = const { std::cell::OnceCell::new() };
    }
    ORIGIN.with(|o| o.get_or_init(read_connection_origin).clone())
}

fn read_connection_origin() -> String {
    #[allow(unsafe_code)]
    // SAFETY: a NUL-terminated name of a built-in setting; the returned
    // string is the setting's own, copied at once.
    let reset = unsafe {
        let p = pg_sys::GetConfigOptionResetString(c"application_name".as_ptr());
        (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
    };
    reset
        .as_deref()
        .and_then(|a| a.strip_prefix("citus_internal gpid="))
        .filter(|gpid| !gpid.is_empty() && gpid.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_default()
        .to_string()
}

fn key() -> Option<Vec<u8>> {
    guc::context_key()
}

/// Unix seconds of a Postgres timestamp.
fn unix(ts: pg_sys::TimestampTz) -> i64 {
    const EPOCH_2000: i64 = 946_684_800;
    ts.div_euclid(1_000_000) + EPOCH_2000
}

/// On the coordinator, right after the context was set (or cleared): hands
/// it to the workers this transaction will use. Nothing without a key.
pub fn hand_on(tenant: Option<pgrx::Uuid>, user: Option<pgrx::Uuid>) {
    let Some(key) = key() else {
        return;
    };
    let line = match tenant {
        None => String::new(),
        Some(tenant) => {
            #[allow(unsafe_code)]
            // SAFETY: reads the clock.
            let now = unix(unsafe { pg_sys::GetCurrentTimestamp() });
            let context = Context {
                tenant: tenant.to_string(),
                user: user.map(|u| u.to_string()).unwrap_or_default(),
                acting_as: crate::logins::acting_as().unwrap_or_default(),
                login: session_login(),
                issued: now,
                origin: own_origin(),
                path: request_path(),
                request_id: request_id(),
                grants: crate::rbac::grant_list(),
            };
            context.sign(&key).unwrap_or_else(|| {
                crate::error::raise(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    "the context cannot be signed: a role or resource name holds a reserved character",
                    "Role and resource names are lowercase letters, digits and \"_\".",
                )
            })
        }
    };
    // Citus forwards SET LOCAL only when asked to; for this transaction.
    if guc::citus_loaded() {
        guc::set_local(c"citus.propagate_set_commands", "local");
    }
    // A statement (not set_config), so that Citus' utility hook sees it. The
    // line holds no quote: sign() refuses one.
    if let Err(e) = Spi::run(&format!("SET LOCAL tenancy.context = '{line}'")) {
        crate::error::internal("setting tenancy.context", e);
    }
    // Inside a PostgREST request, errors a worker raises take PostgREST's
    // form too (tenancy.raise_error reads request.method). One statement
    // each: Citus forwards a SET's whole query string.
    let method = guc::get(c"request.method").unwrap_or_default();
    if !method.is_empty() && method.bytes().all(|b| b.is_ascii_alphabetic()) {
        if let Err(e) = Spi::run(&format!("SET LOCAL request.method = '{method}'")) {
            crate::error::internal("setting request.method", e);
        }
    }
}

/// The session's login (`session_user`).
fn session_login() -> String {
    #[allow(unsafe_code)]
    // SAFETY: the session user's role exists for the whole session; the
    // name is palloc'd and copied at once.
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetSessionUserId(), false);
        std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}

/// The HTTP request's path (PostgREST's `request.path`); empty outside one.
fn request_path() -> String {
    guc::get(c"request.path").unwrap_or_default()
}

/// The HTTP request's X-Request-Id as the audit log keeps it (its first 200
/// characters); empty outside a request or without one.
fn request_id() -> String {
    let Some(headers) = guc::get(c"request.headers").filter(|h| h.contains("\"x-request-id\"")) else {
        return String::new();
    };
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&headers)
        .ok()
        .and_then(|h| h.get("x-request-id")?.as_str().map(|id| id.chars().take(200).collect()))
        .unwrap_or_default()
}

/// For the audit trigger: who is behind the statement — the login, the
/// HTTP request's path and its X-Request-Id. This session's own, or on a
/// Citus worker the coordinator session's, from the verified line (the
/// worker's connection runs as the current role, outside the request).
/// Empty values are NULL.
#[pg_extern(stable, parallel_safe, name = "_request_source")]
pub fn request_source() -> Vec<Option<String>> {
    let [login, path, id] = match current() {
        Some(signed) => {
            let c = &signed.context;
            [c.login.clone(), c.path.clone(), c.request_id.clone()]
        }
        None => [session_login(), request_path(), request_id()],
    };
    [login, path, id].map(|f| Some(f).filter(|f| !f.is_empty())).to_vec()
}

/// On a worker (or wherever this node's own context is unset): the verified
/// signed context, None when there is none, and an error when the line is
/// not one this cluster signed or is too old — never a guess.
pub fn current() -> Option<Rc<Signed>> {
    if guc::TENANT
        .get()
        .is_some_and(|t| !t.to_bytes().trim_ascii().is_empty())
    {
        return None;
    }
    let line = guc::SIGNED_CONTEXT.get()?;
    let bytes = line.to_bytes();
    if bytes.trim_ascii().is_empty() {
        return None;
    }
    #[allow(unsafe_code)]
    // SAFETY: read this backend's transaction start time and the clock.
    let (started, now) = unsafe {
        (
            unix(pg_sys::GetCurrentTransactionStartTimestamp()),
            unix(pg_sys::GetCurrentTimestamp()),
        )
    };
    let lifetime = i64::from(guc::CONTEXT_LIFETIME.get());
    let key = key().unwrap_or_default();
    // Cached by line, key and origin: a new key (reloaded) checks every line
    // again.
    let origin = connection_origin();
    let cached = VERIFIED.with(|v| {
        v.borrow()
            .as_ref()
            .filter(|(l, k, o, _)| l == bytes && *k == key && *o == origin)
            .map(|(_, _, _, s)| s.clone())
    });
    let signed = match cached {
        Some(s) => s,
        None => {
            let text = std::str::from_utf8(bytes).unwrap_or_default();
            let context = Context::verify(text, &key, &origin, now, started, lifetime)
                .unwrap_or_else(|r| refuse(&r.to_string()));
            let (Some(tenant), user) = (
                crate::context::parse_uuid(&context.tenant),
                crate::context::parse_uuid(&context.user),
            ) else {
                refuse("its tenant is not a uuid")
            };
            let s = Rc::new(Signed {
                context,
                tenant,
                user,
            });
            VERIFIED.with(|v| *v.borrow_mut() = Some((bytes.to_vec(), key, origin, s.clone())));
            s
        }
    };
    // The age again on every use: the same line in a later transaction is
    // judged by that transaction's start.
    let age = started - signed.context.issued;
    if age > lifetime {
        refuse(&format!("it was signed {age} s ago, longer than its lifetime"));
    }
    Some(signed)
}

/// True in a connection Citus opened to run part of another node's
/// statement (Citus names them so, and treats them so itself).
pub fn citus_internal() -> bool {
    guc::citus_loaded()
        && guc::get(c"application_name").is_some_and(|a| a.starts_with("citus_internal"))
}

fn refuse(why: &str) -> ! {
    crate::error::raise(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("the tenant context tenancy.context was refused: {why}"),
        "The coordinator sets it (tenancy.set_tenant, tenancy.pre_request) and every node needs the same tenancy.context_key; in a long transaction, call tenancy.set_tenant again.",
    )
}
