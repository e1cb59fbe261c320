//! Role lists that cannot do what they say are refused at start: a wildcard
//! group, groups with no source of groups, approvers with no role.

use super::ServeArgs;
use crate::identity::Access;

/// `group:*` is no group: refused, so a role list never admits everyone by
/// accident (only the demo does, and not through a list).
pub(super) fn no_wildcard(var: &str, list: &[String]) -> Result<(), String> {
    match list.iter().find(|e| {
        e.trim()
            .strip_prefix("group:")
            .is_some_and(|g| g.trim() == "*")
    }) {
        Some(_) => Err(format!(
            "{var}: group:* would match everyone signed in; name the groups (group:platform) or list emails"
        )),
        None => Ok(()),
    }
}

impl ServeArgs {
    /// Role lists that cannot work: `group:` entries with no source of
    /// groups, and approvers who hold no role (they could never reach keydesk).
    pub(super) fn roles_can_match(&self) -> Result<(), String> {
        let has_groups = |l: &[String]| l.iter().any(|e| e.trim().starts_with("group:"));
        let groups_source = match self.auth_mode.as_str() {
            "jwt" => !self.jwt_groups_claim.trim().is_empty(),
            "oidc" => !self.oidc.oidc_groups_claim.trim().is_empty(),
            _ => self
                .groups_header
                .as_deref()
                .is_some_and(|h| !h.trim().is_empty()),
        };
        for (var, list) in [
            ("KEYDESK_VIEWERS", &self.viewers),
            ("KEYDESK_OPERATORS", &self.operators),
            ("KEYDESK_APPROVERS", &self.approvers),
        ] {
            if has_groups(list) && !groups_source {
                let fix = if self.auth_mode == "jwt" {
                    "set KEYDESK_JWT_GROUPS_CLAIM"
                } else if self.auth_mode == "oidc" {
                    "set KEYDESK_OIDC_GROUPS_CLAIM"
                } else {
                    "set KEYDESK_GROUPS_HEADER to the header your proxy fills with groups (e.g. X-Forwarded-Groups)"
                };
                return Err(format!(
                    "{var} names groups (group:…) but keydesk has no source of groups: {fix}"
                ));
            }
        }
        let access = Access::new(&self.viewers, &self.operators);
        for a in self
            .approvers
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
        {
            let role = match a.strip_prefix("group:") {
                Some(g) => access.role_of("", &[g.trim().to_string()]),
                None => access.role_of(a, &[]),
            };
            if role.is_none() {
                return Err(format!(
                    "KEYDESK_APPROVERS: {a} holds no viewer or operator role and could never reach keydesk: add it to KEYDESK_VIEWERS or KEYDESK_OPERATORS"
                ));
            }
        }
        Ok(())
    }
}

impl super::ServeArgs {
    /// The two-person rules, or an error naming the variable.
    pub(super) fn approval_policy(&self) -> Result<crate::policy::ApprovalPolicy, String> {
        let rules = self
            .approval_for
            .iter()
            .filter(|r| !r.trim().is_empty())
            .map(|r| r.parse().map_err(|e| format!("KEYDESK_APPROVAL_FOR {e}")))
            .collect::<Result<Vec<_>, String>>()?;
        if !rules.is_empty() && self.approvers.iter().all(|a| a.trim().is_empty()) {
            return Err(
                "KEYDESK_APPROVAL_FOR is set but KEYDESK_APPROVERS is empty: nobody could approve"
                    .into(),
            );
        }
        Ok(crate::policy::ApprovalPolicy {
            rules,
            ttl: std::time::Duration::from_secs(self.approval_ttl_hours.saturating_mul(3600)),
        })
    }
}
