//! Integration tests against the real stack started by `scripts/test`.
//! One binary, one module per area.

mod audit;
mod dba;
mod docker_files;
mod http_isolation;
mod http_tokens;
mod idempotency;
mod linter;
mod rate_limits;
mod rbac;
mod reconcile;
mod reconcile_scale;
mod sql_context;
mod sql_logins;
