//! Serde models of the Vultr API v2 objects keydesk reads and writes.
//!
//! Every field but `id` is optional and unknown fields are ignored: Vultr adds
//! and deprecates fields over time and keydesk must keep working.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::timefmt::{display_time, display_time_relative, parse_time};

/// A user of the Vultr account (`GET /v2/users`, `GET /v2/users/{id}`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct User {
    pub id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Deprecated since 07/2025; older data may carry only this.
    pub name: Option<String>,
    pub email: Option<String>,
    pub api_enabled: Option<bool>,
    pub acls: Option<Vec<String>>,
    pub service_user: Option<bool>,
    pub status: Option<String>,
    pub last_activity: Option<String>,
    /// Shape not pinned down by the docs (id, email or name): kept as raw JSON.
    pub invited_by: Option<serde_json::Value>,
    pub invited_on: Option<String>,
    pub invite_accepted: Option<serde_json::Value>,
}

impl User {
    /// The name staff recognise: first + last, else the deprecated `name`, else the email.
    pub fn display_name(&self) -> String {
        let parts: Vec<&str> = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            return parts.join(" ");
        }
        if let Some(n) = self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            return n.to_string();
        }
        self.email.clone().unwrap_or_else(|| self.id.clone())
    }

    pub fn email_or_dash(&self) -> &str {
        self.email.as_deref().unwrap_or("—")
    }

    pub fn status_or_dash(&self) -> &str {
        self.status.as_deref().unwrap_or("—")
    }

    /// API access defaults to "on" when the field is absent, as in the console.
    pub fn api_access(&self) -> bool {
        self.api_enabled.unwrap_or(true)
    }

    pub fn is_service_user(&self) -> bool {
        self.service_user.unwrap_or(false)
    }

    pub fn acl_list(&self) -> String {
        match &self.acls {
            Some(a) if !a.is_empty() => a.join(", "),
            _ => "—".to_string(),
        }
    }

    pub fn last_activity_display(&self) -> String {
        display_time_relative(self.last_activity.as_deref())
    }

    /// Sort key for "last activity": missing sorts as oldest.
    pub fn last_activity_ts(&self) -> i64 {
        self.last_activity
            .as_deref()
            .and_then(parse_time)
            .map_or(i64::MIN, |t| t.unix_timestamp())
    }

    pub fn invited_by_display(&self) -> String {
        json_display(self.invited_by.as_ref())
    }

    pub fn invited_on_display(&self) -> String {
        display_time(self.invited_on.as_deref())
    }

    pub fn invite_accepted_display(&self) -> String {
        json_display(self.invite_accepted.as_ref())
    }

    /// Case-insensitive match on any name field or the email.
    pub fn matches(&self, needle_lower: &str) -> bool {
        [
            Some(self.display_name()),
            self.name.clone(),
            self.email.clone(),
        ]
        .into_iter()
        .flatten()
        .any(|h| h.to_lowercase().contains(needle_lower))
    }
}

fn json_display(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => "—".to_string(),
        Some(serde_json::Value::String(s)) if s.is_empty() => "—".to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Bool(b)) => if *b { "yes" } else { "no" }.to_string(),
        Some(other) => other.to_string(),
    }
}

/// A user's API key as lists and gets return it: the secret is masked.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub name: Option<String>,
    pub expire: Option<bool>,
    pub date_expire: Option<String>,
    /// Masked, e.g. `****…00000`. Never the full secret in this type.
    pub api_key: Option<String>,
    pub date_created: Option<String>,
}

/// Where a key stands today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Never,
    Expired,
    ExpiresIn(i64),
}

impl ApiKey {
    pub fn name_or_dash(&self) -> &str {
        self.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or("(unnamed)")
    }

    pub fn expiry_time(&self) -> Option<OffsetDateTime> {
        self.date_expire.as_deref().and_then(parse_time)
    }

    pub fn state_at(&self, now: OffsetDateTime) -> KeyState {
        // A key without a usable expiry date never expires, whatever the flag says.
        match (self.expire.unwrap_or(true), self.expiry_time()) {
            (true, Some(t)) => {
                if t <= now {
                    KeyState::Expired
                } else {
                    // The same rule as every relative date: a key expiring
                    // in 3 hours "expires in 1 day".
                    KeyState::ExpiresIn(crate::timefmt::days_until(t, now))
                }
            }
            _ => KeyState::Never,
        }
    }

    pub fn state(&self) -> KeyState {
        self.state_at(OffsetDateTime::now_utc())
    }

    pub fn state_label(&self) -> String {
        match self.state() {
            KeyState::Never => "never expires".to_string(),
            KeyState::Expired => "expired".to_string(),
            KeyState::ExpiresIn(1) => "expires in 1 day".to_string(),
            KeyState::ExpiresIn(n) => format!("expires in {n} days"),
        }
    }

    /// CSS class for the state badge.
    pub fn state_class(&self) -> &'static str {
        match self.state() {
            KeyState::Never => "state-never",
            KeyState::Expired => "state-expired",
            KeyState::ExpiresIn(n) if n <= 7 => "state-soon",
            KeyState::ExpiresIn(_) => "state-ok",
        }
    }

    pub fn expiry_display(&self) -> String {
        match self.state() {
            KeyState::Never => "—".to_string(),
            _ => display_time_relative(self.date_expire.as_deref()),
        }
    }

    pub fn masked(&self) -> &str {
        self.api_key.as_deref().unwrap_or("—")
    }

    pub fn created_display(&self) -> String {
        display_time_relative(self.date_created.as_deref())
    }
}

/// The create response: the only type that ever holds a full key.
/// `SecretString`'s Debug prints `[REDACTED]`, so a stray `{:?}` leaks nothing.
#[derive(Debug, Deserialize)]
pub struct CreatedApiKey {
    pub id: String,
    pub name: Option<String>,
    pub expire: Option<bool>,
    pub date_expire: Option<String>,
    pub api_key: SecretString,
}

impl CreatedApiKey {
    /// The masked view of this key, for lists and logs.
    pub fn summary(&self) -> ApiKey {
        ApiKey {
            id: self.id.clone(),
            name: self.name.clone(),
            expire: self.expire,
            date_expire: self.date_expire.clone(),
            api_key: None,
            date_created: None,
        }
    }
}

/// Body of `POST /v2/users/{id}/apikeys`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewApiKey {
    pub name: String,
    pub expire: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub date_expire: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Links {
    pub next: Option<String>,
    pub prev: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Meta {
    pub total: Option<u64>,
    pub links: Option<Links>,
}

impl Meta {
    fn link(&self, pick: impl Fn(&Links) -> Option<&String>) -> Option<String> {
        self.links
            .as_ref()
            .and_then(pick)
            .filter(|c| !c.is_empty())
            .cloned()
    }
    pub fn next_cursor(&self) -> Option<String> {
        self.link(|l| l.next.as_ref())
    }
}

/// One page of `GET /v2/users`. The `users` field is required: an answer
/// without it is malformed, never "no users" (`meta` may be absent).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct UsersPage {
    pub users: Vec<User>,
    #[serde(default)]
    pub meta: Meta,
}

impl UsersPage {
    pub fn next_cursor(&self) -> Option<String> {
        self.meta.next_cursor()
    }
    pub fn prev_cursor(&self) -> Option<String> {
        self.meta.link(|l| l.prev.as_ref())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct UserEnvelope {
    pub user: User,
}

/// One page of `GET /v2/users/{id}/apikeys`. `api_keys` is required: a 200
/// without it must never read as "this user has no keys" (offboarding and
/// the clean-up would call live keys gone).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct KeysEnvelope {
    pub api_keys: Vec<ApiKey>,
    #[serde(default)]
    pub meta: Meta,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct KeyEnvelope {
    pub api_key: ApiKey,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CreatedEnvelope {
    pub api_key: CreatedApiKey,
}

/// Vultr's error body: `{"error": "...", "status": N}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn user_tolerates_missing_and_unknown_fields() {
        let u: User = serde_json::from_str(r#"{"id":"abc","surprise":1,"acls":null}"#).unwrap();
        assert_eq!(u.display_name(), "abc");
        assert!(u.api_access());
        assert_eq!(u.acl_list(), "—");
    }

    #[test]
    fn display_name_falls_back_to_deprecated_name_then_email() {
        let u: User =
            serde_json::from_str(r#"{"id":"a","name":"Old Name","email":"e@x"}"#).unwrap();
        assert_eq!(u.display_name(), "Old Name");
        let u: User = serde_json::from_str(r#"{"id":"a","email":"e@x","first_name":""}"#).unwrap();
        assert_eq!(u.display_name(), "e@x");
    }

    #[test]
    fn key_state_buckets() {
        let now = OffsetDateTime::now_utc();
        let mk = |expire: bool, d: Option<OffsetDateTime>| ApiKey {
            id: "k".into(),
            expire: Some(expire),
            date_expire: d.map(|d| d.format(&Rfc3339).unwrap()),
            ..Default::default()
        };
        assert_eq!(mk(false, None).state_at(now), KeyState::Never);
        assert_eq!(mk(true, None).state_at(now), KeyState::Never);
        assert_eq!(
            mk(true, Some(now - time::Duration::days(1))).state_at(now),
            KeyState::Expired
        );
        assert_eq!(
            mk(true, Some(now + time::Duration::hours(3))).state_at(now),
            KeyState::ExpiresIn(1)
        );
        assert_eq!(
            mk(true, Some(now + time::Duration::days(90))).state_at(now),
            KeyState::ExpiresIn(90)
        );
    }

    #[test]
    fn envelopes_without_their_field_are_malformed_not_empty() {
        assert!(serde_json::from_str::<UsersPage>(r#"{"meta":{}}"#).is_err());
        assert!(serde_json::from_str::<KeysEnvelope>(r#"{}"#).is_err());
        assert!(serde_json::from_str::<KeysEnvelope>(r#"{"api_keys":null}"#).is_err());
        assert!(serde_json::from_str::<UserEnvelope>(r#"{"users":[]}"#).is_err());
        assert!(serde_json::from_str::<KeyEnvelope>(r#"{}"#).is_err());
        let page: UsersPage = serde_json::from_str(r#"{"users":[]}"#).unwrap();
        assert!(page.users.is_empty() && page.next_cursor().is_none());
        let keys: KeysEnvelope =
            serde_json::from_str(r#"{"api_keys":[],"meta":{"links":{"next":"c2"}}}"#).unwrap();
        assert_eq!(keys.meta.next_cursor().as_deref(), Some("c2"));
    }

    #[test]
    fn created_key_debug_hides_the_secret() {
        let k: CreatedApiKey =
            serde_json::from_str(r#"{"id":"1","api_key":"SUPERSECRETVALUE12345"}"#).unwrap();
        assert!(!format!("{k:?}").contains("SUPERSECRET"));
    }
}
