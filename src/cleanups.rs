//! Clearing the report's expired keys as a durable job: each run (one audit
//! group) and every key it is to revoke are written before the first
//! DELETE, and each key's outcome as it ends. A run whose replica stopped
//! (its lease in `job_leases` lapsed) is found here and taken over by
//! another replica, which deals only with the keys left.

use crate::db::Db;
use crate::on_pool;

/// A run, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Cleanup {
    pub group_id: i64,
    pub started_by: String,
    pub reason: Option<String>,
    pub holder: Option<String>,
}

/// The lease key of a clean-up run.
pub fn cleanup_job(group_id: i64) -> String {
    format!("cleanup:{group_id}")
}

#[derive(Clone, Debug)]
pub struct Cleanups {
    db: Db,
}

impl Cleanups {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The run and its `(user, key)` targets, in one transaction.
    pub async fn start(
        &self,
        group_id: i64,
        by: &str,
        reason: Option<&str>,
        targets: &[(String, String)],
    ) -> Result<(), sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO cleanups (group_id, started_by, reason, state, started_ms)
                 VALUES ($1, $2, $3, 'running', $4)",
            )
            .bind(group_id)
            .bind(by)
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for (user, key) in targets {
                sqlx::query(
                    "INSERT INTO cleanup_keys (group_id, user_id, key_id) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                )
                .bind(group_id)
                .bind(user)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
    }

    /// One key dealt with: its outcome (`StepOutcome::code`).
    pub async fn key_done(
        &self,
        group_id: i64,
        user: &str,
        key: &str,
        outcome: &str,
    ) -> Result<(), sqlx::Error> {
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE cleanup_keys SET outcome = $1
                 WHERE group_id = $2 AND user_id = $3 AND key_id = $4 AND outcome IS NULL",
            )
            .bind(outcome)
            .bind(group_id)
            .bind(user)
            .bind(key)
            .execute(p)
            .await
            .map(|_| ())
        })
    }

    /// The run ended (every key dealt with).
    pub async fn finish(&self, group_id: i64) -> Result<(), sqlx::Error> {
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE cleanups SET state = 'done' WHERE group_id = $1 AND state = 'running'",
            )
            .bind(group_id)
            .execute(p)
            .await
            .map(|_| ())
        })
    }

    /// Running runs nobody holds: their replica stopped.
    pub async fn stalled(&self) -> Result<Vec<Cleanup>, sqlx::Error> {
        let now = self.db.clock_ms("look").await?;
        on_pool!(look, &self.db, |p| {
            sqlx::query_as::<_, Cleanup>(
                "SELECT c.group_id, c.started_by, c.reason, l.holder
                 FROM cleanups c LEFT JOIN job_leases l ON l.job = 'cleanup:' || c.group_id
                 WHERE c.state = 'running' AND (l.job IS NULL OR l.expires_ms < $1)
                 ORDER BY c.group_id LIMIT 20",
            )
            .bind(now)
            .fetch_all(p)
            .await
        })
    }

    /// The run's keys: `(user, key, outcome)`, outcome None while left to do.
    pub async fn keys(
        &self,
        group_id: i64,
    ) -> Result<Vec<(String, String, Option<String>)>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_as(
                "SELECT user_id, key_id, outcome FROM cleanup_keys WHERE group_id = $1
                 ORDER BY user_id, key_id",
            )
            .bind(group_id)
            .fetch_all(p)
            .await
        })
    }

    /// The state of a run (`running` or `done`), if it exists.
    pub async fn state(&self, group_id: i64) -> Result<Option<String>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_scalar("SELECT state FROM cleanups WHERE group_id = $1")
                .bind(group_id)
                .fetch_optional(p)
                .await
        })
    }
}
