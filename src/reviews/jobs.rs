//! The reviews store for the durable jobs: closing, applying each item
//! once, reconciling unknown outcomes, the schedule's look, and the notices
//! sent once across replicas.

use super::*;
use crate::on_pool;

impl Reviews {
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
