//! Where keydesk keeps its state: the database URL from its variable, its
//! file, or the old name; and how long a job's lease in it lasts.

use std::path::PathBuf;

use clap::Args;

/// Where keydesk keeps its state: `serve` and `migrate`.
#[derive(Args, Clone)]
pub struct DatabaseArgs {
    /// Database: sqlite://PATH (embedded, created on first start) or postgres://USER:PASS@HOST/DB (shared by several replicas). Overrides KEYDESK_AUDIT_DB.
    #[arg(long, env = "KEYDESK_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// File holding the database URL (it may contain a password); read once at start.
    #[arg(long, env = "KEYDESK_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// Old name of KEYDESK_DATABASE_URL, still accepted: the SQLite database of the audit trail. Without any of the three, sqlite://keydesk-audit.db in the working directory (with a warning).
    #[arg(long, env = "KEYDESK_AUDIT_DB", hide_env_values = true)]
    pub audit_db: Option<String>,

    /// How long a durable job (an offboarding, a clean-up, a notice pass) stays with its replica without a heartbeat, in seconds (the lease is kept in the database); another replica takes it over after that.
    #[arg(long, env = "KEYDESK_JOB_LEASE_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub job_lease_secs: u64,
}

/// `keydesk migrate`: the database, and whether only to say what it would do.
#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// List the migrations it would apply, each with its kind (expand: the previous release keeps serving beside it; contract: stop older replicas first), and the release record it would leave; apply nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where keydesk keeps its state when no variable says: the working directory.
const DEFAULT_DATABASE: &str = "sqlite://keydesk-audit.db";

impl DatabaseArgs {
    /// `KEYDESK_JOB_LEASE_SECS`.
    pub fn job_lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.job_lease_secs)
    }

    /// No variable names a database: the default file is used.
    pub fn is_default(&self) -> bool {
        self.database_url.is_none() && self.database_url_file.is_none() && self.audit_db.is_none()
    }

    /// The database URL: from its file, else KEYDESK_DATABASE_URL, else the
    /// old KEYDESK_AUDIT_DB (so an existing deployment keeps its data).
    pub fn url(&self) -> Result<String, String> {
        if self.database_url_file.is_some() && self.database_url.is_some() {
            return Err(
                "KEYDESK_DATABASE_URL and KEYDESK_DATABASE_URL_FILE are both set: keep one".into(),
            );
        }
        let url = match (&self.database_url_file, &self.database_url) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|e| format!("KEYDESK_DATABASE_URL_FILE {}: {e}", path.display()))?
                .trim()
                .to_string(),
            (None, Some(url)) => url.trim().to_string(),
            (None, None) => self
                .audit_db
                .as_deref()
                .unwrap_or(DEFAULT_DATABASE)
                .trim()
                .to_string(),
        };
        crate::db::Engine::of(&url)
            .map_err(|e| format!("KEYDESK_DATABASE_URL {}: {e}", crate::db::redacted(&url)))?;
        Ok(url)
    }
}
