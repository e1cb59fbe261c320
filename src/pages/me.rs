//! `GET /me` and `GET|POST /me/keys/{key_id}/revoke`: a key owner's own
//! Vultr user and keys. An owner is anyone signed in whose identity is the
//! email of a Vultr user of the account (compared normalised), with or
//! without a staff role. The user always comes from the signed-in identity,
//! never from the URL or the form: an owner can act on their own keys only.
//! Revoking never waits for approval, and is allowed under an offboarding
//! hold: it only takes access away.

use askama::Template;
use axum::Form;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Layout, render};
use crate::approvals::Approval;
use crate::audit::{AuditAction, Entry, Intent, Outcome};
use crate::error::AppError;
use crate::grants::Grant;
use crate::holds::Hold;
use crate::idempotency::Scope;
use crate::ids::VultrId;
use crate::notify::NoticeRow;
use crate::user_record::UserRecord;
use crate::vultr::{ApiKey, User};
use crate::write::{Ctx, Refusal};

/// The audit role of an owner acting on their own keys: the self-service marker.
pub const SELF_SERVICE: &str = "self-service";

#[derive(Template)]
#[template(path = "me/show.html")]
pub struct MeView {
    pub layout: Layout,
    pub user: User,
    pub keys: Vec<ApiKey>,
    pub notices: std::collections::HashMap<String, NoticeRow>,
    pub grants: Vec<Grant>,
    pub approvals: Vec<Approval>,
    pub hold: Option<Hold>,
    pub history: Vec<Entry>,
}

impl MeView {
    pub fn last_notice(&self, key_id: &str) -> Option<&NoticeRow> {
        self.notices.get(key_id)
    }
}

#[derive(Template)]
#[template(path = "me/revoke.html")]
pub struct RevokeView {
    pub layout: Layout,
    pub user: User,
    pub key: ApiKey,
    pub token: String,
    pub notice: Option<String>,
}

/// The signed-in person's Vultr user. `fresh` reads Vultr now, not the
/// users cache (before every write). None: a 403 page in words.
async fn owner(ctx: &Ctx, fresh: bool) -> Result<User, AppError> {
    if fresh {
        ctx.state.vultr.invalidate_lists();
    }
    let users = ctx.state.vultr.list_all_users().await?;
    let mut mine = users.into_iter().filter(|u| {
        u.email
            .as_deref()
            .is_some_and(|e| crate::email::same_email(e, &ctx.who.email))
    });
    match (mine.next(), mine.next()) {
        (Some(user), None) => Ok(user),
        (Some(_), Some(_)) => Err(AppError::Forbidden(format!(
            "More than one Vultr user of this account has the email {}, so keydesk cannot tell which keys are yours. Ask the keydesk operators to sort it out in Vultr.",
            ctx.who.email
        ))),
        (None, _) => Err(AppError::Forbidden(format!(
            "You are signed in as {}, and no Vultr user of this account has that email, so there are no keys of yours here. If you expected some, ask the keydesk operators (or whoever manages your company's Vultr account) to check the email of your Vultr user.",
            ctx.who.email
        ))),
    }
}

/// `GET /me`: the owner's user, keys, claim links, requests and history.
#[tracing::instrument(skip_all)]
pub async fn me_show(ctx: Ctx) -> Result<Response, AppError> {
    let user = owner(&ctx, false).await?;
    let id = VultrId::parse(&user.id)?;
    let (keys, record, approvals) = tokio::join!(
        ctx.state.vultr.list_keys(&id),
        UserRecord::read(&ctx.state.db, id.as_str()),
        ctx.state.approvals.for_user(id.as_str()),
    );
    let record = record.map_err(AppError::store)?;
    let mut keys = keys?;
    keys.sort_by(|a, b| a.name_or_dash().cmp(b.name_or_dash()));
    let view = MeView {
        layout: ctx.layout().await,
        user,
        keys,
        notices: record.notices,
        grants: record.grants,
        approvals: approvals.map_err(AppError::store)?,
        hold: record.hold,
        history: record.history,
    };
    Ok(render(StatusCode::OK, &view))
}

/// The owner's key `key_id`, read now: refused (403, audited) when it is not
/// one of theirs, whoever's it is.
async fn own_key(ctx: &Ctx, user: &User, key_id: &VultrId) -> Result<ApiKey, AppError> {
    let id = VultrId::parse(&user.id)?;
    let keys = ctx.state.vultr.list_keys(&id).await?;
    if let Some(key) = keys.into_iter().find(|k| k.id == key_id.as_str()) {
        return Ok(key);
    }
    let intent = Intent {
        key_id: Some(key_id.to_string()),
        reason: Some("self-service: not one of the owner's keys".into()),
        ..ctx.intent(AuditAction::AccessDenied)
    };
    ctx.state.audit.record(&intent, Outcome::Failed).await;
    Err(AppError::Forbidden(
        "That is not one of your keys. Here you can act on your own keys only.".into(),
    ))
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
    let user = owner(&ctx, false).await?;
    let key = own_key(&ctx, &user, &key_id).await?;
    revoke_page(&ctx, user, key, None, StatusCode::OK).await
}

#[derive(Deserialize, Default)]
pub struct RevokeInput {
    form_token: Option<String>,
    understand: Option<String>,
}

/// `POST /me/keys/{key_id}/revoke`: the owner, read from Vultr now, revokes
/// their key at once through the one audited write.
#[tracing::instrument(skip_all)]
pub async fn revoke_submit(
    ctx: Ctx,
    Path(raw): Path<String>,
    Form(input): Form<RevokeInput>,
) -> Result<Response, AppError> {
    let key_id = VultrId::parse(&raw)?;
    // Vultr's word now: the email may have changed since the page.
    let user = owner(&ctx, true).await?;
    let id = VultrId::parse(&user.id)?;
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let scope = Scope::RevokeKey(&id, &key_id);
    let claim = match ctx.claim(token, scope, &id, Some(&key_id)).await {
        Ok(claim) => claim,
        Err(Refusal::Replay { .. }) => {
            ctx.flash("info", "That key was already revoked.".into())
                .await;
            return Ok(Redirect::to(super::paths::ME).into_response());
        }
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => {
            // Someone else's key is refused here, in words, and audited.
            let key = own_key(&ctx, &user, &key_id).await?;
            let notice = "That confirmation has expired or was not issued to you. Confirm again to revoke the key.";
            return revoke_page(&ctx, user, key, Some(notice.into()), StatusCode::FORBIDDEN).await;
        }
    };
    // Not theirs, or unreadable: nothing was sent, the form is given back.
    let key = claim.prepare(own_key(&ctx, &user, &key_id).await).await?;
    if !crate::policy::checkbox(input.understand.as_deref()) {
        claim.release().await;
        let notice = "Tick “I understand” to confirm the revocation. Nothing was revoked.";
        return revoke_page(
            &ctx,
            user,
            key,
            Some(notice.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let base = Intent {
        role: SELF_SERVICE.into(),
        reason: Some("revoked by its owner (self-service)".into()),
        ..ctx.intent(AuditAction::KeyRevoke)
    };
    super::keys::revoke::revoke_claimed(&ctx, claim, base, &user, &key).await?;
    let text = format!(
        "Revoked your key “{}”. Anything using it has stopped working.",
        key.name_or_dash()
    );
    ctx.flash("ok", text).await;
    Ok(Redirect::to(super::paths::ME).into_response())
}
