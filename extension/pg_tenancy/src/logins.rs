//! Database logins bound to their tenants (`src/sql/logins.sql`).
//!
//! A login (the session's `session_user`) that a DBA bound to tenants with
//! `tenancy.grant_sql_access` may enter those tenants only, acting as the
//! RBAC role of each binding; a login bound to exactly one tenant is in it
//! without calling `set_tenant` (BI tools run each statement on its own). A
//! login bound to none may enter any tenant only if it is a member of a
//! role a DBA registered with `tenancy.grant_all_tenants` (the platform's
//! analysts, the scheduled jobs). Superusers are not checked: they bypass
//! row level security anyway.
//!
//! What the session's login is bound to is kept per backend and dropped
//! when a change commits (`cache`).

use crate::cache;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;

/// The bindings of this session's login.
pub struct Login {
    pub name: String,
    /// (tenant, its slug, the RBAC role the login acts as there), for the
    /// active tenants it is bound to.
    pub bound: Vec<(pgrx::Uuid, String, String)>,
    /// Bound to any tenant, active or not: it enters no other.
    pub restricted: bool,
    /// Member of a role registered with `tenancy.grant_all_tenants`.
    pub all_tenants: bool,
    pub superuser: bool,
}

impl Login {
    /// The RBAC role of the binding to `tenant`, if the login has one.
    pub fn role_in(&self, tenant: pgrx::Uuid) -> Option<&str> {
        self.bound
            .iter()
            .find(|(t, _, _)| *t == tenant)
            .map(|(_, _, r)| r.as_str())
    }

    /// The one tenant of a login bound to exactly one.
    pub fn only_tenant(&self) -> Option<pgrx::Uuid> {
        match self.bound.as_slice() {
            [(t, _, _)] => Some(*t),
            _ => None,
        }
    }

    fn slugs(&self) -> String {
        let slugs: Vec<&str> = self.bound.iter().map(|(_, s, _)| s.as_str()).collect();
        if slugs.is_empty() {
            return "no active tenant".to_string();
        }
        slugs.join(", ")
    }

    /// Errors unless this login may enter `tenant` from SQL (`slug` names
    /// it in the message).
    pub fn check_entry(&self, tenant: pgrx::Uuid, slug: impl Fn() -> String) {
        if self.superuser
            || self.role_in(tenant).is_some()
            || (self.all_tenants && !self.restricted)
        {
            return;
        }
        let slug = slug();
        if self.restricted {
            crate::error::raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("login \"{}\" is not bound to tenant \"{slug}\"", self.name),
                &format!(
                    "It may enter: {}. A DBA binds it with SELECT tenancy.grant_sql_access('{}', '{slug}', 'readonly');",
                    self.slugs(),
                    self.name
                ),
            );
        }
        if !self.all_tenants {
            crate::error::raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!(
                    "login \"{}\" may not enter tenant \"{slug}\": it is bound to no tenant and may not enter every tenant",
                    self.name
                ),
                &format!(
                    "A DBA binds it with SELECT tenancy.grant_sql_access('{}', '{slug}', 'readonly'); or lets it enter every tenant with SELECT tenancy.grant_all_tenants('{}');",
                    self.name, self.name
                ),
            );
        }
    }
}

thread_local! {
    /// The bindings read, for which session user, in which generation.
    static SESSION: RefCell<Option<(u64, pg_sys::Oid, Rc<Login>)>> = const { RefCell::new(None) };
}

/// This session's login and its bindings. None in a parallel worker, where
/// they are not read: callers fail closed there.
pub fn session() -> Option<Rc<Login>> {
    // SAFETY: reads backend globals.
    #[allow(unsafe_code)]
    let (worker, user) = unsafe {
        (
            pg_sys::ParallelWorkerNumber >= 0,
            pg_sys::GetSessionUserId(),
        )
    };
    if worker {
        return None;
    }
    let generation = cache::generation();
    if let Some(l) = SESSION.with(|s| {
        s.borrow()
            .as_ref()
            .filter(|(g, u, _)| *g == generation && *u == user)
            .map(|(_, _, l)| l.clone())
    }) {
        return Some(l);
    }
    let login = Rc::new(read());
    if cache::generation() == generation {
        SESSION.with(|s| *s.borrow_mut() = Some((generation, user, login.clone())));
    }
    Some(login)
}

fn read() -> Login {
    let read = Spi::connect(|client| {
        let mut login = Login {
            name: String::new(),
            bound: Vec::new(),
            restricted: false,
            all_tenants: false,
            superuser: false,
        };
        let rows = client.select(
            "SELECT login, superuser, all_tenants, tenant_id, slug, role, active FROM tenancy._login_bindings()",
            None,
            &[],
        )?;
        for row in rows {
            login.name = row.get(1)?.unwrap_or_default();
            login.superuser = row.get(2)?.unwrap_or(false);
            login.all_tenants = row.get(3)?.unwrap_or(false);
            if let (Some(t), Some(slug), Some(role), Some(active)) = (
                row.get::<pgrx::Uuid>(4)?,
                row.get::<String>(5)?,
                row.get::<String>(6)?,
                row.get::<bool>(7)?,
            ) {
                login.restricted = true;
                if active {
                    login.bound.push((t, slug, role));
                }
            }
        }
        Ok::<_, pgrx::spi::SpiError>(login)
    });
    read.unwrap_or_else(|e| crate::error::internal("reading the bindings of this login", e))
}

/// Errors if this login is bound to tenants: such a login acts as its
/// bindings' roles, never as a user of a tenant (which would take that
/// user's rights).
pub fn refuse_user(login: &Login) {
    if login.restricted && !login.superuser {
        crate::error::raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("login \"{}\" is bound to tenants in SQL and cannot act as a user of a tenant", login.name),
            "A bound login acts as the RBAC role of its binding: change it with tenancy.grant_sql_access().",
        );
    }
}

/// The slug of `tenant`, for messages: read when running as the
/// extension's owner (inside `set_tenant`), else the id as given.
pub fn slug(tenant: pgrx::Uuid) -> String {
    // SAFETY: reads the current user's attribute.
    #[allow(unsafe_code)]
    let owner = unsafe { pg_sys::superuser() };
    let found = if owner {
        Spi::get_one_with_args::<String>(
            "SELECT slug FROM tenancy.tenants WHERE id = $1",
            &[DatumWithOid::from(tenant)],
        )
        .ok()
        .flatten()
    } else {
        None
    };
    found.unwrap_or_else(|| tenant.to_string())
}

/// The RBAC role this session's login acts as in the current tenant, for
/// the audit trail: NULL over HTTP (the actor is the token's user) and for
/// logins not bound to the tenant.
#[pg_extern(stable, parallel_safe, name = "_acting_as")]
pub fn acting_as() -> Option<String> {
    if let Some(signed) = crate::signed::current() {
        return Some(signed.context.acting_as.clone()).filter(|a| !a.is_empty());
    }
    if crate::context::current_user_id().is_some() {
        return None;
    }
    let tenant = crate::context::current_tenant_id()?;
    session()?.role_in(tenant).map(str::to_string)
}
