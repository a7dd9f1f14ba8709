//! What a DBA does: dump and restore, create and drop the extension, load
//! sql/ again. Uses the real pg_dump, pg_restore and psql.

use integration::*;
use sqlx::{Connection, Executor, PgConnection};
use std::path::PathBuf;
use std::process::Command;
use uuid::Uuid;

fn pg_bin(tool: &str) -> PathBuf {
    let dir = std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let path = PathBuf::from(dir).join(tool);
    assert!(path.exists(), "{} is missing", path.display());
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Rows of `query` (one column, text) in database `db`, for comparing.
async fn rows(db: &str, query: &str, tenant: Uuid) -> Vec<String> {
    let mut conn = PgConnection::connect(&db_url(db)).await.unwrap();
    sqlx::query_scalar(query)
        .bind(tenant)
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn dump_and_restore_keep_everything_and_isolation() {
    let db = admin().await;
    let (t, other) = (new_tenant(&db).await, new_tenant(&db).await);
    insert_invoice(&db, &t, "INV-DUMP", "42.42").await;
    insert_invoice(&db, &other, "INV-OTHER", "1.00").await;
    insert_transaction(&db, &t, "dumped payment", "42.42").await;
    let mut tx = db.begin().await.unwrap();
    set_tenant(&mut *tx, &t.slug).await;
    tx.execute("SELECT tenancy.create_role('auditor', 'reads', ARRAY['invoices.read'])")
        .await
        .unwrap();
    tx.execute("SELECT tenancy.idempotency_claim('import_bank_transactions', '[1]', 'dump-key')")
        .await
        .unwrap();
    tx.execute("SELECT tenancy.idempotency_complete('{\"imported\": 1}', 201)")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A login bound to the tenant (roles belong to the cluster, so the
    // restored database has it too).
    let login = new_login(
        &db,
        "GRANT USAGE ON SCHEMA ledger TO {login}; GRANT SELECT ON ledger.invoices TO {login}",
    )
    .await;
    sqlx::query("SELECT tenancy.grant_sql_access($1, $2, 'auditor')")
        .bind(&login)
        .bind(&t.slug)
        .execute(&db)
        .await
        .unwrap();

    let dir = std::env::temp_dir().join(format!("pg_tenancy_dump_{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let dump = dir.join("db.dump");
    run(Command::new(pg_bin("pg_dump"))
        .args(["-Fc", "-d", &stack().db_url, "-f"])
        .arg(&dump));
    // pg_cron lives only in cron.database_name: restoring into another
    // database leaves its entries out, as a DBA would.
    let list = run(Command::new(pg_bin("pg_restore")).arg("-l").arg(&dump));
    let kept: String = list
        .lines()
        .filter(|l| !l.contains("pg_cron") && !l.contains(" cron "))
        .map(|l| format!("{l}\n"))
        .collect();
    let list_file = dir.join("restore.list");
    std::fs::write(&list_file, kept).unwrap();
    let target = format!("restored_{}", Uuid::new_v4().simple());
    db.execute(format!("CREATE DATABASE {target}").as_str())
        .await
        .unwrap();
    run(Command::new(pg_bin("pg_restore"))
        .args(["--exit-on-error", "-d", &db_url(&target), "-L"])
        .arg(&list_file)
        .arg(&dump));

    for q in [
        "SELECT slug || status FROM tenancy.tenants WHERE id = $1",
        "SELECT name || is_system FROM tenancy.roles WHERE tenant_id = $1 ORDER BY 1",
        "SELECT role || resource || action FROM tenancy.role_permissions WHERE tenant_id = $1 ORDER BY 1",
        "SELECT user_id || role FROM tenancy.user_roles WHERE tenant_id = $1 ORDER BY 1",
        "SELECT key || state || status || body::text || expires_at FROM tenancy.idempotency_keys WHERE tenant_id = $1",
        "SELECT reference || amount || open_amount || status || created_at FROM ledger.invoices WHERE tenant_id = $1 ORDER BY 1",
        "SELECT description || amount || created_at FROM ledger.bank_transactions WHERE tenant_id = $1 ORDER BY 1",
        "SELECT login || role || granted_at FROM tenancy.sql_logins WHERE tenant_id = $1",
        "SELECT role FROM tenancy.all_tenants WHERE $1 IS NOT NULL ORDER BY 1",
    ] {
        let before = rows("pg_tenancy", q, t.id).await;
        assert!(!before.is_empty(), "{q} has rows to compare");
        assert_eq!(rows(&target, q, t.id).await, before, "{q}");
    }

    // Isolation still holds in the restored database.
    let mut conn = PgConnection::connect(&db_url(&target)).await.unwrap();
    let problems: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenancy.check() WHERE severity <> 'notice'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(problems, 0);
    conn.execute("SET ROLE analyst").await.unwrap();
    expect_db_error(
        sqlx::query("SELECT count(*) FROM ledger.invoices")
            .execute(&mut conn)
            .await,
        "TN001",
    );
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut *tx, &t.slug).await;
    let seen: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM ledger.invoices")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, vec![t.id]);
    tx.rollback().await.unwrap();
    conn.close().await.unwrap();
    // The bound login is in its tenant there, without set_tenant.
    let mut conn = connect_as(&db_url(&target), &login).await;
    let seen: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM ledger.invoices")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(seen, vec![t.id]);
    conn.close().await.unwrap();
    db.execute(format!("DROP DATABASE {target} WITH (FORCE)").as_str())
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn creating_twice_and_dropping_with_dependents_are_clear_errors() {
    // In a database of its own: DROP EXTENSION locks every object of the
    // extension, which would deadlock with tests writing alongside.
    let db = admin().await;
    let name = format!("dropping_{}", Uuid::new_v4().simple());
    db.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let mut conn = PgConnection::connect(&db_url(&name)).await.unwrap();
    conn.execute(
        "CREATE EXTENSION pg_tenancy;
         CREATE TABLE public.notes (id int PRIMARY KEY, tenant_id uuid);
         SELECT tenancy.enable('public.notes');",
    )
    .await
    .unwrap();
    let e = expect_db_error(conn.execute("CREATE EXTENSION pg_tenancy").await, "42710");
    assert_eq!(e.message, "extension \"pg_tenancy\" already exists");
    let e = expect_db_error(conn.execute("DROP EXTENSION pg_tenancy").await, "2BP01");
    assert_eq!(
        e.message,
        "cannot drop extension pg_tenancy because other objects depend on it"
    );
    let installed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_extension WHERE extname = 'pg_tenancy'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(installed, 1, "nothing was dropped");
    conn.close().await.unwrap();
    db.execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
        .await
        .unwrap();
}

#[tokio::test]
async fn loading_sql_twice_changes_nothing() {
    let db = admin().await;
    let count = |q: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(q)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    // Only what sql/ creates: tests running alongside add tables with
    // policies of their own, and pg_cron jobs named "test ...".
    const POLICIES: &str =
        "SELECT count(*) FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid \
         WHERE c.relnamespace = 'ledger'::regnamespace";
    const JOBS: &str = "SELECT count(*) FROM cron.job WHERE jobname LIKE 'pg\\_tenancy: %'";
    let policies = count(POLICIES).await;
    let jobs = count(JOBS).await;
    assert!(
        policies >= 3 && jobs == 3,
        "{policies} policies, {jobs} jobs"
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("sql"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for f in files {
        run(Command::new(pg_bin("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                "-d",
                &stack().db_url,
                "-f",
            ])
            .arg(&f)
            .env("PGOPTIONS", "-c client_min_messages=warning"));
    }
    assert_eq!(count(POLICIES).await, policies);
    assert_eq!(count(JOBS).await, jobs);
    assert_eq!(
        count("SELECT count(*) FROM tenancy.check() WHERE severity <> 'notice'").await,
        0
    );
}

#[tokio::test]
async fn version_is_the_installed_version() {
    let db = admin().await;
    let (lib, ext): (String, String) = sqlx::query_as(
        "SELECT tenancy.version(), extversion FROM pg_extension WHERE extname = 'pg_tenancy'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(lib, ext);
    assert_eq!(lib, env!("CARGO_PKG_VERSION"));
}

/// A ledger made by sql/ before 0.7.0 (PRIMARY KEY (id), and a UNIQUE
/// (tenant_id, id) for matches' foreign keys) moves to keys that lead with
/// tenant_id when sql/ is loaded again, rows, matches and foreign keys kept.
#[tokio::test]
async fn loading_sql_moves_an_old_ledger_to_tenant_led_keys_keeping_its_rows() {
    let name = format!("old_keys_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let db = admin().await;
    db.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    let load = |file: &str| {
        run(Command::new(pg_bin("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-d", &db_url(&name), "-f"])
            .arg(repo_root().join("sql").join(file))
            .env("PGOPTIONS", "-c client_min_messages=warning"));
    };
    let mut conn = PgConnection::connect(&db_url(&name)).await.unwrap();
    conn.execute("CREATE EXTENSION pg_tenancy CASCADE").await.unwrap();
    load("10_ledger.sql");
    load("15_matches.sql");
    // Back to the keys of 0.6.0's sql/.
    conn.execute(
        "ALTER TABLE ledger.matches DROP CONSTRAINT matches_invoice_fk, DROP CONSTRAINT matches_transaction_fk;
         ALTER TABLE ledger.invoices DROP CONSTRAINT invoices_pkey, ADD PRIMARY KEY (id),
             ADD CONSTRAINT invoices_tenant_id_id_key UNIQUE (tenant_id, id);
         ALTER TABLE ledger.bank_transactions DROP CONSTRAINT bank_transactions_pkey, ADD PRIMARY KEY (id),
             ADD CONSTRAINT bank_transactions_tenant_id_id_key UNIQUE (tenant_id, id);
         ALTER TABLE ledger.matches DROP CONSTRAINT matches_pkey, ADD PRIMARY KEY (id),
             ADD CONSTRAINT matches_invoice_fk FOREIGN KEY (tenant_id, invoice_id) REFERENCES ledger.invoices (tenant_id, id),
             ADD CONSTRAINT matches_transaction_fk FOREIGN KEY (tenant_id, transaction_id) REFERENCES ledger.bank_transactions (tenant_id, id);",
    )
    .await
    .unwrap();
    let tenant: Uuid = sqlx::query_scalar("SELECT tenancy.create_tenant('old-keys', 'Old keys')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.execute(
        format!(
            "INSERT INTO ledger.invoices (tenant_id, amount, currency, issue_date, reference) VALUES ('{tenant}', 50, 'EUR', '2026-11-01', 'OLD-1');
             INSERT INTO ledger.bank_transactions (tenant_id, amount, currency, booked_on, description) VALUES ('{tenant}', 50, 'EUR', '2026-11-02', 'OLD-1');
             INSERT INTO ledger.matches (tenant_id, invoice_id, transaction_id, allocated_amount)
                 SELECT '{tenant}', i.id, t.id, 20 FROM ledger.invoices i, ledger.bank_transactions t;"
        )
        .as_str(),
    )
    .await
    .unwrap();
    let keys = "SELECT string_agg(format('%s: %s', conrelid::regclass, pg_get_constraintdef(oid)), '; ' ORDER BY conrelid::regclass::text, conname)
                FROM pg_constraint WHERE connamespace = 'ledger'::regnamespace AND contype IN ('p', 'u', 'f') AND confrelid <> 'tenancy.tenants'::regclass";
    let before: String = sqlx::query_scalar(keys).fetch_one(&mut conn).await.unwrap();
    assert!(before.contains("ledger.invoices: PRIMARY KEY (id)"), "{before}");

    load("10_ledger.sql");
    load("15_matches.sql");
    let after: String = sqlx::query_scalar(keys).fetch_one(&mut conn).await.unwrap();
    assert_eq!(
        after,
        "ledger.bank_transactions: PRIMARY KEY (tenant_id, id); \
         ledger.invoices: PRIMARY KEY (tenant_id, id); \
         ledger.invoices: UNIQUE (tenant_id, reference); \
         ledger.matches: FOREIGN KEY (tenant_id, invoice_id) REFERENCES ledger.invoices(tenant_id, id); \
         ledger.matches: PRIMARY KEY (tenant_id, id); \
         ledger.matches: FOREIGN KEY (tenant_id, transaction_id) REFERENCES ledger.bank_transactions(tenant_id, id)"
    );
    let kept: (String, String, String) = sqlx::query_as(
        "SELECT i.open_amount::text, t.unmatched_amount::text, m.allocated_amount::text
         FROM ledger.matches m JOIN ledger.invoices i ON i.id = m.invoice_id JOIN ledger.bank_transactions t ON t.id = m.transaction_id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(kept, ("30".into(), "30".into(), "20".into()));
    drop(conn);
    db.execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str()).await.unwrap();
}
