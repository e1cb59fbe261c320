//! Who is asking: the SSO proxy's identity header, honoured only from
//! trusted TCP peers, or the fixed demo identity.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use crate::app::AppState;
use crate::error::AppError;

/// How identities are established.
#[derive(Clone, Debug)]
pub enum AuthMode {
    /// `keydesk demo`: everyone is this identity. Only ever paired with the fake upstream.
    Demo(String),
    /// The proxy's header, trusted only from these peers.
    Header {
        header: HeaderName,
        trusted: Vec<IpNet>,
    },
}

/// The signed-in staff member.
#[derive(Clone, Debug)]
pub struct Identity {
    pub email: String,
}

/// Paths reachable without identity: probes and static assets.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || path.starts_with("/static/")
}

pub fn peer_is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let peer = peer.to_canonical();
    trusted.iter().any(|net| net.contains(&peer))
}

/// A usable identity value: printable, bounded, non-empty.
fn clean_identity(raw: &str) -> Option<String> {
    let v = raw.trim();
    (!v.is_empty() && v.len() <= 320 && !v.chars().any(char::is_control)).then(|| v.to_string())
}

/// Middleware: attach `Identity` to the request or answer 401.
pub async fn require_identity(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let identity = match &state.auth {
        AuthMode::Demo(email) => Identity {
            email: email.clone(),
        },
        AuthMode::Header { header, trusted } => {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            let value = req.headers().get(header);
            match (peer, value) {
                (_, None) => {
                    return AppError::Unauthorized(
                        "No signed-in identity reached keydesk. Open it through your company's SSO proxy."
                            .into(),
                    )
                    .into_response();
                }
                (Some(peer), Some(v)) if peer_is_trusted(peer, trusted) => {
                    match v.to_str().ok().and_then(clean_identity) {
                        Some(email) => Identity { email },
                        None => {
                            return AppError::Unauthorized(
                                "The SSO proxy sent an unusable identity.".into(),
                            )
                            .into_response();
                        }
                    }
                }
                (peer, Some(_)) => {
                    // Someone is bypassing the proxy: refuse loudly, never fall back.
                    tracing::warn!(
                        peer = ?peer,
                        header = %header,
                        "identity header from an untrusted peer rejected"
                    );
                    return AppError::Unauthorized(
                        "This request did not come through the SSO proxy keydesk trusts.".into(),
                    )
                    .into_response();
                }
            }
        }
    };
    tracing::Span::current().record("user", identity.email.as_str());
    req.extensions_mut().insert(identity.clone());
    let mut resp = next.run(req).await;
    // The error-page renderer sits outside this layer and shows who is signed in.
    resp.extensions_mut().insert(identity);
    resp
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| StatusCode::UNAUTHORIZED.into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_is_by_cidr_and_handles_mapped_v4() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(peer_is_trusted("10.1.2.3".parse().unwrap(), &trusted));
        assert!(peer_is_trusted(
            "::ffff:10.1.2.3".parse().unwrap(),
            &trusted
        ));
        assert!(peer_is_trusted("::1".parse().unwrap(), &trusted));
        assert!(!peer_is_trusted("192.168.1.1".parse().unwrap(), &trusted));
    }

    #[test]
    fn identity_values_are_cleaned() {
        assert_eq!(clean_identity(" a@b.c ").as_deref(), Some("a@b.c"));
        assert!(clean_identity("").is_none());
        assert!(clean_identity("a\nb").is_none());
        assert!(clean_identity(&"x".repeat(400)).is_none());
    }
}
