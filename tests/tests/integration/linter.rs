//! tenancy.check() in a database of its own, so the broken objects it must
//! find never disturb other tests.

use integration::*;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

async fn fresh_database() -> (String, PgConnection) {
    let name = format!("check_{}", Uuid::new_v4().simple());
    let db = admin().await;
    db.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let url = stack()
        .db_url
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/{name}"))
        .unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    conn.execute("CREATE EXTENSION pg_tenancy CASCADE")
        .await
        .unwrap();
    (name, conn)
}

async fn drop_database(name: &str) {
    admin()
        .await
        .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
        .await
        .unwrap();
}

async fn problems(conn: &mut PgConnection) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT object_type, object_name, problem FROM tenancy.check()")
        .fetch_all(conn)
        .await
        .unwrap()
}

fn has(found: &[(String, String, String)], object: &str, words: &str) -> bool {
    found
        .iter()
        .any(|(_, o, p)| o == object && p.contains(words))
}

#[tokio::test]
async fn check_finds_broken_tables_views_functions_and_roles() {
    let (name, mut conn) = fresh_database().await;
    assert!(problems(&mut conn).await.is_empty());

    conn.execute(
        "CREATE TABLE public.forgot (id int, tenant_id uuid);
         CREATE TABLE public.half (id int, tenant_id uuid);
         SELECT tenancy.enable('public.half');
         ALTER TABLE public.half DISABLE ROW LEVEL SECURITY;
         ALTER TABLE public.half NO FORCE ROW LEVEL SECURITY;
         DROP POLICY tenant_isolation ON public.half;
         DROP INDEX public.half_tenant_id_tenant_idx;
         CREATE VIEW public.peek AS SELECT * FROM public.half;
         CREATE VIEW public.peek2 WITH (security_invoker = true) AS SELECT * FROM public.peek;
         CREATE VIEW public.fine WITH (security_invoker = true) AS SELECT * FROM public.half;
         CREATE FUNCTION public.definer() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1';
         CREATE FUNCTION public.pinned() RETURNS int LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS 'SELECT 1';",
    )
    .await
    .unwrap();
    let found = problems(&mut conn).await;
    assert!(
        has(&found, "public.forgot", "not tenant-scoped"),
        "{found:?}"
    );
    assert!(
        has(&found, "public.half", "row level security is not enabled"),
        "{found:?}"
    );
    assert!(has(&found, "public.half", "not forced"), "{found:?}");
    assert!(
        has(&found, "public.half", "no tenant_isolation policy"),
        "{found:?}"
    );
    assert!(
        has(&found, "public.half", "no index leads with tenant_id"),
        "{found:?}"
    );
    assert!(has(&found, "public.peek", "security_invoker"), "{found:?}");
    assert!(
        !found
            .iter()
            .any(|(_, o, _)| o == "public.fine" || o == "public.pinned()"),
        "{found:?}"
    );
    assert!(has(&found, "public.definer()", "search_path"), "{found:?}");

    // Roles are cluster-wide: create them inside a transaction that is rolled
    // back, so no other test ever sees them.
    let mut tx = conn.begin().await.unwrap();
    tx.execute(
        "CREATE ROLE check_bypass_login LOGIN BYPASSRLS;
         CREATE ROLE check_bypass_group NOLOGIN BYPASSRLS;
         CREATE ROLE check_gateway LOGIN;
         GRANT check_bypass_group TO check_gateway;",
    )
    .await
    .unwrap();
    let found = problems(&mut tx).await;
    assert!(has(&found, "check_bypass_login", "BYPASSRLS"), "{found:?}");
    assert!(
        has(&found, "check_gateway", "check_bypass_group"),
        "{found:?}"
    );
    tx.rollback().await.unwrap();

    conn.execute(
        "SELECT tenancy.enable('public.half'); SELECT tenancy.enable('public.forgot');
                  ALTER VIEW public.peek SET (security_invoker = true);
                  ALTER FUNCTION public.definer() SET search_path = pg_catalog, pg_temp;",
    )
    .await
    .unwrap();
    assert!(problems(&mut conn).await.is_empty());
    conn.close().await.unwrap();
    drop_database(&name).await;
}

/// What check() reports of one object: severity, problem, fix.
async fn findings_of(conn: &mut PgConnection, object: &str) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT severity, problem, fix FROM tenancy.check() WHERE object_name = $1")
        .bind(object)
        .fetch_all(conn)
        .await
        .unwrap()
}

/// tenancy.pre_request() runs as its caller and calls _pre_request(): a role
/// granted one without the other is reported, with the grant or revoke to
/// run.
#[tokio::test]
async fn check_finds_a_hook_role_without_the_inner_grant() {
    let (name, mut conn) = fresh_database().await;
    let mut tx = conn.begin().await.unwrap();
    tx.execute(
        "CREATE ROLE check_hook_caller NOLOGIN;
         GRANT EXECUTE ON FUNCTION tenancy.pre_request() TO check_hook_caller;",
    )
    .await
    .unwrap();
    let rows = findings_of(&mut tx, "check_hook_caller").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "error");
    assert!(
        rows[0].1.contains("every request it makes is refused"),
        "{rows:?}"
    );
    assert_eq!(
        rows[0].2,
        "GRANT EXECUTE ON FUNCTION tenancy._pre_request() TO check_hook_caller;"
    );
    // Run as that role, the hook is refused: it fails closed.
    tx.execute("SET LOCAL ROLE check_hook_caller")
        .await
        .unwrap();
    let err = tx
        .execute("SELECT tenancy.pre_request()")
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501"),
        "{err}"
    );
    tx.rollback().await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    tx.execute(
        "CREATE ROLE check_hook_caller NOLOGIN;
         GRANT EXECUTE ON FUNCTION tenancy.pre_request(), tenancy._pre_request() TO check_hook_caller;",
    )
    .await
    .unwrap();
    assert!(!has(&problems(&mut tx).await, "check_hook_caller", ""));
    tx.execute("REVOKE EXECUTE ON FUNCTION tenancy.pre_request() FROM check_hook_caller")
        .await
        .unwrap();
    let rows = findings_of(&mut tx, "check_hook_caller").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "warning");
    assert!(rows[0].1.contains("claims it writes itself"), "{rows:?}");
    assert_eq!(
        rows[0].2,
        "REVOKE EXECUTE ON FUNCTION tenancy._pre_request() FROM check_hook_caller;"
    );
    tx.rollback().await.unwrap();
    conn.close().await.unwrap();
    drop_database(&name).await;
}
