//! Reconciliation at ledger scale: only open items are read, big open sets
//! are matched in windows under tenancy.reconcile_memory without losing a
//! match at a window's edge, a running call stops at once when cancelled
//! (and applies nothing), and DBAs see its progress.

use integration::*;
use sqlx::{Connection, Executor, PgConnection, Row};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A schema with tenant-scoped `inv` and `tx` tables in the conventional
/// shape (tx with unmatched_amount), readable by the API role.
async fn scale_schema(db: &sqlx::PgPool) -> String {
    let schema = format!("scale_{}", &Uuid::new_v4().simple().to_string()[..12]);
    db.execute(
        format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.inv (id text PRIMARY KEY, tenant_id uuid, amount numeric, currency text,
                 issue_date date, due_date date, reference text, counterparty text, open_amount numeric);
             CREATE TABLE {schema}.tx (id text PRIMARY KEY, tenant_id uuid, amount numeric, currency text,
                 booked_on date, description text, counterparty text, unmatched_amount numeric);
             SELECT tenancy.enable('{schema}.inv');
             SELECT tenancy.enable('{schema}.tx');
             GRANT USAGE ON SCHEMA {schema} TO authenticated;
             GRANT SELECT ON {schema}.inv, {schema}.tx TO authenticated;"
        )
        .as_str(),
    )
    .await
    .unwrap();
    schema
}

/// `n` open invoices of 400 customers over a year, each paid exactly by a
/// payment naming it, 0 to 19 days later.
async fn fill(db: &sqlx::PgPool, schema: &str, t: &Tenant, n: i32) {
    sqlx::query(&format!(
        "INSERT INTO {schema}.inv
         SELECT 'I' || g, $1, 100 + g % 5000, 'EUR', DATE '2026-01-01' + g % 365,
                DATE '2026-01-01' + g % 365 + 30, 'INV-' || g, 'Customer ' || g % 400, 100 + g % 5000
         FROM generate_series(1, $2) g"
    ))
    .bind(t.id)
    .bind(n)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO {schema}.tx
         SELECT 'T' || g, $1, 100 + g % 5000, 'EUR', DATE '2026-01-01' + g % 365 + g % 20,
                'Payment INV-' || g, 'Customer ' || g % 400, 100 + g % 5000
         FROM generate_series(1, $2) g"
    ))
    .bind(t.id)
    .bind(n)
    .execute(db)
    .await
    .unwrap();
    db.execute(format!("ANALYZE {schema}.inv; ANALYZE {schema}.tx").as_str())
        .await
        .unwrap();
}

/// A connection in a transaction as the API role with `t` set; settings
/// the API role may not change are set first.
async fn as_tenant(t: &Tenant, settings: &str) -> PgConnection {
    let mut c = PgConnection::connect(&stack().db_url).await.unwrap();
    c.execute("BEGIN").await.unwrap();
    if !settings.is_empty() {
        c.execute(settings).await.unwrap();
    }
    set_tenant(&mut c, &t.slug).await;
    c.execute("SET LOCAL ROLE authenticated").await.unwrap();
    c
}

async fn pairs(c: &mut PgConnection, schema: &str) -> Vec<(String, String, String)> {
    sqlx::query(&format!(
        "SELECT invoice_id, transaction_id, grade FROM tenancy.reconcile('{schema}.inv', '{schema}.tx')
         ORDER BY 2, 1"
    ))
    .fetch_all(&mut *c)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// How many rows of `schema`.`table` this transaction of `c` has read from
/// the heap. Its own count: other sessions' scans (a test's pg_dump of the
/// database, say) do not show in it, and it needs no statistics flushed.
async fn heap_rows_read(c: &mut PgConnection, schema: &str, table: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables
         WHERE schemaname = $1 AND relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(c)
    .await
    .unwrap()
}

#[tokio::test]
async fn years_of_settled_history_are_not_read_from_the_heap() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let schema = scale_schema(&db).await;
    fill(&db, &schema, &t, 50).await;
    // 20,000 settled invoices and transactions beside the 50 open ones, and
    // the partial indexes of the reference ledger.
    db.execute(
        format!(
            "INSERT INTO {schema}.inv SELECT 'OLD' || g, '{t}', 10, 'EUR', DATE '2016-01-01' + g % 3000,
                 NULL, 'OLD-' || g, 'x', 0 FROM generate_series(1, 20000) g;
             INSERT INTO {schema}.tx SELECT 'OLD' || g, '{t}', 10, 'EUR', DATE '2016-01-01' + g % 3000,
                 'x', 'x', 0 FROM generate_series(1, 20000) g;
             CREATE INDEX ON {schema}.inv (tenant_id, issue_date) WHERE (open_amount <> 0 OR open_amount IS NULL);
             CREATE INDEX ON {schema}.tx (tenant_id, booked_on) WHERE (unmatched_amount <> 0 OR unmatched_amount IS NULL);
             ANALYZE {schema}.inv; ANALYZE {schema}.tx;",
            t = t.id
        )
        .as_str(),
    )
    .await
    .unwrap();
    let mut c = as_tenant(&t, "").await;
    assert_eq!(pairs(&mut c, &schema).await.len(), 50);
    for table in ["inv", "tx"] {
        let read = heap_rows_read(&mut c, &schema, table).await;
        assert!(
            (50..=100).contains(&read),
            "{table}: {read} rows read from the heap for 50 open ones"
        );
    }
}

#[tokio::test]
async fn settled_rows_are_never_read() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let schema = scale_schema(&db).await;
    // Settled history whose values reconcile would refuse if it read them:
    // an invoice of amount 0 and a transaction of amount 0.
    for insert in [
        "INSERT INTO {schema}.inv VALUES ('OLD', $1, 0, 'EUR', '2020-01-01', NULL, 'OLD', 'x', 0),
                                         ('I1', $1, 50, 'EUR', '2026-03-01', NULL, 'INV-77', 'Initech', 50)",
        "INSERT INTO {schema}.tx VALUES ('OLD', $1, 0, 'EUR', '2020-01-02', 'x', 'x', 0),
                                        ('T1', $1, 50, 'EUR', '2026-03-03', 'INV-77', 'Initech', 50)",
    ] {
        sqlx::query(&insert.replace("{schema}", &schema))
            .bind(t.id)
            .execute(&db)
            .await
            .unwrap();
    }
    let mut c = as_tenant(&t, "").await;
    assert_eq!(
        pairs(&mut c, &schema).await,
        vec![("I1".into(), "T1".into(), "auto".into())]
    );
    drop(c);
    // The same values on open rows are still refused, naming the row.
    sqlx::query(&format!(
        "UPDATE {schema}.tx SET unmatched_amount = 1 WHERE id = 'OLD'"
    ))
    .execute(&db)
    .await
    .unwrap();
    let mut c = as_tenant(&t, "").await;
    let (inv, tx) = (format!("{schema}.inv"), format!("{schema}.tx"));
    let e = reconcile_error(&mut c, &inv, &tx, "22023").await;
    assert_eq!(
        e.message,
        format!("{schema}.tx: transaction OLD has amount 0")
    );
}

#[tokio::test]
async fn the_reference_ledger_reads_open_items_through_an_index() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let mut c = as_tenant(&t, "SET LOCAL enable_seqscan = off").await;
    for (table, column) in [
        ("ledger.invoices", "open_amount"),
        ("ledger.bank_transactions", "unmatched_amount"),
    ] {
        let plan: Vec<String> = sqlx::query_scalar(&format!(
            "EXPLAIN SELECT * FROM {table} WHERE ({column} <> 0 OR {column} IS NULL)"
        ))
        .fetch_all(&mut c)
        .await
        .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("invoices_open") || plan.contains("bank_transactions_unmatched"),
            "{table}: {plan}"
        );
    }
}

#[tokio::test]
async fn windows_lose_no_match_at_their_edges_and_a_day_too_big_is_a_clear_error() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let schema = scale_schema(&db).await;
    // 9,000 open items over a year: far more than 3 MB of them. At once,
    // their rows are written by a helper thread, three blocks of them; in
    // windows of under a block each, by the backend itself.
    fill(&db, &schema, &t, 9_000).await;
    let mut c = as_tenant(&t, "").await;
    let whole = pairs(&mut c, &schema).await;
    drop(c);
    assert_eq!(whole.len(), 9_000);
    let mut c = as_tenant(&t, "SET LOCAL tenancy.reconcile_memory = '3MB'").await;
    let windowed = pairs(&mut c, &schema).await;
    drop(c);
    // Every invoice is paid by the payment naming it, whichever window each
    // of them is read in: invoices are issued up to 19 days before.
    assert_eq!(windowed, whole);
    for (i, t, grade) in &windowed {
        assert_eq!(i[1..], t[1..], "{i} {t}");
        assert_eq!(grade, "auto");
    }
    // A caller that stops early (the call in the select list, under LIMIT)
    // ends it while the helper thread is still writing rows, blocked on the
    // ones not taken: it is stopped and joined, and the connection goes on.
    let mut c = as_tenant(&t, "").await;
    let first: String = sqlx::query_scalar(&format!(
        "SELECT (tenancy._reconcile('{schema}.inv', '{schema}.tx', '{{}}')).invoice_id LIMIT 1"
    ))
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert!(whole.iter().any(|(i, _, _)| *i == first), "{first}");
    assert_eq!(pairs(&mut c, &schema).await, whole);
    drop(c);
    // 2,223 payments on one day need more than 1 MB: a clear error.
    sqlx::query(&format!(
        "UPDATE {schema}.tx SET booked_on = '2026-06-01' WHERE id::text <= 'T3'"
    ))
    .execute(&db)
    .await
    .unwrap();
    let mut c = as_tenant(&t, "SET LOCAL tenancy.reconcile_memory = '1MB'").await;
    let (inv, tx) = (format!("{schema}.inv"), format!("{schema}.tx"));
    let e = reconcile_error(&mut c, &inv, &tx, "54000").await;
    assert!(e.message.contains("more than the 1 MB allowed"), "{e:?}");
    assert!(
        e.hint
            .unwrap_or_default()
            .contains("tenancy.reconcile_memory"),
        "the hint names the setting"
    );
    drop(c);
    // Only a superuser (or ALTER ROLE ... SET) raises the budget.
    let mut c = as_tenant(&t, "").await;
    let e = expect_db_error(
        c.execute("SET LOCAL tenancy.reconcile_memory = '10GB'")
            .await,
        "42501",
    );
    assert!(e.message.contains("tenancy.reconcile_memory"), "{e:?}");
}

#[tokio::test]
async fn a_timeout_stops_reconcile_and_apply_at_once_and_applies_nothing() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let schema = scale_schema(&db).await;
    fill(&db, &schema, &t, 150_000).await;
    // reconcile alone: well over the timeout uncancelled.
    let mut c = as_tenant(&t, "").await;
    let started = Instant::now();
    sqlx::query(&format!(
        "SELECT count(*) FROM tenancy.reconcile('{schema}.inv', '{schema}.tx')"
    ))
    .fetch_one(&mut c)
    .await
    .unwrap();
    let full = started.elapsed();
    c.execute("ROLLBACK").await.unwrap();
    drop(c);
    let mut c = as_tenant(&t, "SET LOCAL statement_timeout = '300ms'").await;
    let started = Instant::now();
    expect_db_error(
        sqlx::query(&format!(
            "SELECT count(*) FROM tenancy.reconcile('{schema}.inv', '{schema}.tx')"
        ))
        .fetch_one(&mut c)
        .await,
        "57014",
    );
    let stopped = started.elapsed();
    assert!(
        stopped < Duration::from_millis(1_300) && stopped < full,
        "stopped after {stopped:?} (a whole call: {full:?})"
    );
    drop(c);

    // apply_reconciliation on the reference ledger: cancelled, it leaves no
    // match and no moved amount behind.
    let t = new_tenant(&db).await;
    for insert in [
        "INSERT INTO ledger.invoices (tenant_id, amount, currency, issue_date, due_date, reference, counterparty)
         SELECT $1, 100 + g % 5000, 'EUR', DATE '2026-01-01' + g % 365, DATE '2026-01-01' + g % 365 + 30,
                'INV-' || g, 'Customer ' || g % 400
         FROM generate_series(1, 20000) g",
        "INSERT INTO ledger.bank_transactions (tenant_id, amount, currency, booked_on, description, counterparty)
         SELECT $1, 100 + g % 5000, 'EUR', DATE '2026-01-01' + g % 365 + g % 20, 'Payment INV-' || g,
                'Customer ' || g % 400
         FROM generate_series(1, 20000) g",
    ] {
        sqlx::query(insert).bind(t.id).execute(&db).await.unwrap();
    }
    let mut c = PgConnection::connect(&stack().db_url).await.unwrap();
    c.execute("BEGIN; SET LOCAL statement_timeout = '500ms'")
        .await
        .unwrap();
    set_tenant(&mut c, &t.slug).await;
    c.execute("SET LOCAL ROLE tenancy_jobs").await.unwrap();
    let started = Instant::now();
    expect_db_error(
        sqlx::query("SELECT ledger.apply_reconciliation()")
            .fetch_one(&mut c)
            .await,
        "57014",
    );
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    drop(c);
    let left: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ledger.matches WHERE tenant_id = $1),
                (SELECT count(*) FROM ledger.invoices WHERE tenant_id = $1 AND open_amount <> amount)",
    )
    .bind(t.id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(left, (0, 0), "nothing applied");
    // Uncancelled, the same call applies them all.
    let mut c = PgConnection::connect(&stack().db_url).await.unwrap();
    c.execute("BEGIN").await.unwrap();
    set_tenant(&mut c, &t.slug).await;
    c.execute("SET LOCAL ROLE tenancy_jobs").await.unwrap();
    let applied: serde_json::Value = sqlx::query_scalar("SELECT ledger.apply_reconciliation()")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(applied["applied"], 20000);
    c.execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn dbas_see_the_progress_of_a_running_call_and_nobody_else_does() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let schema = scale_schema(&db).await;
    fill(&db, &schema, &t, 150_000).await;
    let mut runner = as_tenant(&t, "").await;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut runner)
        .await
        .unwrap();
    let query = format!("SELECT count(*) FROM tenancy.reconcile('{schema}.inv', '{schema}.tx')");
    let call = tokio::spawn(async move {
        let n: i64 = sqlx::query_scalar(&query)
            .fetch_one(&mut runner)
            .await
            .unwrap();
        (n, runner)
    });
    // A monitoring role polls the view while the call runs.
    let mut monitor = PgConnection::connect(&stack().db_url).await.unwrap();
    monitor
        .execute("BEGIN; SET LOCAL ROLE pg_monitor")
        .await
        .unwrap();
    let mut seen = None;
    for _ in 0..400 {
        let row = sqlx::query(
            "SELECT tenant_id, tenant, phase, invoices_read, transactions_read, query
             FROM tenancy.reconcile_progress WHERE pid = $1",
        )
        .bind(pid)
        .fetch_optional(&mut monitor)
        .await
        .unwrap();
        if let Some(row) = row {
            let read: i64 = row.get(3);
            if read > 0 {
                seen = Some(row);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let row = seen.expect("the running call shows in tenancy.reconcile_progress");
    assert_eq!(row.get::<Uuid, _>(0), t.id);
    assert_eq!(row.get::<String, _>(1), t.slug);
    let phase: String = row.get(2);
    assert!(
        ["reading", "matching", "returning rows"].contains(&phase.as_str()),
        "{phase}"
    );
    assert!(row.get::<String, _>(5).contains("tenancy.reconcile"));
    let (n, mut runner) = call.await.unwrap();
    assert_eq!(n, 150_000);
    let after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenancy.reconcile_progress WHERE pid = $1")
            .bind(pid)
            .fetch_one(&mut monitor)
            .await
            .unwrap();
    assert_eq!(after, 0, "a finished call leaves no row");
    runner.execute("ROLLBACK").await.unwrap();
    // The API role, an analyst, a tenant's job role: not for them.
    for role in ["authenticated", "analyst", "tenancy_jobs"] {
        for what in [
            "SELECT * FROM tenancy.reconcile_progress",
            "SELECT * FROM tenancy._reconcile_progress()",
        ] {
            let mut c = session_as(role, Some(&t)).await;
            expect_db_error(sqlx::query(what).fetch_all(&mut c).await, "42501");
        }
    }
}

#[tokio::test]
async fn the_rules_of_a_call_are_the_callers_tenants_only() {
    let db = admin().await;
    let a = new_tenant(&db).await;
    let b = new_tenant(&db).await;
    let mut c = session_as("authenticated", Some(&a)).await;
    let rules: String = sqlx::query_scalar("SELECT tenancy._call_rules('{}')")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(rules, "{}");
    drop(c);
    // A's admin sets A's rules; B sees its own defaults.
    let mut c = PgConnection::connect(&stack().db_url).await.unwrap();
    c.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT tenancy._set_context($1, $2)")
        .bind(a.id)
        .bind(a.admin)
        .execute(&mut c)
        .await
        .unwrap();
    c.execute("SET LOCAL ROLE authenticated").await.unwrap();
    sqlx::query(
        "SELECT tenancy.set_reconcile_rules('{\"fee_ceiling\": 7, \"suggestion_days\": 3}')",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let mine: String = sqlx::query_scalar("SELECT tenancy._call_rules('{\"days_after\": 9}')")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(
        mine,
        r#"{"fee_ceiling": 7, "days_after": 9, "suggestion_days": 3}"#
    );
    c.execute("COMMIT").await.unwrap();
    let mut c = session_as("authenticated", Some(&b)).await;
    let theirs: String = sqlx::query_scalar("SELECT tenancy._call_rules('{}')")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(theirs, "{}");
    let e = expect_db_error(
        sqlx::query("SELECT tenancy._call_rules('{\"suggestion_days\": -1}')")
            .fetch_one(&mut c)
            .await,
        "22023",
    );
    assert_eq!(e.message, "rule suggestion_days is out of range");
}
