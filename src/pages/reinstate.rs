//! `GET|POST /users/{id}/reinstate`: an operator lifts an offboarding hold,
//! with a reason (audited `user.reinstate`). It gives nothing back by
//! itself: API access stays off and no key comes back; from here on the
//! usual paths (and their approval rules) work for the user again.

use askama::Template;
use axum::Form;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::paths::{self, UserPath};
use super::{Layout, render};
use crate::approvals::{ApprovalAction, NewApproval};
use crate::audit::{AuditAction, Intent, Outcome};
use crate::error::AppError;
use crate::holds::Hold;
use crate::idempotency::Scope;
use crate::identity::Operator;
use crate::ids::VultrId;
use crate::policy::{Change, check_reason};
use crate::state::AppState;
use crate::vultr::User;
use crate::write::{CONFIRM_AGAIN, Confirmation, Ctx};

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

async fn confirm_page(
    ctx: &Ctx,
    id: &VultrId,
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let hold = standing(ctx, id).await?;
    let view = ReinstateView {
        layout: ctx.layout().await,
        user: ctx.state.vultr.get_user(id).await?,
        hold,
        token: ctx.issue(Scope::Reinstate(id)).await?,
        notice,
    };
    Ok(render(status, &view))
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

/// Who placed the hold, when and why, and the form that lifts it.
pub async fn reinstate_confirm(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
) -> Result<Response, AppError> {
    confirm_page(&ctx, &id, None, StatusCode::OK).await
}

#[derive(Deserialize, Default)]
pub struct ReinstateInput {
    form_token: Option<String>,
    reason: Option<String>,
}

/// Lifts the hold. A reason is always required: it undoes an offboarding.
pub async fn reinstate_submit(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
    Form(input): Form<ReinstateInput>,
) -> Result<Response, AppError> {
    let always = crate::policy::KeyPolicy {
        require_reason: true,
        ..ctx.state.policy.clone()
    };
    let reason = match check_reason(input.reason.as_deref(), &always) {
        Ok(r) => r,
        Err(e) => return confirm_page(&ctx, &id, Some(e), StatusCode::UNPROCESSABLE_ENTITY).await,
    };
    let token = input.form_token.as_deref();
    let claim = match ctx.confirm(token, Scope::Reinstate(&id), &id).await? {
        Confirmation::Go(claim) => claim,
        Confirmation::Replay => return Ok(Redirect::to(&paths::user(id.as_str())).into_response()),
        Confirmation::Refused => {
            return confirm_page(&ctx, &id, Some(CONFIRM_AGAIN.into()), StatusCode::FORBIDDEN)
                .await;
        }
    };
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
        ));
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
        let new = NewApproval {
            action: ApprovalAction::Reinstate,
            user_id: id.to_string(),
            user_email: hold.user_email.clone(),
            key_id: None,
            key_name: None,
            expire: false,
            date_expire: None,
            reason: intent.reason.clone(),
            why: "reinstating an offboarded user needs a second person (api-access-on)".into(),
            requested_by: ctx.who.email.clone(),
            subnet: None,
            decided: None,
        };
        return super::approvals::request(&ctx, claim, new).await;
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
