//! What the reviews store holds and hands out: a review, its items, the
//! decisions, and the shapes of what is written.

use super::{Decision, Fallback, Reviewers, Scope};

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
pub(super) fn refused_owner_keep(e: &sqlx::Error) -> bool {
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

/// An item's outcome in words, for pages and notices.
pub fn outcome_words(outcome: &str) -> &'static str {
    match outcome {
        "kept" => "kept",
        "revoked" => "revoked",
        "gone" => "already gone",
        "offboarded" => "left to the offboarding",
        "unknown" => "outcome unknown (reconciled later)",
        "failed" => "failed",
        _ => "not applied yet",
    }
}
