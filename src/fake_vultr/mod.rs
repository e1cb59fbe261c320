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

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::vultr::{ApiKey, User};

#[cfg(feature = "test-support")]
mod knobs;
mod paging;
mod seed;

#[cfg(feature = "test-support")]
pub use knobs::{Fault, Recorded, VULTR_RPS};
use paging::{ListQuery, page_meta, page_window};

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

    pub fn add_user(&self, user: User) -> String {
        let id = user.id.clone();
        lock(&self.inner.data).users.push(user);
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

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v2/users", get(list_users))
            .route("/v2/users/{id}", get(get_user).patch(patch_user))
            .route("/v2/users/{id}/apikeys", get(list_keys).post(create_key))
            .route(
                "/v2/users/{id}/apikeys/{key}",
                get(get_key).delete(delete_key),
            )
            .fallback(|| async { vultr_error(StatusCode::NOT_FOUND, "Not found.") })
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
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

/// A user in Vultr's words (`api_key`, the legacy field, is sent empty as
/// Vultr does; unknown to keydesk, it must be ignored).
fn user_json(u: &User) -> serde_json::Value {
    json!({
        "id": u.id,
        "first_name": u.first_name,
        "last_name": u.last_name,
        "name": u.name,
        "email": u.email,
        "api_enabled": u.api_enabled,
        "acls": u.acls,
        "service_user": u.service_user,
        "status": u.status,
        "last_activity": u.last_activity,
        "invited_by": u.invited_by,
        "invited_on": u.invited_on,
        "invite_accepted": u.invite_accepted,
        "api_key": "",
    })
}

fn vultr_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": message, "status": status.as_u16()})),
    )
        .into_response()
}

/// Checks the bearer, as Vultr does. With `test-support`, first records the
/// request and applies the test knobs (rate limit, latency, faults).
async fn guard(
    State(fake): State<FakeVultr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    #[cfg(feature = "test-support")]
    let req = match fake.inner.knobs.before(req).await {
        Ok(req) => req,
        Err(answer) => return answer,
    };
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if bearer != Some(&format!("Bearer {}", fake.inner.token)) {
        return vultr_error(StatusCode::UNAUTHORIZED, "Invalid API token.");
    }
    #[cfg(feature = "test-support")]
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let answer = next.run(req).await;
    // A gateway that loses the answer after Vultr acted.
    #[cfg(feature = "test-support")]
    let answer = fake.inner.knobs.after(&method, &path, answer).await;
    answer
}

async fn list_users(State(fake): State<FakeVultr>, Query(q): Query<ListQuery>) -> Response {
    let (per_page, offset) = match page_window(&q) {
        Ok(w) => w,
        Err(message) => return vultr_error(StatusCode::BAD_REQUEST, message),
    };
    let data = lock(&fake.inner.data);
    let total = data.users.len();
    let page: Vec<serde_json::Value> = data
        .users
        .iter()
        .skip(offset)
        .take(per_page)
        .map(user_json)
        .collect();
    Json(json!({ "users": page, "meta": page_meta(offset, per_page, total) })).into_response()
}

async fn get_user(State(fake): State<FakeVultr>, Path(id): Path<String>) -> Response {
    let data = lock(&fake.inner.data);
    match data.users.iter().find(|u| u.id == id) {
        Some(u) => Json(json!({ "user": user_json(u) })).into_response(),
        None => vultr_error(StatusCode::NOT_FOUND, "User not found."),
    }
}

#[derive(Deserialize)]
struct PatchUser {
    api_enabled: Option<bool>,
}

async fn patch_user(
    State(fake): State<FakeVultr>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(patch) = serde_json::from_slice::<PatchUser>(&body) else {
        return vultr_error(StatusCode::BAD_REQUEST, "Invalid JSON.");
    };
    let mut data = lock(&fake.inner.data);
    match data.users.iter_mut().find(|u| u.id == id) {
        Some(u) => {
            if let Some(a) = patch.api_enabled {
                u.api_enabled = Some(a);
            }
            StatusCode::ACCEPTED.into_response()
        }
        None => vultr_error(StatusCode::NOT_FOUND, "User not found."),
    }
}

fn user_exists(data: &Data, id: &str) -> bool {
    data.users.iter().any(|u| u.id == id)
}

/// Paged like the users list, so keydesk's cursor following is exercised.
async fn list_keys(
    State(fake): State<FakeVultr>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    let (per_page, offset) = match page_window(&q) {
        Ok(w) => w,
        Err(message) => return vultr_error(StatusCode::BAD_REQUEST, message),
    };
    let data = lock(&fake.inner.data);
    if !user_exists(&data, &id) {
        return vultr_error(StatusCode::NOT_FOUND, "User not found.");
    }
    let all = data.keys.get(&id).map(Vec::as_slice).unwrap_or_default();
    let keys: Vec<serde_json::Value> = all
        .iter()
        .skip(offset)
        .take(per_page)
        .map(StoredKey::masked_json)
        .collect();
    Json(json!({ "api_keys": keys, "meta": page_meta(offset, per_page, all.len()) }))
        .into_response()
}

async fn get_key(
    State(fake): State<FakeVultr>,
    Path((id, key)): Path<(String, String)>,
) -> Response {
    let data = lock(&fake.inner.data);
    match data
        .keys
        .get(&id)
        .and_then(|ks| ks.iter().find(|k| k.id == key))
    {
        Some(k) => Json(json!({ "api_key": k.masked_json() })).into_response(),
        None => vultr_error(StatusCode::NOT_FOUND, "API key not found."),
    }
}

async fn create_key(
    State(fake): State<FakeVultr>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    #[cfg(feature = "test-support")]
    fake.inner.knobs.before_create().await;
    // Vultr's request fields, read by name: `name` (optional), `expire`
    // (bool) and `date_expire` (RFC 3339, required when `expire`).
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return vultr_error(StatusCode::BAD_REQUEST, "Invalid JSON.");
    };
    let name = match req.get("name") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(n)) => n.clone(),
        Some(_) => return vultr_error(StatusCode::BAD_REQUEST, "Invalid name."),
    };
    let expire = match req.get("expire") {
        None => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return vultr_error(StatusCode::BAD_REQUEST, "Invalid expire."),
    };
    let asked = req.get("date_expire").and_then(|d| d.as_str());
    let date_expire = if expire {
        match asked.map(|d| OffsetDateTime::parse(d, &Rfc3339)) {
            Some(Ok(t)) if t > OffsetDateTime::now_utc() => asked.map(str::to_string),
            _ => return vultr_error(StatusCode::BAD_REQUEST, "Invalid date_expire."),
        }
    } else {
        None
    };
    let mut data = lock(&fake.inner.data);
    if !user_exists(&data, &id) {
        return vultr_error(StatusCode::NOT_FOUND, "User not found.");
    }
    let key = StoredKey {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        expire,
        date_expire,
        secret: random_key(),
        date_created: now_rfc3339(time::Duration::ZERO),
    };
    let body = json!({"api_key": {
        "id": key.id,
        "name": key.name,
        "expire": key.expire,
        "date_expire": key.date_expire_json(),
        "api_key": key.secret,
        "date_created": key.date_created,
    }});
    // Vultr documents 201; 200 has been seen too. Users with UUID ids get 200.
    let status = if id.contains('-') {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    data.keys.entry(id).or_default().push(key);
    (status, Json(body)).into_response()
}

async fn delete_key(
    State(fake): State<FakeVultr>,
    Path((id, key)): Path<(String, String)>,
) -> Response {
    let mut data = lock(&fake.inner.data);
    let Some(keys) = data.keys.get_mut(&id) else {
        return vultr_error(StatusCode::NOT_FOUND, "API key not found.");
    };
    let before = keys.len();
    keys.retain(|k| k.id != key);
    if keys.len() == before {
        return vultr_error(StatusCode::NOT_FOUND, "API key not found.");
    }
    StatusCode::NO_CONTENT.into_response()
}
