//! Idempotency keys over HTTP through the real PostgREST, and the purge job
//! run by the real pg_cron.

use integration::*;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};
use std::time::Duration;
use uuid::Uuid;

fn batch(marker: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"amount": format!("{}.25", 10 + i), "currency": "EUR", "booked_on": "2026-11-01",
                            "description": format!("{marker} #{i}"), "counterparty": "Initech"}))
            .collect(),
    )
}

async fn import(tok: &str, key: Option<&str>, body: &Value) -> Reply {
    let mut headers = vec![];
    if let Some(k) = key {
        headers.push(("Idempotency-Key", k));
    }
    Api::new()
        .send(
            Method::POST,
            "/rpc/import_bank_transactions",
            Some(tok),
            &headers,
            Some(body),
        )
        .await
}

async fn imported_rows(t: &Tenant, marker: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledger.bank_transactions WHERE tenant_id = $1 AND description LIKE $2")
        .bind(t.id)
        .bind(format!("{marker} #%"))
        .fetch_one(&admin().await)
        .await
        .unwrap()
}

async fn stored_keys(t: &Tenant) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tenancy.idempotency_keys WHERE tenant_id = $1")
        .bind(t.id)
        .fetch_one(&admin().await)
        .await
        .unwrap()
}

fn replayed(r: &Reply) -> bool {
    r.headers
        .get("idempotent-replayed")
        .map(|v| v == "true")
        .unwrap_or(false)
}

#[tokio::test]
async fn a_retry_replays_the_stored_response_and_imports_once() {
    let t = new_tenant(&admin().await).await;
    let tok = token(t.id, t.member);
    let key = Uuid::new_v4().to_string();
    let body = batch("replay", 3);
    let first = import(&tok, Some(&key), &body).await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.body["imported"], json!(3));
    assert!(!replayed(&first));
    let again = import(&tok, Some(&key), &body).await;
    assert_eq!(again.status, 201, "{again:?}");
    assert!(replayed(&again), "{again:?}");
    assert_eq!(again.body, first.body);
    assert_eq!(imported_rows(&t, "replay").await, 3);
    // The key lives for the default TTL of 24 hours, by the database clock.
    let ttl: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM expires_at - created_at)::float8 FROM tenancy.idempotency_keys WHERE tenant_id = $1 AND key = $2",
    )
    .bind(t.id)
    .bind(&key)
    .fetch_one(&admin().await)
    .await
    .unwrap();
    assert_eq!(ttl, 86_400.0);
}

#[tokio::test]
async fn missing_or_malformed_keys_are_400() {
    let t = new_tenant(&admin().await).await;
    let tok = token(t.id, t.member);
    let body = batch("badkey", 1);
    let r = import(&tok, None, &body).await;
    r.assert_error(400, "IDEMPOTENCY_KEY_REQUIRED");
    for bad in ["".to_string(), "x".repeat(256), "tab\there".to_string()] {
        let r = import(&tok, Some(&bad), &body).await;
        r.assert_error(400, "IDEMPOTENCY_KEY_INVALID");
        assert_eq!(
            r.message(),
            "the Idempotency-Key must be 1 to 255 characters without control characters"
        );
    }
    let r = import(&tok, Some(&"k".repeat(255)), &body).await;
    assert_eq!(r.status, 201, "255 characters is fine: {r:?}");
    assert_eq!(imported_rows(&t, "badkey").await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let t = new_tenant(&admin().await).await;
    let tok = token(t.id, t.member);
    let key = Uuid::new_v4().to_string();
    assert_eq!(
        import(&tok, Some(&key), &batch("first", 1)).await.status,
        201
    );
    let r = import(&tok, Some(&key), &batch("second", 1)).await;
    r.assert_error(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(imported_rows(&t, "second").await, 0);
}

#[tokio::test]
async fn a_setting_switches_reuse_to_409_and_sql_callers_get_sqlstates() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let mut conn = PgConnection::connect(&stack().db_url).await.unwrap();
    let claim = |key: &'static str, body: &'static str| {
        format!("SELECT tenancy.idempotency_claim('scope', '{body}'::jsonb, '{key}')")
    };
    // First use, completed and committed.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut *tx, &t.slug).await;
    tx.execute(claim("sql-key", "[1]").as_str()).await.unwrap();
    tx.execute("SELECT tenancy.idempotency_complete('{\"ok\": true}', 200)")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A SQL caller reusing it with another request: SQLSTATE TN013.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut *tx, &t.slug).await;
    let e = expect_db_error(tx.execute(claim("sql-key", "[2]").as_str()).await, "TN013");
    assert!(
        e.message
            .starts_with("this Idempotency-Key was already used for a different request"),
        "{e:?}"
    );
    tx.rollback().await.unwrap();
    // The same request replays for SQL callers too.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut *tx, &t.slug).await;
    let replay: Option<Value> = sqlx::query_scalar(&claim("sql-key", "[1]"))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(replay, Some(json!({"ok": true})));
    tx.rollback().await.unwrap();
    // With tenancy.idempotency_conflict_status = 409, an HTTP request gets 409.
    let mut tx = conn.begin().await.unwrap();
    tx.execute("SET LOCAL tenancy.idempotency_conflict_status = 409")
        .await
        .unwrap();
    tx.execute("SELECT set_config('request.method', 'POST', true)")
        .await
        .unwrap();
    set_tenant(&mut *tx, &t.slug).await;
    let err = tx
        .execute(claim("sql-key", "[3]").as_str())
        .await
        .unwrap_err();
    let sqlx::Error::Database(e) = err else {
        panic!("expected a database error")
    };
    let pg = e.downcast_ref::<sqlx::postgres::PgDatabaseError>();
    assert_eq!(pg.code(), "PGRST");
    let detail: Value = serde_json::from_str(pg.detail().unwrap()).unwrap();
    assert_eq!(detail["status"], json!(409));
    let message: Value = serde_json::from_str(pg.message()).unwrap();
    assert_eq!(message["code"], json!("IDEMPOTENCY_KEY_REUSED"));
    tx.rollback().await.unwrap();
    // Keys over SQL are validated like headers.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut *tx, &t.slug).await;
    let e = expect_db_error(
        tx.execute("SELECT tenancy.idempotency_claim('scope', '[]', E'line\\nbreak')")
            .await,
        "TN011",
    );
    assert_eq!(
        e.message,
        "the Idempotency-Key must be 1 to 255 characters without control characters"
    );
    tx.rollback().await.unwrap();
}

/// Opens a transaction that, like a slow first request, has claimed `key`
/// and imported `body` as `user` of `t`, and leaves it open.
async fn slow_first_request(t: &Tenant, key: &str, body: &Value) -> (PgConnection, i32) {
    let mut conn = PgConnection::connect(&stack().db_url).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.execute("BEGIN").await.unwrap();
    conn.execute("SET LOCAL ROLE authenticated").await.unwrap();
    sqlx::query("SELECT set_config('request.jwt.claims', $1, true), set_config('request.headers', $2, true)")
        .bind(access_claims(t.id, t.member).to_string())
        .bind(json!({"idempotency-key": key}).to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    conn.execute("SELECT tenancy.pre_request()").await.unwrap();
    sqlx::query("SELECT api.import_bank_transactions($1)")
        .bind(body)
        .execute(&mut conn)
        .await
        .unwrap();
    (conn, pid)
}

#[tokio::test]
async fn a_key_in_flight_is_409_at_once_then_replays_after_commit() {
    let t = new_tenant(&admin().await).await;
    let tok = token(t.id, t.member);
    let key = Uuid::new_v4().to_string();
    let body = batch("inflight", 2);
    let (mut first, _) = slow_first_request(&t, &key, &body).await;
    // The first request's transaction is still open: no waiting on it.
    let r = tokio::time::timeout(Duration::from_secs(20), import(&tok, Some(&key), &body))
        .await
        .expect("the second request must not wait for the first");
    r.assert_error(409, "IDEMPOTENCY_KEY_IN_PROGRESS");
    let stats: (i64,) = sqlx::query_as("SELECT in_progress FROM tenancy.idempotency_stats()")
        .fetch_one(&admin().await)
        .await
        .unwrap();
    assert!(stats.0 >= 1, "stats count the key in flight");
    first.execute("COMMIT").await.unwrap();
    let r = import(&tok, Some(&key), &body).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(replayed(&r));
    assert_eq!(imported_rows(&t, "inflight").await, 2);
}

#[tokio::test]
async fn a_failed_request_stores_nothing_and_may_be_retried() {
    let t = new_tenant(&admin().await).await;
    let tok = token(t.id, t.member);
    let key = Uuid::new_v4().to_string();
    let mut bad = batch("retry", 2);
    bad[1]["currency"] = json!("euro");
    let r = import(&tok, Some(&key), &bad).await;
    r.assert_error(400, "23514");
    assert_eq!(stored_keys(&t).await, 0);
    assert_eq!(
        imported_rows(&t, "retry").await,
        0,
        "no half-imported batch"
    );
    let r = import(&tok, Some(&key), &batch("retry", 2)).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(!replayed(&r));
    assert_eq!(imported_rows(&t, "retry").await, 2);
    let r = import(&tok, Some(&key), &json!({"not": "an array"})).await;
    r.assert_error(422, "IDEMPOTENCY_KEY_REUSED");
    let r = import(
        &tok,
        Some(&Uuid::new_v4().to_string()),
        &json!({"not": "an array"}),
    )
    .await;
    r.assert_error(400, "INVALID_ARGUMENT");
    let r = import(
        &tok,
        Some(&Uuid::new_v4().to_string()),
        &json!([{"amount": 1}]),
    )
    .await;
    r.assert_error(400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn keys_are_scoped_per_tenant() {
    let db = admin().await;
    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    let key = Uuid::new_v4().to_string();
    let body = batch("scoped", 1);
    let ra = import(&token(a.id, a.member), Some(&key), &body).await;
    let rb = import(&token(b.id, b.member), Some(&key), &body).await;
    assert_eq!((ra.status, rb.status), (201, 201));
    assert!(!replayed(&rb), "B's request is fresh, not A's replay");
    assert_ne!(ra.body["ids"], rb.body["ids"]);
    assert_eq!(imported_rows(&a, "scoped").await, 1);
    assert_eq!(imported_rows(&b, "scoped").await, 1);
}

#[tokio::test]
async fn thirty_two_concurrent_identical_requests_import_exactly_once() {
    let t = new_tenant(&admin().await).await;
    let tok = token(t.id, t.member);
    let key = Uuid::new_v4().to_string();
    let body = batch("storm", 5);
    let mut handles = Vec::new();
    for _ in 0..32 {
        let (tok, key, body) = (tok.clone(), key.clone(), body.clone());
        handles.push(tokio::spawn(async move {
            import(&tok, Some(&key), &body).await
        }));
    }
    let mut fresh = 0;
    for h in handles {
        let r = h.await.unwrap();
        match r.status {
            201 if replayed(&r) => {}
            201 => fresh += 1,
            409 => assert_eq!(r.code(), "IDEMPOTENCY_KEY_IN_PROGRESS", "{r:?}"),
            _ => panic!("unexpected reply {r:?}"),
        }
    }
    assert_eq!(fresh, 1, "exactly one request did the import");
    assert_eq!(imported_rows(&t, "storm").await, 5);
}

#[tokio::test]
async fn a_killed_backend_leaves_no_half_import_and_no_stuck_key() {
    let t = new_tenant(&admin().await).await;
    let tok = token(t.id, t.member);
    let key = Uuid::new_v4().to_string();
    let body = batch("killed", 4);
    let (_conn, pid) = slow_first_request(&t, &key, &body).await;
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)")
        .bind(pid)
        .fetch_one(&admin().await)
        .await
        .unwrap();
    assert!(killed);
    assert_eq!(
        imported_rows(&t, "killed").await,
        0,
        "the killed import left nothing"
    );
    assert_eq!(stored_keys(&t).await, 0, "and no key");
    let r = import(&tok, Some(&key), &body).await;
    assert_eq!(r.status, 201, "the retry goes through: {r:?}");
    assert!(!replayed(&r));
    assert_eq!(imported_rows(&t, "killed").await, 4);
}

async fn insert_expired_keys(t: &Tenant, n: i32) {
    sqlx::query(
        "INSERT INTO tenancy.idempotency_keys (tenant_id, key, scope, fingerprint, state, status, body, created_at, expires_at)
         SELECT $1, 'old-' || g, 'import_bank_transactions', '\\x00', 'completed', 201, '{}', now() - interval '2 days', now() - interval '1 day'
         FROM generate_series(1, $2) g",
    )
    .bind(t.id)
    .bind(n)
    .execute(&admin().await)
    .await
    .unwrap();
}

#[tokio::test]
async fn purge_deletes_expired_keys_in_batches_and_reports_it() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    insert_expired_keys(&t, 250).await;
    let tok = token(t.id, t.member);
    assert_eq!(
        import(&tok, Some("live-key"), &batch("purge", 1))
            .await
            .status,
        201
    );
    let backlog: i64 =
        sqlx::query_scalar("SELECT expired_backlog FROM tenancy.idempotency_stats()")
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(backlog >= 250);
    sqlx::raw_sql("CALL tenancy.purge_idempotency_keys(100)")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(stored_keys(&t).await, 1, "only the live key is left");
    let (deleted, duration_ok): (i64, bool) =
        sqlx::query_as("SELECT last_purge_deleted, last_purge_duration >= interval '0' FROM tenancy.idempotency_stats()")
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(deleted >= 250 && duration_ok);
    // An expired key counts as new: the same key imports again.
    sqlx::query("UPDATE tenancy.idempotency_keys SET expires_at = now() - interval '1 second' WHERE tenant_id = $1")
        .bind(t.id)
        .execute(&db)
        .await
        .unwrap();
    let r = import(&tok, Some("live-key"), &batch("purge", 1)).await;
    assert_eq!(r.status, 201);
    assert!(!replayed(&r));
    let e = expect_db_error(
        sqlx::raw_sql("CALL tenancy.purge_idempotency_keys(0)")
            .execute(&db)
            .await,
        "22023",
    );
    assert_eq!(e.message, "batch_size and max_batches must be positive");
}

#[tokio::test]
async fn pg_cron_runs_the_purge() {
    let db = admin().await;
    let scheduled: String = sqlx::query_scalar(
        "SELECT command FROM cron.job WHERE jobname = 'pg_tenancy: purge idempotency keys'",
    )
    .fetch_one(&db)
    .await
    .expect("the purge job is registered with pg_cron");
    assert_eq!(scheduled, "CALL tenancy.purge_idempotency_keys()");
    // Let pg_cron itself run the same command on a one-minute schedule.
    let t = new_tenant(&db).await;
    insert_expired_keys(&t, 50).await;
    let job = format!("test purge {}", Uuid::new_v4());
    let job_id: i64 = sqlx::query_scalar("SELECT cron.schedule($1, '* * * * *', $2)")
        .bind(&job)
        .bind(&scheduled)
        .fetch_one(&db)
        .await
        .unwrap();
    let status = finish_cron_job(&db, job_id).await;
    assert_eq!(status, "succeeded", "pg_cron runs the purge within 150 s");
    assert_eq!(
        stored_keys(&t).await,
        0,
        "pg_cron's run deleted the expired keys"
    );
}
