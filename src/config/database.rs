//! Where keydesk keeps its state: the database URL from its variable, its
//! file, or the old name.

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

    /// Old name of KEYDESK_DATABASE_URL, still accepted: the SQLite database of the audit trail.
    #[arg(
        long,
        env = "KEYDESK_AUDIT_DB",
        default_value = "sqlite://keydesk-audit.db"
    )]
    pub audit_db: String,
}

impl DatabaseArgs {
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
            (None, None) => self.audit_db.trim().to_string(),
        };
        crate::db::Engine::of(&url)
            .map_err(|e| format!("KEYDESK_DATABASE_URL {}: {e}", crate::db::redacted(&url)))?;
        Ok(url)
    }
}
