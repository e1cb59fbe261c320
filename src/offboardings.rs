//! Offboardings as durable jobs. Each run (one audit group) has a row here:
//! it is written when the run starts and after every key, so any replica's
//! user page shows its progress, and a run cut short (a stop, a crash) is
//! found by its stale heartbeat and shown as unfinished, with the button
//! that finishes it. The steps themselves are in the audit trail.

use crate::db::Db;
use crate::on_pool;

/// The columns of a run, with its lease (`lease.rs`): which replica runs it.
macro_rules! run_select {
    ($rest:literal) => {
        concat!(
            "SELECT o.group_id, o.user_id, o.started_by, o.state, o.started_ms, o.heartbeat_ms,
                o.keys_total, o.keys_done, o.live, o.steps_done, o.reason, o.user_email, o.listed,
                l.holder, l.acquired_ms AS held_since_ms, l.expires_ms AS lease_expires_ms
             FROM offboardings o LEFT JOIN job_leases l ON l.job = 'offboarding:' || o.group_id ",
            $rest
        )
    };
}

/// A user's (`$1`) latest offboarding run.
pub const LATEST_FOR_USER_SQL: &str =
    run_select!("WHERE o.user_id = $1 ORDER BY o.started_ms DESC, o.group_id DESC LIMIT 1");

/// Running runs whose heartbeat is older than `$1` and whose lease (if any)
/// expired before `$2`: their replica stopped; another takes them over.
const STALLED_SQL: &str = run_select!(
    "WHERE o.state = 'running' AND o.heartbeat_ms < $1 AND (l.job IS NULL OR l.expires_ms < $2)
     ORDER BY o.group_id LIMIT 20"
);

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
    /// The steps done so far (`hold,brake,withdrawn,`): a resumed run skips them.
    pub steps_done: Option<String>,
    pub reason: Option<String>,
    pub user_email: Option<String>,
    /// Key ids the confirmation listed, comma-separated.
    pub listed: Option<String>,
    /// The replica that holds (or last held) the run's lease, and since when.
    pub holder: Option<String>,
    pub held_since_ms: Option<i64>,
    pub lease_expires_ms: Option<i64>,
}

/// The parts of a run that are done once, recorded as each ends well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Hold,
    Brake,
    Withdrawn,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Step::Hold => "hold",
            Step::Brake => "brake",
            Step::Withdrawn => "withdrawn",
        }
    }
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
    /// Whether `step` was done (by any replica) before.
    pub fn did(&self, step: Step) -> bool {
        self.steps_done
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .any(|s| s == step.as_str())
    }
    /// "run by replica R since T", for the user page.
    pub fn runner_words(&self) -> Option<String> {
        let holder = self.holder.as_deref()?;
        let since = crate::timefmt::display_ms(self.held_since_ms?);
        Some(format!("run by replica {holder} since {since}"))
    }
    /// "3 of 12 keys revoked", or where the run stands before the list.
    pub fn progress_words(&self) -> String {
        match self.keys_total {
            Some(total) => format!("{} of {total} keys dealt with", self.keys_done),
            None => "switching API access off and withdrawing open links".to_string(),
        }
    }
}

/// What a run records at its start, so another replica can resume it.
pub struct StartInfo<'a> {
    pub reason: Option<&'a str>,
    pub email: Option<&'a str>,
    /// Key ids the confirmation listed, comma-separated.
    pub listed: &'a str,
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

    /// A run starts, with nothing to resume it by but the user.
    pub async fn start(&self, group_id: i64, user_id: &str, by: &str) -> Result<(), sqlx::Error> {
        let what = StartInfo {
            reason: None,
            email: None,
            listed: "",
        };
        self.start_with(group_id, user_id, by, what).await
    }

    /// A run starts: with what another replica needs to resume it.
    pub async fn start_with(
        &self,
        group_id: i64,
        user_id: &str,
        by: &str,
        what: StartInfo<'_>,
    ) -> Result<(), sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "INSERT INTO offboardings (group_id, user_id, started_by, state, started_ms, heartbeat_ms, steps_done, reason, user_email, listed)
                 VALUES ($1, $2, $3, 'running', $4, $4, '', $5, $6, $7)",
            )
            .bind(group_id)
            .bind(user_id)
            .bind(by)
            .bind(now)
            .bind(what.reason)
            .bind(what.email)
            .bind(what.listed)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// `step` ended well: a resumed run does not do it again.
    pub async fn step_done(&self, group_id: i64, step: Step) -> Result<(), sqlx::Error> {
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE offboardings SET steps_done = COALESCE(steps_done, '') || $1 || ','
                 WHERE group_id = $2 AND state = 'running'",
            )
            .bind(step.as_str())
            .bind(group_id)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Runs whose replica stopped (heartbeat and lease older than `lease`).
    pub async fn stalled(&self, lease_ms: i64) -> Result<Vec<Offboarding>, sqlx::Error> {
        let now = self.db.clock_ms("look").await?;
        on_pool!(look, &self.db, |p| {
            sqlx::query_as::<_, Offboarding>(STALLED_SQL)
                .bind(now - lease_ms)
                .bind(now)
                .fetch_all(p)
                .await
        })
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

    /// Runs whose heartbeat is older than `bound` and that no replica holds
    /// (none took them over) become unfinished. Returns how many.
    pub async fn sweep(&self, bound_ms: i64) -> Result<u64, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE offboardings SET state = 'unfinished' WHERE state = 'running' AND heartbeat_ms < $1
                 AND NOT EXISTS (SELECT 1 FROM job_leases l
                     WHERE l.job = 'offboarding:' || offboardings.group_id AND l.expires_ms >= $2)",
            )
            .bind(now - bound_ms)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n)
    }
}
