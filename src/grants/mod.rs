//! Claim links ("grants"): an operator approves a key for a Vultr user, and
//! the key is created only when that user, signed in as themselves, claims
//! it. Nothing secret is ever stored: a grant holds what the key will be,
//! never a key. Every state change is one conditional update, so a second or
//! concurrent claim (from any replica) acts on nothing.

use rand::RngCore;

use crate::db::Db;
use crate::on_pool;

mod state;
mod sweep;

pub use state::GrantState;

/// One grant, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Grant {
    pub id: String,
    pub user_id: String,
    /// The owner: the Vultr user's email when the grant was made.
    pub user_email: String,
    pub key_name: String,
    /// `YYYY-MM-DDT00:00:00Z`, or none for a key that never expires.
    pub date_expire: Option<String>,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_ms: i64,
    /// The link stops working at this time (database clock).
    pub expires_ms: i64,
    #[sqlx(try_from = "String")]
    pub state: GrantState,
    pub claimed_by: Option<String>,
    pub claim_ms: Option<i64>,
    pub key_id: Option<String>,
    pub ended_by: Option<String>,
    pub ended_ms: Option<i64>,
    /// What the rules were decided on when it was made.
    #[sqlx(flatten)]
    pub decided_columns: crate::powers::DecidedColumns,
    /// The user's key ids just before the last claim's create (JSON).
    pub keys_before: Option<String>,
    /// Set when a lost claim is ambiguous: the keys that may be its (JSON).
    pub candidates: Option<String>,
}

impl Grant {
    /// Whether `email` is the grant's owner (emails compare case-insensitively).
    pub fn is_owner(&self, email: &str) -> bool {
        crate::email::same_email(&self.user_email, email)
    }

    /// What the link was decided on; `None` for a link made before
    /// keydesk kept it.
    pub fn decided(&self) -> Option<crate::powers::Decided> {
        self.decided_columns.decided()
    }

    /// The tag put into the created key's name, so a claim whose answer was
    /// lost can be found in the user's key list.
    pub fn tag(&self) -> String {
        format!("[claim {}]", &self.id[..8.min(self.id.len())])
    }

    /// The name the key gets at Vultr: the granted name and the tag.
    pub fn vultr_key_name(&self) -> String {
        format!("{} {}", self.key_name, self.tag())
    }

    pub fn created_display(&self) -> String {
        crate::timefmt::display_ms(self.created_ms)
    }

    pub fn expires_display(&self) -> String {
        crate::timefmt::display_ms(self.expires_ms)
    }

    /// The key's expiry in words: the date, or "never".
    pub fn key_expiry_display(&self) -> String {
        match &self.date_expire {
            Some(d) => d.get(..10).unwrap_or(d).to_string(),
            None => "never".to_string(),
        }
    }
}

/// What an operator grants.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub user_id: String,
    pub user_email: String,
    pub key_name: String,
    pub date_expire: Option<String>,
    pub reason: Option<String>,
    pub created_by: String,
    /// The user's facts the rules were decided on, read when it was made.
    pub decided: crate::powers::Decided,
}

/// A fresh grant id: 160 random bits from the OS-seeded CSPRNG, hex.
fn new_id() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` could be a grant id (checked before any database lookup).
pub fn plausible_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `SELECT <every column> FROM grants` and the rest of the query.
macro_rules! select_grants {
    ($rest:literal) => {
        concat!(
            "SELECT id, user_id, user_email, key_name, date_expire, reason, created_by, created_ms, expires_ms, state, claimed_by, claim_ms, key_id, ended_by, ended_ms, decided_level, decided_acls, decided_anywhere, decided_allowlist, keys_before, candidates FROM grants ",
            $rest
        )
    };
}

/// A user's (`$1`) claim links not yet used, newest first.
pub const OPEN_FOR_USER_SQL: &str = select_grants!(
    "WHERE user_id = $1 AND state IN ('pending', 'claiming', 'unknown') ORDER BY created_ms DESC LIMIT 50"
);

/// The grants, in the database.
#[derive(Clone, Debug)]
pub struct Grants {
    db: Db,
    ttl_ms: i64,
}

impl Grants {
    /// Grants whose links work for `ttl`.
    pub fn new(db: Db, ttl: std::time::Duration) -> Self {
        Self {
            db,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The database clock, in milliseconds.
    pub async fn now_ms(&self) -> Result<i64, sqlx::Error> {
        self.db.now_ms().await
    }

    pub async fn create(&self, g: &NewGrant) -> Result<Grant, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let id = new_id();
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "INSERT INTO grants (id, user_id, user_email, key_name, date_expire, reason, created_by, created_ms, expires_ms, state, decided_level, decided_acls, decided_anywhere, decided_allowlist)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $12, $13)",
            )
            .bind(&id)
            .bind(&g.user_id)
            .bind(crate::email::normalize_email(&g.user_email))
            .bind(&g.key_name)
            .bind(&g.date_expire)
            .bind(&g.reason)
            .bind(&g.created_by)
            .bind(now)
            .bind(now.saturating_add(self.ttl_ms))
            .bind(g.decided.level.as_str())
            .bind(g.decided.acl_line())
            .bind(g.decided.anywhere)
            .bind(&g.decided.allowlist)
            .execute(p)
            .await?
            .rows_affected()
        });
        self.get(&id).await?.ok_or_else(|| sqlx::Error::RowNotFound)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Grant>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Grant>(select_grants!("WHERE id = $1"))
                .bind(id)
                .fetch_optional(p)
                .await
        })
    }

    /// Newest first; `state` and `user` (id or email) filter when set.
    pub async fn list(
        &self,
        state: Option<GrantState>,
        user: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Grant>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            let mut q = sqlx::QueryBuilder::new(select_grants!("WHERE 1 = 1"));
            if let Some(s) = state {
                q.push(" AND state = ").push_bind(s.as_str());
            }
            if let Some(u) = user {
                q.push(" AND (user_id = ")
                    .push_bind(u.to_string())
                    .push(" OR lower(user_email) = ")
                    .push_bind(crate::email::normalize_email(u))
                    .push(")");
            }
            q.push(" ORDER BY created_ms DESC LIMIT ").push_bind(limit);
            q.build_query_as::<Grant>().fetch_all(p).await
        })
    }

    /// A user's claim links not yet used (pending, being claimed, or whose
    /// claim lost its answer), newest first: one query for the user page.
    pub async fn open_for_user(&self, user_id: &str) -> Result<Vec<Grant>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Grant>(OPEN_FOR_USER_SQL)
                .bind(user_id)
                .fetch_all(p)
                .await
        })
    }

    /// Moves `id` from `from` to `to` if it is still in `from` (and, for a
    /// claim, not past its time); `who` is recorded. Whether it moved.
    async fn transition(
        &self,
        id: &str,
        from: GrantState,
        to: GrantState,
        who: Option<&str>,
        key_id: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let ends = matches!(
            to,
            GrantState::Claimed | GrantState::Expired | GrantState::Revoked
        );
        // A pending grant only moves on while it is valid, except to expire.
        let timely =
            from != GrantState::Pending || to == GrantState::Expired || to == GrantState::Revoked;
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE grants SET state = $1,
                    claimed_by = CASE WHEN $2 = 'claiming' THEN $3 ELSE claimed_by END,
                    claim_ms = CASE WHEN $2 = 'claiming' THEN $5 ELSE claim_ms END,
                    keys_before = CASE WHEN $2 = 'claiming' THEN NULL ELSE keys_before END,
                    ended_by = CASE WHEN $4 THEN COALESCE($3, ended_by) ELSE ended_by END,
                    ended_ms = CASE WHEN $4 THEN $5 ELSE ended_ms END,
                    key_id = COALESCE($6, key_id)
                 WHERE id = $7 AND state = $8 AND ($9 OR expires_ms > $5)",
            )
            .bind(to.as_str())
            .bind(to.as_str())
            .bind(who)
            .bind(ends)
            .bind(now)
            .bind(key_id)
            .bind(id)
            .bind(from.as_str())
            .bind(timely)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// The one conditional claim: pending and unexpired → claiming, by `who`.
    pub async fn begin_claim(&self, id: &str, who: &str) -> Result<bool, sqlx::Error> {
        self.transition(
            id,
            GrantState::Pending,
            GrantState::Claiming,
            Some(who),
            None,
        )
        .await
    }

    /// The key exists: claiming (or unknown, once reconciled) → claimed.
    pub async fn claimed(
        &self,
        id: &str,
        from: GrantState,
        key_id: &str,
    ) -> Result<bool, sqlx::Error> {
        self.transition(id, from, GrantState::Claimed, None, Some(key_id))
            .await
    }

    /// A claim whose key was undone because its user's offboarding began
    /// while it was at Vultr: the link ends, never to be claimed again.
    pub async fn undone(&self, id: &str, key_id: Option<&str>) -> Result<bool, sqlx::Error> {
        self.transition(
            id,
            GrantState::Claiming,
            GrantState::Revoked,
            Some("keydesk"),
            key_id,
        )
        .await
    }

    /// Nothing was created: the grant can be claimed again.
    pub async fn reopen(&self, id: &str, from: GrantState) -> Result<bool, sqlx::Error> {
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query("UPDATE grants SET state = 'pending', claimed_by = NULL WHERE id = $1 AND state = $2")
                .bind(id)
                .bind(from.as_str())
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Keeps the user's key ids read just before this claim's create (JSON).
    pub async fn set_keys_before(&self, id: &str, keys_before: &str) -> Result<bool, sqlx::Error> {
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query("UPDATE grants SET keys_before = $1 WHERE id = $2 AND state = 'claiming'")
                .bind(keys_before)
                .bind(id)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// A lost claim more than one key may be: it stays unknown, with them
    /// (`candidates`, JSON). Once: whether this call marked it.
    pub async fn ambiguous(&self, id: &str, candidates: &str) -> Result<bool, sqlx::Error> {
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query("UPDATE grants SET candidates = $1 WHERE id = $2 AND state = 'unknown' AND candidates IS NULL")
                .bind(candidates)
                .bind(id)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// The create's answer was lost.
    pub async fn unknown(&self, id: &str) -> Result<bool, sqlx::Error> {
        self.transition(id, GrantState::Claiming, GrantState::Unknown, None, None)
            .await
    }

    /// Claims that went to Vultr longer than `bound` ago and never finished
    /// (their process stopped) become `unknown`, to be settled from the key
    /// list. Returns how many.
    pub async fn abandon_stale_claims(
        &self,
        bound: std::time::Duration,
    ) -> Result<u64, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let cutoff = now - i64::try_from(bound.as_millis()).unwrap_or(i64::MAX);
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query("UPDATE grants SET state = 'unknown' WHERE state = 'claiming' AND COALESCE(claim_ms, 0) < $1")
                .bind(cutoff)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n)
    }

    /// An operator revokes a pending grant.
    pub async fn revoke(&self, id: &str, by: &str) -> Result<bool, sqlx::Error> {
        self.transition(id, GrantState::Pending, GrantState::Revoked, Some(by), None)
            .await
    }

    /// Offboarding: a pending link, or one whose claim lost its answer
    /// (which must never reopen for a leaver), is revoked.
    pub async fn withdraw(&self, g: &Grant, by: &str) -> Result<bool, sqlx::Error> {
        self.transition(&g.id, g.state, GrantState::Revoked, Some(by), None)
            .await
    }

    /// Marks every pending grant past its time expired; returns them.
    pub async fn expire_due(&self) -> Result<Vec<Grant>, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let due: Vec<String> = on_pool!(read, &self.db, |p| {
            sqlx::query_scalar("SELECT id FROM grants WHERE state = 'pending' AND expires_ms <= $1")
                .bind(now)
                .fetch_all(p)
                .await?
        });
        let mut out = Vec::new();
        for id in due {
            // Only the process whose update wins reports it (replicas race).
            if self
                .transition(
                    &id,
                    GrantState::Pending,
                    GrantState::Expired,
                    Some("keydesk"),
                    None,
                )
                .await?
                && let Some(g) = self.get(&id).await?
            {
                out.push(g);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_long_random_and_recognisable() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert!(plausible_id(&a), "{a}");
        assert_eq!(a.len() * 4, 160, "160 bits");
        assert!(!plausible_id("../etc/passwd"));
        assert!(!plausible_id(&a[..39]));
    }

    #[test]
    fn states_keep_their_stored_names() {
        for s in GrantState::ALL {
            assert_eq!(GrantState::try_from(s.as_str().to_string()), Ok(s));
        }
    }
}
