//! Sign-ins this browser started (state, nonce, PKCE verifier, `next`),
//! kept in a short-lived cookie that is encrypted and authenticated
//! (AES-256-GCM, the `cookie` crate's private jar), the way oauth2-proxy
//! keeps its CSRF cookie. The server stores nothing until someone has
//! signed in: a stranger's sign-in starts and junk callbacks write nothing.
//!
//! The cookie's key is derived from the form-token keys, which every
//! replica shares, so a sign-in started on one replica finishes on another.

use axum::http::{HeaderMap, HeaderValue, header};
use cookie::{Cookie, CookieJar, Key, SameSite};
use secrecy::ExposeSecret;

use super::session::{Pending, now, same_secret};
use crate::form_keys::FormKeys;

const NAME: &str = "keydesk_signin";
/// With `Secure` cookies: bound to this host and path `/` by the browser.
const SECURE_NAME: &str = "__Host-keydesk_signin";
/// What the cookie key is derived for (never a form-token key as is).
const LABEL: &str = "oidc started sign-in cookie";
/// Sign-ins started but not finished, per browser (several tabs may race).
pub const MAX_STARTED: usize = 3;
/// A started sign-in must come back within this many seconds.
pub const TTL_SECS: i64 = 600;
/// Browsers keep cookies of up to 4096 bytes: the oldest sign-ins go first.
const MAX_VALUE_BYTES: usize = 3000;
/// A longer `next` comes back to the start page rather than overflow the cookie.
const MAX_NEXT: usize = 1024;

/// Seals and opens the started-sign-in cookie.
#[derive(Clone, Debug)]
pub struct StartedSignIns {
    keys: FormKeys,
    secure: bool,
}

impl StartedSignIns {
    pub fn new(keys: FormKeys, secure: bool) -> Self {
        Self { keys, secure }
    }

    /// The cookie's name (`__Host-` with `Secure` cookies).
    pub fn name(&self) -> &'static str {
        if self.secure { SECURE_NAME } else { NAME }
    }

    /// The sealing keys: the current one first, then those that still open.
    fn keys(&self) -> Vec<Key> {
        self.keys
            .derived(LABEL)
            .iter()
            .map(|k| k.expose_secret())
            // HMAC-SHA-256 gives 32 bytes, what `derive_from` needs at least.
            .filter(|k| k.len() >= 32)
            .map(Key::derive_from)
            .collect()
    }

    /// The unexpired sign-ins this request carries, oldest first. A cookie
    /// that does not open (forged, altered, from another deployment) counts
    /// as none.
    pub async fn read(&self, headers: &HeaderMap) -> Vec<Pending> {
        let Some(raw) = cookie_value(headers, self.name()) else {
            return vec![];
        };
        let opened = match self.open(&raw) {
            Some(list) => Some(list),
            // Sealed with a key another replica made since this one looked.
            None if self.keys.reload_now().await => self.open(&raw),
            None => None,
        };
        let t = now();
        let mut list = opened.unwrap_or_default();
        list.retain(|p| (0..TTL_SECS).contains(&(t - p.started)));
        list
    }

    fn open(&self, raw: &str) -> Option<Vec<Pending>> {
        self.keys().iter().find_map(|key| {
            let mut jar = CookieJar::new();
            jar.add_original(Cookie::new(self.name(), raw.to_string()));
            let opened = jar.private(key).get(self.name())?;
            serde_json::from_str(opened.value()).ok()
        })
    }

    fn seal(&self, list: &[Pending]) -> Option<String> {
        let key = self.keys().into_iter().next()?;
        let json = serde_json::to_string(list).ok()?;
        let mut jar = CookieJar::new();
        jar.private_mut(&key).add(Cookie::new(self.name(), json));
        jar.get(self.name()).map(|c| c.value().to_string())
    }

    /// The `Set-Cookie` value that keeps `list` (dropping the oldest until it
    /// fits), or removes the cookie when nothing is left.
    fn set_cookie(&self, mut list: Vec<Pending>) -> Option<HeaderValue> {
        let base = |value: String| {
            Cookie::build((self.name(), value))
                .path("/")
                .http_only(true)
                .secure(self.secure)
                // The provider's redirect back is a cross-site navigation.
                .same_site(SameSite::Lax)
        };
        loop {
            if list.is_empty() {
                let gone = base(String::new())
                    .max_age(cookie::time::Duration::ZERO)
                    .build();
                return HeaderValue::from_str(&gone.to_string()).ok();
            }
            let sealed = self.seal(&list)?;
            if sealed.len() <= MAX_VALUE_BYTES || list.len() == 1 {
                let kept = base(sealed)
                    .max_age(cookie::time::Duration::seconds(TTL_SECS))
                    .build();
                return HeaderValue::from_str(&kept.to_string()).ok();
            }
            list.remove(0);
        }
    }

    /// Adds a started sign-in to this browser's (the oldest goes when there
    /// are too many): the `Set-Cookie` value to answer with.
    pub async fn remember(
        &self,
        headers: &HeaderMap,
        mut pending: Pending,
    ) -> Result<HeaderValue, String> {
        if pending.next.len() > MAX_NEXT {
            pending.next = "/".into();
        }
        let mut list = self.read(headers).await;
        while list.len() >= MAX_STARTED {
            list.remove(0);
        }
        list.push(pending);
        self.set_cookie(list)
            .ok_or_else(|| "could not seal the sign-in cookie".to_string())
    }

    /// Takes the started sign-in whose `state` this is, with the `Set-Cookie`
    /// value that forgets it in this browser (each is used once here; the
    /// provider redeems a code once).
    pub async fn take(
        &self,
        headers: &HeaderMap,
        state: &str,
    ) -> Option<(Pending, Option<HeaderValue>)> {
        let mut list = self.read(headers).await;
        let at = list.iter().position(|p| same_secret(&p.state, state))?;
        let found = list.remove(at);
        Some((found, self.set_cookie(list)))
    }
}

/// The value of the request's cookie called `name`, if any.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn sign_ins(secret: &str) -> StartedSignIns {
        let keys = FormKeys::configured(&SecretString::from(secret.to_string())).unwrap();
        StartedSignIns::new(keys, true)
    }

    fn pending(state: &str) -> Pending {
        Pending {
            state: state.into(),
            nonce: "n".into(),
            verifier: "v-SECRET-VERIFIER".into(),
            next: "/users".into(),
            started: now(),
        }
    }

    /// The request a browser sends back with this `Set-Cookie` value.
    fn sent_back(set_cookie: &HeaderValue) -> HeaderMap {
        let c = Cookie::parse(set_cookie.to_str().unwrap().to_string()).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{}={}", c.name(), c.value())).unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn a_started_sign_in_is_sealed_taken_once_and_never_readable() {
        let s = sign_ins(&"k".repeat(40));
        let set = s
            .remember(&HeaderMap::new(), pending("st-1"))
            .await
            .unwrap();
        let text = set.to_str().unwrap();
        assert!(text.starts_with("__Host-keydesk_signin="), "{text}");
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=600",
        ] {
            assert!(text.contains(attr), "{attr}: {text}");
        }
        assert!(
            !text.contains("SECRET") && !text.contains("/users"),
            "{text}"
        );
        let back = sent_back(&set);
        assert!(s.take(&back, "other").await.is_none());
        let (found, forget) = s.take(&back, "st-1").await.unwrap();
        assert_eq!(found.verifier, "v-SECRET-VERIFIER");
        let forget = forget.unwrap();
        assert!(forget.to_str().unwrap().contains("Max-Age=0"), "{forget:?}");
        assert!(s.take(&sent_back(&forget), "st-1").await.is_none());
    }

    #[tokio::test]
    async fn a_cookie_sealed_elsewhere_or_altered_opens_as_nothing() {
        let ours = sign_ins(&"k".repeat(40));
        let theirs = sign_ins(&"t".repeat(40));
        let set = theirs
            .remember(&HeaderMap::new(), pending("st"))
            .await
            .unwrap();
        assert!(ours.read(&sent_back(&set)).await.is_empty());
        let mine = ours
            .remember(&HeaderMap::new(), pending("st"))
            .await
            .unwrap();
        let mut altered = mine.to_str().unwrap().to_string();
        let at = altered.find('=').unwrap() + 5;
        let flipped = if &altered[at..at + 1] == "A" {
            "B"
        } else {
            "A"
        };
        altered.replace_range(at..at + 1, flipped);
        let altered = HeaderValue::from_str(&altered).unwrap();
        assert!(ours.read(&sent_back(&altered)).await.is_empty());
        assert_eq!(ours.read(&sent_back(&mine)).await.len(), 1);
    }

    #[tokio::test]
    async fn a_rotated_key_still_opens_and_the_oldest_sign_ins_go_first() {
        let old = "o".repeat(40);
        let set = sign_ins(&old)
            .remember(&HeaderMap::new(), pending("st-old"))
            .await
            .unwrap();
        // The operator rotated KEYDESK_SECRET_KEY: the new key seals, the old opens.
        let rotated = sign_ins(&format!("{},{old}", "n".repeat(40)));
        let mut headers = sent_back(&set);
        for i in 0..MAX_STARTED {
            let set = rotated
                .remember(&headers, pending(&format!("st-{i}")))
                .await
                .unwrap();
            headers = sent_back(&set);
        }
        let states: Vec<String> = rotated
            .read(&headers)
            .await
            .into_iter()
            .map(|p| p.state)
            .collect();
        assert_eq!(states, ["st-0", "st-1", "st-2"]);
        let mut long = pending("st-long");
        long.next = format!("/{}", "x".repeat(3000));
        let set = rotated.remember(&HeaderMap::new(), long).await.unwrap();
        assert!(set.len() < 4000);
        let (found, _) = rotated.take(&sent_back(&set), "st-long").await.unwrap();
        assert_eq!(found.next, "/");
    }
}
