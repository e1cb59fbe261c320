//! What a Vultr API key can do: it carries every permission (ACL) of its
//! user. One place names each ACL in words and derives the level that the
//! forms, the approval rules, the report, the notices and the audit share.

use std::fmt;

use crate::allowlist::{Entry, Reach};

/// Each known ACL and what it lets a key do, in plain words.
pub const ACLS: &[(&str, &str)] = &[
    (
        "manage_users",
        "manage users: create and delete users and their API keys, so as strong as the root key",
    ),
    (
        "subscriptions_view",
        "see every subscription (servers, storage, networks)",
    ),
    ("subscriptions", "change and destroy existing subscriptions"),
    (
        "provisioning",
        "deploy new servers and services, which are billed",
    ),
    ("billing", "read invoices and payment data, and pay"),
    ("support", "open and read support tickets"),
    ("abuse", "read and answer abuse complaints"),
    ("dns", "change DNS zones and records"),
    ("upgrade", "upgrade plans, at a cost"),
    ("objstore", "manage Object Storage and its access keys"),
    ("loadbalancer", "manage load balancers"),
];

/// The ACLs that make a key sensitive unless `KEYDESK_SENSITIVE_ACLS` says otherwise.
pub const DEFAULT_SENSITIVE: &[&str] = &["billing", "provisioning", "subscriptions", "upgrade"];

/// How much a key of a user can do, from the user's ACLs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Everything else (including no ACL at all).
    #[default]
    Limited,
    /// Money or infrastructure: billing, provisioning, subscriptions, upgrade.
    Sensitive,
    /// `manage_users`: as strong as the root key.
    Root,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Root, Level::Sensitive, Level::Limited];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Root => "root",
            Level::Sensitive => "sensitive",
            Level::Limited => "limited",
        }
    }

    /// The level in words, for pages and notices.
    pub fn words(self) -> &'static str {
        match self {
            Level::Root => "root-equivalent",
            Level::Sensitive => "sensitive",
            Level::Limited => "limited",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "root" | "root-equivalent" => Some(Level::Root),
            "sensitive" => Some(Level::Sensitive),
            "limited" => Some(Level::Limited),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ACL as shown: its name, what it allows, and whether keydesk knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Power {
    pub acl: String,
    pub words: String,
    pub known: bool,
}

/// Which ACLs count as sensitive (`KEYDESK_SENSITIVE_ACLS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Powers {
    sensitive: Vec<String>,
}

impl Default for Powers {
    fn default() -> Self {
        Self {
            sensitive: DEFAULT_SENSITIVE.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Powers {
    /// A sensitive set of known ACL names; an unknown one is refused, named.
    pub fn with_sensitive(list: &[String]) -> Result<Self, String> {
        let mut sensitive = Vec::new();
        for acl in list.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            if acl == "manage_users" {
                return Err("KEYDESK_SENSITIVE_ACLS: manage_users is always root-equivalent, never merely sensitive".into());
            }
            if !ACLS.iter().any(|(name, _)| *name == acl) {
                let known: Vec<&str> = ACLS.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "KEYDESK_SENSITIVE_ACLS: {acl:?} is not a Vultr ACL (known: {})",
                    known.join(", ")
                ));
            }
            sensitive.push(acl.to_string());
        }
        Ok(Self { sensitive })
    }

    /// The level of a key of a user with these ACLs. Unknown ACLs never
    /// lower it, and never raise it on their own.
    pub fn level(&self, acls: &[String]) -> Level {
        if acls.iter().any(|a| a.trim() == "manage_users") {
            Level::Root
        } else if acls
            .iter()
            .any(|a| self.sensitive.iter().any(|s| s == a.trim()))
        {
            Level::Sensitive
        } else {
            Level::Limited
        }
    }
}

/// Each ACL in words, in the order given; unknown ones as they are, marked.
pub fn describe(acls: &[String]) -> Vec<Power> {
    acls.iter()
        .map(|a| match ACLS.iter().find(|(name, _)| *name == a.trim()) {
            Some((name, words)) => Power {
                acl: (*name).to_string(),
                words: (*words).to_string(),
                known: true,
            },
            None => Power {
                acl: a.clone(),
                words: "unknown to keydesk: check Vultr's documentation".into(),
                known: false,
            },
        })
        .collect()
}

/// What a key of one user can do, and from where: the user's ACLs and
/// API allowlist as Vultr reports them now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capability {
    pub acls: Vec<String>,
    pub level: Level,
    pub reach: Reach,
}

impl Capability {
    pub fn of(powers: &Powers, acls: &[String], allowlist: Vec<Entry>) -> Self {
        Self {
            acls: acls.to_vec(),
            level: powers.level(acls),
            reach: Reach::new(allowlist),
        }
    }

    pub fn powers(&self) -> Vec<Power> {
        describe(&self.acls)
    }

    pub fn anywhere(&self) -> bool {
        self.reach.anywhere()
    }

    pub fn is_root(&self) -> bool {
        self.level == Level::Root
    }

    /// One line in words: "a root-equivalent key, usable from any address".
    pub fn summary(&self) -> String {
        format!("a {} key, {}", self.level.words(), self.reach.words())
    }

    /// The ACLs as one compact line, for the audit.
    pub fn acl_line(&self) -> String {
        self.acls.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_level_of_each_acl_set() {
        let p = Powers::default();
        let table: &[(&[&str], Level)] = &[
            (&[], Level::Limited),
            (&["dns"], Level::Limited),
            (&["subscriptions_view", "support", "abuse"], Level::Limited),
            (&["objstore", "loadbalancer"], Level::Limited),
            (&["billing"], Level::Sensitive),
            (&["provisioning"], Level::Sensitive),
            (&["subscriptions"], Level::Sensitive),
            (&["upgrade"], Level::Sensitive),
            (&["dns", "billing"], Level::Sensitive),
            (&["manage_users"], Level::Root),
            (&["dns", "manage_users", "billing"], Level::Root),
            (&["teleport"], Level::Limited),
            (&["teleport", "billing"], Level::Sensitive),
            (&[" manage_users "], Level::Root),
        ];
        for (list, level) in table {
            assert_eq!(p.level(&acls(list)), *level, "{list:?}");
        }
    }

    #[test]
    fn the_sensitive_set_can_change_but_never_lose_root() {
        let p = Powers::with_sensitive(&acls(&["dns"])).unwrap();
        assert_eq!(p.level(&acls(&["dns"])), Level::Sensitive);
        assert_eq!(p.level(&acls(&["billing"])), Level::Limited);
        assert_eq!(p.level(&acls(&["manage_users"])), Level::Root);
        let e = Powers::with_sensitive(&acls(&["teleport"])).unwrap_err();
        assert!(
            e.contains("KEYDESK_SENSITIVE_ACLS") && e.contains("teleport"),
            "{e}"
        );
        assert!(Powers::with_sensitive(&acls(&["manage_users"])).is_err());
    }

    #[test]
    fn unknown_acls_are_shown_marked_never_dropped() {
        let d = describe(&acls(&["dns", "teleport"]));
        assert_eq!(d.len(), 2);
        assert!(d[0].known && d[0].words.contains("DNS"));
        assert!(!d[1].known && d[1].acl == "teleport");
        assert!(describe(&[]).is_empty());
    }
}
