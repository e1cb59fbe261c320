//! An in-process fake of the Vultr API v2 user and API-key endpoints.
//!
//! It serves `keydesk demo` and the integration tests over real HTTP, so the
//! real client is always exercised. It follows the documented shapes: cursor
//! pagination, masked keys in lists and gets, the full key only on create,
//! 401 on a wrong bearer, 404 on unknown ids. What it sends and what it reads
//! is written here as literal JSON with Vultr's field names, never through
//! keydesk's own types, so a field keydesk renamed fails the tests. It also
//! speaks every documented variant: a never-expiring key's `date_expire` as
//! `null` and as `""`, short hex and UUID user ids, and a create answered 201
//! (hex ids) or 200 (UUID ids).
//!
//! The demo runs it as it is. Tests and benches build keydesk with the
//! `test-support` feature, which adds the knobs in `knobs.rs`: a request log
//! (with headers, to assert what keydesk sent), fault modes, latency and
//! Vultr's rate limit. None of that ships in the release binary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::vultr::{ApiKey, User};

mod allowlist;
#[cfg(feature = "test-support")]
mod knobs;
mod paging;
mod routes;
mod seed;

#[cfg(feature = "test-support")]
pub use knobs::{Fault, Recorded, VULTR_RPS};

#[derive(Debug, Clone)]
struct StoredKey {
    id: String,
    name: String,
    expire: bool,
    date_expire: Option<String>,
    secret: String,
    date_created: String,
}

impl StoredKey {
    /// `date_expire` of a key that never expires: Vultr has sent both
    /// `null` and `""`; the fake sends each, by the parity of the name's length.
    fn date_expire_json(&self) -> serde_json::Value {
        match &self.date_expire {
            Some(d) => json!(d),
            None if self.name.len().is_multiple_of(2) => serde_json::Value::Null,
            None => json!(""),
        }
    }

    /// The key as lists and gets show it, in Vultr's words.
    fn masked_json(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "name": self.name,
            "expire": self.expire,
            "date_expire": self.date_expire_json(),
            "api_key": self.mask(),
            "date_created": self.date_created,
        })
    }

    fn mask(&self) -> String {
        let tail: String = self
            .secret
            .chars()
            .skip(self.secret.len().saturating_sub(5))
            .collect();
        format!("{}{}", "*".repeat(31), tail)
    }

    /// The key as the tests' helpers see it (not a wire format).
    fn masked(&self) -> ApiKey {
        ApiKey {
            id: self.id.clone(),
            name: Some(self.name.clone()),
            expire: Some(self.expire),
            date_expire: self.date_expire.clone(),
            api_key: Some(self.mask()),
            date_created: Some(self.date_created.clone()),
        }
    }
}

#[derive(Default)]
struct Data {
    users: Vec<User>,
    keys: HashMap<String, Vec<StoredKey>>,
    /// Each user's API allowlist, Vultr's two "any" entries by default.
    allowlists: HashMap<String, Vec<crate::allowlist::Entry>>,
}

struct Inner {
    token: String,
    data: Mutex<Data>,
    /// Request log, faults, latency and rate limit: tests and benches only.
    #[cfg(feature = "test-support")]
    knobs: knobs::Knobs,
}

/// Handle on a fake Vultr: its data, its request log and its fault switch.
#[derive(Clone)]
pub struct FakeVultr {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not wedge the fake for everyone else.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_rfc3339(offset: time::Duration) -> String {
    (OffsetDateTime::now_utc() + offset)
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Every secret the fake issues starts with this, so a fake key found in a
/// log, a config or a ticket is recognised at once.
pub const FAKE_KEY_PREFIX: &str = "FAKE";

/// A 36-character key of the alphabet Vultr uses, starting `FAKE`.
pub fn random_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let rest: String = (FAKE_KEY_PREFIX.len()..36)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{FAKE_KEY_PREFIX}{rest}")
}

impl FakeVultr {
    /// An empty fake that accepts `token` as the root key.
    pub fn new(token: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                token: token.to_string(),
                data: Mutex::new(Data::default()),
                #[cfg(feature = "test-support")]
                knobs: knobs::Knobs::default(),
            }),
        }
    }

    /// Adds a user with Vultr's default allowlist ("Any IPv4", "Any IPv6").
    pub fn add_user(&self, user: User) -> String {
        let id = user.id.clone();
        let mut data = lock(&self.inner.data);
        data.users.push(user);
        data.allowlists.insert(id.clone(), allowlist::defaults());
        id
    }

    /// Adds a key that expires after `expires_in` (never when `None`); returns its id.
    pub fn add_key(&self, user_id: &str, name: &str, expires_in: Option<time::Duration>) -> String {
        self.add_key_with_id(uuid::Uuid::new_v4().to_string(), user_id, name, expires_in)
    }

    /// A key that expires at `at` exactly; returns its id.
    pub fn add_key_expiring(&self, user_id: &str, name: &str, at: time::OffsetDateTime) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let date = at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let key = StoredKey {
            id: id.clone(),
            name: name.to_string(),
            expire: true,
            date_expire: Some(date),
            secret: random_key(),
            date_created: now_rfc3339(time::Duration::days(-30)),
        };
        lock(&self.inner.data)
            .keys
            .entry(user_id.to_string())
            .or_default()
            .push(key);
        id
    }

    /// `add_key` with a given key id.
    pub fn add_key_with_id(
        &self,
        id: String,
        user_id: &str,
        name: &str,
        expires_in: Option<time::Duration>,
    ) -> String {
        let key = StoredKey {
            id,
            name: name.to_string(),
            expire: expires_in.is_some(),
            date_expire: expires_in.map(now_rfc3339),
            secret: random_key(),
            date_created: now_rfc3339(time::Duration::days(-30)),
        };
        let id = key.id.clone();
        lock(&self.inner.data)
            .keys
            .entry(user_id.to_string())
            .or_default()
            .push(key);
        id
    }

    pub fn users(&self) -> Vec<User> {
        lock(&self.inner.data).users.clone()
    }

    /// Masked keys of a user, as the API lists them.
    pub fn keys_of(&self, user_id: &str) -> Vec<ApiKey> {
        lock(&self.inner.data)
            .keys
            .get(user_id)
            .map(|ks| ks.iter().map(StoredKey::masked).collect())
            .unwrap_or_default()
    }

    /// Serves the fake on `127.0.0.1:0`; returns its base URL.
    pub async fn spawn(&self) -> std::io::Result<String> {
        self.spawn_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves the fake on `addr` (`keydesk fake-vultr --listen`); its base URL.
    pub async fn spawn_on(&self, addr: SocketAddr) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr: SocketAddr = listener.local_addr()?;
        let app = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "fake Vultr stopped");
            }
        });
        Ok(format!("http://{addr}"))
    }
}

fn vultr_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": message, "status": status.as_u16()})),
    )
        .into_response()
}
