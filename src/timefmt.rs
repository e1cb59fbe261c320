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

/// The one rounding rule for every relative date: whole `unit`s from `now`
/// to `t`, rounded up (towards the later moment). Time left is never
/// understated (2 days 1 h left is "in 3 days", as the key's state says), and
/// time past is never overstated (36 h ago is "1 day ago").
pub fn units_until(t: OffsetDateTime, now: OffsetDateTime, unit_secs: i64) -> i64 {
    let secs = (t - now).whole_seconds();
    secs.div_euclid(unit_secs) + i64::from(secs.rem_euclid(unit_secs) != 0)
}

/// Whole days until `t` under that rule: what "expires in N days" counts.
pub fn days_until(t: OffsetDateTime, now: OffsetDateTime) -> i64 {
    units_until(t, now, 86_400)
}

/// `in 3 days`, `5 h ago`, `just now`: the largest unit whose rounded count
/// is at least one of it (under a minute is "just now").
pub fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    if (t - now).whole_seconds().abs() < 60 {
        return "just now".to_string();
    }
    let minutes = units_until(t, now, 60);
    let hours = units_until(t, now, 3600);
    let days = days_until(t, now);
    let (n, unit) = if minutes.abs() < 60 {
        (minutes, "min")
    } else if hours.abs() < 24 {
        (hours, "h")
    } else if days.abs() == 1 {
        (days, "day")
    } else {
        (days, "days")
    };
    match n {
        0 => "just now".to_string(),
        n if n > 0 => format!("in {n} {unit}"),
        n => format!("{} {unit} ago", -n),
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

/// A time in Unix milliseconds (the database clock), as `format_utc` shows it.
pub fn display_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(format_utc)
        .unwrap_or_else(|_| "—".to_string())
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
        assert_eq!(relative(now + time::Duration::days(90), now), "in 90 days");
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

    #[test]
    fn one_rounding_rule_at_the_edges() {
        let now = OffsetDateTime::now_utc();
        let d = time::Duration::days;
        let s = time::Duration::seconds;
        // Already past.
        assert_eq!(relative(now - s(30), now), "just now");
        assert_eq!(relative(now - s(90), now), "1 min ago");
        assert_eq!(
            relative(now - d(1) - time::Duration::hours(12), now),
            "1 day ago"
        );
        assert_eq!(relative(now - d(40), now), "40 days ago");
        // Under one hour, under one day.
        assert_eq!(relative(now + s(59 * 60 + 59), now), "in 1 h");
        assert_eq!(relative(now + s(25 * 60), now), "in 25 min");
        assert_eq!(relative(now + time::Duration::hours(23), now), "in 23 h");
        assert_eq!(relative(now + d(1) - s(1), now), "in 1 day");
        // Exactly N days, and N days minus one second.
        assert_eq!(relative(now + d(7), now), "in 7 days");
        assert_eq!(relative(now + d(7) - s(1), now), "in 7 days");
        assert_eq!(relative(now + d(7) + s(1), now), "in 8 days");
        assert_eq!(days_until(now + d(7) - s(1), now), 7);
        assert_eq!(days_until(now + d(7), now), 7);
        assert_eq!(days_until(now - s(1), now), 0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Text shaped like the dates Vultr sends, and near misses.
    fn datelike() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2}|\\.[0-9]{1,9}Z)?",
            "[-+0-9:TZ. ]{0,40}",
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// A parsed time prints back as RFC 3339, which parses to the same
        /// instant; whatever fails to parse is shown as sent. Never a panic.
        #[test]
        fn times_round_trip_or_show_as_sent(raw in datelike()) {
            match parse_time(&raw) {
                Some(t) => {
                    let back = t.format(&Rfc3339).unwrap();
                    prop_assert_eq!(parse_time(&back), Some(t));
                    prop_assert!(display_time(Some(&raw)).ends_with(" UTC"));
                }
                None if !raw.trim().is_empty() && parse_time(raw.trim()).is_none() => {
                    prop_assert_eq!(display_time(Some(&raw)), raw.trim());
                }
                None => {}
            }
        }

        /// Any two instants: the relative words never panic and agree with
        /// the order of the two.
        #[test]
        fn relative_words_follow_the_order(a in -10_000_000_000i64..10_000_000_000, b in -10_000_000_000i64..10_000_000_000) {
            let (t, now) = (
                OffsetDateTime::from_unix_timestamp(a).unwrap(),
                OffsetDateTime::from_unix_timestamp(b).unwrap(),
            );
            let words = relative(t, now);
            if a - b >= 60 {
                prop_assert!(words.starts_with("in "), "{}", words);
            } else if b - a >= 60 {
                prop_assert!(words.ends_with(" ago"), "{}", words);
            } else {
                prop_assert_eq!(words, "just now");
            }
        }
    }
}
