//! Database logins bound to their tenants (README "Tenancy in SQL"): a
//! customer's analyst or BI tool connects with its own login, sees its
//! tenants only, with the rights of the RBAC role of its binding. Every test
//! connects as a real login of its own (the test cluster trusts loopback).

use integration::*;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;

/// A new login of its own: it may read the ledger (and write invoices) as
/// far as table grants go, which is more than a readonly binding allows.
async fn new_login(db: &PgPool) -> String {
    integration::new_login(
        db,
        "GRANT USAGE ON SCHEMA ledger TO {login};
         GRANT SELECT ON ledger.invoices, ledger.bank_transactions, ledger.matches TO {login};
         GRANT INSERT, UPDATE ON ledger.invoices TO {login};",
    )
    .await
}

async fn connect_as(login: &str) -> PgConnection {
    integration::connect_as(&stack().db_url, login).await
}

async fn bind(db: &PgPool, login: &str, t: &Tenant, role: &str) {
    sqlx::query("SELECT tenancy.grant_sql_access($1, $2, $3)")
        .bind(login)
        .bind(&t.slug)
        .bind(role)
        .execute(db)
        .await
        .expect("grant_sql_access");
}

async fn tenants_seen(conn: &mut PgConnection) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT tenant_id FROM ledger.invoices ORDER BY 1")
        .fetch_all(conn)
        .await
}

async fn statement_error(conn: &mut PgConnection, sql: &str, sqlstate: &str) -> DbError {
    expect_db_error(sqlx::query(sql).execute(conn).await, sqlstate)
}

#[tokio::test]
async fn a_login_bound_to_one_tenant_is_in_it_statement_by_statement() {
    let db = admin().await;
    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    insert_invoice(&db, &a, "A-1", "10.00").await;
    insert_transaction(&db, &a, "payment A-1", "10.00").await;
    insert_invoice(&db, &b, "B-1", "20.00").await;
    insert_transaction(&db, &b, "payment B-1", "20.00").await;
    let login = new_login(&db).await;
    bind(&db, &login, &a, "readonly").await;

    // A BI tool: autocommit statements, never set_tenant.
    let mut conn = connect_as(&login).await;
    assert_eq!(tenants_seen(&mut conn).await.unwrap(), vec![a.id]);
    let current: Uuid = sqlx::query_scalar("SELECT tenancy.current_tenant_id()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(current, a.id);
    let of_b: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM ledger.invoices WHERE tenant_id = $1)
              + (SELECT count(*) FROM ledger.bank_transactions WHERE tenant_id = $1)
              + (SELECT count(*) FROM ledger.matches WHERE tenant_id = $1)",
    )
    .bind(b.id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(of_b, 0, "nothing of another tenant is visible");

    // reconcile reads the login's tenant only.
    let matched: Vec<String> = sqlx::query_scalar(
        "SELECT invoice_id FROM tenancy.reconcile('ledger.invoices', 'ledger.bank_transactions') ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let a_invoice: String =
        sqlx::query_scalar("SELECT id::text FROM ledger.invoices WHERE tenant_id = $1")
            .bind(a.id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(matched, vec![a_invoice]);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_bound_login_gets_into_no_other_tenant_by_any_path() {
    let db = admin().await;
    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    insert_invoice(&db, &b, "B-1", "20.00").await;
    let login = new_login(&db).await;
    bind(&db, &login, &a, "readonly").await;
    let mut conn = connect_as(&login).await;

    // set_tenant, by slug and by id: the one a DBA would grant.
    grant(
        &db,
        &format!("GRANT EXECUTE ON FUNCTION tenancy.set_tenant(text) TO {login}"),
    )
    .await;
    for name in [b.slug.clone(), b.id.to_string()] {
        let e = expect_db_error(
            sqlx::query("SELECT tenancy.set_tenant($1)")
                .bind(&name)
                .execute(&mut conn)
                .await,
            "42501",
        );
        assert_eq!(
            e.message,
            format!("login \"{login}\" is not bound to tenant \"{}\"", b.slug)
        );
        let hint = e.hint.unwrap();
        assert!(
            hint.contains(&format!("It may enter: {}.", a.slug)),
            "{hint}"
        );
        assert!(
            hint.contains(&format!(
                "tenancy.grant_sql_access('{login}', '{}', 'readonly')",
                b.slug
            )),
            "{hint}"
        );
    }
    // Its own tenant through set_tenant is fine.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut *tx, &a.slug).await;
    tx.rollback().await.unwrap();

    // Posing as a connection Citus opened changes nothing: still bound.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SET LOCAL application_name = 'citus_internal gpid=10000000001'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let e = expect_db_error(
        sqlx::query("SELECT tenancy.set_tenant($1)")
            .bind(&b.slug)
            .execute(&mut *tx)
            .await,
        "42501",
    );
    assert_eq!(
        e.message,
        format!("login \"{login}\" is not bound to tenant \"{}\"", b.slug)
    );
    tx.rollback().await.unwrap();

    // The settings themselves are the superuser's.
    let e = statement_error(
        &mut conn,
        &format!("SET tenancy.tenant_id = '{}'", b.id),
        "42501",
    )
    .await;
    assert_eq!(
        e.message,
        "permission denied to set parameter \"tenancy.tenant_id\""
    );
    statement_error(
        &mut conn,
        &format!("SELECT set_config('tenancy.tenant_id', '{}', true)", b.id),
        "42501",
    )
    .await;
    // The internal functions are not granted to it...
    for sql in [
        format!("SELECT tenancy._set_context('{}', NULL)", b.id),
        format!("SELECT tenancy._job_context('{}')", b.id),
        "SELECT tenancy.pre_request()".to_string(),
        "SELECT tenancy._pre_request()".to_string(),
        "CALL tenancy.for_each_tenant('tenancy.version()'::regprocedure)".to_string(),
    ] {
        let e = statement_error(&mut conn, &sql, "42501").await;
        assert!(
            e.message.starts_with("permission denied for "),
            "{sql}: {e:?}"
        );
    }
    // ...and refuse it even where a DBA grants them.
    grant(
        &db,
        &format!(
            "GRANT EXECUTE ON FUNCTION tenancy._set_context(uuid, uuid, text[]), tenancy._job_context(uuid) TO {login};
             GRANT authenticated TO {login};"
        ),
    )
    .await;
    for sql in [
        format!("SELECT tenancy._set_context('{}', NULL)", b.id),
        format!("SELECT tenancy._set_context('{}', '{}')", b.id, b.admin),
        format!("SELECT tenancy._set_context('{}', '{}')", a.id, a.admin),
        format!("SELECT tenancy._job_context('{}')", b.id),
    ] {
        let e = statement_error(&mut conn, &sql, "42501").await;
        assert!(
            e.message.starts_with(&format!("login \"{login}\" ")),
            "{sql}: {e:?}"
        );
    }
    // The HTTP hook with claims it wrote itself, for a user of either tenant.
    for (tenant, user) in [(b.id, b.admin), (a.id, a.admin)] {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('request.jwt.claims', $1, true)")
            .bind(access_claims(tenant, user).to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let e = expect_db_error(
            sqlx::query("SELECT tenancy.pre_request()")
                .execute(&mut *tx)
                .await,
            "42501",
        );
        assert_eq!(
            e.message,
            format!("login \"{login}\" is bound to tenants in SQL and cannot act as a user of the HTTP API")
        );
        tx.rollback().await.unwrap();
    }
    // As the API role it is still in its own tenant only.
    conn.execute("SET ROLE authenticated").await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM api.invoices WHERE tenant_id = $1")
        .bind(b.id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    conn.execute("RESET ROLE").await.unwrap();
    assert!(tenants_seen(&mut conn)
        .await
        .unwrap()
        .iter()
        .all(|t| *t == a.id));
    conn.close().await.unwrap();
}

#[tokio::test]
async fn the_binding_role_decides_what_a_login_may_do() {
    let db = admin().await;
    let a = new_tenant(&db).await;
    let login = new_login(&db).await;
    bind(&db, &login, &a, "readonly").await;
    let mut conn = connect_as(&login).await;
    let insert = "INSERT INTO ledger.invoices (tenant_id, amount, currency, issue_date, due_date, reference, counterparty)
                  VALUES (tenancy.current_tenant_id(), 5, 'EUR', '2026-10-01', '2026-10-31', 'BI-1', 'Initech')";

    // readonly: the table grant allows INSERT, RBAC does not.
    let e = statement_error(&mut conn, insert, "42501").await;
    assert_eq!(e.message, "permission invoices.create is required");
    let (read, create): (bool, bool) = sqlx::query_as(
        "SELECT tenancy.has_permission('invoices', 'read'), tenancy.has_permission('invoices', 'create')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(read && !create);
    let e = statement_error(
        &mut conn,
        "SELECT tenancy.require_permission('invoices', 'create')",
        "42501",
    )
    .await;
    assert_eq!(e.message, "permission invoices.create is required");

    // Bound again as member: from its next transaction it may.
    bind(&db, &login, &a, "member").await;
    let id: Uuid = sqlx::query_scalar(&format!("{insert} RETURNING id"))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    // The audit trail names the login and the role it acted as.
    let (actor, db_user, acting_as, tenant): (Option<Uuid>, String, Option<String>, Uuid) =
        sqlx::query_as(
            "SELECT actor, db_user::text, acting_as, tenant_id FROM tenancy.audit_log
         WHERE table_name = 'ledger.invoices' AND row_key ->> 'id' = $1::text",
        )
        .bind(id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(
        (actor, db_user.as_str(), acting_as.as_deref(), tenant),
        (None, login.as_str(), Some("member"), a.id)
    );
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_revoked_binding_ends_at_the_next_transaction() {
    let db = admin().await;
    let a = new_tenant(&db).await;
    insert_invoice(&db, &a, "A-1", "10.00").await;
    let login = new_login(&db).await;
    bind(&db, &login, &a, "readonly").await;
    grant(
        &db,
        &format!("GRANT EXECUTE ON FUNCTION tenancy.set_tenant(text) TO {login}"),
    )
    .await;
    let mut conn = connect_as(&login).await;
    assert_eq!(tenants_seen(&mut conn).await.unwrap(), vec![a.id]);

    let revoked: bool = sqlx::query_scalar("SELECT tenancy.revoke_sql_access($1, $2)")
        .bind(&login)
        .bind(&a.slug)
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(revoked);
    let e = expect_db_error(tenants_seen(&mut conn).await, "TN001");
    assert_eq!(
        e.message,
        "no tenant is set for this transaction, so tenant-scoped tables cannot be read or written"
    );
    let e = expect_db_error(
        sqlx::query("SELECT tenancy.set_tenant($1)")
            .bind(&a.slug)
            .execute(&mut conn)
            .await,
        "42501",
    );
    assert_eq!(
        e.message,
        format!(
            "login \"{login}\" may not enter tenant \"{}\": it is bound to no tenant and may not enter every tenant",
            a.slug
        )
    );
    assert!(e.hint.unwrap().contains("tenancy.grant_sql_access("));
    // Revoking what is not there says so.
    let again: bool = sqlx::query_scalar("SELECT tenancy.revoke_sql_access($1, $2)")
        .bind(&login)
        .bind(&a.slug)
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(!again);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_login_bound_to_two_tenants_picks_one_with_set_tenant() {
    let db = admin().await;
    let (a, b, c) = (
        new_tenant(&db).await,
        new_tenant(&db).await,
        new_tenant(&db).await,
    );
    for t in [&a, &b, &c] {
        insert_invoice(&db, t, "X-1", "10.00").await;
    }
    let login = new_login(&db).await;
    bind(&db, &login, &a, "readonly").await;
    bind(&db, &login, &b, "member").await;
    grant(
        &db,
        &format!("GRANT EXECUTE ON FUNCTION tenancy.set_tenant(text) TO {login}"),
    )
    .await;
    let mut conn = connect_as(&login).await;
    // Which of the two is not guessed.
    expect_db_error(tenants_seen(&mut conn).await, "TN001");
    for (t, may_create) in [(&a, false), (&b, true)] {
        let mut tx = conn.begin().await.unwrap();
        set_tenant(&mut *tx, &t.slug).await;
        assert_eq!(tenants_seen(&mut tx).await.unwrap(), vec![t.id]);
        let create: bool =
            sqlx::query_scalar("SELECT tenancy.has_permission('invoices', 'create')")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(create, may_create, "the role of the binding to {}", t.slug);
        tx.rollback().await.unwrap();
    }
    let e = expect_db_error(
        sqlx::query("SELECT tenancy.set_tenant($1)")
            .bind(&c.slug)
            .execute(&mut conn)
            .await,
        "42501",
    );
    let mut slugs = [a.slug.clone(), b.slug.clone()];
    slugs.sort();
    assert!(
        e.hint
            .unwrap()
            .contains(&format!("It may enter: {}, {}.", slugs[0], slugs[1])),
        "the hint lists its tenants"
    );
    conn.close().await.unwrap();
}

#[tokio::test]
async fn entering_every_tenant_is_granted_on_purpose_and_reported() {
    let db = admin().await;
    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    insert_invoice(&db, &a, "A-1", "10.00").await;
    insert_invoice(&db, &b, "B-1", "10.00").await;

    // A member of the reference deployment's analyst role (registered with
    // grant_all_tenants) enters any tenant, and check() names it.
    let platform = new_login(&db).await;
    grant(&db, &format!("GRANT analyst TO {platform}")).await;
    let mut conn = connect_as(&platform).await;
    for t in [&a, &b] {
        let mut tx = conn.begin().await.unwrap();
        set_tenant(&mut *tx, &t.slug).await;
        assert_eq!(tenants_seen(&mut tx).await.unwrap(), vec![t.id]);
        tx.rollback().await.unwrap();
    }
    let findings: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT severity, object_type, problem FROM tenancy.check() WHERE object_name = $1",
    )
    .bind(&platform)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        findings,
        vec![(
            "notice".to_string(),
            "role".to_string(),
            "login may enter every tenant (a member of analyst, granted with tenancy.grant_all_tenants)".to_string()
        )]
    );
    // Taken out of analyst, its open connection is refused at its next
    // transaction (role memberships are watched like the tables).
    grant(
        &db,
        &format!(
            "GRANT EXECUTE ON FUNCTION tenancy.set_tenant(text) TO {platform};
             REVOKE analyst FROM {platform};"
        ),
    )
    .await;
    let e = expect_db_error(
        sqlx::query("SELECT tenancy.set_tenant($1)")
            .bind(&a.slug)
            .execute(&mut conn)
            .await,
        "42501",
    );
    assert!(e.message.contains("may not enter every tenant"), "{e:?}");

    // A login merely granted set_tenant enters nothing...
    let other = new_login(&db).await;
    grant(
        &db,
        &format!("GRANT EXECUTE ON FUNCTION tenancy.set_tenant(text) TO {other}"),
    )
    .await;
    let mut conn = connect_as(&other).await;
    let e = expect_db_error(
        sqlx::query("SELECT tenancy.set_tenant($1)")
            .bind(&a.slug)
            .execute(&mut conn)
            .await,
        "42501",
    );
    assert!(e
        .hint
        .unwrap()
        .contains(&format!("tenancy.grant_all_tenants('{other}')")));
    // ...until a DBA says so, and no longer once it is taken back.
    sqlx::query("SELECT tenancy.grant_all_tenants($1)")
        .bind(&other)
        .execute(&db)
        .await
        .unwrap();
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut *tx, &b.slug).await;
    assert_eq!(tenants_seen(&mut tx).await.unwrap(), vec![b.id]);
    tx.rollback().await.unwrap();
    let listed: Vec<String> =
        sqlx::query_scalar("SELECT tenant FROM tenancy.sql_access WHERE login = $1")
            .bind(&other)
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(listed, vec!["*"]);
    let taken: bool = sqlx::query_scalar("SELECT tenancy.revoke_all_tenants($1)")
        .bind(&other)
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(taken);
    expect_db_error(
        sqlx::query("SELECT tenancy.set_tenant($1)")
            .bind(&a.slug)
            .execute(&mut conn)
            .await,
        "42501",
    );

    // Bound logins stay bound, whatever roles they are members of.
    let bound = new_login(&db).await;
    grant(&db, &format!("GRANT analyst TO {bound}")).await;
    bind(&db, &bound, &a, "readonly").await;
    let mut conn = connect_as(&bound).await;
    expect_db_error(
        sqlx::query("SELECT tenancy.set_tenant($1)")
            .bind(&b.slug)
            .execute(&mut conn)
            .await,
        "42501",
    );
    let reported: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenancy.check() WHERE object_name = $1")
            .bind(&bound)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(reported, 0, "a bound login does not enter every tenant");
}

#[tokio::test]
async fn binding_and_unbinding_are_audited_in_the_tenant_log() {
    let db = admin().await;
    let a = new_tenant(&db).await;
    let login = new_login(&db).await;
    bind(&db, &login, &a, "readonly").await;
    bind(&db, &login, &a, "readonly").await; // the same again: no change
    bind(&db, &login, &a, "member").await;
    sqlx::query("SELECT tenancy.revoke_sql_access($1, $2)")
        .bind(&login)
        .bind(&a.slug)
        .execute(&db)
        .await
        .unwrap();
    let entries: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT action, db_user::text, coalesce(new_values, old_values) ->> 'login', coalesce(new_values, old_values) ->> 'role'
         FROM tenancy.audit_log WHERE table_name = 'tenancy.sql_logins' AND tenant_id = $1 ORDER BY id",
    )
    .bind(a.id)
    .fetch_all(&db)
    .await
    .unwrap();
    let me: String = sqlx::query_scalar("SELECT session_user::text")
        .fetch_one(&db)
        .await
        .unwrap();
    let row = |action: &str, role: Option<&str>| {
        (
            action.to_string(),
            me.clone(),
            role.map(|_| login.clone()),
            role.map(str::to_string),
        )
    };
    assert_eq!(
        entries,
        vec![
            row("INSERT", Some("readonly")),
            // An UPDATE records the changed columns.
            (
                "UPDATE".to_string(),
                me.clone(),
                None,
                Some("member".to_string())
            ),
            row("DELETE", Some("member")),
        ]
    );
}

#[tokio::test]
async fn dba_functions_check_their_input_and_who_calls_them() {
    let db = admin().await;
    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    let login = new_login(&db).await;
    let call = |sql: &'static str, args: [&str; 3]| {
        let db = db.clone();
        let args = args.map(str::to_string);
        async move {
            sqlx::query(sql)
                .bind(&args[0])
                .bind(&args[1])
                .bind(&args[2])
                .execute(&db)
                .await
        }
    };
    let grant = "SELECT tenancy.grant_sql_access($1, $2, $3)";
    let e = expect_db_error(
        call(grant, ["no_such_login", &a.slug, "readonly"]).await,
        "22023",
    );
    assert_eq!(e.message, "role \"no_such_login\" does not exist");
    let e = expect_db_error(
        call(grant, ["postgres", &a.slug, "readonly"]).await,
        "22023",
    );
    assert_eq!(
        e.message,
        "role \"postgres\" bypasses row level security: binding it to a tenant would protect nothing"
    );
    let e = expect_db_error(
        call(grant, [&login, "no-such-tenant", "readonly"]).await,
        "TN005",
    );
    assert_eq!(e.message, "tenant \"no-such-tenant\" does not exist");
    let e = expect_db_error(call(grant, [&login, &a.slug, "owner"]).await, "P0002");
    assert_eq!(e.message, "role \"owner\" does not exist in this tenant");
    let e = expect_db_error(
        sqlx::query("SELECT tenancy.grant_all_tenants('no_such_role')")
            .execute(&db)
            .await,
        "22023",
    );
    assert_eq!(e.message, "role \"no_such_role\" does not exist");

    // Only a DBA binds, unbinds and lists: not the analysts, not the login.
    bind(&db, &login, &a, "readonly").await;
    for role in ["analyst", "authenticated", login.as_str()] {
        let mut conn = session_as(role, None).await;
        for sql in [
            format!(
                "SELECT tenancy.grant_sql_access('{login}', '{}', 'admin')",
                b.slug
            ),
            format!("SELECT tenancy.revoke_sql_access('{login}', '{}')", a.slug),
            format!("SELECT tenancy.grant_all_tenants('{login}')"),
            "SELECT tenancy.revoke_all_tenants('analyst')".to_string(),
            "SELECT * FROM tenancy.sql_access".to_string(),
            "SELECT * FROM tenancy.sql_logins".to_string(),
            "SELECT * FROM tenancy.all_tenants".to_string(),
        ] {
            let e = statement_error(&mut conn, &sql, "42501").await;
            assert!(
                e.message.starts_with("permission denied for "),
                "{role}: {sql}: {e:?}"
            );
            conn.execute("ROLLBACK; BEGIN").await.unwrap();
            conn.execute(format!("SET LOCAL ROLE {role}").as_str())
                .await
                .unwrap();
        }
    }
    // A login learns its own bindings and grants only.
    let mut conn = connect_as(&login).await;
    let mine: Vec<(String, Option<Uuid>)> =
        sqlx::query_as("SELECT login, tenant_id FROM tenancy._login_bindings()")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(mine, vec![(login.clone(), Some(a.id))]);
    let grants_in_b: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy._login_grants($1)")
        .bind(b.id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(grants_in_b, 0);
    // A suspended tenant is entered by nobody; its bound login sees nothing.
    sqlx::query("SELECT tenancy.suspend_tenant($1)")
        .bind(&a.slug)
        .execute(&db)
        .await
        .unwrap();
    expect_db_error(tenants_seen(&mut conn).await, "TN001");
}

#[tokio::test]
async fn bindings_of_a_dropped_role_are_reported_until_revoked() {
    // In a database of its own: its check() has errors on purpose, which
    // the tests asserting a clean check() alongside must not see.
    let admin_db = admin().await;
    let name = format!("orphans_{}", Uuid::new_v4().simple());
    admin_db
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db_url(&name))
        .await
        .unwrap();
    let (bound, everywhere) = (
        integration::new_login(&db, "").await,
        integration::new_login(&db, "").await,
    );
    db.execute(
        format!(
            "CREATE EXTENSION pg_tenancy;
             SELECT tenancy.create_tenant('acme', 'Acme');
             SELECT tenancy.grant_sql_access('{bound}', 'acme');
             SELECT tenancy.grant_all_tenants('{everywhere}');
             DROP ROLE {bound}, {everywhere};"
        )
        .as_str(),
    )
    .await
    .unwrap();
    let findings = || {
        let db = db.clone();
        async move {
            sqlx::query_as::<_, (String, String, String, String)>(
                "SELECT object_name, severity, problem, fix FROM tenancy.check() ORDER BY 1",
            )
            .fetch_all(&db)
            .await
            .unwrap()
        }
    };
    let mut expected = vec![
        (
            bound.clone(),
            "error".to_string(),
            "bound to tenant \"acme\", but no role of that name exists: a role created with it would enter the tenant"
                .to_string(),
            format!("SELECT tenancy.revoke_sql_access('{bound}', 'acme');"),
        ),
        (
            everywhere.clone(),
            "error".to_string(),
            "may enter every tenant, but no role of that name exists: a role created with it would"
                .to_string(),
            format!("SELECT tenancy.revoke_all_tenants('{everywhere}');"),
        ),
    ];
    expected.sort();
    assert_eq!(findings().await, expected);
    // The fixes it names clear them.
    for (_, _, _, fix) in expected {
        db.execute(fix.as_str()).await.unwrap();
    }
    assert!(findings().await.is_empty());
    db.close().await;
    admin_db
        .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
        .await
        .unwrap();
}
