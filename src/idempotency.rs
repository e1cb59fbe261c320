//! One-time form tokens. Each rendered form that changes something carries a
//! token minted here, bound to the signed-in identity and to what the form
//! does (`scope`). A POST claims its token before anything is sent upstream,
//! so a reload, a back-and-resubmit, a double click or eight concurrent posts
//! act at most once. Because the token is unguessable and bound to the
//! identity, it is also the form's anti-forgery token.
//!
//! Only the outcome (the key id) is kept, never a response body or secret.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ids::VultrId;

/// What a form does: its token is good for this and nothing else.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    CreateKey(&'a VultrId),
    RotateKey(&'a VultrId, &'a VultrId),
    RevokeKey(&'a VultrId, &'a VultrId),
    /// The brake, towards the given state of API access.
    ApiAccess(&'a VultrId, bool),
    ReportScan,
}

impl fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::CreateKey(u) => write!(f, "create:{u}"),
            Scope::RotateKey(u, k) => write!(f, "rotate:{u}:{k}"),
            Scope::RevokeKey(u, k) => write!(f, "revoke:{u}:{k}"),
            Scope::ApiAccess(u, on) => write!(f, "api-access:{u}:{on}"),
            Scope::ReportScan => f.write_str("report:scan"),
        }
    }
}

/// Tokens older than this are forgotten (the form must be reloaded).
const TOKEN_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Upper bound on remembered tokens, so a client cannot grow memory forever.
const MAX_TOKENS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Fresh,
    InFlight,
    Done { result_id: Option<String> },
}

#[derive(Debug)]
struct Entry {
    actor: String,
    /// The browser session the form was rendered in, when it had one.
    session: Option<String>,
    scope: String,
    state: State,
    issued: Instant,
}

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

#[derive(Default)]
pub struct FormTokens {
    map: Mutex<HashMap<String, Entry>>,
}

impl FormTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mints a token for `actor` to do `scope` once. When the form is rendered
    /// inside an existing browser session, the token is also tied to it.
    pub fn issue(&self, actor: &str, scope: Scope<'_>, session: Option<String>) -> String {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut map = self.lock();
        if map.len() >= MAX_TOKENS {
            map.retain(|_, e| e.issued.elapsed() < TOKEN_TTL);
            if map.len() >= MAX_TOKENS {
                // Still full: drop the oldest tenth.
                let mut ages: Vec<(Instant, String)> =
                    map.iter().map(|(k, e)| (e.issued, k.clone())).collect();
                ages.sort();
                for (_, k) in ages.into_iter().take(MAX_TOKENS / 10) {
                    map.remove(&k);
                }
            }
        }
        map.insert(
            token.clone(),
            Entry {
                actor: actor.to_string(),
                session,
                scope: scope.to_string(),
                state: State::Fresh,
                issued: Instant::now(),
            },
        );
        token
    }

    /// Atomically claims `token` for this request.
    pub fn claim(
        &self,
        token: &str,
        actor: &str,
        scope: Scope<'_>,
        session: Option<&str>,
    ) -> Claim {
        let scope = scope.to_string();
        let mut map = self.lock();
        match map.get_mut(token) {
            Some(e)
                if e.actor == actor
                    && e.scope == scope
                    && e.issued.elapsed() < TOKEN_TTL
                    // Bound to a session: only that session may use it.
                    && e.session.as_deref().is_none_or(|s| Some(s) == session) =>
            {
                match &e.state {
                    State::Fresh => {
                        e.state = State::InFlight;
                        Claim::Claimed
                    }
                    State::InFlight => Claim::Replay { result_id: None },
                    State::Done { result_id } => Claim::Replay {
                        result_id: result_id.clone(),
                    },
                }
            }
            _ => Claim::Invalid,
        }
    }

    /// Gives a claimed token back: nothing happened upstream (validation failed,
    /// or Vultr definitely refused), so the same form may be sent again.
    pub fn release(&self, token: &str) {
        if let Some(e) = self.lock().get_mut(token)
            && e.state == State::InFlight
        {
            e.state = State::Fresh;
        }
    }

    /// Passes `r` through, giving the token back when it is an error: a step
    /// before the upstream write failed, so nothing happened.
    pub fn release_on_err<T, E>(&self, token: &str, r: Result<T, E>) -> Result<T, E> {
        if r.is_err() {
            self.release(token);
        }
        r
    }

    /// Marks a claimed token used for good, remembering only the result's id.
    pub fn complete(&self, token: &str, result_id: Option<String>) {
        if let Some(e) = self.lock().get_mut(token) {
            e.state = State::Done { result_id };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(id: &str) -> VultrId {
        VultrId::parse(id).unwrap()
    }

    #[test]
    fn a_token_is_claimed_once() {
        let t = FormTokens::default();
        let tok = t.issue("a@x", Scope::CreateKey(&u("u1")), None);
        assert_eq!(
            t.claim(&tok, "a@x", Scope::CreateKey(&u("u1")), None),
            Claim::Claimed
        );
        assert_eq!(
            t.claim(&tok, "a@x", Scope::CreateKey(&u("u1")), None),
            Claim::Replay { result_id: None }
        );
        t.complete(&tok, Some("k1".into()));
        assert_eq!(
            t.claim(&tok, "a@x", Scope::CreateKey(&u("u1")), None),
            Claim::Replay {
                result_id: Some("k1".into())
            }
        );
    }

    #[test]
    fn a_token_is_bound_to_actor_and_scope() {
        let t = FormTokens::default();
        let tok = t.issue("a@x", Scope::CreateKey(&u("u1")), None);
        assert_eq!(
            t.claim(&tok, "b@x", Scope::CreateKey(&u("u1")), None),
            Claim::Invalid
        );
        assert_eq!(
            t.claim(&tok, "a@x", Scope::CreateKey(&u("u2")), None),
            Claim::Invalid
        );
        assert_eq!(
            t.claim("nope", "a@x", Scope::CreateKey(&u("u1")), None),
            Claim::Invalid
        );
        assert_eq!(
            t.claim(&tok, "a@x", Scope::CreateKey(&u("u1")), None),
            Claim::Claimed
        );
    }

    #[test]
    fn a_token_rendered_in_a_session_only_works_in_that_session() {
        let t = FormTokens::default();
        let tok = t.issue("a@x", Scope::ReportScan, Some("sess-1".into()));
        assert_eq!(
            t.claim(&tok, "a@x", Scope::ReportScan, Some("sess-2")),
            Claim::Invalid
        );
        assert_eq!(
            t.claim(&tok, "a@x", Scope::ReportScan, None),
            Claim::Invalid
        );
        assert_eq!(
            t.claim(&tok, "a@x", Scope::ReportScan, Some("sess-1")),
            Claim::Claimed
        );
    }

    #[test]
    fn a_released_token_can_be_claimed_again() {
        let t = FormTokens::default();
        let tok = t.issue("a@x", Scope::ReportScan, None);
        assert_eq!(
            t.claim(&tok, "a@x", Scope::ReportScan, None),
            Claim::Claimed
        );
        t.release(&tok);
        assert_eq!(
            t.claim(&tok, "a@x", Scope::ReportScan, None),
            Claim::Claimed
        );
    }

    #[test]
    fn concurrent_claims_have_one_winner() {
        let t = std::sync::Arc::new(FormTokens::default());
        let tok = t.issue("a@x", Scope::ReportScan, None);
        let wins: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let t = t.clone();
                    let tok = tok.clone();
                    s.spawn(move || t.claim(&tok, "a@x", Scope::ReportScan, None) == Claim::Claimed)
                })
                .collect();
            hs.into_iter()
                .filter_map(|h| h.join().ok())
                .filter(|w| *w)
                .count()
        });
        assert_eq!(wins, 1);
    }
}
