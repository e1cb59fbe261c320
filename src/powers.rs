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
    /// Vultr reported no ACLs for the user: the rules read the strongest.
    pub acls_unknown: bool,
}

impl Capability {
    /// `acls` is `None` when Vultr left them out: an unknown fact counts as
    /// the strongest, so such a user is root-equivalent for the rules.
    pub fn of(powers: &Powers, acls: Option<&[String]>, allowlist: Vec<Entry>) -> Self {
        match acls {
            Some(acls) => Self {
                acls: acls.to_vec(),
                level: powers.level(acls),
                reach: Reach::new(allowlist),
                acls_unknown: false,
            },
            None => Self {
                acls: Vec::new(),
                level: Level::Root,
                reach: Reach::new(allowlist),
                acls_unknown: true,
            },
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
        if self.acls_unknown {
            return format!(
                "a {} key (Vultr did not report this user's ACLs, so keydesk counts the strongest), {}",
                self.level.words(),
                self.reach.words()
            );
        }
        format!("a {} key, {}", self.level.words(), self.reach.words())
    }

    /// The ACLs as one compact line, for the audit.
    pub fn acl_line(&self) -> String {
        if self.acls_unknown {
            return "(unknown)".into();
        }
        self.acls.join(",")
    }

    /// What a decision about a key of this user rests on, keeping of the
    /// ACLs only those the rules name (`named`).
    pub fn decided(&self, named: &[String]) -> Decided {
        let mut acls: Vec<String> = named
            .iter()
            .filter(|n| self.acls_unknown || self.acls.iter().any(|a| a.trim() == n.as_str()))
            .cloned()
            .collect();
        acls.sort();
        acls.dedup();
        Decided {
            level: self.level,
            acls,
            anywhere: self.anywhere(),
            allowlist: self.reach.compact(),
        }
    }
}

/// The facts a rule was decided on when a claim link was made or a request
/// was asked for: the level, the ACLs the rules name, and the reach. A key
/// made later under that decision must be no stronger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decided {
    pub level: Level,
    pub acls: Vec<String>,
    pub anywhere: bool,
    /// The allowlist then, as one compact line: for the words only.
    pub allowlist: String,
}

/// `Decided` as a link or a request stores it: four nullable columns, all
/// empty for one made before keydesk kept them.
#[derive(Clone, Debug, Default, sqlx::FromRow)]
pub struct DecidedColumns {
    pub decided_level: Option<String>,
    pub decided_acls: Option<String>,
    pub decided_anywhere: Option<bool>,
    pub decided_allowlist: Option<String>,
}

impl DecidedColumns {
    /// What was decided; `None` when nothing was kept.
    pub fn decided(&self) -> Option<Decided> {
        Decided::from_columns(
            self.decided_level.as_deref(),
            self.decided_acls.as_deref(),
            self.decided_anywhere,
            self.decided_allowlist.as_deref(),
        )
    }
}

impl Decided {
    /// What the key would have now that it did not have when this was
    /// decided, in words; `None` when it is no stronger.
    pub fn grown(&self, now: &Decided) -> Option<String> {
        let mut more = Vec::new();
        if now.level > self.level {
            more.push(format!(
                "it is now {} (was {})",
                now.level.words(),
                self.level.words()
            ));
        }
        if now.anywhere && !self.anywhere {
            more.push("it is now usable from any address".to_string());
        }
        let gained: Vec<&str> = now
            .acls
            .iter()
            .filter(|a| !self.acls.contains(a))
            .map(String::as_str)
            .collect();
        if !gained.is_empty() {
            more.push(format!("the user now has {}", gained.join(", ")));
        }
        (!more.is_empty()).then(|| more.join("; "))
    }

    /// What was decided, in words: "a limited key, usable only from 45.76.11.0/24".
    pub fn words(&self) -> String {
        let reach = if self.anywhere {
            "usable from any address".to_string()
        } else if self.allowlist.is_empty() {
            "with no allowlist entry reported".to_string()
        } else {
            format!("usable only from {}", self.allowlist.replace(',', ", "))
        };
        format!("a {} key, {reach}", self.level.words())
    }

    /// The ACLs as one stored line.
    pub fn acl_line(&self) -> String {
        self.acls.join(",")
    }

    /// Read back from its stored columns; `None` when nothing was recorded
    /// (a link or request from before this was kept).
    pub fn from_columns(
        level: Option<&str>,
        acls: Option<&str>,
        anywhere: Option<bool>,
        allowlist: Option<&str>,
    ) -> Option<Self> {
        let level = Level::parse(level?)?;
        let acls = acls
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        Some(Self {
            level,
            acls,
            // Not kept: decided on the narrowest, so any reach is more.
            anywhere: anywhere.unwrap_or(false),
            allowlist: allowlist.unwrap_or_default().to_string(),
        })
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
    fn missing_acls_count_as_root_equivalent() {
        let p = Powers::default();
        let unknown = Capability::of(&p, None, vec![]);
        assert_eq!(unknown.level, Level::Root);
        assert!(unknown.acls_unknown && unknown.summary().contains("did not report"));
        let none = Capability::of(&p, Some(&[]), vec![]);
        assert_eq!(none.level, Level::Limited, "an empty list is known: no ACL");
        let named = acls(&["billing"]);
        assert_eq!(
            unknown.decided(&named).acls,
            named,
            "unknown ACLs hold every named one"
        );
        assert!(none.decided(&named).acls.is_empty());
    }

    #[test]
    fn a_decision_is_outgrown_by_more_level_reach_or_named_acls() {
        let p = Powers::default();
        let named = acls(&["dns"]);
        let narrow = vec![crate::allowlist::Entry {
            subnet: "45.76.11.0".into(),
            subnet_size: Some(24),
            ..Default::default()
        }];
        let any = vec![crate::allowlist::Entry {
            subnet: "0.0.0.0".into(),
            subnet_size: Some(0),
            ..Default::default()
        }];
        let then = Capability::of(&p, Some(&acls(&["subscriptions_view"])), narrow.clone())
            .decided(&named);
        let same = Capability::of(
            &p,
            Some(&acls(&["subscriptions_view", "support"])),
            narrow.clone(),
        );
        assert_eq!(
            then.grown(&same.decided(&named)),
            None,
            "an unnamed limited ACL changes nothing"
        );
        let root = Capability::of(&p, Some(&acls(&["manage_users"])), narrow.clone());
        assert!(
            then.grown(&root.decided(&named))
                .is_some_and(|w| w.contains("root"))
        );
        let wide = Capability::of(&p, Some(&acls(&["subscriptions_view"])), any);
        assert!(
            then.grown(&wide.decided(&named))
                .is_some_and(|w| w.contains("any address"))
        );
        let dns = Capability::of(&p, Some(&acls(&["dns"])), narrow.clone());
        assert!(
            then.grown(&dns.decided(&named))
                .is_some_and(|w| w.contains("dns"))
        );
        let weaker = Capability::of(&p, Some(&[]), narrow).decided(&named);
        assert_eq!(
            root.decided(&named).grown(&weaker),
            None,
            "weaker is never refused"
        );
        let back = Decided::from_columns(
            Some("limited"),
            Some("dns"),
            Some(false),
            Some("45.76.11.0/24"),
        );
        assert_eq!(back, Some(dns.decided(&named)));
        assert_eq!(
            dns.decided(&named).words(),
            "a limited key, usable only from 45.76.11.0/24"
        );
        assert_eq!(Decided::from_columns(None, None, None, None), None);
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
