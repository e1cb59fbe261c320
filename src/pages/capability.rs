//! What a key will be able to do and from where, for every page that makes
//! or reveals one: the user's ACLs (from the user Vultr returned) and API
//! allowlist, read now. `templates/keys/capability.html` shows it in words.

use crate::error::AppError;
use crate::ids::VultrId;
use crate::powers::Capability;
use crate::state::AppState;
use crate::vultr::User;

/// The capability of a key of `user`, its allowlist read from Vultr (cached
/// like the user; a write drops it). An unreadable allowlist is an error.
pub async fn of(state: &AppState, user: &User) -> Result<Capability, AppError> {
    let id = VultrId::parse(&user.id)?;
    let allowlist = state.vultr.allowlist(&id).await?;
    Ok(Capability::of(
        &state.powers,
        user.acls.as_deref(),
        allowlist,
    ))
}

/// The user and their capability for a page (cached like the user): the
/// claim and approval pages show it without busting the cache.
pub async fn shown(state: &AppState, id: &VultrId) -> Result<Capability, AppError> {
    let user = state.vultr.get_user(id).await?;
    of(state, &user).await
}

/// The user and their capability as Vultr reports them now, uncached: what
/// the approval rules read at the time of a write.
pub async fn now(state: &AppState, id: &VultrId) -> Result<(User, Capability), AppError> {
    let facts = crate::write::facts::read_now(state, id).await?;
    Ok((facts.user, facts.cap))
}

pub use crate::write::facts::stamp;
