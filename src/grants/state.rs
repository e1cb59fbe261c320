//! The states a claim link moves through, and their stored names.

use std::fmt;

/// Where a grant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantState {
    Pending,
    /// A claim is at Vultr right now.
    Claiming,
    Claimed,
    Expired,
    Revoked,
    /// The create's answer was lost: reconciled from the key list later.
    Unknown,
    /// A state a newer release wrote: shown, never written or acted on.
    Newer,
}

impl GrantState {
    pub const ALL: [GrantState; 6] = [
        GrantState::Pending,
        GrantState::Claiming,
        GrantState::Claimed,
        GrantState::Expired,
        GrantState::Revoked,
        GrantState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Pending => "pending",
            GrantState::Claiming => "claiming",
            GrantState::Claimed => "claimed",
            GrantState::Expired => "expired",
            GrantState::Revoked => "revoked",
            GrantState::Unknown => "unknown",
            GrantState::Newer => crate::audit::NEWER,
        }
    }
}

impl fmt::Display for GrantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for GrantState {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        // Never fails: a newer release's state reads as `Newer`.
        Ok(Self::ALL
            .into_iter()
            .find(|g| g.as_str() == s)
            .unwrap_or(GrantState::Newer))
    }
}
