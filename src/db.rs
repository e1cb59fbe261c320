//! The database: SQLite embedded (the default) or PostgreSQL (shared by
//! several replicas). One `Db` value, one SQL text per query: every query is
//! written once with `$1`-style parameters, which both engines accept, and
//! `on_pool!` runs it on whichever pool is open. Migrations are embedded per
//! engine and applied at start (on PostgreSQL under sqlx's advisory lock, so
//! replicas starting together do not race).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

use crate::schema;

/// An open database of either engine. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the open pool, whichever engine it is.
/// The body is written once and type-checked for both. Every use says whether
/// it reads or writes, and is counted as one query of that kind in
/// `keydesk_db_queries_total` (a body that runs a transaction counts once).
#[macro_export]
macro_rules! on_pool {
    (read, $db:expr, |$pool:ident| $body:expr) => {{
        $crate::db::count_query("read");
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    }};
    (write, $db:expr, |$pool:ident| $body:expr) => {{
        $crate::db::count_query("write");
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    }};
    // The job loop's periodic look for stalled jobs (a read), counted apart:
    // it runs on every replica whatever the traffic.
    (look, $db:expr, |$pool:ident| $body:expr) => {{
        $crate::db::count_query("look");
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    }};
}

/// Counts one query of `kind` ("read", "write" or "look") in `keydesk_db_queries_total`.
pub fn count_query(kind: &'static str) {
    metrics::counter!("keydesk_db_queries_total", "kind" => kind).increment(1);
}

pub use crate::schema::Engine;

impl Engine {
    pub fn of(url: &str) -> Result<Self, String> {
        if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // sqlx knows no `sslpassword` and would log the unknown
            // parameter with its value: refused before it reaches sqlx.
            if query_keys(url).any(|k| k.eq_ignore_ascii_case("sslpassword")) {
                return Err("sslpassword= is not supported (the PostgreSQL driver cannot decrypt a client key): use an unencrypted sslkey, or a password".into());
            }
            Ok(Engine::Postgres)
        } else {
            Err("expected sqlite://PATH or postgres://… ".into())
        }
    }
}

/// Query parameters of a PostgreSQL URL that hold a secret (libpq's
/// `password`, and `sslpassword` for an encrypted client key).
const SECRET_PARAMS: [&str; 2] = ["password", "sslpassword"];

/// A database URL with any password hidden, for logs and errors: the one in
/// `user:pass@` and those given as `?password=` or `&sslpassword=`.
pub fn redacted(url: &str) -> String {
    let url = masked_query(url);
    // The last `@`: a password may hold one unencoded, and a masked query
    // holds none of the secret's.
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url,
            }
        }
        _ => url,
    }
}

/// The keys of `url`'s query parameters.
/// Percent-decoded, as the driver reads them (`pass%77ord` is `password`).
fn query_keys(url: &str) -> impl Iterator<Item = String> + '_ {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let query = query.split('#').next().unwrap_or("");
    query
        .split('&')
        .map(|pair| decoded_key(pair.split_once('=').map(|(k, _)| k).unwrap_or(pair)))
}

fn decoded_key(key: &str) -> String {
    percent_encoding::percent_decode_str(key)
        .decode_utf8_lossy()
        .into_owned()
}

/// `url` with the value of every secret query parameter replaced by `***`.
fn masked_query(url: &str) -> String {
    let Some(q) = url.find('?') else {
        return url.to_string();
    };
    let (base, query) = url.split_at(q + 1);
    let (query, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _))
                if SECRET_PARAMS
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(&decoded_key(key))) =>
            {
                format!("{key}=***")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}{}{fragment}", pairs.join("&"))
}

impl Db {
    /// Opens (creating a SQLite file if needed) and migrates the database.
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let db = Self::open_unmigrated(url).await?;
        db.migrate(false).await?;
        Ok(db)
    }

    /// Opens the database without touching its schema.
    pub async fn open_unmigrated(url: &str) -> Result<Self, sqlx::Error> {
        let engine = Engine::of(url).map_err(|e| sqlx::Error::Configuration(e.into()))?;
        let db = match engine {
            Engine::Sqlite => Db::Sqlite(open_sqlite(url).await?),
            Engine::Postgres => {
                let opts = PgConnectOptions::from_str(url)?;
                // One direct connection first: a refused port or a bad
                // password is said at once, not as "pool timed out" later.
                {
                    use sqlx::{ConnectOptions, Connection};
                    opts.connect().await?.close().await?;
                }
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(opts)
                    .await?;
                Db::Postgres(pool)
            }
        };
        Ok(db)
    }

    /// Applies the embedded migrations; returns the versions it applied.
    /// A database whose record names an oldest writer newer than this
    /// keydesk is refused first, in words (`schema::Record::admits`).
    /// A SQLite file is copied beside itself before anything is applied
    /// (`schema::backup_sqlite`). On PostgreSQL a role that may not create
    /// in the schema (the restricted application role) never tries: a
    /// schema that is behind, or a table it may not use, stops it with what
    /// to do. `force` (`keydesk migrate`, as the owner) runs the migrator
    /// regardless. After applying, the release record says who migrated.
    pub async fn migrate(&self, force: bool) -> Result<Vec<i64>, sqlx::Error> {
        let before = self.applied_versions().await;
        self.admits_me()
            .await
            .map_err(|words| sqlx::Error::Configuration(words.into()))?;
        let steps = schema::steps(self.engine());
        let pending: Vec<&schema::Step> = steps
            .iter()
            .filter(|s| !before.contains(&s.version))
            .collect();
        let ran = match self {
            Db::Sqlite(p) => {
                if !pending.is_empty()
                    && !before.is_empty()
                    && let Some(copy) = schema::backup_sqlite(p, crate::release::VERSION).await?
                {
                    tracing::info!(
                        backup = %copy.display(),
                        pending = pending.len(),
                        "copied the database before migrating (VACUUM INTO); the last {} copies are kept",
                        schema::BACKUPS_KEPT
                    );
                }
                schema::migrator(Engine::Sqlite).run(p).await?;
                true
            }
            Db::Postgres(p) => {
                let needed = steps.iter().map(|s| s.version).max().unwrap_or(0);
                let current = pending.is_empty();
                let may_create: bool = sqlx::query_scalar(
                    "SELECT has_schema_privilege(current_user, current_schema(), 'CREATE')",
                )
                .fetch_one(p)
                .await?;
                if force || (!current && may_create) {
                    schema::migrator(Engine::Postgres).run(p).await?;
                    true
                } else if !current {
                    let at = before.iter().max().copied().unwrap_or(0);
                    return Err(sqlx::Error::Configuration(
                        format!(
                            "schema at {at}, this keydesk needs {needed}: run `keydesk migrate` as the schema owner, then apply deploy/postgres-grants.sql"
                        )
                        .into(),
                    ));
                } else if let Some(missing) = schema::missing_grant(p).await? {
                    return Err(sqlx::Error::Configuration(
                        format!(
                            "this role may not {missing}: apply deploy/postgres-grants.sql as the schema owner"
                        )
                        .into(),
                    ));
                } else {
                    false
                }
            }
        };
        let after = self.applied_versions().await;
        if ran && let Some(record) = self.release_record().await? {
            let done: Vec<schema::Step> = steps
                .iter()
                .filter(|s| after.contains(&s.version))
                .cloned()
                .collect();
            let next = record.after(crate::release::VERSION, &done);
            if next != record {
                self.write_release_record(&next).await?;
                tracing::info!(
                    migrated_by = %next.migrated_by,
                    oldest_writer = %next.oldest_writer,
                    "release recorded in the database"
                );
            }
        }
        Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
    }

    /// Whether the database answers, its schema is the one this keydesk
    /// needs, and its oldest writer is not newer than this keydesk: the
    /// reason when not (for `/readyz`).
    pub async fn serving_check(&self) -> Result<(), String> {
        self.now_ms()
            .await
            .map_err(|e| format!("database unreachable: {e}"))?;
        let applied = self.applied_versions().await;
        if let Some(s) = schema::steps(self.engine())
            .iter()
            .find(|s| !applied.contains(&s.version))
        {
            return Err(format!(
                "schema not current: migration {:04} is not applied (run keydesk migrate as the schema owner)",
                s.version
            ));
        }
        self.admits_me().await
    }

    /// The record of releases (`keydesk_release`), or None before the
    /// migration that makes it.
    pub async fn release_record(&self) -> Result<Option<schema::Record>, sqlx::Error> {
        let sql = "SELECT migrated_by, oldest_writer FROM keydesk_release WHERE id = 1";
        let got = on_pool!(read, self, |p| sqlx::query_as::<_, schema::Record>(sql)
            .fetch_optional(p)
            .await);
        match got {
            Ok(r) => Ok(r),
            // No such table yet: a database from before releases were recorded.
            Err(sqlx::Error::Database(e))
                if e.message().contains("no such table")
                    || e.code().as_deref() == Some("42P01") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the record of releases (as the role that migrated).
    async fn write_release_record(&self, record: &schema::Record) -> Result<(), sqlx::Error> {
        let now = self.now_ms().await?;
        on_pool!(write, self, |p| {
            sqlx::query(
                "UPDATE keydesk_release SET migrated_by = $1, oldest_writer = $2, migrated_ms = $3 WHERE id = 1",
            )
            .bind(&record.migrated_by)
            .bind(&record.oldest_writer)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Whether this keydesk may serve this database: its refusal in words
    /// when the oldest release that may write to it is newer than this one.
    pub async fn admits_me(&self) -> Result<(), String> {
        match self.release_record().await {
            Ok(Some(r)) => r.admits(crate::release::VERSION),
            Ok(None) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => Err(
                "this role may not SELECT on keydesk_release: apply deploy/postgres-grants.sql as the schema owner".into(),
            ),
            Err(e) => Err(format!("cannot read keydesk_release: {e}")),
        }
    }

    /// The migrations recorded as applied (none on a fresh database).
    pub async fn applied_versions(&self) -> Vec<i64> {
        let sql = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
        on_pool!(read, self, |p| sqlx::query_scalar(sql)
            .fetch_all(p)
            .await
            .unwrap_or_default())
    }

    pub fn engine(&self) -> Engine {
        match self {
            Db::Sqlite(_) => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
        }
    }

    /// The database clock, in milliseconds since the epoch: one clock for
    /// every replica (rate budget, leases).
    pub async fn now_ms(&self) -> Result<i64, sqlx::Error> {
        self.clock_ms("read").await
    }

    /// `now_ms`, counted as a query of `kind` (the job loop's `look`).
    pub async fn clock_ms(&self, kind: &'static str) -> Result<i64, sqlx::Error> {
        count_query(kind);
        match self {
            Db::Sqlite(p) => {
                sqlx::query_scalar(
                    "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
                )
                .fetch_one(p)
                .await
            }
            Db::Postgres(p) => {
                sqlx::query_scalar("SELECT (extract(epoch from clock_timestamp()) * 1000)::BIGINT")
                    .fetch_one(p)
                    .await
            }
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// Connections that keep in-memory databases alive (see `open_sqlite`).
static MEMORY_KEEPERS: std::sync::Mutex<Vec<sqlx::SqliteConnection>> =
    std::sync::Mutex::new(Vec::new());

async fn open_sqlite(url: &str) -> Result<SqlitePool, sqlx::Error> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut opts = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(5));
    if !in_memory
        && let Some(dir) = opts.get_filename().parent()
        && !dir.as_os_str().is_empty()
        && !dir.is_dir()
    {
        return Err(sqlx::Error::Configuration(
            format!(
                "the directory {} does not exist: create it, or point the URL elsewhere",
                dir.display()
            )
            .into(),
        ));
    }
    if !in_memory {
        opts = opts.journal_mode(SqliteJournalMode::Wal);
    } else {
        // sqlx names each `:memory:` database and shares it between the
        // connections to that name; it lives while one of them is open. The
        // pool closes a connection whose query was dropped mid-flight (a
        // browser navigating away), and its replacement would open an empty
        // database. One connection held outside the pool, for the life of
        // the process, keeps it.
        use sqlx::ConnectOptions;
        let keeper = opts.connect().await?;
        MEMORY_KEEPERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(keeper);
    }
    // Small: an in-memory database is the demo's or a test's.
    SqlitePoolOptions::new()
        .max_connections(if in_memory { 1 } else { 4 })
        .min_connections(if in_memory { 1 } else { 0 })
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(opts)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_engine_and_hide_passwords() {
        assert_eq!(Engine::of("sqlite://a.db"), Ok(Engine::Sqlite));
        assert_eq!(Engine::of("sqlite::memory:"), Ok(Engine::Sqlite));
        assert_eq!(Engine::of("postgres://u:p@h/db"), Ok(Engine::Postgres));
        assert!(Engine::of("mysql://x").is_err());
        let err = Engine::of("postgres://db/kd?sslkey=k.pem&sslpassword=s3cret").unwrap_err();
        assert!(
            err.contains("sslpassword") && !err.contains("s3cret"),
            "{err}"
        );
        assert_eq!(
            redacted("postgres://kd:s3cret@db:5432/kd"),
            "postgres://kd:***@db:5432/kd"
        );
        assert_eq!(redacted("sqlite://a.db"), "sqlite://a.db");
    }

    #[test]
    fn passwords_in_the_query_are_hidden_too() {
        for (url, shown) in [
            (
                "postgres://kd@db/kd?password=s3cret",
                "postgres://kd@db/kd?password=***",
            ),
            (
                "postgres://db/kd?sslmode=require&PASSWORD=s3cret&application_name=kd",
                "postgres://db/kd?sslmode=require&PASSWORD=***&application_name=kd",
            ),
            (
                "postgresql://kd:a@b@db/kd?sslpassword=s3cret#x",
                "postgresql://kd:***@db/kd?sslpassword=***#x",
            ),
            (
                "postgres://kd@db/kd?password=s3@cret&user=kd",
                "postgres://kd@db/kd?password=***&user=kd",
            ),
            // The driver decodes the key: so does the mask.
            (
                "postgres://kd@db/kd?pass%77ord=s3cret",
                "postgres://kd@db/kd?pass%77ord=***",
            ),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
        assert_eq!(redacted("sqlite://a.db?mode=rwc"), "sqlite://a.db?mode=rwc");
    }
}
