//! Claim links, the operator's side: `POST /users/{id}/grants` issues one
//! from the add-key form, `GET /grants` lists them, `GET|POST
//! /grants/{grant}/revoke` withdraws a pending one. Expiry is swept here too.
//! No key is ever created on this side: the owner claims it (`claim.rs`).

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::confirm::Stop;
use super::keys::add::{self, Makes, Valid};
use super::paths::{self, UserPath};
use super::{Layout, render};
use crate::approvals::ApprovalAction;
use crate::audit::{AuditAction, Intent};
use crate::error::AppError;
use crate::grants::{Grant, GrantState, NewGrant, plausible_id};
use crate::idempotency::Scope;
use crate::identity::{Operator, Staff};
use crate::policy::{CreateKeyInput, check_reason};
use crate::state::AppState;
use crate::write::{Ctx, Refusal};

#[derive(Template)]
#[template(path = "grants/created.html")]
pub struct GrantCreatedView {
    pub layout: Layout,
    pub grant: Grant,
    /// The claim link: absolute when `KEYDESK_PUBLIC_URL` is set.
    pub link: String,
    /// With SMTP: whether the owner was mailed the link (or why not).
    pub mailed: Option<Result<(), String>>,
}

/// Mails the owner their link when SMTP is configured (never a key).
pub async fn mail_link(state: &AppState, grant: &Grant, link: &str) -> Option<Result<(), String>> {
    if !state.notifier.can_mail() {
        return None;
    }
    if !link.starts_with("http") {
        return Some(Err(
            "KEYDESK_PUBLIC_URL is not set, so there is no full link to mail".into(),
        ));
    }
    let (expiry, until) = (grant.key_expiry_display(), grant.expires_display());
    let mail = crate::notify::send::ClaimMail {
        granted_by: &grant.created_by,
        key_name: &grant.key_name,
        expiry: &expiry,
        link,
        until: &until,
    };
    let sent = state
        .notifier
        .mail_claim_link(&grant.user_email, mail)
        .await;
    if let Err(e) = &sent {
        tracing::warn!(error = %e, "claim link not mailed");
    }
    Some(sent)
}

/// Issues a claim link from the add-key form (the same fields, the same
/// policy, the same one-time form: it creates a key or a link, once).
#[tracing::instrument(skip_all, fields(vultr.user_id = %id))]
pub async fn grant_create(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
    Form(input): Form<CreateKeyInput>,
) -> Result<Response, Stop> {
    let valid = add::submitted(&ctx, &id, &input, Makes::Link).await?;
    // The owner is whoever Vultr says this user is, now.
    let Some(email) = valid.user.email.clone().filter(|e| !e.trim().is_empty()) else {
        valid.claim.release().await;
        return Err(AppError::BadRequest(
            "This Vultr user has no email address, so no one could claim a link. Use Add Key instead.".into(),
        )
        .into());
    };
    let Valid {
        claim,
        form,
        body,
        cap,
        ..
    } = valid.or_request(&ctx, ApprovalAction::GrantCreate).await?;
    let new = NewGrant {
        user_id: id.to_string(),
        user_email: email.clone(),
        key_name: body.name.clone(),
        date_expire: body.date_expire.clone(),
        reason: form.reason(),
        created_by: ctx.who.email.clone(),
        decided: cap.decided(&ctx.state.approval.named_acls()),
    };
    let intent = Intent {
        target_user_id: Some(id.to_string()),
        target_user_email: Some(email),
        key_name: Some(body.name),
        requested_expiry: body.date_expire,
        reason: form.reason(),
        ..ctx.intent(AuditAction::GrantCreate)
    };
    let intent = super::capability::stamp(intent, &cap);
    let grant = claim
        .store(
            intent,
            async { ctx.state.grants.create(&new).await.map_err(AppError::store) },
            |g| Some(g.id.clone()),
        )
        .await?;
    tracing::info!(grant = %&grant.id[..8], "claim link issued");
    metrics::counter!("keydesk_grants_total", "event" => "create").increment(1);
    let link = ctx.state.link(&paths::claim(&grant.id));
    let mailed = mail_link(&ctx.state, &grant, &link).await;
    let view = GrantCreatedView {
        layout: ctx.layout().await,
        link,
        grant,
        mailed,
    };
    Ok(render(StatusCode::OK, &view))
}

#[derive(Deserialize, Default)]
pub struct GrantsQuery {
    state: Option<String>,
    user: Option<String>,
}

#[derive(Template)]
#[template(path = "grants/list.html")]
pub struct GrantsListView {
    pub layout: Layout,
    pub grants: Vec<Grant>,
    pub state: String,
    pub user: String,
    pub states: [GrantState; 6],
}

/// `GET /grants`: every claim link, newest first, by state and user.
pub async fn grants_list(
    Staff(_): Staff,
    ctx: Ctx,
    Query(q): Query<GrantsQuery>,
) -> Result<Response, AppError> {
    expire_due(&ctx.state).await;
    let state = q
        .state
        .filter(|s| !s.is_empty())
        .map(|s| {
            GrantState::ALL
                .into_iter()
                .find(|g| g.as_str() == s)
                .ok_or_else(|| AppError::BadRequest("Unknown grant state.".into()))
        })
        .transpose()?;
    let user = q.user.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let grants = ctx
        .state
        .grants
        .list(state, user, 500)
        .await
        .map_err(AppError::store)?;
    let view = GrantsListView {
        layout: ctx.layout().await,
        grants,
        state: state.map(|s| s.as_str().to_string()).unwrap_or_default(),
        user: user.unwrap_or_default().to_string(),
        states: GrantState::ALL,
    };
    Ok(render(StatusCode::OK, &view))
}

#[derive(Template)]
#[template(path = "grants/revoke_confirm.html")]
pub struct GrantRevokeView {
    pub layout: Layout,
    pub grant: Grant,
    pub token: String,
    pub notice: Option<String>,
    pub require_reason: bool,
}

/// The grant `raw` names, or 404.
pub async fn find(state: &AppState, raw: &str) -> Result<Grant, AppError> {
    let missing = || AppError::NotFound("There is no such claim link.".into());
    if !plausible_id(raw) {
        return Err(missing());
    }
    state
        .grants
        .get(raw)
        .await
        .map_err(AppError::store)?
        .ok_or_else(missing)
}

/// Why a grant in `state` can no longer be claimed or revoked, as an error.
pub fn closed(grant: &Grant) -> AppError {
    match grant.state {
        GrantState::Claimed => AppError::Conflict(format!(
            "This claim link was used on {}: the key was created and shown once, and cannot be shown again.",
            grant.ended_ms.map(crate::timefmt::display_ms).unwrap_or_default()
        )),
        GrantState::Expired => AppError::Gone(
            "This claim link has expired. Ask an operator for a new one.".into(),
        ),
        GrantState::Revoked => AppError::Gone(
            "This claim link was withdrawn by an operator. Ask them for a new one.".into(),
        ),
        GrantState::Unknown if grant.candidates.is_some() => AppError::Conflict(
            "This claim link's last use lost its answer, and more than one key with its name appeared meanwhile: keydesk cannot tell which, if any, it made. Ask an operator to look.".into(),
        ),
        GrantState::Claiming | GrantState::Unknown => AppError::Conflict(
            "This claim link is being used right now, or its last use did not finish. Reload this page in a moment.".into(),
        ),
        GrantState::Pending => AppError::Conflict("This claim link is still open.".into()),
        GrantState::Newer => AppError::Conflict(format!(
            "This claim link is in a state a newer keydesk wrote ({}): use it on a replica running that release.",
            crate::audit::NEWER
        )),
    }
}

async fn revoke_page(
    ctx: &Ctx,
    grant: Grant,
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let view = GrantRevokeView {
        layout: ctx.layout().await,
        token: ctx.issue(Scope::GrantRevoke(&grant.id)).await?,
        grant,
        notice,
        require_reason: ctx.state.policy.require_reason,
    };
    Ok(render(status, &view))
}

/// The confirmation of withdrawing a pending claim link.
pub async fn grant_revoke_confirm(
    Operator(_): Operator,
    ctx: Ctx,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    expire_due(&ctx.state).await;
    let grant = find(&ctx.state, &raw).await?;
    if grant.state != GrantState::Pending {
        return Err(closed(&grant));
    }
    revoke_page(&ctx, grant, None, StatusCode::OK).await
}

#[derive(Deserialize, Default)]
pub struct GrantRevokeInput {
    form_token: Option<String>,
    reason: Option<String>,
}

/// Withdraws a pending claim link: one conditional update, audited.
pub async fn grant_revoke(
    Operator(_): Operator,
    ctx: Ctx,
    Path(raw): Path<String>,
    Form(input): Form<GrantRevokeInput>,
) -> Result<Response, AppError> {
    expire_due(&ctx.state).await;
    let grant = find(&ctx.state, &raw).await?;
    let reason = match check_reason(input.reason.as_deref(), &ctx.state.policy) {
        Ok(r) => r,
        Err(e) => return revoke_page(&ctx, grant, Some(e), StatusCode::UNPROCESSABLE_ENTITY).await,
    };
    let user = crate::ids::VultrId::parse(&grant.user_id)?;
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let claim = match ctx
        .claim(token, Scope::GrantRevoke(&grant.id), &user, None)
        .await
    {
        Ok(claim) => claim,
        Err(Refusal::Replay { .. }) => return Err(closed(&grant)),
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => {
            let notice = "That confirmation has expired or was not issued to you. Confirm again.";
            return revoke_page(&ctx, grant, Some(notice.into()), StatusCode::FORBIDDEN).await;
        }
    };
    let intent = Intent {
        target_user_id: Some(grant.user_id.clone()),
        target_user_email: Some(grant.user_email.clone()),
        key_name: Some(grant.key_name.clone()),
        grant_id: Some(grant.id.clone()),
        reason,
        ..ctx.intent(AuditAction::GrantRevoke)
    };
    let state = &ctx.state;
    let revoke = async {
        match state.grants.revoke(&grant.id, &ctx.who.email).await {
            Ok(true) => Ok(()),
            // Claimed, expired or revoked meanwhile: say which.
            Ok(false) => Err(closed(&find(state, &raw).await?)),
            Err(e) => Err(AppError::store(e)),
        }
    };
    claim.store(intent, revoke, |_| None).await?;
    metrics::counter!("keydesk_grants_total", "event" => "revoke").increment(1);
    ctx.flash(
        "ok",
        format!("Withdrew the claim link for “{}”.", grant.key_name),
    )
    .await;
    Ok(Redirect::to(&paths::user(&grant.user_id)).into_response())
}

/// Expired links and abandoned claims swept first (grants' own store).
pub async fn expire_due(state: &AppState) {
    state.grants.sweep(&state.audit).await;
}
