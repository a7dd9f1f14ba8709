//! pg_tenancy: the pgrx glue. Rust here is thin: GUCs (`guc`), the context
//! readers that policies call (`context`) and its setter (`session`), the
//! RBAC cache (`rbac`), idempotency's settings (`idempotency`), rate-limit
//! counters in shared memory (`rate_limit`), reconciliation's reading of
//! relations (`reconcile`), and SQL files wired in with
//! `extension_sql_file!`. Catalog-heavy logic lives in `src/sql/*.sql`;
//! algorithms live in the pure crates `tenancy_matching` and
//! `tenancy_ratelimit`.

use pgrx::prelude::*;

mod cache;
mod citus_planner;
mod context;
mod distributed_calls;
mod error;
mod guc;
mod idempotency;
mod logins;
mod progress;
mod rate_limit;
mod rbac;
mod reconcile;
mod request;
mod session;
mod shared_writes;
mod shmem;
mod signed;
mod tenant_routing;
mod view_writes;

::pgrx::pg_module_magic!();

extension_sql_file!("sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("sql/errors.sql", name = "errors", requires = ["schema"]);
extension_sql_file!(
    "sql/tenants.sql",
    name = "tenants",
    requires = ["errors", session::set_context]
);
extension_sql_file!(
    "sql/context.sql",
    name = "context",
    requires = [
        "tenants",
        context::current_tenant_id,
        session::set_context,
        request::pre_request,
        cache::_changed
    ]
);
extension_sql_file!("sql/enable.sql", name = "enable", requires = ["context"]);
extension_sql_file!(
    "sql/check.sql",
    name = "check",
    requires = ["enable", "logins", "citus"]
);
extension_sql_file!(
    "sql/rbac.sql",
    name = "rbac",
    requires = [
        "context",
        rbac::has_permission,
        rbac::permitted,
        rbac::rbac_changed
    ]
);
extension_sql_file!(
    "sql/idempotency.sql",
    name = "idempotency",
    requires = [
        "context",
        idempotency::set_claimed_key,
        idempotency::claimed_key
    ]
);
extension_sql_file!(
    "sql/reconcile.sql",
    name = "reconcile",
    requires = [
        "rbac",
        session::set_context,
        reconcile::reconcile_relations,
        reconcile::rules::checked_rules,
        progress::running
    ]
);
extension_sql_file!(
    "sql/rate_limit.sql",
    name = "rate_limit",
    requires = ["context", rate_limit::rate_limit_take, cache::_changed]
);
extension_sql_file!(
    "sql/audit.sql",
    name = "audit",
    requires = ["rbac", "reconcile", "enable", context::current_user_id]
);
extension_sql_file!(
    "sql/logins.sql",
    name = "logins",
    requires = ["audit", cache::_changed, logins::acting_as]
);
extension_sql_file!(
    "sql/citus.sql",
    name = "citus",
    requires = ["logins", "rbac", "enable", guc::context_key_set]
);
extension_sql_file!("sql/privileges.sql", name = "privileges", finalize);

#[allow(non_snake_case)]
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::init();
    shared_writes::init();
    citus_planner::init();
    // SAFETY: a flag the postmaster sets while it loads preloaded libraries.
    #[allow(unsafe_code)]
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        static SEGMENTS: [&shmem::Segment; 2] = [&progress::SEGMENT, &rate_limit::SEGMENT];
        shmem::register(&SEGMENTS);
    }
}

/// The version of the extension's shared library (matches `extversion` after an update).
#[pg_extern(immutable, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // A small rate-limit table, so that a test can fill it.
        vec![
            "shared_preload_libraries = 'pg_tenancy'",
            "tenancy.rate_limit_keys = 1024",
        ]
    }
}
