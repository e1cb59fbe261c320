//! Server-rendered pages: one module per area, one askama struct per page.

pub mod assets;
pub mod audit;
pub mod brake;
pub mod error;
pub mod keys;
pub mod ops;
pub mod paths;
pub mod reports;
pub mod users;

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use crate::identity::Identity;
use crate::write::Ctx;

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

impl Ctx {
    /// The frame of this request's page.
    pub async fn layout(&self) -> Layout {
        Layout::new(&self.who, &self.session).await
    }

    /// Queues a notice for the next page.
    pub async fn flash(&self, kind: &str, text: String) {
        flash(&self.session, &self.who, kind, text).await
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

/// Headers for pages that must never be kept: the reveal and its replays.
pub fn no_store(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}
