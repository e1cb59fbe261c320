//! Server-rendered pages: one module per area, one askama struct per page.

pub mod allowlist;
pub mod approvals;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod brake;
pub mod capability;
pub mod claim;
pub mod cleanup;
pub mod cleanup_job;
pub mod confirm;
pub mod error;
pub mod grants;
pub mod keys;
pub mod me;
pub mod notices;
pub mod offboard;
pub mod ops;
pub mod paths;
pub mod privileged;
pub mod reinstate;
pub mod reports;
pub mod reviews;
pub mod users;

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use crate::identity::Identity;
use crate::session::{self, Flash};
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
    /// OpenID mode: the sign-out form's token (no form in the other modes).
    pub sign_out: Option<String>,
}

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
            sign_out: None,
        }
    }

    /// The frame of a normal page: takes the pending flash, if any.
    pub async fn new(who: &Identity, session: &Session) -> Self {
        session::bind(who, session).await;
        let flash = session::take_flash(session).await;
        let sign_out = crate::oidc::session::sign_out_token(session).await;
        Self {
            flash,
            sign_out,
            ..Self::plain(Some(who))
        }
    }
}

impl Ctx {
    /// The frame of this request's page.
    pub async fn layout(&self) -> Layout {
        Layout::new(&self.who, &self.session).await
    }

    /// The expiring-keys report as the last scan left it (the report, the
    /// privileged keys and the clean-up all read it).
    pub async fn report(&self) -> Result<crate::report::Snapshot, crate::error::AppError> {
        self.state
            .reports
            .snapshot()
            .await
            .map_err(crate::error::AppError::store)
    }

    /// Queues a notice for the next page.
    pub async fn flash(&self, kind: &str, text: String) {
        session::put_flash(&self.who, &self.session, kind, text).await
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
