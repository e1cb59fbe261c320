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

pub(super) fn header_name(var: &str, value: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(value.trim().as_bytes())
        .map_err(|_| format!("{var} {value:?} is not a header name"))
}

/// A CIDR, spaces around it allowed; a bare address gets the fix in words.
pub(super) fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let t = s.trim();
    t.parse().map_err(|_| match t.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => format!("{t:?} is not a CIDR; write {a}/32"),
        Ok(std::net::IpAddr::V6(a)) => format!("{t:?} is not a CIDR; write {a}/128"),
        Err(_) => format!("{t:?} is not a CIDR such as 10.0.0.0/8 or 127.0.0.1/32"),
    })
}

/// The Vultr API's base URL: no `/v2` (keydesk adds it), no trailing slash.
pub(super) fn parse_api_url(s: &str) -> Result<String, String> {
    let t = s.trim().trim_end_matches('/');
    if t.ends_with("/v2") {
        return Err(format!(
            "{t:?} ends in /v2: give the base URL ({}), keydesk adds /v2 itself",
            t.trim_end_matches("/v2")
        ));
    }
    let u = reqwest::Url::parse(t).map_err(|e| format!("{t:?} is not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{t:?} is not an http(s) URL"));
    }
    Ok(t.to_string())
}

/// Days in a comma list (spaces allowed): 1 to 3650.
pub(super) fn parse_days(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|d| (1..=3650).contains(d))
        .ok_or_else(|| {
            format!(
                "{:?} is not a number of days from 1 to 3650 (e.g. 30,7,1)",
                s.trim()
            )
        })
}

/// `12h`, `90m`, `3600s` or `3600` (seconds): from 1 minute to 30 days.
pub(super) fn parse_span(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, 'h')) => (&t[..i], 3600),
        Some((i, 'm')) => (&t[..i], 60),
        Some((i, 's')) => (&t[..i], 1),
        _ => (t, 1),
    };
    digits
        .trim()
        .parse::<i64>()
        .ok()
        .map(|n| n.saturating_mul(unit))
        .filter(|secs| (60..=30 * 24 * 3600).contains(secs))
        .ok_or_else(|| format!("{t:?} is not a duration from 1m to 720h (e.g. 12h, 90m, 3600s)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_take_units_and_bounds() {
        assert_eq!(parse_span("12h"), Ok(43200));
        assert_eq!(parse_span("90m"), Ok(5400));
        assert_eq!(parse_span("3600s"), Ok(3600));
        assert_eq!(parse_span("3600"), Ok(3600));
        for bad in ["0", "10s", "1000h", "h", "abc", "-5m"] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
    }
}
