//! Parsers of single values, each error naming what a good value looks like.

use std::time::Duration;

use http::HeaderName;

/// An absolute http(s) URL without a trailing slash, query or fragment.
pub(super) fn parse_public_url(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    let u = reqwest::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err("expected an http(s) URL such as https://keydesk.example.com".into());
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err("no query or fragment, just the address".into());
    }
    Ok(s.to_string())
}

pub(super) fn parse_seconds(s: &str) -> Result<Duration, String> {
    let t = s.trim().trim_end_matches('s');
    t.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v <= 3600.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("expected seconds between 0 and 3600, got {s:?}"))
}

pub(super) fn parse_seconds_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim().trim_end_matches('s') == "0" {
        return Ok(Duration::ZERO);
    }
    parse_seconds(s)
}

/// `group:*` is no group: refused, so a role list never admits everyone by
/// accident (only the demo does, and not through a list).
pub(super) fn no_wildcard(var: &str, list: &[String]) -> Result<(), String> {
    match list.iter().find(|e| {
        e.trim()
            .strip_prefix("group:")
            .is_some_and(|g| g.trim() == "*")
    }) {
        Some(_) => Err(format!(
            "{var}: group:* would match everyone signed in; name the groups (group:platform) or list emails"
        )),
        None => Ok(()),
    }
}

pub(super) fn header_name(var: &str, value: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(value.trim().as_bytes())
        .map_err(|_| format!("{var} {value:?} is not a header name"))
}
