//! `KEYDESK_REVIEW_*`: access reviews started on a schedule (off unless
//! `KEYDESK_REVIEW_EVERY` is set), what they cover, how long they stay
//! open, and when reviewers are reminded.

use clap::Args;

use crate::reviews::{Fallback, Reviewers, Schedule, Scope};

#[derive(Args, Clone, Debug)]
pub struct ReviewArgs {
    /// Start an access review on this schedule (e.g. 90d, or 12h): the first when none of KEYDESK_REVIEW_SCOPE was started within it. Unset or 0: reviews start only from /reviews/new or `keydesk review --start`.
    #[arg(long, env = "KEYDESK_REVIEW_EVERY")]
    pub review_every: Option<String>,

    /// What a scheduled review (and `keydesk review --start`) covers: a comma list of all, root, anywhere, no-expiry, expires-after:N, inactive:N.
    #[arg(long, env = "KEYDESK_REVIEW_SCOPE", default_value = "all")]
    pub review_scope: String,

    /// How many days a scheduled review stays open (its deadline), and the default deadline of the form.
    #[arg(long, env = "KEYDESK_REVIEW_DAYS", default_value_t = 14, value_parser = clap::value_parser!(u32).range(1..=366))]
    pub review_days: u32,

    /// What a scheduled review does with keys nobody decides by the deadline: keep, revoke or recommended.
    #[arg(long, env = "KEYDESK_REVIEW_DEFAULT", default_value = "keep")]
    pub review_default: String,

    /// Who decides a scheduled review's items: owner (self-review on "My keys"), operators, or owner,operators.
    #[arg(
        long,
        env = "KEYDESK_REVIEW_REVIEWERS",
        default_value = "owner,operators"
    )]
    pub review_reviewers: String,

    /// A review recommends revoking the keys of users with no Vultr activity for more than this many days (unless its scope has inactive:N).
    #[arg(long, env = "KEYDESK_REVIEW_INACTIVE_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub review_inactive_days: u32,

    /// Reviewers with keys left to decide are reminded once, this many days before a review's deadline (with a webhook or SMTP configured).
    #[arg(long, env = "KEYDESK_REVIEW_REMIND_DAYS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=365))]
    pub review_remind_days: u32,
}

/// `keydesk review --start`.
#[derive(Args)]
pub struct ReviewCmd {
    /// Start a review now (required: in `serve`, KEYDESK_REVIEW_EVERY schedules them).
    #[arg(long)]
    pub start: bool,

    /// Against the demo's built-in fake Vultr API and seeded users instead of Vultr.
    #[arg(long)]
    pub demo: bool,

    #[command(flatten)]
    pub serve: super::ServeArgs,
}

/// `90d`, `12h`, `30m` or `0` (off) as a duration.
pub fn parse_every(raw: &str) -> Result<Option<std::time::Duration>, String> {
    let s = raw.trim();
    if s.is_empty() || s == "0" {
        return Ok(None);
    }
    let Some(unit) = s.chars().last() else {
        return Ok(None);
    };
    let n = &s[..s.len() - unit.len_utf8()];
    let secs = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        _ => {
            return Err(format!(
                "KEYDESK_REVIEW_EVERY={raw:?}: expected a number of days, hours or minutes, like 90d, 12h or 30m"
            ));
        }
    };
    match n.parse::<u64>() {
        Ok(n) if n > 0 && n <= 3650 * 86_400 / secs => {
            Ok(Some(std::time::Duration::from_secs(n * secs)))
        }
        _ => Err(format!(
            "KEYDESK_REVIEW_EVERY={raw:?}: expected a whole number above 0, like 90d, 12h or 30m"
        )),
    }
}

impl ReviewArgs {
    /// The schedule, or an error naming the variable.
    pub fn schedule(&self) -> Result<Schedule, String> {
        let every = parse_every(self.review_every.as_deref().unwrap_or(""))?;
        let scope: Scope = self
            .review_scope
            .parse()
            .map_err(|e| format!("KEYDESK_REVIEW_SCOPE: {e}"))?;
        let fallback: Fallback = self
            .review_default
            .parse()
            .map_err(|e| format!("KEYDESK_REVIEW_DEFAULT: {e}"))?;
        let reviewers: Reviewers = self
            .review_reviewers
            .parse()
            .map_err(|e| format!("KEYDESK_REVIEW_REVIEWERS: {e}"))?;
        if let Some(every) = every
            && every < std::time::Duration::from_secs(u64::from(self.review_days) * 86_400)
        {
            return Err(format!(
                "KEYDESK_REVIEW_EVERY ({}) is shorter than KEYDESK_REVIEW_DAYS ({} days): a review would be due while the last is still open",
                self.review_every.as_deref().unwrap_or(""),
                self.review_days
            ));
        }
        Ok(Schedule {
            every,
            scope,
            days: self.review_days,
            fallback,
            reviewers,
            inactive_days: self.review_inactive_days,
            remind_days: self.review_remind_days,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reads_days_hours_and_minutes() {
        assert_eq!(parse_every("").unwrap(), None);
        assert_eq!(parse_every("0").unwrap(), None);
        assert_eq!(
            parse_every("90d").unwrap(),
            Some(std::time::Duration::from_secs(90 * 86_400))
        );
        assert_eq!(
            parse_every("12h").unwrap(),
            Some(std::time::Duration::from_secs(12 * 3_600))
        );
        for bad in ["90", "d", "-1d", "0d", "1w", "9999999d", "90д"] {
            let e = parse_every(bad).unwrap_err();
            assert!(e.contains("KEYDESK_REVIEW_EVERY"), "{bad}: {e}");
        }
    }
}
