//! docker/ must use the very files the native stack and the tests use: no
//! second copy of any SQL or configuration that could drift. The same holds
//! for the Citus deployment in docker/citus/ and scripts/test_citus.

use integration::repo_root;
use std::path::{Path, PathBuf};

const CITUS_COMPOSE: &str = "docker/citus/docker-compose.yml";
const INITDB: &str = "/docker-entrypoint-initdb.d/";
/// The Citus image's own init script: CREATE EXTENSION citus in POSTGRES_DB.
const CITUS_IMAGE_INIT: &str = "001-create-citus-extension.sql";

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A file the Citus compose file mounts, by its path relative to docker/citus/.
fn citus_mounted(host: &str) -> PathBuf {
    repo_root().join("docker/citus").join(host)
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

/// The numbered SQL files of a directory of the repository, sorted, demo
/// data included.
fn numbered_sql(dir: &str) -> Vec<String> {
    let mut sql: Vec<String> = std::fs::read_dir(repo_root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sql") && n.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    sql.sort();
    sql
}

/// The lines of one service of a compose file: from `  name:` up to the next
/// line indented less than its keys.
fn service(compose: &str, name: &str) -> String {
    let header = format!("  {name}:");
    let mut lines = compose.lines().skip_while(|l| *l != header);
    assert!(
        lines.next().is_some(),
        "the compose file has no service {name}"
    );
    lines
        .take_while(|l| l.trim().is_empty() || l.starts_with("    "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A service's init files: (path on the host, name in /docker-entrypoint-initdb.d/),
/// in the order the compose file lists them.
fn init_mounts(service: &str) -> Vec<(String, String)> {
    service
        .lines()
        .filter_map(|l| {
            let spec = l.trim().strip_prefix("- ")?;
            let (host, target) = spec.split_once(':')?;
            let name = target.strip_prefix(INITDB)?;
            let name = name
                .strip_suffix(":ro")
                .unwrap_or_else(|| panic!("{spec}: init files are mounted read-only"));
            Some((host.to_string(), name.to_string()))
        })
        .collect()
}

/// Sort keys of a file name in the orders the entrypoint's `/docker-entrypoint-initdb.d/*`
/// may list it: bytes (C locale), and the image's en_US.utf8 as glibc sorts it
/// since 2.28 (punctuation before digits before letters) and before (punctuation
/// ignored, but to break ties).
fn collation_keys(name: &str) -> [Vec<(u8, u8)>; 3] {
    let class = |b: u8| match b {
        b'0'..=b'9' => 1,
        b'a'..=b'z' | b'A'..=b'Z' => 2,
        _ => 0,
    };
    let weight = |b: u8| (class(b), b.to_ascii_lowercase());
    [
        name.bytes().map(|b| (0, b)).collect(),
        name.bytes().map(weight).collect(),
        name.bytes()
            .filter(|b| class(*b) != 0)
            .map(weight)
            .collect(),
    ]
}

/// Whether the entrypoint runs init file `a` before `b`, whichever of those
/// orders the image's shell uses.
fn runs_before(a: &str, b: &str) -> bool {
    let (a, b) = (collation_keys(a), collation_keys(b));
    a.iter().zip(b.iter()).all(|(a, b)| a < b)
}

/// The artifact's installation: the `COPY dist/...` line and the RUN after it.
fn artifact_install(dockerfile: &str) -> Vec<&str> {
    let lines: Vec<&str> = dockerfile.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("COPY dist/pg_tenancy-"))
        .expect("the image installs the release artifact");
    let mut end = start + 1;
    assert!(
        lines[end].starts_with("RUN "),
        "the artifact is installed right after it is copied"
    );
    while lines[end].ends_with('\\') {
        end += 1;
    }
    let install = lines[start..=end].to_vec();
    assert!(
        install.iter().any(|l| l.contains("install.sh")),
        "{install:#?}"
    );
    install
}

/// PostgREST in a compose file: the version the tests run, api-config/postgrest.conf,
/// and environment overriding only where it connects, where it listens and
/// its secret, plus `extra` keys.
fn assert_postgrest_as_in_the_tests(path: &str, extra: &[&str]) {
    let compose = read(path);
    // The repository root, seen from the compose file's directory.
    let root = "../".repeat(Path::new(path).parent().unwrap().components().count());
    assert!(
        compose.contains(&format!(
            "- {root}api-config/postgrest.conf:/etc/postgrest/postgrest.conf:ro"
        )) && compose.contains("command: [\"postgrest\", \"/etc/postgrest/postgrest.conf\"]"),
        "PostgREST in {path} must run api-config/postgrest.conf"
    );
    assert!(
        compose.contains("image: postgrest/postgrest:v12.0.2"),
        "{path}: the same PostgREST version as the tests"
    );
    assert!(read("scripts/lib.sh").contains("POSTGREST_VERSION=12.0.2"));
    for line in compose
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("PGRST_"))
    {
        let key = line.split(':').next().unwrap();
        assert!(
            ["PGRST_DB_URI", "PGRST_SERVER_HOST", "PGRST_JWT_SECRET"].contains(&key)
                || extra.contains(&key),
            "{path} overrides {key}; change api-config/postgrest.conf instead"
        );
    }
}

#[test]
fn the_container_loads_every_sql_file_the_native_stack_loads() {
    let compose = read("docker/docker-compose.yml");
    let sql = numbered_sql("sql");
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
    artifact_install(&dockerfile);
    assert_postgrest_as_in_the_tests("docker/docker-compose.yml", &[]);
}

#[test]
fn docker_holds_no_copy_of_sql_or_configuration() {
    // docker/citus/ included: every file below docker/.
    let originals: Vec<(PathBuf, String)> = files_under(&repo_root().join("sql"))
        .into_iter()
        .chain(files_under(&repo_root().join("api-config")))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    for path in files_under(&repo_root().join("docker")) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.ends_with(".sql") && !name.ends_with(".conf"),
            "{} is a second copy; reference the file in sql/ or api-config/",
            path.display()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        if let Some((original, _)) = originals
            .iter()
            .find(|(_, o)| !o.trim().is_empty() && o.trim() == text.trim())
        {
            panic!(
                "{} is a copy of {}; reference that file instead",
                path.display(),
                original.display()
            );
        }
    }
}

#[test]
fn the_citus_coordinator_loads_sql_then_sql_citus_in_the_order_of_their_numbers() {
    let compose = read(CITUS_COMPOSE);
    // scripts/test_citus's order: the files of sql/ and sql/citus/ by name.
    let mut expected: Vec<(String, String)> = numbered_sql("sql")
        .into_iter()
        .filter(|n| !n.contains("demo"))
        .map(|n| (format!("../../sql/{n}"), n))
        .chain(
            numbered_sql("sql/citus")
                .into_iter()
                .map(|n| (format!("../../sql/citus/{n}"), n)),
        )
        .collect();
    expected.sort_by(|a, b| a.1.cmp(&b.1));
    let loaded: Vec<(String, String)> = init_mounts(&service(&compose, "coordinator"))
        .into_iter()
        .filter(|(host, _)| host.starts_with("../../sql/"))
        .collect();
    assert_eq!(
        loaded, expected,
        "the coordinator must mount every file of sql/ and sql/citus/ (demo data left out) under its own name, in order"
    );
    for pair in expected.windows(2) {
        assert!(
            runs_before(&pair[0].1, &pair[1].1),
            "{} would not run before {}",
            pair[0].1,
            pair[1].1
        );
    }
    let at = |name: &str| {
        expected
            .iter()
            .position(|(_, n)| n == name)
            .unwrap_or_else(|| panic!("{name} is not loaded"))
    };
    assert!(
        at("15_matches.sql") < at("17_distribute.sql")
            && at("17_distribute.sql") < at("20_api.sql")
    );
    // The workers get every object from the coordinator, through Citus.
    for worker in ["worker1", "worker2"] {
        let mounts = init_mounts(&service(&compose, worker));
        assert!(
            mounts
                .iter()
                .all(|(host, _)| !host.starts_with("../../sql/")),
            "{worker} loads sql/ itself: {mounts:?}"
        );
    }
}

#[test]
fn the_citus_coordinator_adds_the_workers_before_sql_01_extensions() {
    let compose = read(CITUS_COMPOSE);
    let coordinator = service(&compose, "coordinator");
    let (name, script) = init_mounts(&coordinator)
        .into_iter()
        .find_map(|(host, name)| {
            let text = std::fs::read_to_string(citus_mounted(&host)).ok()?;
            text.contains("citus_add_node").then_some((name, text))
        })
        .expect("the coordinator runs an init script that adds the workers");
    for call in [
        "citus_set_coordinator_host('coordinator', 5432)",
        "citus_add_node('worker1', 5432)",
        "citus_add_node('worker2', 5432)",
    ] {
        assert!(script.contains(call), "{name} does not run {call}");
    }
    assert!(
        runs_before(CITUS_IMAGE_INIT, &name) && runs_before(&name, "01_extensions.sql"),
        "{name} must run after the image's {CITUS_IMAGE_INIT} (CREATE EXTENSION citus) and before sql/01_extensions.sql"
    );
    for worker in ["worker1", "worker2"] {
        assert!(
            coordinator.contains(&format!(
                "      {worker}:\n        condition: service_healthy"
            )),
            "the coordinator must wait until {worker} is healthy"
        );
    }
    // PostgREST's password, by the very script docker/ uses.
    let password = (
        "../initdb/95_authenticator_password.sh".to_string(),
        "95_authenticator_password.sh".to_string(),
    );
    assert!(
        init_mounts(&coordinator).contains(&password),
        "{password:?}"
    );
    assert!(runs_before("30_cron.sql", &password.1));
}

#[test]
fn every_citus_node_gets_the_context_key_from_the_environment() {
    let compose = read(CITUS_COMPOSE);
    for (node, role) in [
        ("coordinator", "coordinator"),
        ("worker1", "worker"),
        ("worker2", "worker"),
    ] {
        let s = service(&compose, node);
        for line in [
            "context: ../..",
            "dockerfile: docker/citus/Dockerfile",
            "POSTGRES_DB: pg_tenancy",
            "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?",
            "PGPASSWORD: ${POSTGRES_PASSWORD}",
            "TENANCY_CONTEXT_KEY: ${TENANCY_CONTEXT_KEY:?",
            &format!("CITUS_NODE: {role}"),
        ] {
            assert!(s.contains(line), "{node} lacks {line}");
        }
        let mounts = init_mounts(&s);
        for script in ["000_context_key.sh", "000_pg_hba.sh"] {
            assert!(
                mounts.contains(&(format!("./initdb/{script}"), script.to_string())),
                "{node} does not run docker/citus/initdb/{script}"
            );
        }
    }
    let key = read("docker/citus/initdb/000_context_key.sh");
    assert!(
        key.contains("tenancy.context_key = ") && key.contains(">>\"$PGDATA/postgresql.conf\""),
        "the key goes into postgresql.conf"
    );
    assert!(
        compose
            .lines()
            .map(str::trim)
            .all(|l| l.starts_with('#') || !l.contains("tenancy.context_key")),
        "the key must not be on a command line"
    );
    for node in ["coordinator", "worker1", "worker2"] {
        assert!(
            !service(&compose, node).contains("command:"),
            "{node}: the image's own command, no settings on it"
        );
    }
    assert!(runs_before("000_context_key.sh", "17_distribute.sql"));
}

#[test]
fn every_file_the_citus_compose_mounts_exists() {
    let compose = read(CITUS_COMPOSE);
    for line in compose.lines().map(str::trim) {
        let Some((host, _)) = line
            .strip_prefix("- ")
            .and_then(|spec| spec.split_once(':'))
        else {
            continue;
        };
        if host.starts_with('.') {
            assert!(
                citus_mounted(host).is_file(),
                "{CITUS_COMPOSE} mounts {host}, which does not exist"
            );
        }
    }
}

#[test]
fn the_citus_image_takes_the_same_server_settings_and_artifact() {
    let dockerfile = read("docker/citus/Dockerfile");
    let from = dockerfile
        .lines()
        .find(|l| l.starts_with("FROM "))
        .expect("a FROM line");
    assert!(
        from.starts_with("FROM citusdata/citus:13.2.") && from.ends_with("-pg15"),
        "{from}: the Citus 13.2 image for PostgreSQL 15"
    );
    assert!(
        dockerfile.contains("postgresql-15-cron"),
        "the Citus image has no pg_cron"
    );
    assert_eq!(
        artifact_install(&dockerfile),
        artifact_install(&read("docker/Dockerfile")),
        "the artifact is installed as in docker/Dockerfile"
    );
    // sql/postgresql.conf, then sql/citus/postgresql.conf: later settings win.
    let copied_to = |src: &str| {
        dockerfile
            .lines()
            .find_map(|l| l.strip_prefix(&format!("COPY {src} ")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("the image does not take {src}"))
    };
    let append = dockerfile
        .lines()
        .find(|l| l.contains(">> /usr/share/postgresql/postgresql.conf.sample"))
        .expect("the settings are appended to the sample postgresql.conf");
    match (
        append.find(copied_to("sql/postgresql.conf")),
        append.find(copied_to("sql/citus/postgresql.conf")),
    ) {
        (Some(base), Some(citus)) if base < citus => {}
        _ => panic!("{append}: sql/postgresql.conf, then sql/citus/postgresql.conf"),
    }
    // The native Citus stack (scripts/lib.sh, start_citus) takes the same file.
    assert!(read("scripts/lib.sh").contains("\"$ROOT/sql/citus/postgresql.conf\""));
}

#[test]
fn postgrest_on_citus_runs_the_same_configuration() {
    // db-max-rows too: on Citus 13.2 a read over distributed tables without
    // a LIMIT comes back as records without column names ({"f1": ...});
    // with it PostgREST puts a LIMIT on every read, as in scripts/test_citus.
    assert_postgrest_as_in_the_tests(CITUS_COMPOSE, &["PGRST_DB_MAX_ROWS"]);
    let api = service(&read(CITUS_COMPOSE), "api");
    assert!(api.contains("PGRST_DB_MAX_ROWS: "), "{api}");
    assert!(read("scripts/test_citus").contains("PGRST_DB_MAX_ROWS"));
    assert!(
        api.contains("@coordinator:5432/pg_tenancy")
            && api.contains("      coordinator:\n        condition: service_healthy"),
        "PostgREST connects to the coordinator once it is set up"
    );
}
