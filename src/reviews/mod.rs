//! Access reviews, the store: each review, its items (one per key in scope
//! when it started), every decision ever made, and the reminders sent.
//! States move by conditional updates only, so two replicas never both
//! close a review, both apply an item, or both send a reminder. The
//! database refuses an owner's own "keep" on a root-equivalent key or one
//! usable from anywhere (a CHECK), as it refuses self-approval.
//!
//! Reading Vultr (the snapshot, applying) is in `pages/reviews/`; a store
//! never reads Vultr.

pub mod rules;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::db::Db;
use crate::on_pool;

pub use rules::{Decision, Facts, Fallback, Reviewers, Scope, Term};

/// `KEYDESK_REVIEW_*`: a review started on schedule (`every`), and the
/// reminder sent `remind_days` before a deadline.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// `KEYDESK_REVIEW_EVERY`: None, no recurring review.
    pub every: Option<std::time::Duration>,
    pub scope: Scope,
    /// `KEYDESK_REVIEW_DAYS`: how long each stays open.
    pub days: u32,
    pub fallback: Fallback,
    pub reviewers: Reviewers,
    /// `KEYDESK_REVIEW_INACTIVE_DAYS`: the inactivity that recommends revoking.
    pub inactive_days: u32,
    /// `KEYDESK_REVIEW_REMIND_DAYS`: the reminder this many days before a deadline.
    pub remind_days: u32,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            every: None,
            scope: Scope::all(),
            days: 14,
            fallback: Fallback::Keep,
            reviewers: Reviewers::OwnerAndOperators,
            inactive_days: 90,
            remind_days: 3,
        }
    }
}

/// The lease key of a review's snapshot, and of applying its decisions.
pub fn snapshot_job(id: i64) -> String {
    format!("review-snapshot:{id}")
}
pub fn apply_job(id: i64) -> String {
    format!("review:{id}")
}

/// Who an undecided item's default is applied as, in the audit and the evidence.
pub const DEFAULT_DECIDER: &str = "default";
/// Who closed a review that reached its deadline.
pub const DEADLINE: &str = "deadline";

/// `SELECT <a review's columns> FROM reviews <rest>`.
macro_rules! reviews_where {
    ($rest:literal) => {
        concat!("SELECT id, scope, deadline_ms, default_decision, reviewers, inactive_days, reason, started_by, started_ms, group_id, state, users_total, users_read, error, closed_by, closed_ms, finished_ms FROM reviews ", $rest)
    };
}

/// `SELECT <an item's columns> FROM review_items <rest>`.
macro_rules! items_where {
    ($rest:literal) => {
        concat!("SELECT review_id, key_id, user_id, user_email, user_name, key_name, key_tail, level, acls, reach, expires, created, last_activity, recommendation, recommendation_reason, needs_other, decision, decided_by, decided_role, decided_ms, decision_reason, outcome, applied_decision, applied_by, outcome_detail, upstream_status, applied_ms, attempts FROM review_items ", $rest)
    };
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Review {
    pub id: i64,
    pub scope: String,
    pub deadline_ms: i64,
    pub default_decision: String,
    pub reviewers: String,
    pub inactive_days: i64,
    pub reason: Option<String>,
    pub started_by: String,
    pub started_ms: i64,
    /// The review.start audit entry: every entry of the review links to it.
    pub group_id: i64,
    /// snapshot, open, closing, closed or failed.
    pub state: String,
    pub users_total: i64,
    pub users_read: i64,
    pub error: Option<String>,
    pub closed_by: Option<String>,
    pub closed_ms: Option<i64>,
    pub finished_ms: Option<i64>,
}

impl Review {
    pub fn is_open(&self) -> bool {
        self.state == "open"
    }
    /// Whether this release reads every rule of the review (a newer
    /// release's scope, default or reviewers are left to that release).
    pub fn known(&self) -> bool {
        self.scope.parse::<Scope>().is_ok()
            && self.default_decision.parse::<Fallback>().is_ok()
            && self.reviewers.parse::<Reviewers>().is_ok()
    }
    pub fn fallback(&self) -> Fallback {
        self.default_decision.parse().unwrap_or(Fallback::Keep)
    }
    pub fn who_reviews(&self) -> Reviewers {
        self.reviewers.parse().unwrap_or(Reviewers::Operators)
    }
    /// The scope in words (as stored when it cannot be read).
    pub fn scope_words(&self) -> String {
        self.scope
            .parse::<Scope>()
            .map(|s| s.words())
            .unwrap_or_else(|_| self.scope.clone())
    }
    pub fn deadline_display(&self) -> String {
        crate::timefmt::display_ms(self.deadline_ms)
    }
    pub fn started_display(&self) -> String {
        crate::timefmt::display_ms(self.started_ms)
    }
    pub fn closed_display(&self) -> String {
        self.closed_ms
            .map(crate::timefmt::display_ms)
            .unwrap_or_default()
    }
    pub fn state_words(&self) -> &'static str {
        match self.state.as_str() {
            "snapshot" => "taking its snapshot",
            "open" => "open",
            "closing" => "applying its decisions",
            "closed" => "closed",
            "failed" => "failed to start",
            _ => "unknown (newer version)",
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Item {
    pub review_id: i64,
    pub key_id: String,
    pub user_id: String,
    pub user_email: Option<String>,
    pub user_name: Option<String>,
    pub key_name: Option<String>,
    /// The key's last five characters, as Vultr shows them masked.
    pub key_tail: Option<String>,
    pub level: String,
    pub acls: String,
    /// anywhere, allowlisted or unknown.
    pub reach: String,
    pub expires: Option<String>,
    pub created: Option<String>,
    pub last_activity: Option<String>,
    pub recommendation: String,
    pub recommendation_reason: String,
    pub needs_other: bool,
    pub decision: Option<String>,
    pub decided_by: Option<String>,
    pub decided_role: Option<String>,
    pub decided_ms: Option<i64>,
    pub decision_reason: Option<String>,
    pub outcome: Option<String>,
    pub applied_decision: Option<String>,
    pub applied_by: Option<String>,
    pub outcome_detail: Option<String>,
    pub upstream_status: Option<i64>,
    pub applied_ms: Option<i64>,
    pub attempts: i64,
}

impl Item {
    pub fn name_or_dash(&self) -> &str {
        self.key_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or("(unnamed)")
    }
    pub fn email_or_id(&self) -> &str {
        self.user_email.as_deref().unwrap_or(&self.user_id)
    }
    pub fn recommended(&self) -> Decision {
        Decision::parse(&self.recommendation).unwrap_or(Decision::Keep)
    }
    pub fn decided(&self) -> Option<Decision> {
        self.decision.as_deref().and_then(Decision::parse)
    }
    /// Whether `email` is this key's owner.
    pub fn owned_by(&self, email: &str) -> bool {
        self.user_email
            .as_deref()
            .is_some_and(|e| crate::email::same_email(e, email))
    }
    /// Whose decision the item waits for: its owner, or the operators
    /// (always, for a key its owner alone may not keep).
    pub fn awaits(&self, reviewers: Reviewers) -> String {
        if reviewers.owners() && !self.needs_other {
            self.email_or_id().to_string()
        } else {
            "operators".to_string()
        }
    }
    pub fn reach_words(&self) -> &'static str {
        match self.reach.as_str() {
            "anywhere" => "any address",
            "allowlisted" => "allowlisted addresses",
            _ => "unknown",
        }
    }
    pub fn decided_display(&self) -> String {
        self.decided_ms
            .map(crate::timefmt::display_ms)
            .unwrap_or_default()
    }
    pub fn expires_display(&self) -> String {
        match &self.expires {
            None => "never".to_string(),
            Some(t) => crate::timefmt::display_time(Some(t)),
        }
    }
    pub fn activity_display(&self) -> String {
        crate::timefmt::display_time_relative(self.last_activity.as_deref())
    }
}

/// One decision as it was made (the history the evidence lists).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct DecisionRow {
    pub id: i64,
    pub review_id: i64,
    pub key_id: String,
    pub decision: String,
    pub decided_by: String,
    pub decided_role: String,
    pub decided_ms: i64,
    pub reason: Option<String>,
}

/// What a review starts with.
pub struct NewReview<'a> {
    pub scope: &'a Scope,
    pub deadline_ms: i64,
    pub fallback: Fallback,
    pub reviewers: Reviewers,
    pub inactive_days: u32,
    pub reason: Option<&'a str>,
    pub started_by: &'a str,
}

/// One key of the snapshot.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub key_id: String,
    pub user_id: String,
    pub user_email: Option<String>,
    pub user_name: Option<String>,
    pub key_name: Option<String>,
    pub key_tail: Option<String>,
    pub level: String,
    pub acls: String,
    pub reach: String,
    pub expires: Option<String>,
    pub created: Option<String>,
    pub last_activity: Option<String>,
    pub recommendation: Decision,
    pub recommendation_reason: String,
    pub needs_other: bool,
}

/// Why a review did not start.
#[derive(Debug)]
pub enum StartRefused {
    /// A review of this scope is open: its id.
    AlreadyOpen(i64),
    Store(sqlx::Error),
}

/// How a decision went.
#[derive(Debug, PartialEq, Eq)]
pub enum Decided {
    Recorded,
    /// The review is not open (any more): nothing changed.
    NotOpen,
    /// No such item in this review.
    NoItem,
    /// The database refused it: an owner's own "keep" of a key that needs
    /// another reviewer.
    OwnerMayNotKeep,
}

/// Whether the database refused a decision by its CHECK (an owner's own
/// keep): PostgreSQL's check_violation, SQLite's "CHECK constraint failed"
/// (its basic result code says only "constraint").
fn refused_owner_keep(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| {
        d.is_check_violation()
            || d.code().as_deref() == Some("23514")
            || d.message().contains("CHECK constraint failed")
    })
}

/// An item's applied outcome.
pub struct Applied<'a> {
    /// kept, revoked, gone, offboarded, unknown or failed.
    pub outcome: &'a str,
    pub decision: Decision,
    /// The decider, or `DEFAULT_DECIDER`.
    pub by: &'a str,
    pub detail: Option<&'a str>,
    pub upstream_status: Option<u16>,
}

#[derive(Clone, Debug)]
pub struct Reviews {
    db: Db,
    /// The review jobs this replica runs now. A lease lets its holder take
    /// it again (a look that finds it lapsed while its own task still runs):
    /// this keeps a second task of the same replica out.
    running: Arc<Mutex<HashSet<String>>>,
}

/// A job `Reviews::running` let this replica run; dropped, it is free again.
pub struct RunGuard {
    set: Arc<Mutex<HashSet<String>>>,
    job: String,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.job);
    }
}

impl Reviews {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            running: Arc::default(),
        }
    }

    /// Marks `job` as run by this replica; None when it already runs it.
    pub fn running(&self, job: &str) -> Option<RunGuard> {
        let mut set = self.running.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(job.to_string()).then(|| RunGuard {
            set: self.running.clone(),
            job: job.to_string(),
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The open (or starting, or closing) review of `scope`, if any.
    pub async fn open_for_scope(&self, scope: &str) -> Result<Option<Review>, sqlx::Error> {
        let sql =
            reviews_where!("WHERE scope = $1 AND state IN ('snapshot', 'open', 'closing') LIMIT 1");
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Review>(sql)
                .bind(scope)
                .fetch_optional(p)
                .await
        })
    }

    /// A review begins (state `snapshot`): refused when one of its scope is
    /// open (the unique index decides between replicas).
    pub async fn begin(&self, r: &NewReview<'_>, group_id: i64) -> Result<i64, StartRefused> {
        let scope = r.scope.to_string();
        let now = self.db.now_ms().await.map_err(StartRefused::Store)?;
        let inserted: Result<i64, sqlx::Error> = on_pool!(write, &self.db, |p| {
            sqlx::query_scalar(
                "INSERT INTO reviews (scope, deadline_ms, default_decision, reviewers, inactive_days, reason, started_by, started_ms, group_id, state)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'snapshot') RETURNING id",
            )
            .bind(&scope)
            .bind(r.deadline_ms)
            .bind(r.fallback.as_str())
            .bind(r.reviewers.as_str())
            .bind(i64::from(r.inactive_days))
            .bind(r.reason)
            .bind(r.started_by)
            .bind(now)
            .bind(group_id)
            .fetch_one(p)
            .await
        });
        match inserted {
            Ok(id) => Ok(id),
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                match self.open_for_scope(&scope).await {
                    Ok(Some(open)) => Err(StartRefused::AlreadyOpen(open.id)),
                    Ok(None) => Err(StartRefused::Store(e)),
                    Err(e) => Err(StartRefused::Store(e)),
                }
            }
            Err(e) => Err(StartRefused::Store(e)),
        }
    }

    /// The snapshot's progress, for the review page.
    pub async fn progress(&self, id: i64, read: i64, total: i64) -> Result<(), sqlx::Error> {
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE reviews SET users_read = $1, users_total = $2 WHERE id = $3 AND state = 'snapshot'",
            )
            .bind(read)
            .bind(total)
            .bind(id)
            .execute(p)
            .await
            .map(|_| ())
        })
    }

    /// The snapshot is taken: its items, and the review opens, in one
    /// transaction. False when the review had left `snapshot` (another
    /// replica finished it first): nothing written.
    pub async fn open_with(
        &self,
        id: i64,
        items: &[NewItem],
        users: i64,
    ) -> Result<bool, sqlx::Error> {
        on_pool!(write, &self.db, |p| {
            let mut tx = p.begin().await?;
            let opened = sqlx::query(
                "UPDATE reviews SET state = 'open', users_read = $1, users_total = $1 WHERE id = $2 AND state = 'snapshot'",
            )
            .bind(users)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if opened == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            for it in items {
                sqlx::query(
                    "INSERT INTO review_items (review_id, key_id, user_id, user_email, user_name, key_name, key_tail, level, acls, reach, expires, created, last_activity, recommendation, recommendation_reason, needs_other)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                     ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(&it.key_id)
                .bind(&it.user_id)
                .bind(&it.user_email)
                .bind(&it.user_name)
                .bind(&it.key_name)
                .bind(&it.key_tail)
                .bind(&it.level)
                .bind(&it.acls)
                .bind(&it.reach)
                .bind(&it.expires)
                .bind(&it.created)
                .bind(&it.last_activity)
                .bind(it.recommendation.as_str())
                .bind(&it.recommendation_reason)
                .bind(it.needs_other)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// No snapshot could be taken: the review failed (and frees its scope).
    pub async fn fail(&self, id: i64, error: &str) -> Result<(), sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE reviews SET state = 'failed', error = $1, finished_ms = $2 WHERE id = $3 AND state = 'snapshot'",
            )
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(p)
            .await
            .map(|_| ())
        })
    }

    pub async fn get(&self, id: i64) -> Result<Option<Review>, sqlx::Error> {
        let sql = reviews_where!("WHERE id = $1");
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Review>(sql)
                .bind(id)
                .fetch_optional(p)
                .await
        })
    }

    /// Newest first.
    pub async fn list(&self, limit: i64) -> Result<Vec<Review>, sqlx::Error> {
        let sql = reviews_where!("ORDER BY id DESC LIMIT $1");
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Review>(sql)
                .bind(limit)
                .fetch_all(p)
                .await
        })
    }

    /// Per review: (items, decided, applied), for the list.
    pub async fn counts(&self) -> Result<Vec<(i64, i64, i64, i64)>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_as(
                "SELECT review_id, COUNT(*), COUNT(decision), COUNT(outcome) FROM review_items GROUP BY review_id",
            )
            .fetch_all(p)
            .await
        })
    }

    /// Every item of a review, by user and key name.
    pub async fn items(&self, id: i64) -> Result<Vec<Item>, sqlx::Error> {
        let sql = items_where!("WHERE review_id = $1 ORDER BY user_email, key_name, key_id");
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Item>(sql).bind(id).fetch_all(p).await
        })
    }

    pub async fn item(&self, id: i64, key_id: &str) -> Result<Option<Item>, sqlx::Error> {
        let sql = items_where!("WHERE review_id = $1 AND key_id = $2");
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Item>(sql)
                .bind(id)
                .bind(key_id)
                .fetch_optional(p)
                .await
        })
    }

    /// Every decision made in a review, oldest first.
    pub async fn decisions(&self, id: i64) -> Result<Vec<DecisionRow>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, DecisionRow>(
                "SELECT id, review_id, key_id, decision, decided_by, decided_role, decided_ms, reason
                 FROM review_decisions WHERE review_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(p)
            .await
        })
    }

    /// The items of open self-review reviews whose key belongs to `email`
    /// (as the snapshot stored it: normalised, compared exactly, so two
    /// spellings `email.rs` keeps apart are never one owner), in one query.
    pub async fn owner_items(&self, email: &str) -> Result<Vec<(Review, Item)>, sqlx::Error> {
        let email = crate::email::normalize_email(email);
        let items: Vec<Item> = on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Item>(
                "SELECT i.review_id, i.key_id, i.user_id, i.user_email, i.user_name, i.key_name, i.key_tail, i.level, i.acls, i.reach, i.expires, i.created, i.last_activity, i.recommendation, i.recommendation_reason, i.needs_other, i.decision, i.decided_by, i.decided_role, i.decided_ms, i.decision_reason, i.outcome, i.applied_decision, i.applied_by, i.outcome_detail, i.upstream_status, i.applied_ms, i.attempts
                 FROM review_items i JOIN reviews r ON r.id = i.review_id
                 WHERE i.user_email = $1 AND r.state = 'open' AND r.reviewers IN ('owner', 'owner,operators')
                 ORDER BY i.review_id, i.key_name, i.key_id",
            )
            .bind(&email)
            .fetch_all(p)
            .await?
        });
        let mut out = Vec::with_capacity(items.len());
        let mut reviews: std::collections::HashMap<i64, Review> = Default::default();
        for item in items {
            if !reviews.contains_key(&item.review_id)
                && let Some(r) = self.get(item.review_id).await?
            {
                reviews.insert(r.id, r);
            }
            if let Some(r) = reviews.get(&item.review_id) {
                out.push((r.clone(), item));
            }
        }
        Ok(out)
    }

    /// Records a decision on one item of an open review: the item's
    /// decision (the last counts) and a row in the history, together.
    pub async fn decide(
        &self,
        id: i64,
        key_id: &str,
        decision: Decision,
        by: &str,
        role: &str,
        reason: Option<&str>,
    ) -> Result<Decided, sqlx::Error> {
        let now = self.db.now_ms().await?;
        // In a block of its own: its `?` ends the block, so a refusal by
        // the CHECK is told apart below.
        let done: Result<u64, sqlx::Error> = async { on_pool!(write, &self.db, |p| {
            let mut tx = p.begin().await?;
            // The review's row, locked while open: a close waits for this
            // decision (and this one for a close), so none lands after it.
            let open = sqlx::query("UPDATE reviews SET state = state WHERE id = $1 AND state = 'open'")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if open == 0 {
                tx.rollback().await?;
                return Ok(0);
            }
            let n = sqlx::query(
                "UPDATE review_items SET decision = $1, decided_by = $2, decided_role = $3, decided_ms = $4, decision_reason = $5
                 WHERE review_id = $6 AND key_id = $7",
            )
            .bind(decision.as_str())
            .bind(by)
            .bind(role)
            .bind(now)
            .bind(reason)
            .bind(id)
            .bind(key_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                sqlx::query(
                    "INSERT INTO review_decisions (review_id, key_id, decision, decided_by, decided_role, decided_ms, reason)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(id)
                .bind(key_id)
                .bind(decision.as_str())
                .bind(by)
                .bind(role)
                .bind(now)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(n)
        }) }
        .await;
        match done {
            Ok(1) => Ok(Decided::Recorded),
            Ok(_) => match self.item(id, key_id).await? {
                None => Ok(Decided::NoItem),
                Some(_) => Ok(Decided::NotOpen),
            },
            Err(e) if refused_owner_keep(&e) => Ok(Decided::OwnerMayNotKeep),
            Err(e) => Err(e),
        }
    }

    /// Ends an open review (`by`: an operator, or `DEADLINE`): true for the
    /// one caller that moved it to `closing`.
    pub async fn close(&self, id: i64, by: &str) -> Result<bool, sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| {
            Ok(sqlx::query(
                "UPDATE reviews SET state = 'closing', closed_by = $1, closed_ms = $2 WHERE id = $3 AND state = 'open'",
            )
            .bind(by)
            .bind(now)
            .bind(id)
            .execute(p)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// Open reviews whose deadline has passed.
    pub async fn due(&self) -> Result<Vec<Review>, sqlx::Error> {
        let now = self.db.clock_ms("look").await?;
        let sql = reviews_where!("WHERE state = 'open' AND deadline_ms <= $1 ORDER BY id LIMIT 20");
        on_pool!(look, &self.db, |p| {
            sqlx::query_as::<_, Review>(sql)
                .bind(now)
                .fetch_all(p)
                .await
        })
    }

    /// Reviews in `state` (snapshot or closing) whose job nobody holds: no
    /// lease, or one that lapsed (its replica stopped).
    pub async fn unheld(&self, state: &str) -> Result<Vec<Review>, sqlx::Error> {
        let now = self.db.clock_ms("look").await?;
        let prefix = if state == "snapshot" {
            "review-snapshot:"
        } else {
            "review:"
        };
        let sql =
            "SELECT r.id, r.scope, r.deadline_ms, r.default_decision, r.reviewers, r.inactive_days, r.reason, r.started_by, r.started_ms, r.group_id, r.state, r.users_total, r.users_read, r.error, r.closed_by, r.closed_ms, r.finished_ms
             FROM reviews r LEFT JOIN job_leases l ON l.job = $1 || r.id
             WHERE r.state = $2 AND (l.job IS NULL OR l.expires_ms < $3) ORDER BY r.id LIMIT 20";
        on_pool!(look, &self.db, |p| {
            sqlx::query_as::<_, Review>(sql)
                .bind(prefix)
                .bind(state)
                .bind(now)
                .fetch_all(p)
                .await
        })
    }

    /// The items of a review not applied yet.
    pub async fn unapplied(&self, id: i64) -> Result<Vec<Item>, sqlx::Error> {
        let sql = items_where!("WHERE review_id = $1 AND outcome IS NULL ORDER BY user_id, key_id");
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Item>(sql).bind(id).fetch_all(p).await
        })
    }

    /// One item applied: false when it already was (by another replica).
    pub async fn applied(
        &self,
        id: i64,
        key_id: &str,
        a: Applied<'_>,
    ) -> Result<bool, sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| {
            Ok(sqlx::query(
                "UPDATE review_items SET outcome = $1, applied_decision = $2, applied_by = $3, outcome_detail = $4, upstream_status = $5, applied_ms = $6, attempts = attempts + 1
                 WHERE review_id = $7 AND key_id = $8 AND outcome IS NULL",
            )
            .bind(a.outcome)
            .bind(a.decision.as_str())
            .bind(a.by)
            .bind(a.detail)
            .bind(a.upstream_status.map(i64::from))
            .bind(now)
            .bind(id)
            .bind(key_id)
            .execute(p)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// A revoke is about to be sent: marked on the item, so a run cut short
    /// after Vultr carried it out settles it as revoked, not as gone.
    pub async fn mark_applying(&self, id: i64, key_id: &str, by: &str) -> Result<(), sqlx::Error> {
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE review_items SET applied_decision = 'revoke', applied_by = $1
                 WHERE review_id = $2 AND key_id = $3 AND outcome IS NULL",
            )
            .bind(by)
            .bind(id)
            .bind(key_id)
            .execute(p)
            .await
            .map(|_| ())
        })
    }

    /// An attempt that failed and will be tried again: counted, with why.
    pub async fn attempt_failed(
        &self,
        id: i64,
        key_id: &str,
        why: &str,
    ) -> Result<i64, sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| {
            sqlx::query_scalar(
                "UPDATE review_items SET attempts = attempts + 1, outcome_detail = $1, applied_ms = $4
                 WHERE review_id = $2 AND key_id = $3 AND outcome IS NULL RETURNING attempts",
            )
            .bind(why)
            .bind(id)
            .bind(key_id)
            .bind(now)
            .fetch_optional(p)
            .await
            .map(|n: Option<i64>| n.unwrap_or(0))
        })
    }

    /// Every item applied: the review is closed. True for the one caller
    /// that closed it.
    pub async fn finish(&self, id: i64) -> Result<bool, sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| {
            Ok(sqlx::query(
                "UPDATE reviews SET state = 'closed', finished_ms = $1 WHERE id = $2 AND state = 'closing'
                   AND NOT EXISTS (SELECT 1 FROM review_items WHERE review_id = $2 AND outcome IS NULL)",
            )
            .bind(now)
            .bind(id)
            .execute(p)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// Items whose revocation's outcome is unknown, of closed reviews, for
    /// the sweep that reconciles them from the key list.
    pub async fn unknown_items(&self) -> Result<Vec<Item>, sqlx::Error> {
        let sql =
            "SELECT i.review_id, i.key_id, i.user_id, i.user_email, i.user_name, i.key_name, i.key_tail, i.level, i.acls, i.reach, i.expires, i.created, i.last_activity, i.recommendation, i.recommendation_reason, i.needs_other, i.decision, i.decided_by, i.decided_role, i.decided_ms, i.decision_reason, i.outcome, i.applied_decision, i.applied_by, i.outcome_detail, i.upstream_status, i.applied_ms, i.attempts
             FROM review_items i JOIN reviews r ON r.id = i.review_id
             WHERE i.outcome = 'unknown' AND r.state = 'closed' ORDER BY i.attempts, i.review_id, i.user_id LIMIT 50";
        on_pool!(look, &self.db, |p| {
            sqlx::query_as::<_, Item>(sql).fetch_all(p).await
        })
    }

    /// One more look at an unknown outcome that settled nothing: counted,
    /// so the sweep moves on to others and gives up after a few.
    pub async fn reconcile_attempt(
        &self,
        id: i64,
        key_id: &str,
        why: &str,
    ) -> Result<i64, sqlx::Error> {
        on_pool!(write, &self.db, |p| {
            sqlx::query_scalar(
                "UPDATE review_items SET attempts = attempts + 1, outcome_detail = $1
                 WHERE review_id = $2 AND key_id = $3 AND outcome = 'unknown' RETURNING attempts",
            )
            .bind(why)
            .bind(id)
            .bind(key_id)
            .fetch_optional(p)
            .await
            .map(|n: Option<i64>| n.unwrap_or(0))
        })
    }

    /// An unknown outcome reconciled (revoked, or failed): false when
    /// another replica did it first.
    pub async fn reconciled(
        &self,
        id: i64,
        key_id: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<bool, sqlx::Error> {
        on_pool!(write, &self.db, |p| {
            Ok(sqlx::query(
                "UPDATE review_items SET outcome = $1, outcome_detail = $2
                 WHERE review_id = $3 AND key_id = $4 AND outcome = 'unknown'",
            )
            .bind(outcome)
            .bind(detail)
            .bind(id)
            .bind(key_id)
            .execute(p)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// When the newest review of `scope` started, if any (the schedule).
    pub async fn last_started(&self, scope: &str) -> Result<Option<i64>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_scalar(
                "SELECT MAX(started_ms) FROM reviews WHERE scope = $1 AND state <> 'failed'",
            )
            .bind(scope)
            .fetch_one(p)
            .await
        })
    }

    /// When a review of `scope` last failed to start, if any (the schedule
    /// waits before trying again).
    pub async fn last_failed(&self, scope: &str) -> Result<Option<i64>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_scalar(
                "SELECT MAX(started_ms) FROM reviews WHERE scope = $1 AND state = 'failed'",
            )
            .bind(scope)
            .fetch_one(p)
            .await
        })
    }

    /// Claims the right to send one notice: true for the one replica that
    /// wrote its row (the row is written before sending).
    pub async fn claim_notice(
        &self,
        id: i64,
        kind: &str,
        recipient: &str,
    ) -> Result<bool, sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| {
            Ok(sqlx::query(
                "INSERT INTO review_notices (review_id, kind, recipient, state, sent_ms) VALUES ($1, $2, $3, 'sending', $4)
                 ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(kind)
            .bind(recipient)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// How a claimed notice went.
    pub async fn notice_done(
        &self,
        id: i64,
        kind: &str,
        recipient: &str,
        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE review_notices SET state = $1, error = $2 WHERE review_id = $3 AND kind = $4 AND recipient = $5",
            )
            .bind(if error.is_some() { "failed" } else { "sent" })
            .bind(error)
            .bind(id)
            .bind(kind)
            .bind(recipient)
            .execute(p)
            .await
            .map(|_| ())
        })
    }

    /// The notices of a review: (kind, recipient, state).
    pub async fn notices(&self, id: i64) -> Result<Vec<(String, String, String)>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_as(
                "SELECT kind, recipient, state FROM review_notices WHERE review_id = $1 ORDER BY kind, recipient",
            )
            .bind(id)
            .fetch_all(p)
            .await
        })
    }
}
