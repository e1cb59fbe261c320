//! Who is asking and what they may do.
//!
//! Identity comes from the SSO proxy: a header honoured only from trusted TCP
//! peers, or a signed JWT (see `jwt`); or from keydesk's own OpenID Connect
//! sign-in (see `oidc`). In the demo it is a fixed identity.
//! Roles come from keydesk's own policy (`KEYDESK_VIEWERS`,
//! `KEYDESK_OPERATORS`), deny by default.

mod access;
mod client_limit;
mod oidc_gate;
mod open_paths;

pub use oidc_gate::{found, found_with, login_link, start as start_sign_in};

pub use access::{Access, Approvers};
pub use client_limit::{ClientGate, limit as limit_clients};
pub use open_paths::CLAIM_PREFIX;
use open_paths::{is_public, self_service};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use crate::audit::{AuditAction, AuditStore, Intent, Outcome};
pub use crate::email::{normalize_email, same_email};
use crate::error::AppError;
use crate::jwt::JwtVerifier;
use crate::oidc::Oidc;

/// How identities are established.
#[derive(Clone, Debug)]
pub enum AuthMode {
    /// `keydesk demo`: everyone is this operator. Only ever paired with the fake upstream.
    Demo(String),
    /// The proxy's header (and optional groups header), trusted only from these peers.
    Header {
        header: HeaderName,
        groups_header: Option<HeaderName>,
        trusted: Vec<IpNet>,
    },
    /// A JWT in a header, verified against the proxy's JWKS.
    Jwt(Arc<JwtVerifier>),
    /// keydesk signs people in itself with OpenID Connect; the identity
    /// lives in the server-side session.
    Oidc(Arc<Oidc>),
}

impl AuthMode {
    /// Header mode with no groups header (tests and simple setups).
    pub fn header(header: &str, trusted: Vec<IpNet>) -> Result<Self, String> {
        Ok(AuthMode::Header {
            header: HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("{header:?} is not a header name"))?,
            groups_header: None,
            trusted,
        })
    }
}

/// What a signed-in person may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// No keydesk role: may only open claim links addressed to them.
    Claimant,
    Viewer,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Claimant => "claimant",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// The signed-in staff member.
#[derive(Clone, Debug)]
pub struct Identity {
    pub email: String,
    pub groups: Vec<String>,
    pub role: Role,
}

impl Identity {
    pub fn can_write(&self) -> bool {
        self.role == Role::Operator
    }

    /// An audit intent attributed to this person, for this request.
    pub fn intent(&self, action: AuditAction, headers: &HeaderMap) -> Intent {
        Intent {
            request_id: request_id(headers),
            ..Intent::new(&self.email, self.role.as_str(), action)
        }
    }
}

pub fn peer_is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let peer = peer.to_canonical();
    trusted.iter().any(|net| net.contains(&peer))
}

/// A usable identity value: printable, bounded, non-empty.
fn clean_identity(raw: &str) -> Option<String> {
    crate::email::usable(raw).ok().map(str::to_string)
}

fn header_groups(headers: &HeaderMap, name: &Option<HeaderName>) -> Vec<String> {
    let Some(name) = name else { return vec![] };
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty() && g.len() <= 256)
        .collect()
}

fn unauthorized(msg: &str) -> Response {
    AppError::Unauthorized(msg.into()).into_response()
}

/// What the identity middleware needs: how people sign in, who may do
/// what, and where refusals are recorded. Built from the application state.
#[derive(Clone)]
pub struct Gate {
    pub auth: AuthMode,
    pub access: Access,
    pub audit: AuditStore,
    /// OpenID mode: the cookie that keeps a sign-in this browser started.
    pub sign_ins: crate::oidc::StartedSignIns,
    /// The per-address quota of anonymous requests (OpenID mode: a session
    /// cookie that names nobody is counted here).
    pub clients: Arc<crate::client_quota::ClientQuota>,
}

/// The identity headers of this mode: identity, groups, assertion.
fn identity_headers(auth: &AuthMode) -> Vec<&HeaderName> {
    match auth {
        AuthMode::Demo(_) => vec![],
        AuthMode::Header {
            header,
            groups_header,
            ..
        } => std::iter::once(header).chain(groups_header).collect(),
        AuthMode::Jwt(v) => vec![&v.settings.header],
        AuthMode::Oidc(_) => vec![],
    }
}

/// A header that should come once from the proxy but came several times:
/// a proxy that appends instead of replacing lets the client pick who it is.
fn repeated_header<'a>(auth: &'a AuthMode, headers: &HeaderMap) -> Option<&'a HeaderName> {
    identity_headers(auth)
        .into_iter()
        .find(|h| headers.get_all(*h).iter().count() > 1)
}

/// Establishes who is asking: `(email, groups)` or a 401 response.
async fn authenticate(
    state: &Gate,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<(String, Vec<String>), Response> {
    // Always refused. Audited only when a trusted proxy sent it (header
    // mode): anyone else's request writes nothing. In JWT mode anyone may
    // send the header, and nothing is known until an assertion verifies.
    let from_proxy = match &state.auth {
        AuthMode::Header { trusted, .. } => peer.is_some_and(|p| peer_is_trusted(p, trusted)),
        _ => false,
    };
    if let Some(h) = repeated_header(&state.auth, headers) {
        tracing::warn!(header = %h, peer = ?peer, "identity header sent more than once: refused");
        if from_proxy {
            let intent = Intent {
                request_id: request_id(headers),
                reason: Some(format!("{h} sent more than once")),
                ..Intent::new("(ambiguous identity)", "none", AuditAction::AccessDenied)
            };
            state.audit.record(&intent, Outcome::Failed).await;
        }
        return Err(unauthorized(
            "The request carried more than one identity. keydesk refused it; ask the operators to check the SSO proxy.",
        ));
    }
    match &state.auth {
        AuthMode::Demo(email) => Ok((email.clone(), vec![])),
        // Answered from the session by `oidc_gate`, never from headers.
        AuthMode::Oidc(_) => Err(unauthorized("Sign in to keydesk first.")),
        AuthMode::Header {
            header,
            groups_header,
            trusted,
        } => {
            let value = headers.get(header);
            match (peer, value) {
                (_, None) => Err(unauthorized(
                    "No signed-in identity reached keydesk. Open it through your company's SSO proxy.",
                )),
                (Some(peer), Some(v)) if peer_is_trusted(peer, trusted) => {
                    match v.to_str().ok().and_then(clean_identity) {
                        Some(email) => Ok((email, header_groups(headers, groups_header))),
                        None => Err(unauthorized("The SSO proxy sent an unusable identity.")),
                    }
                }
                (peer, Some(_)) => {
                    // Someone is bypassing the proxy: refuse loudly, never fall back.
                    tracing::warn!(
                        peer = ?peer,
                        header = %header,
                        "identity header from an untrusted peer rejected"
                    );
                    Err(unauthorized(
                        "This request did not come through the SSO proxy keydesk trusts.",
                    ))
                }
            }
        }
        AuthMode::Jwt(verifier) => {
            let Some(token) = headers
                .get(&verifier.settings.header)
                .and_then(|v| v.to_str().ok())
            else {
                return Err(unauthorized(
                    "No signed identity assertion reached keydesk. Open it through your company's SSO proxy.",
                ));
            };
            verifier.verify(token.trim()).await.map_err(|e| {
                tracing::warn!(reason = %e, "identity assertion rejected");
                unauthorized("The identity assertion could not be verified.")
            })
        }
    }
}

/// Middleware: attach `Identity` (with its role) or answer 401/403.
pub async fn require_identity(State(state): State<Gate>, mut req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let headers = req.headers().clone();
    // OpenID mode: the sign-out token, for every page this answer shows.
    let mut sign_out = None;
    let known = match &state.auth {
        AuthMode::Oidc(oidc) => {
            let asked = oidc_gate::Asked {
                session: req.extensions().get::<tower_sessions::Session>().cloned(),
                method: req.method().clone(),
                uri: req.uri().clone(),
                headers: headers.clone(),
                client: req
                    .extensions()
                    .get::<crate::client_quota::ClientAddr>()
                    .filter(|c| !c.counted)
                    .map(|c| c.ip),
            };
            oidc_gate::signed_in(&state, oidc, asked).await.map(|who| {
                sign_out = Some(crate::oidc::session::SignOut(who.sign_out));
                (who.email, who.groups)
            })
        }
        _ => authenticate(&state, &headers, peer).await,
    };
    let (email, groups) = match known {
        Ok((email, groups)) => (normalize_email(&email), groups),
        Err(resp) => return resp,
    };
    // Anyone the proxy vouches for may open claim links and their own keys;
    // each of those pages checks it is theirs. Nowhere else.
    let role = state
        .access
        .role_of(&email, &groups)
        .or_else(|| self_service(req.uri().path()).then_some(Role::Claimant));
    let Some(role) = role else {
        state
            .audit
            .record(
                &Intent {
                    request_id: request_id(req.headers()),
                    reason: Some(format!("{} {}", req.method(), req.uri().path())),
                    ..Intent::new(&email, "none", AuditAction::AccessDenied)
                },
                Outcome::Failed,
            )
            .await;
        let mut resp = AppError::Forbidden(format!(
            "You are signed in as {email}, but you do not have access to keydesk. Ask the keydesk operators to add you as a viewer or operator."
        ))
        .into_response();
        // No role: the error page shows no staff navigation and claims no
        // role, but lets the person sign out (another account may do).
        if let Some(s) = sign_out {
            resp.extensions_mut().insert(s);
        }
        resp.extensions_mut().insert(Identity {
            email,
            groups,
            role: Role::Claimant,
        });
        return resp;
    };
    let identity = Identity {
        email,
        groups,
        role,
    };
    tracing::Span::current().record("user", identity.email.as_str());
    req.extensions_mut().insert(identity.clone());
    let mut resp = next.run(req).await;
    // The error-page renderer sits outside this layer and shows who is signed in.
    resp.extensions_mut().insert(identity);
    if let Some(s) = sign_out {
        resp.extensions_mut().insert(s);
    }
    resp
}

/// The request's id for an audit row: only one of the documented shape (the
/// middleware already replaced any other; this is the second line).
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    crate::request_id::of(headers).map(str::to_string)
}

/// A staff member: a viewer or an operator. A claimant (no role) is refused,
/// which the middleware already ensures outside `/claim/`.
pub struct Staff(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let who = Identity::from_request_parts(parts, state).await?;
        if who.role == Role::Claimant {
            return Err(
                AppError::Forbidden("You do not have access to keydesk.".into()).into_response(),
            );
        }
        Ok(Staff(who))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| unauthorized("No signed-in identity reached keydesk."))
    }
}

/// An identity allowed to change keys. Extracting it from a viewer is a 403,
/// recorded in the audit trail.
pub struct Operator(pub Identity);

impl<S> FromRequestParts<S> for Operator
where
    S: Send + Sync,
    AuditStore: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let who = Identity::from_request_parts(parts, state).await?;
        if who.can_write() {
            return Ok(Operator(who));
        }
        AuditStore::from_ref(state)
            .record(
                &Intent {
                    reason: Some(format!("{} {}", parts.method, parts.uri.path())),
                    ..who.intent(AuditAction::AccessDenied, &parts.headers)
                },
                Outcome::Failed,
            )
            .await;
        Err(AppError::Forbidden(format!(
            "You are signed in as {} with the viewer role: only operators can create, rotate or revoke keys. Nothing was changed.",
            who.email
        ))
        .into_response())
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

    #[test]
    fn a_kelvin_sign_is_not_the_operator_kim() {
        let a = Access::new(&[], &["kim@example.com".into()]);
        assert_eq!(a.role_of("Kim@Example.com", &[]), Some(Role::Operator));
        assert_eq!(a.role_of("\u{212A}im@example.com", &[]), None);
        // Nor the other way round: a list entry written with the sign.
        let b = Access::new(&[], &["\u{212A}im@example.com".into()]);
        assert_eq!(b.role_of("kim@example.com", &[]), None);
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_config())]

        /// The proxy's identity header: refused, or a trimmed, bounded,
        /// printable value that is accepted again unchanged.
        #[test]
        fn a_header_identity_is_clean_or_refused(raw in proptest::arbitrary::any::<String>()) {
            match clean_identity(&raw) {
                Some(v) => {
                    proptest::prop_assert_eq!(v.as_str(), raw.trim());
                    proptest::prop_assert!(v.len() <= 320 && !v.chars().any(char::is_control));
                    proptest::prop_assert_eq!(clean_identity(&v), Some(v.clone()));
                }
                None => proptest::prop_assert!(crate::email::usable(&raw).is_err()),
            }
        }

        /// The groups header: every group trimmed, non-empty, bounded, and
        /// each comma-separated part that qualifies is kept in order.
        #[test]
        fn header_groups_are_trimmed_and_bounded(raw in "[ -~]{0,600}") {
            let name = HeaderName::from_static("x-groups");
            let mut headers = HeaderMap::new();
            headers.insert(&name, raw.parse().unwrap());
            let got = header_groups(&headers, &Some(name));
            let want: Vec<String> = raw
                .split(',')
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty() && g.len() <= 256)
                .collect();
            proptest::prop_assert_eq!(got, want);
        }

        /// A role list never lets an identity with a non-ASCII character in
        /// as someone written in plain ASCII.
        #[test]
        fn a_look_alike_never_takes_an_ascii_role(
            user in "[a-z]{0,4}k[a-z]{0,4}",
            upper in proptest::arbitrary::any::<bool>(),
        ) {
            let email = format!("{user}@example.com");
            let a = Access::new(&[], std::slice::from_ref(&email));
            // The Kelvin sign for one `k`: what Unicode lowercases to `k`.
            let mut look = user.replacen('k', "\u{212A}", 1);
            if upper {
                look = look.to_ascii_uppercase();
            }
            proptest::prop_assert_eq!(a.role_of(&format!("{look}@example.com"), &[]), None);
            proptest::prop_assert_eq!(a.role_of(&email.to_ascii_uppercase(), &[]), Some(Role::Operator));
        }
    }

    #[test]
    fn roles_deny_by_default() {
        let a = Access::new(
            &["v@x.com".into(), "group:auditors".into()],
            &["Op@X.com".into(), "group:platform".into()],
        );
        assert_eq!(a.role_of("op@x.com", &[]), Some(Role::Operator));
        assert_eq!(a.role_of("v@x.com", &[]), Some(Role::Viewer));
        assert_eq!(
            a.role_of("z@x.com", &["auditors".into()]),
            Some(Role::Viewer)
        );
        assert_eq!(
            a.role_of("v@x.com", &["platform".into()]),
            Some(Role::Operator)
        );
        assert_eq!(a.role_of("z@x.com", &["other".into()]), None);
        assert!(Access::new(&[], &[]).is_empty());
    }
}
