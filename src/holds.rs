//! Offboarding holds. An offboarded user stays out: while their hold stands,
//! the one audited write refuses anything that would give them a key or
//! switch their API access on (`write::Claimed`), whatever page asks. Only
//! an operator's reinstatement lifts it.

use crate::db::Db;
use crate::on_pool;

/// A standing hold on a Vultr user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Hold {
    pub user_id: String,
    pub user_email: Option<String>,
    pub placed_by: String,
    pub placed_ms: i64,
    pub reason: Option<String>,
    /// The offboarding's audit group.
    pub group_id: Option<i64>,
}

impl Hold {
    pub fn placed_display(&self) -> String {
        crate::timefmt::display_ms(self.placed_ms)
    }

    /// The refusal in words, for the 409 page.
    pub fn refusal(&self) -> String {
        format!(
            "This user was offboarded by {} on {}; reinstate first. Nothing was sent to Vultr.",
            self.placed_by,
            self.placed_display()
        )
    }
}

/// Whether the database refused a write because its user is held (the
/// `audit_refuses_held` trigger, on both engines).
pub fn refused_by_database(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.message().contains("keydesk hold:"))
}

/// The hold on a user (`$1`), if any.
pub const HOLD_SQL: &str = "SELECT user_id, user_email, placed_by, placed_ms, reason, group_id FROM holds WHERE user_id = $1";

#[derive(Clone, Debug)]
pub struct Holds {
    db: Db,
}

impl Holds {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Places (or renews) the hold on `user_id`.
    pub async fn place(
        &self,
        user_id: &str,
        user_email: Option<&str>,
        by: &str,
        reason: Option<&str>,
        group_id: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "INSERT INTO holds (user_id, user_email, placed_by, placed_ms, reason, group_id)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (user_id) DO UPDATE SET user_email = COALESCE(excluded.user_email, holds.user_email),
                    placed_by = excluded.placed_by, placed_ms = excluded.placed_ms,
                    reason = excluded.reason, group_id = excluded.group_id",
            )
            .bind(user_id)
            .bind(user_email)
            .bind(by)
            .bind(now)
            .bind(reason)
            .bind(group_id)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    pub async fn get(&self, user_id: &str) -> Result<Option<Hold>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Hold>(HOLD_SQL)
                .bind(user_id)
                .fetch_optional(p)
                .await
        })
    }

    /// Every held user id (lower-case, as stored): an access review's
    /// snapshot recommends revoking their keys.
    pub async fn held_ids(&self) -> Result<std::collections::HashSet<String>, sqlx::Error> {
        let ids: Vec<String> = on_pool!(read, &self.db, |p| {
            sqlx::query_scalar("SELECT user_id FROM holds")
                .fetch_all(p)
                .await?
        });
        Ok(ids.into_iter().collect())
    }

    /// Lifts the hold. Whether there was one.
    pub async fn lift(&self, user_id: &str) -> Result<bool, sqlx::Error> {
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query("DELETE FROM holds WHERE user_id = $1")
                .bind(user_id)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }
}
