//! The reviews store: starting a review, its snapshot, reading it, and
//! the decisions (by conditional updates, in one transaction each).

use super::types::refused_owner_keep;
use super::*;
use crate::on_pool;

impl Reviews {
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
}
