//! Where a notice pass keeps its state: the lease in `jobs`, the passes,
//! and one row per `(key, threshold, channel)` written before each send.

use std::collections::HashMap;

use super::plan;
use super::send::Notice;
use super::{Channel, JOB, Notifier, RunReport, Trigger};
use crate::on_pool;

/// A pass, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: i64,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub trigger: String,
    pub state: String,
    pub users: i64,
    pub keys_due: i64,
    pub sent: i64,
    pub failed: i64,
    pub error: Option<String>,
}

/// The notices sent about a user's keys (`$1`), oldest first.
pub const LAST_SENT_SQL: &str = "SELECT key_id, threshold_days, channel, user_id, user_email, key_name, date_expire, days_left, state, attempts, error, run_id, created_ms, updated_ms
     FROM notices WHERE user_id = $1 AND state = 'sent' ORDER BY updated_ms ASC";

/// The last notice per key, from `LAST_SENT_SQL`'s rows (oldest first, so
/// the newest per key wins).
pub fn newest_per_key(rows: Vec<NoticeRow>) -> HashMap<String, NoticeRow> {
    rows.into_iter().map(|r| (r.key_id.clone(), r)).collect()
}

/// A notice, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NoticeRow {
    pub key_id: String,
    pub threshold_days: i64,
    pub channel: String,
    pub user_id: String,
    pub user_email: Option<String>,
    pub key_name: Option<String>,
    pub date_expire: String,
    pub days_left: i64,
    pub state: String,
    pub attempts: i64,
    pub error: Option<String>,
    pub run_id: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl NoticeRow {
    pub fn threshold_words(&self) -> String {
        match self.threshold_days {
            plan::EXPIRED => "expired".into(),
            1 => "1 day ahead".into(),
            d => format!("{d} days ahead"),
        }
    }
    pub fn updated_display(&self) -> String {
        crate::timefmt::display_ms(self.updated_ms)
    }
}

/// What the notices page shows.
pub struct Snapshot {
    pub runs: Vec<RunRow>,
    pub notices: Vec<NoticeRow>,
    /// A pass holds the lease now.
    pub running: bool,
    /// When the last pass started (any trigger).
    pub last_started_ms: Option<i64>,
}

impl Notifier {
    /// Claims the pass: no other running anywhere, and for the schedule, the
    /// last one started at least an interval ago; to resume, the last one
    /// never ended (its lease lapsed without a release).
    pub(super) async fn lease(&self, trigger: &Trigger) -> Result<bool, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let manual = !matches!(trigger, Trigger::Schedule);
        let resume = matches!(trigger, Trigger::Resume);
        let due_before = now - i64::try_from(self.interval.as_millis()).unwrap_or(i64::MAX);
        let won: Option<String> = on_pool!(write, &self.db, |p| {
            sqlx::query_scalar(
                "UPDATE jobs SET owner = $1, lease_until_ms = $2, started_by = $3, started_ms = $4, error = NULL
                 WHERE name = $5 AND lease_until_ms < $4 AND ($6 OR COALESCE(started_ms, 0) <= $7)
                   AND (NOT $8 OR (started_ms IS NOT NULL AND (finished_ms IS NULL OR finished_ms < started_ms)))
                 RETURNING name",
            )
            .bind(&self.instance)
            .bind(now + self.lease_ms())
            .bind(trigger.describe())
            .bind(now)
            .bind(JOB)
            .bind(manual)
            .bind(due_before)
            .bind(resume)
            .fetch_optional(p)
            .await?
        });
        Ok(won.is_some())
    }

    pub(super) async fn renew(&self) -> Result<(), sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| {
            sqlx::query("UPDATE jobs SET lease_until_ms = $1 WHERE name = $2 AND owner = $3")
                .bind(now + self.lease_ms())
                .bind(JOB)
                .bind(&self.instance)
                .execute(p)
                .await
                .map(|_| ())
        })
    }

    /// Whether the last pass never ended and its lease lapsed (its replica
    /// stopped): one look of the job loop, which then resumes it.
    pub async fn interrupted(&self) -> Result<bool, sqlx::Error> {
        let now = self.db.clock_ms("look").await?;
        let found: Option<String> = on_pool!(look, &self.db, |p| {
            sqlx::query_scalar(
                "SELECT name FROM jobs WHERE name = $1 AND lease_until_ms < $2
                   AND started_ms IS NOT NULL AND (finished_ms IS NULL OR finished_ms < started_ms)",
            )
            .bind(JOB)
            .bind(now)
            .fetch_optional(p)
            .await?
        });
        Ok(found.is_some())
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// The passes a stopped replica left running end as failed (this
    /// replica holds the lease: no other pass runs). Their notices left
    /// `sending` stay so: they may have gone out, and are never resent.
    pub(super) async fn close_interrupted(&self) {
        let r: Result<u64, sqlx::Error> = async {
            let now = self.db.now_ms().await?;
            Ok(on_pool!(write, &self.db, |p| {
                sqlx::query(
                    "UPDATE notice_runs SET state = 'failed', finished_ms = $1,
                        error = 'interrupted: its replica stopped; resumed by another pass'
                     WHERE state = 'running'",
                )
                .bind(now)
                .execute(p)
                .await?
                .rows_affected()
            }))
        }
        .await;
        match r {
            Ok(n) if n > 0 => tracing::warn!(passes = n, "interrupted notice pass resumed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "interrupted notice passes not closed"),
        }
    }

    pub(super) async fn release(&self) {
        let r: Result<(), sqlx::Error> = async {
            let now = self.db.now_ms().await?;
            on_pool!(write, &self.db, |p| {
                sqlx::query(
                    "UPDATE jobs SET lease_until_ms = 0, owner = NULL, finished_ms = $1 WHERE name = $2 AND owner = $3",
                )
                .bind(now)
                .bind(JOB)
                .bind(&self.instance)
                .execute(p)
                .await
                .map(|_| ())
            })
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "notice pass lease not released; it lapses on its own");
        }
    }

    /// Writes the row before the send: a fresh insert, or the retry of a
    /// failed one. False when it was sent (or is being sent) already.
    pub(super) async fn claim(
        &self,
        channel: Channel,
        n: &Notice,
        run_id: i64,
    ) -> Result<bool, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let inserted = on_pool!(write, &self.db, |p| {
            sqlx::query(
                "INSERT INTO notices (key_id, threshold_days, channel, user_id, user_email, key_name, date_expire, days_left, state, run_id, created_ms, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'sending', $9, $10, $10)
                 ON CONFLICT (key_id, threshold_days, channel) DO NOTHING",
            )
            .bind(&n.key_id)
            .bind(n.threshold_days)
            .bind(channel.as_str())
            .bind(&n.user_id)
            .bind(&n.user_email)
            .bind(&n.key_name)
            .bind(&n.date_expire)
            .bind(n.days_left)
            .bind(run_id)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        if inserted == 1 {
            return Ok(true);
        }
        let retried = on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE notices SET state = 'sending', attempts = attempts + 1, run_id = $1, updated_ms = $2, days_left = $3, error = NULL
                 WHERE key_id = $4 AND threshold_days = $5 AND channel = $6 AND state = 'failed'",
            )
            .bind(run_id)
            .bind(now)
            .bind(n.days_left)
            .bind(&n.key_id)
            .bind(n.threshold_days)
            .bind(channel.as_str())
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(retried == 1)
    }

    pub(super) async fn settle(
        &self,
        channel: Channel,
        n: &Notice,
        result: &Result<(), String>,
    ) -> Result<(), sqlx::Error> {
        let now = self.db.now_ms().await?;
        let (state, error) = match result {
            Ok(()) => ("sent", None),
            Err(e) => ("failed", Some(e.as_str())),
        };
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE notices SET state = $1, error = $2, updated_ms = $3
                 WHERE key_id = $4 AND threshold_days = $5 AND channel = $6 AND state = 'sending'",
            )
            .bind(state)
            .bind(error)
            .bind(now)
            .bind(&n.key_id)
            .bind(n.threshold_days)
            .bind(channel.as_str())
            .execute(p)
            .await
            .map(|_| ())
        })
    }

    pub(super) async fn finish(&self, r: &RunReport) {
        let res: Result<(), sqlx::Error> = async {
            let now = self.db.now_ms().await?;
            on_pool!(write, &self.db, |p| {
                sqlx::query(
                    "UPDATE notice_runs SET finished_ms = $1, state = $2, users = $3, keys_due = $4, sent = $5, failed = $6, error = $7 WHERE id = $8",
                )
                .bind(now)
                .bind(if r.error.is_none() { "ok" } else { "failed" })
                .bind(r.users as i64)
                .bind(r.keys_due as i64)
                .bind(r.sent as i64)
                .bind(r.failed as i64)
                .bind(&r.error)
                .bind(r.run_id)
                .execute(p)
                .await
                .map(|_| ())
            })
        }
        .await;
        if let Err(e) = res {
            tracing::error!(error = %e, run = r.run_id, "notice pass outcome not recorded");
        }
    }

    /// The newest passes and notices, and whether one runs now.
    pub async fn snapshot(&self, runs: i64, notices: i64) -> Result<Snapshot, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let runs: Vec<RunRow> = on_pool!(read, &self.db, |p| {
            sqlx::query_as(
                "SELECT id, started_ms, finished_ms, trigger, state, users, keys_due, sent, failed, error FROM notice_runs ORDER BY id DESC LIMIT $1",
            )
            .bind(runs)
            .fetch_all(p)
            .await?
        });
        let notices: Vec<NoticeRow> = on_pool!(read, &self.db, |p| {
            sqlx::query_as(
                "SELECT key_id, threshold_days, channel, user_id, user_email, key_name, date_expire, days_left, state, attempts, error, run_id, created_ms, updated_ms
                 FROM notices ORDER BY updated_ms DESC LIMIT $1",
            )
            .bind(notices)
            .fetch_all(p)
            .await?
        });
        let (lease, started): (i64, Option<i64>) = on_pool!(read, &self.db, |p| {
            sqlx::query_as("SELECT lease_until_ms, started_ms FROM jobs WHERE name = $1")
                .bind(JOB)
                .fetch_one(p)
                .await?
        });
        Ok(Snapshot {
            runs,
            notices,
            running: lease > now,
            last_started_ms: started,
        })
    }

    /// The last notice sent about each key of `user_id`.
    pub async fn last_sent(
        &self,
        user_id: &str,
    ) -> Result<HashMap<String, NoticeRow>, sqlx::Error> {
        let rows: Vec<NoticeRow> = on_pool!(read, &self.db, |p| {
            sqlx::query_as(LAST_SENT_SQL)
                .bind(user_id)
                .fetch_all(p)
                .await?
        });
        Ok(newest_per_key(rows))
    }
}
