//! The schema over releases: which kind each migration is (expand: the
//! previous release keeps serving beside it; contract: every replica must
//! run this release first), the database's record of which release migrated
//! it and the oldest release that may still write to it, and the copy of a
//! SQLite file taken before it is migrated.

use std::path::{Path, PathBuf};

use sqlx::migrate::Migrator;

/// Which engine a database URL names (`Engine::of`, in `db`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Whether the release before a migration may keep serving beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// New tables, new nullable columns, new rows of kinds every release
    /// reads: the previous release keeps serving during a rolling update.
    Expand,
    /// Needs every replica on its release first (stop the old ones): the
    /// oldest release that may write becomes the one that shipped it.
    Contract,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Expand => "expand",
            Kind::Contract => "contract",
        }
    }

    /// What it means for the replicas, in words.
    pub fn meaning(self) -> &'static str {
        match self {
            Kind::Expand => "the previous release keeps serving beside it",
            Kind::Contract => "stop every replica of an older release first",
        }
    }
}

/// Every migration's kind, per engine, with why when it is a contract. A
/// migration missing here fails `every_migration_says_its_kind`.
const KINDS: &[(Engine, i64, Kind, &str)] = &[
    (Engine::Sqlite, 1, Kind::Expand, ""),
    (Engine::Sqlite, 2, Kind::Expand, ""),
    (Engine::Sqlite, 3, Kind::Expand, ""),
    (Engine::Sqlite, 4, Kind::Expand, ""),
    (Engine::Sqlite, 5, Kind::Expand, ""),
    (Engine::Sqlite, 6, Kind::Expand, ""),
    (
        Engine::Sqlite,
        7,
        Kind::Contract,
        "a release before holds ignores them",
    ),
    (
        Engine::Sqlite,
        8,
        Kind::Contract,
        "a release before signed form tokens refuses this one's forms",
    ),
    (
        Engine::Sqlite,
        9,
        Kind::Contract,
        "a release before the allowlist cannot read its requests",
    ),
    (Engine::Sqlite, 10, Kind::Expand, ""),
    (Engine::Sqlite, 11, Kind::Expand, ""),
    (Engine::Sqlite, 12, Kind::Expand, ""),
    (Engine::Sqlite, 13, Kind::Expand, ""),
    (Engine::Sqlite, 14, Kind::Expand, ""),
    (Engine::Postgres, 1, Kind::Expand, ""),
    (Engine::Postgres, 2, Kind::Expand, ""),
    (Engine::Postgres, 3, Kind::Expand, ""),
    (Engine::Postgres, 4, Kind::Expand, ""),
    (
        Engine::Postgres,
        5,
        Kind::Contract,
        "a release before holds ignores them",
    ),
    (
        Engine::Postgres,
        6,
        Kind::Contract,
        "a release before signed form tokens refuses this one's forms",
    ),
    (
        Engine::Postgres,
        7,
        Kind::Contract,
        "a release before the allowlist cannot read its requests",
    ),
    (Engine::Postgres, 8, Kind::Expand, ""),
    (Engine::Postgres, 9, Kind::Expand, ""),
    (Engine::Postgres, 10, Kind::Expand, ""),
    (Engine::Postgres, 11, Kind::Expand, ""),
    (Engine::Postgres, 12, Kind::Expand, ""),
];

/// The release that first shipped each contract step: once it is applied,
/// no release older than that may write. A new contract step is added here
/// with the release it ships in.
const CONTRACT_SINCE: &[(Engine, i64, &str)] = &[
    (Engine::Sqlite, 7, "0.1.0"),
    (Engine::Sqlite, 8, "0.1.0"),
    (Engine::Sqlite, 9, "0.1.0"),
    (Engine::Postgres, 5, "0.1.0"),
    (Engine::Postgres, 6, "0.1.0"),
    (Engine::Postgres, 7, "0.1.0"),
];

/// The embedded migrations of `engine`.
pub fn migrator(engine: Engine) -> Migrator {
    let mut m = match engine {
        Engine::Sqlite => sqlx::migrate!("src/migrations/sqlite"),
        Engine::Postgres => sqlx::migrate!("src/migrations/postgres"),
    };
    // A newer release's migrations are judged by the record below, not by
    // sqlx: an expand step of release N+1 leaves N serving.
    m.set_ignore_missing(true);
    m
}

/// One migration this keydesk knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub version: i64,
    pub description: String,
    pub kind: Kind,
    /// Why it is a contract ("" for an expand step).
    pub why: &'static str,
    /// The release that shipped a contract step ("" when not recorded:
    /// then the release applying it counts).
    pub since: &'static str,
}

impl Step {
    /// `0011 release and held leavers: expand (the previous release keeps serving beside it)`.
    pub fn line(&self) -> String {
        let why = if self.why.is_empty() {
            String::new()
        } else {
            format!(": {}", self.why)
        };
        let why = if self.since.is_empty() {
            why
        } else {
            format!("{why}; since {}", self.since)
        };
        format!(
            "{:04} {}: {} ({}{why})",
            self.version,
            self.description,
            self.kind.as_str(),
            self.kind.meaning()
        )
    }
}

/// Every embedded migration of `engine`, in order, with its kind. One
/// missing from `KINDS` counts as a contract (the careful reading).
pub fn steps(engine: Engine) -> Vec<Step> {
    migrator(engine)
        .iter()
        .map(|m| {
            let (kind, why) = KINDS
                .iter()
                .find(|(e, v, _, _)| *e == engine && *v == m.version)
                .map(|(_, _, k, w)| (*k, *w))
                .unwrap_or((Kind::Contract, "its kind is not recorded"));
            let since = CONTRACT_SINCE
                .iter()
                .find(|(e, v, _)| *e == engine && *v == m.version)
                .map(|(_, _, r)| *r)
                .unwrap_or("");
            Step {
                version: m.version,
                description: m.description.to_string(),
                kind,
                why,
                since,
            }
        })
        .collect()
}

/// The database's record of releases (table `keydesk_release`).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Record {
    /// The newest release that migrated it.
    pub migrated_by: String,
    /// The oldest release that may still write to it.
    pub oldest_writer: String,
}

/// Parses a recorded version; an unreadable one counts as newer than any.
fn parse(v: &str) -> semver::Version {
    semver::Version::parse(v.trim()).unwrap_or_else(|_| semver::Version::new(u64::MAX, 0, 0))
}

impl Record {
    /// Whether `me` may serve (and write to) this database: the refusal in
    /// words when not.
    pub fn admits(&self, me: &str) -> Result<(), String> {
        let (oldest, mine) = (parse(&self.oldest_writer), parse(me));
        if mine >= oldest {
            return Ok(());
        }
        let (m, o) = (&self.migrated_by, &self.oldest_writer);
        Err(if m == o {
            format!(
                "this database was migrated by keydesk {m}; this is {me}; restore the backup taken before the upgrade, or run {o} or later"
            )
        } else {
            format!(
                "this database was migrated by keydesk {m} (it needs keydesk {o} or later); this is {me}; restore the backup taken before the upgrade, or run {o} or later"
            )
        })
    }

    /// The record once `me` has migrated, `applied` being every step now
    /// applied that `me` knows: migrated by the newest of the two; the
    /// oldest writer raised to the newest release that shipped an applied
    /// contract step. A function of what is applied, so a run that stopped
    /// before writing it is corrected by the next.
    pub fn after(&self, me: &str, applied: &[Step]) -> Record {
        let newest = |a: &str, b: &str| {
            if parse(a) > parse(b) {
                a.to_string()
            } else {
                b.to_string()
            }
        };
        let oldest_writer = applied
            .iter()
            .filter(|s| s.kind == Kind::Contract)
            .map(|s| if s.since.is_empty() { me } else { s.since })
            .fold(self.oldest_writer.clone(), |acc, v| newest(v, &acc));
        Record {
            migrated_by: newest(me, &self.migrated_by),
            oldest_writer,
        }
    }
}

/// What `keydesk migrate --dry-run` says: the steps `me` would apply (of
/// `steps`, those not in `applied`), each with its kind, and the record it
/// would leave; refused in words when `record` does not admit `me`.
pub fn plan(
    me: &str,
    steps: &[Step],
    applied: &[i64],
    record: Option<&Record>,
) -> Result<String, String> {
    if let Some(r) = record {
        r.admits(me)?;
    }
    let pending: Vec<&Step> = steps
        .iter()
        .filter(|s| !applied.contains(&s.version))
        .collect();
    let at = applied.iter().max().copied().unwrap_or(0);
    let mut out = vec![format!(
        "keydesk {me}: schema at {at:04}; would apply {} migration(s){}",
        pending.len(),
        if pending.is_empty() { "" } else { ":" }
    )];
    out.extend(pending.iter().map(|s| format!("  {}", s.line())));
    // A database from before the record: what the migration creating it writes.
    let before = record.cloned().unwrap_or(Record {
        migrated_by: "0.1.0".into(),
        oldest_writer: "0.1.0".into(),
    });
    let next = before.after(me, steps);
    out.push(format!(
        "then: migrated by keydesk {}; the oldest release that may write to it: {}",
        next.migrated_by, next.oldest_writer
    ));
    if pending.iter().any(|s| s.kind == Kind::Contract) {
        out.push(
            "a contract step: stop every replica older than this release before you apply it"
                .into(),
        );
    } else if !pending.is_empty() {
        out.push(
            "expand only: replicas of the previous release keep serving during the rollout".into(),
        );
    }
    Ok(out.join("\n"))
}

/// What keydesk does with each table, as deploy/postgres-grants.sql grants it.
const NEEDED_GRANTS: &[(&str, &str)] = &[
    ("audit", "SELECT, INSERT"),
    ("form_tokens", "SELECT, INSERT, UPDATE, DELETE"),
    ("sessions", "SELECT, INSERT, UPDATE, DELETE"),
    ("jobs", "SELECT, UPDATE"),
    ("rate_budget", "SELECT, UPDATE"),
    ("grants", "SELECT, INSERT, UPDATE"),
    ("notice_runs", "SELECT, INSERT, UPDATE"),
    ("notices", "SELECT, INSERT, UPDATE"),
    ("approvals", "SELECT, INSERT, UPDATE"),
    ("holds", "SELECT, INSERT, UPDATE, DELETE"),
    ("lost_creates", "SELECT, INSERT, UPDATE"),
    ("offboardings", "SELECT, INSERT, UPDATE"),
    ("job_leases", "SELECT, INSERT, UPDATE"),
    ("cleanups", "SELECT, INSERT, UPDATE"),
    ("cleanup_keys", "SELECT, INSERT, UPDATE"),
    ("form_keys", "SELECT, INSERT, UPDATE, DELETE"),
    ("keydesk_release", "SELECT"),
    ("reviews", "SELECT, INSERT, UPDATE"),
    ("review_items", "SELECT, INSERT, UPDATE"),
    ("review_decisions", "SELECT, INSERT"),
    ("review_notices", "SELECT, INSERT, UPDATE"),
];

/// The first privilege this role lacks, in words ("INSERT on holds"): one
/// round trip at start, whatever the number of tables.
pub async fn missing_grant(p: &sqlx::PgPool) -> Result<Option<String>, sqlx::Error> {
    let (tables, privileges): (Vec<&str>, Vec<&str>) = NEEDED_GRANTS
        .iter()
        .flat_map(|(t, ps)| ps.split(", ").map(move |p| (*t, p)))
        .unzip();
    let missing: Option<(String, String)> = sqlx::query_as(
        "SELECT t, p FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(t, p, i)
         WHERE NOT has_table_privilege(current_user, t, p) ORDER BY i LIMIT 1",
    )
    .bind(&tables)
    .bind(&privileges)
    .fetch_optional(p)
    .await?;
    Ok(missing.map(|(table, privilege)| format!("{privilege} on {table}")))
}

/// How many copies taken before a migration are kept beside the file.
pub const BACKUPS_KEPT: usize = 3;

/// Copies the SQLite database to `<file>.before-<version>-<UTC time>.bak`
/// beside it (`VACUUM INTO`: consistent, compact), then keeps only the
/// newest `BACKUPS_KEPT` of them. Returns the copy's path. `version` is the
/// release about to migrate it.
pub async fn backup_sqlite(
    pool: &sqlx::SqlitePool,
    version: &str,
) -> Result<Option<PathBuf>, sqlx::Error> {
    let file = pool.connect_options().get_filename().to_path_buf();
    let in_memory = file.as_os_str().is_empty()
        || file.to_string_lossy().contains(":memory:")
        || !file.is_file();
    if in_memory {
        return Ok(None);
    }
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| "now".into());
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "keydesk.db".into());
    let mut copy = file.with_file_name(format!("{name}.before-{version}-{stamp}.bak"));
    let mut n = 1;
    while copy.exists() {
        n += 1;
        copy = file.with_file_name(format!("{name}.before-{version}-{stamp}-{n}.bak"));
    }
    // Only keydesk's user may read it, as the database (sessions, form keys):
    // VACUUM INTO writes into an empty file that already exists.
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&copy)
            .map_err(sqlx::Error::Io)?;
    }
    sqlx::query("VACUUM INTO $1")
        .bind(copy.to_string_lossy().into_owned())
        .execute(pool)
        .await?;
    prune_backups(&file, BACKUPS_KEPT);
    Ok(Some(copy))
}

/// The copies of `file` taken before migrations, oldest first.
pub fn backups_of(file: &Path) -> Vec<PathBuf> {
    let Some(dir) = file.parent().map(|d| {
        if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        }
    }) else {
        return Vec::new();
    };
    let prefix = match file.file_name() {
        Some(n) => format!("{}.before-", n.to_string_lossy()),
        None => return Vec::new(),
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&prefix) && n.ends_with(".bak")
        })
        .map(|e| {
            let at = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (at, e.path())
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

fn prune_backups(file: &Path, keep: usize) {
    let all = backups_of(file);
    let extra = all.len().saturating_sub(keep);
    for old in &all[..extra] {
        match std::fs::remove_file(old) {
            Ok(()) => {
                tracing::info!(backup = %old.display(), "removed an older pre-migration copy")
            }
            Err(e) => {
                tracing::warn!(backup = %old.display(), error = %e, "could not remove an older pre-migration copy")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(m: &str, o: &str) -> Record {
        Record {
            migrated_by: m.into(),
            oldest_writer: o.into(),
        }
    }

    #[test]
    fn every_migration_says_its_kind() {
        for engine in [Engine::Sqlite, Engine::Postgres] {
            for m in migrator(engine).iter() {
                assert!(
                    KINDS
                        .iter()
                        .any(|(e, v, _, _)| *e == engine && *v == m.version),
                    "{engine:?} migration {:04} has no kind in schema::KINDS",
                    m.version
                );
            }
            for s in steps(engine) {
                assert_eq!(s.kind == Kind::Contract, !s.why.is_empty(), "{s:?}");
            }
        }
    }

    #[test]
    fn an_older_release_is_refused_in_words() {
        let r = record("0.3.0", "0.3.0");
        assert_eq!(
            r.admits("0.2.0").unwrap_err(),
            "this database was migrated by keydesk 0.3.0; this is 0.2.0; restore the backup taken before the upgrade, or run 0.3.0 or later"
        );
        assert!(r.admits("0.3.0").is_ok());
        assert!(r.admits("0.3.1").is_ok());
        assert!(r.admits("1.0.0").is_ok());
        // Expand steps of a newer release leave the older one serving.
        assert!(record("0.4.0", "0.3.0").admits("0.3.0").is_ok());
        let words = record("0.4.0", "0.3.0").admits("0.2.9").unwrap_err();
        assert!(words.contains("needs keydesk 0.3.0 or later"), "{words}");
        // A version this keydesk cannot read is newer than it.
        assert!(record("garbage", "garbage").admits("9.9.9").is_err());
        // Pre-releases sort before their release.
        assert!(record("1.0.0", "1.0.0").admits("1.0.0-rc.1").is_err());
    }

    #[test]
    fn a_contract_step_raises_the_oldest_writer_and_nothing_lowers_it() {
        let expand = Step {
            version: 13,
            description: "x".into(),
            kind: Kind::Expand,
            why: "",
            since: "",
        };
        let contract = Step {
            kind: Kind::Contract,
            why: "y",
            since: "0.1.5",
            ..expand.clone()
        };
        let r = record("0.1.0", "0.1.0");
        assert_eq!(
            r.after("0.2.0", std::slice::from_ref(&expand)),
            record("0.2.0", "0.1.0")
        );
        assert_eq!(
            r.after("0.2.0", &[expand.clone(), contract.clone()]),
            record("0.2.0", "0.1.5")
        );
        // A contract step of unrecorded release counts as the one applying it.
        let unrecorded = Step {
            since: "",
            ..contract
        };
        assert_eq!(r.after("0.2.0", &[unrecorded]), record("0.2.0", "0.2.0"));
        // An older binary lowers nothing.
        assert_eq!(
            record("0.3.0", "0.2.0").after("0.2.0", &[expand]),
            record("0.3.0", "0.2.0")
        );
        // This tree's contract steps all shipped in 0.1.0.
        for engine in [Engine::Sqlite, Engine::Postgres] {
            let all = steps(engine);
            assert_eq!(r.after("0.2.0", &all), record("0.2.0", "0.1.0"));
        }
    }

    #[test]
    fn the_dry_run_lists_what_it_would_apply_with_its_kind() {
        let all = steps(Engine::Sqlite);
        // As 0.1.0 left a database: 0001-0009.
        let applied: Vec<i64> = (1..=9).collect();
        let r = record("0.1.0", "0.1.0");
        let text = plan("0.2.0", &all, &applied, Some(&r)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "keydesk 0.2.0: schema at 0009; would apply 5 migration(s):"
        );
        assert!(
            lines[1].starts_with("  0010 decided facts: expand"),
            "{text}"
        );
        assert!(
            lines[4].starts_with("  0013 release and held leavers: expand"),
            "{text}"
        );
        assert!(
            lines[5].starts_with("  0014 access reviews: expand"),
            "{text}"
        );
        assert!(
            text.contains("oldest release that may write to it: 0.1.0"),
            "{text}"
        );
        assert!(text.ends_with(
            "expand only: replicas of the previous release keep serving during the rollout"
        ));
        // From a build before holds: contract steps, said.
        let text = plan("0.2.0", &all, &[1, 2, 3, 4, 5, 6], None).unwrap();
        assert!(text.contains("0007 holds: contract"), "{text}");
        assert!(text.ends_with("stop every replica older than this release before you apply it"));
        // Refused, in the same words as at start.
        let e = plan("0.2.0", &all, &applied, Some(&record("9.0.0", "9.0.0"))).unwrap_err();
        assert!(
            e.starts_with("this database was migrated by keydesk 9.0.0"),
            "{e}"
        );
    }

    #[test]
    fn a_step_line_names_its_kind() {
        let s = &steps(Engine::Sqlite)[12];
        assert_eq!(s.version, 13);
        assert!(s.line().contains("expand"), "{}", s.line());
        let c = &steps(Engine::Postgres)[4];
        assert!(c.line().contains("contract"), "{}", c.line());
    }
}
