//! The fake's routes: Vultr's user and API-key endpoints, answered in
//! Vultr's words (literal JSON), behind the bearer check.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::paging::{ListQuery, page_meta, page_window};
use super::{Data, FakeVultr, StoredKey, lock, now_rfc3339, random_key, vultr_error};
use crate::vultr::User;

impl FakeVultr {
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v2/users", get(list_users))
            .route("/v2/users/{id}", get(get_user).patch(patch_user))
            .route("/v2/users/{id}/apikeys", get(list_keys).post(create_key))
            .route(
                "/v2/users/{id}/apikeys/{key}",
                get(get_key).delete(delete_key),
            )
            .route(
                "/v2/users/{id}/ip-whitelist",
                get(super::allowlist::list)
                    .post(super::allowlist::add)
                    .delete(super::allowlist::remove),
            )
            .fallback(|| async { vultr_error(StatusCode::NOT_FOUND, "Not found.") })
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
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
