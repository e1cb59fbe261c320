//! Where a request stands and what it will do, as the database and the
//! audit name them.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
    Expired,
    /// The requester pressed "Do it now" and the action is running.
    Executing,
    Done,
    /// The requester took it back before it was carried out.
    Withdrawn,
    /// A state a newer release wrote: shown, never written or acted on.
    Newer,
}

impl ApprovalState {
    pub const ALL: [ApprovalState; 7] = [
        ApprovalState::Pending,
        ApprovalState::Approved,
        ApprovalState::Denied,
        ApprovalState::Expired,
        ApprovalState::Executing,
        ApprovalState::Done,
        ApprovalState::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Expired => "expired",
            ApprovalState::Executing => "executing",
            ApprovalState::Done => "done",
            ApprovalState::Withdrawn => "withdrawn",
            ApprovalState::Newer => crate::audit::NEWER,
        }
    }
}

impl fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for ApprovalState {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        // Never fails: a newer release's state reads as `Newer`.
        Ok(Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .unwrap_or(ApprovalState::Newer))
    }
}

/// What a request will do, as the audit names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalAction {
    KeyCreate,
    KeyRotate,
    GrantCreate,
    /// Switching API access back on.
    ApiAccessOn,
    /// Lifting an offboarding hold (under the `api-access-on` rule).
    Reinstate,
    /// Adding an entry to a user's API allowlist (`allowlist-widen`).
    AllowlistAdd,
    /// A kind of request a newer release made: shown, never carried out.
    Newer,
}

impl ApprovalAction {
    pub const ALL: [ApprovalAction; 6] = [
        ApprovalAction::KeyCreate,
        ApprovalAction::KeyRotate,
        ApprovalAction::GrantCreate,
        ApprovalAction::ApiAccessOn,
        ApprovalAction::Reinstate,
        ApprovalAction::AllowlistAdd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalAction::KeyCreate => "key.create",
            ApprovalAction::KeyRotate => "key.rotate",
            ApprovalAction::GrantCreate => "grant.create",
            ApprovalAction::ApiAccessOn => "user.api_access",
            ApprovalAction::Reinstate => "user.reinstate",
            ApprovalAction::AllowlistAdd => "user.allowlist.add",
            ApprovalAction::Newer => crate::audit::NEWER,
        }
    }

    pub fn words(self) -> &'static str {
        match self {
            ApprovalAction::KeyCreate => "create an API key",
            ApprovalAction::KeyRotate => "rotate an API key",
            ApprovalAction::GrantCreate => "send a claim link",
            ApprovalAction::ApiAccessOn => "switch API access back on",
            ApprovalAction::Reinstate => "reinstate an offboarded user",
            ApprovalAction::AllowlistAdd => "add an API allowlist entry",
            ApprovalAction::Newer => "do something a newer keydesk knows (unknown (newer version))",
        }
    }
}

impl TryFrom<String> for ApprovalAction {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        // Never fails: a newer release's kind of request reads as `Newer`.
        Ok(Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .unwrap_or(ApprovalAction::Newer))
    }
}
