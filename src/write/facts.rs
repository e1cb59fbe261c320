//! The facts a rule is decided on, read at the moment keydesk acts. Every
//! write that makes a key or gives access (create, rotate, claim, an
//! approved execution, self-service, the brake) reads them here, uncached,
//! in its prepare step, and a claim link or an approved request is held to
//! what it was decided on: a key now stronger is refused before Vultr.

use crate::audit::{Intent, Outcome};
use crate::error::AppError;
use crate::ids::VultrId;
use crate::powers::{Capability, Decided};
use crate::state::AppState;
use crate::vultr::User;

use super::Claimed;

/// The user and what a key of theirs could do, as Vultr reports them now.
pub struct Facts {
    pub user: User,
    pub cap: Capability,
}

impl Facts {
    /// What a decision made now rests on (the level, the ACLs the rules
    /// name, the reach), to be kept with a link or a request.
    pub fn decided(&self, state: &AppState) -> Decided {
        self.cap.decided(&state.approval.named_acls())
    }
}

/// Vultr's word now, not a cached one: the user and their allowlist, two
/// GETs that neither read nor drop the cache (the users list stays warm).
pub async fn read_now(state: &AppState, id: &VultrId) -> Result<Facts, AppError> {
    let (user, allowlist) =
        tokio::join!(state.vultr.get_user_now(id), state.vultr.allowlist_now(id));
    let user = user?;
    let cap = Capability::of(&state.powers, user.acls.as_deref(), allowlist?);
    Ok(Facts { user, cap })
}

/// `intent` with the level, ACLs and allowlist of the user at the time.
pub fn stamp(intent: Intent, cap: &Capability) -> Intent {
    Intent {
        level: Some(cap.level.as_str().to_string()),
        acls: Some(cap.acl_line()),
        allowlist: Some(cap.reach.compact()),
        ..intent
    }
}

impl Claimed<'_> {
    /// Step 2 of every write that makes a key or gives access: the facts
    /// read now (form given back if they cannot be read).
    pub async fn facts(&self, id: &VultrId) -> Result<Facts, AppError> {
        self.prepare(read_now(&self.ctx.state, id).await).await
    }

    /// `facts`, for a `user` this request has just read uncached: only the
    /// allowlist is read now, not the user a second time.
    pub async fn facts_of(&self, id: &VultrId, user: User) -> Result<Facts, AppError> {
        let state = &self.ctx.state;
        let allowlist = self.prepare(state.vultr.allowlist_now(id).await).await?;
        let cap = Capability::of(&state.powers, user.acls.as_deref(), allowlist);
        Ok(Facts { user, cap })
    }

    /// Refuses a key stronger than what `decided` was decided on: the form
    /// is given back, `refusal` is audited with what grew, nothing is sent.
    /// Returns what grew, in words, for the page.
    pub async fn within(
        &self,
        decided: Option<&Decided>,
        facts: &Facts,
        refusal: Intent,
    ) -> Result<(), String> {
        // A link or request from before keydesk kept this counts as decided
        // on the weakest facts: anything stronger is asked for again.
        let nothing_kept = Decided::default();
        let then = decided.unwrap_or(&nothing_kept);
        let now = facts.decided(&self.ctx.state);
        let Some(grown) = then.grown(&now) else {
            return Ok(());
        };
        self.release_ref().await;
        let intent = stamp(
            Intent {
                reason: Some(format!(
                    "decided for {}; Vultr says now: {grown}",
                    then.words()
                )),
                ..refusal
            },
            &facts.cap,
        );
        self.ctx.state.audit.record(&intent, Outcome::Failed).await;
        metrics::counter!("keydesk_outgrown_refusals_total").increment(1);
        Err(grown)
    }
}
