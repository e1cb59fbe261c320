//! Every failure as a page: renders the `ErrorPage` that `AppError` leaves on
//! a response, and gives axum's bare 404/405/413 answers the same page, so no
//! failure is ever blank or a stack trace.

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{Layout, render};
use crate::error::ErrorPage;
use crate::identity::Identity;

#[derive(askama::Template)]
#[template(path = "error.html")]
pub struct ErrorView {
    pub layout: Layout,
    pub page: ErrorPage,
    pub request_id: String,
}

/// Middleware: render `ErrorPage` responses, and give axum's bare 404/405/413
/// answers the same page, so no failure is ever blank or a stack trace.
pub async fn error_pages(req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let resp = next.run(req).await;
    let who = resp.extensions().get::<Identity>().cloned();
    let sign_out = resp
        .extensions()
        .get::<crate::oidc::session::SignOut>()
        .map(|s| s.0.clone());
    let page = match resp.extensions().get::<ErrorPage>() {
        Some(p) => p.clone(),
        None => {
            let status = resp.status();
            // Only axum's bare answers (empty or plain text) are replaced;
            // HTML pages and JSON (probes) pass through untouched.
            let bare = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_none_or(|v| v.starts_with("text/plain"));
            if !(status.is_client_error() || status.is_server_error()) || !bare {
                return resp;
            }
            let (title, message) = match status {
                StatusCode::NOT_FOUND => ("Not found", "There is no page at this address."),
                StatusCode::METHOD_NOT_ALLOWED => {
                    ("Method not allowed", "This page cannot be used that way.")
                }
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ("Request too large", "The form sent was too large.")
                }
                StatusCode::REQUEST_TIMEOUT => ("Request timed out", "keydesk gave up waiting."),
                StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => {
                    ("Bad request", "The request could not be understood.")
                }
                StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                    "Bad request",
                    "The form was sent in a format keydesk does not accept.",
                ),
                _ => (
                    "Something went wrong",
                    "keydesk could not complete the request.",
                ),
            };
            ErrorPage {
                status,
                title: title.into(),
                message: message.into(),
                link: None,
            }
        }
    };
    let (mut parts, _) = resp.into_parts();
    let view = ErrorView {
        layout: Layout {
            sign_out,
            ..Layout::plain(who.as_ref())
        },
        page: page.clone(),
        request_id,
    };
    let fresh = render(page.status, &view);
    // Keep headers such as Allow, drop the old body's length and type.
    parts.headers.remove(header::CONTENT_LENGTH);
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.extend(fresh_parts.headers);
    parts.status = page.status;
    Response::from_parts(parts, body)
}
