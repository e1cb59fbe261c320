//! Cross-site request refusal for every state-changing request.
//!
//! Each mutating form also carries a one-time token bound to the signed-in
//! identity (see `idempotency`), which an attacker's page cannot know. On top
//! of that, a browser's `Origin` (or `Referer`) must name this host.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;

/// The `host[:port]` part of an absolute URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|a| !a.is_empty())
}

/// True when the request's Origin/Referer (if any) is this site.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let claimed = match headers.get(header::ORIGIN) {
        Some(o) => o.to_str().ok().map(str::to_string),
        None => match headers.get(header::REFERER) {
            Some(r) => r.to_str().ok().map(str::to_string),
            // Neither header: not a modern browser's cross-site form post.
            // The identity-bound form token still has to match.
            None => return true,
        },
    };
    let Some(claimed) = claimed else { return false };
    let Some(from) = authority(&claimed) else {
        // `Origin: null` (sandboxed frames, some redirects) is never us.
        return false;
    };
    [header::HOST.as_str(), "x-forwarded-host"]
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .flat_map(|v| v.split(','))
        .any(|host| host.trim().eq_ignore_ascii_case(from))
}

/// Middleware: refuse cross-site POSTs with a 403 page before any handler runs.
pub async fn check_origin(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && !same_origin(req.headers()) {
        tracing::warn!(
            origin = ?req.headers().get(header::ORIGIN),
            "cross-site request refused"
        );
        return AppError::Forbidden(
            "This form was sent from another site, so keydesk refused it. Nothing was changed."
                .into(),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn origin_must_match_host() {
        let kd = ("host", "kd.example");
        let cases: [(&[(&str, &str)], bool); 7] = [
            (&[kd, ("origin", "https://kd.example")], true),
            (&[kd, ("origin", "https://evil.example")], false),
            (&[kd, ("origin", "null")], false),
            (&[kd, ("referer", "https://kd.example/users/x")], true),
            (&[kd, ("referer", "https://kd.example.evil/x")], false),
            (&[("host", "127.0.0.1:8080")], true),
            (
                &[
                    ("host", "keydesk:8080"),
                    ("x-forwarded-host", "kd.example"),
                    ("origin", "https://kd.example"),
                ],
                true,
            ),
        ];
        for (pairs, same) in cases {
            assert_eq!(same_origin(&headers(pairs)), same, "{pairs:?}");
        }
    }
}
