//! Tenant context over SQL: analysts, jobs, pooled connections, table owners.

use integration::*;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

async fn connect() -> PgConnection {
    PgConnection::connect(&stack().db_url)
        .await
        .expect("connect")
}

async fn visible_tenants(conn: &mut PgConnection) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT tenant_id FROM ledger.invoices ORDER BY 1")
        .fetch_all(conn)
        .await
}

#[tokio::test]
async fn analyst_without_tenant_gets_a_clear_error_not_an_empty_result() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    insert_invoice(&db, &t, "INV-1", "10.00").await;
    let mut conn = connect().await;
    conn.execute("SET ROLE analyst").await.unwrap();
    let err = expect_db_error(visible_tenants(&mut conn).await, "TN001");
    assert_eq!(
        err.message,
        "no tenant is set for this transaction, so tenant-scoped tables cannot be read or written"
    );
    assert!(
        err.hint.unwrap().contains("tenancy.set_tenant"),
        "the hint names the fix"
    );
}

#[tokio::test]
async fn analyst_with_tenant_sees_only_that_tenant() {
    let db = admin().await;
    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    insert_invoice(&db, &a, "A-1", "10.00").await;
    insert_invoice(&db, &b, "B-1", "20.00").await;
    let mut conn = connect().await;
    let mut tx = conn.begin().await.unwrap();
    tx.execute("SET LOCAL ROLE analyst").await.unwrap();
    set_tenant(&mut *tx, &a.slug).await;
    assert_eq!(visible_tenants(&mut tx).await.unwrap(), vec![a.id]);
    // Filtering for B's rows finds nothing.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.invoices WHERE tenant_id = $1")
        .bind(b.id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn one_connection_never_carries_a_tenant_into_the_next_transaction() {
    let db = admin().await;
    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    insert_invoice(&db, &a, "A-1", "10.00").await;
    insert_invoice(&db, &b, "B-1", "20.00").await;
    let mut conn = connect().await;
    conn.execute("SET ROLE analyst").await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT tenancy.set_tenant($1)")
        .bind(a.id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(visible_tenants(&mut tx).await.unwrap(), vec![a.id]);
    tx.commit().await.unwrap();

    // Next transaction on the same connection: A's context is gone.
    expect_db_error(visible_tenants(&mut conn).await, "TN001");
    let mut tx = conn.begin().await.unwrap();
    expect_db_error(visible_tenants(&mut tx).await, "TN001");
    tx.rollback().await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut *tx, &b.slug).await;
    assert_eq!(visible_tenants(&mut tx).await.unwrap(), vec![b.id]);
    tx.rollback().await.unwrap();

    // A rolled-back transaction leaves nothing behind either.
    let ctx: Option<Uuid> = sqlx::query_scalar("SELECT tenancy.current_tenant_id()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(ctx, None);
}

#[tokio::test]
async fn the_table_owner_is_still_isolated() {
    let db = admin().await;
    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    insert_invoice(&db, &a, "A-1", "10.00").await;
    insert_invoice(&db, &b, "B-1", "20.00").await;
    let mut conn = connect().await;
    let owner: String = sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE schemaname = 'ledger' AND tablename = 'invoices'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(owner, "ledger_owner");
    conn.execute("SET ROLE ledger_owner").await.unwrap();
    expect_db_error(visible_tenants(&mut conn).await, "TN001");
    conn.execute("RESET ROLE").await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut *tx, &a.slug).await;
    tx.execute("SET LOCAL ROLE ledger_owner").await.unwrap();
    assert_eq!(visible_tenants(&mut tx).await.unwrap(), vec![a.id]);
    // The owner cannot write into another tenant either.
    let err = expect_db_error(
        sqlx::query("UPDATE ledger.invoices SET tenant_id = $1")
            .bind(b.id)
            .execute(&mut *tx)
            .await,
        "42501",
    );
    assert!(err.message.contains("row-level security"), "{err:?}");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn api_roles_can_neither_pick_a_tenant_nor_set_the_context() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let mut conn = connect().await;
    let mut tx = conn.begin().await.unwrap();
    tx.execute("SET LOCAL ROLE authenticated").await.unwrap();
    let err = expect_db_error(
        sqlx::query("SELECT tenancy.set_tenant($1)")
            .bind(&t.slug)
            .execute(&mut *tx)
            .await,
        "42501",
    );
    assert_eq!(err.message, "permission denied for function set_tenant");
    tx.rollback().await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    tx.execute("SET LOCAL ROLE authenticated").await.unwrap();
    let err = expect_db_error(
        sqlx::query("SELECT set_config('tenancy.tenant_id', $1, true)")
            .bind(t.id.to_string())
            .execute(&mut *tx)
            .await,
        "42501",
    );
    assert_eq!(
        err.message,
        "permission denied to set parameter \"tenancy.tenant_id\""
    );
    tx.rollback().await.unwrap();

    // Nor can they forge the claims pre_request reads into a context.
    let mut tx = conn.begin().await.unwrap();
    tx.execute("SET LOCAL ROLE authenticated").await.unwrap();
    let err = expect_db_error(
        sqlx::query("SELECT tenancy._set_context($1, $1)")
            .bind(t.id)
            .execute(&mut *tx)
            .await,
        "42501",
    );
    assert_eq!(err.message, "permission denied for function _set_context");
    tx.rollback().await.unwrap();

    // tenancy.context (what Citus workers believe, when signed) may be set
    // by anyone, but a line not signed with this cluster's key is refused,
    // never believed; and no API role can read the line or the key.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged = format!("v1;{};;;{now};*:*;{}", t.id, "00".repeat(32));
    let mut tx = conn.begin().await.unwrap();
    tx.execute("SET LOCAL ROLE authenticated").await.unwrap();
    tx.execute(format!("SET LOCAL tenancy.context = '{forged}'").as_str())
        .await
        .unwrap();
    let err = expect_db_error(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ledger.invoices")
            .fetch_one(&mut *tx)
            .await,
        "42501",
    );
    assert!(
        err.message.starts_with("the tenant context tenancy.context was refused: "),
        "{err:?}"
    );
    tx.rollback().await.unwrap();
    for (sql, message) in [
        (
            "SELECT current_setting('tenancy.context')",
            "must be superuser or have privileges of pg_read_all_settings to examine \"tenancy.context\"",
        ),
        (
            "SELECT current_setting('tenancy.context_key')",
            "must be superuser or have privileges of pg_read_all_settings to examine \"tenancy.context_key\"",
        ),
    ] {
        let mut tx = conn.begin().await.unwrap();
        tx.execute("SET LOCAL ROLE authenticated").await.unwrap();
        let err = expect_db_error(sqlx::query_scalar::<_, String>(sql).fetch_one(&mut *tx).await, "42501");
        assert_eq!(err.message, message);
        tx.rollback().await.unwrap();
    }
    let mut tx = conn.begin().await.unwrap();
    tx.execute("SET LOCAL ROLE authenticated").await.unwrap();
    let err = expect_db_error(
        tx.execute("SET LOCAL tenancy.context_key = 'mine'").await,
        "55P02",
    );
    assert_eq!(
        err.message,
        "parameter \"tenancy.context_key\" cannot be changed now"
    );
}

#[tokio::test]
async fn no_api_role_bypasses_row_level_security() {
    let db = admin().await;
    let rows: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT rolname::text, rolbypassrls, rolsuper FROM pg_roles \
         WHERE rolname IN ('authenticator', 'anon', 'authenticated', 'ledger_owner', 'analyst') ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 5);
    for (role, bypass, sup) in rows {
        assert!(!bypass && !sup, "{role} must not bypass RLS");
    }
    // And the reference deployment passes its own linter: nothing unsafe,
    // and among the logins that may enter every tenant, pg_cron's.
    let problems: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT object_type, object_name, problem FROM tenancy.check() WHERE severity <> 'notice'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(
        problems.is_empty(),
        "tenancy.check() found problems: {problems:?}"
    );
    let every_tenant: Vec<String> = sqlx::query_scalar(
        "SELECT object_name FROM tenancy.check() WHERE severity = 'notice' AND problem LIKE '%every tenant%'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(
        every_tenant.contains(&"tenancy_jobs".to_string()),
        "{every_tenant:?}"
    );
}

#[tokio::test]
async fn deleting_a_tenant_removes_its_rows_from_every_enabled_table() {
    let db = admin().await;
    let (gone, kept) = (new_tenant(&db).await, new_tenant(&db).await);
    for t in [&gone, &kept] {
        let inv = insert_invoice(&db, t, "INV-1", "10.00").await;
        let tx = insert_transaction(&db, t, "payment", "10.00").await;
        sqlx::query("INSERT INTO ledger.matches (tenant_id, invoice_id, transaction_id, allocated_amount) VALUES ($1, $2, $3, 10)")
            .bind(t.id)
            .bind(inv)
            .bind(tx)
            .execute(&db)
            .await
            .unwrap();
    }
    sqlx::query("SELECT tenancy.drop_tenant($1)")
        .bind(&gone.slug)
        .execute(&db)
        .await
        .unwrap();
    // Every table tenancy.enable() scoped, found from the catalog.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT conrelid::regclass::text FROM pg_constraint \
         WHERE contype = 'f' AND confrelid = 'tenancy.tenants'::regclass AND connamespace <> 'tenancy'::regnamespace",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(
        tables.contains(&"ledger.invoices".to_string())
            && tables.contains(&"ledger.bank_transactions".to_string())
    );
    for table in tables {
        let q = format!("SELECT count(*) FILTER (WHERE tenant_id = $1), count(*) FILTER (WHERE tenant_id = $2) FROM {table}");
        let (gone_rows, kept_rows): (i64, i64) = sqlx::query_as(&q)
            .bind(gone.id)
            .bind(kept.id)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(gone_rows, 0, "{table} still has rows of the dropped tenant");
        // (Tests running alongside may have enabled tables of their own.)
        if table.starts_with("ledger.") {
            assert!(kept_rows > 0, "{table} lost the other tenant's rows");
        }
    }
    let roles: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenancy.user_roles WHERE tenant_id = $1")
            .bind(gone.id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(roles, 0);
}

#[tokio::test]
async fn administration_rejects_bad_input_with_clear_errors() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let taken = format!("tenant slug \"{}\" is already taken", t.slug);
    let cases: Vec<(&str, Vec<Option<String>>, &str, &str)> = vec![
        (
            "SELECT tenancy.create_tenant($1, 'x')",
            vec![Some("Bad Slug".into())],
            "22023",
            "invalid tenant slug 'Bad Slug'",
        ),
        (
            "SELECT tenancy.create_tenant($1, 'x')",
            vec![None],
            "22023",
            "invalid tenant slug NULL",
        ),
        (
            "SELECT tenancy.create_tenant($1, 'x')",
            vec![Some(t.slug.clone())],
            "23505",
            &taken,
        ),
        (
            "SELECT tenancy.create_tenant('ok-slug-x', $1)",
            vec![Some("".into())],
            "22023",
            "tenant name must be 1 to 200 characters",
        ),
        (
            "SELECT tenancy.set_tenant($1)",
            vec![Some("".into())],
            "22023",
            "tenant must be a slug or a uuid, not empty",
        ),
        (
            "SELECT tenancy.drop_tenant($1)",
            vec![Some("no-such-tenant".into())],
            "TN005",
            "tenant \"no-such-tenant\" does not exist",
        ),
        (
            "SELECT tenancy.suspend_tenant($1)",
            vec![Some(Uuid::new_v4().to_string())],
            "TN005",
            "",
        ),
        (
            "SELECT tenancy.add_member($1, gen_random_uuid(), 'owner')",
            vec![Some(t.slug.clone())],
            "22023",
            "",
        ),
        (
            "SELECT tenancy.enable($1::regclass)",
            vec![Some("tenancy.tenants".into())],
            "22023",
            "tenancy.tenants belongs to the extension itself",
        ),
    ];
    for (sql, args, code, message) in cases {
        let mut q = sqlx::query(sql);
        for a in &args {
            q = q.bind(a.clone());
        }
        let err = expect_db_error(q.execute(&db).await, code);
        if !message.is_empty() {
            assert_eq!(err.message, message, "{sql} {args:?}");
        }
    }
}
