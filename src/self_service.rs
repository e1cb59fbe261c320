//! `KEYDESK_SELF_SERVICE`: what key owners may get for themselves on
//! "My keys". Revoking one's own key is always allowed and never waits; this
//! decides only new keys (request and rotate).

use time::{Date, OffsetDateTime};

use crate::policy::expiry_date;
use crate::vultr::NewApiKey;

/// How an owner's request for a new key is handled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// "My keys" is read-only (plus revoke): no request or rotate forms.
    #[default]
    Off,
    /// Every request waits for an approver.
    Request,
    /// A key within the key policy and the day limit is made at once;
    /// anything else waits for an approver.
    Direct,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "" => Ok(Self::Off),
            "request" => Ok(Self::Request),
            "direct" => Ok(Self::Direct),
            other => Err(format!(
                "KEYDESK_SELF_SERVICE {other:?}: expected off, request or direct"
            )),
        }
    }
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Request => "request",
            Mode::Direct => "direct",
        }
    }
}

/// The self-service policy: the mode and, for `direct`, the longest key
/// made without a second person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelfService {
    pub mode: Mode,
    /// `KEYDESK_SELF_SERVICE_MAX_DAYS`.
    pub max_days: u32,
}

/// The default day limit of a `direct` key.
pub const DEFAULT_MAX_DAYS: u32 = 90;

impl Default for SelfService {
    fn default() -> Self {
        Self {
            mode: Mode::Off,
            max_days: DEFAULT_MAX_DAYS,
        }
    }
}

impl SelfService {
    pub fn enabled(&self) -> bool {
        self.mode != Mode::Off
    }

    /// Why an owner's new key `k` waits for an approver (in words), or
    /// `None` when it may be made at once. Off: nothing is made at all,
    /// which the pages refuse before asking.
    pub fn why(&self, k: &NewApiKey) -> Option<String> {
        self.why_at(k, OffsetDateTime::now_utc().date())
    }

    pub fn why_at(&self, k: &NewApiKey, today: Date) -> Option<String> {
        let n = self.max_days;
        match self.mode {
            Mode::Off => Some("self-service keys are off".into()),
            Mode::Request => Some("every key an owner asks for waits for an approver".into()),
            Mode::Direct => match expiry_date(k) {
                None => Some("a key that never expires is never made by its owner alone".into()),
                Some(d) if d > today + time::Duration::days(i64::from(n)) => Some(format!(
                    "an owner makes keys alone only when they expire within {n} days"
                )),
                Some(_) => None,
            },
        }
    }

    /// The rule in words, for the owner's form.
    pub fn describe(&self) -> String {
        match self.mode {
            Mode::Off => "Self-service keys are off: ask the keydesk operators.".into(),
            Mode::Request => {
                "Every key you ask for waits for an approver; once approved, you make it yourself and see it once.".into()
            }
            Mode::Direct => format!(
                "A key that expires within {} days is made at once and shown to you once. A longer one, or one that never expires, waits for an approver.",
                self.max_days
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(date: Option<&str>) -> NewApiKey {
        NewApiKey {
            name: "ci".into(),
            expire: date.is_some(),
            date_expire: date.map(|d| format!("{d}T00:00:00Z")),
        }
    }

    #[test]
    fn modes_parse_and_refuse_naming_the_variable() {
        assert_eq!("off".parse::<Mode>(), Ok(Mode::Off));
        assert_eq!(" Request ".parse::<Mode>(), Ok(Mode::Request));
        assert_eq!("direct".parse::<Mode>(), Ok(Mode::Direct));
        let e = "yes".parse::<Mode>().unwrap_err();
        assert!(e.contains("KEYDESK_SELF_SERVICE"), "{e}");
    }

    #[test]
    fn direct_makes_short_keys_only_and_never_one_without_expiry() {
        let today = time::macros::date!(2026 - 11 - 30);
        let s = SelfService {
            mode: Mode::Direct,
            max_days: 90,
        };
        assert_eq!(s.why_at(&key(Some("2027-02-28")), today), None, "90 days");
        assert!(s.why_at(&key(Some("2027-03-01")), today).is_some(), "91");
        assert!(s.why_at(&key(None), today).unwrap().contains("never"));
        let request = SelfService {
            mode: Mode::Request,
            ..s
        };
        assert!(request.why_at(&key(Some("2026-12-01")), today).is_some());
        assert!(SelfService::default().why_at(&key(None), today).is_some());
    }
}
