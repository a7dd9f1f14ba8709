//! The audit trail over HTTP and SQL: who changed what (actor, request id,
//! changed columns), on the ledger, the matches and the roles; tenants read
//! only their own entries with audit.read; nobody but the maintenance
//! function removes entries, and retention drops whole partitions, run by the
//! real pg_cron.

use integration::*;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Executor;
use uuid::Uuid;

/// The tests that run audit_maintain take turns: each expects to find the
/// old month it planted still there.
static MAINTENANCE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The caller's audit entries for one row, oldest first.
async fn entries_for(tok: &str, table: &str, id: Uuid) -> Vec<Value> {
    let r = Api::new()
        .get(
            &format!("/audit_log?table_name=eq.{table}&row_key->>id=eq.{id}&order=id"),
            Some(tok),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.rows().clone()
}

#[tokio::test]
async fn http_writes_are_recorded_with_actor_request_id_and_changed_columns() {
    let t = new_tenant(&admin().await).await;
    let tok = token(t.id, t.member);
    let api = Api::new();
    let body = json!({"amount": "10.50", "currency": "EUR", "issue_date": "2026-11-01",
                      "reference": "INV-A1", "counterparty": "Initech"});
    let r = api
        .send(
            Method::POST,
            "/invoices",
            Some(&tok),
            &[
                ("Prefer", "return=representation"),
                ("X-Request-Id", "req-audit-1"),
            ],
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let id: Uuid = r.rows()[0]["id"].as_str().unwrap().parse().unwrap();
    let r = api
        .write(
            Method::PATCH,
            &format!("/invoices?id=eq.{id}"),
            &tok,
            Some(&json!({"reference": "INV-A2"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Deleting needs invoices.delete: the admin does it.
    let r = api
        .write(
            Method::DELETE,
            &format!("/invoices?id=eq.{id}"),
            &token(t.id, t.admin),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");

    let log = entries_for(&tok, "ledger.invoices", id).await;
    assert_eq!(log.len(), 3, "{log:#?}");
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["INSERT", "UPDATE", "DELETE"]);
    let member = t.member.to_string();
    let admin_user = t.admin.to_string();
    assert_eq!(log[0]["actor"], json!(member));
    assert_eq!(log[0]["request_id"], json!("req-audit-1"));
    assert_eq!(log[0]["request_path"], json!("/invoices"));
    assert_eq!(log[0]["db_user"], json!("authenticator"));
    // The primary key: (tenant_id, id) since the ledger's keys lead with the tenant.
    assert_eq!(
        log[0]["row_key"],
        json!({"id": id.to_string(), "tenant_id": t.id.to_string()})
    );
    assert_eq!(log[0]["old_values"], Value::Null);
    assert_eq!(log[0]["new_values"]["reference"], json!("INV-A1"));
    assert_eq!(log[0]["new_values"]["amount"], json!(10.50));
    // An UPDATE records only what changed, old and new.
    assert_eq!(log[1]["actor"], json!(member));
    assert_eq!(log[1]["request_id"], Value::Null);
    assert_eq!(log[1]["old_values"], json!({"reference": "INV-A1"}));
    assert_eq!(log[1]["new_values"], json!({"reference": "INV-A2"}));
    assert_eq!(log[2]["actor"], json!(admin_user));
    assert_eq!(log[2]["old_values"]["reference"], json!("INV-A2"));
    assert_eq!(log[2]["new_values"], Value::Null);
}

#[tokio::test]
async fn reconciliation_decisions_and_role_changes_are_recorded() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let tok = token(t.id, t.admin);
    let reference = format!(
        "INV-{}",
        &Uuid::new_v4().simple().to_string()[..8].to_uppercase()
    );
    insert_invoice(&db, &t, &reference, "250.00").await;
    insert_transaction(&db, &t, &format!("Payment {reference}"), "250.00").await;
    let api = Api::new();
    let post = |name: &'static str, body: Value| {
        let tok = tok.clone();
        let api = api.clone();
        async move {
            api.send(
                Method::POST,
                &format!("/rpc/{name}"),
                Some(&tok),
                &[],
                Some(&body),
            )
            .await
        }
    };
    let r = post("apply_reconciliation", json!({})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = api.get("/matches?select=id", Some(&tok)).await;
    let match_id: Uuid = r.rows()[0]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        post("confirm_match", json!({"match_id": match_id}))
            .await
            .status,
        200
    );
    assert_eq!(
        post("undo_match", json!({"match_id": match_id}))
            .await
            .status,
        200
    );

    let log = entries_for(&tok, "ledger.matches", match_id).await;
    let admin_user = json!(t.admin.to_string());
    let summary: Vec<(Value, Value, Value)> = log
        .iter()
        .map(|e| {
            (
                e["action"].clone(),
                e["request_path"].clone(),
                e["new_values"]["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                json!("INSERT"),
                json!("/rpc/apply_reconciliation"),
                json!("applied")
            ),
            (
                json!("UPDATE"),
                json!("/rpc/confirm_match"),
                json!("confirmed")
            ),
            (json!("UPDATE"), json!("/rpc/undo_match"), json!("undone")),
        ],
        "{log:#?}"
    );
    assert!(log.iter().all(|e| e["actor"] == admin_user), "{log:#?}");

    // Role and permission changes.
    let r = post(
        "create_role",
        json!({"name": "auditor", "description": "reads the log", "permissions": ["audit.read"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let someone = Uuid::new_v4();
    let r = post(
        "assign_role",
        json!({"user_id": someone, "role": "auditor"}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = api
        .get("/audit_log?table_name=in.(tenancy.roles,tenancy.role_permissions,tenancy.user_roles)&actor=not.is.null&order=id&select=action,table_name,new_values,actor", Some(&tok))
        .await;
    let rows = r.rows();
    let tables: Vec<&str> = rows
        .iter()
        .map(|e| e["table_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tables,
        [
            "tenancy.roles",
            "tenancy.role_permissions",
            "tenancy.user_roles"
        ],
        "{rows:#?}"
    );
    assert_eq!(rows[1]["new_values"]["resource"], json!("audit"));
    assert_eq!(rows[2]["new_values"]["user_id"], json!(someone.to_string()));
    assert!(rows.iter().all(|e| e["actor"] == admin_user));
}

#[tokio::test]
async fn tenants_read_only_their_own_entries_and_need_audit_read() {
    let db = admin().await;
    let a = new_tenant(&db).await;
    let b = new_tenant(&db).await;
    let a_inv = insert_invoice(&db, &a, "INV-ISO-A", "10.00").await;
    let b_inv = insert_invoice(&db, &b, "INV-ISO-B", "20.00").await;

    // B sees its own invoice's entry and nothing of A's, even when asking for it.
    let b_tok = token(b.id, b.admin);
    assert_eq!(entries_for(&b_tok, "ledger.invoices", b_inv).await.len(), 1);
    assert_eq!(entries_for(&b_tok, "ledger.invoices", a_inv).await.len(), 0);
    let r = Api::new()
        .get("/audit_log?select=row_key&limit=10000", Some(&b_tok))
        .await;
    assert!(!r
        .rows()
        .iter()
        .any(|e| e["row_key"]["id"] == json!(a_inv.to_string())));

    // A role without audit.read: 403 naming it. No token: 401.
    for q in [
        "INSERT INTO tenancy.roles (tenant_id, name) VALUES ($1, 'clerk')",
        "INSERT INTO tenancy.role_permissions (tenant_id, role, resource, action) VALUES ($1, 'clerk', 'invoices', 'read')",
    ] {
        sqlx::query(q).bind(a.id).execute(&db).await.unwrap();
    }
    let clerk = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO tenancy.user_roles (tenant_id, user_id, role) VALUES ($1, $2, 'clerk')",
    )
    .bind(a.id)
    .bind(clerk)
    .execute(&db)
    .await
    .unwrap();
    let r = Api::new()
        .get("/audit_log", Some(&token(a.id, clerk)))
        .await;
    r.assert_error(403, "PERMISSION_DENIED");
    assert!(r.message().contains("audit.read"), "{r:?}");
    let r = Api::new().get("/invoices", Some(&token(a.id, clerk))).await;
    assert_eq!(r.status, 200, "the clerk reads invoices: {r:?}");
    let r = Api::new().get("/audit_log", None).await;
    assert_eq!(r.status, 401, "{r:?}");

    // An analyst in SQL: only the tenant set, and nothing without one.
    let mut c = session_as("analyst", Some(&a)).await;
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM tenancy.audit_log")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(tenants, [a.id]);
    let mut c = session_as("analyst", None).await;
    expect_db_error(
        sqlx::query("SELECT count(*) FROM tenancy.audit_log")
            .fetch_one(&mut c)
            .await,
        "TN001",
    );
}

#[tokio::test]
async fn the_log_is_append_only() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    insert_invoice(&db, &t, "INV-RO", "5.00").await;
    let tok = token(t.id, t.admin);
    // Over HTTP, even an admin cannot change or delete entries.
    let api = Api::new();
    let r = api
        .write(
            Method::PATCH,
            "/audit_log?id=gt.0",
            &tok,
            Some(&json!({"actor": null})),
        )
        .await;
    r.assert_error(403, "42501");
    let r = api
        .write(Method::DELETE, "/audit_log?id=gt.0", &tok, None)
        .await;
    r.assert_error(403, "42501");
    let r = api
        .write(
            Method::POST,
            "/audit_log",
            &tok,
            Some(&json!({"action": "INSERT"})),
        )
        .await;
    r.assert_error(403, "42501");
    // In SQL, no API, analyst or job role may write it.
    for role in [
        "authenticated",
        "analyst",
        "tenancy_jobs",
        "tenancy_maintenance",
    ] {
        for stmt in [
            "UPDATE tenancy.audit_log SET actor = NULL",
            "DELETE FROM tenancy.audit_log",
            "TRUNCATE tenancy.audit_log",
            "INSERT INTO tenancy.audit_log (tenant_id, action, table_name, row_key) VALUES (gen_random_uuid(), 'INSERT', 'x', '{}')",
        ] {
            let mut c = session_as(role, Some(&t)).await;
            let e = expect_db_error(c.execute(stmt).await, "42501");
            assert!(e.message.contains("permission denied"), "{role}: {stmt}: {e:?}");
        }
    }
    // Not even its owner: a trigger refuses, naming the only way out.
    let e = expect_db_error(
        sqlx::query("DELETE FROM tenancy.audit_log WHERE tenant_id = $1")
            .bind(t.id)
            .execute(&db)
            .await,
        "42501",
    );
    assert_eq!(
        e.message,
        "tenancy.audit_log is append-only: entries cannot be deleted"
    );
    let e = expect_db_error(
        sqlx::query("UPDATE tenancy.audit_log SET actor = NULL WHERE tenant_id = $1")
            .bind(t.id)
            .execute(&db)
            .await,
        "42501",
    );
    assert_eq!(
        e.message,
        "tenancy.audit_log is append-only: entries cannot be updated"
    );
    // Setting the maintenance flag by hand is reserved to superusers.
    let mut c = session_as("authenticated", None).await;
    let e = expect_db_error(
        c.execute("SET LOCAL tenancy.audit_maintenance = on").await,
        "42501",
    );
    assert!(e.message.contains("tenancy.audit_maintenance"), "{e:?}");
}

#[tokio::test]
async fn only_the_dba_enables_audit_and_only_the_maintenance_role_maintains() {
    let db = admin().await;
    for (role, call) in [
        (
            "authenticated",
            "SELECT tenancy.enable_audit('ledger.invoices')",
        ),
        (
            "authenticated",
            "SELECT tenancy.disable_audit('ledger.invoices')",
        ),
        ("authenticated", "SELECT * FROM tenancy.audit_maintain()"),
        ("analyst", "SELECT * FROM tenancy.audit_maintain()"),
        ("tenancy_jobs", "SELECT * FROM tenancy.audit_maintain()"),
        // The trigger's helpers (it runs as the extension's owner).
        ("authenticated", "SELECT tenancy._request_source()"),
        ("analyst", "SELECT * FROM tenancy._citus_table_of('ledger.invoices_102008')"),
        ("analyst", "SELECT tenancy._audit_shard_here(gen_random_uuid())"),
        ("analyst", "SELECT tenancy._distribute_audit_log()"),
        ("analyst", "SELECT * FROM tenancy.scale_out()"),
    ] {
        let mut c = session_as(role, None).await;
        expect_db_error(c.execute(call).await, "42501");
    }
    // Bad input names the problem.
    // (No column is called tenant_id, or tenancy.check() would flag the
    // tables as unscoped while other tests run.)
    db.execute("CREATE TABLE IF NOT EXISTS public.audit_no_pk (owner uuid, x int)")
        .await
        .unwrap();
    db.execute("CREATE TABLE IF NOT EXISTS public.audit_no_tenant (id int PRIMARY KEY)")
        .await
        .unwrap();
    db.execute("CREATE OR REPLACE VIEW public.audit_view AS SELECT * FROM public.audit_no_tenant")
        .await
        .unwrap();
    for (call, message) in [
        (
            "SELECT tenancy.enable_audit('public.audit_no_pk', 'owner')",
            "public.audit_no_pk has no primary key",
        ),
        (
            "SELECT tenancy.enable_audit('public.audit_no_tenant')",
            "public.audit_no_tenant has no uuid column \"tenant_id\"",
        ),
        (
            "SELECT tenancy.enable_audit('public.audit_view')",
            "public.audit_view is not a table",
        ),
        (
            "SELECT tenancy.enable_audit('public.no_such_table')",
            "relation \"public.no_such_table\" does not exist",
        ),
    ] {
        let e = db_error(db.execute(call).await.unwrap_err());
        assert_eq!(e.message, message, "{call}");
        assert!(e.code == "22023" || e.code == "42P01", "{call}: {e:?}");
    }
    db.execute(
        "DROP VIEW public.audit_view; DROP TABLE public.audit_no_pk, public.audit_no_tenant",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn pg_cron_drops_months_past_retention_as_whole_partitions() {
    let _turn = MAINTENANCE.lock().await;
    let db = admin().await;
    let (command, role): (String, String) = sqlx::query_as(
        "SELECT command, username FROM cron.job WHERE jobname = 'pg_tenancy: audit maintenance'",
    )
    .fetch_one(&db)
    .await
    .expect("the audit maintenance job is registered with pg_cron");
    assert_eq!(
        (command.as_str(), role.as_str()),
        ("SELECT tenancy.audit_maintain()", "tenancy_maintenance")
    );

    // An entry from 400 days ago lands in the default partition; a recent one
    // in this month's.
    let t = new_tenant(&db).await;
    let old_id: i64 = sqlx::query_scalar(
        "INSERT INTO tenancy.audit_log (at, tenant_id, action, table_name, row_key) \
         VALUES (now() - interval '400 days', $1, 'INSERT', 'test.old', '{}') RETURNING id",
    )
    .bind(t.id)
    .fetch_one(&db)
    .await
    .unwrap();
    let old_part: String = sqlx::query_scalar(
        "SELECT 'tenancy.audit_log_p' || to_char(date_trunc('month', now() - interval '400 days', 'UTC') AT TIME ZONE 'UTC', 'YYYY_MM')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let recent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tenancy.audit_log WHERE at > now() - interval '1 day'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(recent > 0);

    // pg_cron runs the same command as the same role, with a retention of
    // 300 days for that role: the old month is first moved out of the
    // default partition, then dropped whole.
    db.execute("ALTER ROLE tenancy_maintenance SET tenancy.audit_retention = 300")
        .await
        .unwrap();
    let job = format!("test audit maintenance {}", Uuid::new_v4());
    let job_id: i64 = sqlx::query_scalar(
        "SELECT cron.schedule_in_database($1, '* * * * *', $2, current_database(), 'tenancy_maintenance', true)",
    )
    .bind(&job)
    .bind(&command)
    .fetch_one(&db)
    .await
    .unwrap();
    let status = finish_cron_job(&db, job_id).await;
    db.execute("ALTER ROLE tenancy_maintenance RESET tenancy.audit_retention")
        .await
        .unwrap();
    assert_eq!(
        status, "succeeded",
        "pg_cron runs audit_maintain within 150 s"
    );

    let gone: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy.audit_log WHERE id = $1")
        .bind(old_id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(gone, 0, "the old entry left with its partition");
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&old_part)
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(!exists, "{old_part} was dropped");
    let still: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tenancy.audit_log WHERE at > now() - interval '1 day'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(still >= recent, "recent entries stay: {still} < {recent}");
    // The months ahead exist, so new entries never wait for the job.
    let ahead: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'tenancy.audit_log'::regclass \
         AND inhrelid::regclass::text >= 'tenancy.audit_log_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(ahead >= 3, "this month and the next two have partitions");
}

/// 0.3.0's audit_maintain locked partitions one at a time as it went, and
/// deadlocked with a transaction that wrote an entry and then read the log:
/// PostgreSQL cancelled one of them. Now it waits for the writer, and both
/// succeed.
#[tokio::test]
async fn maintenance_waits_for_a_writer_that_then_reads_the_log() {
    use sqlx::Connection;
    let _turn = MAINTENANCE.lock().await;
    let db = admin().await;
    // An entry from 400 days ago gives the maintainer a month to create
    // and, with a 300-day retention, to drop.
    let t = new_tenant(&db).await;
    sqlx::query(
        "INSERT INTO tenancy.audit_log (at, tenant_id, action, table_name, row_key) \
         VALUES (now() - interval '400 days', $1, 'INSERT', 'test.deadlock', '{}')",
    )
    .bind(t.id)
    .execute(&db)
    .await
    .unwrap();

    // The writer: an open transaction that has written an audit entry.
    let mut writer = sqlx::PgConnection::connect(&stack().db_url).await.unwrap();
    writer.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT tenancy.create_tenant($1, 'Deadlock writer')")
        .bind(format!(
            "t-w-{}",
            &Uuid::new_v4().simple().to_string()[..10]
        ))
        .execute(&mut writer)
        .await
        .unwrap();

    // The maintainer starts and has to wait for the writer.
    let mut maintainer = sqlx::PgConnection::connect(&stack().db_url).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut maintainer)
        .await
        .unwrap();
    let run = tokio::spawn(async move {
        maintainer
            .execute("BEGIN; SET LOCAL tenancy.audit_retention = 300")
            .await
            .unwrap();
        let done: Result<Vec<(String, String)>, sqlx::Error> =
            sqlx::query_as("SELECT action, partition_name FROM tenancy.audit_maintain()")
                .fetch_all(&mut maintainer)
                .await;
        maintainer.execute("COMMIT").await.unwrap();
        done
    });
    // Waiting: queued for the lock, or between two tries (on Citus it does
    // not queue: see audit_maintain).
    let mut waited = false;
    for _ in 0..200 {
        waited = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)
                 OR EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'PgSleep')",
        )
        .bind(pid)
        .fetch_one(&db)
        .await
        .unwrap();
        if waited {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(waited, "audit_maintain waits for the open writer");

    // The writer now reads the log, and commits.
    let seen: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tenancy.audit_log WHERE table_name = 'tenancy.tenants'",
    )
    .fetch_one(&mut writer)
    .await
    .expect("the writer reads the log while maintenance waits (no deadlock)");
    assert!(seen > 0);
    writer.execute("COMMIT").await.expect("the writer commits");

    let done = run
        .await
        .unwrap()
        .expect("audit_maintain succeeds once the writer is done (no deadlock)");
    assert!(
        done.iter().any(|(a, _)| a == "dropped"),
        "the old month is dropped: {done:?}"
    );
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tenancy.audit_log WHERE table_name = 'test.deadlock'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(left, 0);
}
