//! docker/ must use the very files the native stack and the tests use: no
//! second copy of any SQL or configuration that could drift.

use integration::repo_root;
use std::path::{Path, PathBuf};

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_container_loads_every_sql_file_the_native_stack_loads() {
    let compose = read("docker/docker-compose.yml");
    let mut sql: Vec<String> = std::fs::read_dir(repo_root().join("sql"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sql") && n.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    sql.sort();
    assert!(sql.len() >= 5, "{sql:?}");
    for name in sql.iter().filter(|n| !n.contains("demo")) {
        let mount = format!("- ../sql/{name}:/docker-entrypoint-initdb.d/{name}:ro");
        assert!(
            compose.contains(&mount),
            "docker-compose.yml does not load sql/{name} ({mount})"
        );
    }
}

#[test]
fn the_container_uses_the_same_server_and_postgrest_settings() {
    let compose = read("docker/docker-compose.yml");
    let dockerfile = read("docker/Dockerfile");
    let lib = read("scripts/lib.sh");
    assert!(
        dockerfile.contains("COPY sql/postgresql.conf"),
        "the image must take sql/postgresql.conf"
    );
    assert!(
        lib.contains("$ROOT/sql/postgresql.conf"),
        "the scripts must take sql/postgresql.conf"
    );
    assert!(
        compose.contains("- ../api-config/postgrest.conf:/etc/postgrest/postgrest.conf:ro")
            && compose.contains("command: [\"postgrest\", \"/etc/postgrest/postgrest.conf\"]"),
        "PostgREST in docker must run api-config/postgrest.conf"
    );
    assert!(
        compose.contains("image: postgrest/postgrest:v12.0.2"),
        "the same PostgREST version as the tests"
    );
    assert!(lib.contains("POSTGREST_VERSION=12.0.2"));
    assert!(
        dockerfile.contains("COPY dist/pg_tenancy-"),
        "the image installs the release artifact"
    );
    // Environment may override only where PostgREST connects, listens and its secret.
    for line in compose
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("PGRST_"))
    {
        let key = line.split(':').next().unwrap();
        assert!(
            ["PGRST_DB_URI", "PGRST_SERVER_HOST", "PGRST_JWT_SECRET"].contains(&key),
            "docker-compose.yml overrides {key}; change api-config/postgrest.conf instead"
        );
    }
}

#[test]
fn docker_holds_no_copy_of_sql_or_configuration() {
    for path in files_under(&repo_root().join("docker")) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.ends_with(".sql") && !name.ends_with(".conf"),
            "{} is a second copy; reference the file in sql/ or api-config/",
            path.display()
        );
    }
}
