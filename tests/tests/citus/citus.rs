//! What only a Citus cluster has: each tenant's rows on one worker, and the
//! tenant context reaching the workers signed, never forgeable.

use integration::*;
use reqwest::Method;
use serde_json::json;
use sqlx::{Connection, PgPool};
use uuid::Uuid;

fn workers() -> Vec<String> {
    std::env::var("PG_TENANCY_TEST_WORKERS")
        .expect("PG_TENANCY_TEST_WORKERS is not set: run these tests through scripts/test_citus")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// A login that is a member of `analyst` (may set any tenant and read the
/// ledger) and of `authenticated` (may write it), on every node.
async fn analyst(db: &PgPool) -> String {
    new_login(db, "GRANT analyst, authenticated TO {login}").await
}

#[tokio::test]
async fn each_tenants_rows_sit_on_one_worker_and_tenants_spread() {
    let db = admin().await;
    let kinds: Vec<(String, String)> = sqlx::query_as(
        "SELECT logicalrelid::regclass::text, partmethod::text FROM pg_dist_partition ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(
        !kinds.iter().any(|(t, _)| t == "tenancy.idempotency_keys"),
        "idempotency keys stay an ordinary table of the coordinator: {kinds:?}"
    );
    for (table, method) in [
        ("ledger.invoices", "h"),
        ("ledger.bank_transactions", "h"),
        ("ledger.matches", "h"),
        ("tenancy.tenants", "n"),
        ("tenancy.user_roles", "n"),
        ("tenancy.role_permissions", "n"),
    ] {
        assert!(
            kinds.contains(&(table.to_string(), method.to_string())),
            "{table} is not {method}: {kinds:?}"
        );
    }
    let mut nodes = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let t = new_tenant(&db).await;
        insert_invoice(&db, &t, "INV-1", "10.00").await;
        let node = node_of(&db, "ledger.invoices", t.id).await;
        for table in ["ledger.bank_transactions", "ledger.matches"] {
            assert_eq!(
                node_of(&db, table, t.id).await,
                node,
                "{table} of {} is elsewhere",
                t.slug
            );
        }
        nodes.insert(node);
    }
    assert_eq!(nodes.len(), 2, "12 tenants all on {nodes:?}");
}

#[tokio::test]
async fn an_analyst_reads_and_writes_through_the_coordinator_in_its_tenant_only() {
    let db = admin().await;
    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    insert_invoice(&db, &a, "INV-A", "10.00").await;
    insert_invoice(&db, &b, "INV-B", "20.00").await;
    let role = analyst(&db).await;
    let mut c = connect_as(&stack().db_url, &role).await;
    let mut tx = c.begin().await.unwrap();
    sqlx::query("SELECT tenancy.set_tenant($1)")
        .bind(&a.slug)
        .execute(&mut *tx)
        .await
        .unwrap();
    // A query over every shard, and one routed to a's shard.
    let all: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT tenant_id, reference FROM ledger.invoices ORDER BY reference")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert_eq!(all, vec![(a.id, "INV-A".to_string())]);
    let theirs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger.invoices WHERE tenant_id = $1")
            .bind(b.id)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(theirs, 0);
    sqlx::query(
        "INSERT INTO ledger.invoices (amount, currency, issue_date, reference) VALUES (5, 'EUR', '2026-11-01', 'INV-A2')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Another tenant's id is refused on write, wherever its shard is.
    let mut tx = c.begin().await.unwrap();
    sqlx::query("SELECT tenancy.set_tenant($1)")
        .bind(&a.slug)
        .execute(&mut *tx)
        .await
        .unwrap();
    let e = expect_db_error(
        sqlx::query(
            "INSERT INTO ledger.invoices (tenant_id, amount, currency, issue_date, reference) VALUES ($1, 5, 'EUR', '2026-11-01', 'X')",
        )
        .bind(b.id)
        .execute(&mut *tx)
        .await,
        "42501",
    );
    assert!(e.message.contains("row-level security"), "{e:?}");
    drop(tx);

    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT tenant_id, reference FROM ledger.invoices WHERE tenant_id IN ($1, $2) ORDER BY reference",
    )
    .bind(a.id)
    .bind(b.id)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            (a.id, "INV-A".to_string()),
            (a.id, "INV-A2".to_string()),
            (b.id, "INV-B".to_string())
        ]
    );
}

#[tokio::test]
async fn without_a_tenant_every_shard_fails_closed() {
    let db = admin().await;
    let role = analyst(&db).await;
    let mut c = connect_as(&stack().db_url, &role).await;
    for sql in [
        "SELECT count(*) FROM ledger.invoices",
        "SELECT count(*) FROM ledger.bank_transactions",
    ] {
        let mut tx = c.begin().await.unwrap();
        let e = expect_db_error(
            sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut *tx).await,
            "TN001",
        );
        assert!(e.message.contains("no tenant"), "{e:?}");
    }
}

#[tokio::test]
async fn a_context_written_by_hand_is_refused_on_every_node() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    insert_invoice(&db, &t, "INV-1", "10.00").await;
    let role = analyst(&db).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged = format!("v1;{};;;{now};*:*;{}", t.id, "ab".repeat(32));
    let mut urls = vec![stack().db_url];
    urls.extend(workers());
    for url in urls {
        let mut c = connect_as(&url, &role).await;
        let mut tx = c.begin().await.unwrap();
        sqlx::query(&format!("SET LOCAL tenancy.context = '{forged}'"))
            .execute(&mut *tx)
            .await
            .unwrap();
        let e = expect_db_error(
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ledger.invoices")
                .fetch_one(&mut *tx)
                .await,
            "42501",
        );
        assert!(
            e.message
                .contains("tenancy.context was refused: its signature does not match"),
            "{url}: {e:?}"
        );
    }
}

/// A line the coordinator signed for one session, seen by someone else (in
/// a worker's pg_stat_activity or logs), is refused when replayed from
/// another session: it names the backend that signed it, and a worker
/// compares that with the one its connection was opened for. (A session
/// that names itself after the signer's connections gets a Citus error
/// here; one that also allows nested distributed execution, or poses as a
/// rebalancer, is not stopped: README.) The signing session reads its rows.
#[tokio::test]
async fn a_signed_line_replayed_from_another_session_is_refused() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    insert_invoice(&db, &t, "INV-R", "10.00").await;
    let mut owner = db.acquire().await.unwrap();
    let mut tx = owner.begin().await.unwrap();
    set_tenant(&mut *tx, &t.slug).await;
    let line: String = sqlx::query_scalar("SELECT current_setting('tenancy.context')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let own: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.invoices WHERE tenant_id = $1")
        .bind(t.id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(own, 1);
    let gpid: i64 = sqlx::query_scalar("SELECT citus_backend_gpid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let role = analyst(&db).await;
    let mut c = connect_as(&stack().db_url, &role).await;
    for pose in [None, Some(format!("citus_internal gpid={gpid}"))] {
        let mut replay = c.begin().await.unwrap();
        sqlx::query("SET LOCAL citus.propagate_set_commands = local")
            .execute(&mut *replay)
            .await
            .unwrap();
        if let Some(name) = &pose {
            sqlx::query(&format!("SET LOCAL application_name = '{name}'"))
                .execute(&mut *replay)
                .await
                .unwrap();
        }
        sqlx::query(&format!("SET LOCAL tenancy.context = '{line}'"))
            .execute(&mut *replay)
            .await
            .unwrap();
        let read = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM ledger.invoices WHERE tenant_id = $1",
        )
        .bind(t.id)
        .fetch_one(&mut *replay)
        .await;
        let e = match read {
            Ok(n) => panic!("the replayed line was believed: {n} row(s) ({pose:?})"),
            Err(e) => db_error(e),
        };
        if pose.is_none() {
            assert_eq!(
                (e.code.as_str(), e.message.as_str()),
                ("42501", "the tenant context tenancy.context was refused: it was signed for another session than the one this connection serves")
            );
        } else {
            // Posing as a connection Citus opened: the coordinator itself
            // then refuses to run a distributed query from it.
            assert_eq!(
                e.message, "cannot execute a distributed query from a query on a shard",
                "{e:?}"
            );
        }
        replay.rollback().await.unwrap();
    }
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn the_signed_context_is_hidden_from_the_roles_it_serves() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let role = analyst(&db).await;
    let mut c = connect_as(&stack().db_url, &role).await;
    for setting in ["tenancy.context", "tenancy.context_key"] {
        let mut tx = c.begin().await.unwrap();
        sqlx::query("SELECT tenancy.set_tenant($1)")
            .bind(&t.slug)
            .execute(&mut *tx)
            .await
            .unwrap();
        let e = expect_db_error(
            sqlx::query_scalar::<_, String>(&format!("SELECT current_setting('{setting}')"))
                .fetch_one(&mut *tx)
                .await,
            "42501",
        );
        assert!(e.message.contains(setting), "{e:?}");
    }
    // Not even to a monitoring login that may read every setting, nor to a
    // superuser: anyone who read the key could sign any tenant's context.
    let monitor = new_login(&db, "GRANT pg_read_all_settings TO {login}").await;
    let mut m = connect_as(&stack().db_url, &monitor).await;
    let shown: String = sqlx::query_scalar("SELECT current_setting('tenancy.context_key')")
        .fetch_one(&mut m)
        .await
        .unwrap();
    assert_eq!(shown, "(set; not shown)");
    let shown: String =
        sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = 'tenancy.context_key'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(shown, "(set; not shown)");
}

/// EXPLAIN of `call` in `tx`: one task, on the worker that holds `t`.
async fn runs_on_the_tenants_worker(
    db: &PgPool,
    tx: &mut sqlx::PgConnection,
    call: &str,
    t: &Tenant,
) {
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN (COSTS OFF) {call}"))
        .fetch_all(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {call}: {e}"));
    let plan = plan.join("\n");
    let (host, port) = node_of(db, "ledger.invoices", t.id)
        .await
        .split_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap();
    assert!(
        plan.contains("Task Count: 1") && plan.contains(&format!("Node: host={host} port={port} ")),
        "{}: {plan}",
        t.slug
    );
}

/// Two tenants whose shards sit on different workers, each with an invoice
/// and the payment that names it.
async fn one_tenant_per_worker(db: &PgPool) -> Vec<Tenant> {
    let mut by_node = std::collections::BTreeMap::new();
    while by_node.len() < 2 {
        let t = new_tenant(db).await;
        let node = node_of(db, "ledger.invoices", t.id).await;
        by_node.entry(node).or_insert(t);
    }
    let tenants: Vec<Tenant> = by_node.into_values().collect();
    for t in &tenants {
        insert_invoice(db, t, "INV-7001", "120.00").await;
        insert_transaction(db, t, "Payment INV-7001", "120.00").await;
    }
    tenants
}

#[tokio::test]
async fn reconcile_and_the_apply_job_work_for_tenants_on_each_worker() {
    let db = admin().await;
    let tenants = one_tenant_per_worker(&db).await;
    let role = analyst(&db).await;
    let mut c = connect_as(&stack().db_url, &role).await;
    for t in &tenants {
        let mut tx = c.begin().await.unwrap();
        set_tenant(&mut *tx, &t.slug).await;
        let found: Vec<(String, String)> = sqlx::query_as(
            "SELECT i.tenant_id::text, r.grade FROM tenancy.reconcile('ledger.invoices', 'ledger.bank_transactions') r
             JOIN ledger.invoices i ON i.id = r.invoice_id::uuid",
        )
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        assert_eq!(
            found,
            vec![(t.id.to_string(), "auto".to_string())],
            "{}",
            t.slug
        );
    }
    // The scheduled job's own command, as the job's role, from the coordinator:
    // each tenant's run is delegated to the worker that holds the tenant.
    let command: String = sqlx::query_scalar(
        "SELECT command FROM cron.job WHERE jobname = 'pg_tenancy: apply reconciliation'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        command,
        "CALL tenancy.for_each_tenant('ledger_routed.apply_reconciliation_for(uuid)')"
    );
    let mut jobs = connect_as(&stack().db_url, "tenancy_jobs").await;
    for t in &tenants {
        let mut tx = jobs.begin().await.unwrap();
        sqlx::query("SELECT tenancy._job_context($1)")
            .bind(t.id)
            .execute(&mut *tx)
            .await
            .unwrap();
        // The tenant as a constant, as for_each_tenant passes it.
        let call = format!(
            "SELECT * FROM ledger_routed.apply_reconciliation_for('{}'::uuid)",
            t.id
        );
        runs_on_the_tenants_worker(&db, &mut tx, &call, t).await;
        tx.rollback().await.unwrap();
    }
    let slugs: Vec<String> = tenants.iter().map(|t| t.slug.clone()).collect();
    sqlx::query(&command.replace(")')", ")', $1)"))
        .bind(&slugs)
        .execute(&mut jobs)
        .await
        .unwrap();
    for t in &tenants {
        let (status, open): (String, String) = sqlx::query_as(
            "SELECT status, open_amount::text FROM ledger.invoices WHERE tenant_id = $1",
        )
        .bind(t.id)
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(
            (status.as_str(), open.as_str()),
            ("paid", "0.00"),
            "{}",
            t.slug
        );
        let matches: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ledger.matches WHERE tenant_id = $1")
                .bind(t.id)
                .fetch_one(&db)
                .await
                .unwrap();
        assert_eq!(matches, 1, "{}", t.slug);
    }
}

/// The reconciliation RPCs through the coordinator, both run on the worker
/// that holds the tenant (reconcile: see the next test). Apply goes through
/// ledger_routed.apply_reconciliation_for, which refuses any tenant but the
/// current one on that worker; each tenant gets its own candidates and
/// matches, and a readonly user's apply is refused with the 403 of one node.
/// A NULL tenant, in any form, is no call: the function is STRICT, so the
/// planner drops the call before Citus, which crashes planning a NULL
/// distribution argument, looks at it.
#[tokio::test]
async fn reconciliation_rpcs_and_null_tenants() {
    let db = admin().await;
    let tenants = one_tenant_per_worker(&db).await;
    for t in &tenants {
        let mut tx = db.begin().await.unwrap();
        set_tenant(&mut *tx, &t.slug).await;
        let other = tenants.iter().find(|o| o.id != t.id).unwrap();
        let e = expect_db_error(
            sqlx::query_scalar::<_, serde_json::Value>(&format!(
                "SELECT * FROM ledger_routed.apply_reconciliation_for('{}'::uuid)",
                other.id
            ))
            .fetch_one(&mut *tx)
            .await,
            "42501",
        );
        assert_eq!(
            e.message,
            format!("tenant {} is not the current tenant", other.id)
        );
        tx.rollback().await.unwrap();
    }
    let mut jobs = connect_as(&stack().db_url, "tenancy_jobs").await;
    sqlx::query(
        "CREATE FUNCTION pg_temp.wrapped() RETURNS SETOF jsonb LANGUAGE sql
         AS 'SELECT * FROM ledger_routed.apply_reconciliation_for(NULL)'",
    )
    .execute(&mut jobs)
    .await
    .unwrap();
    for call in [
        "SELECT * FROM ledger_routed.apply_reconciliation_for(NULL)",
        "SELECT * FROM ledger_routed.apply_reconciliation_for(tenant => NULL)",
        "SELECT * FROM (SELECT * FROM ledger_routed.apply_reconciliation_for(NULL)) s",
        "SELECT ledger_routed.apply_reconciliation_for(NULL::text::uuid)",
        "SELECT * FROM pg_temp.wrapped()",
    ] {
        let none: Option<serde_json::Value> = sqlx::query_scalar(call)
            .fetch_one(&mut jobs)
            .await
            .unwrap_or_else(|e| panic!("{call}: {e}"));
        assert_eq!(none, None, "{call}");
    }
    let none: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT * FROM ledger_routed.apply_reconciliation_for($1)")
            .bind(None::<Uuid>)
            .fetch_one(&mut jobs)
            .await
            .unwrap();
    assert_eq!(none, None);
    // Every node still up, a new connection served.
    let mut fresh = connect_as(&stack().db_url, "tenancy_jobs").await;
    let alive: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut fresh)
        .await
        .unwrap();
    assert_eq!(alive, 1);
    for t in &tenants {
        let r = rpc(&token(t.id, t.readonly), "apply_reconciliation", json!({})).await;
        r.assert_error(403, "PERMISSION_DENIED");
        assert_eq!(r.message(), "permission matches.create is required");
        let r = rpc(&token(t.id, t.admin), "reconcile", json!({})).await;
        assert_eq!(r.status, 200, "{}: {r:?}", t.slug);
        let invoices: Vec<String> =
            sqlx::query_scalar("SELECT id::text FROM ledger.invoices WHERE tenant_id = $1")
                .bind(t.id)
                .fetch_all(&db)
                .await
                .unwrap();
        let found: Vec<(&str, &str)> = r
            .rows()
            .iter()
            .map(|m| {
                (
                    m["invoice_id"].as_str().unwrap(),
                    m["grade"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(found, vec![(invoices[0].as_str(), "auto")], "{}", t.slug);
        let r = rpc(&token(t.id, t.admin), "apply_reconciliation", json!({})).await;
        assert_eq!(
            (r.status, &r.body["applied"]),
            (200, &json!(1)),
            "{}: {r:?}",
            t.slug
        );
        let open: String = sqlx::query_scalar(
            "SELECT open_amount::text FROM ledger.invoices WHERE tenant_id = $1",
        )
        .bind(t.id)
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(open, "0.00", "{}", t.slug);
    }
}

/// POST /rpc/reconcile ends in ledger_routed.reconcile_for, which runs on
/// the worker that holds the tenant. Only its owner (through
/// ledger.reconcile, which POST /rpc/reconcile calls) may call it. It
/// returns a set, so a NULL tenant would crash the node that plans the
/// call; with pg_tenancy preloaded its planner hook refuses that call
/// whoever makes it, so check() names the function even when others may
/// call it only where pg_tenancy is not preloaded.
#[tokio::test]
async fn reconcile_runs_on_the_tenants_worker_and_only_its_owner_may_call_it() {
    let db = admin().await;
    let tenants = one_tenant_per_worker(&db).await;
    for t in &tenants {
        let other = tenants.iter().find(|o| o.id != t.id).unwrap();
        let mut tx = db.begin().await.unwrap();
        set_tenant(&mut *tx, &t.slug).await;
        let call = format!(
            "SELECT * FROM ledger_routed.reconcile_for('{}'::uuid, '{{}}'::jsonb)",
            t.id
        );
        runs_on_the_tenants_worker(&db, &mut tx, &call, t).await;
        let e = expect_db_error(
            sqlx::query(&format!(
                "SELECT * FROM ledger_routed.reconcile_for('{}'::uuid, '{{}}'::jsonb)",
                other.id
            ))
            .fetch_all(&mut *tx)
            .await,
            "42501",
        );
        assert_eq!(
            e.message,
            format!("tenant {} is not the current tenant", other.id)
        );
        tx.rollback().await.unwrap();

        // The API role reaches it only through ledger.reconcile.
        let mut api_role = session_as("authenticated", Some(t)).await;
        let e = expect_db_error(
            sqlx::query(&format!(
                "SELECT * FROM ledger_routed.reconcile_for('{}'::uuid, '{{}}'::jsonb)",
                t.id
            ))
            .fetch_all(&mut api_role)
            .await,
            "42501",
        );
        assert_eq!(e.message, "permission denied for function reconcile_for");
    }

    let findings = |c: &'static str| {
        format!("SELECT object_name FROM tenancy.check() WHERE severity = 'error' AND object_name LIKE '{c}%'")
    };
    let named: Vec<String> = sqlx::query_scalar(&findings("ledger_routed.reconcile_for"))
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(named, Vec::<String>::new(), "only its owner may call it");
    let mut tx = db.begin().await.unwrap();
    sqlx::query(
        "GRANT EXECUTE ON FUNCTION ledger_routed.reconcile_for(uuid, jsonb) TO authenticated",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let named: Vec<String> = sqlx::query_scalar(&findings("ledger_routed.reconcile_for"))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(named, Vec::<String>::new(), "pg_tenancy is preloaded");
    sqlx::query("SET LOCAL ROLE authenticated").execute(&mut *tx).await.unwrap();
    let e = expect_db_error(
        sqlx::query("SELECT * FROM ledger_routed.reconcile_for(NULL, '{}')")
            .fetch_all(&mut *tx)
            .await,
        "22004",
    );
    assert_eq!(
        e.message,
        "argument 1 of ledger_routed.reconcile_for(uuid,jsonb), which Citus routes the call by, is NULL"
    );
    tx.rollback().await.unwrap();
}

/// A statement that does not name its tenant runs on the one worker that
/// holds the current tenant (tenant_routing.rs), for tenants on each
/// worker: reads, joins, subqueries; writes change the tenant's rows only.
/// A plan Postgres keeps (a prepared statement, PL/pgSQL) serves each
/// tenant after the context changes, across transactions and within one.
/// A write naming another tenant changes nothing (and does not fail: Citus
/// 13.2 fails a write in WITH that is left with no shard).
#[tokio::test]
async fn statements_without_a_tenant_filter_run_on_the_tenants_worker_only() {
    let db = admin().await;
    let tenants = one_tenant_per_worker(&db).await;
    let role = analyst(&db).await;
    let mut c = connect_as(&stack().db_url, &role).await;
    for t in &tenants {
        let mut tx = c.begin().await.unwrap();
        set_tenant(&mut *tx, &t.slug).await;
        for statement in [
            "SELECT count(*) FROM api.invoices",
            "SELECT count(*) FROM ledger.invoices i JOIN ledger.bank_transactions b ON b.tenant_id = i.tenant_id",
            "SELECT count(*) FROM ledger.invoices WHERE id IN (SELECT invoice_id FROM ledger.matches)",
        ] {
            runs_on_the_tenants_worker(&db, &mut tx, statement, t).await;
        }
        tx.rollback().await.unwrap();
        // Writes (their routing: PATCH in the next test, which Citus runs
        // only on one worker): the tenant's rows only. (A transaction of
        // their own: after an EXPLAIN, Citus 13.2 refuses a write whose
        // policies re-read a login's bindings changed meanwhile.)
        let mut tx = c.begin().await.unwrap();
        set_tenant(&mut *tx, &t.slug).await;
        let n = sqlx::query("UPDATE ledger.invoices SET counterparty = 'Routed'")
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(n.rows_affected(), 1, "{}", t.slug);
        let n = sqlx::query("DELETE FROM api.bank_transactions WHERE amount > 0")
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(n.rows_affected(), 1, "{}", t.slug);
        tx.rollback().await.unwrap();
    }

    // One prepared statement (sqlx prepares each text once per connection;
    // Postgres keeps a generic plan after five runs), tenants taking turns.
    let same = "SELECT count(*), min(tenant_id::text) FROM ledger.invoices";
    sqlx::query(
        "CREATE FUNCTION pg_temp.mine() RETURNS text LANGUAGE plpgsql AS
         $$ BEGIN RETURN (SELECT count(*) || ' ' || min(tenant_id::text) FROM ledger.invoices); END $$",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let sees = |t: &Tenant| (1_i64, Some(t.id.to_string()));
    for round in 0..8 {
        for t in &tenants {
            let mut tx = c.begin().await.unwrap();
            set_tenant(&mut *tx, &t.slug).await;
            let got: (i64, Option<String>) =
                sqlx::query_as(same).fetch_one(&mut *tx).await.unwrap();
            assert_eq!(got, sees(t), "round {round}, {}", t.slug);
            let got: String = sqlx::query_scalar("SELECT pg_temp.mine()")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            assert_eq!(got, format!("1 {}", t.id), "round {round}, {}", t.slug);
            tx.commit().await.unwrap();
        }
    }
    let mut tx = c.begin().await.unwrap();
    for t in tenants.iter().chain(tenants.iter().rev()) {
        set_tenant(&mut *tx, &t.slug).await;
        let got: (i64, Option<String>) = sqlx::query_as(same).fetch_one(&mut *tx).await.unwrap();
        assert_eq!(got, sees(t), "{} within one transaction", t.slug);
        let got: String = sqlx::query_scalar("SELECT pg_temp.mine()")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(
            got,
            format!("1 {}", t.id),
            "{} within one transaction",
            t.slug
        );
    }
    tx.rollback().await.unwrap();

    // Another tenant's rows, named: nothing changes, nothing fails.
    let (a, b) = (&tenants[0], &tenants[1]);
    let mut tx = c.begin().await.unwrap();
    set_tenant(&mut *tx, &a.slug).await;
    for statement in [
        format!("WITH d AS (DELETE FROM ledger.bank_transactions WHERE tenant_id = '{}' RETURNING 1) SELECT count(*) FROM d", b.id),
        format!("WITH d AS (DELETE FROM api.bank_transactions WHERE tenant_id IN ('{}', '{}') AND amount < 0 RETURNING 1) SELECT count(*) FROM d", a.id, b.id),
        format!("WITH u AS (UPDATE ledger.invoices SET counterparty = 'X' WHERE tenant_id = '{}' RETURNING 1) SELECT count(*) FROM u", b.id),
    ] {
        let n: i64 = sqlx::query_scalar(&statement).fetch_one(&mut *tx).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
        assert_eq!(n, 0, "{statement}");
    }
    tx.commit().await.unwrap();
    let theirs: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ledger.bank_transactions WHERE tenant_id = $1),
                (SELECT count(*) FROM ledger.invoices WHERE tenant_id = $1 AND counterparty = 'X')",
    )
    .bind(b.id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(theirs, (1, 0));
}

/// Citus 13.2 crashes the node that plans a call of a distributed function
/// with NULL for its distribution argument (every backend restarts), and
/// checks the privilege to call it only where the call runs. pg_tenancy
/// refuses such a call before Citus plans it, in every form that reaches
/// Citus as NULL, whoever calls it: 22004, and every connection stays up.
#[tokio::test]
async fn a_null_distribution_argument_is_refused_before_citus_plans_it() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let mut bystander = connect_as(&stack().db_url, "postgres").await;
    let message = "argument 1 of ledger_routed.reconcile_for(uuid,jsonb), which Citus routes the call by, is NULL";
    for role in ["authenticated", "ledger_owner", "postgres"] {
        for call in [
            "SELECT * FROM ledger_routed.reconcile_for(NULL, '{}')",
            "SELECT count(*) FROM ledger_routed.reconcile_for(NULL::text::uuid, '{}')",
            "SELECT ledger_routed.reconcile_for(nullif('a', 'a')::uuid, '{}')",
        ] {
            let mut c = session_as(role, Some(&t)).await;
            let e = expect_db_error(sqlx::query(call).fetch_all(&mut c).await, "22004");
            assert_eq!(e.message, message, "{role}: {call}");
        }
        let mut c = session_as(role, Some(&t)).await;
        let e = expect_db_error(
            sqlx::query("SELECT * FROM ledger_routed.reconcile_for($1, '{}')")
                .bind(None::<Uuid>)
                .fetch_all(&mut c)
                .await,
            "22004",
        );
        assert_eq!(e.message, message, "{role}: a NULL parameter");
    }
    let alive: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut bystander)
        .await
        .unwrap();
    assert_eq!(alive, 1, "a connection opened before is still served");

    // Any other function with a NULL argument is called as ever, also in a
    // database of the same server without the citus extension.
    let options: sqlx::postgres::PgConnectOptions = stack().db_url.parse().unwrap();
    let mut other_db = sqlx::PgConnection::connect_with(&options.database("postgres"))
        .await
        .unwrap();
    for c in [&mut bystander, &mut other_db] {
        let got: String = sqlx::query_scalar("SELECT concat(NULL::text, 'x')")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        assert_eq!(got, "x");
    }
}

/// A statement that writes a shared (reference) table takes the
/// administration lock on the coordinator for its transaction, also when it
/// writes through a data-modifying WITH under a SELECT; a read takes none.
/// (Citus locks reference tables in an order that deadlocks concurrent
/// administration otherwise.)
#[tokio::test]
async fn writes_to_shared_tables_take_the_administration_lock() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let held = "SELECT count(*) FROM pg_locks
                WHERE locktype = 'advisory' AND objsubid = 3 AND pid = pg_backend_pid()";
    for (statement, locks) in [
        ("SELECT count(*) FROM tenancy.tenants WHERE id = $1", 0),
        ("UPDATE tenancy.tenants SET name = name WHERE id = $1", 1),
        (
            "WITH w AS (UPDATE tenancy.tenants SET name = name WHERE id = $1 RETURNING 1) SELECT count(*) FROM w",
            1,
        ),
    ] {
        let mut tx = db.begin().await.unwrap();
        sqlx::query(statement).bind(t.id).execute(&mut *tx).await.unwrap();
        let n: i64 = sqlx::query_scalar(held).fetch_one(&mut *tx).await.unwrap();
        assert_eq!(n, locks, "{statement}");
        tx.rollback().await.unwrap();
    }
}

/// PATCH and DELETE on the ledger endpoints write through the api views,
/// which Citus 13.2 refuses by itself; pg_tenancy's planner hook
/// (view_writes.rs) lets it plan them as the writes of the tables. Both
/// work as on one node, with or without the tenant as a filter: without
/// one, the hook routes them to the tenant's worker (tenant_routing.rs),
/// where Citus runs PostgREST's PATCH, which it cannot run over every
/// shard. Isolation, RBAC, privileges on the view and audit hold; moving a
/// row to another tenant is refused by Citus (0A000) before row level
/// security would refuse it.
#[tokio::test]
async fn patch_and_delete_on_ledger_endpoints_work_and_stay_isolated() {
    let db = admin().await;
    let (t, other) = (new_tenant(&db).await, new_tenant(&db).await);
    let (kept, gone) = (
        insert_invoice(&db, &t, "INV-P", "10.00").await,
        insert_invoice(&db, &t, "INV-D", "11.00").await,
    );
    let (admin_token, reader, theirs) = (
        token(t.id, t.admin),
        token(t.id, t.readonly),
        token(other.id, other.admin),
    );
    let api = Api::new();
    let counterparty = |id: Uuid| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT tenant_id::text || ' ' || counterparty FROM ledger.invoices WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&db)
            .await
            .unwrap()
        }
    };
    let unchanged = Some(format!("{} Initech", t.id));
    let patch = json!({"counterparty": "Changed"});
    let routed = |id: Uuid, tenant: Uuid| format!("/invoices?id=eq.{id}&tenant_id=eq.{tenant}");

    // Refused, changing nothing: a readonly member's PATCH and DELETE;
    // another tenant's, with and without its tenant as a filter; a move to
    // another tenant.
    api.write(Method::PATCH, &routed(kept, t.id), &reader, Some(&patch))
        .await
        .assert_error(403, "PERMISSION_DENIED");
    api.write(
        Method::DELETE,
        &format!("/invoices?id=eq.{kept}"),
        &reader,
        None,
    )
    .await
    .assert_error(403, "PERMISSION_DENIED");
    for (method, path, body) in [
        (Method::PATCH, routed(kept, t.id), Some(&patch)),
        (
            Method::PATCH,
            format!("/invoices?id=eq.{kept}"),
            Some(&patch),
        ),
        (Method::PATCH, routed(kept, other.id), Some(&patch)),
        (Method::DELETE, format!("/invoices?id=eq.{kept}"), None),
        (Method::DELETE, routed(kept, t.id), None),
        (
            Method::DELETE,
            format!("/invoices?tenant_id=eq.{}", t.id),
            None,
        ),
    ] {
        let r = api.write(method.clone(), &path, &theirs, body).await;
        assert_eq!(
            (r.status, r.rows().len()),
            (200, 0),
            "{method} by another tenant: {r:?}"
        );
    }
    let r = api
        .write(
            Method::PATCH,
            &routed(kept, t.id),
            &admin_token,
            Some(&json!({"tenant_id": other.id})),
        )
        .await;
    r.assert_error(400, "0A000");
    assert_eq!(
        r.message(),
        "modifying the partition value of rows is not allowed"
    );
    assert_eq!(counterparty(kept).await, unchanged);

    // Done: a PATCH without the tenant as a filter and one with it, and a
    // DELETE, each audited once.
    let r = api
        .write(
            Method::PATCH,
            &format!("/invoices?id=eq.{kept}"),
            &admin_token,
            Some(&json!({"counterparty": "First"})),
        )
        .await;
    assert_eq!((r.status, r.rows().len()), (200, 1), "{r:?}");
    assert_eq!(counterparty(kept).await, Some(format!("{} First", t.id)));
    let r = api
        .write(
            Method::PATCH,
            &routed(kept, t.id),
            &admin_token,
            Some(&patch),
        )
        .await;
    assert_eq!((r.status, r.rows().len()), (200, 1), "{r:?}");
    assert_eq!(r.rows()[0]["counterparty"], json!("Changed"));
    assert_eq!(counterparty(kept).await, Some(format!("{} Changed", t.id)));
    let r = api
        .write(
            Method::DELETE,
            &format!("/invoices?id=eq.{gone}"),
            &admin_token,
            None,
        )
        .await;
    assert_eq!((r.status, r.rows().len()), (200, 1), "{r:?}");
    assert_eq!(counterparty(gone).await, None);
    let log = api
        .get(&format!("/audit_log?table_name=eq.ledger.invoices&row_key->>tenant_id=eq.{}&select=action&order=id", t.id), Some(&admin_token))
        .await;
    assert_eq!(
        log.rows(),
        &vec![
            json!({"action": "INSERT"}),
            json!({"action": "INSERT"}),
            json!({"action": "UPDATE"}),
            json!({"action": "UPDATE"}),
            json!({"action": "DELETE"})
        ]
    );

    // The caller's privileges on the view are checked as on one node: a
    // role that may change the table but not the view may not write
    // through it.
    let login = new_login(&db, "GRANT USAGE ON SCHEMA api, ledger TO {login}; GRANT SELECT ON api.invoices TO {login}; GRANT SELECT, UPDATE, DELETE ON ledger.invoices TO {login}; GRANT analyst TO {login}").await;
    let mut c = connect_as(&stack().db_url, &login).await;
    for statement in [
        format!(
            "UPDATE api.invoices SET counterparty = 'X' WHERE id = '{kept}' AND tenant_id = '{}'",
            t.id
        ),
        format!("DELETE FROM api.invoices WHERE id = '{kept}'"),
    ] {
        let mut tx = c.begin().await.unwrap();
        set_tenant(&mut *tx, &t.slug).await;
        let e = expect_db_error(sqlx::query(&statement).execute(&mut *tx).await, "42501");
        assert_eq!(
            e.message, "permission denied for view invoices",
            "{statement}"
        );
        tx.rollback().await.unwrap();
    }

    // A view's WHERE reaches the shards; a security barrier's or a check
    // option's would not, so Citus' refusal stands for those: fail closed.
    let suffix = &Uuid::new_v4().simple().to_string()[..8];
    let (plain, barrier, checked) = (
        format!("public.paid_{suffix}"),
        format!("public.barrier_{suffix}"),
        format!("public.checked_{suffix}"),
    );
    grant(
        &db,
        &format!(
            "CREATE VIEW {plain} AS SELECT * FROM ledger.invoices WHERE status = 'paid';
             CREATE VIEW {barrier} WITH (security_barrier) AS SELECT * FROM ledger.invoices WHERE status = 'paid';
             CREATE VIEW {checked} AS SELECT * FROM ledger.invoices WHERE status = 'open' WITH CHECK OPTION;"
        ),
    )
    .await;
    let deleted = sqlx::query(&format!("DELETE FROM {plain} WHERE id = $1"))
        .bind(kept)
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(
        deleted.rows_affected(),
        0,
        "an open invoice is not in a view of paid ones"
    );
    for statement in [
        format!("DELETE FROM {barrier} WHERE id = '{kept}'"),
        format!("UPDATE {checked} SET status = 'paid' WHERE id = '{kept}'"),
    ] {
        let e = expect_db_error(sqlx::query(&statement).execute(&db).await, "0A000");
        assert_eq!(
            e.message, "cannot modify views when the query contains citus tables",
            "{statement}"
        );
    }
    assert_eq!(counterparty(kept).await, Some(format!("{} Changed", t.id)));
    grant(&db, &format!("DROP VIEW {plain}, {barrier}, {checked}")).await;

    // In SQL, moving a row to another tenant is refused by Citus as well.
    let role = analyst(&db).await;
    let mut c = connect_as(&stack().db_url, &role).await;
    let mut tx = c.begin().await.unwrap();
    set_tenant(&mut *tx, &t.slug).await;
    let e = expect_db_error(
        sqlx::query("UPDATE ledger.invoices SET tenant_id = $1 WHERE id = $2")
            .bind(other.id)
            .bind(kept)
            .execute(&mut *tx)
            .await,
        "0A000",
    );
    assert_eq!(
        e.message,
        "modifying the partition value of rows is not allowed"
    );
}

/// After scale_out, enable() shards a new tenant table of the user's at
/// once: check() finds nothing, its policies stand alone on the shards, and
/// it is isolated and RBAC-protected through the coordinator. A protected
/// distributed table with single-node (restrictive) policies is an error
/// whose fix works.
#[tokio::test]
async fn enable_shards_a_new_tenant_table_and_check_reports_widened_policies() {
    let db = admin().await;
    let errors = |db: PgPool| async move {
        sqlx::query_as::<_, (String, String, String)>(
            "SELECT object_name, problem, fix FROM tenancy.check() WHERE severity = 'error'",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    };
    let name = format!("public.notes_{}", &Uuid::new_v4().simple().to_string()[..8]);
    grant(
        &db,
        &format!(
            "CREATE TABLE {name} (tenant_id uuid NOT NULL, id bigint NOT NULL, body text, PRIMARY KEY (tenant_id, id));
             SELECT tenancy.enable('{name}');
             SELECT tenancy.protect('{name}', 'notes');
             GRANT SELECT, INSERT ON {name} TO authenticated;"
        ),
    )
    .await;
    let kind: String = sqlx::query_scalar(
        "SELECT partmethod::text FROM pg_dist_partition WHERE logicalrelid = $1::regclass",
    )
    .bind(&name)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(kind, "h");
    let left: Vec<_> = errors(db.clone()).await;
    assert!(left.is_empty(), "{left:?}");
    // Its policies: each stands alone (Citus drops RESTRICTIVE on shards).
    let policies: Vec<(String, bool)> = sqlx::query_as(
        "SELECT polname::text, polpermissive FROM pg_policy WHERE polrelid = $1::regclass ORDER BY 1",
    )
    .bind(&name)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(policies.len(), 5, "{policies:?}");
    assert!(
        policies.iter().all(|(_, permissive)| *permissive),
        "{policies:?}"
    );

    // A restrictive RBAC policy on a distributed table (as a single-node
    // protect() writes them) is reported, and protect() rewrites it.
    // (One statement at a time: Citus forwards a DROP POLICY's whole query
    // string to the shards.)
    grant(&db, &format!("DROP POLICY rbac_read ON {name}")).await;
    grant(
        &db,
        &format!(
            "CREATE POLICY rbac_read ON {name} AS RESTRICTIVE FOR SELECT USING (tenancy._permit('notes', 'read'))"
        ),
    )
    .await;
    let found: Vec<_> = errors(db.clone())
        .await
        .into_iter()
        .filter(|(o, _, _)| *o == name)
        .collect();
    assert_eq!(
        found,
        vec![(
            name.clone(),
            "has restrictive RBAC policies, which Citus makes permissive on its shards: a permission alone lets rows through, across tenants".to_string(),
            format!("SELECT tenancy.protect('{name}', 'notes');")
        )]
    );
    grant(&db, &found[0].2).await;
    let left: Vec<_> = errors(db.clone()).await;
    assert!(left.is_empty(), "{left:?}");

    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    let role = analyst(&db).await;
    let mut c = connect_as(&stack().db_url, &role).await;
    for (t, text) in [(&a, "from a"), (&b, "from b")] {
        let mut tx = c.begin().await.unwrap();
        set_tenant(&mut *tx, &t.slug).await;
        sqlx::query(&format!("INSERT INTO {name} (id, body) VALUES (1, $1)"))
            .bind(text)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let mut tx = c.begin().await.unwrap();
    set_tenant(&mut *tx, &a.slug).await;
    let seen: Vec<String> = sqlx::query_scalar(&format!("SELECT body FROM {name}"))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, vec!["from a".to_string()]);
    drop(tx);

    // A user of a whose role may read invoices but not notes: the
    // permission is checked on the worker, from the signed grants.
    let clerk = Uuid::new_v4();
    grant(
        &db,
        &format!(
            "INSERT INTO tenancy.roles (tenant_id, name) VALUES ('{id}', 'clerk');
             INSERT INTO tenancy.role_permissions (tenant_id, role, resource, action) VALUES ('{id}', 'clerk', 'invoices', 'read');
             SELECT tenancy.add_member('{id}', '{clerk}', 'clerk');",
            id = a.id
        ),
    )
    .await;
    let mut tx = c.begin().await.unwrap();
    sqlx::query("SELECT set_config('request.jwt.claims', $1, true)")
        .bind(access_claims(a.id, clerk).to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SET LOCAL ROLE authenticated")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT tenancy.pre_request()")
        .execute(&mut *tx)
        .await
        .unwrap();
    let e = expect_db_error(
        sqlx::query_scalar::<_, String>(&format!("SELECT body FROM {name}"))
            .fetch_all(&mut *tx)
            .await,
        "42501",
    );
    assert_eq!(e.message, "permission notes.read is required");
}

/// The audit log is sharded by tenant with the tables it records: entries of
/// tenants on each worker are read through the coordinator, over HTTP and in
/// SQL, named by their table (not their shard); a change to a reference
/// table (a membership) is recorded once, not once per node; no tenant sees
/// another's entries, and the owner still cannot delete them on the shards.
#[tokio::test]
async fn audit_entries_of_tenants_on_each_worker_are_read_through_the_coordinator_once() {
    let db = admin().await;
    let tenants = one_tenant_per_worker(&db).await;
    let role = analyst(&db).await;
    let mut c = connect_as(&stack().db_url, &role).await;
    let api = Api::new();
    for t in &tenants {
        // The log's shard for the tenant sits with its ledger (citus_shards
        // lists a partitioned table's shards by partition, and leaves out
        // the extension's own default partition).
        let month: String = sqlx::query_scalar(
            "SELECT 'tenancy.audit_log_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(
            node_of(&db, &month, t.id).await,
            node_of(&db, "ledger.invoices", t.id).await
        );
        let tok = token(t.id, t.admin);
        let r = api
            .send(
                Method::POST,
                "/invoices",
                Some(&tok),
                &[
                    ("Prefer", "return=representation"),
                    ("X-Request-Id", "req-citus-audit"),
                ],
                Some(
                    &json!({"amount": "10.50", "currency": "EUR", "issue_date": "2026-11-01",
                             "reference": "INV-AUDIT", "counterparty": "Initech"}),
                ),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let id: Uuid = r.rows()[0]["id"].as_str().unwrap().parse().unwrap();
        // Update and delete in SQL (PATCH and DELETE through the views are
        // refused by Citus: see above).
        let mut tx = c.begin().await.unwrap();
        set_tenant(&mut *tx, &t.slug).await;
        sqlx::query("UPDATE ledger.invoices SET reference = 'INV-AUDIT-2' WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("DELETE FROM ledger.invoices WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let r = api
            .get(
                &format!("/audit_log?table_name=eq.ledger.invoices&row_key->>id=eq.{id}&order=id"),
                Some(&tok),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let log = r.rows();
        let summary: Vec<(&str, &str)> = log
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap(),
                    e["table_name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("INSERT", "ledger.invoices"),
                ("UPDATE", "ledger.invoices"),
                ("DELETE", "ledger.invoices")
            ],
            "{log:#?}"
        );
        assert_eq!(log[0]["actor"], json!(t.admin.to_string()));
        // Written on the worker, attributed as on one node: the login and
        // the request of the coordinator's session, from the signed line.
        assert_eq!(log[0]["request_id"], json!("req-citus-audit"));
        assert_eq!(log[0]["request_path"], json!("/invoices"));
        assert_eq!(log[0]["db_user"], json!("authenticator"));
        assert_eq!(log[0]["new_values"]["reference"], json!("INV-AUDIT"));
        assert_eq!(log[1]["old_values"], json!({"reference": "INV-AUDIT"}));
        assert_eq!(log[1]["new_values"], json!({"reference": "INV-AUDIT-2"}));
        assert_eq!(log[2]["db_user"], json!(role));

        // A membership (tenancy.user_roles, a reference table: a copy on
        // every node, each running the trigger) is one entry.
        let someone = Uuid::new_v4();
        sqlx::query("SELECT tenancy.add_member($1, $2, 'member')")
            .bind(&t.slug)
            .bind(someone)
            .execute(&db)
            .await
            .unwrap();
        let r = api
            .get(
                &format!(
                    "/audit_log?table_name=eq.tenancy.user_roles&new_values->>user_id=eq.{someone}"
                ),
                Some(&tok),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.rows().len(), 1, "{r:?}");
        let everywhere: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tenancy.audit_log WHERE new_values->>'user_id' = $1::text",
        )
        .bind(someone)
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(
            everywhere, 1,
            "the superuser sees one entry in the whole cluster"
        );
    }

    // No shard names anywhere in the log.
    let shard_named: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tenancy.audit_log WHERE (tenancy._citus_table_of(table_name)).logical IS NOT NULL",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(shard_named, 0);

    // Each tenant reads its own entries only, through the coordinator.
    let (a, b) = (&tenants[0], &tenants[1]);
    for (reader, other) in [(a, b), (b, a)] {
        let tok = token(reader.id, reader.admin);
        let keyed = |t: &Tenant| format!("/audit_log?row_key->>tenant_id=eq.{}&select=id", t.id);
        let own = api.get(&keyed(reader), Some(&tok)).await;
        assert_eq!(own.status, 200, "{own:?}");
        assert!(!own.rows().is_empty(), "{own:?}");
        let theirs = api.get(&keyed(other), Some(&tok)).await;
        assert_eq!(theirs.status, 200, "{theirs:?}");
        assert!(theirs.rows().is_empty(), "{theirs:?}");
    }
    let mut tx = c.begin().await.unwrap();
    set_tenant(&mut *tx, &b.slug).await;
    let seen: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM tenancy.audit_log")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, [b.id]);
    tx.rollback().await.unwrap();

    // The append-only trigger runs on the shards: not even the owner deletes.
    for t in &tenants {
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
    }
}
