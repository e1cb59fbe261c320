//! A real PostgreSQL server for the tests: `KEYDESK_TEST_DATABASE_URL` when
//! set, else a throwaway cluster (initdb into a temp dir, as the `postgres`
//! user when running as root, unix socket only: no port to collide on).
//! Every test gets a fresh database of its own. With `CI=true`, no server is
//! a failure, never a skip. `.ci/run` stops the cluster at the end.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Where the throwaway cluster lives; its socket is in the same directory.
pub fn cluster_dir() -> PathBuf {
    std::env::temp_dir().join("keydesk-test-pg")
}

/// Whether a missing PostgreSQL, chromium or browser driver must fail the
/// run rather than skip: under CI whatever value `CI` holds (`true`, `1`,
/// `yes`…; only empty, `0` or `false` mean not), or with
/// `KEYDESK_TEST_REQUIRE_ALL=1` locally.
pub fn require_all() -> bool {
    let set = |v: &str| std::env::var(v).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"));
    set("CI") || set("KEYDESK_TEST_REQUIRE_ALL")
}

/// Says, on the terminal and not in libtest's captured output, that a
/// test skips `what` and why; once per reason and test binary.
pub fn skip_line(what: &str) {
    use std::io::Write;
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !said.iter().any(|s| s == what) {
        said.push(what.to_string());
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {what} (set KEYDESK_TEST_REQUIRE_ALL=1 to fail instead)"
        );
    }
}

fn in_ci() -> bool {
    require_all()
}

/// The directory holding initdb and pg_ctl, if PostgreSQL is installed.
fn bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a server binary, as `postgres` when we are root (initdb refuses root).
fn run_as_server_user(bin: &PathBuf, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args).output().expect("PostgreSQL binary runs")
}

/// Starts (or finds running) the throwaway cluster; its base URL.
fn start_cluster() -> Option<String> {
    let Some(bin) = bindir() else {
        assert!(
            !in_ci(),
            "CI (or KEYDESK_TEST_REQUIRE_ALL) is set but PostgreSQL (initdb) is not installed"
        );
        skip_line(
            "PostgreSQL not installed (apt-get install postgresql): the PostgreSQL half of the both-engines tests",
        );
        return None;
    };
    let dir = cluster_dir();
    let data = dir.join("data");
    let socket = dir.to_string_lossy().into_owned();
    let url = format!("postgres://postgres@localhost/postgres?host={socket}");
    let pg_ctl = bin.join("pg_ctl");
    let data_s = data.to_string_lossy().into_owned();
    if run_as_server_user(&pg_ctl, &["-D", &data_s, "status"])
        .status
        .success()
    {
        return Some(url);
    }
    if !data.join("PG_VERSION").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres", &socket])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown of {socket} to postgres");
        }
        let init = run_as_server_user(
            &bin.join("initdb"),
            &["-D", &data_s, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }
    let opts = format!(
        "-c listen_addresses='' -c unix_socket_directories='{socket}' -c fsync=off -c max_connections=300"
    );
    let log = dir.join("server.log").to_string_lossy().into_owned();
    let start = run_as_server_user(
        &pg_ctl,
        &["-D", &data_s, "-o", &opts, "-l", &log, "-w", "start"],
    );
    // Another test binary may have started it meanwhile: status decides.
    let running = run_as_server_user(&pg_ctl, &["-D", &data_s, "status"])
        .status
        .success();
    assert!(
        running,
        "pg_ctl start: {} {}",
        String::from_utf8_lossy(&start.stdout),
        String::from_utf8_lossy(&start.stderr)
    );
    Some(url)
}

/// The server's admin URL, once per test binary.
fn server() -> Option<&'static str> {
    static SERVER: OnceLock<Option<String>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            std::env::var("KEYDESK_TEST_DATABASE_URL")
                .ok()
                .or_else(start_cluster)
        })
        .as_deref()
}

/// The test server's superuser URL (unix socket), or None (skip) outside CI
/// when PostgreSQL is missing.
pub fn admin_url() -> Option<&'static str> {
    server()
}

/// A fresh, empty database on the test server, or None (skip) outside CI
/// when PostgreSQL is missing.
pub async fn fresh_database() -> Option<String> {
    let admin = server()?;
    let name = format!("kd_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
        .await
        .expect("connect to the test PostgreSQL");
    // The name is ours: kd_ and 32 hex digits.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, query) = admin.split_once('?').unwrap_or((admin, ""));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    Some(if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    })
}

/// A fresh database of each engine: a SQLite file, and PostgreSQL when a
/// server is available (always in CI).
#[allow(dead_code)]
pub async fn databases() -> Vec<(&'static str, String)> {
    let dir = std::env::temp_dir().join(format!("keydesk-store-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut out = vec![("sqlite", format!("sqlite://{}", dir.join("k.db").display()))];
    if let Some(url) = fresh_database().await {
        out.push(("postgres", url));
    }
    out
}

/// Creates the application role (once per server) and applies
/// deploy/postgres-grants.sql as the owner.
#[allow(dead_code)]
pub async fn grant_to_app(owner: &keydesk::db::Db) {
    let grants = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/postgres-grants.sql"
    ))
    .unwrap();
    keydesk::on_pool!(write, owner, |p| {
        sqlx::query(
            "DO $$ BEGIN CREATE ROLE keydesk_app LOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
        )
        .execute(p)
        .await
        .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(grants))
            .execute(p)
            .await
            .unwrap();
    });
}

/// The application role's URL on the database `owner_url` names.
#[allow(dead_code)]
pub fn app_url(owner_url: &str) -> String {
    owner_url.replacen("postgres://postgres@", "postgres://keydesk_app@", 1)
}
