//! What an OpenID sign-in keeps in the server-side session (the shared
//! database store, so replicas and restarts see it): once signed in, who it
//! is and since when. A sign-in only started lives in a cookie (`started`),
//! never here. The id is rotated at sign-in; the absolute and idle lifetimes
//! are enforced on every request.

use serde::{Deserialize, Serialize};
use tower_sessions::Session;

pub const SIGNED_IN_KEY: &str = "keydesk.oidc.signed_in";

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `KEYDESK_SESSION_MAX_AGE` and `KEYDESK_SESSION_IDLE`, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    pub max_age: i64,
    pub idle: i64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            max_age: 12 * 3600,
            idle: 3600,
        }
    }
}

/// A sign-in this browser started: what the callback must match.
#[derive(Clone, Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub next: String,
    pub started: i64,
}

/// A signed-in person. Roles are not stored: they are worked out from the
/// email and groups on every request, so a policy change applies at once.
#[derive(Clone, Serialize, Deserialize)]
pub struct SignedIn {
    pub email: String,
    pub groups: Vec<String>,
    /// Sent back as `id_token_hint` at sign-out; never shown or logged.
    pub id_token: String,
    /// The sign-out form's token: random, made at sign-in, so another site
    /// cannot sign a person out.
    #[serde(default)]
    pub sign_out: String,
    pub signed_in: i64,
    pub seen: i64,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("email", &self.email)
            .field("groups", &self.groups)
            .field("signed_in", &self.signed_in)
            .finish_non_exhaustive()
    }
}

/// Two random values compared in constant time (the `subtle` crate).
pub fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Why a stored sign-in no longer counts.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Older than `KEYDESK_SESSION_MAX_AGE`.
    MaxAge,
    /// Unused for longer than `KEYDESK_SESSION_IDLE`.
    Idle,
}

impl Ended {
    pub fn reason(&self) -> &'static str {
        match self {
            Ended::MaxAge => "session past KEYDESK_SESSION_MAX_AGE",
            Ended::Idle => "session idle past KEYDESK_SESSION_IDLE",
        }
    }
}

/// Whether `who` still counts at `t`.
pub fn check(who: &SignedIn, lifetimes: Lifetimes, t: i64) -> Result<(), Ended> {
    if t - who.signed_in >= lifetimes.max_age {
        Err(Ended::MaxAge)
    } else if t - who.seen >= lifetimes.idle {
        Err(Ended::Idle)
    } else {
        Ok(())
    }
}

/// The person signed in on this session. An ended sign-in is removed (the
/// session becomes anonymous) and reported; activity is recorded at most
/// every twelfth of the idle timeout, so page views rarely write.
pub async fn current(
    session: &Session,
    lifetimes: Lifetimes,
) -> Result<Option<SignedIn>, (String, Ended)> {
    let Some(mut who) = session.get::<SignedIn>(SIGNED_IN_KEY).await.ok().flatten() else {
        return Ok(None);
    };
    let t = now();
    if let Err(ended) = check(&who, lifetimes, t) {
        // Gone whole (form binding, notices): no anonymous row stays behind.
        let _ = session.flush().await;
        return Err((who.email, ended));
    }
    if t - who.seen >= (lifetimes.idle / 12).max(1) {
        who.seen = t;
        let _ = session.insert(SIGNED_IN_KEY, &who).await;
    }
    Ok(Some(who))
}

/// The sign-out form's token of the person signed in on this request, for
/// the page frame (error pages get it as a response extension).
#[derive(Clone, Debug)]
pub struct SignOut(pub String);

/// The sign-out token of the person signed in on this session, if any.
pub async fn sign_out_token(session: &Session) -> Option<String> {
    let who = session
        .get::<SignedIn>(SIGNED_IN_KEY)
        .await
        .ok()
        .flatten()?;
    (!who.sign_out.is_empty()).then_some(who.sign_out)
}

/// Signs `who` in on this session under a fresh id (against fixation),
/// keeping nothing of what the session held before (another person's
/// notices or form binding).
pub async fn sign_in(session: &Session, who: &SignedIn) -> Result<(), String> {
    session.clear().await;
    session
        .cycle_id()
        .await
        .map_err(|e| format!("could not rotate the session: {e}"))?;
    session
        .insert(SIGNED_IN_KEY, who)
        .await
        .map_err(|e| format!("could not store the sign-in: {e}"))
}

/// Ends the sign-in and deletes the session; returns who it was.
pub async fn sign_out(session: &Session) -> Option<SignedIn> {
    let who = session.get::<SignedIn>(SIGNED_IN_KEY).await.ok().flatten();
    let _ = session.flush().await;
    who
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(signed_in: i64, seen: i64) -> SignedIn {
        SignedIn {
            email: "a@b.c".into(),
            groups: vec![],
            id_token: "t".into(),
            sign_out: "so".into(),
            signed_in,
            seen,
        }
    }

    #[test]
    fn a_sign_in_ends_at_its_absolute_and_idle_limits() {
        let l = Lifetimes {
            max_age: 100,
            idle: 10,
        };
        assert_eq!(check(&who(0, 95), l, 99), Ok(()));
        assert_eq!(check(&who(0, 99), l, 100), Err(Ended::MaxAge));
        assert_eq!(check(&who(0, 50), l, 60), Err(Ended::Idle));
        assert_eq!(check(&who(0, 50), l, 59), Ok(()));
    }

    #[test]
    fn debug_never_shows_the_id_token() {
        let text = format!("{:?}", who(0, 0));
        assert!(!text.contains("id_token") && text.contains("a@b.c"));
    }
}
