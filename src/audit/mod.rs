//! The audit trail: who did what to which key, when, and how it ended.
//!
//! A mutating action writes an *intent* row (outcome `pending`) and commits it
//! before calling Vultr, then settles it to `ok`, `failed` or `unknown`. A
//! crash mid-call leaves `pending`: it becomes `unknown` once no request could
//! still settle it (see `mark_stale`), so nothing is lost silently. If the
//! intent cannot be written, the action is refused. Secrets are never passed
//! to this module: no field can hold one. Works on SQLite and PostgreSQL.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An entry's level, ACLs and allowlist, as recorded.
pub type Capability = (Option<String>, Option<String>, Option<String>);

/// How a value only a newer release knows (an audit action, a request's
/// kind or state) is shown during a rolling update.
pub const NEWER: &str = "unknown (newer version)";

use crate::db::{Db, Engine};
use crate::on_pool;

mod entry;

pub use entry::{
    AuditAction, CsvSafe, Entry, Filter, Intent, Outcome, SYSTEM_ACTOR, Settlement, neutralise,
};

/// The longest a request can take (the request timeout) plus a margin: an
/// intent older than this can no longer be settled by anyone.
pub const PENDING_BOUND: std::time::Duration = std::time::Duration::from_secs(90);

#[derive(Clone, Debug)]
pub struct AuditStore {
    db: Db,
    /// This process, as written into its intents.
    instance: String,
    /// How old an open intent must be before another process marks it.
    pending_bound_ms: i64,
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Appends the page filters to a `SELECT … FROM audit` builder.
macro_rules! select_entries {
    () => {
        "SELECT id, at, actor, role, action, target_user_id, target_user_email, key_id, key_name, requested_expiry, reason, related_key_id, api_enabled, group_id, granted_by, grant_id, requested_by, approved_by, approval_id, level, acls, allowlist, outcome, upstream_status, error, request_id FROM audit"
    };
}

/// The newest entries about one user (`$1`, id or email), for the user page.
pub const USER_HISTORY_SQL: &str = concat!(
    select_entries!(),
    " WHERE (target_user_id = $1 OR target_user_email = $1) ORDER BY id DESC LIMIT 10"
);

macro_rules! push_filters {
    ($q:ident, $f:expr) => {{
        $q.push(" WHERE 1 = 1");
        if let Some(v) = Filter::clean(&$f.actor) {
            $q.push(" AND actor = ").push_bind(v.to_string());
        }
        if let Some(v) = Filter::clean(&$f.user) {
            $q.push(" AND (target_user_id = ")
                .push_bind(v.to_string())
                .push(" OR target_user_email = ")
                .push_bind(v.to_string())
                .push(")");
        }
        if let Some(v) = Filter::clean(&$f.action) {
            $q.push(" AND action = ").push_bind(v.to_string());
        }
        if let Some(v) = Filter::clean(&$f.outcome) {
            $q.push(" AND outcome = ").push_bind(v.to_string());
        }
        if let Some(v) = Filter::clean(&$f.level) {
            $q.push(" AND level = ").push_bind(v.to_string());
        }
        if let Some(g) = Filter::clean(&$f.group).and_then(|g| g.parse::<i64>().ok()) {
            $q.push(" AND (id = ")
                .push_bind(g)
                .push(" OR group_id = ")
                .push_bind(g)
                .push(")");
        }
        if let Some(raw) = Filter::clean(&$f.review) {
            match raw.parse::<i64>() {
                Ok(r) => {
                    $q.push(" AND (id IN (SELECT group_id FROM reviews WHERE id = ")
                        .push_bind(r)
                        .push(") OR group_id IN (SELECT group_id FROM reviews WHERE id = ")
                        .push_bind(r)
                        .push("))");
                }
                // Not a review number: no review's entries, not everyone's.
                Err(_) => {
                    $q.push(" AND 1 = 0");
                }
            }
        }
    }};
}

impl AuditStore {
    /// Opens a database of its own (tests and tools): SQLite or PostgreSQL.
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        Ok(Self::new(Db::open(url).await?, PENDING_BOUND).await)
    }

    /// The audit trail in `db`. On SQLite, one process owns the file, so every
    /// intent left open by a previous run is marked `unknown` at once; on
    /// PostgreSQL only those older than `pending_bound`, since another live
    /// replica may still settle its own.
    pub async fn new(db: Db, pending_bound: std::time::Duration) -> Self {
        let store = Self {
            db,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            pending_bound_ms: i64::try_from(pending_bound.as_millis()).unwrap_or(i64::MAX),
        };
        let all = store.db.engine() == Engine::Sqlite;
        match store.mark_stale(all).await {
            Ok(n) if n > 0 => tracing::warn!(
                target: "audit",
                count = n,
                "audit entries left open by a stopped process marked unknown"
            ),
            Ok(_) => {}
            // A read-only store still serves the audit pages; every mutating
            // action will be refused when its intent cannot be written.
            Err(e) => {
                tracing::error!(target: "audit", error = %e, "audit store is not writable: keydesk will refuse every change")
            }
        }
        store
    }

    /// At shutdown, after the last request: this process's own open intents
    /// can no longer be settled by anyone. Returns how many were marked.
    pub async fn mark_own_unknown(&self) -> Result<u64, sqlx::Error> {
        let r = on_pool!(write, &self.db, |p| {
            sqlx::query(
            "UPDATE audit SET outcome = 'unknown', error = 'keydesk stopped before the outcome was known', finished_at = $1
             WHERE outcome = 'pending' AND instance = $2",
        )
        .bind(now())
        .bind(&self.instance)
        .execute(p)
        .await?
        .rows_affected()
        });
        Ok(r)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// How long an answer may take before its outcome counts as lost: also
    /// the wait before a lost create found nowhere is called "not created".
    pub fn pending_bound_ms(&self) -> i64 {
        self.pending_bound_ms
    }

    /// Marks open intents `unknown` that no request can settle any more:
    /// this process's own stale ones and any older than the bound (or, with
    /// `all`, every open one). Returns how many.
    pub async fn mark_stale(&self, all: bool) -> Result<u64, sqlx::Error> {
        let now_ms = self.db.now_ms().await?;
        let cutoff = if all {
            i64::MAX
        } else {
            now_ms - self.pending_bound_ms
        };
        let r = on_pool!(write, &self.db, |p| {
            sqlx::query(
            "UPDATE audit SET outcome = 'unknown', error = 'keydesk stopped before the outcome was known', finished_at = $1
             WHERE outcome = 'pending' AND (COALESCE(started_ms, 0) < $2)",
        )
        .bind(now())
        .bind(cutoff)
        .execute(p)
        .await?
        .rows_affected()
        });
        Ok(r)
    }

    /// Commits an intent; the action must not proceed if this fails.
    pub async fn intent(&self, i: &Intent) -> Result<i64, sqlx::Error> {
        let at = now();
        let started_ms = self.db.now_ms().await?;
        let id: i64 = on_pool!(write, &self.db, |p| {
            sqlx::query_scalar(
            "INSERT INTO audit (at, actor, role, action, target_user_id, target_user_email, key_id, key_name, requested_expiry, reason, related_key_id, outcome, request_id, api_enabled, instance, started_ms, group_id, granted_by, grant_id, requested_by, approved_by, approval_id, level, acls, allowlist)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24) RETURNING id",
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
        .bind(&self.instance)
        .bind(started_ms)
        .bind(i.group_id)
        .bind(&i.granted_by)
        .bind(&i.grant_id)
        .bind(&i.requested_by)
        .bind(&i.approved_by)
        .bind(&i.approval_id)
        .bind(&i.level)
        .bind(&i.acls)
        .bind(&i.allowlist)
        .fetch_one(p)
        .await?
        });
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
            Ok(id) => self.settle(id, outcome.settled()).await,
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
    pub async fn try_settle(&self, id: i64, how: Settlement<'_>) -> Result<u64, sqlx::Error> {
        let r = on_pool!(write, &self.db, |p| {
            sqlx::query(
            "UPDATE audit SET outcome = $1, key_id = COALESCE(key_id, $2), upstream_status = $3, error = $4, finished_at = $5 WHERE id = $6 AND outcome = 'pending'",
        )
        .bind(how.outcome.as_str())
        .bind(how.key_id)
        .bind(how.upstream_status.map(i64::from))
        .bind(how.error)
        .bind(now())
        .bind(id)
        .execute(p)
        .await?
        .rows_affected()
        });
        Ok(r)
    }

    /// Settles an intent. A failure here is logged loudly: the row stays
    /// `pending` and becomes `unknown` once past the bound, never lost.
    pub async fn settle(&self, id: i64, how: Settlement<'_>) {
        let Settlement {
            outcome,
            key_id,
            upstream_status,
            error,
        } = how;
        match self.try_settle(id, how).await {
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

    /// Newest first.
    pub async fn list(
        &self,
        f: &Filter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Entry>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            let mut q = sqlx::QueryBuilder::new(select_entries!());
            push_filters!(q, f);
            q.push(" ORDER BY id DESC LIMIT ")
                .push_bind(limit)
                .push(" OFFSET ")
                .push_bind(offset);
            q.build_query_as::<Entry>().fetch_all(p).await
        })
    }

    /// Keys that a rotation replaced: old key id → the replacement's id.
    pub async fn rotated_keys(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, sqlx::Error> {
        let pairs: Vec<(String, String)> = on_pool!(read, &self.db, |p| {
            sqlx::query_as(
                "SELECT related_key_id, key_id FROM audit WHERE action = $1 AND outcome = 'ok' AND related_key_id IS NOT NULL AND key_id IS NOT NULL",
            )
            .bind(AuditAction::KeyRotate.as_str())
            .fetch_all(p)
            .await?
        });
        Ok(pairs.into_iter().collect())
    }

    /// What a key could do as entry `id` recorded it (level, ACLs,
    /// allowlist): carried by the rows that settle that entry later.
    pub async fn capability_of(&self, id: i64) -> Result<Capability, sqlx::Error> {
        let got: Option<Capability> = on_pool!(read, &self.db, |p| {
            sqlx::query_as("SELECT level, acls, allowlist FROM audit WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        });
        Ok(got.unwrap_or_default())
    }

    /// Ids of keys keydesk itself created (create, rotate or claim that ended ok).
    pub async fn keys_created_here(
        &self,
    ) -> Result<std::collections::HashSet<String>, sqlx::Error> {
        let ids: Vec<String> = on_pool!(read, &self.db, |p| {
            sqlx::query_scalar(
            "SELECT key_id FROM audit WHERE action IN ($1, $2, $3) AND outcome = 'ok' AND key_id IS NOT NULL",
        )
        .bind(AuditAction::KeyCreate.as_str())
        .bind(AuditAction::KeyRotate.as_str())
        .bind(AuditAction::GrantClaim.as_str())
        .fetch_all(p)
        .await?
        });
        Ok(ids.into_iter().collect())
    }

    pub async fn count(&self, f: &Filter) -> Result<i64, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            let mut q = sqlx::QueryBuilder::new("SELECT COUNT(*) FROM audit");
            push_filters!(q, f);
            q.build_query_scalar::<i64>().fetch_one(p).await
        })
    }

    pub async fn close(&self) {
        self.db.close().await;
    }
}

// Tested on both engines, from one source, in tests/store.rs.
