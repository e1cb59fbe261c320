//! Role policy: who is a viewer or an operator (`KEYDESK_VIEWERS`,
//! `KEYDESK_OPERATORS`) and who may approve (`KEYDESK_APPROVERS`), as emails
//! and `group:NAME` entries. Deny by default.

use super::{Identity, Role, normalize_email};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Principal {
    /// Everyone signed in: the demo only, never from a role list.
    Everyone,
    Email(String),
    Group(String),
}

/// Role policy: comma lists of emails and `group:NAME` entries.
#[derive(Clone, Debug, Default)]
pub struct Access {
    viewers: Vec<Principal>,
    operators: Vec<Principal>,
}

fn principals(list: &[String]) -> Vec<Principal> {
    list.iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(|e| match e.strip_prefix("group:") {
            Some(g) => Principal::Group(g.trim().to_string()),
            None => Principal::Email(normalize_email(e)),
        })
        .collect()
}

impl Access {
    pub fn new(viewers: &[String], operators: &[String]) -> Self {
        Self {
            viewers: principals(viewers),
            operators: principals(operators),
        }
    }

    /// Everyone signed in is an operator (the demo only).
    pub fn everyone_operates() -> Self {
        Self {
            viewers: vec![],
            operators: vec![Principal::Everyone],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.viewers.is_empty() && self.operators.is_empty()
    }

    fn matches(list: &[Principal], email: &str, groups: &[String]) -> bool {
        let email = normalize_email(email);
        list.iter().any(|p| match p {
            Principal::Email(e) => *e == email,
            Principal::Everyone => true,
            Principal::Group(g) => groups.iter().any(|x| x == g),
        })
    }

    pub fn role_of(&self, email: &str, groups: &[String]) -> Option<Role> {
        if Self::matches(&self.operators, email, groups) {
            Some(Role::Operator)
        } else if Self::matches(&self.viewers, email, groups) {
            Some(Role::Viewer)
        } else {
            None
        }
    }
}

/// Who may decide two-person approval requests (`KEYDESK_APPROVERS`): the
/// same emails and `group:NAME` syntax as the role lists. An approver must
/// also hold a role to reach keydesk at all.
#[derive(Clone, Debug, Default)]
pub struct Approvers(Vec<Principal>);

impl Approvers {
    pub fn new(list: &[String]) -> Self {
        Self(principals(list))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn includes(&self, who: &Identity) -> bool {
        who.role != Role::Claimant && Access::matches(&self.0, &who.email, &who.groups)
    }

    /// The approvers named by email (groups cannot be mailed).
    pub fn emails(&self) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|p| match p {
                Principal::Email(e) => Some(e.clone()),
                Principal::Group(_) | Principal::Everyone => None,
            })
            .collect()
    }
}
