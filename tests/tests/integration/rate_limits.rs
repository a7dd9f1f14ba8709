//! Per-tenant rate limits through the real PostgREST: headers within budget,
//! 429 with Retry-After over it, exact counts under parallel clients, one
//! tenant over its limit leaving the others alone, settings validated.

use integration::*;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

async fn set_limit(t: &Tenant, requests: i32, window: &str, per_user: bool) {
    sqlx::query("SELECT tenancy.set_rate_limit($1, $2, $3::interval, $4)")
        .bind(&t.slug)
        .bind(requests)
        .bind(window)
        .bind(per_user)
        .execute(&admin().await)
        .await
        .unwrap();
}

fn header(r: &Reply, name: &str) -> i64 {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header: {r:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number: {r:?}"))
}

#[tokio::test]
async fn within_budget_headers_then_429_with_retry_after() {
    let t = new_tenant(&admin().await).await;
    set_limit(&t, 3, "1 hour", true).await;
    let tok = token(t.id, t.admin);
    let api = Api::new();
    for remaining in [2, 1, 0] {
        let r = api.get("/invoices", Some(&tok)).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(header(&r, "x-ratelimit-limit"), 3);
        assert_eq!(header(&r, "x-ratelimit-remaining"), remaining);
        let reset = header(&r, "x-ratelimit-reset");
        assert!((1..=3600).contains(&reset), "{reset}");
    }
    let r = api.get("/invoices", Some(&tok)).await;
    r.assert_error(429, "RATE_LIMITED");
    assert_eq!(
        r.message().split(';').next().unwrap(),
        "rate limit exceeded: 3 requests per 3600 seconds"
    );
    let retry = header(&r, "retry-after");
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(header(&r, "x-ratelimit-remaining"), 0);
    // RPCs count too, and the budget is per user: the member is untouched.
    api.send(
        Method::POST,
        "/rpc/my_permissions",
        Some(&tok),
        &[],
        Some(&json!({})),
    )
    .await
    .assert_error(429, "RATE_LIMITED");
    let r = api.get("/invoices", Some(&token(t.id, t.member))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(header(&r, "x-ratelimit-remaining"), 2);
    // Back to the default budget: the next request starts a fresh count.
    sqlx::query("SELECT tenancy.set_rate_limit($1, NULL)")
        .bind(&t.slug)
        .execute(&admin().await)
        .await
        .unwrap();
    let r = api.get("/invoices", Some(&token(t.id, t.readonly))).await;
    assert_eq!(header(&r, "x-ratelimit-limit"), 1000, "{r:?}");
}

#[tokio::test]
async fn a_window_ends_and_the_budget_returns() {
    let t = new_tenant(&admin().await).await;
    set_limit(&t, 1, "2 seconds", true).await;
    let tok = token(t.id, t.admin);
    let api = Api::new();
    assert_eq!(api.get("/invoices", Some(&tok)).await.status, 200);
    let r = api.get("/invoices", Some(&tok)).await;
    r.assert_error(429, "RATE_LIMITED");
    let retry = header(&r, "retry-after");
    assert!((1..=2).contains(&retry), "{retry}");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let r = api.get("/invoices", Some(&tok)).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn a_tenant_wide_budget_is_shared_by_its_users() {
    let t = new_tenant(&admin().await).await;
    set_limit(&t, 2, "1 hour", false).await;
    let api = Api::new();
    assert_eq!(
        api.get("/invoices", Some(&token(t.id, t.admin)))
            .await
            .status,
        200
    );
    assert_eq!(
        api.get("/invoices", Some(&token(t.id, t.member)))
            .await
            .status,
        200
    );
    api.get("/invoices", Some(&token(t.id, t.readonly)))
        .await
        .assert_error(429, "RATE_LIMITED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_clients_get_exactly_the_budget() {
    let t = new_tenant(&admin().await).await;
    set_limit(&t, 37, "1 hour", true).await;
    let statuses = burst(&token(t.id, t.admin), "/invoices?limit=1", 12, 10).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (37, 120 - 37), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_over_its_limit_does_not_touch_the_others() {
    let db = admin().await;
    let noisy = new_tenant(&db).await;
    let quiet = new_tenant(&db).await;
    set_limit(&noisy, 5, "1 hour", false).await;
    set_limit(&quiet, 100, "1 hour", true).await;
    let noisy_tok = token(noisy.id, noisy.admin);
    let quiet_tok = token(quiet.id, quiet.member);
    // The noisy tenant hammers from 8 clients while the quiet one works.
    let hammer = tokio::spawn(async move { burst(&noisy_tok, "/invoices?limit=1", 8, 25).await });
    let api = Api::new();
    for i in 0..30 {
        let r = api.get("/invoices?limit=1", Some(&quiet_tok)).await;
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(
            header(&r, "x-ratelimit-remaining"),
            99 - i,
            "the quiet tenant's own count only"
        );
    }
    let noisy_statuses = hammer.await.unwrap();
    assert_eq!(noisy_statuses.iter().filter(|s| **s == 200).count(), 5);
    assert_eq!(noisy_statuses.iter().filter(|s| **s == 429).count(), 195);
}

#[tokio::test]
async fn an_idempotent_replay_keeps_the_rate_limit_headers() {
    let t = new_tenant(&admin().await).await;
    let tok = token(t.id, t.member);
    let key = Uuid::new_v4().to_string();
    let body = json!([{"amount": "12.00", "currency": "EUR", "booked_on": "2026-11-01",
                       "description": "rate limit replay", "counterparty": "Initech"}]);
    let api = Api::new();
    let first = api
        .send(
            Method::POST,
            "/rpc/import_bank_transactions",
            Some(&tok),
            &[("Idempotency-Key", &key)],
            Some(&body),
        )
        .await;
    assert_eq!(first.status, 201, "{first:?}");
    let replay = api
        .send(
            Method::POST,
            "/rpc/import_bank_transactions",
            Some(&tok),
            &[("Idempotency-Key", &key)],
            Some(&body),
        )
        .await;
    assert_eq!(replay.status, 201, "{replay:?}");
    assert_eq!(
        replay
            .headers
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(
        header(&replay, "x-ratelimit-remaining"),
        header(&first, "x-ratelimit-remaining") - 1
    );
}

#[tokio::test]
async fn settings_are_validated_and_reserved_to_the_dba() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    for (call, code, message) in [
        (
            "SELECT tenancy.set_rate_limit($1, 0)",
            "22023",
            "requests must be at least 1, not 0",
        ),
        (
            "SELECT tenancy.set_rate_limit($1, 10, '0 seconds')",
            "22023",
            "window_length must be whole seconds between 1 second and 31 days, not 00:00:00",
        ),
        (
            "SELECT tenancy.set_rate_limit($1, 10, '1.5 seconds')",
            "22023",
            "window_length must be whole seconds between 1 second and 31 days, not 00:00:01.5",
        ),
        (
            "SELECT tenancy.set_rate_limit($1 || '-nope', 10)",
            "TN005",
            "",
        ),
    ] {
        let e = expect_db_error(sqlx::query(call).bind(&t.slug).execute(&db).await, code);
        if !message.is_empty() {
            assert_eq!(e.message, message, "{call}");
        }
    }
    use sqlx::Executor;
    let mut c = session_as("authenticated", None).await;
    for call in [
        "SELECT tenancy.set_rate_limit('x', 1)",
        "SELECT * FROM tenancy._rate_limit_take(gen_random_uuid(), NULL, 1, 1)",
        "SELECT * FROM tenancy.rate_limits",
    ] {
        c.execute("SAVEPOINT s").await.unwrap();
        expect_db_error(c.execute(call).await, "42501");
        c.execute("ROLLBACK TO SAVEPOINT s").await.unwrap();
    }
    let e = expect_db_error(
        c.execute("SET LOCAL tenancy.rate_limit = off").await,
        "42501",
    );
    assert!(e.message.contains("tenancy.rate_limit"), "{e:?}");
}
