//! The key policy and the validation of the add-key form: pure functions of
//! their input, used by the configuration and by every form that makes a key.

use serde::Deserialize;
use time::{Date, OffsetDateTime};

use crate::powers::{Capability, Level};
use crate::vultr::NewApiKey;

/// Longest key name accepted.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest reason / ticket text accepted.
pub const MAX_REASON_CHARS: usize = 500;

/// What makes an action wait for a second person (`KEYDESK_APPROVAL_FOR`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApprovalRule {
    /// A key (create, rotate, claim link) that never expires.
    NoExpiry,
    /// A key whose expiry is more than this many days away.
    OverDays(u32),
    /// Switching a user's API access back on.
    ApiAccessOn,
    /// Every create, rotate and claim link.
    AllKeys,
    /// A key of a user holding every one of these ACLs.
    Acl(Vec<String>),
    /// A key of a user at this level or above (root, or sensitive).
    Level(Level),
    /// A key of a user whose allowlist admits any address.
    Anywhere,
    /// Adding an entry to a user's API allowlist.
    AllowlistWiden,
}

impl std::str::FromStr for ApprovalRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let expected = "expected no-expiry, over-days:N, api-access-on, all-keys, acl:NAME[+NAME…], level:root|sensitive, anywhere or allowlist-widen";
        match s {
            "no-expiry" => return Ok(Self::NoExpiry),
            "api-access-on" => return Ok(Self::ApiAccessOn),
            "all-keys" => return Ok(Self::AllKeys),
            "anywhere" => return Ok(Self::Anywhere),
            "allowlist-widen" => return Ok(Self::AllowlistWiden),
            _ => {}
        }
        if let Some(n) = s.strip_prefix("over-days:") {
            return match n.trim().parse::<u32>() {
                Ok(n) if n > 0 => Ok(Self::OverDays(n)),
                _ => Err(format!(
                    "{s:?}: over-days needs a whole number of days above 0"
                )),
            };
        }
        if let Some(l) = s.strip_prefix("level:") {
            return match Level::parse(l) {
                Some(l @ (Level::Root | Level::Sensitive)) => Ok(Self::Level(l)),
                _ => Err(format!("{s:?}: level takes root or sensitive")),
            };
        }
        if let Some(list) = s.strip_prefix("acl:") {
            let acls: Vec<String> = list.split('+').map(|a| a.trim().to_string()).collect();
            if let Some(bad) = acls
                .iter()
                .find(|a| !crate::powers::ACLS.iter().any(|(n, _)| n == a))
            {
                return Err(format!("{s:?}: {bad:?} is not a Vultr ACL"));
            }
            return Ok(Self::Acl(acls));
        }
        Err(format!("{s:?}: {expected}"))
    }
}

/// An action that may need a second person.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A new key (create, rotate or claim link) with these parameters, for
    /// a user with this capability (ACLs and allowlist as Vultr reports them).
    Key(&'a NewApiKey, &'a Capability),
    /// API access switched on (or off, which never needs approval) for a
    /// user with this capability: every key of theirs works again.
    ApiAccess(bool, &'a Capability),
    /// An entry added to a user's API allowlist.
    AllowlistAdd,
}

/// Two-person approval: the rules and how long a request waits.
#[derive(Clone, Debug, Default)]
pub struct ApprovalPolicy {
    pub rules: Vec<ApprovalRule>,
    pub ttl: std::time::Duration,
}

impl ApprovalPolicy {
    /// The rules that concern new keys, in words for the add-key form.
    pub fn describe_keys(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter_map(|r| match r {
                ApprovalRule::AllKeys => {
                    Some("Every new key waits for a second person's approval.".to_string())
                }
                ApprovalRule::NoExpiry => Some(
                    "A key that never expires waits for a second person's approval.".to_string(),
                ),
                ApprovalRule::OverDays(n) => Some(format!(
                    "An expiry more than {n} days away, or none, waits for a second person's approval."
                )),
                ApprovalRule::Acl(acls) => Some(format!(
                    "A key for a user with {} waits for a second person's approval.",
                    acls.join(" and ")
                )),
                ApprovalRule::Level(l) => Some(format!(
                    "A key for a {} user waits for a second person's approval.",
                    l.words()
                )),
                ApprovalRule::Anywhere => Some(
                    "A key for a user whose allowlist admits any address waits for a second person's approval.".to_string(),
                ),
                ApprovalRule::ApiAccessOn | ApprovalRule::AllowlistWiden => None,
            })
            .collect()
    }

    /// The ACLs the rules name (`acl:` rules): what a decision records of
    /// a user's ACLs, beside the level and the reach.
    pub fn named_acls(&self) -> Vec<String> {
        let mut named: Vec<String> = self
            .rules
            .iter()
            .filter_map(|r| match r {
                ApprovalRule::Acl(acls) => Some(acls.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        named.sort();
        named.dedup();
        named
    }

    /// Why `change` needs a second person (the first rule that applies, in
    /// words), or `None` when it may go ahead.
    pub fn why(&self, change: Change<'_>) -> Option<String> {
        self.why_at(change, OffsetDateTime::now_utc().date())
    }

    pub fn why_at(&self, change: Change<'_>, today: Date) -> Option<String> {
        self.rules.iter().find_map(|rule| match (rule, change) {
            (ApprovalRule::AllKeys, Change::Key(..)) => {
                Some("every new key needs a second person".to_string())
            }
            (ApprovalRule::NoExpiry, Change::Key(k, _)) if !k.expire => {
                Some("a key that never expires needs a second person".to_string())
            }
            (ApprovalRule::OverDays(n), Change::Key(k, _)) => match expiry_date(k) {
                // A key that never expires lives longer than any N days.
                None => Some(format!(
                    "a key that never expires lives longer than {n} days and needs a second person"
                )),
                Some(d) => (d > today + time::Duration::days(i64::from(*n)))
                    .then(|| format!("an expiry more than {n} days away needs a second person")),
            },
            (ApprovalRule::ApiAccessOn, Change::ApiAccess(true, _)) => {
                Some("switching API access back on needs a second person".to_string())
            }
            (ApprovalRule::Acl(acls), Change::Key(_, cap) | Change::ApiAccess(true, cap))
                if cap.acls_unknown
                    || acls.iter().all(|a| cap.acls.iter().any(|c| c.trim() == a)) =>
            {
                Some(format!(
                    "a key for a user with {} needs a second person",
                    acls.join(" and ")
                ))
            }
            (ApprovalRule::Level(l), Change::Key(_, cap) | Change::ApiAccess(true, cap))
                if cap.level >= *l =>
            {
                Some(format!(
                    "a key for a {} user needs a second person",
                    cap.level.words()
                ))
            }
            (ApprovalRule::Anywhere, Change::Key(_, cap) | Change::ApiAccess(true, cap))
                if cap.anywhere() =>
            {
                Some("a key usable from any address needs a second person".to_string())
            }
            (ApprovalRule::AllowlistWiden, Change::AllowlistAdd) => Some(
                "adding an allowlist entry widens where keys work and needs a second person"
                    .to_string(),
            ),
            _ => None,
        })
    }
}

/// The day a new key expires, or `None` when it never does.
pub fn expiry_date(k: &NewApiKey) -> Option<Date> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    k.date_expire
        .as_deref()
        .and_then(|d| d.get(..10))
        .and_then(|d| Date::parse(d, &fmt).ok())
        .filter(|_| k.expire)
}

/// Rules the keydesk operators set for new keys; staff see them in the form.
#[derive(Clone, Debug, Default)]
pub struct KeyPolicy {
    /// When set, expiry is mandatory and at most this many days away.
    pub max_days: Option<u32>,
    /// When set, key names must match this pattern (anchored).
    pub name_pattern: Option<regex::Regex>,
    /// When true, a reason / ticket is mandatory.
    pub require_reason: bool,
}

impl KeyPolicy {
    pub fn expiry_required(&self) -> bool {
        self.max_days.is_some()
    }

    /// The latest expiry date allowed, if any.
    pub fn max_date(&self) -> Option<Date> {
        self.max_days
            .map(|d| OffsetDateTime::now_utc().date() + time::Duration::days(i64::from(d)))
    }

    /// The rules in words, for the form.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(d) = self.max_days {
            out.push(format!("Keys must expire, at most {d} days from today."));
        }
        if let Some(p) = &self.name_pattern {
            out.push(format!("Key names must match the pattern {}.", p.as_str()));
        }
        if self.require_reason {
            out.push("A reason or ticket is required.".into());
        }
        out
    }
}

/// The add-key form as rendered: token, values and per-field errors.
#[derive(Debug, Clone, Default)]
pub struct KeyForm {
    pub token: String,
    pub name: String,
    pub expire: bool,
    pub date_expire: String,
    pub name_error: Option<String>,
    pub date_error: Option<String>,
    pub reason: String,
    pub reason_error: Option<String>,
    pub form_error: Option<String>,
    /// The latest date policy allows (the date input's `max`), if any.
    pub max_date: String,
    pub expiry_required: bool,
    pub reason_required: bool,
    pub policy_notes: Vec<String>,
    /// Tomorrow, the earliest valid expiry (the date input's `min`).
    pub min_date: String,
    /// What the form makes, in its labels: "key", or "replacement" when rotating.
    pub subject: &'static str,
}

fn tomorrow() -> Date {
    OffsetDateTime::now_utc()
        .date()
        .next_day()
        .unwrap_or(Date::MAX)
}

impl KeyForm {
    pub fn blank(token: String, policy: &KeyPolicy) -> Self {
        Self {
            token,
            min_date: tomorrow().to_string(),
            max_date: policy.max_date().map(|d| d.to_string()).unwrap_or_default(),
            expiry_required: policy.expiry_required(),
            reason_required: policy.require_reason,
            policy_notes: policy.describe(),
            expire: policy.expiry_required(),
            subject: "key",
            ..Default::default()
        }
    }

    /// The validated reason, if one was given.
    pub fn reason(&self) -> Option<String> {
        (!self.reason.is_empty()).then(|| self.reason.clone())
    }

    pub fn has_errors(&self) -> bool {
        self.name_error.is_some()
            || self.date_error.is_some()
            || self.reason_error.is_some()
            || self.form_error.is_some()
    }
}

/// What the browser posts. Field names are a contract: `name`, `expire`, `date_expire`.
#[derive(Deserialize, Default)]
pub struct CreateKeyInput {
    pub name: Option<String>,
    pub expire: Option<String>,
    pub date_expire: Option<String>,
    pub reason: Option<String>,
    pub form_token: Option<String>,
}

/// An HTML checkbox sends `on` (or our `true`); accept the usual spellings of yes.
pub fn checkbox(v: Option<&str>) -> bool {
    matches!(
        v.map(|s| s.trim().to_ascii_lowercase()).as_deref(),
        Some("on" | "true" | "1" | "yes")
    )
}

/// Validates the input into the upstream body, or fills the form's errors.
pub fn validate(
    input: &CreateKeyInput,
    form: &mut KeyForm,
    policy: &KeyPolicy,
) -> Option<NewApiKey> {
    let raw_name = input.name.as_deref().unwrap_or("");
    let name = raw_name.trim();
    form.name = raw_name.chars().take(MAX_NAME_CHARS * 2).collect();
    form.expire = checkbox(input.expire.as_deref());
    form.date_expire = input
        .date_expire
        .as_deref()
        .unwrap_or("")
        .trim()
        .chars()
        .take(32)
        .collect();

    if name.is_empty() {
        form.name_error = Some("Enter a name for the key.".into());
    } else if name.chars().count() > MAX_NAME_CHARS {
        form.name_error = Some(format!(
            "The name is too long: {MAX_NAME_CHARS} characters at most."
        ));
    } else if name.chars().any(char::is_control) {
        form.name_error = Some("The name may not contain control characters.".into());
    } else if let Some(p) = &policy.name_pattern
        && !p.is_match(name)
    {
        form.name_error = Some(format!(
            "The name does not follow the naming policy ({}).",
            p.as_str()
        ));
    }

    match check_reason(input.reason.as_deref(), policy) {
        Ok(r) => form.reason = r.unwrap_or_default(),
        Err(e) => {
            form.reason = input
                .reason
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(MAX_REASON_CHARS)
                .collect();
            form.reason_error = Some(e);
        }
    }

    let mut date_expire = None;
    if form.expire {
        if form.date_expire.is_empty() {
            form.date_error = Some("Choose the date the key expires on.".into());
        } else {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            match Date::parse(&form.date_expire, &fmt) {
                Err(_) => {
                    form.date_error =
                        Some("That is not a real calendar date (expected YYYY-MM-DD).".into())
                }
                Ok(d) if d < tomorrow() => {
                    form.date_error = Some("The expiry date must be in the future.".into())
                }
                Ok(d) if policy.max_date().is_some_and(|m| d > m) => {
                    form.date_error = Some(format!(
                        "Policy allows keys to live at most {} days: choose {} or earlier.",
                        policy.max_days.unwrap_or(0),
                        policy.max_date().map(|m| m.to_string()).unwrap_or_default()
                    ))
                }
                Ok(d) => date_expire = Some(format!("{d}T00:00:00Z")),
            }
        }
    } else if policy.expiry_required() {
        form.date_error = Some(format!(
            "Policy requires every key to expire, at most {} days from today.",
            policy.max_days.unwrap_or(0)
        ));
    } else if !form.date_expire.is_empty() {
        form.date_error = Some(
            "You set an expiry date but did not tick Expiry. Tick it, or clear the date for a key that never expires.".into(),
        );
    }

    if form.has_errors() {
        return None;
    }
    Some(NewApiKey {
        name: name.to_string(),
        expire: form.expire,
        date_expire,
    })
}

/// A trimmed, bounded reason; an error when it is bad or required and missing.
pub fn check_reason(raw: Option<&str>, policy: &KeyPolicy) -> Result<Option<String>, String> {
    let r = raw.unwrap_or("").trim();
    if r.chars().count() > MAX_REASON_CHARS {
        return Err(format!(
            "The reason is too long: {MAX_REASON_CHARS} characters at most."
        ));
    }
    if r.chars().any(char::is_control) {
        return Err("The reason may not contain control characters.".into());
    }
    if r.is_empty() {
        if policy.require_reason {
            return Err("Give a reason or ticket for this action.".into());
        }
        return Ok(None);
    }
    Ok(Some(r.to_string()))
}

#[cfg(test)]
mod approval_tests {
    use super::*;
    use time::macros::date;

    fn key(expire: bool, date: Option<&str>) -> NewApiKey {
        NewApiKey {
            name: "k".into(),
            expire,
            date_expire: date.map(|d| format!("{d}T00:00:00Z")),
        }
    }

    /// A user no capability rule names: limited, no allowlist reported.
    const NONE: Capability = Capability {
        acls: Vec::new(),
        level: Level::Limited,
        reach: crate::allowlist::Reach {
            entries: Vec::new(),
        },
        acls_unknown: false,
    };

    fn cap(acls: &[&str], cidrs: &[(&str, u32)]) -> Capability {
        let acls: Vec<String> = acls.iter().map(|s| s.to_string()).collect();
        let entries = cidrs
            .iter()
            .map(|(s, n)| crate::allowlist::Entry {
                subnet: s.to_string(),
                subnet_size: Some(*n),
                ..Default::default()
            })
            .collect();
        Capability::of(&crate::powers::Powers::default(), Some(&acls), entries)
    }

    #[test]
    fn the_capability_rules_read_what_vultr_reports() {
        let rules: Vec<ApprovalRule> = [
            "level:root",
            "acl:billing+dns",
            "anywhere",
            "allowlist-widen",
        ]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
        assert_eq!(rules[0], ApprovalRule::Level(Level::Root));
        assert!("level:limited".parse::<ApprovalRule>().is_err());
        assert!(
            "acl:teleport"
                .parse::<ApprovalRule>()
                .unwrap_err()
                .contains("teleport")
        );
        let today = date!(2026 - 11 - 26);
        let k = key(true, Some("2026-12-01"));
        let narrow = [("45.76.1.0", 24)];
        let one = |r: &str, c: &Capability| {
            let p = ApprovalPolicy {
                rules: vec![r.parse().unwrap()],
                ..Default::default()
            };
            p.why_at(Change::Key(&k, c), today)
        };
        assert!(one("level:root", &cap(&["manage_users"], &narrow)).is_some());
        assert!(one("level:root", &cap(&["dns"], &narrow)).is_none());
        assert!(one("level:root", &cap(&["billing"], &narrow)).is_none());
        assert!(one("level:sensitive", &cap(&["billing"], &narrow)).is_some());
        assert!(
            one("level:sensitive", &cap(&["manage_users"], &narrow)).is_some(),
            "root is above"
        );
        assert!(one("level:sensitive", &cap(&["dns"], &narrow)).is_none());
        assert!(
            one(
                "acl:billing+dns",
                &cap(&["billing", "dns", "support"], &narrow)
            )
            .is_some()
        );
        assert!(
            one("acl:billing+dns", &cap(&["billing"], &narrow)).is_none(),
            "all of them"
        );
        assert!(one("anywhere", &cap(&["dns"], &[("0.0.0.0", 0)])).is_some());
        assert!(one("anywhere", &cap(&["dns"], &[("::", 0)])).is_some());
        assert!(one("anywhere", &cap(&["dns"], &narrow)).is_none());
        assert!(one("anywhere", &NONE).is_none());
        let p = ApprovalPolicy {
            rules,
            ..Default::default()
        };
        assert!(p.why_at(Change::AllowlistAdd, today).is_some());
        let root = cap(&["manage_users"], &narrow);
        assert!(
            p.why_at(Change::ApiAccess(true, &root), today).is_some(),
            "releasing the brake"
        );
        assert!(p.why_at(Change::ApiAccess(false, &root), today).is_none());
    }

    #[test]
    fn rules_parse_and_apply() {
        let rules: Vec<ApprovalRule> = ["no-expiry", "over-days:90", "api-access-on"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        assert_eq!(rules[1], ApprovalRule::OverDays(90));
        assert!("over-days:x".parse::<ApprovalRule>().is_err());
        assert!("sometimes".parse::<ApprovalRule>().is_err());
        let p = ApprovalPolicy {
            rules,
            ttl: std::time::Duration::from_secs(3600),
        };
        let today = date!(2026 - 11 - 26);
        let (never, in90, in91) = (
            key(false, None),
            key(true, Some("2027-02-24")),
            key(true, Some("2027-02-25")),
        );
        assert!(p.why_at(Change::Key(&never, &NONE), today).is_some());
        assert!(
            p.why_at(Change::Key(&in90, &NONE), today).is_none(),
            "exactly 90 days"
        );
        assert!(
            p.why_at(Change::Key(&in91, &NONE), today).is_some(),
            "91 days"
        );
        assert!(p.why_at(Change::ApiAccess(true, &NONE), today).is_some());
        assert!(
            p.why_at(Change::ApiAccess(false, &NONE), today).is_none(),
            "the brake itself never waits"
        );
        // over-days alone still holds a key that never expires.
        let over = ApprovalPolicy {
            rules: vec![ApprovalRule::OverDays(90)],
            ..Default::default()
        };
        let why = over.why_at(Change::Key(&never, &NONE), today);
        assert!(why.is_some_and(|w| w.contains("never expires")));
        assert!(over.why_at(Change::Key(&in90, &NONE), today).is_none());
        let all = ApprovalPolicy {
            rules: vec![ApprovalRule::AllKeys],
            ..Default::default()
        };
        assert!(
            all.why_at(Change::Key(&key(true, Some("2026-12-01")), &NONE), today)
                .is_some()
        );
        assert!(
            ApprovalPolicy::default()
                .why_at(Change::Key(&key(false, None), &NONE), today)
                .is_none()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, expire: Option<&str>, date: &str) -> CreateKeyInput {
        CreateKeyInput {
            name: Some(name.into()),
            expire: expire.map(str::to_string),
            date_expire: Some(date.into()),
            reason: None,
            form_token: None,
        }
    }

    fn check(i: CreateKeyInput) -> (Option<NewApiKey>, KeyForm) {
        let p = KeyPolicy::default();
        let mut f = KeyForm::blank("t".into(), &p);
        (validate(&i, &mut f, &p), f)
    }

    #[test]
    fn a_valid_expiring_key() {
        let d = (OffsetDateTime::now_utc().date() + time::Duration::days(90)).to_string();
        let (body, _) = check(input("  ci  ", Some("on"), &d));
        let body = body.unwrap();
        assert_eq!(body.name, "ci");
        assert!(body.expire);
        assert_eq!(body.date_expire.unwrap(), format!("{d}T00:00:00Z"));
    }

    #[test]
    fn a_key_that_never_expires() {
        let (body, _) = check(input("ci", None, ""));
        assert_eq!(
            body.unwrap(),
            NewApiKey {
                name: "ci".into(),
                expire: false,
                date_expire: None
            }
        );
    }

    #[test]
    fn bad_inputs_are_explained() {
        let cases = [
            input("", None, ""),
            input("   ", None, ""),
            input(&"x".repeat(300), None, ""),
            input("a\u{7}b", None, ""),
            input("ok", Some("on"), ""),
            input("ok", Some("on"), "2030-02-30"),
            input("ok", Some("on"), "2020-01-01"),
            input("ok", Some("on"), "tomorrow"),
            input("ok", None, "2030-01-01"),
        ];
        for c in cases {
            let (body, f) = check(c);
            assert!(body.is_none());
            assert!(f.has_errors());
        }
    }

    #[test]
    fn policy_requires_expiry_within_the_limit_and_the_name_pattern() {
        let p = KeyPolicy {
            max_days: Some(90),
            name_pattern: Some(regex::Regex::new("^ci-[a-z]+$").unwrap()),
            require_reason: true,
        };
        let days =
            |n: i64| (OffsetDateTime::now_utc().date() + time::Duration::days(n)).to_string();
        // (name, expiry date or none, reason, the error expected, if any)
        let cases = [
            ("ci-deploy", Some(days(90)), Some("OPS-12"), None),
            (
                "ci-deploy",
                None,
                Some("OPS-12"),
                Some("requires every key to expire"),
            ),
            (
                "ci-deploy",
                Some(days(91)),
                Some("OPS-12"),
                Some("at most 90 days"),
            ),
            ("Deploy", None, Some("x"), Some("naming policy")),
            ("ci-deploy", Some(days(9)), None, Some("Give a reason")),
        ];
        for (name, date, reason, error) in cases {
            let mut i = input(
                name,
                date.as_ref().map(|_| "on"),
                date.as_deref().unwrap_or(""),
            );
            i.reason = reason.map(str::to_string);
            let mut f = KeyForm::blank("t".into(), &p);
            let body = validate(&i, &mut f, &p);
            let errors = [&f.name_error, &f.date_error, &f.reason_error];
            match error {
                None => assert!(body.is_some(), "{name} {date:?}: {errors:?}"),
                Some(e) => assert!(
                    errors
                        .iter()
                        .any(|x| x.as_deref().is_some_and(|x| x.contains(e))),
                    "{name} {date:?}: expected {e:?} in {errors:?}"
                ),
            }
        }
    }

    #[test]
    fn entered_values_are_kept_on_error() {
        let (_, f) = check(input("my key", Some("on"), "2030-02-30"));
        assert_eq!(f.name, "my key");
        assert!(f.expire);
        assert_eq!(f.date_expire, "2030-02-30");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Names: ASCII-heavy, with controls, spaces, long runs and any text.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,20}",
            "[a-z0-9-]{95,105}",
            "[a-z\t\n\u{0}\u{7f}\u{85} ]{0,10}",
            any::<String>(),
        ]
    }

    /// Expiry dates: real ones around today, and near misses.
    fn date() -> impl Strategy<Value = String> {
        let today = OffsetDateTime::now_utc().date();
        prop_oneof![
            (-5i64..120).prop_map(move |d| (today + time::Duration::days(d)).to_string()),
            "[0-9]{4}-[0-9]{2}-[0-9]{2}",
            "[0-9]{1,6}-[0-9]{1,3}-[0-9]{1,3}T?[0-9:Z]{0,9}",
            any::<String>(),
        ]
    }

    fn policies() -> impl Strategy<Value = KeyPolicy> {
        (proptest::option::of(1u32..100), any::<bool>()).prop_map(|(max_days, pattern)| KeyPolicy {
            max_days,
            name_pattern: pattern.then(|| regex::Regex::new("^[a-z0-9-]+$").unwrap()),
            require_reason: false,
        })
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// A key name is refused with a clear error on its field, or taken
        /// as typed (trimmed): 1–100 characters, no control character, and
        /// within the naming policy.
        #[test]
        fn a_key_name_is_refused_in_words_or_kept_as_typed(raw in name(), policy in policies()) {
            let input = CreateKeyInput { name: Some(raw.clone()), ..Default::default() };
            let mut form = KeyForm::blank(String::new(), &policy);
            let key = validate(&input, &mut form, &policy);
            match (&form.name_error, key) {
                (None, Some(k)) => {
                    prop_assert_eq!(k.name.as_str(), raw.trim());
                    prop_assert!((1..=MAX_NAME_CHARS).contains(&k.name.chars().count()));
                    prop_assert!(!k.name.chars().any(char::is_control));
                    prop_assert!(policy.name_pattern.as_ref().is_none_or(|p| p.is_match(&k.name)));
                }
                (Some(why), None) => prop_assert!(why.starts_with("The name ") || why.starts_with("Enter a name")),
                // A name that passed but no key: only the policy's expiry can refuse.
                (None, None) => prop_assert!(form.date_error.is_some() && policy.expiry_required()),
                (Some(_), Some(_)) => prop_assert!(false, "a key with a name error"),
            }
            prop_assert!(form.name.chars().count() <= MAX_NAME_CHARS * 2);
        }

        /// An expiry is refused with a clear error on its field, or becomes
        /// a real date from tomorrow to the policy's latest, sent as
        /// `YYYY-MM-DDT00:00:00Z`, which reads back as the same day.
        #[test]
        fn an_expiry_is_refused_in_words_or_round_trips(raw in date(), tick in any::<bool>(), policy in policies()) {
            let input = CreateKeyInput {
                name: Some("k".into()),
                expire: tick.then(|| "on".to_string()),
                date_expire: Some(raw.clone()),
                ..Default::default()
            };
            let mut form = KeyForm::blank(String::new(), &policy);
            match validate(&input, &mut form, &policy) {
                Some(k) => {
                    prop_assert!(form.date_error.is_none());
                    prop_assert_eq!(k.expire, tick);
                    match expiry_date(&k) {
                        Some(d) => {
                            prop_assert!(tick);
                            prop_assert_eq!(k.date_expire.clone(), Some(format!("{d}T00:00:00Z")));
                            prop_assert_eq!(d.to_string(), raw.trim());
                            prop_assert!(d >= tomorrow());
                            prop_assert!(policy.max_date().is_none_or(|m| d <= m));
                        }
                        None => {
                            prop_assert!(!tick && k.date_expire.is_none());
                            prop_assert!(raw.trim().is_empty() && !policy.expiry_required());
                        }
                    }
                }
                None => {
                    let why = form.date_error.clone().unwrap_or_default();
                    prop_assert!(!why.is_empty(), "refused without a word on the date");
                    prop_assert!(why.ends_with('.'), "{}", why);
                }
            }
        }
    }
}
