//! One error type for every page. It becomes a response carrying an
//! `ErrorPage` extension; `pages::error::error_pages` renders it in the
//! portal's layout with the request id, so handlers never build HTML for
//! failures and this module knows no pages. Internal detail goes to the log
//! once, never to the page.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::ids::InvalidId;
use crate::vultr::VultrError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// Not signed in (OpenID mode): the message and the sign-in link.
    #[error("{0}")]
    SignIn(String, String),
    /// The OpenID provider could not be reached to start or finish a sign-in.
    #[error("OpenID provider unavailable: {0}")]
    ProviderDown(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// Already done, or being done by another request: nothing more happens.
    #[error("{0}")]
    Conflict(String),
    /// The user's powers or reach grew since a link was decided on: it is
    /// withdrawn, nothing was sent.
    #[error("{0}")]
    PowersChanged(String),
    /// The user was offboarded and is on hold: (user id, the refusal in words).
    #[error("{1}")]
    Held(String, String),
    /// No longer usable (an expired or revoked link).
    #[error("{0}")]
    Gone(String),
    #[error(transparent)]
    Upstream(#[from] VultrError),
    /// A write reached Vultr but its answer was lost; points at the user's keys.
    #[error("outcome unknown for user {user_id}: {detail}")]
    OutcomeUnknown { user_id: String, detail: String },
    /// The audit trail could not be written: refuse to act unrecorded.
    #[error("audit store unavailable: {0}")]
    Audit(String),
    /// The database (form tokens, sessions, jobs) could not be reached.
    #[error("database unavailable: {0}")]
    Store(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("request headers too large")]
    HeadersTooLarge,
    /// Too many forms from one person: the words, and the seconds until the
    /// next is accepted (`Retry-After`).
    #[error("{0}")]
    TooMany(String, u64),
}

/// What the error page shows.
#[derive(Clone, Debug)]
pub struct ErrorPage {
    pub status: StatusCode,
    pub title: String,
    pub message: String,
    /// Where to go next (href, text); the users list when absent.
    pub link: Option<(String, String)>,
}

impl AppError {
    pub fn page(&self) -> ErrorPage {
        // After a lost answer, the useful next step is the user's key list.
        let link = match self {
            AppError::OutcomeUnknown { user_id, .. } => Some((
                format!("/users/{user_id}#keys"),
                "Open the user's key list".to_string(),
            )),
            AppError::Held(user_id, _) => Some((
                format!("/users/{user_id}/reinstate"),
                "Reinstate this user".to_string(),
            )),
            AppError::SignIn(_, href) => Some((href.clone(), "Sign in".to_string())),
            _ => None,
        };
        let (status, title, message) = match self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m.clone()),
            AppError::Unauthorized(m) | AppError::SignIn(m, _) => {
                (StatusCode::UNAUTHORIZED, "Not signed in", m.clone())
            }
            AppError::ProviderDown(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in unavailable",
                "keydesk could not reach the sign-in provider. Nothing was changed; retry in a moment, or ask the operators to check KEYDESK_OIDC_ISSUER.".to_string(),
            ),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, "Forbidden", m.clone()),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m.clone()),
            AppError::Conflict(m) => (StatusCode::CONFLICT, "Already done", m.clone()),
            AppError::PowersChanged(m) => (StatusCode::CONFLICT, "Powers changed", m.clone()),
            AppError::Gone(m) => (StatusCode::GONE, "No longer valid", m.clone()),
            AppError::Held(_, m) => (StatusCode::CONFLICT, "Offboarded", m.clone()),
            AppError::Audit(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Audit trail unavailable",
                "keydesk could not write its audit trail, so it refused to act: nothing was sent to Vultr. Try again, or ask the operators to check the audit database.".to_string(),
            ),
            AppError::Store(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Database unavailable",
                "keydesk could not reach its database, so it did nothing: nothing was sent to Vultr. Retry in a moment.".to_string(),
            ),
            AppError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "keydesk hit an internal error. Nothing secret was shown; quote the request id to the operators.".to_string(),
            ),
            AppError::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request headers too large",
                "The request carried more headers than keydesk accepts. Clear this site's cookies and retry.".to_string(),
            ),
            AppError::TooMany(m, _) => (StatusCode::TOO_MANY_REQUESTS, "Too many requests", m.clone()),
            AppError::Upstream(e) => upstream_page(e),
            AppError::OutcomeUnknown { detail, .. } => {
                upstream_page(&VultrError::OutcomeUnknown(detail.clone()))
            }
        };
        ErrorPage {
            status,
            title: title.to_string(),
            message,
            link,
        }
    }
}

/// Vultr failures mapped on purpose into words a staff member can act on.
fn upstream_page(e: &VultrError) -> (StatusCode, &'static str, String) {
    match e {
        VultrError::Api { status: 401 | 403, message } => (
            StatusCode::BAD_GATEWAY,
            "Vultr rejected keydesk's root key",
            format!(
                "Vultr refused keydesk's root credential ({message}). The operators must check the root API key and its IP allow-list."
            ),
        ),
        VultrError::Api { status: 404, .. } => (
            StatusCode::NOT_FOUND,
            "Not found",
            "Vultr has no such user or key. It may have been deleted.".to_string(),
        ),
        VultrError::Api { status: 429, .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Rate limited by Vultr",
            "Vultr is rate limiting keydesk. Wait a few seconds and retry.".to_string(),
        ),
        VultrError::Api { status, message } if *status >= 500 => (
            StatusCode::BAD_GATEWAY,
            "Vultr is having trouble",
            format!("Vultr answered {status}: {message}. Retry shortly."),
        ),
        VultrError::Api { status, message } => (
            StatusCode::BAD_GATEWAY,
            "Vultr refused the request",
            format!("Vultr answered {status}: {message}"),
        ),
        VultrError::Unreachable(_) => (
            StatusCode::BAD_GATEWAY,
            "Vultr is unreachable",
            "keydesk could not connect to the Vultr API. Check the network or Vultr's status page, then retry.".to_string(),
        ),
        VultrError::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "Vultr timed out",
            "The Vultr API did not answer in time. Retry shortly.".to_string(),
        ),
        VultrError::OutcomeUnknown(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "Outcome unknown",
            "The request reached Vultr but its answer was lost, so keydesk cannot tell whether it took effect. This form will not act again: check the user's key list before trying anew.".to_string(),
        ),
        VultrError::Malformed(_) => (
            StatusCode::BAD_GATEWAY,
            "Unexpected response from Vultr",
            "Vultr sent a response keydesk could not read. Retry; if it persists, tell the operators.".to_string(),
        ),
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let page = self.page();
        match &self {
            AppError::Audit(_) => {
                metrics::counter!("keydesk_audit_write_failures_total").increment(1);
                tracing::error!(error = %self, "request refused: audit store unavailable")
            }
            AppError::Internal(_) | AppError::Store(_) | AppError::ProviderDown(_) => {
                tracing::error!(error = %self, "request failed")
            }
            AppError::Upstream(e) => tracing::warn!(error = %e, "upstream call failed"),
            AppError::OutcomeUnknown { .. } => {
                tracing::warn!(error = %self, "upstream write outcome unknown")
            }
            _ => tracing::info!(status = page.status.as_u16(), error = %self, "request refused"),
        }
        let mut resp = page.status.into_response();
        if let AppError::TooMany(_, secs) = &self {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, (*secs).into());
        }
        resp.extensions_mut().insert(page);
        resp
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Audit(e.to_string())
    }
}

impl AppError {
    /// A database failure outside the audit trail (tokens, sessions, jobs).
    pub fn store(e: sqlx::Error) -> Self {
        AppError::Store(e.to_string())
    }
}

impl From<InvalidId> for AppError {
    fn from(_: InvalidId) -> Self {
        AppError::BadRequest("That is not a valid Vultr id. Nothing was sent to Vultr.".into())
    }
}

impl From<askama::Error> for AppError {
    fn from(e: askama::Error) -> Self {
        AppError::Internal(e.to_string())
    }
}
