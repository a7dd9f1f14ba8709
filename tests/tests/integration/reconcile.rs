//! Reconciliation over HTTP and SQL: candidates, apply (re-runnable, never
//! over-allocating under concurrency), human decisions, explanations, tenant
//! isolation, permissions, and the job pg_cron runs per tenant.

use integration::*;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection, Row};
use std::time::Duration;
use uuid::Uuid;

fn reference() -> String {
    format!(
        "INV-{}",
        &Uuid::new_v4().simple().to_string()[..8].to_uppercase()
    )
}

/// An invoice and the payment that settles it exactly, naming it.
async fn paid_invoice(db: &sqlx::PgPool, t: &Tenant, amount: &str) -> (Uuid, Uuid, String) {
    let r = reference();
    let inv = insert_invoice(db, t, &r, amount).await;
    let tx = insert_transaction(db, t, &format!("Payment {r} thank you"), amount).await;
    (inv, tx, r)
}

async fn invoice_state(t: &Tenant, inv: Uuid) -> (String, String) {
    let row = sqlx::query(
        "SELECT open_amount::text, status FROM ledger.invoices WHERE tenant_id = $1 AND id = $2",
    )
    .bind(t.id)
    .bind(inv)
    .fetch_one(&admin().await)
    .await
    .unwrap();
    (row.get(0), row.get(1))
}

async fn unmatched(t: &Tenant, tx: Uuid) -> String {
    sqlx::query_scalar("SELECT unmatched_amount::text FROM ledger.bank_transactions WHERE tenant_id = $1 AND id = $2")
        .bind(t.id)
        .bind(tx)
        .fetch_one(&admin().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn reconcile_apply_confirm_undo_and_explain_over_http() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let (inv, tx, r) = paid_invoice(&db, &t, "1200.00").await;
    let tok = token(t.id, t.admin);

    let cands = rpc(&tok, "reconcile", json!({})).await;
    assert_eq!(cands.status, 200, "{cands:?}");
    assert_eq!(cands.rows().len(), 1, "{cands:?}");
    let c = &cands.rows()[0];
    assert_eq!(c["invoice_id"], json!(inv.to_string()));
    assert_eq!(c["transaction_id"], json!(tx.to_string()));
    assert_eq!(c["allocated_amount"], json!(1200.00));
    assert_eq!(c["grade"], json!("auto"));
    let kinds: Vec<&str> = c["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"amount_equal") && kinds.contains(&"reference"),
        "{kinds:?}"
    );
    assert_eq!(
        invoice_state(&t, inv).await.1,
        "open",
        "reconcile writes nothing"
    );

    let applied = rpc(&tok, "apply_reconciliation", json!({})).await;
    assert_eq!(applied.status, 200, "{applied:?}");
    assert_eq!(applied.body["applied"], json!(1));
    let match_id = applied.body["match_ids"][0].as_str().unwrap().to_string();
    assert_eq!(invoice_state(&t, inv).await, ("0.00".into(), "paid".into()));
    assert_eq!(unmatched(&t, tx).await, "0.00");
    // Safe to re-run: nothing is stored twice.
    let again = rpc(&tok, "apply_reconciliation", json!({})).await;
    assert_eq!(again.body["applied"], json!(0), "{again:?}");
    let rows = Api::new().get("/matches", Some(&tok)).await;
    assert_eq!(rows.rows().len(), 1);
    assert_eq!(rows.rows()[0]["status"], json!("applied"));

    let why = Api::new()
        .get(
            &format!("/rpc/explain_match?match_id={match_id}"),
            Some(&tok),
        )
        .await;
    assert_eq!(why.status, 200, "{why:?}");
    let sentence = why.body.as_str().unwrap();
    assert!(sentence.contains("Amount equal"), "{sentence}");
    assert!(sentence.contains("paid 14 days after issue"), "{sentence}");
    assert!(
        sentence.contains(&format!("invoice number {r} found in the description")),
        "{sentence}"
    );

    let confirmed = rpc(&tok, "confirm_match", json!({"match_id": match_id})).await;
    assert_eq!(confirmed.status, 200, "{confirmed:?}");
    assert_eq!(confirmed.body["status"], json!("confirmed"));
    assert_eq!(confirmed.body["decided_by"], json!(t.admin.to_string()));

    let undone = rpc(&tok, "undo_match", json!({"match_id": match_id})).await;
    assert_eq!(undone.body["status"], json!("undone"), "{undone:?}");
    assert_eq!(
        invoice_state(&t, inv).await,
        ("1200.00".into(), "open".into())
    );
    assert_eq!(unmatched(&t, tx).await, "1200.00");
    // Undoing twice is harmless; confirming an undone match is not.
    assert_eq!(
        rpc(&tok, "undo_match", json!({"match_id": match_id}))
            .await
            .status,
        200
    );
    rpc(&tok, "confirm_match", json!({"match_id": match_id}))
        .await
        .assert_error(400, "INVALID_ARGUMENT");
    // The pair can be matched again after an undo.
    assert_eq!(
        rpc(&tok, "apply_reconciliation", json!({})).await.body["applied"],
        json!(1)
    );

    let nobody = Uuid::new_v4();
    rpc(&tok, "undo_match", json!({"match_id": nobody}))
        .await
        .assert_error(404, "NOT_FOUND");
    Api::new()
        .get(&format!("/rpc/explain_match?match_id={nobody}"), Some(&tok))
        .await
        .assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn another_tenant_sees_and_touches_none_of_it() {
    let db = admin().await;
    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    let (inv_a, _, _) = paid_invoice(&db, &a, "99.90").await;
    let (_, tx_b, _) = paid_invoice(&db, &b, "45.00").await;
    let (ta, tb) = (token(a.id, a.admin), token(b.id, b.admin));
    let applied = rpc(&ta, "apply_reconciliation", json!({})).await;
    let match_a = applied.body["match_ids"][0].as_str().unwrap().to_string();

    let cands = rpc(&tb, "reconcile", json!({})).await;
    assert_eq!(cands.rows().len(), 1);
    assert_eq!(cands.rows()[0]["transaction_id"], json!(tx_b.to_string()));
    assert!(Api::new()
        .get("/matches", Some(&tb))
        .await
        .rows()
        .is_empty());
    rpc(&tb, "undo_match", json!({"match_id": match_a}))
        .await
        .assert_error(404, "NOT_FOUND");
    rpc(&tb, "confirm_match", json!({"match_id": match_a}))
        .await
        .assert_error(404, "NOT_FOUND");
    Api::new()
        .get(&format!("/rpc/explain_match?match_id={match_a}"), Some(&tb))
        .await
        .assert_error(404, "NOT_FOUND");
    let deleted = Api::new()
        .write(
            Method::DELETE,
            &format!("/matches?id=eq.{match_a}"),
            &tb,
            None,
        )
        .await;
    assert!(deleted.rows().is_empty(), "{deleted:?}");
    // B cannot allocate its payment to A's invoice: the invoice is not B's.
    let forged = Api::new()
        .write(
            Method::POST,
            "/matches",
            &tb,
            Some(&json!({"invoice_id": inv_a, "transaction_id": tx_b, "allocated_amount": 1})),
        )
        .await;
    assert_eq!(forged.status, 409, "{forged:?}");
    assert_eq!(forged.code(), "23503");
    assert_eq!(
        invoice_state(&a, inv_a).await.0,
        "0.00",
        "A's match is intact"
    );
}

#[tokio::test]
async fn permissions_guard_every_reconciliation_endpoint() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    paid_invoice(&db, &t, "10.00").await;
    let (ro, member, adm) = (
        token(t.id, t.readonly),
        token(t.id, t.member),
        token(t.id, t.admin),
    );

    assert_eq!(
        rpc(&ro, "reconcile", json!({})).await.status,
        200,
        "readonly may look"
    );
    let denied = rpc(&ro, "apply_reconciliation", json!({})).await;
    denied.assert_error(403, "PERMISSION_DENIED");
    assert!(denied.message().contains("matches.create"), "{denied:?}");
    let applied = rpc(&member, "apply_reconciliation", json!({})).await;
    assert_eq!(applied.body["applied"], json!(1), "{applied:?}");
    let id = applied.body["match_ids"][0].as_str().unwrap().to_string();
    rpc(&ro, "undo_match", json!({"match_id": id}))
        .await
        .assert_error(403, "PERMISSION_DENIED");
    rpc(&ro, "confirm_match", json!({"match_id": id}))
        .await
        .assert_error(403, "PERMISSION_DENIED");
    let anon = Api::new()
        .send(Method::POST, "/rpc/reconcile", None, &[], Some(&json!({})))
        .await;
    anon.assert_error(401, "42501");
    // What the RPC ends in is its owner's only (on Citus a NULL tenant
    // would crash the node that plans it).
    let mut api_role = session_as("authenticated", Some(&t)).await;
    let e = expect_db_error(
        sqlx::query(&format!("SELECT * FROM ledger_routed.reconcile_for('{}'::uuid, '{{}}')", t.id))
            .fetch_all(&mut api_role)
            .await,
        "42501",
    );
    assert_eq!(e.message, "permission denied for function reconcile_for");

    // Rules: reconciliation.manage, which admins hold and members do not.
    let denied = rpc(
        &member,
        "set_reconcile_rules",
        json!({"rules": {"fee_ceiling": 5}}),
    )
    .await;
    denied.assert_error(403, "PERMISSION_DENIED");
    assert!(
        denied.message().contains("reconciliation.manage"),
        "{denied:?}"
    );
    let set = rpc(
        &adm,
        "set_reconcile_rules",
        json!({"rules": {"fee_ceiling": 5, "days_after": 90}}),
    )
    .await;
    assert_eq!(set.status, 200, "{set:?}");
    assert_eq!(set.body["fee_ceiling"], json!(5));
    let read = Api::new().get("/rpc/reconcile_rules", Some(&member)).await;
    assert_eq!(read.body["days_after"], json!(90), "{read:?}");
    assert_eq!(
        read.body["min_auto_score"],
        Value::Null,
        "unset rules keep the default"
    );
    // Bad rules are a 400 naming the rule, never a 500.
    for (rules, needle) in [
        (json!({"fee_cap": 1}), "unknown rule \"fee_cap\""),
        (
            json!({"days_after": "soon"}),
            "rule \"days_after\" has an invalid value",
        ),
        (json!({"min_auto_score": 3}), "min_auto_score"),
        (json!([1]), "rules must be a JSON object"),
    ] {
        let r = rpc(&adm, "reconcile", json!({"rules": rules})).await;
        assert_eq!(r.status, 400, "{r:?}");
        assert!(r.message().contains(needle), "{needle}: {r:?}");
    }
    let r = rpc(
        &adm,
        "set_reconcile_rules",
        json!({"rules": {"days_before": -1}}),
    )
    .await;
    r.assert_error(400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn concurrent_runs_never_allocate_more_than_an_amount() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    for i in 0..40 {
        paid_invoice(&db, &t, &format!("{}.10", 100 + i)).await;
    }
    // Two apply_reconciliation calls of the same tenant at the same time.
    async fn apply_and_commit(t: &Tenant) -> i64 {
        let mut c = session_as("authenticated", Some(t)).await;
        let r: Value = sqlx::query_scalar("SELECT ledger.apply_reconciliation()")
            .fetch_one(&mut c)
            .await
            .unwrap();
        c.execute("COMMIT").await.unwrap();
        r["applied"].as_i64().unwrap()
    }
    let (n1, n2) = tokio::join!(apply_and_commit(&t), apply_and_commit(&t));
    assert_eq!(n1 + n2, 40, "each pair applied once ({n1} + {n2})");
    let over: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledger.invoices i WHERE i.tenant_id = $1 AND i.amount <
           (SELECT coalesce(sum(allocated_amount), 0) FROM ledger.matches m WHERE m.invoice_id = i.id AND m.status <> 'undone')",
    )
    .bind(t.id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(over, 0);

    // Two people matching the same payment by hand at the same time: the
    // second waits for the first and is refused, nothing over-allocated.
    let r = reference();
    let inv1 = insert_invoice(&db, &t, &r, "60.00").await;
    let inv2 = insert_invoice(&db, &t, &format!("{r}-B"), "60.00").await;
    let tx = insert_transaction(&db, &t, "no reference", "100.00").await;
    let (mut c1, mut c2) = (
        session_as("authenticated", Some(&t)).await,
        session_as("authenticated", Some(&t)).await,
    );
    let manual = "INSERT INTO ledger.matches (invoice_id, transaction_id, allocated_amount) VALUES ($1, $2, 60)";
    sqlx::query(manual)
        .bind(inv1)
        .bind(tx)
        .execute(&mut c1)
        .await
        .unwrap();
    let second = sqlx::query(manual).bind(inv2).bind(tx).execute(&mut c2);
    let commit = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c1.execute("COMMIT").await
    };
    let (second, commit) = tokio::join!(second, commit);
    commit.unwrap();
    let e = expect_db_error(second, "TN020");
    assert!(e.message.contains("exceeds what is open"), "{e:?}");
    c2.execute("ROLLBACK").await.unwrap();
    assert_eq!(unmatched(&t, tx).await, "40.00");
    assert_eq!(
        invoice_state(&t, inv2).await,
        ("60.00".into(), "open".into())
    );
}

#[tokio::test]
async fn manual_matches_over_http_keep_amounts_right() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let tok = token(t.id, t.member);
    let inv = insert_invoice(&db, &t, &reference(), "80.00").await;
    let tx = insert_transaction(&db, &t, "no reference", "50.00").await;
    let too_much = Api::new()
        .write(
            Method::POST,
            "/matches",
            &tok,
            Some(&json!({"invoice_id": inv, "transaction_id": tx, "allocated_amount": 60})),
        )
        .await;
    too_much.assert_error(409, "ALLOCATION_EXCEEDED");
    let ok = Api::new()
        .write(
            Method::POST,
            "/matches",
            &tok,
            Some(&json!({"invoice_id": inv, "transaction_id": tx, "allocated_amount": 50})),
        )
        .await;
    assert_eq!(ok.status, 201, "{ok:?}");
    assert_eq!(ok.rows()[0]["grade"], json!("manual"));
    assert_eq!(ok.rows()[0]["status"], json!("confirmed"));
    assert_eq!(
        invoice_state(&t, inv).await,
        ("30.00".into(), "partially_paid".into())
    );
    let bad = Api::new()
        .write(
            Method::POST,
            "/matches",
            &tok,
            Some(&json!({"invoice_id": inv, "transaction_id": tx, "allocated_amount": -5})),
        )
        .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    let id = ok.rows()[0]["id"].as_str().unwrap().to_string();
    // A deleted match gives its amount back; the invoice cannot go while matched.
    let del_inv = Api::new()
        .write(
            Method::DELETE,
            &format!("/invoices?id=eq.{inv}"),
            &token(t.id, t.admin),
            None,
        )
        .await;
    assert_eq!(del_inv.status, 409, "{del_inv:?}");
    let del = Api::new()
        .write(
            Method::DELETE,
            &format!("/matches?id=eq.{id}"),
            &token(t.id, t.admin),
            None,
        )
        .await;
    assert_eq!(del.rows().len(), 1, "{del:?}");
    assert_eq!(
        invoice_state(&t, inv).await,
        ("80.00".into(), "open".into())
    );
    assert_eq!(unmatched(&t, tx).await, "50.00");
}

async fn jobs_connection() -> PgConnection {
    let url = stack().db_url.replacen("postgres@", "tenancy_jobs@", 1);
    PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connect as tenancy_jobs: {e}"))
}

#[tokio::test]
async fn for_each_tenant_runs_each_tenant_in_its_own_context() {
    let db = admin().await;
    let (a, b, c) = (
        new_tenant(&db).await,
        new_tenant(&db).await,
        new_tenant(&db).await,
    );
    let (inv_a, _, _) = paid_invoice(&db, &a, "10.00").await;
    let (inv_b, _, _) = paid_invoice(&db, &b, "20.00").await;
    let (inv_c, _, _) = paid_invoice(&db, &c, "30.00").await;
    sqlx::query("SELECT tenancy.suspend_tenant($1)")
        .bind(&b.slug)
        .execute(&db)
        .await
        .unwrap();
    let mut jobs = jobs_connection().await;
    // A function of the tenant's id, as the scheduled job calls it.
    sqlx::query("CALL tenancy.for_each_tenant('ledger_routed.apply_reconciliation_for(uuid)', $1)")
        .bind(vec![a.slug.clone(), b.slug.clone(), c.id.to_string()])
        .execute(&mut jobs)
        .await
        .unwrap();
    assert_eq!(invoice_state(&a, inv_a).await.1, "paid");
    assert_eq!(
        invoice_state(&b, inv_b).await.1,
        "open",
        "suspended tenants are skipped"
    );
    assert_eq!(invoice_state(&c, inv_c).await.1, "paid");
    // Without a context the job role reads nothing: it is not a superuser.
    let e = expect_db_error(
        sqlx::query("SELECT count(*) FROM ledger.invoices")
            .fetch_one(&mut jobs)
            .await,
        "TN001",
    );
    assert!(e.message.contains("no tenant"), "{e:?}");
    let e = expect_db_error(
        sqlx::query("CALL tenancy.for_each_tenant('tenancy.set_tenant(text)')")
            .execute(&mut jobs)
            .await,
        "22023",
    );
    assert_eq!(
        e.message,
        "tenancy.set_tenant(text) is not a function without arguments, nor one of a uuid (the tenant's id)"
    );
    // A function without arguments runs as before.
    let (inv_d, _, _) = paid_invoice(&db, &c, "40.00").await;
    sqlx::query("CALL tenancy.for_each_tenant('ledger.apply_reconciliation()', $1)")
        .bind(vec![c.slug.clone()])
        .execute(&mut jobs)
        .await
        .unwrap();
    assert_eq!(invoice_state(&c, inv_d).await.1, "paid");
    // Not for the API roles.
    let mut api = session_as("authenticated", Some(&a)).await;
    expect_db_error(
        sqlx::query("CALL tenancy.for_each_tenant('ledger.apply_reconciliation()')")
            .execute(&mut api)
            .await,
        "42501",
    );
}

/// ledger_routed.apply_reconciliation_for takes the tenant (the job and
/// ledger.apply_reconciliation() call it; on Citus it runs on the tenant's
/// worker): it refuses any tenant but the current one and applies nothing
/// for another; a NULL tenant is no call (STRICT); analysts may not use the
/// schema at all.
#[tokio::test]
async fn routed_functions_refuse_any_tenant_but_the_current_one() {
    let db = admin().await;
    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    let (inv_b, _, _) = paid_invoice(&db, &b, "15.00").await;
    let mut jobs = jobs_connection().await;
    let mut tx = jobs.begin().await.unwrap();
    sqlx::query("SELECT tenancy._job_context($1)")
        .bind(a.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    let e = expect_db_error(
        sqlx::query("SELECT * FROM ledger_routed.apply_reconciliation_for($1)")
            .bind(b.id)
            .fetch_one(&mut *tx)
            .await,
        "42501",
    );
    assert_eq!(e.message, format!("tenant {} is not the current tenant", b.id));
    tx.rollback().await.unwrap();
    assert_eq!(invoice_state(&b, inv_b).await.1, "open");
    let none: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT * FROM ledger_routed.apply_reconciliation_for(NULL)")
            .fetch_one(&mut jobs)
            .await
            .unwrap();
    assert_eq!(none, None);
    // Without a tenant: the fail-closed error of every tenant-scoped call.
    expect_db_error(
        sqlx::query("SELECT * FROM ledger_routed.apply_reconciliation_for($1)")
            .bind(b.id)
            .fetch_one(&mut jobs)
            .await,
        "TN001",
    );
    // The API role, in tenant a, for tenant b.
    let mut api = session_as("authenticated", Some(&a)).await;
    let e = expect_db_error(
        sqlx::query("SELECT * FROM ledger_routed.apply_reconciliation_for($1)")
            .bind(b.id)
            .fetch_one(&mut api)
            .await,
        "42501",
    );
    assert_eq!(e.message, format!("tenant {} is not the current tenant", b.id));
    // Not an analyst's, not even for its own tenant.
    let mut c = session_as("analyst", Some(&b)).await;
    let e = expect_db_error(
        sqlx::query("SELECT * FROM ledger_routed.apply_reconciliation_for($1)")
            .bind(b.id)
            .fetch_one(&mut c)
            .await,
        "42501",
    );
    assert_eq!(e.message, "permission denied for schema ledger_routed");
    assert_eq!(invoice_state(&b, inv_b).await.1, "open");
}

#[tokio::test]
async fn pg_cron_applies_reconciliation_per_tenant() {
    let db = admin().await;
    let row = sqlx::query(
        "SELECT command, username, schedule FROM cron.job WHERE jobname = 'pg_tenancy: apply reconciliation'",
    )
    .fetch_one(&db)
    .await
    .expect("the reconciliation job is registered with pg_cron");
    let (command, user, schedule): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        command,
        "CALL tenancy.for_each_tenant('ledger_routed.apply_reconciliation_for(uuid)')"
    );
    assert_eq!(user, "tenancy_jobs");
    assert_eq!(schedule, "*/10 * * * *");

    // pg_cron itself runs the same command, narrowed to this test's tenants.
    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    let (inv_a, _, _) = paid_invoice(&db, &a, "11.00").await;
    let (inv_b, _, _) = paid_invoice(&db, &b, "22.00").await;
    let narrowed = command.replace(")')", &format!(")', ARRAY['{}', '{}'])", a.slug, b.slug));
    let job_id: i64 = sqlx::query_scalar(
        "SELECT cron.schedule_in_database($1, '* * * * *', $2, current_database(), 'tenancy_jobs', true)",
    )
    .bind(format!("test reconcile {}", Uuid::new_v4()))
    .bind(&narrowed)
    .fetch_one(&db)
    .await
    .unwrap();
    let status = finish_cron_job(&db, job_id).await;
    assert_eq!(status, "succeeded", "pg_cron ran the job within 150 s");
    assert_eq!(invoice_state(&a, inv_a).await.1, "paid");
    assert_eq!(invoice_state(&b, inv_b).await.1, "paid");
}

/// In a database whose encoding is not UTF-8, text that is not valid UTF-8
/// is an error naming the relation, row and column, never a crash.
#[tokio::test]
async fn text_that_is_not_utf8_is_an_error_naming_the_row() {
    let db = admin().await;
    let name = format!("latin1_{}", Uuid::new_v4().simple());
    db.execute(
        format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'")
            .as_str(),
    )
    .await
    .unwrap();
    let mut conn = PgConnection::connect(&db_url(&name)).await.unwrap();
    conn.execute(
        "CREATE EXTENSION pg_tenancy;
         SELECT tenancy.create_tenant('latin', 'Latin-1 books');
         CREATE TABLE public.invoices (id text, amount numeric, currency text, issue_date date,
             due_date date, reference text, counterparty text, open_amount numeric);
         CREATE TABLE public.lines (id int, amount numeric, currency text, booked_on date,
             description text, counterparty text);
         INSERT INTO public.invoices VALUES ('INV-1', 10, 'EUR', '2026-01-01', NULL, 'INV-1', 'Café Müller', 10);",
    )
    .await
    .unwrap();
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut *tx, "latin").await;
    let err = reconcile_error(&mut *tx, "public.invoices", "public.lines", "22021").await;
    assert_eq!(
        err.message,
        "public.invoices: row INV-1 has a \"counterparty\" that is not valid UTF-8"
    );
    tx.rollback().await.unwrap();
    conn.close().await.unwrap();
    db.execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
        .await
        .unwrap();
}

/// uuid ids are read as uuids (not through their text): they come back as
/// the text Postgres shows, groups are numbered in that text's order as for
/// text ids, and an error names the row by it. A relation that is not
/// read by tenant still has each row's tenant checked.
#[tokio::test]
async fn uuid_ids_come_back_as_their_text_and_in_its_order() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let schema = format!("uuids_{}", &Uuid::new_v4().simple().to_string()[..12]);
    db.execute(
        format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.inv (id uuid, tenant_id uuid, amount numeric, currency text,
                 issue_date date, due_date date, reference text, counterparty text, open_amount numeric);
             CREATE TABLE {schema}.tx (id uuid, tenant_id uuid, amount numeric, currency text,
                 booked_on date, description text, counterparty text);
             SELECT tenancy.enable('{schema}.inv');
             SELECT tenancy.enable('{schema}.tx');
             -- Every tenant's lines, and a view that names their owner tenant_id.
             CREATE TABLE {schema}.feed (id uuid, owner uuid, amount numeric, currency text,
                 booked_on date, description text, counterparty text);
             CREATE VIEW {schema}.tx_view WITH (security_invoker = true) AS
                 SELECT id, owner AS tenant_id, amount, currency, booked_on, description, counterparty
                 FROM {schema}.feed;
             GRANT USAGE ON SCHEMA {schema} TO authenticated;
             GRANT SELECT ON {schema}.inv, {schema}.tx, {schema}.feed, {schema}.tx_view TO authenticated;"
        )
        .as_str(),
    )
    .await
    .unwrap();
    // Byte order and text order agree on uuids; these differ in the first
    // and in the last byte, and are inserted against that order.
    let (i_high, i_low) = (
        "ffffffff-0000-4000-8000-000000000001",
        "0000000a-ffff-4000-8000-0000000000ff",
    );
    let (t_high, t_low) = (
        "f0000000-0000-4000-8000-000000000000",
        "0fffffff-ffff-4fff-bfff-ffffffffffff",
    );
    sqlx::query(&format!(
        "INSERT INTO {schema}.inv VALUES
             ($1::uuid, $3, 100, 'EUR', '2026-03-01', NULL, 'INV-7001', 'Acme', 100),
             ($2::uuid, $3, 250, 'EUR', '2026-03-02', NULL, 'INV-7002', 'Acme', 250)"
    ))
    .bind(i_high)
    .bind(i_low)
    .bind(t.id)
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO {schema}.tx VALUES
             ($1::uuid, $3, 100, 'EUR', '2026-03-05', 'Paying INV-7001', 'Acme'),
             ($2::uuid, $3, 250, 'EUR', '2026-03-06', 'Paying INV-7002', 'Acme')"
    ))
    .bind(t_high)
    .bind(t_low)
    .bind(t.id)
    .execute(&db)
    .await
    .unwrap();
    let mut c = session_as("authenticated", Some(&t)).await;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(&format!(
        "SELECT invoice_id, transaction_id, group_id
         FROM tenancy.reconcile('{schema}.inv', '{schema}.tx') ORDER BY group_id"
    ))
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            (i_low.to_string(), t_low.to_string(), 1),
            (i_high.to_string(), t_high.to_string(), 2),
        ]
    );

    // A zero amount is refused, naming the row by its uuid.
    db.execute(format!("UPDATE {schema}.tx SET amount = 0 WHERE id = '{t_high}'").as_str())
        .await
        .unwrap();
    let (inv, tx) = (format!("{schema}.inv"), format!("{schema}.tx"));
    let err = reconcile_error(&mut c, &inv, &tx, "22023").await;
    assert_eq!(
        err.message,
        format!("{schema}.tx: transaction {t_high} has amount 0")
    );

    // Through a view that shows another tenant's row: refused, by its uuid.
    let mut c = session_as("authenticated", Some(&t)).await;
    let other = new_tenant(&db).await;
    sqlx::query(&format!(
        "INSERT INTO {schema}.feed VALUES
             ($1::uuid, $2, 100, 'EUR', '2026-03-05', 'Paying INV-7001', 'Acme')"
    ))
    .bind(t_low)
    .bind(other.id)
    .execute(&db)
    .await
    .unwrap();
    let err = reconcile_error(&mut c, &inv, &format!("{schema}.tx_view"), "42501").await;
    assert_eq!(
        err.message,
        format!("{schema}.tx_view shows rows of another tenant (row {t_low})")
    );
}
