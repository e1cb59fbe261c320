//! One-time form tokens. Each rendered form that changes something carries a
//! token minted here, bound to the signed-in identity and to what the form
//! does (`scope`). A POST claims its token before anything is sent upstream,
//! so a reload, a back-and-resubmit, a double click or eight concurrent posts
//! act at most once. Because the token is unguessable and bound to the
//! identity, it is also the form's anti-forgery token.
//!
//! Only a hash of the token and the outcome (the key id) are stored, never a
//! response body or secret.

use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::db::Db;
use crate::ids::VultrId;
use crate::on_pool;

/// What a form does: its token is good for this and nothing else.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    CreateKey(&'a VultrId),
    RotateKey(&'a VultrId, &'a VultrId),
    RevokeKey(&'a VultrId, &'a VultrId),
    /// The brake, towards the given state of API access.
    ApiAccess(&'a VultrId, bool),
    ReportScan,
    /// Offboarding a user: the brake, then every key revoked.
    Offboard(&'a VultrId),
    /// Lifting an offboarded user's hold.
    Reinstate(&'a VultrId),
    /// Revoking expired keys from the report.
    KeysCleanup,
    /// Issuing a claim link for a user.
    GrantCreate(&'a VultrId),
    /// Claiming a grant (by its id), and revoking one.
    GrantClaim(&'a str),
    GrantRevoke(&'a str),
    /// A notice pass started from the page.
    NoticeRun,
    /// Approving or denying a request, and carrying it out.
    ApprovalDecide(&'a str),
    ApprovalExecute(&'a str),
    ApprovalWithdraw(&'a str),
}

impl fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::CreateKey(u) => write!(f, "create:{u}"),
            Scope::RotateKey(u, k) => write!(f, "rotate:{u}:{k}"),
            Scope::RevokeKey(u, k) => write!(f, "revoke:{u}:{k}"),
            Scope::ApiAccess(u, on) => write!(f, "api-access:{u}:{on}"),
            Scope::ReportScan => f.write_str("report:scan"),
            Scope::Offboard(u) => write!(f, "offboard:{u}"),
            Scope::Reinstate(u) => write!(f, "reinstate:{u}"),
            Scope::KeysCleanup => f.write_str("keys:cleanup"),
            Scope::GrantCreate(u) => write!(f, "grant:{u}"),
            Scope::GrantClaim(g) => write!(f, "claim:{g}"),
            Scope::GrantRevoke(g) => write!(f, "grant-revoke:{g}"),
            Scope::NoticeRun => f.write_str("notices:run"),
            Scope::ApprovalDecide(a) => write!(f, "approval-decide:{a}"),
            Scope::ApprovalExecute(a) => write!(f, "approval-execute:{a}"),
            Scope::ApprovalWithdraw(a) => write!(f, "approval-withdraw:{a}"),
        }
    }
}

/// Tokens older than this are forgotten (the form must be reloaded).
pub const TOKEN_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the token: go ahead.
    Claimed,
    /// Another request already used, or is using, this token.
    Replay { result_id: Option<String> },
    /// Unknown, expired, or minted for someone or something else.
    Invalid,
}

/// The form tokens, in the database: a restart or another replica sees the
/// same tokens, and exactly one claimer wins among any number of them.
#[derive(Clone, Debug)]
pub struct FormTokens {
    db: Db,
}

/// What is stored instead of the token: its SHA-256, hex.
fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl FormTokens {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Mints a token for `actor` to do `scope` once, tied to the browser
    /// session it is rendered in when there is one.
    pub async fn issue(
        &self,
        actor: &str,
        scope: Scope<'_>,
        session: Option<String>,
    ) -> Result<String, sqlx::Error> {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let expires = now_ms() + TOKEN_TTL.as_millis() as i64;
        on_pool!(&self.db, |p| {
            sqlx::query(
            "INSERT INTO form_tokens (token_hash, actor, scope, session_binding, state, expires_ms) VALUES ($1, $2, $3, $4, 'fresh', $5)",
        )
        .bind(hash(&token))
        .bind(actor)
        .bind(scope.to_string())
        .bind(session)
        .bind(expires)
        .execute(p)
        .await
        .map(|_| ())?
        });
        Ok(token)
    }

    /// Claims `token` for this request with one conditional update: among any
    /// number of concurrent claims, on any number of replicas, one wins.
    pub async fn claim(
        &self,
        token: &str,
        actor: &str,
        scope: Scope<'_>,
        session: Option<&str>,
    ) -> Result<Claim, sqlx::Error> {
        let (h, scope, now) = (hash(token), scope.to_string(), now_ms());
        // The same rows for both statements: this token, for this person,
        // scope and browser session, not expired.
        macro_rules! matching {
            ($sql:literal) => {
                concat!(
                    $sql,
                    " WHERE token_hash = $1 AND actor = $2 AND scope = $3 AND expires_ms > $4",
                    " AND (session_binding IS NULL OR session_binding = $5)"
                )
            };
        }
        macro_rules! bound {
            ($q:expr) => {
                $q.bind(&h).bind(actor).bind(&scope).bind(now).bind(session)
            };
        }
        let claim = concat!(
            matching!("UPDATE form_tokens SET state = 'inflight'"),
            " AND state = 'fresh' RETURNING token_hash"
        );
        let won: Option<String> = on_pool!(&self.db, |p| bound!(sqlx::query_scalar(claim))
            .fetch_optional(p)
            .await?);
        if won.is_some() {
            return Ok(Claim::Claimed);
        }
        let look = matching!("SELECT state, result_id FROM form_tokens");
        let seen: Option<(String, Option<String>)> =
            on_pool!(&self.db, |p| bound!(sqlx::query_as(look))
                .fetch_optional(p)
                .await?);
        Ok(match seen {
            // Another request holds it (or just gave it back): not ours to use.
            Some((_, result_id)) => Claim::Replay { result_id },
            None => Claim::Invalid,
        })
    }

    /// Gives a claimed token back: nothing happened upstream (validation failed,
    /// or Vultr definitely refused), so the same form may be sent again.
    pub async fn release(&self, token: &str) {
        let r = on_pool!(&self.db, |p| {
            sqlx::query(
            "UPDATE form_tokens SET state = 'fresh' WHERE token_hash = $1 AND state = 'inflight'",
        )
        .bind(hash(token))
        .execute(p)
        .await
        .map(|_| ())
        });
        if let Err(e) = r {
            // The form stays spent: safe, the user reloads it.
            tracing::warn!(error = %e, "could not give a form token back");
        }
    }

    /// Marks a claimed token used for good, remembering only the result's id.
    /// If this fails the token stays claimed: it can never act again either.
    pub async fn complete(&self, token: &str, result_id: Option<String>) {
        let r = on_pool!(&self.db, |p| sqlx::query(
            "UPDATE form_tokens SET state = 'done', result_id = $2 WHERE token_hash = $1",
        )
        .bind(hash(token))
        .bind(result_id)
        .execute(p)
        .await
        .map(|_| ()));
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not record a form token's result");
        }
    }

    /// Forgets expired tokens; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, sqlx::Error> {
        on_pool!(&self.db, |p| sqlx::query(
            "DELETE FROM form_tokens WHERE expires_ms <= $1"
        )
        .bind(now_ms())
        .execute(p)
        .await
        .map(|r| r.rows_affected()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn tokens() -> FormTokens {
        FormTokens::new(Db::open("sqlite::memory:").await.unwrap())
    }

    fn u(id: &str) -> VultrId {
        VultrId::parse(id).unwrap()
    }

    #[tokio::test]
    async fn a_token_is_claimed_once_and_remembers_its_result() {
        let t = tokens().await;
        let (u1, s) = (u("u1"), None);
        let tok = t.issue("a@x", Scope::CreateKey(&u1), None).await.unwrap();
        let claim = || t.claim(&tok, "a@x", Scope::CreateKey(&u1), s);
        assert_eq!(claim().await.unwrap(), Claim::Claimed);
        assert_eq!(claim().await.unwrap(), Claim::Replay { result_id: None });
        t.complete(&tok, Some("k1".into())).await;
        let done = Claim::Replay {
            result_id: Some("k1".into()),
        };
        assert_eq!(claim().await.unwrap(), done);
    }

    #[tokio::test]
    async fn a_token_is_bound_to_actor_scope_and_session() {
        let t = tokens().await;
        let (u1, u2) = (u("u1"), u("u2"));
        let tok = t
            .issue("a@x", Scope::CreateKey(&u1), Some("sess-1".into()))
            .await
            .unwrap();
        for (actor, scope, session) in [
            ("b@x", Scope::CreateKey(&u1), Some("sess-1")),
            ("a@x", Scope::CreateKey(&u2), Some("sess-1")),
            ("a@x", Scope::CreateKey(&u1), Some("sess-2")),
            ("a@x", Scope::CreateKey(&u1), None),
        ] {
            let c = t.claim(&tok, actor, scope, session).await.unwrap();
            assert_eq!(c, Claim::Invalid, "{actor} {scope} {session:?}");
        }
        let c = t.claim("nope", "a@x", Scope::CreateKey(&u1), Some("sess-1"));
        assert_eq!(c.await.unwrap(), Claim::Invalid);
        let c = t.claim(&tok, "a@x", Scope::CreateKey(&u1), Some("sess-1"));
        assert_eq!(c.await.unwrap(), Claim::Claimed);
    }

    #[tokio::test]
    async fn a_released_token_can_be_claimed_again_and_only_its_hash_is_stored() {
        let t = tokens().await;
        let tok = t.issue("a@x", Scope::ReportScan, None).await.unwrap();
        let claim = || t.claim(&tok, "a@x", Scope::ReportScan, None);
        assert_eq!(claim().await.unwrap(), Claim::Claimed);
        t.release(&tok).await;
        assert_eq!(claim().await.unwrap(), Claim::Claimed);
        let stored: Vec<String> = on_pool!(&t.db, |p| sqlx::query_scalar(
            "SELECT token_hash FROM form_tokens"
        )
        .fetch_all(p)
        .await
        .unwrap());
        assert_eq!(stored, vec![hash(&tok)]);
        assert!(!stored[0].contains(&tok));
    }
}
