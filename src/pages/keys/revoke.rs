//! `GET|POST /users/{id}/keys/{key_id}/delete`: the confirmation naming the
//! key, then the revocation.

use askama::Template;
use axum::Form;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::audit::{AuditAction, Intent};
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::identity::Operator;
use crate::ids::VultrId;
use crate::pages::confirm::Stop;
use crate::pages::paths::{self, KeyPath};
use crate::pages::{Layout, render};
use crate::policy::check_reason;
use crate::vultr::{ApiKey, User};
use crate::write::{Claimed, Ctx, Refusal};

#[derive(Template)]
#[template(path = "keys/revoke_confirm.html")]
pub struct RevokeConfirmView {
    pub layout: Layout,
    pub user: User,
    pub key: ApiKey,
    pub token: String,
    pub notice: Option<String>,
    pub reason: String,
    pub require_reason: bool,
    /// When retiring the old key of a rotation: the replacement's id.
    pub replaced_by: Option<VultrId>,
}

/// The confirmation page; with a `notice` it explains why it is shown again.
async fn confirm_page(
    ctx: &Ctx,
    (id, key_id): (&VultrId, &VultrId),
    notice: Option<String>,
    replaced_by: Option<VultrId>,
) -> Result<Response, AppError> {
    let (user, key) = ctx.state.vultr.get_user_and_key(id, key_id).await?;
    let status = match notice {
        Some(_) => StatusCode::UNPROCESSABLE_ENTITY,
        None => StatusCode::OK,
    };
    let view = RevokeConfirmView {
        layout: ctx.layout().await,
        user,
        key,
        token: ctx.issue(Scope::RevokeKey(id, key_id)).await?,
        notice,
        reason: String::new(),
        require_reason: ctx.state.policy.require_reason,
        replaced_by,
    };
    Ok(render(status, &view))
}

/// An optional id from a form or query: empty is none, anything else must parse.
fn optional_id(raw: Option<String>) -> Result<Option<VultrId>, AppError> {
    raw.filter(|r| !r.is_empty())
        .map(|r| VultrId::parse(&r).map_err(AppError::from))
        .transpose()
}

/// The confirmation step, naming the key.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id, key.id = %key_id))]
pub async fn revoke_confirm(
    Operator(_): Operator,
    ctx: Ctx,
    KeyPath(id, key_id): KeyPath,
    Query(q): Query<RevokeInput>,
) -> Result<Response, AppError> {
    let replaced_by = optional_id(q.replaced_by)?;
    confirm_page(&ctx, (&id, &key_id), None, replaced_by).await
}

/// The revoke form (the confirmation's query carries only `replaced_by`).
#[derive(Deserialize, Default)]
pub struct RevokeInput {
    form_token: Option<String>,
    reason: Option<String>,
    /// Set when revoking the old key of a rotation: the replacement's id.
    replaced_by: Option<String>,
    /// The "I understand" box: the revocation needs it ticked.
    understand: Option<String>,
}

/// Revokes with a confirmed token; without one it shows the confirmation
/// step instead of acting.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id, key.id = %key_id))]
pub async fn revoke_submit(
    Operator(_): Operator,
    ctx: Ctx,
    KeyPath(id, key_id): KeyPath,
    Form(input): Form<RevokeInput>,
) -> Result<Response, Stop> {
    let ids = (&id, &key_id);
    let replaced_by = optional_id(input.replaced_by)?;
    let reason = match check_reason(input.reason.as_deref(), &ctx.state.policy) {
        Ok(r) => r,
        Err(e) => return Ok(confirm_page(&ctx, ids, Some(e), replaced_by).await?),
    };
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let back = paths::user(id.as_str());
    let Some(claim) = claim_revoke(&ctx, token, ids, &back).await? else {
        let notice = match token {
            None => "Confirm below to revoke this key.",
            Some(_) => EXPIRED,
        };
        let mut resp = confirm_page(&ctx, ids, Some(notice.into()), replaced_by).await?;
        *resp.status_mut() = StatusCode::FORBIDDEN;
        return Ok(resp);
    };
    if !crate::policy::checkbox(input.understand.as_deref()) {
        claim.release().await;
        return Ok(confirm_page(&ctx, ids, Some(UNTICKED.into()), replaced_by).await?);
    }
    let (user, key) = claim
        .prepare(ctx.state.vultr.get_user_and_key(&id, &key_id).await)
        .await?;
    let base = Intent {
        reason,
        related_key_id: replaced_by.map(String::from),
        ..ctx.intent(AuditAction::KeyRevoke)
    };
    revoke_claimed(&ctx, claim, base, &user, &key).await?;
    let text = format!("Revoked the key “{}”.", key.name_or_dash());
    ctx.flash("ok", text).await;
    Ok(Redirect::to(&paths::user(id.as_str())).into_response())
}

/// A revoke form refused: expired, or not issued to this person.
pub const EXPIRED: &str =
    "That confirmation has expired or was not issued to you. Confirm again to revoke the key.";
/// A revoke form sent without its "I understand" box ticked.
pub const UNTICKED: &str = "Tick “I understand” to confirm the revocation. Nothing was revoked.";

/// Claims the revoke form of `key_id` of `id` (shared by the staff page and
/// an owner's own revocation). A replay says the key is gone and goes
/// `back`; `None` is a refused form (audited), for the caller to show again.
pub async fn claim_revoke<'c>(
    ctx: &'c Ctx,
    token: Option<&str>,
    (id, key_id): (&VultrId, &VultrId),
    back: &str,
) -> Result<Option<Claimed<'c>>, Stop> {
    let scope = Scope::RevokeKey(id, key_id);
    match ctx.claim(token, scope, id, Some(key_id)).await {
        Ok(claim) => Ok(Some(claim)),
        Err(Refusal::Replay { .. }) => {
            ctx.flash("info", "That key was already revoked.".into())
                .await;
            Err(Stop::Page(Redirect::to(back).into_response()))
        }
        Err(Refusal::Unavailable(e)) => Err(e.into()),
        Err(Refusal::Refused) => Ok(None),
    }
}

/// Revokes `key` of `user` with a claimed form, through the one audited write
/// (`base`, a `key.revoke` intent, gets the user and key filled in), and
/// counts it. Shared by the staff page and an owner's own revocation.
pub async fn revoke_claimed(
    ctx: &Ctx,
    claim: Claimed<'_>,
    base: Intent,
    user: &User,
    key: &ApiKey,
) -> Result<(), AppError> {
    let (id, key_id) = (VultrId::parse(&user.id)?, VultrId::parse(&key.id)?);
    // What the revoked key could do, for the audit; a revocation never
    // waits on an unreadable allowlist.
    let intent = match crate::pages::capability::of(&ctx.state, user).await {
        Ok(cap) => crate::pages::capability::stamp(base, &cap),
        Err(_) => base,
    };
    let intent = Intent {
        target_user_id: Some(id.to_string()),
        target_user_email: user.email.clone(),
        key_id: Some(key_id.to_string()),
        key_name: key.name.clone(),
        ..intent
    };
    let call = ctx.state.vultr.delete_key(&id, &key_id);
    claim
        .execute(intent, call, |_| Some(key_id.to_string()))
        .await?;
    metrics::counter!("keydesk_keys_revoked_total").increment(1);
    Ok(())
}
