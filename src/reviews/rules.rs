//! What an access review is made of, pure: its scope (which keys it
//! covers), who reviews, the decision for items nobody decides, and the
//! recommendation for each key. No I/O: the snapshot job feeds it facts.

use std::fmt;

use time::{Duration, OffsetDateTime};

use crate::powers::Level;

/// One term of a scope (`KEYDESK_REVIEW_SCOPE`, the form's `scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Term {
    /// Every key.
    All,
    /// Keys of root-equivalent users (`manage_users`).
    Root,
    /// Keys usable from any address (or whose reach could not be read).
    Anywhere,
    /// Keys that never expire.
    NoExpiry,
    /// Keys that live more than N more days (or never expire).
    ExpiresAfter(u32),
    /// Keys of users with no Vultr activity for N days (or none recorded).
    Inactive(u32),
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::All => f.write_str("all"),
            Term::Root => f.write_str("root"),
            Term::Anywhere => f.write_str("anywhere"),
            Term::NoExpiry => f.write_str("no-expiry"),
            Term::ExpiresAfter(n) => write!(f, "expires-after:{n}"),
            Term::Inactive(n) => write!(f, "inactive:{n}"),
        }
    }
}

const SCOPE_EXPECTED: &str =
    "expected a comma list of all, root, anywhere, no-expiry, expires-after:N, inactive:N";

impl std::str::FromStr for Term {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "all" => return Ok(Term::All),
            "root" => return Ok(Term::Root),
            "anywhere" => return Ok(Term::Anywhere),
            "no-expiry" => return Ok(Term::NoExpiry),
            _ => {}
        }
        let days = |n: &str, what: &str| match n.trim().parse::<u32>() {
            Ok(n) if (1..=3650).contains(&n) => Ok(n),
            _ => Err(format!(
                "{s:?}: {what} needs a whole number of days from 1 to 3650"
            )),
        };
        if let Some(n) = s.strip_prefix("expires-after:") {
            return days(n, "expires-after").map(Term::ExpiresAfter);
        }
        if let Some(n) = s.strip_prefix("inactive:") {
            return days(n, "inactive").map(Term::Inactive);
        }
        Err(format!("{s:?} is not a review scope: {SCOPE_EXPECTED}"))
    }
}

/// Which keys a review covers: any of its terms (as `KEYDESK_APPROVAL_FOR`
/// is any of its rules). Held sorted and without repeats, so one scope has
/// one spelling, and "at most one open review per scope" means what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope(Vec<Term>);

impl Scope {
    /// Every key.
    pub fn all() -> Self {
        Scope(vec![Term::All])
    }
    pub fn terms(&self) -> &[Term] {
        &self.0
    }
    /// Whether a key with these facts is in scope.
    pub fn covers(&self, f: &Facts) -> bool {
        self.0.iter().any(|t| match *t {
            Term::All => true,
            Term::Root => f.level == Level::Root,
            Term::Anywhere => f.anywhere != Some(false),
            Term::NoExpiry => f.expires.is_none(),
            Term::ExpiresAfter(n) => f
                .expires
                .is_none_or(|t| t > f.now + Duration::days(i64::from(n))),
            Term::Inactive(n) => f.inactive_for(n),
        })
    }
    /// The inactivity days of an `inactive:N` term, if the scope has one.
    pub fn inactive_days(&self) -> Option<u32> {
        self.0.iter().find_map(|t| match t {
            Term::Inactive(n) => Some(*n),
            _ => None,
        })
    }
    /// The scope in words, for pages and notices.
    pub fn words(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|t| match t {
                Term::All => "every key".to_string(),
                Term::Root => "root-equivalent keys".to_string(),
                Term::Anywhere => "keys usable from any address".to_string(),
                Term::NoExpiry => "keys that never expire".to_string(),
                Term::ExpiresAfter(n) => format!("keys living more than {n} more days"),
                Term::Inactive(n) => format!("keys of users inactive for {n} days"),
            })
            .collect();
        parts.join(" or ")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Term::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut terms = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse::<Term>)
            .collect::<Result<Vec<_>, _>>()?;
        if terms.is_empty() {
            return Err(format!("the scope is empty: {SCOPE_EXPECTED}"));
        }
        // `all` covers everything: the rest would only spell it differently.
        if terms.contains(&Term::All) {
            terms = vec![Term::All];
        }
        terms.sort();
        terms.dedup();
        Ok(Scope(terms))
    }
}

/// The decision for items nobody decided by the close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    Keep,
    Revoke,
    /// The item's recommendation.
    Recommended,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Keep => "keep",
            Fallback::Revoke => "revoke",
            Fallback::Recommended => "recommended",
        }
    }
    pub fn words(self) -> &'static str {
        match self {
            Fallback::Keep => "keep them",
            Fallback::Revoke => "revoke them",
            Fallback::Recommended => "follow the recommendation",
        }
    }
    /// What an undecided item with this recommendation comes to.
    pub fn apply(self, recommended: Decision) -> Decision {
        match self {
            Fallback::Keep => Decision::Keep,
            Fallback::Revoke => Decision::Revoke,
            Fallback::Recommended => recommended,
        }
    }
}

impl std::str::FromStr for Fallback {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "keep" => Ok(Fallback::Keep),
            "revoke" => Ok(Fallback::Revoke),
            "recommended" => Ok(Fallback::Recommended),
            other => Err(format!(
                "{other:?} is not a default decision: expected keep, revoke or recommended"
            )),
        }
    }
}

/// Who decides a review's items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reviewers {
    /// Each key's owner (self-review), on "My keys".
    Owner,
    Operators,
    OwnerAndOperators,
}

impl Reviewers {
    pub fn as_str(self) -> &'static str {
        match self {
            Reviewers::Owner => "owner",
            Reviewers::Operators => "operators",
            Reviewers::OwnerAndOperators => "owner,operators",
        }
    }
    pub fn owners(self) -> bool {
        self != Reviewers::Operators
    }
    pub fn operators(self) -> bool {
        self != Reviewers::Owner
    }
    pub fn words(self) -> &'static str {
        match self {
            Reviewers::Owner => "each key's owner",
            Reviewers::Operators => "the operators",
            Reviewers::OwnerAndOperators => "each key's owner or an operator",
        }
    }
}

impl std::str::FromStr for Reviewers {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        parts.sort_unstable();
        parts.dedup();
        match parts.as_slice() {
            ["owner"] => Ok(Reviewers::Owner),
            ["operators"] => Ok(Reviewers::Operators),
            ["operators", "owner"] => Ok(Reviewers::OwnerAndOperators),
            _ => Err(format!(
                "{s:?} is not a set of reviewers: expected owner, operators or owner,operators"
            )),
        }
    }
}

/// Keep or revoke: an item's decision, recommendation or applied outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Keep,
    Revoke,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Keep => "keep",
            Decision::Revoke => "revoke",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "keep" => Some(Decision::Keep),
            "revoke" => Some(Decision::Revoke),
            _ => None,
        }
    }
}

/// What the snapshot knows of one key when the review starts.
#[derive(Clone, Debug)]
pub struct Facts {
    pub now: OffsetDateTime,
    pub level: Level,
    /// Usable from any address; None: the allowlist could not be read.
    pub anywhere: Option<bool>,
    /// None: never expires.
    pub expires: Option<OffsetDateTime>,
    /// The user's last Vultr activity; None: none recorded.
    pub last_activity: Option<OffsetDateTime>,
    /// The user is offboarded (on a hold).
    pub offboarded: bool,
}

impl Facts {
    fn inactive_for(&self, days: u32) -> bool {
        self.last_activity
            .is_none_or(|t| self.now - t > Duration::days(i64::from(days)))
    }

    /// Root-equivalent or usable from anywhere (or unknown): its owner's
    /// word alone does not keep it.
    pub fn needs_other(&self) -> bool {
        self.level == Level::Root || self.anywhere != Some(false)
    }

    /// Revoke when the user is offboarded, the key expired, or the user has
    /// had no activity for more than `inactive_days`; keep otherwise. With
    /// the reason, in words an auditor reads.
    pub fn recommend(&self, inactive_days: u32) -> (Decision, String) {
        if self.offboarded {
            return (Decision::Revoke, "the user is offboarded".into());
        }
        if let Some(t) = self.expires
            && t <= self.now
        {
            return (
                Decision::Revoke,
                format!("the key expired on {}", crate::timefmt::format_utc(t)),
            );
        }
        match self.last_activity {
            None => (
                Decision::Revoke,
                "no Vultr activity recorded for the user".into(),
            ),
            Some(t) if self.now - t > Duration::days(i64::from(inactive_days)) => (
                Decision::Revoke,
                format!(
                    "no Vultr activity for {} days (more than {inactive_days})",
                    (self.now - t).whole_days()
                ),
            ),
            Some(t) => (
                Decision::Keep,
                format!(
                    "the user was active {} day(s) ago",
                    (self.now - t).whole_days()
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        let now = OffsetDateTime::now_utc();
        Facts {
            now,
            level: Level::Limited,
            anywhere: Some(false),
            expires: Some(now + Duration::days(30)),
            last_activity: Some(now - Duration::days(2)),
            offboarded: false,
        }
    }

    #[test]
    fn a_scope_has_one_spelling() {
        let a: Scope = "root, anywhere,root".parse().unwrap();
        let b: Scope = "anywhere,root".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "root,anywhere");
        let all: Scope = "root,all,inactive:30".parse().unwrap();
        assert_eq!(all.to_string(), "all");
        assert_eq!(
            "expires-after:90,inactive:30"
                .parse::<Scope>()
                .unwrap()
                .to_string(),
            "expires-after:90,inactive:30"
        );
    }

    #[test]
    fn bad_scopes_are_refused_in_words() {
        for bad in [
            "",
            " , ",
            "roots",
            "inactive:0",
            "inactive:x",
            "expires-after:",
            "all;root",
        ] {
            let e = bad.parse::<Scope>().unwrap_err();
            assert!(e.contains("scope") || e.contains("days"), "{bad}: {e}");
        }
    }

    #[test]
    fn each_term_covers_what_it_says() {
        let f = facts();
        let covers = |s: &str, f: &Facts| s.parse::<Scope>().unwrap().covers(f);
        assert!(covers("all", &f));
        assert!(!covers("root", &f));
        assert!(covers(
            "root",
            &Facts {
                level: Level::Root,
                ..f.clone()
            }
        ));
        assert!(!covers("anywhere", &f));
        assert!(covers(
            "anywhere",
            &Facts {
                anywhere: Some(true),
                ..f.clone()
            }
        ));
        assert!(covers(
            "anywhere",
            &Facts {
                anywhere: None,
                ..f.clone()
            }
        ));
        assert!(!covers("no-expiry", &f));
        assert!(covers(
            "no-expiry",
            &Facts {
                expires: None,
                ..f.clone()
            }
        ));
        assert!(covers("expires-after:29", &f));
        assert!(!covers("expires-after:31", &f));
        assert!(covers(
            "expires-after:31",
            &Facts {
                expires: None,
                ..f.clone()
            }
        ));
        assert!(!covers("inactive:2", &f));
        assert!(covers("inactive:1", &f));
        assert!(covers(
            "inactive:400",
            &Facts {
                last_activity: None,
                ..f.clone()
            }
        ));
        assert!(covers("root,inactive:1", &f));
    }

    #[test]
    fn recommendations_follow_the_rules_with_reasons() {
        let f = facts();
        assert_eq!(f.recommend(90).0, Decision::Keep);
        let (d, why) = Facts {
            offboarded: true,
            ..f.clone()
        }
        .recommend(90);
        assert_eq!(
            (d, why.as_str()),
            (Decision::Revoke, "the user is offboarded")
        );
        let expired = Facts {
            expires: Some(f.now - Duration::days(1)),
            ..f.clone()
        };
        let (d, why) = expired.recommend(90);
        assert!(
            d == Decision::Revoke && why.starts_with("the key expired on"),
            "{why}"
        );
        let idle = Facts {
            last_activity: Some(f.now - Duration::days(100)),
            ..f.clone()
        };
        let (d, why) = idle.recommend(90);
        assert!(d == Decision::Revoke && why.contains("100 days"), "{why}");
        assert_eq!(idle.recommend(120).0, Decision::Keep);
        let never = Facts {
            last_activity: None,
            ..f.clone()
        };
        assert_eq!(never.recommend(90).0, Decision::Revoke);
    }

    #[test]
    fn root_and_anywhere_keys_need_another_reviewer() {
        let f = facts();
        assert!(!f.needs_other());
        assert!(
            Facts {
                level: Level::Root,
                ..f.clone()
            }
            .needs_other()
        );
        assert!(
            Facts {
                anywhere: Some(true),
                ..f.clone()
            }
            .needs_other()
        );
        assert!(
            Facts {
                anywhere: None,
                ..f.clone()
            }
            .needs_other()
        );
    }

    #[test]
    fn defaults_and_reviewers_parse() {
        assert_eq!(
            "recommended".parse::<Fallback>().unwrap(),
            Fallback::Recommended
        );
        assert_eq!(
            Fallback::Recommended.apply(Decision::Revoke),
            Decision::Revoke
        );
        assert_eq!(Fallback::Keep.apply(Decision::Revoke), Decision::Keep);
        assert!("maybe".parse::<Fallback>().is_err());
        assert_eq!(
            "operators,owner".parse::<Reviewers>().unwrap(),
            Reviewers::OwnerAndOperators
        );
        assert_eq!("owner".parse::<Reviewers>().unwrap().as_str(), "owner");
        assert!("owners".parse::<Reviewers>().is_err());
        assert!("".parse::<Reviewers>().is_err());
    }
}
