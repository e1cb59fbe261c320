//! Identity from a signed JWT set by the SSO proxy (Cloudflare Access,
//! Google IAP, Pomerium…), verified with the `jsonwebtoken` crate against the
//! proxy's JWKS. Algorithms are pinned (RS256/ES256 by default: never `none`,
//! never HMAC), `iss` and `aud` are required and checked, `exp`/`nbf` with a
//! small leeway. The JWKS is cached and refetched when a `kid` is unknown, at
//! most once per `REFETCH_INTERVAL`, so forged kids cannot make keydesk
//! hammer the proxy.

use std::time::{Duration, Instant};

use axum::http::HeaderName;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use tokio::sync::RwLock;

/// Least time between two JWKS fetches triggered by unknown kids.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// A cached JWKS older than this is refreshed on the next request.
const MAX_AGE: Duration = Duration::from_secs(3600);
/// Clock skew tolerated on `exp`/`nbf` (Google advises about 30 s).
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub header: HeaderName,
    pub jwks_url: String,
    pub issuer: String,
    pub audience: Vec<String>,
    pub email_claim: String,
    pub groups_claim: String,
    pub algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct Cache {
    set: Option<JwkSet>,
    fetched: Option<Instant>,
    last_attempt: Option<Instant>,
}

pub struct JwtVerifier {
    pub settings: JwtSettings,
    http: reqwest::Client,
    cache: RwLock<Cache>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("settings", &self.settings)
            .finish()
    }
}

/// Parses `RS256,ES256`; symmetric algorithms are refused outright.
pub fn parse_algorithms(list: &[String]) -> Result<Vec<Algorithm>, String> {
    list.iter()
        .map(|a| match a.trim().to_ascii_uppercase().as_str() {
            "RS256" => Ok(Algorithm::RS256),
            "RS384" => Ok(Algorithm::RS384),
            "RS512" => Ok(Algorithm::RS512),
            "PS256" => Ok(Algorithm::PS256),
            "ES256" => Ok(Algorithm::ES256),
            "ES384" => Ok(Algorithm::ES384),
            "EDDSA" => Ok(Algorithm::EdDSA),
            other => Err(format!(
                "KEYDESK_JWT_ALGORITHMS: {other:?} is not allowed (asymmetric algorithms only)"
            )),
        })
        .collect()
}

impl JwtVerifier {
    pub fn new(settings: JwtSettings) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            settings,
            http,
            cache: RwLock::new(Cache::default()),
        })
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let resp = self
            .http
            .get(&self.settings.jwks_url)
            .send()
            .await
            .map_err(|e| format!("JWKS fetch failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("JWKS fetch answered {}", resp.status()));
        }
        resp.json::<JwkSet>()
            .await
            .map_err(|e| format!("JWKS unreadable: {e}"))
    }

    /// The key for `kid`, refetching the set when it is unknown or stale.
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, String> {
        let lookup = |set: &JwkSet| -> Option<DecodingKey> {
            set.keys
                .iter()
                .filter(|k| match kid {
                    Some(kid) => k.common.key_id.as_deref() == Some(kid),
                    None => true,
                })
                .find_map(|k| DecodingKey::from_jwk(k).ok())
        };
        {
            let cache = self.cache.read().await;
            let fresh = cache.fetched.is_some_and(|t| t.elapsed() < MAX_AGE);
            if fresh
                && let Some(set) = &cache.set
                && let Some(k) = lookup(set)
            {
                return Ok(k);
            }
        }
        let mut cache = self.cache.write().await;
        // Rate limit refetches: an unknown kid must not become a request flood.
        // This holds from the very first request: an unreachable IdP is asked
        // at most once per interval, whether or not a set was ever fetched.
        let may_fetch = cache
            .last_attempt
            .is_none_or(|t| t.elapsed() >= REFETCH_INTERVAL);
        if may_fetch {
            cache.last_attempt = Some(Instant::now());
            match self.fetch().await {
                Ok(set) => {
                    cache.set = Some(set);
                    cache.fetched = Some(Instant::now());
                }
                Err(e) => tracing::warn!(error = %e, "could not refresh the JWKS"),
            }
        }
        cache
            .set
            .as_ref()
            .and_then(lookup)
            .ok_or_else(|| format!("no signing key for kid {kid:?} ({alg:?})"))
    }

    /// Verifies `token`; returns the identity and its groups.
    pub async fn verify(&self, token: &str) -> Result<(String, Vec<String>), String> {
        let header = decode_header(token).map_err(|e| format!("unreadable JWT header: {e}"))?;
        if !self.settings.algorithms.contains(&header.alg) {
            return Err(format!("JWT algorithm {:?} is not allowed", header.alg));
        }
        let key = self.key_for(header.kid.as_deref(), header.alg).await?;
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[self.settings.issuer.as_str()]);
        v.set_audience(&self.settings.audience);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = decode::<serde_json::Value>(token, &key, &v)
            .map_err(|e| format!("JWT rejected: {e}"))?;
        identity_of(
            &data.claims,
            &self.settings.email_claim,
            &self.settings.groups_claim,
        )
    }
}

/// The identity and groups in a verified token's claims: the email claim
/// trimmed, non-empty, at most 320 bytes, no control character; groups as
/// an array of strings or one comma-separated string.
pub fn identity_of(
    claims: &serde_json::Value,
    email_claim: &str,
    groups_claim: &str,
) -> Result<(String, Vec<String>), String> {
    let email = claims
        .get(email_claim)
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 320 && !s.chars().any(char::is_control))
        .ok_or_else(|| format!("JWT has no usable {email_claim:?} claim"))?
        .to_string();
    let groups = match claims.get(groups_claim) {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(s)) => s
            .split(',')
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    Ok((email, groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any JSON value: the claims of a token whose signature checked out.
    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
            "[ -~]{0,40}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::hash_map("email|groups|[a-z]{1,5}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// The email claim: accepted exactly when the one identity check
        /// (`email::usable`) accepts it, and then as that check returns it;
        /// otherwise refused in words naming the claim. Never a panic.
        #[test]
        fn claims_give_a_usable_identity_or_a_refusal(claims in json(), email in any::<String>()) {
            let mut with_email = claims.clone();
            if let serde_json::Value::Object(m) = &mut with_email {
                m.insert("email".into(), serde_json::Value::from(email.clone()));
            }
            for c in [&claims, &with_email] {
                let raw = c.get("email").and_then(|v| v.as_str());
                match (identity_of(c, "email", "groups"), raw) {
                    (Ok((e, groups)), Some(raw)) => {
                        prop_assert_eq!(Ok(e.as_str()), crate::email::usable(raw));
                        match c.get("groups") {
                            Some(serde_json::Value::String(s)) => prop_assert!(
                                groups.iter().all(|g| !g.is_empty() && g.trim() == g && s.contains(g.as_str()))
                            ),
                            Some(serde_json::Value::Array(a)) => prop_assert_eq!(
                                groups,
                                a.iter().filter_map(|g| g.as_str().map(str::to_string)).collect::<Vec<_>>()
                            ),
                            _ => prop_assert!(groups.is_empty()),
                        }
                    }
                    (Ok(_), None) => prop_assert!(false, "an identity without an email claim"),
                    (Err(why), raw) => {
                        prop_assert_eq!(why, "JWT has no usable \"email\" claim");
                        prop_assert!(raw.is_none_or(|r| crate::email::usable(r).is_err()));
                    }
                }
            }
        }
    }

    #[test]
    fn symmetric_and_none_algorithms_cannot_be_configured() {
        assert!(parse_algorithms(&["HS256".into()]).is_err());
        assert!(parse_algorithms(&["none".into()]).is_err());
        assert_eq!(
            parse_algorithms(&["rs256".into(), "ES256".into()]).unwrap(),
            vec![Algorithm::RS256, Algorithm::ES256]
        );
    }
}
