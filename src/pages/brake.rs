//! `GET|POST /users/{id}/api-access`: the incident brake. Switches a user's
//! API access off (every key refused at once) or back on; confirmed, audited,
//! reversible.

use askama::Template;
use axum::Form;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::Layout;
use super::confirm::{self, Confirm, ConfirmInput, Stop};
use super::paths::{self, UserPath};
use crate::approvals::ApprovalAction;
use crate::audit::{AuditAction, Intent};
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::identity::Operator;
use crate::ids::VultrId;
use crate::policy::Change;
use crate::vultr::User;
use crate::write::Ctx;

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

impl BrakeConfirmView {
    /// Switching off is the dangerous way.
    pub fn button_class(&self) -> &'static str {
        if self.enable { "primary" } else { "danger" }
    }
}

/// Confirm switching API access off (or on); the switch needs the "I
/// understand" box ticked.
impl Confirm for BrakeConfirmView {
    const TICK: bool = true;

    async fn view(ctx: &Ctx, id: &VultrId, notice: Option<String>) -> Result<Self, AppError> {
        let user = ctx.state.vultr.get_user(id).await?;
        let enable = !user.api_access();
        Ok(BrakeConfirmView {
            layout: ctx.layout().await,
            token: ctx.issue(Scope::ApiAccess(id, enable)).await?,
            user,
            enable,
            notice,
            require_reason: ctx.state.policy.require_reason,
        })
    }
}

#[derive(Deserialize, Default)]
pub struct BrakeInput {
    enabled: Option<String>,
    #[serde(flatten)]
    confirm: ConfirmInput,
}

/// `PATCH /v2/users/{id}` with `api_enabled`, audited.
pub async fn brake_submit(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
    Form(input): Form<BrakeInput>,
) -> Result<Response, Stop> {
    let enable = match input.enabled.as_deref() {
        Some("true") => true,
        Some("false") => false,
        _ => {
            let msg = "Say whether API access should be on or off.";
            return Err(AppError::BadRequest(msg.into()).into());
        }
    };
    let scope = Scope::ApiAccess(&id, enable);
    let policy = &ctx.state.policy;
    let (claim, reason) =
        confirm::submitted::<BrakeConfirmView>(&ctx, &id, scope, &input.confirm, policy).await?;
    // The rules read the user's ACLs and allowlist as Vultr reports them now.
    let (user, cap) = claim
        .prepare(crate::pages::capability::now(&ctx.state, &id).await)
        .await?;
    if let Some(why) = ctx.state.approval.why(Change::ApiAccess(enable, &cap)) {
        let new = confirm::user_request(
            &ctx,
            ApprovalAction::ApiAccessOn,
            (&id, user.email.clone()),
            reason,
            why,
            None,
        );
        let new = crate::approvals::NewApproval {
            decided: Some(cap.decided(&ctx.state.approval.named_acls())),
            ..new
        };
        return Ok(super::approvals::request(&ctx, claim, new).await?);
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
