//! How times are parsed and shown: one place, used by the Vultr models, the
//! audit trail and the pages, so every date on a page reads the same way.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Upstream timestamps rendered as `YYYY-MM-DD HH:MM UTC`; anything unparsable is shown as sent.
pub fn display_time(raw: Option<&str>) -> String {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => "—".to_string(),
        Some(s) => match parse_time(s) {
            Some(t) => format_utc(t),
            None => s.to_string(),
        },
    }
}

/// Absolute time plus how far it is from now: `2027-02-24 00:00 UTC (in 90 days)`.
pub fn display_time_relative(raw: Option<&str>) -> String {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => "—".to_string(),
        Some(s) => match parse_time(s) {
            Some(t) => format!(
                "{} ({})",
                format_utc(t),
                relative(t, OffsetDateTime::now_utc())
            ),
            None => s.to_string(),
        },
    }
}

/// `in 3 days`, `5 h ago`, `just now`.
pub fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (t - now).whole_seconds();
    let abs = secs.unsigned_abs();
    let amount = match abs {
        0..=59 => return "just now".to_string(),
        60..=3599 => format!("{} min", abs / 60),
        3600..=86_399 => format!("{} h", abs / 3600),
        86_400..=172_799 => "1 day".to_string(),
        _ => format!("{} days", abs / 86_400),
    };
    if secs > 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

pub fn format_utc(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// Parses RFC 3339 and the `YYYY-MM-DD HH:MM:SS` form some Vultr endpoints use.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    if let Ok(t) = time::PrimitiveDateTime::parse(s, &fmt) {
        return Some(t.assume_utc());
    }
    let date_only = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &date_only)
        .ok()
        .map(|d| d.midnight().assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            relative(
                now + time::Duration::days(90) + time::Duration::seconds(5),
                now
            ),
            "in 90 days"
        );
        assert_eq!(relative(now - time::Duration::hours(5), now), "5 h ago");
        assert_eq!(relative(now, now), "just now");
    }

    #[test]
    fn parses_vultr_time_forms() {
        assert!(parse_time("2030-01-01T00:00:00Z").is_some());
        assert!(parse_time("2030-01-01T00:00:00+00:00").is_some());
        assert!(parse_time("2030-01-01 00:00:00").is_some());
        assert!(parse_time("soon").is_none());
    }
}
