//! One request to Vultr: the rate budget, a bounded body, metrics, errors
//! mapped to `VultrError` (with any `Retry-After`), and retries for GETs.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use super::{ErrorBody, MAX_BODY_BYTES, MAX_RETRY_AFTER, VultrClient, VultrError};

impl VultrClient {
    /// GETs are idempotent: retried on connection errors, 429, 502, 503 and
    /// 504 with exponential backoff and full jitter, honouring `Retry-After`.
    pub(super) async fn get_with_retries(
        &self,
        endpoint: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<u8>, VultrError> {
        let mut attempt = 0;
        loop {
            let req = self.request(Method::GET, path).query(query);
            match self.send_raw(endpoint, req, false).await {
                Ok(body) => return Ok(body),
                Err((e, retry_after)) => {
                    let retryable = matches!(
                        e,
                        VultrError::Unreachable(_)
                            | VultrError::Api {
                                status: 429 | 502 | 503 | 504,
                                ..
                            }
                    );
                    if !retryable || attempt >= self.inner.opts.max_retries {
                        return Err(e);
                    }
                    let backoff = self.inner.opts.backoff_base * 2u32.saturating_pow(attempt);
                    let jittered = backoff.mul_f64(rand::random::<f64>());
                    let wait = retry_after.map_or(jittered, |r| r.min(MAX_RETRY_AFTER));
                    attempt += 1;
                    metrics::counter!("keydesk_upstream_retries_total", "endpoint" => endpoint)
                        .increment(1);
                    tracing::info!(endpoint, attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying upstream GET");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    pub(super) async fn send_once(
        &self,
        endpoint: &'static str,
        req: reqwest::RequestBuilder,
        is_write: bool,
    ) -> Result<Vec<u8>, VultrError> {
        self.send_raw(endpoint, req, is_write)
            .await
            .map_err(|(e, _)| e)
    }

    /// One request: waits for the rate limiter, sends, reads a bounded body,
    /// records metrics. On failure also returns any `Retry-After`.
    pub(super) async fn send_raw(
        &self,
        endpoint: &'static str,
        req: reqwest::RequestBuilder,
        is_write: bool,
    ) -> Result<Vec<u8>, (VultrError, Option<Duration>)> {
        let wait = self.inner.budget.acquire().await;
        if wait > Duration::from_millis(1) {
            metrics::counter!("keydesk_ratelimit_waits_total").increment(1);
            // Seconds, as the name says: a float gauge that only goes up.
            metrics::gauge!("keydesk_ratelimit_wait_seconds_total").increment(wait.as_secs_f64());
        }
        let started = Instant::now();
        let result = self.exchange(req, is_write).await;
        let status = match &result {
            Ok(_) => "2xx".to_string(),
            Err((VultrError::Api { status, .. }, _)) => status.to_string(),
            Err((VultrError::Timeout | VultrError::OutcomeUnknown(_), _)) => "timeout".into(),
            Err((VultrError::Unreachable(_), _)) => "unreachable".into(),
            Err((VultrError::Malformed(_), _)) => "malformed".into(),
        };
        metrics::counter!("keydesk_upstream_requests_total", "endpoint" => endpoint, "status" => status)
            .increment(1);
        metrics::histogram!("keydesk_upstream_request_duration_seconds", "endpoint" => endpoint)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
        is_write: bool,
    ) -> Result<Vec<u8>, (VultrError, Option<Duration>)> {
        let mut resp = req
            .send()
            .await
            .map_err(|e| (transport_error(&e, is_write), None))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        if let Some(len) = resp.content_length()
            && len > MAX_BODY_BYTES as u64
        {
            return Err((
                VultrError::Malformed(format!(
                    "response of {len} bytes exceeds the {MAX_BODY_BYTES}-byte limit"
                )),
                None,
            ));
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        return Err((
                            VultrError::Malformed(format!(
                                "response exceeds the {MAX_BODY_BYTES}-byte limit"
                            )),
                            None,
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err((transport_error(&e, is_write), None)),
            }
        }
        if status.is_success() {
            return Ok(body);
        }
        Err((api_error(status, &body), retry_after))
    }
}

/// How keydesk reads the answer to a write that is not idempotent (creating
/// a key): the one table. Only an answer that proves Vultr refused gives the
/// form, claim link or approval back; anything else may have created the key
/// (a gateway's 502/504 after Vultr acted, a 408, a 5xx of Vultr's own), so
/// it is an unknown outcome and the form is spent. A 429 is Vultr's rate
/// limiter answering before anything was done. Connection failures before
/// sending and unreadable 2xx answers are decided in `transport_error` and
/// `create_key`.
pub(super) fn create_refused(status: u16) -> bool {
    matches!(status, 400 | 401 | 403 | 404 | 409 | 422 | 429)
}

/// A create's error as the write path must treat it: a proven refusal, and
/// a connection that was never made, stay as they are; everything else (any
/// other status, a timeout, a body too large or unreadable) becomes
/// `OutcomeUnknown`.
pub(super) fn create_error(e: VultrError) -> VultrError {
    match e {
        VultrError::Api { status, message } if !create_refused(status) => {
            VultrError::OutcomeUnknown(format!(
                "Vultr (or a gateway before it) answered {status}: {message}"
            ))
        }
        VultrError::Malformed(why) => {
            VultrError::OutcomeUnknown(format!("the answer could not be read: {why}"))
        }
        VultrError::Timeout => VultrError::OutcomeUnknown("timed out".into()),
        other => other,
    }
}

fn api_error(status: StatusCode, body: &[u8]) -> VultrError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.error)
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("unexpected status")
                .to_string()
        });
    // Bound what an upstream can make us display and log.
    let message: String = message.chars().take(300).collect();
    VultrError::Api {
        status: status.as_u16(),
        message,
    }
}

/// reqwest's error with its causes (DNS, refused, TLS…), one line. The URL
/// in it holds no secret (ids only).
fn with_causes(e: &reqwest::Error) -> String {
    crate::causes::chain(e)
}

fn transport_error(e: &reqwest::Error, is_write: bool) -> VultrError {
    if e.is_connect() {
        return VultrError::Unreachable(with_causes(e));
    }
    if is_write {
        return VultrError::OutcomeUnknown(if e.is_timeout() {
            "timed out".to_string()
        } else {
            with_causes(e)
        });
    }
    if e.is_timeout() {
        VultrError::Timeout
    } else {
        VultrError::Unreachable(with_causes(e))
    }
}

/// `Retry-After` in either form: delay seconds, or an HTTP-date (a date in
/// the past means now).
pub(super) fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_both_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:28:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn only_a_proven_refusal_gives_a_create_back() {
        // (status, refused: the form may be submitted again)
        let table = [
            (400, true),
            (401, true),
            (403, true),
            (404, true),
            (409, true),
            (422, true),
            (429, true),
            (408, false),
            (405, false),
            (500, false),
            (502, false),
            (503, false),
            (504, false),
            (520, false),
        ];
        for (status, refused) in table {
            assert_eq!(create_refused(status), refused, "{status}");
            let e = create_error(VultrError::Api {
                status,
                message: "x".into(),
            });
            assert_eq!(
                matches!(e, VultrError::OutcomeUnknown(_)),
                !refused,
                "{status}: {e:?}"
            );
        }
        // What never reached Vultr stays a definite failure.
        assert!(matches!(
            create_error(VultrError::Unreachable("refused".into())),
            VultrError::Unreachable(_)
        ));
        // A 2xx too large or unreadable may still have made the key.
        assert!(matches!(
            create_error(VultrError::Malformed("20 MiB".into())),
            VultrError::OutcomeUnknown(_)
        ));
    }

    #[test]
    fn error_body_message_is_used() {
        let e = api_error(
            StatusCode::UNAUTHORIZED,
            br#"{"error":"Invalid API token.","status":401}"#,
        );
        assert!(
            matches!(e, VultrError::Api { status: 401, ref message } if message == "Invalid API token.")
        );
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>");
        assert!(
            matches!(e, VultrError::Api { status: 502, ref message } if message == "Bad Gateway")
        );
    }
}
