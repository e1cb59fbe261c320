//! Typed async client for the parts of the Vultr API v2 keydesk uses.
//!
//! One `reqwest::Client` for the whole process. The root key is a
//! `SecretString` exposed at exactly one place: the bearer header.

pub mod types;

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

pub use types::*;

/// Largest upstream body keydesk will buffer; anything bigger is refused.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Everything that can go wrong talking to Vultr, in terms a page can explain.
#[derive(Debug, thiserror::Error)]
pub enum VultrError {
    /// Vultr answered with an error status (its `{"error": ...}` message when it sent one).
    #[error("Vultr answered {status}: {message}")]
    Api { status: u16, message: String },
    /// The connection could not be made: nothing reached Vultr.
    #[error("Vultr is unreachable: {0}")]
    Unreachable(String),
    /// No answer in time (for reads; writes use `OutcomeUnknown`).
    #[error("Vultr did not answer in time")]
    Timeout,
    /// A write was sent but its answer was lost: it may or may not have happened.
    #[error("the request reached Vultr but its answer was lost: {0}")]
    OutcomeUnknown(String),
    /// The body was not what the API documents.
    #[error("Vultr sent a response keydesk cannot read: {0}")]
    Malformed(String),
    /// An id that is not a plain Vultr id; refused before any call.
    #[error("invalid id")]
    InvalidId,
}

impl VultrError {
    pub fn status(&self) -> Option<u16> {
        match self {
            VultrError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Characters that may not appear raw in a path segment: everything but alphanumerics and `-_`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

/// Vultr ids are short hex strings or UUIDs. Anything else (`..`, `/`, NUL, 5 000
/// characters) is rejected so that no id can steer keydesk to another upstream path.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn segment(id: &str) -> Result<String, VultrError> {
    if !valid_id(id) {
        return Err(VultrError::InvalidId);
    }
    // Defence in depth: the validation above already excludes every encodable byte.
    Ok(utf8_percent_encode(id, SEGMENT).to_string())
}

#[derive(Clone)]
pub struct VultrClient {
    http: reqwest::Client,
    base: String,
    key: SecretString,
}

impl std::fmt::Debug for VultrClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VultrClient")
            .field("base", &self.base)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

impl VultrClient {
    pub fn new(base: &str, key: SecretString, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .user_agent(concat!("keydesk/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    #[tracing::instrument(skip_all, fields(vultr.cursor_present = cursor.is_some()))]
    pub async fn list_users(
        &self,
        per_page: u32,
        cursor: Option<&str>,
    ) -> Result<UsersPage, VultrError> {
        let mut query: Vec<(&str, String)> = vec![("per_page", per_page.to_string())];
        if let Some(c) = cursor.filter(|c| !c.is_empty()) {
            query.push(("cursor", c.to_string()));
        }
        self.get_json("/v2/users", &query).await
    }

    /// Every user, following cursors (used by search across pages).
    pub async fn list_all_users(&self) -> Result<Vec<User>, VultrError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        // A bound on pages protects against an upstream that loops its cursors.
        for _ in 0..1000 {
            let page = self.list_users(500, cursor.as_deref()).await?;
            let next = page.next_cursor();
            out.extend(page.users);
            match next {
                Some(n) if Some(&n) != cursor.as_ref() => cursor = Some(n),
                _ => break,
            }
        }
        Ok(out)
    }

    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id))]
    pub async fn get_user(&self, user_id: &str) -> Result<User, VultrError> {
        let path = format!("/v2/users/{}", segment(user_id)?);
        let env: UserEnvelope = self.get_json(&path, &[]).await?;
        Ok(env.user)
    }

    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id))]
    pub async fn list_keys(&self, user_id: &str) -> Result<Vec<ApiKey>, VultrError> {
        let path = format!("/v2/users/{}/apikeys", segment(user_id)?);
        let env: KeysEnvelope = self.get_json(&path, &[]).await?;
        Ok(env.api_keys)
    }

    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id, key.id = %key_id))]
    pub async fn get_key(&self, user_id: &str, key_id: &str) -> Result<ApiKey, VultrError> {
        let path = format!(
            "/v2/users/{}/apikeys/{}",
            segment(user_id)?,
            segment(key_id)?
        );
        let env: KeyEnvelope = self.get_json(&path, &[]).await?;
        Ok(env.api_key)
    }

    /// Creates a key. Never retried: a lost answer is `OutcomeUnknown`, not a second POST.
    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id))]
    pub async fn create_key(
        &self,
        user_id: &str,
        body: &NewApiKey,
    ) -> Result<CreatedApiKey, VultrError> {
        let path = format!("/v2/users/{}/apikeys", segment(user_id)?);
        let req = self.request(Method::POST, &path).json(body);
        let bytes = self.send(req, true).await?;
        let env: CreatedEnvelope = serde_json::from_slice(&bytes)
            // serde's message names the field, never its value: safe to keep.
            .map_err(|e| VultrError::Malformed(format!("create response: {e}")))?;
        Ok(env.api_key)
    }

    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id, key.id = %key_id))]
    pub async fn delete_key(&self, user_id: &str, key_id: &str) -> Result<(), VultrError> {
        let path = format!(
            "/v2/users/{}/apikeys/{}",
            segment(user_id)?,
            segment(key_id)?
        );
        self.send(self.request(Method::DELETE, &path), true).await?;
        Ok(())
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            // The one place the root key leaves its SecretString.
            .bearer_auth(self.key.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, VultrError> {
        let bytes = self
            .send(self.request(Method::GET, path).query(query), false)
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| VultrError::Malformed(e.to_string()))
    }

    /// Sends, maps transport and status errors, and reads a bounded body.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        is_write: bool,
    ) -> Result<Vec<u8>, VultrError> {
        let mut resp = req
            .send()
            .await
            .map_err(|e| transport_error(&e, is_write))?;
        let status = resp.status();
        if let Some(len) = resp.content_length()
            && len > MAX_BODY_BYTES as u64
        {
            return Err(VultrError::Malformed(format!(
                "response of {len} bytes exceeds the {MAX_BODY_BYTES}-byte limit"
            )));
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        return Err(VultrError::Malformed(format!(
                            "response exceeds the {MAX_BODY_BYTES}-byte limit"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(transport_error(&e, is_write)),
            }
        }
        if status.is_success() {
            return Ok(body);
        }
        Err(api_error(status, &body))
    }
}

fn api_error(status: StatusCode, body: &[u8]) -> VultrError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.error)
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("unexpected status")
                .to_string()
        });
    // Bound what an upstream can make us display and log.
    let message: String = message.chars().take(300).collect();
    VultrError::Api {
        status: status.as_u16(),
        message,
    }
}

fn transport_error(e: &reqwest::Error, is_write: bool) -> VultrError {
    // reqwest's Display includes the URL, which holds no secret (ids only).
    if e.is_connect() {
        return VultrError::Unreachable(e.to_string());
    }
    if is_write {
        return VultrError::OutcomeUnknown(if e.is_timeout() {
            "timed out".to_string()
        } else {
            e.to_string()
        });
    }
    if e.is_timeout() {
        VultrError::Timeout
    } else {
        VultrError::Unreachable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_ids_are_rejected() {
        for bad in [
            "",
            "..",
            "../../account",
            "a/b",
            "%2e%2e",
            "a\0b",
            "a b",
            &"x".repeat(5000),
        ] {
            assert!(segment(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(segment("f255efc9700d9").unwrap(), "f255efc9700d9");
        assert!(segment("3b8f1c2e-9d4a-4f6b-8e2a-1c0d9e8f7a6b").is_ok());
    }

    #[test]
    fn client_debug_hides_the_root_key() {
        let c = VultrClient::new(
            "http://x",
            SecretString::from("ROOTKEY-DO-NOT-LEAK"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("ROOTKEY"));
    }

    #[test]
    fn error_body_message_is_used() {
        let e = api_error(
            StatusCode::UNAUTHORIZED,
            br#"{"error":"Invalid API token.","status":401}"#,
        );
        assert!(
            matches!(e, VultrError::Api { status: 401, ref message } if message == "Invalid API token.")
        );
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>");
        assert!(
            matches!(e, VultrError::Api { status: 502, ref message } if message == "Bad Gateway")
        );
    }
}
