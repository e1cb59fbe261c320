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

/// Every variable `cli` declares (its arguments' `env`).
pub(super) fn declared_variables(cli: &clap::Command) -> Vec<String> {
    let mut out: Vec<String> = cli
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    for sub in cli.get_subcommands() {
        out.extend(declared_variables(sub));
    }
    out.sort();
    out.dedup();
    out
}

/// `KEYDESK_*` variables set in `env` that keydesk does not know, each with
/// the closest known name (a typo such as KEYDESK_DATABASE_URI).
pub fn unknown_variables(
    env: impl IntoIterator<Item = String>,
    known: &[String],
) -> Vec<(String, Option<String>)> {
    env.into_iter()
        .filter(|k| k.starts_with("KEYDESK_") && !known.contains(k))
        // The test suite's own variables are not keydesk's.
        .filter(|k| !k.starts_with("KEYDESK_TEST_"))
        .map(|k| {
            let closest = known
                .iter()
                .map(|n| (strsim::damerau_levenshtein(&k, n), n))
                .min()
                .filter(|(d, _)| *d <= 4)
                .map(|(_, n)| n.clone());
            (k, closest)
        })
        .collect()
}

/// The environment variable of the argument whose long flag is `long`.
pub(super) fn env_of(cli: &clap::Command, long: &str) -> Option<String> {
    cli.get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .or_else(|| cli.get_subcommands().find_map(|s| env_of(s, long)))
}
