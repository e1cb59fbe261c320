//! `GET|POST /users/{id}/reinstate`: an operator lifts an offboarding hold,
//! with a reason (audited `user.reinstate`). It gives nothing back by
//! itself: API access stays off and no key comes back; from here on the
//! usual paths (and their approval rules) work for the user again.

use askama::Template;
use axum::Form;
use axum::response::{IntoResponse, Redirect, Response};

use super::Layout;
use super::confirm::{self, Confirm, ConfirmInput, Stop};
use super::paths::{self, UserPath};
use crate::approvals::ApprovalAction;
use crate::audit::{AuditAction, Intent, Outcome};
use crate::error::AppError;
use crate::holds::Hold;
use crate::idempotency::Scope;
use crate::identity::Operator;
use crate::ids::VultrId;
use crate::policy::Change;
use crate::state::AppState;
use crate::vultr::User;
use crate::write::Ctx;

#[derive(Template)]
#[template(path = "users/reinstate_confirm.html")]
pub struct ReinstateView {
    pub layout: Layout,
    pub user: User,
    pub hold: Hold,
    pub token: String,
    pub notice: Option<String>,
}

/// The hold on `id`, or a 409 that says there is none.
async fn standing(ctx: &Ctx, id: &VultrId) -> Result<Hold, AppError> {
    ctx.state
        .holds
        .get(id.as_str())
        .await
        .map_err(AppError::store)?
        .ok_or_else(|| {
            AppError::Conflict("This user is not on hold: there is nothing to reinstate.".into())
        })
}

/// Who placed the hold, when and why, and the form that lifts it.
impl Confirm for ReinstateView {
    async fn view(ctx: &Ctx, id: &VultrId, notice: Option<String>) -> Result<Self, AppError> {
        let hold = standing(ctx, id).await?;
        Ok(ReinstateView {
            layout: ctx.layout().await,
            user: ctx.state.vultr.get_user(id).await?,
            hold,
            token: ctx.issue(Scope::Reinstate(id)).await?,
            notice,
        })
    }
}

/// The one change a reinstatement makes: the hold removed (a conflict when
/// someone else removed it first). Also run by an approved request.
pub async fn lift_hold(state: &AppState, user_id: &str) -> Result<(), AppError> {
    match state.holds.lift(user_id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(AppError::Conflict(
            "This user is no longer on hold: someone reinstated them a moment ago.".into(),
        )),
        Err(e) => Err(AppError::store(e)),
    }
}

/// Lifts the hold. A reason is always required: it undoes an offboarding.
pub async fn reinstate_submit(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
    Form(input): Form<ConfirmInput>,
) -> Result<Response, Stop> {
    let always = crate::policy::KeyPolicy {
        require_reason: true,
        ..ctx.state.policy.clone()
    };
    let scope = Scope::Reinstate(&id);
    let (claim, reason) =
        confirm::submitted::<ReinstateView>(&ctx, &id, scope, &input, &always).await?;
    let hold = claim.prepare(standing(&ctx, &id).await).await?;
    // A leaver never lifts their own hold, whatever their role.
    let own = hold
        .user_email
        .as_deref()
        .is_some_and(|e| crate::email::same_email(e, &ctx.who.email));
    if own {
        claim.release().await;
        let refused = Intent {
            target_user_id: Some(id.to_string()),
            target_user_email: hold.user_email.clone(),
            reason: Some("a held person tried to reinstate themselves".into()),
            ..ctx.intent(AuditAction::AccessDenied)
        };
        ctx.state.audit.record(&refused, Outcome::Failed).await;
        return Err(AppError::Forbidden(
            "You are the person this hold is on: someone else must reinstate you. Nothing was changed.".into(),
        )
        .into());
    }
    let intent = Intent {
        target_user_id: Some(id.to_string()),
        target_user_email: hold.user_email.clone(),
        reason,
        group_id: hold.group_id,
        ..ctx.intent(AuditAction::UserReinstate)
    };
    // Only `api-access-on` concerns reinstating (it gives no key back):
    // asked about a user whose keys no rule names.
    let nobody = crate::powers::Capability::default();
    if ctx
        .state
        .approval
        .why(Change::ApiAccess(true, &nobody))
        .is_some()
    {
        let why = "reinstating an offboarded user needs a second person (api-access-on)";
        let new = confirm::user_request(
            &ctx,
            ApprovalAction::Reinstate,
            (&id, hold.user_email.clone()),
            intent.reason.clone(),
            why.into(),
            None,
        );
        return Ok(super::approvals::request(&ctx, claim, new).await?);
    }
    claim
        .store(intent, lift_hold(&ctx.state, id.as_str()), |_| None)
        .await?;
    ctx.flash(
        "ok",
        "Reinstated: keydesk no longer refuses this user. API access is still off and no key came back; switch it on and issue keys as usual.".into(),
    )
    .await;
    Ok(Redirect::to(&paths::user(id.as_str())).into_response())
}
