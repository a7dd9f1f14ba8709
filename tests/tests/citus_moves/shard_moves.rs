//! Moving a tenant's shards to another worker (`citus_move_shard_placement`
//! with Citus' default transfer mode), the rebalancer, and what a node needs
//! for them.

use integration::*;
use reqwest::Method;
use serde_json::json;
use sqlx::{Connection, PgPool};
use uuid::Uuid;

/// Moves the shard group of `tenant` from one worker to the other, with
/// Citus' default transfer mode; returns (from, to).
async fn move_tenant(db: &PgPool, tenant: Uuid) -> (String, String) {
    let from = node_of(db, "ledger.invoices", tenant).await;
    let to: String = sqlx::query_scalar(
        "SELECT n.nodename || ':' || n.nodeport FROM pg_dist_node n
         WHERE n.groupid <> 0 AND n.noderole = 'primary' AND n.nodename || ':' || n.nodeport <> $1",
    )
    .bind(&from)
    .fetch_one(db)
    .await
    .unwrap();
    let (fh, fp) = from.split_once(':').unwrap();
    let (th, tp) = to.split_once(':').unwrap();
    sqlx::query(
        "SELECT citus_move_shard_placement(get_shard_id_for_distribution_column('ledger.invoices', $1),
                                           $2, $3::int, $4, $5::int)",
    )
    .bind(tenant)
    .bind(fh)
    .bind(fp)
    .bind(th)
    .bind(tp)
    .execute(db)
    .await
    .unwrap_or_else(|e| panic!("moving {tenant}'s shards from {from} to {to}: {e}"));
    (from, to)
}

async fn entries(db: &PgPool, tenant: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tenancy.audit_log WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(db)
        .await
        .unwrap()
}

/// check()'s findings about moving shards: (object, problem).
async fn move_findings(db: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT object_name, problem FROM tenancy.check()
         WHERE object_type = 'node' OR problem LIKE '%replica identity%'",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_tenants_shards_move_to_another_worker_with_their_rows_policies_and_audit() {
    let db = admin().await;
    assert_eq!(move_findings(&db).await, vec![], "scale_out() prepared every node");
    let (t, other) = (new_tenant(&db).await, new_tenant(&db).await);
    let invoice = insert_invoice(&db, &t, "INV-MOVE", "42.00").await;
    insert_transaction(&db, &t, "Payment INV-MOVE", "42.00").await;
    let logged = entries(&db, t.id).await;
    let month: String = sqlx::query_scalar(
        "SELECT 'tenancy.audit_log_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')",
    )
    .fetch_one(&db)
    .await
    .unwrap();

    let (from, to) = move_tenant(&db, t.id).await;
    // Colocated: the whole group moved, the tenant's audit log included.
    for table in ["ledger.invoices", "ledger.bank_transactions", "ledger.matches", month.as_str()] {
        assert_eq!(node_of(&db, table, t.id).await, to, "{table} of {} stayed on {from}", t.slug);
    }
    assert_eq!(entries(&db, t.id).await, logged, "the move recorded entries");

    let api = Api::new();
    let tok = token(t.id, t.admin);
    let r = api.get("/invoices?select=id,reference", Some(&tok)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.rows(), &vec![json!({"id": invoice, "reference": "INV-MOVE"})]);
    // The moved shards kept their policies: another tenant sees nothing.
    let theirs = api
        .get(&format!("/invoices?id=eq.{invoice}"), Some(&token(other.id, other.admin)))
        .await;
    assert_eq!(theirs.status, 200, "{theirs:?}");
    assert!(theirs.rows().is_empty(), "{theirs:?}");
    let none = api.get("/invoices?select=id", None).await;
    assert_eq!(none.status, 401, "{none:?}");
    // ... and their RBAC guard: a readonly member may not write.
    let reader = Uuid::new_v4();
    sqlx::query("SELECT tenancy.add_member($1, $2, 'readonly')")
        .bind(&t.slug)
        .bind(reader)
        .execute(&db)
        .await
        .unwrap();
    let body = json!({"amount": "7.00", "currency": "EUR", "issue_date": "2026-11-01",
                      "reference": "INV-MOVE-2", "counterparty": "Initech"});
    let refused = api
        .send(Method::POST, "/invoices", Some(&token(t.id, reader)), &[], Some(&body))
        .await;
    refused.assert_error(403, "PERMISSION_DENIED");
    // ... and their audit trigger: a write on the new node is recorded once.
    let r = api
        .send(
            Method::POST,
            "/invoices",
            Some(&tok),
            &[("Prefer", "return=representation"), ("X-Request-Id", "req-after-move")],
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.rows()[0]["id"].as_str().unwrap().to_string();
    let log = api
        .get(&format!("/audit_log?row_key->>id=eq.{id}&select=action,table_name,request_id"), Some(&tok))
        .await;
    assert_eq!(log.status, 200, "{log:?}");
    assert_eq!(
        log.rows(),
        &vec![json!({"action": "INSERT", "table_name": "ledger.invoices", "request_id": "req-after-move"})]
    );

    // And back, as a rebalance after removing a worker would.
    let (_, back) = move_tenant(&db, t.id).await;
    assert_eq!(back, from);
    let r = api.get("/invoices?select=reference&order=reference", Some(&tok)).await;
    assert_eq!(r.rows(), &vec![json!({"reference": "INV-MOVE"}), json!({"reference": "INV-MOVE-2"})]);
}

#[tokio::test]
async fn check_names_a_node_where_table_owners_may_not_move_shards_and_scale_out_fixes_it() {
    let db = admin().await;
    let url = std::env::var("PG_TENANCY_TEST_WORKERS")
        .expect("PG_TENANCY_TEST_WORKERS is not set: run these tests through scripts/test_citus");
    let url = url.split_whitespace().next().unwrap().to_string();
    // postgres://user@host:port/db -> host:port, as check() names a node.
    let node = url.split('@').nth(1).unwrap().split('/').next().unwrap().to_string();
    let mut worker = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("REVOKE EXECUTE ON FUNCTION tenancy._audit() FROM ledger_owner")
        .execute(&mut worker)
        .await
        .unwrap();
    assert_eq!(
        move_findings(&db).await,
        vec![(
            node.clone(),
            "ledger_owner, owning sharded tenant tables, may not create their shards' triggers and foreign keys on this node: moving shards here fails"
                .to_string()
        )]
    );
    let changed: Vec<(String, String)> =
        sqlx::query_as("SELECT relation::text, became FROM tenancy.scale_out()")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(changed, vec![], "scale_out() again changes no table");
    assert_eq!(move_findings(&db).await, vec![]);

    // The same for a partition of the (sharded) log without a replica
    // identity: Citus would refuse to move the tenants' shards.
    sqlx::query("ALTER TABLE tenancy.audit_log_default REPLICA IDENTITY DEFAULT")
        .execute(&db)
        .await
        .unwrap();
    let found = move_findings(&db).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "tenancy.audit_log_default");
    assert!(found[0].1.starts_with("has no replica identity"), "{found:?}");
    sqlx::query("SELECT * FROM tenancy.scale_out()").execute(&db).await.unwrap();
    assert_eq!(move_findings(&db).await, vec![]);

    // Only superusers grant (scale_out); anyone may ask what is missing.
    let mut api_role = session_as("authenticated", None).await;
    let e = expect_db_error(
        sqlx::query("SELECT tenancy._prepare_shard_moves()")
            .execute(&mut api_role)
            .await,
        "42501",
    );
    assert_eq!(e.message, "permission denied for function _prepare_shard_moves");
    let mut api_role = session_as("authenticated", None).await;
    let nodes: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy._shard_move_gaps() WHERE asked AND owners = ''")
        .fetch_one(&mut api_role)
        .await
        .unwrap();
    assert_eq!(nodes, 3, "the coordinator and both workers");
    // The same for what PUBLIC may execute on a worker only: only
    // superusers revoke; anyone may ask, and here nothing is missing.
    let mut api_role = session_as("authenticated", None).await;
    let e = expect_db_error(
        sqlx::query("SELECT tenancy._revoke_public_function_gaps()")
            .execute(&mut api_role)
            .await,
        "42501",
    );
    assert_eq!(e.message, "permission denied for function _revoke_public_function_gaps");
    let mut api_role = session_as("authenticated", None).await;
    let gaps: Vec<(String, Option<String>, Vec<String>)> =
        sqlx::query_as("SELECT node, error, functions FROM tenancy._public_function_gaps()")
            .fetch_all(&mut api_role)
            .await
            .unwrap();
    assert_eq!(gaps.len(), 2, "both workers: {gaps:?}");
    assert!(gaps.iter().all(|(_, e, f)| e.is_none() && f.is_empty()), "{gaps:?}");
}

/// Shard groups per worker, by the ledger's invoices.
async fn groups_per_worker(db: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT nodename || ':' || nodeport, count(*) FROM citus_shards
         WHERE table_name = 'ledger.invoices'::regclass GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_rebalancer_evens_out_the_workers_in_the_background() {
    let db = admin().await;
    // As it should be, whatever a failed test before left.
    sqlx::query("SELECT * FROM tenancy.scale_out()").execute(&db).await.unwrap();
    let t = new_tenant(&db).await;
    insert_invoice(&db, &t, "INV-REBALANCE", "9.00").await;
    let before = groups_per_worker(&db).await;
    // Three groups over to the worker with more already.
    let (fuller, _) = before.iter().max_by_key(|(_, n)| *n).unwrap().clone();
    let (fh, fp) = fuller.split_once(':').unwrap();
    let others: Vec<(i64, String, i32)> = sqlx::query_as(
        "SELECT shardid, nodename, nodeport FROM citus_shards
         WHERE table_name = 'ledger.invoices'::regclass AND nodename || ':' || nodeport <> $1
         ORDER BY shardid LIMIT 3",
    )
    .bind(&fuller)
    .fetch_all(&db)
    .await
    .unwrap();
    for (shard, host, port) in &others {
        sqlx::query("SELECT citus_move_shard_placement($1, $2, $3, $4, $5::int)")
            .bind(shard)
            .bind(host)
            .bind(port)
            .bind(fh)
            .bind(fp)
            .execute(&db)
            .await
            .unwrap();
    }
    let skewed = groups_per_worker(&db).await;
    let (most, least) = (skewed.iter().map(|g| g.1).max(), skewed.iter().map(|g| g.1).min());
    assert!(most.zip(least).is_some_and(|(m, l)| m - l >= 6), "{skewed:?}");

    // As a DBA would after adding a worker: a background job, its default mode.
    let job: Option<i64> =
        sqlx::query_scalar("SELECT citus_rebalance_start(rebalance_strategy := 'by_shard_count')")
            .fetch_one(&db)
            .await
            .unwrap();
    let job = job.expect("the rebalancer scheduled no moves");
    sqlx::query("SELECT citus_rebalance_wait()").execute(&db).await.unwrap();
    let (state, failed): (String, i64) = sqlx::query_as(
        "SELECT j.state::text, (SELECT count(*) FROM pg_dist_background_task k
                                WHERE k.job_id = j.job_id AND k.status::text <> 'done')
         FROM pg_dist_background_job j WHERE j.job_id = $1",
    )
    .bind(job)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((state.as_str(), failed), ("finished", 0));
    let after = groups_per_worker(&db).await;
    let (most, least) = (after.iter().map(|g| g.1).max(), after.iter().map(|g| g.1).min());
    assert!(most.zip(least).is_some_and(|(m, l)| m - l <= 1), "{after:?}");

    let tok = token(t.id, t.admin);
    let r = Api::new().get("/invoices?select=reference", Some(&tok)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.rows(), &vec![json!({"reference": "INV-REBALANCE"})]);
}
