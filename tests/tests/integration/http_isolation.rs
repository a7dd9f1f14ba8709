//! Over HTTP, tenant A's token acts on A's rows only — on every endpoint.

use integration::*;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

struct Pair {
    a: Tenant,
    b: Tenant,
    a_invoice: Uuid,
    b_invoice: Uuid,
    b_transaction: Uuid,
    a_token: String,
}

async fn pair() -> Pair {
    let db = admin().await;
    let (a, b) = (new_tenant(&db).await, new_tenant(&db).await);
    let a_invoice = insert_invoice(&db, &a, "INV-A", "100.00").await;
    let b_invoice = insert_invoice(&db, &b, "INV-B", "200.00").await;
    insert_transaction(&db, &a, "A pays", "100.00").await;
    let b_transaction = insert_transaction(&db, &b, "B pays", "200.00").await;
    let a_token = token(a.id, a.admin);
    Pair {
        a,
        b,
        a_invoice,
        b_invoice,
        b_transaction,
        a_token,
    }
}

async fn invoice_in_db(id: Uuid) -> Option<(Uuid, String, String)> {
    sqlx::query_as("SELECT tenant_id, reference, amount::text FROM ledger.invoices WHERE id = $1")
        .bind(id)
        .fetch_optional(&admin().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn reads_return_only_the_callers_rows() {
    let p = pair().await;
    let api = Api::new();
    for path in ["/invoices", "/bank_transactions"] {
        let r = api.get(path, Some(&p.a_token)).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.rows().len(), 1, "{path}: {r:?}");
        assert!(r
            .rows()
            .iter()
            .all(|row| row["tenant_id"] == json!(p.a.id.to_string())));
    }
    // Asking for B's rows by id or by tenant finds nothing.
    for path in [
        format!("/invoices?id=eq.{}", p.b_invoice),
        format!("/invoices?tenant_id=eq.{}", p.b.id),
        format!("/bank_transactions?id=eq.{}", p.b_transaction),
        format!(
            "/invoices?or=(tenant_id.eq.{},tenant_id.eq.{})",
            p.a.id, p.b.id
        ),
    ] {
        let r = api.get(&path, Some(&p.a_token)).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(
            r.rows()
                .iter()
                .all(|row| row["tenant_id"] == json!(p.a.id.to_string())),
            "{path}: {r:?}"
        );
    }
    let r = api
        .get(
            &format!("/invoices?id=eq.{}", p.b_invoice),
            Some(&p.a_token),
        )
        .await;
    assert!(r.rows().is_empty());
}

#[tokio::test]
async fn every_api_view_is_isolated() {
    // Generic over the api schema, so a view added later is covered too.
    let p = pair().await;
    let views: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, coalesce((SELECT option_value::boolean FROM pg_options_to_table(c.reloptions) \
                                             WHERE option_name = 'security_invoker'), false) \
         FROM pg_class c WHERE c.relnamespace = 'api'::regnamespace AND c.relkind = 'v'",
    )
    .fetch_all(&admin().await)
    .await
    .unwrap();
    assert!(views.len() >= 2, "{views:?}");
    let api = Api::new();
    for (view, invoker) in views {
        assert!(invoker, "api.{view} must be security_invoker");
        let r = api.get(&format!("/{view}"), Some(&p.a_token)).await;
        assert_eq!(r.status, 200, "{view}: {r:?}");
        for row in r.rows() {
            if let Some(tid) = row.get("tenant_id") {
                assert_eq!(
                    tid,
                    &json!(p.a.id.to_string()),
                    "api.{view} leaked a row: {row}"
                );
            }
        }
        let text = r.body.to_string();
        assert!(
            !text.contains(&p.b.id.to_string()),
            "api.{view} leaked tenant B: {text}"
        );
    }
}

#[tokio::test]
async fn writes_to_another_tenants_rows_change_nothing() {
    let p = pair().await;
    let api = Api::new();
    let before = invoice_in_db(p.b_invoice).await;

    let r = api
        .write(
            Method::PATCH,
            &format!("/invoices?id=eq.{}", p.b_invoice),
            &p.a_token,
            Some(&json!({"reference": "HACKED"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.rows().is_empty(), "{r:?}");

    let r = api
        .write(
            Method::DELETE,
            &format!("/invoices?id=eq.{}", p.b_invoice),
            &p.a_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.rows().is_empty(), "{r:?}");

    let r = api
        .write(
            Method::DELETE,
            &format!("/bank_transactions?tenant_id=eq.{}", p.b.id),
            &p.a_token,
            None,
        )
        .await;
    assert!(r.rows().is_empty(), "{r:?}");

    assert_eq!(
        invoice_in_db(p.b_invoice).await,
        before,
        "B's invoice must be untouched"
    );
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger.bank_transactions WHERE tenant_id = $1")
            .bind(p.b.id)
            .fetch_one(&admin().await)
            .await
            .unwrap();
    assert_eq!(left, 1);
}

#[tokio::test]
async fn inserting_or_moving_a_row_into_another_tenant_is_refused() {
    let p = pair().await;
    let api = Api::new();
    let r = api
        .write(
            Method::POST,
            "/invoices",
            &p.a_token,
            Some(&json!({"tenant_id": p.b.id, "amount": 5, "currency": "EUR", "reference": "X-1", "counterparty": "x"})),
        )
        .await;
    r.assert_error(403, "42501");
    assert!(r.message().contains("row-level security"), "{r:?}");

    let r = api
        .write(
            Method::POST,
            "/bank_transactions",
            &p.a_token,
            Some(&json!({"tenant_id": p.b.id, "amount": 5, "currency": "EUR", "booked_on": "2026-11-01"})),
        )
        .await;
    r.assert_error(403, "42501");

    let r = api
        .write(
            Method::PATCH,
            &format!("/invoices?id=eq.{}", p.a_invoice),
            &p.a_token,
            Some(&json!({"tenant_id": p.b.id})),
        )
        .await;
    r.assert_error(403, "42501");

    let b_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger.invoices WHERE tenant_id = $1")
            .bind(p.b.id)
            .fetch_one(&admin().await)
            .await
            .unwrap();
    assert_eq!(b_rows, 1, "nothing may land in B");
    assert_eq!(invoice_in_db(p.a_invoice).await.unwrap().0, p.a.id);
}

#[tokio::test]
async fn crud_on_own_rows_works_and_the_tenant_comes_from_the_token() {
    let p = pair().await;
    let api = Api::new();
    let r = api
        .write(
            Method::POST,
            "/invoices",
            &p.a_token,
            Some(&json!({"amount": "120.50", "currency": "EUR", "issue_date": "2026-11-01",
                         "due_date": "2026-12-01", "reference": "INV-NEW", "counterparty": "Hooli"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let row = &r.rows()[0];
    assert_eq!(row["tenant_id"], json!(p.a.id.to_string()));
    assert_eq!(row["open_amount"], json!(120.50));
    assert_eq!(row["status"], json!("open"));
    let id = row["id"].as_str().unwrap().to_string();

    let r = api
        .write(
            Method::PATCH,
            &format!("/invoices?id=eq.{id}"),
            &p.a_token,
            Some(&json!({"amount": "100.50"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.rows()[0]["open_amount"], json!(100.50));

    let r = api
        .write(
            Method::DELETE,
            &format!("/invoices?id=eq.{id}"),
            &p.a_token,
            None,
        )
        .await;
    assert_eq!(r.rows().len(), 1, "{r:?}");

    let r = api
        .write(
            Method::POST,
            "/bank_transactions",
            &p.a_token,
            Some(&json!({"amount": -12.3, "currency": "EUR", "booked_on": "2026-11-02", "description": "fee"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.rows()[0]["status"], json!("unmatched"));
}

#[tokio::test]
async fn bad_input_is_a_4xx_never_a_500() {
    let p = pair().await;
    let api = Api::new();
    let invoice = |patch: Value| {
        let mut base = json!({"amount": "10", "currency": "EUR", "reference": format!("R-{}", Uuid::new_v4()), "counterparty": "x"});
        for (k, v) in patch.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (invoice(json!({"amount": "abc"})), 400, "22P02"),
        (invoice(json!({"amount": -5})), 400, "23514"),
        (invoice(json!({"amount": "1.00001"})), 400, "23514"),
        (invoice(json!({"currency": "euro"})), 400, "23514"),
        (invoice(json!({"issue_date": "2026-13-45"})), 400, "22008"),
        (
            invoice(json!({"issue_date": "2026-11-10", "due_date": "2026-11-01"})),
            400,
            "23514",
        ),
        (invoice(json!({"reference": "INV-A"})), 409, "23505"),
        (invoice(json!({"id": "not-a-uuid"})), 400, "22P02"),
        (invoice(json!({"no_such_column": 1})), 400, "PGRST204"),
    ];
    for (body, status, code) in cases {
        let r = api
            .write(Method::POST, "/invoices", &p.a_token, Some(&body))
            .await;
        assert_eq!(r.status, status, "{body}: {r:?}");
        assert_eq!(r.code(), code, "{body}: {r:?}");
    }
    let r = api
        .get("/invoices?id=eq.not-a-uuid", Some(&p.a_token))
        .await;
    r.assert_error(400, "22P02");
    let r = api
        .send(
            Method::POST,
            "/invoices",
            Some(&p.a_token),
            &[("Content-Type", "application/json")],
            None,
        )
        .await;
    assert!(r.status >= 400 && r.status < 500, "{r:?}");
}

#[tokio::test]
async fn pooled_connections_never_mix_tenants() {
    // Many interleaved requests from two tenants over PostgREST's pool: each
    // response holds its own tenant's rows only.
    let p = pair().await;
    let b_token = token(p.b.id, p.b.admin);
    let api = Api::new();
    let mut handles = Vec::new();
    for i in 0..60 {
        let (client, tok, want) = if i % 2 == 0 {
            (api.clone(), p.a_token.clone(), p.a.id)
        } else {
            (api.clone(), b_token.clone(), p.b.id)
        };
        handles.push(tokio::spawn(async move {
            let path = if i % 3 == 0 {
                "/bank_transactions"
            } else {
                "/invoices"
            };
            let r = client.get(path, Some(&tok)).await;
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.rows().len(), 1);
            assert!(
                r.rows()
                    .iter()
                    .all(|row| row["tenant_id"] == json!(want.to_string())),
                "{r:?}"
            );
        }));
        if i % 10 == 9 {
            // an anonymous request in between must not inherit anything either
            let r = api.get("/invoices", None).await;
            assert_eq!(r.status, 401, "{r:?}");
        }
    }
    for h in handles {
        h.await.unwrap();
    }
}
