//! RBAC over HTTP and SQL: permissions from the tables, fresh on every
//! request, no escalation, no reach into another tenant.

use integration::*;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

fn assert_denied(r: &Reply, permission_words: &str) {
    r.assert_error(403, "PERMISSION_DENIED");
    assert!(
        r.message().contains(permission_words),
        "expected the message to name {permission_words}: {r:?}"
    );
}

fn invoice_body() -> Value {
    json!({"amount": "10", "currency": "EUR", "reference": format!("R-{}", Uuid::new_v4()), "counterparty": "x"})
}

async fn seeded() -> (Tenant, Uuid) {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let invoice = insert_invoice(&db, &t, "INV-1", "10.00").await;
    insert_transaction(&db, &t, "pay", "10.00").await;
    (t, invoice)
}

#[tokio::test]
async fn readonly_reads_but_every_write_is_403_naming_the_permission() {
    let (t, invoice) = seeded().await;
    let tok = token(t.id, t.readonly);
    let api = Api::new();
    for path in ["/invoices", "/bank_transactions"] {
        let r = api.get(path, Some(&tok)).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.rows().len(), 1);
    }
    let r = api
        .write(Method::POST, "/invoices", &tok, Some(&invoice_body()))
        .await;
    assert_denied(&r, "invoices.create");
    let r = api
        .write(
            Method::PATCH,
            &format!("/invoices?id=eq.{invoice}"),
            &tok,
            Some(&json!({"counterparty": "y"})),
        )
        .await;
    assert_denied(&r, "invoices.update");
    let r = api
        .write(
            Method::DELETE,
            &format!("/invoices?id=eq.{invoice}"),
            &tok,
            None,
        )
        .await;
    assert_denied(&r, "invoices.delete");
    // Even when no row matches, the answer is 403, not an empty 200.
    let r = api
        .write(
            Method::DELETE,
            &format!("/invoices?id=eq.{}", Uuid::new_v4()),
            &tok,
            None,
        )
        .await;
    assert_denied(&r, "invoices.delete");
    let r = api
        .write(
            Method::POST,
            "/bank_transactions",
            &tok,
            Some(&json!({"amount": 1, "currency": "EUR", "booked_on": "2026-11-01"})),
        )
        .await;
    assert_denied(&r, "bank_transactions.create");
    let r = api
        .write(
            Method::PATCH,
            "/bank_transactions",
            &tok,
            Some(&json!({"description": "y"})),
        )
        .await;
    assert_denied(&r, "bank_transactions.update");
    let r = api
        .write(Method::DELETE, "/bank_transactions", &tok, None)
        .await;
    assert_denied(&r, "bank_transactions.delete");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.invoices WHERE tenant_id = $1")
        .bind(t.id)
        .fetch_one(&admin().await)
        .await
        .unwrap();
    assert_eq!(n, 1, "nothing was written");
}

#[tokio::test]
async fn member_creates_and_updates_but_cannot_delete() {
    let (t, invoice) = seeded().await;
    let tok = token(t.id, t.member);
    let api = Api::new();
    let r = api
        .write(Method::POST, "/invoices", &tok, Some(&invoice_body()))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = api
        .write(
            Method::PATCH,
            &format!("/invoices?id=eq.{invoice}"),
            &tok,
            Some(&json!({"counterparty": "y"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = api
        .write(
            Method::DELETE,
            &format!("/invoices?id=eq.{invoice}"),
            &tok,
            None,
        )
        .await;
    assert_denied(&r, "invoices.delete");
}

#[tokio::test]
async fn my_permissions_lists_the_callers_grants() {
    let (t, _) = seeded().await;
    let r = Api::new()
        .get("/rpc/my_permissions", Some(&token(t.id, t.readonly)))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        json!([{"permission": "*.read", "resource": "*", "action": "read"}])
    );
    let r = Api::new()
        .get("/rpc/my_permissions", Some(&token(t.id, t.admin)))
        .await;
    assert_eq!(
        r.body,
        json!([{"permission": "*.*", "resource": "*", "action": "*"}])
    );
}

#[tokio::test]
async fn admin_manages_roles_and_revocation_applies_on_the_next_request() {
    let (t, _) = seeded().await;
    let admin_tok = token(t.id, t.admin);
    let r = rpc(&admin_tok, "create_role", json!({"name": "auditor", "description": "reads invoices", "permissions": ["invoices.read"]})).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["permissions"], json!(["invoices.read"]));
    assert_eq!(r.body["is_system"], json!(false));

    let auditor = Uuid::new_v4();
    let auditor_tok = token(t.id, auditor);
    // Not a member yet.
    Api::new()
        .get("/invoices", Some(&auditor_tok))
        .await
        .assert_error(403, "NOT_A_MEMBER");
    let r = rpc(
        &admin_tok,
        "assign_role",
        json!({"user_id": auditor, "role": "auditor"}),
    )
    .await;
    assert_eq!((r.status, &r.body), (200, &json!(true)), "{r:?}");
    let r = Api::new().get("/invoices", Some(&auditor_tok)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_denied(
        &Api::new()
            .get("/bank_transactions", Some(&auditor_tok))
            .await,
        "bank_transactions.read",
    );

    // Grant, then revoke: each takes effect on the very next request, same token.
    let r = rpc(
        &admin_tok,
        "grant_permission",
        json!({"role": "auditor", "permission": "bank_transactions.read"}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        Api::new()
            .get("/bank_transactions", Some(&auditor_tok))
            .await
            .status,
        200
    );
    let r = rpc(
        &admin_tok,
        "revoke_permission",
        json!({"role": "auditor", "permission": "invoices.read"}),
    )
    .await;
    assert_eq!(
        r.body["permissions"],
        json!(["bank_transactions.read"]),
        "{r:?}"
    );
    assert_denied(
        &Api::new().get("/invoices", Some(&auditor_tok)).await,
        "invoices.read",
    );

    let r = rpc(
        &admin_tok,
        "unassign_role",
        json!({"user_id": auditor, "role": "auditor"}),
    )
    .await;
    assert_eq!((r.status, &r.body), (200, &json!(true)), "{r:?}");
    Api::new()
        .get("/bank_transactions", Some(&auditor_tok))
        .await
        .assert_error(403, "NOT_A_MEMBER");

    let r = Api::new().get("/rpc/roles", Some(&admin_tok)).await;
    let names: Vec<&str> = r
        .rows()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["admin", "auditor", "member", "readonly"]);
    let r = rpc(&admin_tok, "delete_role", json!({"name": "auditor"})).await;
    assert_eq!(r.status, 204, "{r:?}");
    rpc(&admin_tok, "delete_role", json!({"name": "auditor"}))
        .await
        .assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn members_cannot_escalate() {
    let (t, _) = seeded().await;
    let member_tok = token(t.id, t.member);
    // A member does not hold roles.manage.
    assert_denied(
        &rpc(
            &member_tok,
            "assign_role",
            json!({"user_id": t.member, "role": "admin"}),
        )
        .await,
        "roles.manage",
    );
    assert_denied(
        &rpc(
            &member_tok,
            "create_role",
            json!({"name": "x", "permissions": []}),
        )
        .await,
        "roles.manage",
    );
    assert_denied(
        &rpc(&member_tok, "delete_role", json!({"name": "admin"})).await,
        "roles.manage",
    );
    // Listing roles needs only roles.read, which '*.read' covers.
    assert_eq!(
        Api::new().get("/rpc/roles", Some(&member_tok)).await.status,
        200
    );

    // A manager holds roles.manage but not everything: still no escalation.
    let admin_tok = token(t.id, t.admin);
    let r = rpc(
        &admin_tok,
        "create_role",
        json!({"name": "manager",
        "permissions": ["roles.manage", "roles.read", "invoices.read", "invoices.create"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let manager = Uuid::new_v4();
    rpc(
        &admin_tok,
        "assign_role",
        json!({"user_id": manager, "role": "manager"}),
    )
    .await;
    let m = token(t.id, manager);
    assert_denied(
        &rpc(
            &m,
            "assign_role",
            json!({"user_id": manager, "role": "admin"}),
        )
        .await,
        "*.*",
    );
    assert_denied(
        &rpc(
            &m,
            "assign_role",
            json!({"user_id": Uuid::new_v4(), "role": "member"}),
        )
        .await,
        "*.create",
    );
    assert_denied(
        &rpc(
            &m,
            "create_role",
            json!({"name": "deleter", "permissions": ["invoices.read", "invoices.delete"]}),
        )
        .await,
        "invoices.delete",
    );
    assert_denied(
        &rpc(
            &m,
            "create_role",
            json!({"name": "god", "permissions": ["*.*"]}),
        )
        .await,
        "*.*",
    );
    assert_denied(
        &rpc(
            &m,
            "grant_permission",
            json!({"role": "manager", "permission": "invoices.delete"}),
        )
        .await,
        "invoices.delete",
    );
    assert_denied(
        &rpc(&m, "delete_role", json!({"name": "admin"})).await,
        "system role",
    );
    assert_denied(
        &rpc(&admin_tok, "delete_role", json!({"name": "readonly"})).await,
        "system role",
    );
    assert_denied(
        &rpc(
            &admin_tok,
            "grant_permission",
            json!({"role": "readonly", "permission": "invoices.delete"}),
        )
        .await,
        "system role",
    );
    assert_denied(
        &rpc(
            &admin_tok,
            "revoke_permission",
            json!({"role": "admin", "permission": "*.*"}),
        )
        .await,
        "system role",
    );
    // What a manager may do, it can.
    let r = rpc(
        &m,
        "create_role",
        json!({"name": "clerk", "permissions": ["invoices.read", "invoices.create"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = rpc(
        &m,
        "assign_role",
        json!({"user_id": Uuid::new_v4(), "role": "clerk"}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let roles: Vec<String> = sqlx::query_scalar(
        "SELECT role FROM tenancy.user_roles WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(t.id)
    .bind(t.member)
    .fetch_all(&admin().await)
    .await
    .unwrap();
    assert_eq!(
        roles,
        vec!["member".to_string()],
        "the member's roles are unchanged"
    );
}

#[tokio::test]
async fn bad_role_input_is_a_clear_400_class_error() {
    let (t, _) = seeded().await;
    let a = token(t.id, t.admin);
    let long = "x".repeat(300);
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "create_role",
            json!({"name": "auditor", "permissions": ["nope.read"]}),
            400,
            "INVALID_ARGUMENT",
            "unknown resource \"nope\"",
        ),
        (
            "create_role",
            json!({"name": "auditor2", "permissions": ["invoices.fly"]}),
            400,
            "INVALID_ARGUMENT",
            "unknown action \"fly\"",
        ),
        (
            "create_role",
            json!({"name": "auditor3", "permissions": [""]}),
            400,
            "INVALID_ARGUMENT",
            "invalid permission ''",
        ),
        (
            "create_role",
            json!({"name": "auditor4", "permissions": [null]}),
            400,
            "INVALID_ARGUMENT",
            "invalid permission NULL",
        ),
        (
            "create_role",
            json!({"name": "", "permissions": []}),
            400,
            "INVALID_ARGUMENT",
            "invalid role name ''",
        ),
        (
            "create_role",
            json!({"name": null}),
            400,
            "INVALID_ARGUMENT",
            "invalid role name NULL",
        ),
        (
            "create_role",
            json!({"name": long.clone()}),
            400,
            "INVALID_ARGUMENT",
            "invalid role name",
        ),
        (
            "create_role",
            json!({"name": "Robert'); DROP TABLE x;--"}),
            400,
            "INVALID_ARGUMENT",
            "invalid role name",
        ),
        (
            "create_role",
            json!({"name": "admin"}),
            409,
            "ALREADY_EXISTS",
            "role \"admin\" already exists",
        ),
        (
            "grant_permission",
            json!({"role": "member", "permission": long}),
            400,
            "INVALID_ARGUMENT",
            "invalid permission",
        ),
        (
            "grant_permission",
            json!({"role": "ghost", "permission": "invoices.read"}),
            404,
            "NOT_FOUND",
            "role \"ghost\" does not exist",
        ),
        (
            "assign_role",
            json!({"user_id": null, "role": "member"}),
            400,
            "INVALID_ARGUMENT",
            "user_id must not be NULL",
        ),
        (
            "assign_role",
            json!({"user_id": "not-a-uuid", "role": "member"}),
            400,
            "22P02",
            "",
        ),
        (
            "assign_role",
            json!({"user_id": Uuid::new_v4(), "role": "ghost"}),
            404,
            "NOT_FOUND",
            "",
        ),
    ];
    for (f, args, status, code, words) in cases {
        let r = rpc(&a, f, args.clone()).await;
        assert_eq!(r.status, status, "{f} {args}: {r:?}");
        assert_eq!(r.code(), code, "{f} {args}: {r:?}");
        assert!(r.message().contains(words), "{f} {args}: {r:?}");
    }
}

#[tokio::test]
async fn an_admin_of_one_tenant_cannot_touch_another_tenants_roles() {
    let db = admin().await;
    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    let b_admin = token(b.id, b.admin);
    let r = rpc(
        &b_admin,
        "create_role",
        json!({"name": "b_only", "permissions": ["invoices.read"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let a_admin = token(a.id, a.admin);
    rpc(&a_admin, "delete_role", json!({"name": "b_only"}))
        .await
        .assert_error(404, "NOT_FOUND");
    rpc(
        &a_admin,
        "assign_role",
        json!({"user_id": b.readonly, "role": "b_only"}),
    )
    .await
    .assert_error(404, "NOT_FOUND");
    rpc(
        &a_admin,
        "grant_permission",
        json!({"role": "b_only", "permission": "invoices.delete"}),
    )
    .await
    .assert_error(404, "NOT_FOUND");
    // There is no tenant parameter to smuggle another tenant in.
    let r = rpc(
        &a_admin,
        "assign_role",
        json!({"user_id": b.readonly, "role": "admin", "tenant_id": b.id}),
    )
    .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.code(), "PGRST202", "{r:?}");
    // Assigning a role works only inside the caller's tenant: B is untouched.
    let r = rpc(
        &a_admin,
        "assign_role",
        json!({"user_id": b.readonly, "role": "admin"}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let b_roles: Vec<String> = sqlx::query_scalar(
        "SELECT role FROM tenancy.user_roles WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(b.id)
    .bind(b.readonly)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(b_roles, vec!["readonly".to_string()]);
    let b_perms: Vec<String> =
        sqlx::query_scalar("SELECT resource || '.' || action FROM tenancy.role_permissions WHERE tenant_id = $1 AND role = 'b_only'")
            .bind(b.id)
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(b_perms, vec!["invoices.read".to_string()]);
}

#[tokio::test]
async fn role_claims_inside_the_token_grant_nothing() {
    let (t, invoice) = seeded().await;
    let mut claims = access_claims(t.id, t.readonly);
    claims["roles"] = json!(["admin"]);
    claims["app_role"] = json!("admin");
    claims["permissions"] = json!(["*.*", "invoices.delete"]);
    claims["app_metadata"] = json!({"role": "admin"});
    let tok = sign(&claims, &stack().jwt_secret);
    let r = Api::new()
        .write(
            Method::DELETE,
            &format!("/invoices?id=eq.{invoice}"),
            &tok,
            None,
        )
        .await;
    assert_denied(&r, "invoices.delete");
    assert_denied(
        &rpc(
            &tok,
            "assign_role",
            json!({"user_id": t.readonly, "role": "admin"}),
        )
        .await,
        "roles.manage",
    );
}

#[tokio::test]
async fn has_permission_validates_its_arguments_in_sql() {
    let db = admin().await;
    let cases = [
        (
            "SELECT tenancy.has_permission(NULL, 'read')",
            "resource must not be NULL",
        ),
        (
            "SELECT tenancy.has_permission('invoices', NULL)",
            "action must not be NULL",
        ),
        (
            "SELECT tenancy.has_permission('', 'read')",
            "invalid resource name \"\"",
        ),
        (
            "SELECT tenancy.has_permission('Invoices', 'read')",
            "invalid resource name \"Invoices\"",
        ),
    ];
    for (sql, message) in cases {
        let e = expect_db_error(sqlx::query(sql).execute(&db).await, "22023");
        assert_eq!(e.message, message);
    }
    // Unknown names are only known to be unknown once there is a tenant.
    let t = new_tenant(&db).await;
    let mut tx = db.begin().await.unwrap();
    set_tenant(&mut *tx, &t.slug).await;
    let e = expect_db_error(
        sqlx::query("SELECT tenancy.has_permission('nope', 'read')")
            .execute(&mut *tx)
            .await,
        "22023",
    );
    assert_eq!(e.message, "unknown resource \"nope\"");
    tx.rollback().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    set_tenant(&mut *tx, &t.slug).await;
    let e = expect_db_error(
        sqlx::query("SELECT tenancy.has_permission('invoices', 'fly')")
            .execute(&mut *tx)
            .await,
        "22023",
    );
    assert_eq!(
        e.message,
        "unknown action \"fly\" for resource \"invoices\""
    );
    tx.rollback().await.unwrap();
    // No tenant: false, never an accidental true.
    let no_tenant: bool = sqlx::query_scalar("SELECT tenancy.has_permission('invoices', 'read')")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(!no_tenant);
}

#[tokio::test]
async fn require_permission_raises_42501_in_sql() {
    let db = admin().await;
    let t = new_tenant(&db).await;
    let mut tx = db.begin().await.unwrap();
    let claims = access_claims(t.id, t.readonly).to_string();
    sqlx::query("SELECT set_config('request.jwt.claims', $1, true)")
        .bind(claims)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT tenancy.pre_request()")
        .execute(&mut *tx)
        .await
        .unwrap();
    let ok: bool = sqlx::query_scalar("SELECT tenancy.require_permission('invoices', 'read')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(ok);
    let e = expect_db_error(
        sqlx::query("SELECT tenancy.require_permission('invoices', 'delete')")
            .execute(&mut *tx)
            .await,
        "42501",
    );
    assert_eq!(e.message, "permission invoices.delete is required");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn with_the_pool_warm_on_every_connection_changes_apply_on_the_next_request() {
    // Every connection of PostgREST's pool (10) has served the user, so each
    // has what pre_request looked up for them: a change must still apply to
    // the very next request, on whichever connection it lands.
    let db = admin().await;
    let (t, _) = seeded().await;
    sqlx::query("SELECT tenancy.set_rate_limit($1, 1000000)")
        .bind(&t.slug)
        .execute(&db)
        .await
        .unwrap();
    let member = token(t.id, t.member);
    let warm = |statuses: Vec<u16>| assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    warm(burst(&member, "/invoices", 60, 1).await);

    // A removed member: 403 NOT_A_MEMBER on every connection.
    sqlx::query("DELETE FROM tenancy.user_roles WHERE tenant_id = $1 AND user_id = $2")
        .bind(t.id)
        .bind(t.member)
        .execute(&db)
        .await
        .unwrap();
    let statuses = burst(&member, "/invoices", 60, 1).await;
    assert!(statuses.iter().all(|s| *s == 403), "{statuses:?}");

    // Back, warm again; then a permission taken from the role: 403 naming it.
    sqlx::query("INSERT INTO tenancy.roles (tenant_id, name) VALUES ($1, 'auditor')")
        .bind(t.id)
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO tenancy.role_permissions VALUES ($1, 'auditor', 'invoices', 'read')")
        .bind(t.id)
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("SELECT tenancy.add_member($1, $2, 'auditor')")
        .bind(&t.slug)
        .bind(t.member)
        .execute(&db)
        .await
        .unwrap();
    warm(burst(&member, "/invoices", 60, 1).await);
    sqlx::query("DELETE FROM tenancy.role_permissions WHERE tenant_id = $1 AND role = 'auditor'")
        .bind(t.id)
        .execute(&db)
        .await
        .unwrap();
    for _ in 0..20 {
        assert_denied(
            &Api::new().get("/invoices", Some(&member)).await,
            "invoices.read",
        );
    }

    // A suspended tenant: 403 TENANT_SUSPENDED everywhere, then back.
    let admin_tok = token(t.id, t.admin);
    warm(burst(&admin_tok, "/invoices", 60, 1).await);
    sqlx::query("SELECT tenancy.suspend_tenant($1)")
        .bind(&t.slug)
        .execute(&db)
        .await
        .unwrap();
    for _ in 0..20 {
        Api::new()
            .get("/invoices", Some(&admin_tok))
            .await
            .assert_error(403, "TENANT_SUSPENDED");
    }
    sqlx::query("SELECT tenancy.resume_tenant($1)")
        .bind(&t.slug)
        .execute(&db)
        .await
        .unwrap();
    warm(burst(&admin_tok, "/invoices", 60, 1).await);
}
