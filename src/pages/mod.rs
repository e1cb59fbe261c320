//! Server-rendered pages: one module per area, one askama struct per page.

pub mod assets;
pub mod audit;
pub mod keys;
pub mod ops;
pub mod reports;
pub mod users;

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use crate::identity::Identity;

/// What every page's frame needs: who is signed in and a one-off notice.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    pub who: Option<String>,
    pub role: &'static str,
    pub can_write: bool,
    pub flash: Option<Flash>,
    pub css: String,
    pub js: String,
}

/// A notice shown once after a redirect. Never holds a secret.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Flash {
    pub kind: String,
    pub text: String,
}

const FLASH_KEY: &str = "keydesk.flash";
const SESSION_IDENTITY_KEY: &str = "keydesk.identity";

impl Layout {
    /// A frame without session access (error pages).
    pub fn plain(who: Option<&Identity>) -> Self {
        Self {
            who: who.map(|w| w.email.clone()),
            role: who.map(|w| w.role.as_str()).unwrap_or(""),
            can_write: who.is_some_and(Identity::can_write),
            flash: None,
            css: assets::CSS.url(),
            js: assets::JS.url(),
        }
    }

    /// The frame of a normal page: takes the pending flash, if any.
    pub async fn new(who: &Identity, session: &Session) -> Self {
        bind_session(who, session).await;
        let flash = session.remove::<Flash>(FLASH_KEY).await.ok().flatten();
        Self {
            flash,
            ..Self::plain(Some(who))
        }
    }
}

/// A session belongs to one SSO identity: if the proxy now says someone else,
/// start a fresh session so nothing (a notice, later a token) crosses over.
async fn bind_session(who: &Identity, session: &Session) {
    let bound = session
        .get::<String>(SESSION_IDENTITY_KEY)
        .await
        .ok()
        .flatten();
    if bound.as_deref() != Some(who.email.as_str()) {
        if bound.is_some() {
            let _ = session.flush().await;
        }
        let _ = session.insert(SESSION_IDENTITY_KEY, &who.email).await;
    }
}

/// Queues a notice for the next page.
pub async fn flash(session: &Session, who: &Identity, kind: &str, text: String) {
    bind_session(who, session).await;
    if let Err(e) = session
        .insert(
            FLASH_KEY,
            Flash {
                kind: kind.to_string(),
                text,
            },
        )
        .await
    {
        tracing::warn!(error = %e, "could not store flash notice");
    }
}

/// Settles a failed upstream write. An unknown outcome spends the form (the
/// change may have happened, so the form must never act again); a definite
/// failure gives the form back so it can be sent again.
pub async fn upstream_failed(
    state: &crate::app::AppState,
    audit_id: i64,
    token: &str,
    user_id: &str,
    e: crate::vultr::VultrError,
) -> crate::error::AppError {
    let unknown = matches!(e, crate::vultr::VultrError::OutcomeUnknown(_));
    let outcome = if unknown {
        state.tokens.complete(token, None);
        crate::audit::Outcome::Unknown
    } else {
        state.tokens.release(token);
        crate::audit::Outcome::Failed
    };
    state
        .audit
        .settle(audit_id, outcome, None, e.status(), Some(&e.to_string()))
        .await;
    if unknown {
        return crate::error::AppError::OutcomeUnknown {
            user_id: user_id.to_string(),
            detail: e.to_string(),
        };
    }
    e.into()
}

/// Audits a refused form token (missing, expired, foreign identity or session):
/// every mutating form refuses through here, so every refusal is recorded.
pub async fn record_forgery(
    state: &crate::app::AppState,
    who: &Identity,
    headers: &axum::http::HeaderMap,
    user_id: &str,
    key_id: Option<&str>,
) {
    state
        .audit
        .record(
            &crate::audit::Intent {
                target_user_id: Some(user_id.to_string()),
                key_id: key_id.map(str::to_string),
                ..who.intent("csrf.rejected", headers)
            },
            crate::audit::Outcome::Failed,
        )
        .await;
}

/// The browser session's id, when the request arrived with one.
pub fn session_id(session: &Session) -> Option<String> {
    session.id().map(|id| id.to_string())
}

/// Renders a page; a template failure is logged and answered with a bare 500.
pub fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "internal error",
            )
                .into_response()
        }
    }
}

/// `/users/{id}` for links and redirects; ids are validated before use.
pub fn user_href(id: &str) -> String {
    format!("/users/{id}")
}
