//! What the audit trail records: actions, intents, outcomes and stored
//! entries. No field can hold a secret.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;
use serde::ser::SerializeStruct;

/// Every kind of audited event. The string form is what the database, the
/// page filters and the exports hold; it never changes for an existing action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    KeyCreate,
    KeyRotate,
    KeyRevoke,
    /// The incident brake: a user's API access switched off or on.
    UserApiAccess,
    /// A form token that was missing, expired, or issued to someone else.
    CsrfRejected,
    /// An identity without the role a page needs.
    AccessDenied,
    /// A leaver's offboarding: the group of their brake and key revocations.
    UserOffboard,
    /// Expired keys cleared from the report: the group of their revocations.
    KeysCleanup,
    /// A claim link issued, claimed (the key created), revoked or expired.
    GrantCreate,
    GrantClaim,
    GrantRevoke,
    GrantExpire,
    /// A pass of expiry notices (by the system).
    NoticeRun,
    /// Two-person approval: asked, approved, denied, expired.
    ApprovalRequest,
    ApprovalApprove,
    ApprovalDeny,
    ApprovalExpire,
    ApprovalWithdraw,
    /// An offboarded user's hold lifted by an operator.
    UserReinstate,
    /// An entry added to, or removed from, a user's API allowlist.
    UserAllowlistAdd,
    UserAllowlistRemove,
    /// An OpenID sign-in and sign-out (OpenID mode only).
    AccessSignin,
    AccessSignout,
    /// An access review: started (the group of everything it does), an
    /// item decided, an item applied without a DELETE (and the summary), closed.
    ReviewStart,
    ReviewDecide,
    ReviewApply,
    ReviewClose,
    /// An action a newer release wrote, which this one does not know: shown
    /// as "unknown (newer version)", never written.
    Newer,
}

impl AuditAction {
    pub const ALL: [AuditAction; 27] = [
        AuditAction::KeyCreate,
        AuditAction::KeyRotate,
        AuditAction::KeyRevoke,
        AuditAction::UserApiAccess,
        AuditAction::CsrfRejected,
        AuditAction::AccessDenied,
        AuditAction::UserOffboard,
        AuditAction::KeysCleanup,
        AuditAction::GrantCreate,
        AuditAction::GrantClaim,
        AuditAction::GrantRevoke,
        AuditAction::GrantExpire,
        AuditAction::NoticeRun,
        AuditAction::ApprovalRequest,
        AuditAction::ApprovalApprove,
        AuditAction::ApprovalDeny,
        AuditAction::ApprovalExpire,
        AuditAction::ApprovalWithdraw,
        AuditAction::UserReinstate,
        AuditAction::UserAllowlistAdd,
        AuditAction::UserAllowlistRemove,
        AuditAction::AccessSignin,
        AuditAction::AccessSignout,
        AuditAction::ReviewStart,
        AuditAction::ReviewDecide,
        AuditAction::ReviewApply,
        AuditAction::ReviewClose,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::KeyCreate => "key.create",
            AuditAction::KeyRotate => "key.rotate",
            AuditAction::KeyRevoke => "key.revoke",
            AuditAction::UserApiAccess => "user.api_access",
            AuditAction::CsrfRejected => "csrf.rejected",
            AuditAction::AccessDenied => "access.denied",
            AuditAction::UserOffboard => "user.offboard",
            AuditAction::KeysCleanup => "keys.cleanup",
            AuditAction::GrantCreate => "grant.create",
            AuditAction::GrantClaim => "grant.claim",
            AuditAction::GrantRevoke => "grant.revoke",
            AuditAction::GrantExpire => "grant.expire",
            AuditAction::NoticeRun => "notice.run",
            AuditAction::ApprovalRequest => "approval.request",
            AuditAction::ApprovalApprove => "approval.approve",
            AuditAction::ApprovalDeny => "approval.deny",
            AuditAction::ApprovalExpire => "approval.expire",
            AuditAction::ApprovalWithdraw => "approval.withdraw",
            AuditAction::UserReinstate => "user.reinstate",
            AuditAction::UserAllowlistAdd => "user.allowlist.add",
            AuditAction::UserAllowlistRemove => "user.allowlist.remove",
            AuditAction::AccessSignin => "access.signin",
            AuditAction::AccessSignout => "access.signout",
            AuditAction::ReviewStart => "review.start",
            AuditAction::ReviewDecide => "review.decide",
            AuditAction::ReviewApply => "review.apply",
            AuditAction::ReviewClose => "review.close",
            AuditAction::Newer => crate::audit::NEWER,
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reading never fails: an action a newer release wrote is `Newer` (so an
/// older replica's pages show it beside the rest during a rollout).
impl TryFrom<String> for AuditAction {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .unwrap_or(AuditAction::Newer))
    }
}

impl PartialEq<&str> for AuditAction {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// How an entry ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }
}

/// How an intent ended: what `settle` writes into an open entry.
#[derive(Debug, Clone, Copy)]
pub struct Settlement<'a> {
    pub outcome: Outcome,
    /// The key the action made, when the intent could not name it yet.
    pub key_id: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub error: Option<&'a str>,
}

impl Outcome {
    /// This outcome, with nothing more to say.
    pub fn settled(self) -> Settlement<'static> {
        Settlement {
            outcome: self,
            key_id: None,
            upstream_status: None,
            error: None,
        }
    }
}

/// What is about to happen, written before the upstream call.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Intent {
    pub actor: String,
    pub role: String,
    #[sqlx(try_from = "String")]
    pub action: AuditAction,
    pub target_user_id: Option<String>,
    pub target_user_email: Option<String>,
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub requested_expiry: Option<String>,
    pub reason: Option<String>,
    pub related_key_id: Option<String>,
    /// The brake's new state: API access on (`true`) or off (`false`).
    pub api_enabled: Option<bool>,
    pub request_id: Option<String>,
    /// The entry of the group this one belongs to (an offboarding, a clean-up).
    pub group_id: Option<i64>,
    /// For a key created through a claim link: the operator who granted it.
    pub granted_by: Option<String>,
    /// The claim link an entry concerns.
    pub grant_id: Option<String>,
    /// For an action run after a second person's approval: who asked,
    /// who approved, and the request.
    pub requested_by: Option<String>,
    pub approved_by: Option<String>,
    pub approval_id: Option<String>,
    /// For a key or allowlist write: the user's level, ACLs and allowlist
    /// as Vultr reported them at the time.
    pub level: Option<String>,
    pub acls: Option<String>,
    pub allowlist: Option<String>,
}

/// The actor of what keydesk does on its own (expiry sweeps, notice passes).
pub const SYSTEM_ACTOR: &str = "keydesk";

impl Intent {
    /// Whether this would give its target user a key or their API access
    /// back (directly, by a claim link, or by asking for it): what an
    /// offboarding hold refuses.
    pub fn gives_access(&self) -> bool {
        match self.action {
            // The allowlist of a leaver stays as it was until reinstated.
            AuditAction::UserAllowlistAdd | AuditAction::UserAllowlistRemove => true,
            AuditAction::KeyCreate
            | AuditAction::KeyRotate
            | AuditAction::GrantCreate
            | AuditAction::GrantClaim => true,
            // A request for a key names it; one for access carries `true`.
            // A request to reinstate carries neither: it is how a hold ends.
            AuditAction::ApprovalRequest => {
                self.key_name.is_some() || self.api_enabled == Some(true)
            }
            AuditAction::UserApiAccess => self.api_enabled == Some(true),
            _ => false,
        }
    }

    /// An intent of keydesk itself (actor `keydesk`, role `system`).
    pub fn system(action: AuditAction) -> Self {
        Self::new(SYSTEM_ACTOR, "system", action)
    }

    /// An intent of `actor` (with `role`) to do `action`; the rest is filled by the caller.
    pub fn new(actor: &str, role: &str, action: AuditAction) -> Self {
        Self {
            actor: actor.to_string(),
            role: role.to_string(),
            action,
            target_user_id: None,
            target_user_email: None,
            key_id: None,
            key_name: None,
            requested_expiry: None,
            reason: None,
            related_key_id: None,
            api_enabled: None,
            request_id: None,
            group_id: None,
            granted_by: None,
            grant_id: None,
            requested_by: None,
            approved_by: None,
            approval_id: None,
            level: None,
            acls: None,
            allowlist: None,
        }
    }
}

/// A stored entry: the intent as written, plus when and how it ended.
/// Derefs to its `Intent`, so `entry.actor` reads naturally.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Entry {
    pub id: i64,
    pub at: String,
    #[sqlx(flatten)]
    pub intent: Intent,
    pub outcome: String,
    pub upstream_status: Option<i64>,
    pub error: Option<String>,
}

impl std::ops::Deref for Entry {
    type Target = Intent;
    fn deref(&self) -> &Intent {
        &self.intent
    }
}

/// One flat record in the order of the exports' columns (CSV needs flat rows).
impl Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialize_cells(s, |v| Cow::Borrowed(v))
    }
}

/// An entry for a spreadsheet: text cells that a spreadsheet would run as a
/// formula are neutralised (OWASP's CSV injection advice).
pub struct CsvSafe<'a>(pub &'a Entry);

impl Serialize for CsvSafe<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_cells(s, neutralise)
    }
}

/// A cell beginning with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`, so
/// a spreadsheet shows it as text instead of evaluating it.
pub fn neutralise(v: &str) -> Cow<'_, str> {
    if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{v}"))
    } else {
        Cow::Borrowed(v)
    }
}

impl Entry {
    /// The entry as one flat struct; `cell` maps every text value.
    fn serialize_cells<S: serde::Serializer>(
        &self,
        s: S,
        cell: impl Fn(&str) -> Cow<'_, str>,
    ) -> Result<S::Ok, S::Error> {
        let i = &self.intent;
        let text = |v: &Option<String>| v.as_deref().map(|v| cell(v).into_owned());
        let mut r = s.serialize_struct("Entry", 26)?;
        r.serialize_field("id", &self.id)?;
        r.serialize_field("at", &self.at)?;
        r.serialize_field("actor", &cell(&i.actor))?;
        r.serialize_field("role", &i.role)?;
        r.serialize_field("action", i.action.as_str())?;
        r.serialize_field("target_user_id", &text(&i.target_user_id))?;
        r.serialize_field("target_user_email", &text(&i.target_user_email))?;
        r.serialize_field("key_id", &text(&i.key_id))?;
        r.serialize_field("key_name", &text(&i.key_name))?;
        r.serialize_field("requested_expiry", &i.requested_expiry)?;
        r.serialize_field("reason", &text(&i.reason))?;
        r.serialize_field("related_key_id", &text(&i.related_key_id))?;
        r.serialize_field("outcome", &self.outcome)?;
        r.serialize_field("upstream_status", &self.upstream_status)?;
        r.serialize_field("error", &text(&self.error))?;
        r.serialize_field("request_id", &text(&i.request_id))?;
        r.serialize_field("api_enabled", &i.api_enabled)?;
        r.serialize_field("group_id", &i.group_id)?;
        r.serialize_field("granted_by", &text(&i.granted_by))?;
        r.serialize_field("grant_id", &i.grant_id)?;
        r.serialize_field("requested_by", &text(&i.requested_by))?;
        r.serialize_field("approved_by", &text(&i.approved_by))?;
        r.serialize_field("approval_id", &i.approval_id)?;
        r.serialize_field("level", &i.level)?;
        r.serialize_field("acls", &text(&i.acls))?;
        r.serialize_field("allowlist", &text(&i.allowlist))?;
        r.end()
    }
}

impl Entry {
    pub fn at_display(&self) -> String {
        crate::timefmt::display_time(Some(&self.at))
    }
    pub fn opt<'a>(&self, v: &'a Option<String>) -> &'a str {
        v.as_deref().filter(|s| !s.is_empty()).unwrap_or("—")
    }
    pub fn status_display(&self) -> String {
        self.upstream_status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "—".into())
    }
    /// Whether other entries hang off this one (an offboarding, a clean-up).
    pub fn is_group(&self) -> bool {
        matches!(
            self.action,
            AuditAction::UserOffboard | AuditAction::KeysCleanup | AuditAction::ReviewStart
        )
    }

    /// What the entry acted on, in words: the key name, or the brake's new state.
    pub fn subject(&self) -> String {
        match self.api_enabled {
            Some(true) => "API access on".to_string(),
            Some(false) => "API access off".to_string(),
            None => self.opt(&self.key_name).to_string(),
        }
    }
}

/// Filters of the audit page; empty fields match everything.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Filter {
    pub actor: Option<String>,
    pub user: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    /// One group: its own entry and every entry linked to it.
    pub group: Option<String>,
    /// Key and allowlist writes for users of this level (root, sensitive, limited).
    pub level: Option<String>,
    /// One access review: its entries (everything linked to its review.start).
    pub review: Option<String>,
}

impl Filter {
    pub(super) fn clean(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether each action gives access (the hold refuses it, an
    /// offboarding waits for it), for an intent that names nothing, one
    /// that names a key, and one that switches API access on or off. The
    /// match has no wildcard: a new action must be decided here on purpose.
    fn gives(action: AuditAction) -> [bool; 4] {
        use AuditAction as A;
        match action {
            A::KeyCreate | A::KeyRotate | A::GrantCreate | A::GrantClaim => [true; 4],
            A::UserAllowlistAdd | A::UserAllowlistRemove => [true; 4],
            A::ApprovalRequest => [false, true, true, false],
            A::UserApiAccess => [false, false, true, false],
            A::KeyRevoke
            | A::CsrfRejected
            | A::AccessDenied
            | A::UserOffboard
            | A::KeysCleanup
            | A::GrantRevoke
            | A::GrantExpire
            | A::NoticeRun
            | A::ApprovalApprove
            | A::ApprovalDeny
            | A::ApprovalExpire
            | A::ApprovalWithdraw
            | A::UserReinstate
            | A::AccessSignin
            | A::AccessSignout
            | A::ReviewStart
            | A::ReviewDecide
            | A::ReviewApply
            | A::ReviewClose
            | A::Newer => [false; 4],
        }
    }

    #[test]
    fn every_action_says_whether_it_gives_access() {
        for action in AuditAction::ALL {
            let bare = Intent::system(action);
            let named = Intent {
                key_name: Some("ci".into()),
                ..Intent::system(action)
            };
            let on = Intent {
                api_enabled: Some(true),
                ..Intent::system(action)
            };
            let off = Intent {
                api_enabled: Some(false),
                ..Intent::system(action)
            };
            let got = [bare, named, on, off].map(|i| i.gives_access());
            assert_eq!(got, gives(action), "{action}");
        }
    }

    #[test]
    fn actions_keep_their_stored_names() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::try_from(a.as_str().to_string()), Ok(a));
        }
        assert_eq!(AuditAction::KeyCreate.as_str(), "key.create");
        assert_eq!(AuditAction::UserApiAccess.as_str(), "user.api_access");
        assert_eq!(
            AuditAction::try_from("key.nope".to_string()),
            Ok(AuditAction::Newer)
        );
        assert_eq!(AuditAction::Newer.as_str(), "unknown (newer version)");
    }

    #[test]
    fn formula_cells_are_neutralised() {
        for bad in ["=1+1", "+cmd", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(bad), format!("'{bad}"));
        }
        assert_eq!(neutralise("ci-deploy"), "ci-deploy");
        assert_eq!(neutralise(""), "");
    }
}
