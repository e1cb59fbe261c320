//! OpenID mode at the gate: the signed-in person comes from the server-side
//! session; anyone else is sent to the provider (a page) or told to sign in
//! (a form, which is never thrown away by a redirect).

use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::{Gate, request_id};
use crate::audit::{AuditAction, Intent, Outcome};
use crate::error::AppError;
use crate::oidc::{self, Oidc, StartedSignIns};

/// What the gate reads of a request (owned: the request body is not `Sync`).
pub(super) struct Asked {
    pub session: Option<Session>,
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The client address, when the limiter did not count this request
    /// (it carried a session cookie).
    pub client: Option<std::net::IpAddr>,
}

/// The person signed in on this request's session, or the answer to give.
pub(super) async fn signed_in(
    gate: &Gate,
    oidc: &Oidc,
    req: Asked,
) -> Result<oidc::SignedIn, Response> {
    let Some(session) = req.session.clone() else {
        return Err(AppError::Internal("no session layer".into()).into_response());
    };
    let found = oidc::session::current(&session, oidc.settings.lifetimes).await;
    if let Ok(Some(who)) = found {
        return Ok(who);
    }
    // A cookie that names nobody: anonymous after all, so counted (when the
    // limiter let it pass on its cookie) before anything is written.
    if let Some(client) = req.client
        && let Err(wait) = gate.clients.take(client)
    {
        return Err(super::client_limit::refused("anonymous", wait));
    }
    if let Err((email, ended)) = found {
        let intent = Intent {
            request_id: request_id(&req.headers),
            reason: Some(ended.reason().to_string()),
            ..Intent::new(&email, "none", AuditAction::AccessDenied)
        };
        gate.audit.record(&intent, Outcome::Failed).await;
    }
    Err(sign_in_needed(oidc, &gate.sign_ins, &req).await)
}

/// A page goes to the provider and comes back to itself; a form gets a 401
/// with a sign-in link back to the page it came from.
async fn sign_in_needed(oidc: &Oidc, sign_ins: &StartedSignIns, req: &Asked) -> Response {
    if matches!(req.method, Method::GET | Method::HEAD) {
        let next = req
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .and_then(oidc::safe_next)
            .unwrap_or("/");
        return match start(oidc, sign_ins, &req.headers, next).await {
            Ok((url, cookie)) => found_with(&url, cookie),
            Err(e) => AppError::ProviderDown(e).into_response(),
        };
    }
    let back = req
        .headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix(oidc.settings.public_url.as_str()))
        .and_then(oidc::safe_next)
        .unwrap_or("/");
    AppError::SignIn(
        "You are not signed in, or your session ended, so this form was not sent and nothing was changed. Sign in, then send it again.".into(),
        login_link(back),
    )
    .into_response()
}

/// A 302 to the provider (the status proxies and browsers expect there).
pub fn found(url: &str) -> Response {
    match header::HeaderValue::from_str(url) {
        Ok(v) => (axum::http::StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
        Err(_) => AppError::ProviderDown("the provider's URL is not a header value".into())
            .into_response(),
    }
}

/// `found`, setting this browser's started-sign-in cookie.
pub fn found_with(url: &str, cookie: header::HeaderValue) -> Response {
    let mut resp = found(url);
    resp.headers_mut().append(header::SET_COOKIE, cookie);
    resp
}

/// `/auth/login?next=…` for a same-origin path.
pub fn login_link(next: &str) -> String {
    let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
    format!("/auth/login?next={next}")
}

/// Starts a sign-in in this browser: the provider URL to go to, and the
/// `Set-Cookie` value that remembers it (nothing is stored on the server).
pub async fn start(
    oidc: &Oidc,
    sign_ins: &StartedSignIns,
    headers: &HeaderMap,
    next: &str,
) -> Result<(String, header::HeaderValue), String> {
    let (url, pending) = oidc.begin(next).await?;
    let cookie = sign_ins.remember(headers, pending).await?;
    Ok((url, cookie))
}
