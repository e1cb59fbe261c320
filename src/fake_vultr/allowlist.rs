//! The fake's API allowlist (`/v2/users/{id}/ip-whitelist`), with the rules
//! Vultr enforces: public addresses only, IPv4 /8–/32, IPv6 /20–/128.
//! Adding is idempotent; removing takes the entry as a JSON body.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{FakeVultr, lock, now_rfc3339, vultr_error};
use crate::allowlist::Entry;

/// Vultr's defaults for a new user: "Any IPv4" and "Any IPv6".
pub(super) fn defaults() -> Vec<Entry> {
    let long_ago = time::Duration::days(-100);
    vec![entry("0.0.0.0", 0, long_ago), entry("::", 0, long_ago)]
}

/// An entry added `ago` from now (negative: in the past).
fn entry(subnet: &str, size: u32, ago: time::Duration) -> Entry {
    Entry {
        subnet: subnet.to_string(),
        subnet_size: Some(size),
        date_added: Some(now_rfc3339(ago)),
        ip_type: Some(if subnet.contains(':') { "v6" } else { "v4" }.into()),
    }
}

impl FakeVultr {
    /// Replaces a user's allowlist with `cidrs` (`203.0.113.0/24`…), as the console would.
    pub fn set_allowlist(&self, user_id: &str, cidrs: &[&str]) {
        let list = cidrs
            .iter()
            .filter_map(|c| c.split_once('/'))
            .map(|(a, s)| entry(a, s.parse().unwrap_or(32), time::Duration::days(-30)))
            .collect();
        lock(&self.inner.data)
            .allowlists
            .insert(user_id.to_string(), list);
    }

    /// A user's allowlist as stored.
    pub fn allowlist_of(&self, user_id: &str) -> Vec<Entry> {
        lock(&self.inner.data)
            .allowlists
            .get(user_id)
            .cloned()
            .unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct Body {
    subnet: Option<String>,
    subnet_size: Option<serde_json::Value>,
}

/// The entry a write names, checked by Vultr's rules; or why not.
fn parse(body: &Bytes) -> Result<ipnet::IpNet, String> {
    let b: Body = serde_json::from_slice(body).map_err(|_| "Invalid JSON.".to_string())?;
    let subnet = b.subnet.ok_or("subnet is required.")?;
    let size = match b.subnet_size {
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err("subnet_size is required.".into()),
    };
    crate::allowlist::check(&subnet, &size)
}

pub(super) async fn list(State(fake): State<FakeVultr>, Path(id): Path<String>) -> Response {
    let data = lock(&fake.inner.data);
    if !data.users.iter().any(|u| u.id == id) {
        return vultr_error(StatusCode::NOT_FOUND, "User not found.");
    }
    let list = data.allowlists.get(&id).cloned().unwrap_or_default();
    Json(json!({ "ip_whitelist": list })).into_response()
}

pub(super) async fn add(
    State(fake): State<FakeVultr>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let net = match parse(&body) {
        Ok(n) => n,
        Err(why) => return vultr_error(StatusCode::BAD_REQUEST, &why),
    };
    let mut data = lock(&fake.inner.data);
    if !data.users.iter().any(|u| u.id == id) {
        return vultr_error(StatusCode::NOT_FOUND, "User not found.");
    }
    let list = data.allowlists.entry(id).or_default();
    if !list.iter().any(|e| e.net() == Some(net)) {
        let size = u32::from(net.prefix_len());
        list.push(entry(
            &net.network().to_string(),
            size,
            time::Duration::ZERO,
        ));
    }
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn remove(
    State(fake): State<FakeVultr>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    // Removing may name an entry Vultr itself made (`0.0.0.0/0`), which
    // could never be added: only the shape is checked here.
    let b: Option<Body> = serde_json::from_slice(&body).ok();
    let named = b.and_then(|b| {
        let size = b.subnet_size.and_then(|v| v.as_u64())?;
        Some((b.subnet?, size))
    });
    let Some((subnet, size)) = named else {
        return vultr_error(
            StatusCode::BAD_REQUEST,
            "subnet and subnet_size are required.",
        );
    };
    let mut data = lock(&fake.inner.data);
    let Some(list) = data.allowlists.get_mut(&id) else {
        return vultr_error(StatusCode::NOT_FOUND, "User not found.");
    };
    let before = list.len();
    list.retain(|e| !(e.subnet == subnet && e.subnet_size == u32::try_from(size).ok()));
    if list.len() == before {
        return vultr_error(StatusCode::NOT_FOUND, "Entry not found.");
    }
    StatusCode::NO_CONTENT.into_response()
}
