//! The audit trail: who did what to which key, when, and how it ended.
//!
//! A mutating action writes an *intent* row (outcome `pending`) and commits it
//! before calling Vultr, then settles it to `ok`, `failed` or `unknown`. A
//! crash mid-call leaves `pending`, which the next start turns into `unknown`,
//! so nothing is lost silently. If the intent cannot be written, the action is
//! refused. Secrets are never passed to this module: no field can hold one.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod entry;

pub use entry::{AuditAction, CsvSafe, Entry, Filter, Intent, Outcome};

#[derive(Clone, Debug)]
pub struct AuditStore {
    pool: SqlitePool,
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl AuditStore {
    /// Opens (creating if needed) the database, applies migrations, and marks
    /// intents left open by a previous process as `unknown`.
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(5));
        if !in_memory {
            opts = opts.journal_mode(SqliteJournalMode::Wal);
        }
        // An in-memory database exists per connection: keep exactly one.
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 4 })
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("src/migrations").run(&pool).await?;
        let stale = sqlx::query(
            "UPDATE audit SET outcome = 'unknown', error = 'keydesk stopped before the outcome was known', finished_at = ?1 WHERE outcome = 'pending'",
        )
        .bind(now())
        .execute(&pool)
        .await;
        match stale {
            Ok(r) if r.rows_affected() > 0 => tracing::warn!(
                target: "audit",
                count = r.rows_affected(),
                "audit entries left open by a previous run marked unknown"
            ),
            Ok(_) => {}
            // A read-only store still serves the audit pages; every mutating
            // action will be refused when its intent cannot be written.
            Err(e) => {
                tracing::error!(target: "audit", error = %e, "audit store is not writable: keydesk will refuse every change")
            }
        }
        Ok(Self { pool })
    }

    /// Commits an intent; the action must not proceed if this fails.
    pub async fn intent(&self, i: &Intent) -> Result<i64, sqlx::Error> {
        let at = now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO audit (at, actor, role, action, target_user_id, target_user_email, key_id, key_name, requested_expiry, reason, related_key_id, outcome, request_id, api_enabled)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending', ?12, ?13) RETURNING id",
        )
        .bind(&at)
        .bind(&i.actor)
        .bind(&i.role)
        .bind(i.action.as_str())
        .bind(&i.target_user_id)
        .bind(&i.target_user_email)
        .bind(&i.key_id)
        .bind(&i.key_name)
        .bind(&i.requested_expiry)
        .bind(&i.reason)
        .bind(&i.related_key_id)
        .bind(&i.request_id)
        .bind(i.api_enabled)
        .fetch_one(&self.pool)
        .await?;
        tracing::info!(
            target: "audit",
            entry_id = id,
            actor = %i.actor,
            action = i.action.as_str(),
            target_user_id = i.target_user_id.as_deref().unwrap_or(""),
            key_id = i.key_id.as_deref().unwrap_or(""),
            key_name = i.key_name.as_deref().unwrap_or(""),
            request_id = i.request_id.as_deref().unwrap_or(""),
            outcome = "pending",
            "audit intent"
        );
        Ok(id)
    }

    /// Records an event that has no upstream call (a refusal). A failure to
    /// write is logged: the refusal itself has already happened.
    pub async fn record(&self, i: &Intent, outcome: Outcome) {
        match self.intent(i).await {
            Ok(id) => self.settle(id, outcome, None, None, None).await,
            Err(e) => {
                metrics::counter!("keydesk_audit_write_failures_total").increment(1);
                tracing::error!(
                target: "audit",
                actor = %i.actor,
                action = i.action.as_str(),
                error = %e,
                "audit entry could not be written"
                )
            }
        }
    }

    /// Settles an open intent; returns how many rows changed (1, or 0 when
    /// the entry was not open).
    pub async fn try_settle(
        &self,
        id: i64,
        outcome: Outcome,
        key_id: Option<&str>,
        upstream_status: Option<u16>,
        error: Option<&str>,
    ) -> Result<u64, sqlx::Error> {
        let r = sqlx::query(
            "UPDATE audit SET outcome = ?1, key_id = COALESCE(key_id, ?2), upstream_status = ?3, error = ?4, finished_at = ?5 WHERE id = ?6 AND outcome = 'pending'",
        )
        .bind(outcome.as_str())
        .bind(key_id)
        .bind(upstream_status.map(i64::from))
        .bind(error)
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Settles an intent. A failure here is logged loudly: the row stays
    /// `pending` and becomes `unknown` at the next start, never lost.
    pub async fn settle(
        &self,
        id: i64,
        outcome: Outcome,
        key_id: Option<&str>,
        upstream_status: Option<u16>,
        error: Option<&str>,
    ) {
        match self
            .try_settle(id, outcome, key_id, upstream_status, error)
            .await
        {
            // Exactly one open intent must have been settled; anything else
            // means the row was settled already or never existed.
            Ok(n) if n != 1 => {
                metrics::counter!("keydesk_audit_settle_mismatches_total").increment(1);
                tracing::error!(
                    target: "audit",
                    entry_id = id,
                    outcome = outcome.as_str(),
                    rows = n,
                    "audit settle changed no open entry"
                )
            }
            Ok(_) => tracing::info!(
                target: "audit",
                entry_id = id,
                outcome = outcome.as_str(),
                key_id = key_id.unwrap_or(""),
                upstream_status = upstream_status.unwrap_or(0),
                error = error.unwrap_or(""),
                "audit outcome"
            ),
            Err(e) => {
                metrics::counter!("keydesk_audit_write_failures_total").increment(1);
                tracing::error!(
                    target: "audit",
                    entry_id = id,
                    outcome = outcome.as_str(),
                    error = %e,
                    "audit outcome could not be written; the entry will read unknown"
                )
            }
        }
    }

    fn filtered(select: &str, f: &Filter) -> QueryBuilder<Sqlite> {
        let mut q = QueryBuilder::new(select);
        q.push(" WHERE 1 = 1");
        if let Some(v) = Filter::clean(&f.actor) {
            q.push(" AND actor = ").push_bind(v);
        }
        if let Some(v) = Filter::clean(&f.user) {
            q.push(" AND (target_user_id = ")
                .push_bind(v)
                .push(" OR target_user_email = ")
                .push_bind(v)
                .push(")");
        }
        if let Some(v) = Filter::clean(&f.action) {
            q.push(" AND action = ").push_bind(v);
        }
        if let Some(v) = Filter::clean(&f.outcome) {
            q.push(" AND outcome = ").push_bind(v);
        }
        q
    }

    /// Newest first.
    pub async fn list(
        &self,
        f: &Filter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Entry>, sqlx::Error> {
        let mut q = Self::filtered(
            "SELECT id, at, actor, role, action, target_user_id, target_user_email, key_id, key_name, requested_expiry, reason, related_key_id, api_enabled, outcome, upstream_status, error, request_id FROM audit",
            f,
        );
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        q.build_query_as::<Entry>().fetch_all(&self.pool).await
    }

    /// Ids of keys keydesk itself created (create or rotate that ended ok).
    pub async fn keys_created_here(
        &self,
    ) -> Result<std::collections::HashSet<String>, sqlx::Error> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT key_id FROM audit WHERE action IN (?1, ?2) AND outcome = 'ok' AND key_id IS NOT NULL",
        )
        .bind(AuditAction::KeyCreate.as_str())
        .bind(AuditAction::KeyRotate.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().collect())
    }

    pub async fn count(&self, f: &Filter) -> Result<i64, sqlx::Error> {
        let mut q = Self::filtered("SELECT COUNT(*) FROM audit", f);
        q.build_query_scalar::<i64>().fetch_one(&self.pool).await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> AuditStore {
        AuditStore::open("sqlite::memory:").await.unwrap()
    }

    fn intent(action: AuditAction) -> Intent {
        Intent {
            target_user_id: Some("u1".into()),
            ..Intent::new("a@x", "operator", action)
        }
    }

    #[tokio::test]
    async fn intent_then_outcome_is_one_entry() {
        let s = store().await;
        let id = s.intent(&intent(AuditAction::KeyCreate)).await.unwrap();
        s.settle(id, Outcome::Ok, Some("k1"), Some(201), None).await;
        let all = s.list(&Filter::default(), 10, 0).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].outcome, "ok");
        assert_eq!(all[0].key_id.as_deref(), Some("k1"));
    }

    #[tokio::test]
    async fn settled_entries_cannot_change_or_vanish() {
        let s = store().await;
        let id = s.intent(&intent(AuditAction::KeyRevoke)).await.unwrap();
        s.settle(id, Outcome::Failed, None, Some(404), Some("gone"))
            .await;
        assert!(
            sqlx::query("UPDATE audit SET actor = 'x'")
                .execute(&s.pool)
                .await
                .is_err()
        );
        assert!(
            sqlx::query("DELETE FROM audit")
                .execute(&s.pool)
                .await
                .is_err()
        );
        assert_eq!(s.count(&Filter::default()).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn filters_match_exactly() {
        let s = store().await;
        for a in [
            AuditAction::KeyCreate,
            AuditAction::KeyRevoke,
            AuditAction::KeyCreate,
        ] {
            let id = s.intent(&intent(a)).await.unwrap();
            s.settle(id, Outcome::Ok, None, None, None).await;
        }
        let f = Filter {
            action: Some("key.create".into()),
            ..Default::default()
        };
        assert_eq!(s.count(&f).await.unwrap(), 2);
        let f = Filter {
            user: Some("u1".into()),
            outcome: Some("failed".into()),
            ..Default::default()
        };
        assert_eq!(s.count(&f).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_pending_entry_may_only_be_settled() {
        let s = store().await;
        let id = s.intent(&intent(AuditAction::KeyCreate)).await.unwrap();
        for rewrite in [
            "UPDATE audit SET actor = 'mallory@x'",
            "UPDATE audit SET action = 'key.revoke'",
            "UPDATE audit SET target_user_id = 'u2'",
            "UPDATE audit SET at = '2000-01-01T00:00:00Z'",
            "UPDATE audit SET outcome = 'pending', reason = 'x'",
        ] {
            assert!(
                sqlx::query(rewrite).execute(&s.pool).await.is_err(),
                "{rewrite} must be refused"
            );
        }
        s.settle(id, Outcome::Ok, Some("k1"), None, None).await;
        let all = s.list(&Filter::default(), 10, 0).await.unwrap();
        assert_eq!(all[0].actor, "a@x");
        assert_eq!(all[0].outcome, "ok");
        assert_eq!(all[0].key_id.as_deref(), Some("k1"));
    }

    #[tokio::test]
    async fn settling_twice_changes_nothing_the_second_time() {
        let s = store().await;
        let id = s.intent(&intent(AuditAction::KeyRevoke)).await.unwrap();
        assert_eq!(
            s.try_settle(id, Outcome::Ok, None, None, None).await.ok(),
            Some(1)
        );
        assert_eq!(
            s.try_settle(id, Outcome::Failed, None, None, None)
                .await
                .ok(),
            Some(0)
        );
        let all = s.list(&Filter::default(), 10, 0).await.unwrap();
        assert_eq!(all[0].outcome, "ok");
    }
}
