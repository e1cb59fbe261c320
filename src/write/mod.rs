//! The one audited write. Every form that changes something at Vultr goes
//! through here, in this order:
//!
//! 1. `Ctx::claim` claims the form's one-time token, before anything else; a
//!    replay or a refused token stops here (a refusal is audited);
//! 2. `Claimed::prepare` runs the steps before the write (fetch the target),
//!    giving the form back if one fails: nothing happened;
//! 3. `Claimed::execute` refuses anything that would give an offboarded user
//!    (on hold) a key or API access, with a 409 and nothing sent; then it
//!    commits the audit intent (or refuses to act), makes
//!    the upstream call, then settles the entry and spends the form. A definite
//!    failure gives the form back; an unknown outcome spends it, since the
//!    change may have happened.
//!
//! A handler describes only its own part: the scope, the intent, the call
//! and the page that follows. A batch (an offboarding, a clean-up) is one
//! group entry with one linked write per part: `group.rs`.

use std::future::Future;

use axum::extract::{FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use crate::audit::{AuditAction, Intent, Outcome, Settlement};
use crate::error::AppError;
use crate::idempotency::{Claim, Scope};
use crate::identity::Identity;
use crate::ids::VultrId;
use crate::reconcile::KeysBefore;
use crate::state::AppState;
use crate::vultr::VultrError;

pub mod facts;
mod group;
mod late_hold;

pub use facts::Facts;
pub use group::{Group, StepOutcome};

/// One signed-in request: the state, who is asking, their browser session
/// and the request headers (for the request id and the audit).
pub struct Ctx {
    pub state: AppState,
    pub who: Identity,
    pub session: Session,
    pub headers: HeaderMap,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let who = Identity::from_request_parts(parts, state).await?;
        let session =
            Session::from_request_parts(parts, state)
                .await
                .map_err(|(status, msg)| {
                    AppError::Internal(format!("session unavailable ({status}): {msg}"))
                        .into_response()
                })?;
        let State(state) = State::<AppState>::from_request_parts(parts, state)
            .await
            .map_err(|never| match never {})?;
        Ok(Self {
            state,
            who,
            session,
            headers: parts.headers.clone(),
        })
    }
}

/// Why a form did not get to act.
#[derive(Debug)]
pub enum Refusal {
    /// The form was used already (or is in use): the id of what it made, if any.
    Replay { result_id: Option<String> },
    /// Missing, expired, or issued to someone or somewhere else. Already audited.
    Refused,
    /// The database could not be asked: nothing was done.
    Unavailable(AppError),
}

/// What a confirmation page's form (the brake, an offboarding, a
/// reinstatement) came to when claimed.
pub enum Confirmation<'a> {
    Go(Claimed<'a>),
    /// Already submitted: it did nothing more.
    Replay,
    /// Expired or not issued to this person (audited): confirm again.
    Refused,
}

/// The words for `Confirmation::Refused`.
pub const CONFIRM_AGAIN: &str =
    "That confirmation has expired or was not issued to you. Confirm again.";

impl Ctx {
    /// `claim` for a confirmation page about `user`; a database fault is an error.
    pub async fn confirm(
        &self,
        token: Option<&str>,
        scope: Scope<'_>,
        user: &VultrId,
    ) -> Result<Confirmation<'_>, AppError> {
        let token = token.filter(|t| !t.is_empty());
        match self.claim(token, scope, user, None).await {
            Ok(claim) => Ok(Confirmation::Go(claim)),
            Err(Refusal::Replay { .. }) => Ok(Confirmation::Replay),
            Err(Refusal::Refused) => Ok(Confirmation::Refused),
            Err(Refusal::Unavailable(e)) => Err(e),
        }
    }

    /// The form binding of the browser session the request came with, if any.
    pub async fn session_binding(&self) -> Option<String> {
        crate::session::binding(&self.session).await
    }

    /// An audit intent of this person for this request.
    pub fn intent(&self, action: AuditAction) -> Intent {
        self.who.intent(action, &self.headers)
    }

    /// Mints a one-time token for a form doing `scope`, bound to this person
    /// and this browser session (created now on a first visit).
    pub async fn issue(&self, scope: Scope<'_>) -> Result<String, AppError> {
        let sid = crate::session::ensure_binding(&self.who, &self.session).await;
        Ok(self.state.tokens.issue(&self.who.email, scope, sid))
    }

    /// Step 1: claims the form's token for `scope`. A refused token is audited
    /// as `csrf.rejected` against `user` (and `key`).
    pub async fn claim(
        &self,
        token: Option<&str>,
        scope: Scope<'_>,
        user: &VultrId,
        key: Option<&VultrId>,
    ) -> Result<Claimed<'_>, Refusal> {
        self.claim_for(token, scope, Some(user), key).await
    }

    /// `claim`, for a form that may act on no single user (a clean-up).
    pub async fn claim_for(
        &self,
        token: Option<&str>,
        scope: Scope<'_>,
        user: Option<&VultrId>,
        key: Option<&VultrId>,
    ) -> Result<Claimed<'_>, Refusal> {
        let token = token.unwrap_or_default();
        let sid = self.session_binding().await;
        let claim = self
            .state
            .tokens
            .claim(token, &self.who.email, scope, sid.as_deref())
            .await;
        match claim.map_err(|e| Refusal::Unavailable(AppError::store(e)))? {
            Claim::Claimed => Ok(Claimed {
                ctx: self,
                token: token.to_string(),
            }),
            Claim::Replay { result_id } => Err(Refusal::Replay { result_id }),
            Claim::Invalid => {
                let intent = Intent {
                    target_user_id: user.map(VultrId::to_string),
                    key_id: key.map(VultrId::to_string),
                    ..self.intent(AuditAction::CsrfRejected)
                };
                self.state.audit.record(&intent, Outcome::Failed).await;
                Err(Refusal::Refused)
            }
        }
    }
}

/// A form token this request owns.
pub struct Claimed<'a> {
    ctx: &'a Ctx,
    token: String,
}

impl Claimed<'_> {
    /// The token, for re-rendering the same form after a validation error.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Spends the form for a change recorded elsewhere (each part of a
    /// bulk decision is its own audit entry): it never acts again.
    pub async fn spend(self) {
        self.ctx.state.tokens.complete(&self.token, None).await;
    }

    /// Gives the form back: nothing was sent, it may be submitted again.
    pub async fn release(self) {
        self.ctx.state.tokens.release(&self.token).await;
    }

    /// `release`, for a helper that only borrows the claim; a later step
    /// must not use it.
    pub async fn release_ref(&self) {
        self.ctx.state.tokens.release(&self.token).await;
    }

    /// The offboarding hold, checked here so that no write path can forget
    /// it: an intent that would give its user a key or API access is
    /// refused (audited, form given back, nothing sent) while the user is on
    /// hold. A hold that cannot be read refuses too.
    async fn refuse_held(&self, intent: &Intent) -> Result<(), AppError> {
        let Some(user) = intent
            .target_user_id
            .as_deref()
            .filter(|_| intent.gives_access())
        else {
            return Ok(());
        };
        let state = &self.ctx.state;
        let Some(hold) = self
            .prepare(state.holds.get(user).await.map_err(AppError::store))
            .await?
        else {
            return Ok(());
        };
        self.ctx.state.tokens.release(&self.token).await;
        let refused = Intent {
            action: AuditAction::AccessDenied,
            reason: Some(format!(
                "{} refused: offboarded by {} (reinstate first)",
                intent.action, hold.placed_by
            )),
            ..intent.clone()
        };
        state.audit.record(&refused, Outcome::Failed).await;
        metrics::counter!("keydesk_hold_refusals_total").increment(1);
        Err(AppError::Held(hold.user_id.clone(), hold.refusal()))
    }

    /// Commits the intent. A hold placed since `refuse_held` looked (by any
    /// replica) makes the database refuse it: the same 409, nothing sent.
    async fn commit_intent(&self, intent: &Intent) -> Result<i64, AppError> {
        let state = &self.ctx.state;
        match state.audit.intent(intent).await {
            Err(e) if crate::holds::refused_by_database(&e) => {
                state.tokens.release(&self.token).await;
                let refused = Intent {
                    action: AuditAction::AccessDenied,
                    reason: Some(format!(
                        "{} refused by the database: the user is held (reinstate first)",
                        intent.action
                    )),
                    ..intent.clone()
                };
                state.audit.record(&refused, Outcome::Failed).await;
                metrics::counter!("keydesk_hold_refusals_total").increment(1);
                Err(AppError::Held(
                    intent.target_user_id.clone().unwrap_or_default(),
                    "This user was offboarded a moment ago; reinstate first. Nothing was sent to Vultr.".into(),
                ))
            }
            r => self.prepare(r).await,
        }
    }

    /// A create (or rotation) whose answer was lost may have made a key:
    /// recorded with the keys read just before it (`before`), to be settled
    /// from the user's key list (`reconcile::lost`). A claim link keeps its
    /// own (`reconcile::keys_before`).
    async fn remember_lost_create(
        &self,
        audit_id: i64,
        intent: &Intent,
        before: Option<&KeysBefore>,
    ) {
        let creates = matches!(
            intent.action,
            AuditAction::KeyCreate | AuditAction::KeyRotate
        );
        let (started, ids) = (before.map(|b| b.at_ms), before.map(KeysBefore::to_json));
        if let (true, Some(user), Some(name)) = (
            creates,
            intent.target_user_id.as_deref(),
            intent.key_name.as_deref(),
        ) && let Err(e) = self
            .ctx
            .state
            .lost
            .record(audit_id, user, name, started, ids.as_deref())
            .await
        {
            tracing::error!(error = %e, "a lost create could not be recorded; the audit still says unknown");
        }
    }

    /// Step 2: passes a pre-write result through, giving the form back on error.
    pub async fn prepare<T, E>(&self, r: Result<T, E>) -> Result<T, AppError>
    where
        AppError: From<E>,
    {
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                self.ctx.state.tokens.release(&self.token).await;
                Err(AppError::from(e))
            }
        }
    }

    /// Step 3: commits `intent`, runs `call`, settles the entry and spends
    /// the form. `result_id` names what the call made (a key id), if anything.
    pub async fn execute<T>(
        self,
        intent: Intent,
        call: impl Future<Output = Result<T, VultrError>>,
        result_id: impl FnOnce(&T) -> Option<String>,
    ) -> Result<T, AppError> {
        let state = &self.ctx.state;
        self.refuse_held(&intent).await?;
        // A create's answer may be lost: what was there before, to tell its key apart.
        let before =
            crate::reconcile::keys_before(&state.vultr, &state.db, &state.grants, &intent).await;
        let audit_id = self.commit_intent(&intent).await?;
        match call.await {
            Ok(done) => {
                let id = result_id(&done);
                state.tokens.complete(&self.token, id.clone()).await;
                // An offboarding that began while the call was at Vultr:
                // what it gave is undone at once and never shown. Undone
                // before this entry settles, so an offboarding waiting for
                // this user's writes in flight lists the keys after it.
                let undone = match late_hold::appeared(state, &intent).await {
                    Some(hold) => Some(late_hold::undo(state, &hold, &intent, id.as_deref()).await),
                    None => None,
                };
                state
                    .audit
                    .settle(
                        audit_id,
                        Settlement {
                            key_id: id.as_deref(),
                            ..Outcome::Ok.settled()
                        },
                    )
                    .await;
                match undone {
                    Some(refused) => Err(refused),
                    None => Ok(done),
                }
            }
            Err(e) => {
                let unknown = matches!(e, VultrError::OutcomeUnknown(_));
                let outcome = if unknown {
                    // It may have happened: this form must never act again.
                    state.tokens.complete(&self.token, None).await;
                    self.remember_lost_create(audit_id, &intent, before.as_ref())
                        .await;
                    Outcome::Unknown
                } else {
                    state.tokens.release(&self.token).await;
                    Outcome::Failed
                };
                state
                    .audit
                    .settle(
                        audit_id,
                        Settlement {
                            upstream_status: e.status(),
                            error: Some(&e.to_string()),
                            ..outcome.settled()
                        },
                    )
                    .await;
                Err(match (unknown, intent.target_user_id) {
                    (true, Some(user_id)) => AppError::OutcomeUnknown {
                        user_id,
                        detail: e.to_string(),
                    },
                    _ => e.into(),
                })
            }
        }
    }
}

impl Claimed<'_> {
    /// Step 3 for a change keydesk makes in its own database (a claim link):
    /// commits `intent`, runs `change`, settles the entry; the form is spent
    /// on success and given back on failure (nothing happened).
    pub async fn store<T>(
        self,
        intent: Intent,
        change: impl Future<Output = Result<T, AppError>>,
        result_id: impl FnOnce(&T) -> Option<String>,
    ) -> Result<T, AppError> {
        let state = &self.ctx.state;
        self.refuse_held(&intent).await?;
        let audit_id = self.commit_intent(&intent).await?;
        match change.await {
            Ok(done) => {
                let id = result_id(&done);
                state.tokens.complete(&self.token, id).await;
                state.audit.settle(audit_id, Outcome::Ok.settled()).await;
                Ok(done)
            }
            Err(e) => {
                state.tokens.release(&self.token).await;
                let text = e.to_string();
                let how = Settlement {
                    error: Some(&text),
                    ..Outcome::Failed.settled()
                };
                state.audit.settle(audit_id, how).await;
                Err(e)
            }
        }
    }
}
