//! Which notice a key is due, if any: pure, so its edges are unit-tested
//! against a fixed clock.

use time::{Duration, OffsetDateTime};

/// The "expired" notice's threshold.
pub const EXPIRED: i64 = 0;

/// An expired key is noticed only this long after it expired: older ones
/// stay in the report, never a flood on a first run.
pub const EXPIRED_WINDOW: Duration = Duration::days(7);

/// The notice a key is due, given when it expires, now, and the thresholds
/// (days, any order). `Some(t)`: the tightest threshold it has crossed (the
/// smallest `t` with `expiry - now <= t days`), or `EXPIRED` when it expired
/// within `EXPIRED_WINDOW`. A key first seen inside several thresholds is due
/// only the tightest; the looser ones are never sent for it.
pub fn due(expires: OffsetDateTime, now: OffsetDateTime, thresholds: &[i64]) -> Option<i64> {
    let left = expires - now;
    if left <= Duration::ZERO {
        return (-left <= EXPIRED_WINDOW).then_some(EXPIRED);
    }
    thresholds
        .iter()
        .copied()
        .filter(|t| *t > 0 && left <= Duration::days(*t))
        .min()
}

/// Whole days left (negative once expired): 6 days 23 hours is 6.
pub fn days_left(expires: OffsetDateTime, now: OffsetDateTime) -> i64 {
    let secs = (expires - now).whole_seconds();
    secs.div_euclid(86_400)
}

/// Parses `KEYDESK_NOTIFY_DAYS` values: positive, deduplicated, tightest last.
pub fn thresholds(days: &[u32]) -> Result<Vec<i64>, String> {
    let mut out: Vec<i64> = days.iter().map(|d| i64::from(*d)).collect();
    if out.is_empty() || out.contains(&0) {
        return Err("KEYDESK_NOTIFY_DAYS needs positive whole days, e.g. 30,7,1".into());
    }
    out.sort_unstable_by(|a, b| b.cmp(a));
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-26 12:00:00 UTC);
    const T: [i64; 3] = [30, 7, 1];

    fn at(d: Duration) -> Option<i64> {
        due(NOW + d, NOW, &T)
    }

    #[test]
    fn thresholds_at_their_edges() {
        assert_eq!(at(Duration::days(7)), Some(7), "exactly 7 days is inside 7");
        assert_eq!(at(Duration::days(7) + Duration::seconds(1)), Some(30));
        assert_eq!(
            at(Duration::days(5)),
            Some(7),
            "first seen at 5 days: only 7"
        );
        assert_eq!(at(Duration::days(30)), Some(30));
        assert_eq!(at(Duration::days(30) + Duration::seconds(1)), None);
        assert_eq!(at(Duration::hours(23)), Some(1));
        assert_eq!(at(Duration::seconds(1)), Some(1));
    }

    #[test]
    fn expired_keys_only_within_a_week() {
        assert_eq!(at(Duration::ZERO), Some(EXPIRED));
        assert_eq!(at(-Duration::days(1)), Some(EXPIRED), "expired yesterday");
        assert_eq!(at(-Duration::days(7)), Some(EXPIRED));
        assert_eq!(at(-Duration::days(7) - Duration::seconds(1)), None);
        assert_eq!(at(-Duration::days(40)), None, "40 days ago: report only");
    }

    #[test]
    fn days_left_are_whole_days() {
        assert_eq!(days_left(NOW + Duration::days(7), NOW), 7);
        assert_eq!(days_left(NOW + Duration::hours(167), NOW), 6);
        assert_eq!(days_left(NOW - Duration::hours(1), NOW), -1);
        assert_eq!(days_left(NOW - Duration::days(1), NOW), -1);
    }

    #[test]
    fn threshold_lists_are_checked() {
        assert_eq!(thresholds(&[1, 30, 7, 7]), Ok(vec![30, 7, 1]));
        assert!(thresholds(&[]).is_err());
        assert!(thresholds(&[0, 7]).is_err());
    }
}
