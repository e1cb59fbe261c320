//! Offboardings as durable jobs. Each run (one audit group) has a row here:
//! it is written when the run starts and after every key, so any replica's
//! user page shows its progress, and a run cut short (a stop, a crash) is
//! found by its stale heartbeat and shown as unfinished, with the button
//! that finishes it. The steps themselves are in the audit trail.

use crate::db::Db;
use crate::on_pool;

/// A user's (`$1`) latest offboarding run.
pub const LATEST_FOR_USER_SQL: &str = "SELECT group_id, user_id, started_by, state, started_ms, heartbeat_ms, keys_total, keys_done, live
     FROM offboardings WHERE user_id = $1 ORDER BY started_ms DESC, group_id DESC LIMIT 1";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Offboarding {
    pub group_id: i64,
    pub user_id: String,
    pub started_by: String,
    /// `running`, `done` or `unfinished`.
    pub state: String,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    /// Keys found (after the brake); none until the list was read.
    pub keys_total: Option<i64>,
    pub keys_done: i64,
    /// Keys that may still work after the run (failed or unknown).
    pub live: i64,
}

impl Offboarding {
    pub fn started_display(&self) -> String {
        crate::timefmt::display_ms(self.started_ms)
    }
    pub fn running(&self) -> bool {
        self.state == "running"
    }
    pub fn unfinished(&self) -> bool {
        self.state == "unfinished"
    }
    /// "3 of 12 keys revoked", or where the run stands before the list.
    pub fn progress_words(&self) -> String {
        match self.keys_total {
            Some(total) => format!("{} of {total} keys dealt with", self.keys_done),
            None => "switching API access off and withdrawing open links".to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Offboardings {
    db: Db,
}

impl Offboardings {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// How many writes that could give `user_id` a key or access are at
    /// Vultr right now: create, rotate and claim intents not yet settled,
    /// claim links being claimed, requests being carried out. An offboarding
    /// waits for them before it lists the keys.
    pub async fn writes_in_flight(&self, user_id: &str) -> Result<i64, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_scalar::<_, i64>(
                "SELECT (SELECT COUNT(*) FROM audit WHERE target_user_id = $1 AND outcome = 'pending'
                           AND (action IN ('key.create', 'key.rotate', 'grant.claim')
                                OR (action = 'user.api_access' AND api_enabled = TRUE)))
                      + (SELECT COUNT(*) FROM grants WHERE user_id = $1 AND state = 'claiming')
                      + (SELECT COUNT(*) FROM approvals WHERE user_id = $1 AND state = 'executing')",
            )
            .bind(user_id)
            .fetch_one(p)
            .await
        })
    }

    pub async fn start(&self, group_id: i64, user_id: &str, by: &str) -> Result<(), sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "INSERT INTO offboardings (group_id, user_id, started_by, state, started_ms, heartbeat_ms)
                 VALUES ($1, $2, $3, 'running', $4, $4)",
            )
            .bind(group_id)
            .bind(user_id)
            .bind(by)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Progress (and heartbeat): how many keys were found and dealt with.
    pub async fn progress(
        &self,
        group_id: i64,
        total: Option<i64>,
        done: i64,
    ) -> Result<(), sqlx::Error> {
        self.update(group_id, "running", total, Some(done), 0).await
    }

    /// The run ended: done, or unfinished with `live` keys possibly working.
    pub async fn finish(
        &self,
        group_id: i64,
        finished: bool,
        live: i64,
    ) -> Result<(), sqlx::Error> {
        let state = if finished { "done" } else { "unfinished" };
        self.update(group_id, state, None, None, live).await
    }

    /// One write to a running row: its state, counts and heartbeat.
    async fn update(
        &self,
        group_id: i64,
        state: &str,
        total: Option<i64>,
        done: Option<i64>,
        live: i64,
    ) -> Result<(), sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE offboardings SET state = $1, keys_total = COALESCE($2, keys_total),
                    keys_done = COALESCE($3, keys_done), live = $4, heartbeat_ms = $5
                 WHERE group_id = $6 AND state = 'running'",
            )
            .bind(state)
            .bind(total)
            .bind(done)
            .bind(live)
            .bind(now)
            .bind(group_id)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The user's latest run, if any.
    pub async fn latest_for_user(&self, user_id: &str) -> Result<Option<Offboarding>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Offboarding>(LATEST_FOR_USER_SQL)
                .bind(user_id)
                .fetch_optional(p)
                .await
        })
    }

    /// Runs whose heartbeat is older than `bound` (their process stopped)
    /// become unfinished. Returns how many.
    pub async fn sweep(&self, bound_ms: i64) -> Result<u64, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE offboardings SET state = 'unfinished' WHERE state = 'running' AND heartbeat_ms < $1",
            )
            .bind(now - bound_ms)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n)
    }
}
