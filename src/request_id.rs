//! The request id is the server's word. A client's `X-Request-Id` is kept
//! only when it matches `^[A-Za-z0-9._-]{1,64}$`; anything else (a
//! 12,000-character spreadsheet formula, a space, `=`, non-ASCII, the header
//! sent twice) is removed before `SetRequestIdLayer`, which then makes a
//! fresh UUID. So logs, error pages, response headers and audit rows only
//! ever carry an id of that shape.

use axum::extract::Request;
use axum::http::HeaderMap;

/// The request-id header.
pub const HEADER: &str = "x-request-id";

/// Longest request id kept.
const MAX_LEN: usize = 64;

/// Whether `id` matches `^[A-Za-z0-9._-]{1,64}$`.
pub fn is_valid(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The request's id when there is exactly one and it is valid.
pub fn of(headers: &HeaderMap) -> Option<&str> {
    let mut all = headers.get_all(HEADER).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    first.to_str().ok().filter(|id| is_valid(id))
}

/// Middleware (outside `SetRequestIdLayer`): drops a client's request id
/// unless it is one valid value, so a fresh one is made in its place.
pub async fn keep_valid(mut req: Request) -> Request {
    if req.headers().contains_key(HEADER) && of(req.headers()).is_none() {
        req.headers_mut().remove(HEADER);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_the_documented_shape_is_kept() {
        assert_eq!(of(&with(&["abc-123_X.y"])), Some("abc-123_X.y"));
        let uuid = uuid::Uuid::new_v4().to_string();
        assert_eq!(of(&with(&[&uuid])), Some(uuid.as_str()));
        let formula = format!("=HYPERLINK(\"x\"){}", "A".repeat(12_000));
        for bad in ["", "a b", "a=b", &"x".repeat(65), &formula] {
            assert_eq!(of(&with(&[bad])), None, "{bad:?}");
        }
        assert_eq!(of(&with(&["a", "b"])), None, "sent twice");
        assert_eq!(of(&HeaderMap::new()), None);
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// Any text: kept exactly when it has the shape, and then as it came.
        #[test]
        fn any_text_is_kept_only_in_the_documented_shape(s in any::<String>()) {
            let shaped = !s.is_empty()
                && s.len() <= 64
                && s.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
            prop_assert_eq!(is_valid(&s), shaped);
            if let Ok(v) = HeaderValue::from_str(&s) {
                let mut h = HeaderMap::new();
                h.insert(HEADER, v);
                prop_assert_eq!(of(&h), shaped.then_some(s.as_str()));
            }
        }

        /// Ids of the shape, any length up to 64, round-trip.
        #[test]
        fn shaped_ids_round_trip(s in "[A-Za-z0-9._-]{1,64}") {
            let headers = with(&[&s]);
            prop_assert_eq!(of(&headers), Some(s.as_str()));
        }

        /// Near misses (one bad byte, or too long) are refused.
        #[test]
        fn near_misses_are_refused(
            head in "[A-Za-z0-9._-]{0,30}",
            bad in "[ =+@:;,/\\\\\"'<>()!?*%&#~]",
            tail in "[A-Za-z0-9._-]{0,30}",
            long in "[A-Za-z0-9._-]{65,300}",
        ) {
            let near = format!("{head}{bad}{tail}");
            prop_assert!(!is_valid(&near));
            prop_assert!(!is_valid(&long));
        }
    }
}
