//! Every bad token gets 401/403 with a JSON error code — never 500, never data.

use integration::*;
use serde_json::{json, Value};
use uuid::Uuid;

async fn tenant_with_data() -> Tenant {
    let db = admin().await;
    let t = new_tenant(&db).await;
    insert_invoice(&db, &t, "INV-1", "10.00").await;
    t
}

async fn get_invoices(token: &str) -> Reply {
    Api::new().get("/invoices", Some(token)).await
}

fn with(claims: Value, key: &str, value: Value) -> Value {
    let mut c = claims;
    c[key] = value;
    c
}

fn without(claims: Value, key: &str) -> Value {
    let mut c = claims;
    c.as_object_mut().unwrap().remove(key);
    c
}

#[tokio::test]
async fn a_valid_token_reads_its_tenant() {
    let t = tenant_with_data().await;
    let r = get_invoices(&token(t.id, t.admin)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.rows().len(), 1);
    assert_eq!(r.rows()[0]["tenant_id"], json!(t.id.to_string()));
}

#[tokio::test]
async fn bad_signature_is_401() {
    let t = tenant_with_data().await;
    let forged = sign(
        &access_claims(t.id, t.admin),
        "another-secret-that-is-long-enough-0123456789",
    );
    get_invoices(&forged).await.assert_error(401, "PGRST301");
}

#[tokio::test]
async fn alg_none_is_401() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let t = tenant_with_data().await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(access_claims(t.id, t.admin).to_string());
    for unsigned in [format!("{header}.{body}."), format!("{header}.{body}")] {
        let r = get_invoices(&unsigned).await;
        assert_eq!(r.status, 401, "{r:?}");
        assert!(r.body.is_object() && r.code().starts_with("PGRST"), "{r:?}");
    }
}

#[tokio::test]
async fn expired_token_is_401() {
    let t = tenant_with_data().await;
    let claims = with(access_claims(t.id, t.admin), "exp", json!(1_000_000_000));
    let r = get_invoices(&sign(&claims, &stack().jwt_secret)).await;
    r.assert_error(401, "PGRST301");
    assert_eq!(r.message(), "JWT expired");
}

#[tokio::test]
async fn claim_problems_are_rejected_with_our_codes() {
    let t = tenant_with_data().await;
    let db = admin().await;
    let suspended = new_tenant(&db).await;
    sqlx::query("SELECT tenancy.suspend_tenant($1)")
        .bind(&suspended.slug)
        .execute(&db)
        .await
        .unwrap();
    let stranger = new_tenant(&db).await;
    let good = access_claims(t.id, t.admin);

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "missing tenant_id",
            without(good.clone(), "tenant_id"),
            401,
            "TENANT_CLAIM_INVALID",
        ),
        (
            "tenant_id not a uuid",
            with(good.clone(), "tenant_id", json!("acme")),
            401,
            "TENANT_CLAIM_INVALID",
        ),
        (
            "tenant_id a number",
            with(good.clone(), "tenant_id", json!(42)),
            401,
            "TENANT_CLAIM_INVALID",
        ),
        (
            "tenant_id an array",
            with(good.clone(), "tenant_id", json!([t.id.to_string()])),
            401,
            "TENANT_CLAIM_INVALID",
        ),
        (
            "tenant_id with SQL",
            with(good.clone(), "tenant_id", json!("' OR 1=1 --")),
            401,
            "TENANT_CLAIM_INVALID",
        ),
        (
            "unknown tenant",
            with(good.clone(), "tenant_id", json!(Uuid::new_v4().to_string())),
            403,
            "TENANT_NOT_FOUND",
        ),
        (
            "suspended tenant",
            access_claims(suspended.id, suspended.admin),
            403,
            "TENANT_SUSPENDED",
        ),
        (
            "refresh token",
            with(good.clone(), "type", json!("refresh")),
            401,
            "TOKEN_TYPE_INVALID",
        ),
        (
            "no type",
            without(good.clone(), "type"),
            401,
            "TOKEN_TYPE_INVALID",
        ),
        (
            "missing sub",
            without(good.clone(), "sub"),
            401,
            "SUBJECT_CLAIM_INVALID",
        ),
        (
            "sub not a uuid",
            with(good.clone(), "sub", json!("alice")),
            401,
            "SUBJECT_CLAIM_INVALID",
        ),
        (
            "user of no tenant",
            access_claims(t.id, Uuid::new_v4()),
            403,
            "NOT_A_MEMBER",
        ),
        (
            "member of another tenant",
            access_claims(t.id, stranger.admin),
            403,
            "NOT_A_MEMBER",
        ),
    ];
    for (what, claims, status, code) in cases {
        let r = get_invoices(&sign(&claims, &stack().jwt_secret)).await;
        assert_eq!(r.status, status, "{what}: {r:?}");
        assert_eq!(r.code(), code, "{what}: {r:?}");
        assert!(r.body.is_object(), "{what}: an error, never data: {r:?}");
    }
}

#[tokio::test]
async fn a_401_from_our_checks_carries_www_authenticate() {
    let t = tenant_with_data().await;
    let claims = with(access_claims(t.id, t.admin), "type", json!("refresh"));
    let r = get_invoices(&sign(&claims, &stack().jwt_secret)).await;
    r.assert_error(401, "TOKEN_TYPE_INVALID");
    let h = r
        .headers
        .get("www-authenticate")
        .expect("WWW-Authenticate header")
        .to_str()
        .unwrap();
    assert!(h.starts_with("Bearer"), "{h}");
}

#[tokio::test]
async fn a_role_claim_cannot_escalate_to_a_privileged_role() {
    let t = tenant_with_data().await;
    for role in ["postgres", "ledger_owner", "authenticator", "analyst"] {
        let claims = with(access_claims(t.id, t.admin), "role", json!(role));
        let r = get_invoices(&sign(&claims, &stack().jwt_secret)).await;
        assert!(matches!(r.status, 401 | 403), "role {role}: {r:?}");
        assert!(
            r.body.is_object(),
            "role {role}: an error, never data: {r:?}"
        );
    }
}

#[tokio::test]
async fn without_a_token_only_health_answers() {
    let api = Api::new();
    let r = api.get("/invoices", None).await;
    r.assert_error(401, "42501");
    let r = api.get("/bank_transactions", None).await;
    r.assert_error(401, "42501");
    let r = api.get("/rpc/health", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["status"], json!("ok"));
}
