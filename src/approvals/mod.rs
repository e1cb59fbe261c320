//! Two-person approval requests. An action that needs a second person is
//! stored here instead of done: the action, its target and parameters (never
//! a secret), who asked and why it waits. Every move is one conditional
//! update: a decision is final, a request is executed at most once, and the
//! database itself refuses a requester deciding their own request.

use rand::RngCore;

use crate::db::Db;
use crate::on_pool;

mod kinds;
mod sweep;

pub use kinds::{ApprovalAction, ApprovalState};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Approval {
    pub id: String,
    #[sqlx(try_from = "String")]
    pub action: ApprovalAction,
    pub user_id: String,
    pub user_email: Option<String>,
    /// The key a rotation replaces.
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub expire: bool,
    pub date_expire: Option<String>,
    pub reason: Option<String>,
    pub why: String,
    pub requested_by: String,
    pub requested_ms: i64,
    pub expires_ms: i64,
    #[sqlx(try_from = "String")]
    pub state: ApprovalState,
    pub decided_by: Option<String>,
    pub decided_ms: Option<i64>,
    pub comment: Option<String>,
    pub executed_ms: Option<i64>,
    /// What the execution made: a key id or a grant id.
    pub result_id: Option<String>,
    /// The allowlist entry (CIDR) an `AllowlistAdd` request adds.
    pub subnet: Option<String>,
    /// What the rules were decided on when it was made.
    #[sqlx(flatten)]
    pub decided_columns: crate::powers::DecidedColumns,
}

impl Approval {
    /// `base`, about this request: its target, key name, requester and id.
    pub fn about(&self, base: crate::audit::Intent) -> crate::audit::Intent {
        crate::audit::Intent {
            target_user_id: Some(self.user_id.clone()),
            target_user_email: self.user_email.clone(),
            key_name: self.key_name.clone(),
            requested_by: Some(self.requested_by.clone()),
            approval_id: Some(self.id.clone()),
            ..base
        }
    }

    /// What the request was decided on: what an approver approves.
    pub fn decided(&self) -> Option<crate::powers::Decided> {
        self.decided_columns.decided()
    }

    pub fn is_requester(&self, email: &str) -> bool {
        crate::email::same_email(&self.requested_by, email)
    }
    /// Whether the key or access would reach `email` (the Vultr user's email
    /// when the request was made).
    pub fn is_recipient(&self, email: &str) -> bool {
        self.user_email
            .as_deref()
            .is_some_and(|u| crate::email::same_email(u, email))
    }
    pub fn requested_display(&self) -> String {
        crate::timefmt::display_ms(self.requested_ms)
    }
    pub fn expires_display(&self) -> String {
        crate::timefmt::display_ms(self.expires_ms)
    }
    pub fn decided_display(&self) -> String {
        self.decided_ms
            .map(crate::timefmt::display_ms)
            .unwrap_or_else(|| "—".into())
    }
    /// The key's expiry in words.
    pub fn expiry_words(&self) -> String {
        match (&self.action, &self.date_expire) {
            (ApprovalAction::ApiAccessOn | ApprovalAction::Reinstate, _) => "—".into(),
            (_, Some(d)) => d.get(..10).unwrap_or(d).to_string(),
            (_, None) => "never".into(),
        }
    }
}

/// What a requester asks for.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub action: ApprovalAction,
    pub user_id: String,
    pub user_email: Option<String>,
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub expire: bool,
    pub date_expire: Option<String>,
    pub reason: Option<String>,
    pub why: String,
    pub requested_by: String,
    /// The allowlist entry (CIDR) an `AllowlistAdd` request would add.
    pub subnet: Option<String>,
    /// The user's facts the rules were decided on, read when it was asked.
    pub decided: Option<crate::powers::Decided>,
}

macro_rules! select_approvals {
    ($rest:literal) => {
        concat!(
            "SELECT id, action, user_id, user_email, key_id, key_name, expire, date_expire, reason, why, requested_by, requested_ms, expires_ms, state, decided_by, decided_ms, comment, executed_ms, result_id, subnet, decided_level, decided_acls, decided_anywhere, decided_allowlist FROM approvals ",
            $rest
        )
    };
}

/// An interrupted execution (`$1`): done, outcome unknown, never run again.
const INTERRUPTED_SQL: &str = "UPDATE approvals SET state = 'done', comment = COALESCE(comment, '') || ' [execution interrupted: outcome unknown]'
                   WHERE id = $1 AND state = 'executing'";

#[derive(Clone, Debug)]
pub struct Approvals {
    db: Db,
    ttl_ms: i64,
}

/// A fresh request id: 128 random bits, hex.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` could be a request id (checked before any lookup).
pub fn plausible_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Approvals {
    pub fn new(db: Db, ttl: std::time::Duration) -> Self {
        Self {
            db,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Stores a request under `id` (from `new_id`, so the audit can name it first).
    pub async fn create(&self, id: &str, a: &NewApproval) -> Result<Approval, sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "INSERT INTO approvals (id, action, user_id, user_email, key_id, key_name, expire, date_expire, reason, why, requested_by, requested_ms, expires_ms, state, subnet, decided_level, decided_acls, decided_anywhere, decided_allowlist)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'pending', $14, $15, $16, $17, $18)",
            )
            .bind(id)
            .bind(a.action.as_str())
            .bind(&a.user_id)
            // Stored normalised: the CHECK and the decide guard compare like with like.
            .bind(a.user_email.as_deref().map(crate::email::normalize_email))
            .bind(&a.key_id)
            .bind(&a.key_name)
            .bind(a.expire)
            .bind(&a.date_expire)
            .bind(&a.reason)
            .bind(&a.why)
            .bind(crate::email::normalize_email(&a.requested_by))
            .bind(now)
            .bind(now.saturating_add(self.ttl_ms))
            .bind(&a.subnet)
            .bind(a.decided.as_ref().map(|d| d.level.as_str()))
            .bind(a.decided.as_ref().map(crate::powers::Decided::acl_line))
            .bind(a.decided.as_ref().map(|d| d.anywhere))
            .bind(a.decided.as_ref().map(|d| d.allowlist.clone()))
            .execute(p)
            .await?
            .rows_affected()
        });
        self.get(id).await?.ok_or(sqlx::Error::RowNotFound)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Approval>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Approval>(select_approvals!("WHERE id = $1"))
                .bind(id)
                .fetch_optional(p)
                .await
        })
    }

    /// Newest first, optionally in one state.
    pub async fn list(
        &self,
        state: Option<ApprovalState>,
        limit: i64,
    ) -> Result<Vec<Approval>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            let mut q = sqlx::QueryBuilder::new(select_approvals!("WHERE 1 = 1"));
            if let Some(s) = state {
                q.push(" AND state = ").push_bind(s.as_str());
            }
            q.push(" ORDER BY requested_ms DESC LIMIT ")
                .push_bind(limit);
            q.build_query_as::<Approval>().fetch_all(p).await
        })
    }

    /// The requests about one Vultr user, newest first.
    pub async fn for_user(&self, user_id: &str) -> Result<Vec<Approval>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Approval>(select_approvals!(
                "WHERE user_id = $1 ORDER BY requested_ms DESC LIMIT 50"
            ))
            .bind(user_id)
            .fetch_all(p)
            .await
        })
    }

    /// The final decision: pending and unexpired → approved or denied, by
    /// someone other than the requester. Whether this call decided it.
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        comment: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let to = if approve { "approved" } else { "denied" };
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE approvals SET state = $1, decided_by = $2, decided_ms = $3, comment = $4
                 WHERE id = $5 AND state = 'pending' AND expires_ms > $3 AND lower(requested_by) <> lower($2)
                   AND lower(trim(COALESCE(user_email, ''))) <> lower($2)",
            )
            .bind(to)
            .bind(by)
            .bind(now)
            .bind(comment)
            .bind(id)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// The one conditional start of an execution: approved, unexpired, by
    /// the requester → executing. Whether this call won it.
    pub async fn begin_execute(&self, id: &str, by: &str) -> Result<bool, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE approvals SET state = 'executing', executed_ms = $1
                 WHERE id = $2 AND state = 'approved' AND expires_ms > $1 AND lower(requested_by) = lower($3)",
            )
            .bind(now)
            .bind(id)
            .bind(by)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Executed (or its outcome unknown: never again): executing → done.
    pub async fn done(&self, id: &str, result_id: Option<&str>) -> Result<bool, sqlx::Error> {
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE approvals SET state = 'done', result_id = $1 WHERE id = $2 AND state = 'executing'",
            )
            .bind(result_id)
            .bind(id)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// The requester takes back a pending or approved request.
    pub async fn withdraw(&self, id: &str, by: &str) -> Result<bool, sqlx::Error> {
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE approvals SET state = 'withdrawn' WHERE id = $1 AND state IN ('pending', 'approved') AND lower(requested_by) = lower($2)",
            )
            .bind(id)
            .bind(by)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Offboarding: every pending or approved request that targets `user_id`
    /// becomes withdrawn, whoever asked; returns them (as they were).
    pub async fn withdraw_for_user(&self, user_id: &str) -> Result<Vec<Approval>, sqlx::Error> {
        let open: Vec<Approval> = on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Approval>(select_approvals!(
                "WHERE user_id = $1 AND state IN ('pending', 'approved')"
            ))
            .bind(user_id)
            .fetch_all(p)
            .await?
        });
        let sql = "UPDATE approvals SET state = 'withdrawn' WHERE id = $1 AND state IN ('pending', 'approved')";
        self.each_moved(open, sql).await
    }

    /// Runs `sql` (one conditional update of the row `$1`) for each of
    /// `rows`; returns the rows it moved (another replica may move some first).
    async fn each_moved(
        &self,
        rows: Vec<Approval>,
        sql: &'static str,
    ) -> Result<Vec<Approval>, sqlx::Error> {
        let mut out = vec![];
        for a in rows {
            // An interrupted execution of a kind only a newer release knows
            // is left to that release, which can audit it.
            if sql == INTERRUPTED_SQL && a.action == ApprovalAction::Newer {
                continue;
            }
            if self.moved(&a.id, sql).await? {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Runs `sql`, a conditional update of the row `$1`: whether it moved.
    async fn moved(&self, id: &str, sql: &'static str) -> Result<bool, sqlx::Error> {
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query(sql).bind(id).execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// The approval no longer covers what it would do (the recipient
    /// changed): executing → withdrawn, never to be carried out.
    pub async fn void(&self, id: &str) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE approvals SET state = 'withdrawn' WHERE id = $1 AND state = 'executing'";
        self.moved(id, sql).await
    }

    /// Executions that started longer than `bound` ago and never finished
    /// (the process stopped, the request was dropped): executing → done,
    /// outcome unknown; returns them.
    pub async fn abandon_stale_executions(
        &self,
        bound: std::time::Duration,
    ) -> Result<Vec<Approval>, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let cutoff = now - i64::try_from(bound.as_millis()).unwrap_or(i64::MAX);
        let stale: Vec<Approval> = on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Approval>(select_approvals!(
                "WHERE state = 'executing' AND COALESCE(executed_ms, 0) < $1"
            ))
            .bind(cutoff)
            .fetch_all(p)
            .await?
        });
        self.each_moved(stale, INTERRUPTED_SQL).await
    }

    /// Executions whose replica stopped: the lease it took when the
    /// execution began (`approval:{id}`, see `leases`) lapsed, long before
    /// the bound. One look of the job loop; returns them, moved as above.
    pub async fn abandon_lapsed_executions(&self) -> Result<Vec<Approval>, sqlx::Error> {
        let now = self.db.clock_ms("look").await?;
        let lapsed: Vec<Approval> = on_pool!(look, &self.db, |p| {
            sqlx::query_as::<_, Approval>(select_approvals!(
                "WHERE state = 'executing' AND EXISTS (SELECT 1 FROM job_leases l
                   WHERE l.job = 'approval:' || approvals.id
                     AND l.acquired_ms >= approvals.executed_ms AND l.expires_ms < $1)"
            ))
            .bind(now)
            .fetch_all(p)
            .await?
        });
        self.each_moved(lapsed, INTERRUPTED_SQL).await
    }

    /// Nothing happened upstream: executing → approved, to try again.
    pub async fn reopen(&self, id: &str) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE approvals SET state = 'approved', executed_ms = NULL WHERE id = $1 AND state = 'executing'";
        self.moved(id, sql).await
    }

    /// Pending or approved requests past their time become expired; returns them.
    pub async fn expire_due(&self) -> Result<Vec<Approval>, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let due: Vec<String> = on_pool!(read, &self.db, |p| {
            sqlx::query_scalar(
                "SELECT id FROM approvals WHERE state IN ('pending', 'approved') AND expires_ms <= $1",
            )
            .bind(now)
            .fetch_all(p)
            .await?
        });
        let mut out = vec![];
        for id in due {
            let n = on_pool!(write, &self.db, |p| {
                sqlx::query(
                    "UPDATE approvals SET state = 'expired' WHERE id = $1 AND state IN ('pending', 'approved') AND expires_ms <= $2",
                )
                .bind(&id)
                .bind(now)
                .execute(p)
                .await?
                .rows_affected()
            });
            if n == 1
                && let Some(a) = self.get(&id).await?
            {
                out.push(a);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in ApprovalState::ALL {
            assert_eq!(ApprovalState::try_from(s.as_str().to_string()), Ok(s));
        }
        for a in ApprovalAction::ALL {
            assert_eq!(ApprovalAction::try_from(a.as_str().to_string()), Ok(a));
        }
        assert!(plausible_id(&new_id()));
        assert!(!plausible_id("x"));
    }
}
