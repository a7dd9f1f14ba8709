//! The reference deployment sharded by tenant on Citus, started by
//! `scripts/test_citus` (a coordinator and two workers, PostgREST on the
//! coordinator). The single-node suites named below run unchanged against
//! it — the same endpoints must give the same answers — and `citus.rs`
//! checks what only a cluster has: where rows live, and the signed context
//! the workers get.

mod citus;
#[path = "../integration/http_isolation.rs"]
mod http_isolation;
#[path = "../integration/sql_context.rs"]
mod sql_context;
#[path = "../integration/rbac.rs"]
mod rbac;
#[path = "../integration/idempotency.rs"]
mod idempotency;
#[path = "../integration/audit.rs"]
mod audit;
