//! A user's API allowlist, as in Vultr's console ("API Access → Access
//! Control List"): `GET|POST /users/{id}/allowlist` adds an entry (address,
//! prefix, reason), `GET|POST /users/{id}/allowlist/remove` removes one
//! after a confirmation. Operators only, one-time forms, the one audited
//! write (`user.allowlist.add`, `user.allowlist.remove`), refused under an
//! offboarding hold. Vultr's rules are checked before anything is sent.
//! Removing narrows access and never waits; `allowlist-widen` makes adding wait.

use askama::Template;
use axum::Form;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::paths::UserPath;
use super::{Layout, paths, render};
use crate::allowlist::{Entry, check};
use crate::approvals::ApprovalAction;
use crate::audit::{AuditAction, Intent};
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::identity::Operator;
use crate::ids::VultrId;
use crate::policy::{Change, check_reason};
use crate::powers::Capability;
use crate::vultr::User;
use crate::write::{Ctx, Refusal};

#[derive(Template)]
#[template(path = "users/allowlist_add.html")]
pub struct AddView {
    pub layout: Layout,
    pub user: User,
    pub cap: Capability,
    pub token: String,
    pub address: String,
    pub prefix: String,
    pub reason: String,
    pub error: Option<String>,
    /// `allowlist-widen` is a rule: adding waits for a second person.
    pub waits: bool,
}

#[derive(Deserialize, Default)]
pub struct AddInput {
    form_token: Option<String>,
    address: Option<String>,
    prefix: Option<String>,
    reason: Option<String>,
}

async fn add_page(
    ctx: &Ctx,
    id: &VultrId,
    input: AddInput,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let user = ctx.state.vultr.get_user(id).await?;
    let cap = super::capability::of(&ctx.state, &user).await?;
    let view = AddView {
        layout: ctx.layout().await,
        token: ctx.issue(Scope::AllowlistAdd(id)).await?,
        waits: ctx.state.approval.why(Change::AllowlistAdd).is_some(),
        user,
        cap,
        address: input.address.unwrap_or_default(),
        prefix: input.prefix.unwrap_or_else(|| "32".into()),
        reason: input.reason.unwrap_or_default(),
        error,
    };
    Ok(render(status, &view))
}

/// `GET /users/{id}/allowlist`: the add form, with the allowlist as it is.
pub async fn add_form(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
) -> Result<Response, AppError> {
    add_page(&ctx, &id, AddInput::default(), None, StatusCode::OK).await
}

/// `POST /users/{id}/allowlist`: checked as Vultr would, then added (or a
/// request stored under `allowlist-widen`).
#[tracing::instrument(skip_all, fields(vultr.user_id = %id))]
pub async fn add_submit(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
    Form(input): Form<AddInput>,
) -> Result<Response, AppError> {
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let claim = match ctx.claim(token, Scope::AllowlistAdd(&id), &id, None).await {
        Ok(claim) => claim,
        Err(Refusal::Replay { .. }) => {
            ctx.flash("info", "That entry was already submitted.".into())
                .await;
            return Ok(Redirect::to(&paths::user(id.as_str())).into_response());
        }
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => {
            let why =
                "This form has expired or was not issued to you. Nothing was sent; submit again.";
            return add_page(&ctx, &id, input, Some(why.into()), StatusCode::FORBIDDEN).await;
        }
    };
    let checked = check(
        input.address.as_deref().unwrap_or_default(),
        input.prefix.as_deref().unwrap_or_default(),
    )
    .and_then(|net| {
        check_reason(input.reason.as_deref(), &ctx.state.policy).map(|reason| (net, reason))
    });
    let (net, reason) = match checked {
        Ok(ok) => ok,
        Err(e) => {
            claim.release().await;
            let e = format!("{e}. Nothing was sent to Vultr.");
            return add_page(&ctx, &id, input, Some(e), StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    let (user, cap) = claim
        .prepare(super::capability::now(&ctx.state, &id).await)
        .await?;
    if let Some(why) = ctx.state.approval.why(Change::AllowlistAdd) {
        let new = super::confirm::user_request(
            &ctx,
            ApprovalAction::AllowlistAdd,
            (&id, user.email.clone()),
            reason,
            why,
            Some(net.to_string()),
        );
        let new = crate::approvals::NewApproval {
            decided: Some(cap.decided(&ctx.state.approval.named_acls())),
            ..new
        };
        return super::approvals::request(&ctx, claim, new).await;
    }
    let intent = Intent {
        target_user_id: Some(id.to_string()),
        target_user_email: user.email.clone(),
        key_name: Some(net.to_string()),
        reason,
        ..ctx.intent(AuditAction::UserAllowlistAdd)
    };
    let intent = super::capability::stamp(intent, &cap);
    let call = ctx.state.vultr.allowlist_add(&id, &net);
    claim.execute(intent, call, |_| None).await?;
    ctx.flash(
        "ok",
        format!("Added {net} to the allowlist: this user's keys now also work from there."),
    )
    .await;
    Ok(Redirect::to(&paths::user(id.as_str())).into_response())
}

#[derive(Template)]
#[template(path = "users/allowlist_remove.html")]
pub struct RemoveView {
    pub layout: Layout,
    pub user: User,
    pub entry: Entry,
    pub token: String,
    pub notice: Option<String>,
    /// Removing it leaves no entry: Vultr may then refuse every key.
    pub last: bool,
}

#[derive(Deserialize, Default)]
pub struct RemoveQuery {
    subnet: Option<String>,
    subnet_size: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct RemoveInput {
    form_token: Option<String>,
    subnet: Option<String>,
    subnet_size: Option<String>,
    understand: Option<String>,
    reason: Option<String>,
}

/// The entry named, as Vultr lists it now for this user; 404 in words when
/// it is not there.
async fn listed(
    ctx: &Ctx,
    id: &VultrId,
    subnet: Option<&str>,
    size: Option<&str>,
) -> Result<(User, Capability, Entry), AppError> {
    let (user, cap) = super::capability::now(&ctx.state, id).await?;
    let size: Option<u32> = size.and_then(|s| s.trim().parse().ok());
    let subnet = subnet.unwrap_or_default().trim();
    let entry = cap
        .reach
        .entries
        .iter()
        .find(|e| e.subnet == subnet && e.subnet_size == size)
        .cloned()
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "{subnet}/{} is not on this user's allowlist (any more). Nothing was sent to Vultr.",
                size.map(|s| s.to_string()).unwrap_or_default()
            ))
        })?;
    Ok((user, cap, entry))
}

async fn remove_page(
    ctx: &Ctx,
    id: &VultrId,
    (user, cap, entry): (User, Capability, Entry),
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let view = RemoveView {
        layout: ctx.layout().await,
        token: ctx.issue(Scope::AllowlistRemove(id)).await?,
        last: cap.reach.entries.len() == 1,
        user,
        entry,
        notice,
    };
    Ok(render(status, &view))
}

/// `GET /users/{id}/allowlist/remove?subnet=&subnet_size=`: the confirmation.
pub async fn remove_confirm(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
    Query(q): Query<RemoveQuery>,
) -> Result<Response, AppError> {
    let found = listed(&ctx, &id, q.subnet.as_deref(), q.subnet_size.as_deref()).await?;
    remove_page(&ctx, &id, found, None, StatusCode::OK).await
}

/// `POST /users/{id}/allowlist/remove`: one DELETE carrying the entry. It
/// narrows access, so it never waits for a second person.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id))]
pub async fn remove_submit(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
    Form(input): Form<RemoveInput>,
) -> Result<Response, AppError> {
    let (subnet, size) = (input.subnet.as_deref(), input.subnet_size.as_deref());
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let claim = match ctx
        .claim(token, Scope::AllowlistRemove(&id), &id, None)
        .await
    {
        Ok(claim) => claim,
        Err(Refusal::Replay { .. }) => {
            ctx.flash("info", "That entry was already removed.".into())
                .await;
            return Ok(Redirect::to(&paths::user(id.as_str())).into_response());
        }
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => {
            let found = listed(&ctx, &id, subnet, size).await?;
            let why = "This confirmation has expired or was not issued to you. Confirm again.";
            return remove_page(&ctx, &id, found, Some(why.into()), StatusCode::FORBIDDEN).await;
        }
    };
    let found = claim.prepare(listed(&ctx, &id, subnet, size).await).await?;
    let reason = match check_reason(input.reason.as_deref(), &ctx.state.policy) {
        Ok(r) if crate::policy::checkbox(input.understand.as_deref()) => r,
        Ok(_) => {
            claim.release().await;
            let why = "Tick “I understand” to confirm. Nothing was removed.";
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return remove_page(&ctx, &id, found, Some(why.into()), status).await;
        }
        Err(e) => {
            claim.release().await;
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return remove_page(&ctx, &id, found, Some(e), status).await;
        }
    };
    let (user, cap, entry) = found;
    let Some(net) = entry.net() else {
        claim.release().await;
        return Err(AppError::BadRequest(format!(
            "keydesk does not recognise the entry {}: remove it in Vultr's console. Nothing was sent.",
            entry.cidr()
        )));
    };
    let intent = Intent {
        target_user_id: Some(id.to_string()),
        target_user_email: user.email.clone(),
        key_name: Some(net.to_string()),
        reason,
        ..ctx.intent(AuditAction::UserAllowlistRemove)
    };
    let intent = super::capability::stamp(intent, &cap);
    let call = ctx.state.vultr.allowlist_remove(&id, &net);
    claim.execute(intent, call, |_| None).await?;
    ctx.flash(
        "ok",
        format!("Removed {net} from the allowlist: this user's keys no longer work from there."),
    )
    .await;
    Ok(Redirect::to(&paths::user(id.as_str())).into_response())
}
