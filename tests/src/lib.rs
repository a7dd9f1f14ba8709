//! Harness for the integration tests: a real Postgres with pg_tenancy and the
//! reference `sql/` loaded, and a real PostgREST in front of it, both started
//! by `scripts/test`. Nothing here is mocked; a missing component is a panic.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::postgres::{PgDatabaseError, PgPoolOptions};
use sqlx::PgPool;
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests through scripts/test, which starts Postgres and PostgREST")
    })
}

/// Where the stack started by `scripts/test` listens.
pub struct Stack {
    pub db_url: String,
    pub http: String,
    pub jwt_secret: String,
}

pub fn stack() -> Stack {
    Stack {
        db_url: required_env("PG_TENANCY_TEST_DB"),
        http: required_env("PG_TENANCY_TEST_HTTP"),
        jwt_secret: required_env("PG_TENANCY_TEST_JWT_SECRET"),
    }
}

/// The URL of another database of the test cluster, as the same user.
pub fn db_url(name: &str) -> String {
    let url = stack().db_url;
    let (base, _) = url.rsplit_once('/').expect("a database URL");
    format!("{base}/{name}")
}

/// The repository's root: where `sql/`, `docker/` and `api-config/` are.
pub fn repo_root() -> std::path::PathBuf {
    std::env::var("PG_TENANCY_ROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// A pool connected as the superuser to the test database.
pub async fn admin() -> PgPool {
    let url = stack().db_url;
    PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// A database error's SQLSTATE, message and hint, for asserting on.
#[derive(Debug)]
pub struct DbError {
    pub code: String,
    pub message: String,
    pub hint: Option<String>,
}

pub fn db_error(err: sqlx::Error) -> DbError {
    match err {
        sqlx::Error::Database(e) => {
            let pg = e.downcast_ref::<PgDatabaseError>();
            DbError {
                code: pg.code().to_string(),
                message: pg.message().to_string(),
                hint: pg.hint().map(str::to_string),
            }
        }
        other => panic!("expected a database error, got {other}"),
    }
}

/// Expects `result` to be a database error with this SQLSTATE; returns it.
pub fn expect_db_error<T: std::fmt::Debug>(
    result: Result<T, sqlx::Error>,
    sqlstate: &str,
) -> DbError {
    match result {
        Ok(v) => panic!("expected SQLSTATE {sqlstate}, but the statement succeeded: {v:?}"),
        Err(e) => {
            let e = db_error(e);
            assert_eq!(e.code, sqlstate, "unexpected error: {e:?}");
            e
        }
    }
}

/// The error `tenancy.reconcile(invoices, transactions)` fails with on
/// `conn`, which must have SQLSTATE `sqlstate`.
pub async fn reconcile_error(
    conn: &mut sqlx::PgConnection,
    invoices: &str,
    transactions: &str,
    sqlstate: &str,
) -> DbError {
    expect_db_error(
        sqlx::query(&format!(
            "SELECT * FROM tenancy.reconcile('{invoices}', '{transactions}')"
        ))
        .fetch_all(conn)
        .await,
        sqlstate,
    )
}

/// A tenant created for one test, with one user per system role.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub admin: Uuid,
    pub member: Uuid,
    pub readonly: Uuid,
}

pub async fn new_tenant(db: &PgPool) -> Tenant {
    let slug = format!("t-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let id: Uuid = sqlx::query_scalar("SELECT tenancy.create_tenant($1, $2)")
        .bind(&slug)
        .bind(format!("Tenant {slug}"))
        .fetch_one(db)
        .await
        .expect("create_tenant");
    let t = Tenant {
        id,
        slug,
        admin: Uuid::new_v4(),
        member: Uuid::new_v4(),
        readonly: Uuid::new_v4(),
    };
    for (user, role) in [
        (t.admin, "admin"),
        (t.member, "member"),
        (t.readonly, "readonly"),
    ] {
        sqlx::query("SELECT tenancy.add_member($1, $2, $3)")
            .bind(&t.slug)
            .bind(user)
            .bind(role)
            .execute(db)
            .await
            .expect("add_member");
    }
    t
}

/// Inserts an invoice for `t` as the superuser and returns its id.
pub async fn insert_invoice(db: &PgPool, t: &Tenant, reference: &str, amount: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO ledger.invoices (tenant_id, amount, currency, issue_date, due_date, reference, counterparty) \
         VALUES ($1, $2::numeric, 'EUR', '2026-10-01', '2026-10-31', $3, 'Initech') RETURNING id",
    )
    .bind(t.id)
    .bind(amount)
    .bind(reference)
    .fetch_one(db)
    .await
    .expect("insert invoice")
}

/// Inserts a bank transaction for `t` as the superuser and returns its id.
pub async fn insert_transaction(db: &PgPool, t: &Tenant, description: &str, amount: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO ledger.bank_transactions (tenant_id, amount, currency, booked_on, description, counterparty) \
         VALUES ($1, $2::numeric, 'EUR', '2026-10-15', $3, 'Initech') RETURNING id",
    )
    .bind(t.id)
    .bind(amount)
    .bind(description)
    .fetch_one(db)
    .await
    .expect("insert transaction")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// The claims of a valid access token for `user` in `tenant`.
pub fn access_claims(tenant: Uuid, user: Uuid) -> Value {
    json!({
        "sub": user.to_string(),
        "tenant_id": tenant.to_string(),
        "role": "authenticated",
        "type": "access",
        "email": "user@example.test",
        "iat": now(),
        "exp": now() + 600,
    })
}

/// Signs claims with HS256 and `secret`.
pub fn sign(claims: &Value, secret: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{header}.{body}").as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{body}.{sig}")
}

/// A valid token for `user` in `tenant`, signed with the stack's secret.
pub fn token(tenant: Uuid, user: Uuid) -> String {
    sign(&access_claims(tenant, user), &stack().jwt_secret)
}

/// A response from PostgREST: status, headers and the body parsed as JSON
/// (Value::Null when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The JSON error code PostgREST returned (ours or PostgREST's own).
    pub fn code(&self) -> &str {
        self.body
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn message(&self) -> &str {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn rows(&self) -> &Vec<Value> {
        self.body
            .as_array()
            .unwrap_or_else(|| panic!("expected a JSON array, got {self:?}"))
    }

    /// Asserts an error reply: this status, and a body that is an error
    /// object, never rows.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "unexpected reply: {self:?}");
        assert!(
            self.body.is_object(),
            "an error must be a JSON object, not data: {self:?}"
        );
        assert_eq!(self.code(), code, "unexpected error code: {self:?}");
    }
}

/// A thin HTTP client for the stack's PostgREST.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
}

impl Default for Api {
    fn default() -> Self {
        Self::new()
    }
}

impl Api {
    pub fn new() -> Self {
        Api {
            client: reqwest::Client::new(),
            base: stack().http,
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("PostgREST at {} is not answering: {e}", self.base));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("response body");
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(reqwest::Method::GET, path, token, &[], None)
            .await
    }

    /// POST/PATCH/DELETE asking for the affected rows back.
    pub async fn write(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Reply {
        self.send(
            method,
            path,
            Some(token),
            &[("Prefer", "return=representation")],
            body,
        )
        .await
    }
}

/// POST /rpc/`name` with a JSON body, as the holder of `token`.
pub async fn rpc(token: &str, name: &str, body: serde_json::Value) -> Reply {
    Api::new()
        .send(
            reqwest::Method::POST,
            &format!("/rpc/{name}"),
            Some(token),
            &[],
            Some(&body),
        )
        .await
}

/// Waits up to 150 s for pg_cron to finish a run of `job_id`, then
/// unschedules the job. Returns "succeeded", "failed: " and pg_cron's
/// message, or "" when no run finished in time.
pub async fn finish_cron_job(db: &PgPool, job_id: i64) -> String {
    let mut status = String::new();
    for _ in 0..150 {
        if let Some(s) = sqlx::query_scalar::<_, String>(
            "SELECT CASE status WHEN 'failed' THEN 'failed: ' || return_message ELSE status END \
             FROM cron.job_run_details WHERE jobid = $1 AND status IN ('succeeded', 'failed') \
             ORDER BY runid DESC LIMIT 1",
        )
        .bind(job_id)
        .fetch_optional(db)
        .await
        .unwrap()
        {
            status = s;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    sqlx::query("SELECT cron.unschedule($1)")
        .bind(job_id)
        .execute(db)
        .await
        .unwrap();
    status
}

/// Sets `tenant` (slug or id) for the current transaction of `conn`.
pub async fn set_tenant<'c>(conn: impl sqlx::PgExecutor<'c>, tenant: &str) {
    sqlx::query("SELECT tenancy.set_tenant($1)")
        .bind(tenant)
        .execute(conn)
        .await
        .expect("set_tenant");
}

/// A new connection inside a transaction as `role` (SET LOCAL ROLE, so its
/// privileges and row level security apply), with `tenant` set first when
/// given. Roll back by dropping it.
pub async fn session_as(role: &str, tenant: Option<&Tenant>) -> sqlx::PgConnection {
    use sqlx::{Connection, Executor};
    let mut c = sqlx::PgConnection::connect(&stack().db_url).await.unwrap();
    c.execute("BEGIN").await.unwrap();
    if let Some(t) = tenant {
        set_tenant(&mut c, &t.slug).await;
    }
    c.execute(format!("SET LOCAL ROLE {role}").as_str())
        .await
        .unwrap();
    c
}

/// A new database login of its own (`bi_<random>`), with `grants` run for
/// it (`{login}` stands for its name). Tests running at once would deadlock
/// granting on the same tables: one at a time.
pub async fn new_login(db: &PgPool, grants: &str) -> String {
    let login = format!("bi_{}", &Uuid::new_v4().simple().to_string()[..12]);
    grant(
        db,
        &format!(
            "CREATE ROLE {login} LOGIN; {}",
            grants.replace("{login}", &login)
        ),
    )
    .await;
    login
}

/// Runs GRANT statements one test at a time (concurrent grants on the same
/// objects can deadlock).
pub async fn grant(db: &PgPool, sql: &str) {
    use sqlx::Executor;
    let mut tx = db.begin().await.expect("begin");
    tx.execute("SELECT pg_advisory_xact_lock(20261207)")
        .await
        .expect("lock");
    tx.execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    tx.commit().await.expect("commit");
}

/// A connection to the database at `url` as `login` (the test cluster
/// trusts loopback).
pub async fn connect_as(url: &str, login: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("a database URL");
    sqlx::PgConnection::connect_with(&options.username(login))
        .await
        .unwrap_or_else(|e| panic!("connect as {login}: {e}"))
}

/// `clients` concurrent clients, each sending `each` GETs of `path` with
/// `token` one after another: every status.
pub async fn burst(token: &str, path: &str, clients: usize, each: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (token, path) = (token.to_string(), path.to_string());
        tasks.push(tokio::spawn(async move {
            let api = Api::new();
            let mut statuses = Vec::new();
            for _ in 0..each {
                statuses.push(api.get(&path, Some(&token)).await.status);
            }
            statuses
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// On Citus: the worker (host:port) that holds `tenant`'s shard of `table`.
pub async fn node_of(db: &PgPool, table: &str, tenant: Uuid) -> String {
    sqlx::query_scalar(
        "SELECT s.nodename || ':' || s.nodeport FROM citus_shards s
         WHERE s.table_name = $1::regclass
           AND s.shardid = get_shard_id_for_distribution_column($1::regclass, $2)",
    )
    .bind(table)
    .bind(tenant)
    .fetch_one(db)
    .await
    .unwrap_or_else(|e| panic!("no shard of {table} for {tenant}: {e}"))
}
