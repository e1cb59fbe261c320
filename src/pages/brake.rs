//! `GET|POST /users/{id}/api-access`: the incident brake. Switches a user's
//! API access off (every key refused at once) or back on; confirmed, audited,
//! reversible.

use askama::Template;
use axum::Form;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::paths::{self, UserPath};
use super::{Layout, render};
use crate::approvals::{ApprovalAction, NewApproval};
use crate::audit::{AuditAction, Intent};
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::identity::Operator;
use crate::ids::VultrId;
use crate::policy::{Change, check_reason};
use crate::vultr::User;
use crate::write::{CONFIRM_AGAIN, Confirmation, Ctx};

#[derive(Template)]
#[template(path = "users/brake_confirm.html")]
pub struct BrakeConfirmView {
    pub layout: Layout,
    pub user: User,
    /// The state this confirmation will set.
    pub enable: bool,
    pub token: String,
    pub notice: Option<String>,
    pub require_reason: bool,
}

async fn confirm_page(
    ctx: &Ctx,
    id: &VultrId,
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let user = ctx.state.vultr.get_user(id).await?;
    let enable = !user.api_access();
    let view = BrakeConfirmView {
        layout: ctx.layout().await,
        token: ctx.issue(Scope::ApiAccess(id, enable)).await?,
        user,
        enable,
        notice,
        require_reason: ctx.state.policy.require_reason,
    };
    Ok(render(status, &view))
}

/// Confirm switching API access off (or on).
pub async fn brake_confirm(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
) -> Result<Response, AppError> {
    confirm_page(&ctx, &id, None, StatusCode::OK).await
}

#[derive(Deserialize, Default)]
pub struct BrakeInput {
    enabled: Option<String>,
    form_token: Option<String>,
    reason: Option<String>,
    /// The "I understand" box: the switch needs it ticked.
    understand: Option<String>,
}

/// `PATCH /v2/users/{id}` with `api_enabled`, audited.
pub async fn brake_submit(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
    Form(input): Form<BrakeInput>,
) -> Result<Response, AppError> {
    let enable = match input.enabled.as_deref() {
        Some("true") => true,
        Some("false") => false,
        _ => {
            let msg = "Say whether API access should be on or off.";
            return Err(AppError::BadRequest(msg.into()));
        }
    };
    let reason = match check_reason(input.reason.as_deref(), &ctx.state.policy) {
        Ok(r) => r,
        Err(e) => {
            return confirm_page(&ctx, &id, Some(e), StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    let scope = Scope::ApiAccess(&id, enable);
    let claim = match ctx.confirm(input.form_token.as_deref(), scope, &id).await? {
        Confirmation::Go(claim) => claim,
        Confirmation::Replay => return Ok(Redirect::to(&paths::user(id.as_str())).into_response()),
        Confirmation::Refused => {
            return confirm_page(&ctx, &id, Some(CONFIRM_AGAIN.into()), StatusCode::FORBIDDEN)
                .await;
        }
    };
    if !crate::policy::checkbox(input.understand.as_deref()) {
        claim.release().await;
        let notice = "Tick “I understand” to confirm. Nothing was changed.";
        return confirm_page(
            &ctx,
            &id,
            Some(notice.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    // The rules read the user's ACLs and allowlist as Vultr reports them now.
    let (user, cap) = claim
        .prepare(crate::pages::capability::now(&ctx.state, &id).await)
        .await?;
    if let Some(why) = ctx.state.approval.why(Change::ApiAccess(enable, &cap)) {
        let new = NewApproval {
            action: ApprovalAction::ApiAccessOn,
            user_id: id.to_string(),
            user_email: user.email.clone(),
            key_id: None,
            key_name: None,
            expire: false,
            date_expire: None,
            reason,
            why,
            requested_by: ctx.who.email.clone(),
            subnet: None,
            decided: Some(cap.decided(&ctx.state.approval.named_acls())),
        };
        return super::approvals::request(&ctx, claim, new).await;
    }
    let intent = Intent {
        target_user_id: Some(id.to_string()),
        target_user_email: user.email.clone(),
        api_enabled: Some(enable),
        reason,
        ..ctx.intent(AuditAction::UserApiAccess)
    };
    let call = ctx.state.vultr.set_api_enabled(&id, enable);
    claim.execute(intent, call, |_| None).await?;
    let text = if enable {
        "API access switched on: the user's keys work again."
    } else {
        "API access switched off: Vultr now refuses all of this user's keys."
    };
    ctx.flash("ok", text.into()).await;
    Ok(Redirect::to(&paths::user(id.as_str())).into_response())
}
