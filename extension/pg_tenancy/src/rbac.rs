//! `tenancy.has_permission`: the RBAC check that policies call.
//!
//! The current user's grants and the resource registry are loaded with SPI
//! at most once per transaction (and again only if the tenant, the user or
//! the RBAC tables change within it), then answered from memory. Policies call
//! it as an initPlan, so a statement costs one lookup in this cache, not one
//! per row.

use crate::{context, logins};
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

const ANY: &str = "*";

/// (transaction, tenant, user -- None for a database login --, epoch).
type Key = (u32, pgrx::Uuid, Option<pgrx::Uuid>, u64);

/// A user's (resource, action) grants.
pub type Grants = Rc<HashSet<(String, String)>>;

/// Grants from their 'resource.action' strings.
pub fn grants(strings: impl IntoIterator<Item = String>) -> Grants {
    Rc::new(
        strings
            .into_iter()
            .filter_map(|g| {
                g.split_once('.')
                    .map(|(r, a)| (r.to_string(), a.to_string()))
            })
            .collect(),
    )
}

thread_local! {
    /// The current user's grants, for one (transaction, tenant, user, epoch).
    static GRANTS: RefCell<Option<(Key, Grants)>> = const { RefCell::new(None) };
    /// The resource registry, for one (transaction, epoch).
    static RESOURCES: RefCell<Option<((u32, u64), HashMap<String, Vec<String>>)>> = const { RefCell::new(None) };
    static EPOCH: Cell<u64> = const { Cell::new(0) };
}

fn invalid(message: String, hint: &str) -> ! {
    crate::error::raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        hint,
    )
}

fn local_xid() -> u32 {
    #[allow(unsafe_code)]
    // SAFETY: MyProc is this backend's PGPROC, set before any SQL runs.
    unsafe {
        (*pg_sys::MyProc).lxid
    }
}

fn select_pairs(query: &str) -> Vec<(String, Vec<String>)> {
    let rows = Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(query, None, &[])? {
            let first: String = row.get(1)?.unwrap_or_default();
            let second: Vec<String> = row.get::<Vec<String>>(2)?.unwrap_or_default();
            out.push((first, second));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    });
    rows.unwrap_or_else(|e| {
        crate::error::raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("reading the RBAC tables failed: {e}"),
            "The tenancy schema's RBAC tables do not have the shape this version expects: run ALTER EXTENSION pg_tenancy UPDATE.",
        )
    })
}

/// The value `cache` holds for `key`, loaded with `load` when it holds
/// another key's or none.
fn cached<K: PartialEq, V, R>(
    cache: &RefCell<Option<(K, V)>>,
    key: K,
    load: impl FnOnce() -> V,
    read: impl FnOnce(&V) -> R,
) -> R {
    let mut cache = cache.borrow_mut();
    match cache.as_ref() {
        Some((k, v)) if *k == key => read(v),
        _ => {
            let v = load();
            let r = read(&v);
            *cache = Some((key, v));
            r
        }
    }
}

/// What the current context may do.
enum Scope {
    Grants(Grants),
    /// An SQL session not bound to the tenant: bounded by its database
    /// role's grants instead.
    All,
    Nothing,
}

/// The current context's grants, loaded once per (transaction, tenant,
/// user, epoch).
fn scope() -> Scope {
    let Some(tenant) = context::current_tenant_id() else {
        return Scope::Nothing;
    };
    let user = context::current_user_id();
    let query = match user {
        Some(_) => "SELECT resource, ARRAY[action] FROM tenancy.current_grants()",
        // A database login bound to the tenant acts as its binding's role;
        // other SQL sessions (set_tenant) are bounded by their database
        // role's grants. In a parallel worker the login is unknown: no.
        None => match logins::session() {
            Some(l) if l.role_in(tenant).is_some() => {
                "SELECT resource, ARRAY[action] FROM tenancy._login_grants(tenancy.current_tenant_id())"
            }
            Some(l) if !l.restricted => return Scope::All,
            _ => return Scope::Nothing,
        },
    };
    let key = (local_xid(), tenant, user, EPOCH.get());
    let load = || {
        Rc::new(
            select_pairs(query)
                .into_iter()
                .map(|(r, mut a)| (r, a.pop().unwrap_or_default()))
                .collect(),
        )
    };
    Scope::Grants(GRANTS.with(|cache| cached(cache, key, load, Rc::clone)))
}

/// Does the current user hold resource.action? No validation of the names:
/// this is the fast path for policies, whose names protect() validated. On a
/// Citus worker the coordinator's signed grants answer (`signed`).
fn held(resource: &str, action: &str) -> bool {
    if let Some(signed) = crate::signed::current() {
        return signed.context.holds(resource, action);
    }
    match scope() {
        Scope::Grants(grants) => grants
            .iter()
            .any(|(r, a)| (r == ANY || r == resource) && (a == ANY || a == action)),
        Scope::All => true,
        Scope::Nothing => false,
    }
}

/// The current context's grants as (resource, action) pairs, `*` for all:
/// what the coordinator signs for the workers.
pub fn grant_list() -> Vec<(String, String)> {
    match scope() {
        Scope::Grants(grants) => {
            let mut list: Vec<_> = grants.iter().cloned().collect();
            list.sort();
            list
        }
        Scope::All => vec![(ANY.to_string(), ANY.to_string())],
        Scope::Nothing => Vec::new(),
    }
}

/// Stores grants read by pre_request's own statement for this transaction.
pub fn remember_grants(tenant: pgrx::Uuid, user: pgrx::Uuid, held: Grants) {
    let key = (local_xid(), tenant, Some(user), EPOCH.get());
    GRANTS.with(|cache| *cache.borrow_mut() = Some((key, held)));
}

/// Errors unless resource.action names a registered resource and action.
fn validate(resource: &str, action: &str) {
    let key = (local_xid(), EPOCH.get());
    let load = || {
        select_pairs("SELECT name, actions FROM tenancy.resources")
            .into_iter()
            .collect()
    };
    RESOURCES.with(|cache| {
        cached(cache, key, load, |resources| {
            check(resources, resource, action)
        })
    })
}

fn check(resources: &HashMap<String, Vec<String>>, resource: &str, action: &str) {
    if resource != ANY {
        match resources.get(resource) {
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
    } else if action != ANY
        && !resources
            .values()
            .any(|acts| acts.iter().any(|a| a == action))
    {
        invalid(
            format!("unknown action \"{action}\""),
            "See SELECT * FROM tenancy.resources;",
        );
    }
}

fn check_name<'a>(kind: &str, value: Option<&'a str>) -> &'a str {
    match value {
        None => invalid(format!("{kind} must not be NULL"), "Name a resource and an action, e.g. ('invoices', 'read')."),
        Some(v) if v == ANY => v,
        Some(v) if name_ok(v) => v,
        Some(v) => invalid(
            format!("invalid {kind} name \"{}\"", v.chars().take(100).collect::<String>()),
            "Names are 1 to 63 characters: lowercase letters, digits and \"_\", starting with a letter; or \"*\".",
        ),
    }
}

fn name_ok(v: &str) -> bool {
    let mut chars = v.chars();
    matches!(chars.next(), Some('a'..='z'))
        && v.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// True if the current user holds `resource.action` in the current tenant.
/// A grant of `*` covers any resource or action; asking for `*` asks whether
/// the user holds the wildcard itself. Unknown names are an error (22023).
/// With no tenant it is false; with a tenant but no user, a database login
/// bound to the tenant holds its binding's role, and other SQL sessions
/// (set_tenant: an analyst or a job) true: those are bounded by their
/// database role's grants instead.
#[pg_extern(stable, parallel_safe)]
fn has_permission(resource: Option<&str>, action: Option<&str>) -> bool {
    let resource = check_name("resource", resource);
    let action = check_name("action", action);
    if context::current_tenant_id().is_none() {
        return false;
    }
    validate(resource, action);
    held(resource, action)
}

/// The policies' fast path: like has_permission, without re-validating names
/// that tenancy.protect() checked when it wrote the policy.
#[pg_extern(stable, parallel_safe, name = "_permitted")]
fn permitted(resource: &str, action: &str) -> bool {
    held(resource, action)
}

/// Called by every function that changes roles, permissions or resources, so
/// the rest of the transaction sees the change.
#[pg_extern(volatile, parallel_unsafe, name = "_rbac_changed")]
fn rbac_changed() {
    EPOCH.set(EPOCH.get().wrapping_add(1));
}
