//! Settling creates whose answer was lost, from what Vultr lists now and
//! what keydesk read just before the create. The stores (`lost_creates`,
//! `grants`) only store; this layer reads Vultr and decides.
//!
//! What counts as the create's key ("a candidate"):
//! - its name is the one the create sent (a claim link: it carries the tag);
//! - it was not among the user's keys keydesk read just before the create
//!   (`keys_before`); with no such read, nothing is ever called made;
//! - no other audit entry already accounts for it;
//! - where Vultr reports a creation date, it lies within
//!   [start − `CLOCK_SLACK_MS`, start + the pending bound].
//!
//! One candidate: "a key named X appeared while keydesk's answer was lost"
//! (it may be the create's, or one made in the console meanwhile: the words
//! say only that). More than one: the entry stays open as ambiguous, each
//! candidate shown. None once the bound has passed: not created.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditAction, Intent};
use crate::db::Db;
use crate::grants::Grants;
use crate::ids::VultrId;
use crate::vultr::{ApiKey, VultrClient};

pub mod claims;
pub mod lost;

/// Slack for clocks: a key dated up to this long before the start still matches.
pub const CLOCK_SLACK_MS: i64 = 5 * 60 * 1000;

/// The user's keys as keydesk read them (uncached) just before a create.
#[derive(Debug, Clone)]
pub struct KeysBefore {
    pub ids: Vec<String>,
    /// When the read was made (database clock): the create's start.
    pub at_ms: i64,
}

impl KeysBefore {
    /// As stored: a JSON list of ids.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.ids).unwrap_or_else(|_| "[]".into())
    }
}

/// Parses a stored `keys_before`; `None` when there was no read (or it is
/// unreadable): then no key can be told apart from an older one.
pub fn parse_before(stored: Option<&str>) -> Option<HashSet<String>> {
    serde_json::from_str::<Vec<String>>(stored?)
        .ok()
        .map(|v| v.into_iter().collect())
}

/// Whether `intent` may make a key at Vultr (and so may lose one).
pub fn creates_key(intent: &Intent) -> bool {
    matches!(
        intent.action,
        AuditAction::KeyCreate | AuditAction::KeyRotate | AuditAction::GrantClaim
    )
}

/// Audits a settlement keydesk made itself, with `note` as its words.
async fn audited(
    audit: &crate::audit::AuditStore,
    intent: &Intent,
    outcome: crate::audit::Outcome,
    note: &str,
) {
    match audit.intent(intent).await {
        Ok(id) => {
            let how = crate::audit::Settlement {
                error: Some(note),
                ..outcome.settled()
            };
            audit.settle(id, how).await
        }
        Err(e) => tracing::error!(error = %e, "reconciliation could not be audited"),
    }
}

/// For the one audited write, just before a create's intent: reads the
/// user's key ids, uncached, and keeps them with the claim link at once (a
/// claim whose process stops mid-call is settled with them too). `None` for
/// an intent that makes no key, or when the list cannot be read: the create
/// goes ahead, and if its answer is lost nothing is ever called made.
pub async fn keys_before(
    vultr: &VultrClient,
    db: &Db,
    grants: &Grants,
    intent: &Intent,
) -> Option<KeysBefore> {
    if !creates_key(intent) {
        return None;
    }
    let user = VultrId::parse(intent.target_user_id.as_deref()?).ok()?;
    let (keys, at_ms) = tokio::join!(vultr.list_keys(&user), db.now_ms());
    let before = match (keys, at_ms) {
        (Ok(keys), Ok(at_ms)) => KeysBefore {
            ids: keys.into_iter().map(|k| k.id).collect(),
            at_ms,
        },
        (Err(e), _) => {
            tracing::warn!(error = %e, "keys before a create unreadable: a lost answer will stay open");
            return None;
        }
        (_, Err(e)) => {
            tracing::warn!(error = %e, "no clock before a create: a lost answer will stay open");
            return None;
        }
    };
    if let (AuditAction::GrantClaim, Some(grant)) = (intent.action, intent.grant_id.as_deref())
        && let Err(e) = grants.set_keys_before(grant, &before.to_json()).await
    {
        tracing::warn!(error = %e, "keys before a claim not kept: a lost answer will stay open");
    }
    Some(before)
}

/// A key that may be a lost create's, as shown on the page: never a secret
/// (the last characters come from Vultr's masked value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: String,
    pub name: String,
    /// Vultr's masked value (`****…ab12`): its last characters only.
    pub masked: Option<String>,
}

impl Candidate {
    fn of(k: &ApiKey) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name_or_dash().to_string(),
            // Only the last four characters are kept, whatever Vultr sent.
            masked: k.api_key.as_deref().map(|v| {
                let tail: Vec<char> = v.chars().rev().take(4).collect();
                format!("…{}", tail.into_iter().rev().collect::<String>())
            }),
        }
    }

    /// Parses a stored list; an unreadable one is empty.
    pub fn parse_list(stored: Option<&str>) -> Vec<Candidate> {
        stored
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    pub fn to_json(list: &[Candidate]) -> String {
        serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
    }
}

/// What the key list says about one lost create.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding {
    /// Exactly one key, new since the snapshot, bears the name.
    Appeared(Candidate),
    /// More than one might be it (or, with no snapshot, any at all).
    Ambiguous(Vec<Candidate>),
    /// No such key (yet).
    Nothing,
}

/// The lost create being looked for.
pub struct Sought<'a> {
    /// Whether a key's name is the one the create sent.
    pub named: &'a (dyn Fn(&str) -> bool + Sync),
    /// The user's keys just before the create; `None` when unknown.
    pub before: Option<&'a HashSet<String>>,
    /// Keys other entries account for.
    pub taken: &'a HashSet<String>,
    pub started_ms: i64,
    pub bound_ms: i64,
}

/// The keys in `keys` that may be the sought create's.
pub fn find(keys: &[ApiKey], s: &Sought<'_>) -> Finding {
    let window = s.started_ms - CLOCK_SLACK_MS..=s.started_ms.saturating_add(s.bound_ms);
    let mut found: Vec<Candidate> = keys
        .iter()
        .filter(|k| k.name.as_deref().is_some_and(s.named))
        .filter(|k| !s.taken.contains(&k.id))
        .filter(|k| s.before.is_none_or(|b| !b.contains(&k.id)))
        .filter(|k| created_ms(k).is_none_or(|c| window.contains(&c)))
        .map(Candidate::of)
        .collect();
    if found.is_empty() {
        Finding::Nothing
    } else if found.len() == 1 && s.before.is_some() {
        Finding::Appeared(found.swap_remove(0))
    } else {
        Finding::Ambiguous(found)
    }
}

/// An ambiguous finding in words, for the audit: what appeared `while`
/// (the answer was lost) and why keydesk cannot tell.
pub fn ambiguity(name: &str, list: &[Candidate], when: &str) -> String {
    let ids: Vec<&str> = list.iter().map(|c| c.id.as_str()).collect();
    let ids = ids.join(", ");
    match list {
        [_] => format!(
            "ambiguous: a key named {name} ({ids}) appeared while {when}, but the keys before it were not read: keydesk cannot tell whether it made it"
        ),
        _ => format!(
            "ambiguous: keys named {name} ({ids}) appeared while {when}: keydesk cannot tell which, if any, it made"
        ),
    }
}

fn created_ms(k: &ApiKey) -> Option<i64> {
    let t = crate::timefmt::parse_time(k.date_created.as_deref()?)?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, name: &str, created: Option<&str>) -> ApiKey {
        ApiKey {
            id: id.into(),
            name: Some(name.into()),
            api_key: Some("****…ab12".into()),
            date_created: created.map(str::to_string),
            ..Default::default()
        }
    }

    fn sought<'a>(
        before: Option<&'a HashSet<String>>,
        taken: &'a HashSet<String>,
        started_ms: i64,
    ) -> Sought<'a> {
        Sought {
            named: &|n| n == "ci",
            before,
            taken,
            started_ms,
            bound_ms: 60_000,
        }
    }

    #[test]
    fn a_key_there_before_the_create_is_never_its_own() {
        let before: HashSet<String> = ["old".to_string()].into();
        let none = HashSet::new();
        let keys = [key("old", "ci", None)];
        assert_eq!(
            find(&keys, &sought(Some(&before), &none, 0)),
            Finding::Nothing
        );
        let keys = [key("old", "ci", None), key("new", "ci", None)];
        let Finding::Appeared(c) = find(&keys, &sought(Some(&before), &none, 0)) else {
            panic!("one new key")
        };
        assert_eq!((c.id.as_str(), c.masked.as_deref()), ("new", Some("…ab12")));
    }

    #[test]
    fn two_new_keys_or_no_snapshot_are_ambiguous() {
        let before = HashSet::new();
        let none = HashSet::new();
        let keys = [
            key("a", "ci", None),
            key("b", "ci", None),
            key("c", "x", None),
        ];
        let Finding::Ambiguous(c) = find(&keys, &sought(Some(&before), &none, 0)) else {
            panic!("two")
        };
        assert_eq!(c.len(), 2);
        let keys = [key("a", "ci", None)];
        assert!(matches!(
            find(&keys, &sought(None, &none, 0)),
            Finding::Ambiguous(c) if c.len() == 1
        ));
        let taken: HashSet<String> = ["a".to_string()].into();
        assert_eq!(
            find(&keys, &sought(Some(&before), &taken, 0)),
            Finding::Nothing
        );
    }

    #[test]
    fn the_words_say_what_is_known() {
        let c = |id: &str| Candidate {
            id: id.into(),
            name: "ci".into(),
            masked: None,
        };
        let one = ambiguity("ci", &[c("a")], "entry #1's answer was lost");
        assert!(one.contains("a key named ci (a) appeared while entry #1's answer was lost"));
        assert!(one.contains("cannot tell whether it made it"), "{one}");
        let two = ambiguity("ci", &[c("a"), c("b")], "x");
        assert!(
            two.contains("keys named ci (a, b) appeared while x"),
            "{two}"
        );
        assert!(two.contains("cannot tell which, if any, it made"), "{two}");
        let list = [c("a")];
        assert_eq!(
            Candidate::parse_list(Some(&Candidate::to_json(&list))),
            list
        );
        assert!(Candidate::parse_list(Some("not json")).is_empty());
        assert_eq!(
            parse_before(Some(r#"["k"]"#)),
            Some(["k".to_string()].into())
        );
        assert_eq!(parse_before(None), None);
    }

    #[test]
    fn a_creation_date_outside_the_window_rules_a_key_out() {
        let before = HashSet::new();
        let none = HashSet::new();
        // 2026-01-01T00:00:00Z in ms.
        let start = 1_767_225_600_000;
        let inside = [key("a", "ci", Some("2026-01-01T00:00:30+00:00"))];
        assert!(matches!(
            find(&inside, &sought(Some(&before), &none, start)),
            Finding::Appeared(_)
        ));
        for outside in ["2025-12-31T23:50:00+00:00", "2026-01-01T00:02:00+00:00"] {
            let keys = [key("a", "ci", Some(outside))];
            assert_eq!(
                find(&keys, &sought(Some(&before), &none, start)),
                Finding::Nothing,
                "{outside}"
            );
        }
    }
}
