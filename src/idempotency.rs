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

use sha2::{Digest, Sha256};

use crate::db::Db;
use crate::form_keys::FormKeys;
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
    /// Adding an entry to a user's API allowlist, and removing one.
    AllowlistAdd(&'a VultrId),
    AllowlistRemove(&'a VultrId),
    /// Starting an access review; deciding items of one; ending one now.
    ReviewStart,
    ReviewDecide(i64),
    ReviewEnd(i64),
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
            Scope::AllowlistAdd(u) => write!(f, "allowlist-add:{u}"),
            Scope::AllowlistRemove(u) => write!(f, "allowlist-remove:{u}"),
            Scope::ReviewStart => f.write_str("review:start"),
            Scope::ReviewDecide(r) => write!(f, "review-decide:{r}"),
            Scope::ReviewEnd(r) => write!(f, "review-end:{r}"),
        }
    }
}

/// Tokens older than this are refused (the form must be reloaded).
pub use crate::form_keys::TOKEN_TTL;

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

/// The form tokens. Issuing one writes nothing: the token is signed and
/// carries what it is bound to. Submitting it claims its nonce with one
/// conditional insert, so exactly one submit wins, on any replica, across
/// restarts.
#[derive(Clone, Debug)]
pub struct FormTokens {
    db: Db,
    keys: FormKeys,
}

/// What a signed token carries, besides the key id and the MAC.
#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    /// Random, 32 hex characters: what the database claims, once.
    #[serde(rename = "n")]
    nonce: String,
    #[serde(rename = "e")]
    expires_ms: i64,
    #[serde(rename = "a")]
    actor: String,
    #[serde(rename = "s")]
    scope: String,
    /// A hash of the browser session's form binding (never the binding itself).
    #[serde(rename = "b")]
    binding: Option<String>,
}

/// The version prefix of signed tokens.
const SIGNED: &str = "t1";

/// A signed token, taken apart (not yet verified).
struct Signed<'a> {
    kid: &'a str,
    /// What the MAC covers: the prefix, the key id and the payload.
    message: &'a str,
    payload: Vec<u8>,
    tag: Vec<u8>,
}

fn parse(token: &str) -> Option<Signed<'_>> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (message, tag) = token.rsplit_once('.')?;
    let mut parts = message.split('.');
    let (prefix, kid, payload) = (parts.next()?, parts.next()?, parts.next()?);
    if prefix != SIGNED || parts.next().is_some() {
        return None;
    }
    Some(Signed {
        kid,
        message,
        payload: b64.decode(payload).ok()?,
        tag: b64.decode(tag).ok()?,
    })
}

/// The row a token is claimed under: its nonce's hash for a signed token.
fn row_key(token: &str) -> String {
    match parse(token).and_then(|s| serde_json::from_slice::<Claims>(&s.payload).ok()) {
        Some(c) => hash(&format!("nonce:{}", c.nonce)),
        None => hash(token),
    }
}

/// What is stored instead of the token: its SHA-256, hex.
fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A session's form binding as a token carries it and the table stores it.
fn binding_hash(binding: &str) -> String {
    hash(&format!("binding:{binding}"))[..32].to_string()
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl FormTokens {
    pub fn new(db: Db, keys: FormKeys) -> Self {
        Self { db, keys }
    }

    /// Tokens signed with the keys kept in `db`, created there if none
    /// (tools, tests and benches; `AppState` also honours KEYDESK_SECRET_KEY).
    pub async fn with_db_keys(db: Db) -> Result<Self, sqlx::Error> {
        let keys = FormKeys::from_db(db.clone()).await?;
        Ok(Self::new(db, keys))
    }

    /// The signing keys (the upkeep refreshes them).
    pub fn keys(&self) -> &FormKeys {
        &self.keys
    }

    /// Mints a token for `actor` to do `scope` once, tied to the browser
    /// session it is rendered in when there is one. Writes nothing.
    pub fn issue(&self, actor: &str, scope: Scope<'_>, session: Option<String>) -> String {
        self.issue_until(
            actor,
            scope,
            session,
            now_ms() + TOKEN_TTL.as_millis() as i64,
        )
    }

    fn issue_until(
        &self,
        actor: &str,
        scope: Scope<'_>,
        session: Option<String>,
        expires_ms: i64,
    ) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = Claims {
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            expires_ms,
            actor: actor.to_string(),
            scope: scope.to_string(),
            binding: session.as_deref().map(binding_hash),
        };
        // Serialising plain strings and numbers cannot fail.
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let (message, tag) = self
            .keys
            .sign(|kid| format!("{SIGNED}.{kid}.{}", b64.encode(&payload)));
        format!("{message}.{}", b64.encode(tag))
    }

    /// Checks a signed token's MAC and every field it is bound to; no query.
    async fn verify(
        &self,
        token: &str,
        actor: &str,
        scope: &str,
        session: Option<&str>,
    ) -> Option<Claims> {
        let signed = parse(token)?;
        let genuine = self
            .keys
            .verify(signed.kid, signed.message.as_bytes(), &signed.tag)
            .await;
        let claims: Claims = serde_json::from_slice(&signed.payload).ok()?;
        let bound = match &claims.binding {
            None => true,
            Some(b) => session.map(binding_hash).as_ref() == Some(b),
        };
        (genuine
            && bound
            && claims.expires_ms > now_ms()
            && claims.actor == actor
            && claims.scope == scope
            && claims.nonce.len() == 32)
            .then_some(claims)
    }

    /// Claims `token` for this request. A signed token is verified first,
    /// then its nonce is claimed with one conditional insert: among any
    /// number of concurrent claims, on any number of replicas, one wins.
    pub async fn claim(
        &self,
        token: &str,
        actor: &str,
        scope: Scope<'_>,
        session: Option<&str>,
    ) -> Result<Claim, sqlx::Error> {
        let scope = scope.to_string();
        if parse(token).is_none() {
            return self.claim_unsigned(token, actor, &scope, session).await;
        }
        let Some(claims) = self.verify(token, actor, &scope, session).await else {
            return Ok(Claim::Invalid);
        };
        let key = hash(&format!("nonce:{}", claims.nonce));
        // A released claim (state 'fresh') may be taken again; any other
        // existing row means someone already holds or used this form.
        let won: Option<String> = on_pool!(write, &self.db, |p| {
            sqlx::query_scalar(
            "INSERT INTO form_tokens (token_hash, actor, scope, session_binding, state, expires_ms)
             VALUES ($1, $2, $3, $4, 'inflight', $5)
             ON CONFLICT (token_hash) DO UPDATE SET state = 'inflight' WHERE form_tokens.state = 'fresh'
             RETURNING token_hash"
        )
        .bind(&key)
        .bind(actor)
        .bind(&scope)
        .bind(&claims.binding)
        .bind(claims.expires_ms)
        .fetch_optional(p)
        .await?
        });
        if won.is_some() {
            return Ok(Claim::Claimed);
        }
        let seen: Option<Option<String>> = on_pool!(read, &self.db, |p| sqlx::query_scalar(
            "SELECT result_id FROM form_tokens WHERE token_hash = $1"
        )
        .bind(&key)
        .fetch_optional(p)
        .await?);
        Ok(match seen {
            Some(result_id) => Claim::Replay { result_id },
            None => Claim::Invalid,
        })
    }

    /// A token minted by a keydesk before signed tokens (a form left open
    /// across the upgrade): claimed from its stored row as then.
    async fn claim_unsigned(
        &self,
        token: &str,
        actor: &str,
        scope: &str,
        session: Option<&str>,
    ) -> Result<Claim, sqlx::Error> {
        let (h, now) = (hash(token), now_ms());
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
                $q.bind(&h).bind(actor).bind(scope).bind(now).bind(session)
            };
        }
        let claim = concat!(
            matching!("UPDATE form_tokens SET state = 'inflight'"),
            " AND state = 'fresh' RETURNING token_hash"
        );
        let won: Option<String> = on_pool!(write, &self.db, |p| bound!(sqlx::query_scalar(claim))
            .fetch_optional(p)
            .await?);
        if won.is_some() {
            return Ok(Claim::Claimed);
        }
        let look = matching!("SELECT state, result_id FROM form_tokens");
        let seen: Option<(String, Option<String>)> =
            on_pool!(read, &self.db, |p| bound!(sqlx::query_as(look))
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
        let r = on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE form_tokens SET state = 'fresh' WHERE token_hash = $1 AND state = 'inflight'",
            )
            .bind(row_key(token))
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
        let r = on_pool!(write, &self.db, |p| sqlx::query(
            "UPDATE form_tokens SET state = 'done', result_id = $2 WHERE token_hash = $1",
        )
        .bind(row_key(token))
        .bind(result_id)
        .execute(p)
        .await
        .map(|_| ()));
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not record a form token's result");
        }
    }

    /// Forgets expired tokens; returns how many. A signed token past its
    /// expiry is refused by its own fields, so its row is no longer needed.
    pub async fn purge_expired(&self) -> Result<u64, sqlx::Error> {
        on_pool!(write, &self.db, |p| sqlx::query(
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
        let db = Db::open("sqlite::memory:").await.unwrap();
        FormTokens::new(db.clone(), FormKeys::from_db(db).await.unwrap())
    }

    fn u(id: &str) -> VultrId {
        VultrId::parse(id).unwrap()
    }

    async fn rows(t: &FormTokens) -> Vec<(String, String)> {
        on_pool!(read, &t.db, |p| sqlx::query_as(
            "SELECT token_hash, state FROM form_tokens ORDER BY token_hash"
        )
        .fetch_all(p)
        .await
        .unwrap())
    }

    #[tokio::test]
    async fn issuing_writes_nothing_and_a_token_is_claimed_once_with_its_result() {
        let t = tokens().await;
        let (u1, s) = (u("u1"), None);
        let tok = t.issue("a@x", Scope::CreateKey(&u1), None);
        assert!(rows(&t).await.is_empty(), "issuing wrote a row");
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
        let tok = t.issue("a@x", Scope::CreateKey(&u1), Some("sess-1".into()));
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
        assert!(rows(&t).await.is_empty(), "a refused token wrote a row");
        let c = t.claim(&tok, "a@x", Scope::CreateKey(&u1), Some("sess-1"));
        assert_eq!(c.await.unwrap(), Claim::Claimed);
    }

    #[tokio::test]
    async fn a_tampered_or_foreign_token_is_invalid() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let t = tokens().await;
        let tok = t.issue("a@x", Scope::ReportScan, None);
        // Someone else's payload under this token's MAC.
        let other = t.issue("b@x", Scope::ReportScan, None);
        let (head, tag) = tok.rsplit_once('.').unwrap();
        let (other_head, _) = other.rsplit_once('.').unwrap();
        let forged = format!("{other_head}.{tag}");
        let c = t.claim(&forged, "b@x", Scope::ReportScan, None).await;
        assert_eq!(c.unwrap(), Claim::Invalid);
        // A token from another keydesk (another key) is refused too.
        let stranger = tokens().await.issue("a@x", Scope::ReportScan, None);
        let c = t.claim(&stranger, "a@x", Scope::ReportScan, None).await;
        assert_eq!(c.unwrap(), Claim::Invalid);
        // A flipped MAC byte.
        let mut mac = b64.decode(tag).unwrap();
        mac[0] ^= 1;
        let flipped = format!("{head}.{}", b64.encode(mac));
        let c = t.claim(&flipped, "a@x", Scope::ReportScan, None).await;
        assert_eq!(c.unwrap(), Claim::Invalid);
        assert!(rows(&t).await.is_empty());
    }

    #[tokio::test]
    async fn an_expired_token_is_invalid_and_its_row_is_purged() {
        let t = tokens().await;
        let past = now_ms() - 1;
        let stale = t.issue_until("a@x", Scope::ReportScan, None, past);
        let c = t.claim(&stale, "a@x", Scope::ReportScan, None).await;
        assert_eq!(c.unwrap(), Claim::Invalid);
        // A claimed token whose time ran out: its row goes at the next purge.
        let soon = t.issue_until("a@x", Scope::ReportScan, None, now_ms() + 50);
        let c = t.claim(&soon, "a@x", Scope::ReportScan, None).await;
        assert_eq!(c.unwrap(), Claim::Claimed);
        assert_eq!(t.purge_expired().await.unwrap(), 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while now_ms() <= past + 52 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(t.purge_expired().await.unwrap(), 1);
        assert!(rows(&t).await.is_empty());
    }

    #[tokio::test]
    async fn a_released_token_can_be_claimed_again_and_only_a_hash_is_stored() {
        let t = tokens().await;
        let tok = t.issue("a@x", Scope::ReportScan, None);
        let claim = || t.claim(&tok, "a@x", Scope::ReportScan, None);
        assert_eq!(claim().await.unwrap(), Claim::Claimed);
        t.release(&tok).await;
        assert_eq!(rows(&t).await[0].1, "fresh");
        assert_eq!(claim().await.unwrap(), Claim::Claimed);
        let stored = rows(&t).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0], (row_key(&tok), "inflight".to_string()));
        assert!(!tok.contains(&stored[0].0));
    }

    #[tokio::test]
    async fn a_token_from_before_signed_tokens_is_still_claimed_once() {
        let t = tokens().await;
        let legacy = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        on_pool!(write, &t.db, |p| {
            sqlx::query(
            "INSERT INTO form_tokens (token_hash, actor, scope, state, expires_ms) VALUES ($1, 'a@x', 'report:scan', 'fresh', $2)"
        )
        .bind(hash(legacy))
        .bind(now_ms() + 60_000)
        .execute(p)
        .await
        .map(|_| ())
        .unwrap()
        });
        let claim = || t.claim(legacy, "a@x", Scope::ReportScan, None);
        assert_eq!(claim().await.unwrap(), Claim::Claimed);
        assert_eq!(claim().await.unwrap(), Claim::Replay { result_id: None });
    }
}
