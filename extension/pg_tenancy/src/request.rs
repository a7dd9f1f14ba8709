//! The work of `tenancy.pre_request()`, PostgREST's hook, on every HTTP
//! request: validate the verified JWT claims, check that the tenant is
//! active and the user a member, set the tenant and user for the request's
//! transaction, hand the user's grants to RBAC, and count the request
//! against its rate limit.
//!
//! What it looks up (tenant status, membership, grants, the tenant's
//! budget) is kept per backend, per (tenant, user), and dropped the moment
//! a change to those tables commits anywhere (`cache`). So a request that
//! starts after a revocation, a removal or a suspension commits never sees
//! the old answer, on any connection of the pool.
//!
//! The hook raises no error for a refusal: it returns the refusal (as
//! JSON), and `tenancy._raise_refusal()` raises it with the error catalog's
//! code and HTTP status (custom SQLSTATEs are raised from SQL). Only what no
//! client causes (rate limits without shared memory, an SPI failure) is
//! raised here.
//!
//! It runs as the API role, not as a SECURITY DEFINER function: see
//! `privileged` for the one read that needs more.

use crate::{cache, guc, logins, rate_limit, rbac};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use tenancy_ratelimit::Decision;

/// What a request of one user of one tenant needs to know.
struct Facts {
    /// None: no such tenant.
    tenant: Option<Tenant>,
}

struct Tenant {
    active: bool,
    member: bool,
    /// Parsed once, when read: every request of the user shares them.
    grants: rbac::Grants,
    requests: Option<i32>,
    window_seconds: Option<i32>,
    per_user: bool,
}

thread_local! {
    /// What was looked up, and in which generation of the tables (`cache`).
    static CACHE: RefCell<(u64, HashMap<(pgrx::Uuid, pgrx::Uuid), Rc<Facts>>)> =
        RefCell::new((0, HashMap::new()));
}

fn lookup(tenant: pgrx::Uuid, user: pgrx::Uuid) -> Rc<Facts> {
    let generation = cache::generation();
    let hit = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != generation {
            *c = (generation, HashMap::new());
        }
        c.1.get(&(tenant, user)).cloned()
    });
    if let Some(f) = hit {
        return f;
    }
    let facts = Rc::new(read(tenant, user));
    let limit = usize::try_from(guc::REQUEST_CACHE.get()).unwrap_or(0);
    // Not kept if a change arrived while it was read.
    if limit > 0 && cache::generation() == generation {
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.1.len() >= limit {
                c.1.clear();
            }
            c.1.insert((tenant, user), facts.clone());
        });
    }
    facts
}

fn read(tenant: pgrx::Uuid, user: pgrx::Uuid) -> Facts {
    let args = [DatumWithOid::from(tenant), DatumWithOid::from(user)];
    let read = privileged(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT active, member, grants, requests, window_seconds, per_user
             FROM tenancy._request_facts($1, $2)",
                Some(1),
                &args,
            )?;
            let mut found = None;
            for row in rows {
                found = Some(Tenant {
                    active: row.get(1)?.unwrap_or(false),
                    member: row.get(2)?.unwrap_or(false),
                    grants: rbac::grants(
                        row.get::<Vec<Option<String>>>(3)?
                            .unwrap_or_default()
                            .into_iter()
                            .flatten(),
                    ),
                    requests: row.get(4)?,
                    window_seconds: row.get(5)?,
                    per_user: row.get(6)?.unwrap_or(true),
                });
            }
            Ok::<_, pgrx::spi::SpiError>(Facts { tenant: found })
        })
    });
    read.unwrap_or_else(|e| crate::error::internal("reading the tenant of a request", e))
}

/// Runs `f` as the bootstrap superuser, then as the caller again.
///
/// The hook runs as the API role (`pre_request` is inlined into PostgREST's
/// statement, which a SECURITY DEFINER function never is), and
/// `tenancy._request_facts` — any tenant's status and members — is not that
/// role's to call. Only that call, on a cache miss, runs with the switch;
/// `_request_facts` itself is SECURITY DEFINER with a pinned search_path, so
/// the switch only lets it be called. An error inside aborts the
/// (sub)transaction, which restores the user as well.
fn privileged<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(pg_sys::Oid, i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: sets two backend globals back to what they were.
            #[allow(unsafe_code)]
            unsafe {
                pg_sys::SetUserIdAndSecContext(self.0, self.1);
            }
        }
    }
    let mut user = pg_sys::InvalidOid;
    let mut context = 0;
    // SAFETY: reads and sets backend globals, as fmgr does around a SECURITY
    // DEFINER function; `Restore` sets them back on return and on unwind.
    #[allow(unsafe_code)]
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
            context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let _restore = Restore(user, context);
    f()
}

/// A refusal, as `tenancy.pre_request()` raises it.
fn refuse(
    code: &str,
    message: &str,
    hint: Option<&str>,
    headers: &[(&str, String)],
) -> Option<String> {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| ((*k).to_string(), serde_json::Value::String(v.clone())))
        .collect();
    Some(
        serde_json::json!({"code": code, "message": message, "hint": hint, "headers": headers})
            .to_string(),
    )
}

/// A uuid written as `pre_request` always required: 8-4-4-4-12 hex digits.
fn uuid_claim(v: Option<&serde_json::Value>) -> Option<pgrx::Uuid> {
    // Of the forms the parser takes, only the hyphenated one is 36 long.
    let s = v?.as_str()?;
    (s.len() == 36)
        .then(|| crate::context::parse_uuid(s))
        .flatten()
}

/// `id` in the canonical form, written into `buf` (without `fmt`'s
/// machinery: this runs on every request).
fn hyphenated(id: pgrx::Uuid, buf: &mut [u8; 45]) -> &str {
    uuid::Uuid::from_bytes(*id.as_bytes())
        .hyphenated()
        .encode_lower(buf)
}

/// The request hook's work (see the module). NULL: go ahead; otherwise the
/// refusal as JSON (code, message, hint, headers) for `pre_request` to raise.
#[pg_extern(volatile, parallel_unsafe, name = "_pre_request")]
fn pre_request() -> Option<String> {
    cache::catch_up();
    let raw = guc::get(c"request.jwt.claims");
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return None; // no token: anonymous, no context (tenant-scoped tables stay closed)
    };
    let Ok(serde_json::Value::Object(claims)) = serde_json::from_str::<serde_json::Value>(&raw)
    else {
        return refuse(
            "TENANT_CLAIM_INVALID",
            "the token's claims are not a JSON object",
            None,
            &[],
        );
    };
    if claims.keys().all(|k| k == "role") {
        return None; // anonymous request: PostgREST passes only the anon role
    }
    if claims.get("type").and_then(|t| t.as_str()) != Some("access") {
        return refuse(
            "TOKEN_TYPE_INVALID",
            "the token is not an access token",
            Some(
                "Send an access token (claim \"type\": \"access\"), not a refresh or other token.",
            ),
            &[],
        );
    }
    if !claims.get("tenant_id").is_some_and(|t| t.is_string()) {
        return refuse(
            "TENANT_CLAIM_INVALID",
            "the token has no tenant_id claim",
            Some("The token must carry the tenant's id as a string claim \"tenant_id\"."),
            &[],
        );
    }
    let Some(tenant) = uuid_claim(claims.get("tenant_id")) else {
        return refuse(
            "TENANT_CLAIM_INVALID",
            "the token's tenant_id claim is not a uuid",
            None,
            &[],
        );
    };
    let Some(user) = uuid_claim(claims.get("sub")) else {
        return refuse(
            "SUBJECT_CLAIM_INVALID",
            "the token's sub claim is missing or not a uuid",
            None,
            &[],
        );
    };
    // PostgREST's own login is bound to no tenant. A database login bound to
    // tenants that calls the hook itself (after setting the claims it
    // likes) is refused: it must not become a user of any tenant.
    if let Some(login) = logins::session() {
        if !login.superuser && login.restricted {
            return refuse(
                "PERMISSION_DENIED",
                &format!("login \"{}\" is bound to tenants in SQL and cannot act as a user of the HTTP API", login.name),
                None,
                &[],
            );
        }
    }
    let facts = lookup(tenant, user);
    let t = match &facts.tenant {
        None => {
            return refuse(
                "TENANT_NOT_FOUND",
                "the token's tenant does not exist",
                None,
                &[],
            )
        }
        Some(t) if !t.active => {
            return refuse(
                "TENANT_SUSPENDED",
                "the token's tenant is suspended",
                None,
                &[],
            )
        }
        Some(t) if !t.member => {
            return refuse(
                "NOT_A_MEMBER",
                "the token's user has no role in this tenant",
                None,
                &[],
            )
        }
        Some(t) => t,
    };
    let mut buf = uuid::Uuid::encode_buffer();
    guc::set_local_as(guc::TENANT_ID, hyphenated(tenant, &mut buf), true);
    guc::set_local_as(guc::USER_ID, hyphenated(user, &mut buf), true);
    crate::tenant_routing::context_changed(Some(tenant));
    rbac::remember_grants(tenant, user, t.grants.clone());
    crate::signed::hand_on(Some(tenant), Some(user));
    // Counted only for members of an active tenant: 429 with Retry-After
    // over budget, X-RateLimit-* headers within it.
    let counted = t.per_user.then_some(user);
    match rate_limit::take(tenant, counted, t.requests, t.window_seconds) {
        None => None,
        Some(taken) => match taken.decision {
            Decision::Allowed {
                remaining,
                reset_in,
            } => {
                let headers = format!(
                    r#"[{{"X-RateLimit-Limit": "{}"}}, {{"X-RateLimit-Remaining": "{remaining}"}}, {{"X-RateLimit-Reset": "{reset_in}"}}]"#,
                    taken.budget
                );
                guc::set_local_as(c"response.headers", &headers, false);
                None
            }
            Decision::Limited { retry_after } => refuse(
                "RATE_LIMITED",
                &format!(
                    "rate limit exceeded: {} requests per {} seconds; retry in {retry_after} seconds",
                    taken.budget, taken.window
                ),
                Some("Wait for the Retry-After seconds, or ask the operator for a larger budget."),
                &[
                    ("Retry-After", retry_after.to_string()),
                    ("X-RateLimit-Limit", taken.budget.to_string()),
                    ("X-RateLimit-Remaining", "0".into()),
                    ("X-RateLimit-Reset", retry_after.to_string()),
                ],
            ),
        },
    }
}
