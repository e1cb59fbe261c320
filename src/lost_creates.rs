//! Creates whose answer was lost. A create answered by a gateway's 5xx, a
//! timeout or an unreadable 2xx may have made a key: its form is spent (see
//! `write`) and it is recorded here, with the ids of the user's keys as
//! keydesk read them just before the create. `reconcile::lost` settles it
//! from the user's key list; this store only stores:
//! - `created`: a key with the name appeared while the answer was lost;
//! - `not_created`: none once the bound has passed;
//! - still `open` with `candidates`: ambiguous, more than one such key.
//!
//! Unknown is never treated as failed before that.

use std::collections::HashSet;

use crate::db::Db;
use crate::on_pool;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LostCreate {
    /// The create's own audit entry (settled unknown).
    pub audit_id: i64,
    pub user_id: String,
    pub key_name: String,
    pub started_ms: i64,
    /// The user's key ids just before the create (JSON), if they were read.
    pub keys_before: Option<String>,
    /// Set when ambiguous: the keys that may be its (JSON).
    pub candidates: Option<String>,
}

/// A user's lost create, for the user page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LostRow {
    pub audit_id: i64,
    pub key_name: String,
    pub state: String,
    pub key_id: Option<String>,
    pub candidates: Option<String>,
}

impl LostRow {
    /// Open with nobody deciding yet (neither settled nor ambiguous).
    pub fn unsettled(&self) -> bool {
        self.state == "open" && self.candidates.is_none()
    }
}

/// A user's (`$1`) lost creates still open or settled as made.
pub const VIEW_SQL: &str = "SELECT audit_id, key_name, state, key_id, candidates FROM lost_creates WHERE user_id = $1 AND state IN ('open', 'created') ORDER BY audit_id";

#[derive(Clone, Debug)]
pub struct LostCreates {
    db: Db,
}

impl LostCreates {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Records a create of `key_name` for `user_id` whose outcome is
    /// unknown, started at `started_ms` (now if unknown), with the user's
    /// key ids read just before it (`keys_before`, JSON), if read.
    pub async fn record(
        &self,
        audit_id: i64,
        user_id: &str,
        key_name: &str,
        started_ms: Option<i64>,
        keys_before: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let started = match started_ms {
            Some(t) => t,
            None => self.db.now_ms().await?,
        };
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "INSERT INTO lost_creates (audit_id, user_id, key_name, started_ms, state, keys_before) VALUES ($1, $2, $3, $4, 'open', $5)",
            )
            .bind(audit_id)
            .bind(user_id)
            .bind(key_name)
            .bind(started)
            .bind(keys_before)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The user's lost creates still open (ambiguous ones included).
    pub async fn open_for_user(&self, user_id: &str) -> Result<Vec<LostCreate>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, LostCreate>(
                "SELECT audit_id, user_id, key_name, started_ms, keys_before, candidates FROM lost_creates WHERE user_id = $1 AND state = 'open' ORDER BY audit_id",
            )
            .bind(user_id)
            .fetch_all(p)
            .await
        })
    }

    /// `VIEW_SQL` on its own.
    pub async fn view_rows(&self, user_id: &str) -> Result<Vec<LostRow>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, LostRow>(VIEW_SQL)
                .bind(user_id)
                .fetch_all(p)
                .await
        })
    }

    /// Ids of the user's keys that appeared while a create's answer was lost.
    pub async fn appeared(&self, user_id: &str) -> Result<HashSet<String>, sqlx::Error> {
        let ids: Vec<String> = on_pool!(read, &self.db, |p| {
            sqlx::query_scalar(
                "SELECT key_id FROM lost_creates WHERE user_id = $1 AND state = 'created' AND key_id IS NOT NULL",
            )
            .bind(user_id)
            .fetch_all(p)
            .await?
        });
        Ok(ids.into_iter().collect())
    }

    /// Settles an open entry: created (`key_id`) or not. Whether this call
    /// moved it (another replica may have).
    pub async fn settle(&self, audit_id: i64, key_id: Option<&str>) -> Result<bool, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let state = if key_id.is_some() {
            "created"
        } else {
            "not_created"
        };
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE lost_creates SET state = $1, key_id = $2, settled_ms = $3 WHERE audit_id = $4 AND state = 'open' AND candidates IS NULL",
            )
            .bind(state)
            .bind(key_id)
            .bind(now)
            .bind(audit_id)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Leaves an open entry open as ambiguous, with the keys that may be its
    /// (`candidates`, JSON). Once: whether this call marked it.
    pub async fn ambiguous(&self, audit_id: i64, candidates: &str) -> Result<bool, sqlx::Error> {
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE lost_creates SET candidates = $1 WHERE audit_id = $2 AND state = 'open' AND candidates IS NULL",
            )
            .bind(candidates)
            .bind(audit_id)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Up to `limit` users with a lost create nobody has settled or found
    /// ambiguous (an ambiguous one waits for a person, not for the sweep).
    pub async fn unsettled_users(&self, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_scalar(
                "SELECT DISTINCT user_id FROM lost_creates WHERE state = 'open' AND candidates IS NULL ORDER BY user_id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(p)
            .await
        })
    }
}
