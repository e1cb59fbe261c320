//! `GET|POST /me/keys/{key_id}/revoke`: an owner revokes their own key at
//! once, through the one audited write; never waits, allowed under a hold.

use askama::Template;
use axum::Form;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{SELF_SERVICE, WithinQuota, own_key, owner, owner_now};
use crate::audit::{AuditAction, Intent};
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::ids::VultrId;
use crate::pages::confirm::Stop;
use crate::pages::keys::revoke::{EXPIRED, UNTICKED, claim_revoke};
use crate::pages::{Layout, paths, render};
use crate::vultr::{ApiKey, User};
use crate::write::Ctx;

#[derive(Template)]
#[template(path = "me/revoke.html")]
pub struct RevokeView {
    pub layout: Layout,
    pub user: User,
    pub key: ApiKey,
    pub token: String,
    pub notice: Option<String>,
}

async fn revoke_page(
    ctx: &Ctx,
    user: User,
    key: ApiKey,
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let id = VultrId::parse(&user.id)?;
    let key_id = VultrId::parse(&key.id)?;
    let view = RevokeView {
        layout: ctx.layout().await,
        token: ctx.issue(Scope::RevokeKey(&id, &key_id)).await?,
        user,
        key,
        notice,
    };
    Ok(render(status, &view))
}

/// `GET /me/keys/{key_id}/revoke`: the confirmation, naming the key.
#[tracing::instrument(skip_all)]
pub async fn revoke_confirm(ctx: Ctx, Path(raw): Path<String>) -> Result<Response, AppError> {
    let key_id = VultrId::parse(&raw)?;
    let user = owner(&ctx).await?;
    let key = own_key(&ctx, &user, &key_id).await?;
    revoke_page(&ctx, user, key, None, StatusCode::OK).await
}

#[derive(Deserialize, Default)]
pub struct RevokeInput {
    form_token: Option<String>,
    understand: Option<String>,
}

/// `POST /me/keys/{key_id}/revoke`: the owner (cached list, token, then
/// Vultr's word now) revokes their key at once through the one audited write.
#[tracing::instrument(skip_all)]
pub async fn revoke_submit(
    _: WithinQuota,
    ctx: Ctx,
    Path(raw): Path<String>,
    Form(input): Form<RevokeInput>,
) -> Result<Response, Stop> {
    let key_id = VultrId::parse(&raw)?;
    let user = owner(&ctx).await?;
    let id = VultrId::parse(&user.id)?;
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let Some(claim) = claim_revoke(&ctx, token, (&id, &key_id), paths::ME).await? else {
        // Someone else's key is refused here, in words, and audited.
        let key = own_key(&ctx, &user, &key_id).await?;
        let notice = Some(EXPIRED.into());
        return Ok(revoke_page(&ctx, user, key, notice, StatusCode::FORBIDDEN).await?);
    };
    // Vultr's word now: the email may have changed since the page.
    let user = owner_now(&ctx, &claim, &user).await?;
    // Not theirs, or unreadable: nothing was sent, the form is given back.
    let key = claim.prepare(own_key(&ctx, &user, &key_id).await).await?;
    if !crate::policy::checkbox(input.understand.as_deref()) {
        claim.release().await;
        let notice = Some(UNTICKED.into());
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(revoke_page(&ctx, user, key, notice, status).await?);
    }
    let base = Intent {
        role: SELF_SERVICE.into(),
        reason: Some("revoked by its owner (self-service)".into()),
        ..ctx.intent(AuditAction::KeyRevoke)
    };
    crate::pages::keys::revoke::revoke_claimed(&ctx, claim, base, &user, &key).await?;
    let text = format!(
        "Revoked your key “{}”. Anything using it has stopped working.",
        key.name_or_dash()
    );
    ctx.flash("ok", text).await;
    Ok(Redirect::to(paths::ME).into_response())
}
