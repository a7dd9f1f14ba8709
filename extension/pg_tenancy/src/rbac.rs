//! `tenancy.has_permission`: the RBAC check that policies call.
//!
//! The current user's grants and the resource registry are loaded with SPI
//! at most once per transaction (and again only if the tenant, the user or
//! the RBAC tables change within it), then answered from memory. Policies call
//! it as an initPlan, so a statement costs one lookup in this cache, not one
//! per row.

use crate::context;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{function_name, PgLogLevel};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

const ANY: &str = "*";

struct Grants {
    key: (u32, pgrx::Uuid, pgrx::Uuid, u64),
    held: HashSet<(String, String)>,
    resources: HashMap<String, Vec<String>>,
}

thread_local! {
    static CACHE: RefCell<Option<Grants>> = const { RefCell::new(None) };
    static EPOCH: Cell<u64> = const { Cell::new(0) };
}

fn invalid(message: String, hint: &str) -> ! {
    ErrorReport::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message, function_name!())
        .set_hint(hint)
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

fn local_xid() -> u32 {
    #[allow(unsafe_code)]
    unsafe {
        (*pg_sys::MyProc).lxid
    }
}

fn load(key: (u32, pgrx::Uuid, pgrx::Uuid, u64)) -> Grants {
    Spi::connect(|client| {
        let mut held = HashSet::new();
        for row in client.select("SELECT resource, action FROM tenancy.current_grants()", None, &[])? {
            let resource: String = row.get(1)?.unwrap_or_default();
            let action: String = row.get(2)?.unwrap_or_default();
            held.insert((resource, action));
        }
        let mut resources = HashMap::new();
        for row in client.select("SELECT name, actions FROM tenancy.resources", None, &[])? {
            let name: String = row.get(1)?.unwrap_or_default();
            let actions: Vec<String> = row.get::<Vec<String>>(2)?.unwrap_or_default();
            resources.insert(name, actions);
        }
        Ok::<_, pgrx::spi::SpiError>(Grants { key, held, resources })
    })
    .unwrap_or_else(|e| panic!("loading permissions failed: {e}"))
}

fn check_name<'a>(kind: &str, value: Option<&'a str>) -> &'a str {
    match value {
        None => invalid(format!("{kind} must not be NULL"), "Name a resource and an action, e.g. ('invoices', 'read')."),
        Some(v) if v == ANY => v,
        Some(v) if tenancy_name_ok(v) => v,
        Some(v) => invalid(
            format!("invalid {kind} name \"{}\"", v.chars().take(100).collect::<String>()),
            "Names are 1 to 63 characters: lowercase letters, digits and \"_\", starting with a letter; or \"*\".",
        ),
    }
}

fn tenancy_name_ok(v: &str) -> bool {
    let mut chars = v.chars();
    matches!(chars.next(), Some('a'..='z'))
        && v.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// True if the current user holds `resource.action` in the current tenant.
/// A grant of `*` covers any resource or action; asking for `*` asks whether
/// the user holds the wildcard itself. Unknown names are an error (22023).
/// With no tenant it is false; with a tenant but no user (set_tenant: an
/// analyst or a job) it is true — those sessions are bounded by their
/// database role's grants instead.
#[pg_extern(stable, parallel_safe)]
fn has_permission(resource: Option<&str>, action: Option<&str>) -> bool {
    let resource = check_name("resource", resource);
    let action = check_name("action", action);
    let Some(tenant) = context::current_tenant_id() else {
        return false;
    };
    let user = context::current_user_id();
    let key = (local_xid(), tenant, user.unwrap_or(pgrx::Uuid::from_bytes([0; 16])), EPOCH.get());
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.as_ref().is_none_or(|g| g.key != key) {
            *cache = Some(load(key));
        }
        let grants = cache.as_ref().expect("just loaded");
        if resource != ANY {
            match grants.resources.get(resource) {
                None => invalid(
                    format!("unknown resource \"{resource}\""),
                    "Resources are registered by tenancy.protect(); see SELECT * FROM tenancy.resources;",
                ),
                Some(actions) if action != ANY && !actions.iter().any(|a| a == action) => invalid(
                    format!("unknown action \"{action}\" for resource \"{resource}\""),
                    &format!("Its actions: {}", actions.join(", ")),
                ),
                _ => {}
            }
        } else if action != ANY && !grants.resources.values().any(|acts| acts.iter().any(|a| a == action)) {
            invalid(format!("unknown action \"{action}\""), "See SELECT * FROM tenancy.resources;");
        }
        if user.is_none() {
            return true;
        }
        grants.held.iter().any(|(r, a)| (r == ANY || r == resource) && (a == ANY || a == action))
    })
}

/// Called by every function that changes roles, permissions or resources, so
/// the rest of the transaction sees the change.
#[pg_extern(volatile, parallel_unsafe, name = "_rbac_changed")]
fn rbac_changed() {
    EPOCH.set(EPOCH.get().wrapping_add(1));
}
