//! Requests nobody is signed in on, and the `/auth/*` sign-in steps, are
//! counted per client address (`KEYDESK_ANON_*`) before anything reads or
//! writes the database: over the quota, a 429 with `Retry-After` and nothing
//! else. Whether a request is anonymous is decided here from what it carries
//! (no identity header from the proxy, no assertion, no session cookie);
//! a session cookie that turns out to name nobody is counted by the OpenID
//! gate, after the session is read and before anything is written.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use tower_sessions::cookie::Cookie;

use super::{AuthMode, peer_is_trusted};
use crate::client_quota::{ClientAddr, ClientQuota, client_addr};
use crate::error::AppError;

/// What a request of this sign-in mode carries when someone may be signed in.
#[derive(Clone, Debug)]
enum Credential {
    /// The demo: everyone is the demo identity.
    Always,
    /// Header mode: the identity header, from a trusted proxy.
    Header(HeaderName, Arc<[IpNet]>),
    /// JWT mode: the assertion header (verified by the gate, which writes
    /// nothing for a bad one).
    Assertion(HeaderName),
    /// OpenID mode: the session cookie.
    Cookie(&'static str),
}

impl Credential {
    fn of(auth: &AuthMode, cookie: &'static str) -> Self {
        match auth {
            AuthMode::Demo(_) => Credential::Always,
            AuthMode::Header {
                header, trusted, ..
            } => Credential::Header(header.clone(), trusted.clone().into()),
            AuthMode::Jwt(v) => Credential::Assertion(v.settings.header.clone()),
            AuthMode::Oidc(_) => Credential::Cookie(cookie),
        }
    }

    fn carried(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> bool {
        match self {
            Credential::Always => true,
            Credential::Header(name, trusted) => {
                headers.contains_key(name) && peer.is_some_and(|p| peer_is_trusted(p, trusted))
            }
            Credential::Assertion(name) => headers.contains_key(name),
            Credential::Cookie(name) => headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(Cookie::split_parse)
                .flatten()
                .any(|c| c.name() == *name),
        }
    }
}

/// The limiter's own state: the buckets, the proxies whose
/// `X-Forwarded-For` is believed, and what a signed-in request carries.
#[derive(Clone, Debug)]
pub struct ClientGate {
    quota: Arc<ClientQuota>,
    trusted: Arc<[IpNet]>,
    credential: Credential,
}

impl ClientGate {
    pub fn new(
        quota: Arc<ClientQuota>,
        trusted: &[IpNet],
        auth: &AuthMode,
        cookie: &'static str,
    ) -> Self {
        Self {
            quota,
            trusted: trusted.into(),
            credential: Credential::of(auth, cookie),
        }
    }
}

/// Never counted: static files (every page needs them, and they touch no
/// database) and the probes, which an orchestrator must never see refused
/// (`KEYDESK_ADMIN_LISTEN` takes them off the public port).
fn exempt(path: &str) -> bool {
    path.starts_with("/static/") || matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Middleware: the client address (as `ClientAddr`, for the gate), and one
/// request taken from its bucket when the request is anonymous or a sign-in
/// step. Without a peer address (a router used without `ConnectInfo`),
/// every such request shares one bucket: never a panic, never unlimited.
pub async fn limit(State(gate): State<ClientGate>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if exempt(path) {
        return next.run(req).await;
    }
    // Signing out is never refused for a crowd behind the same address.
    let signing_out = path == "/auth/logout" && gate.credential.carried(req.headers(), None);
    let sign_in_step = path.starts_with("/auth/") && !signing_out;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| {
        client_addr(p, req.headers(), &gate.trusted)
    });
    let class = if sign_in_step {
        Some("auth")
    } else if !gate.credential.carried(req.headers(), peer) {
        Some("anonymous")
    } else {
        None
    };
    req.extensions_mut().insert(ClientAddr {
        ip: client,
        counted: class.is_some(),
    });
    if let Some(class) = class
        && let Err(wait) = gate.quota.take(client)
    {
        return refused(class, wait);
    }
    next.run(req).await
}

/// The 429 page (with `Retry-After`) for a request over its address's quota.
pub(super) fn refused(route_class: &'static str, wait: Duration) -> Response {
    metrics::counter!("keydesk_client_limited_total", "route_class" => route_class).increment(1);
    let secs = wait.as_secs();
    AppError::TooMany(
        format!(
            "Too many requests came from your address without a sign-in. Nothing was done. Wait {secs} s, then try again."
        ),
        secs,
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_session_cookie_is_found_among_others_and_only_by_its_name() {
        let c = Credential::Cookie("__Host-keydesk_session");
        let mut h = HeaderMap::new();
        assert!(!c.carried(&h, None));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; keydesk_session=x"),
        );
        assert!(
            !c.carried(&h, None),
            "the unprefixed name is another cookie"
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("b=2; __Host-keydesk_session=abc"),
        );
        assert!(c.carried(&h, None));
    }

    #[test]
    fn an_identity_header_counts_only_from_a_trusted_peer() {
        let c = Credential::Header(
            HeaderName::from_static("x-forwarded-email"),
            vec!["127.0.0.1/32".parse().unwrap()].into(),
        );
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-email", HeaderValue::from_static("a@b.c"));
        assert!(c.carried(&h, Some("127.0.0.1".parse().unwrap())));
        assert!(!c.carried(&h, Some("203.0.113.9".parse().unwrap())));
        assert!(!c.carried(&h, None));
        assert!(!c.carried(&HeaderMap::new(), Some("127.0.0.1".parse().unwrap())));
    }

    #[test]
    fn static_files_and_probes_are_never_counted() {
        for p in ["/static/app.css", "/healthz", "/readyz", "/metrics"] {
            assert!(exempt(p), "{p}");
        }
        for p in ["/", "/auth/login", "/me", "/staticx", "/healthzx"] {
            assert!(!exempt(p), "{p}");
        }
    }
}
