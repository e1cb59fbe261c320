//! Access reviews, the store: each review, its items (one per key in scope
//! when it started), every decision ever made, and the reminders sent.
//! States move by conditional updates only, so two replicas never both
//! close a review, both apply an item, or both send a reminder. The
//! database refuses an owner's own "keep" on a root-equivalent key or one
//! usable from anywhere (a CHECK), as it refuses self-approval.
//!
//! Reading Vultr (the snapshot, applying) is in `pages/reviews/`; a store
//! never reads Vultr.

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

#[derive(Clone, Debug)]
pub struct Reviews {
    db: Db,
    /// The review jobs this replica runs now. A lease lets its holder take
    /// it again (a look that finds it lapsed while its own task still runs):
    /// this keeps a second task of the same replica out.
    running: Arc<Mutex<HashSet<String>>>,
}

mod jobs;
pub mod rules;
mod store;
mod types;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::db::Db;

pub use rules::{Decision, Facts, Fallback, Reviewers, Scope, Term};
pub use types::{
    Applied, Decided, DecisionRow, Item, NewItem, NewReview, Review, StartRefused, outcome_words,
};

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
}
