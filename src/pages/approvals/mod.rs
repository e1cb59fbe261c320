//! Two-person approval: a form whose action needs a second person stores a
//! request instead (`request`, 202); `GET /approvals` and `/approvals/{id}`
//! show requests; an approver (never the requester) approves or denies,
//! once; the requester then runs it with "Do it now", exactly once, through
//! the same audited write as everything else. No approver ever sees a key.

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{Layout, paths, render};
use crate::approvals::{Approval, ApprovalAction, ApprovalState, NewApproval, plausible_id};
use crate::audit::{AuditAction, Intent, Outcome};
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::identity::{Role, Staff};
use crate::ids::VultrId;
use crate::state::AppState;
use crate::vultr::NewApiKey;
use crate::write::{Claimed, Ctx, Refusal};

mod decide;
mod execute;

pub use decide::{approval_approve, approval_deny, approval_withdraw};
pub use execute::approval_execute;

#[derive(Template)]
#[template(path = "approvals/requested.html")]
pub struct ApprovalRequestedView {
    pub layout: Layout,
    pub approval: Approval,
}

/// Instead of acting: stores the request, audits `approval.request`, tells
/// the approvers, and answers 202 with a link to it. Nothing goes upstream.
pub async fn request(
    ctx: &Ctx,
    claim: Claimed<'_>,
    new: NewApproval,
) -> Result<Response, AppError> {
    request_as(ctx, claim, new, None).await
}

/// `request`, audited under `role` instead of the person's staff role (an
/// owner's own request: the self-service marker).
pub async fn request_as(
    ctx: &Ctx,
    claim: Claimed<'_>,
    new: NewApproval,
    role: Option<&str>,
) -> Result<Response, AppError> {
    let id = crate::approvals::new_id();
    let mut base = ctx.intent(AuditAction::ApprovalRequest);
    if let Some(role) = role {
        base.role = role.to_string();
    }
    let intent = Intent {
        target_user_id: Some(new.user_id.clone()),
        target_user_email: new.user_email.clone(),
        key_id: new.key_id.clone(),
        // An allowlist request names its entry: it gives access too.
        key_name: new.key_name.clone().or_else(|| new.subnet.clone()),
        requested_expiry: new.date_expire.clone(),
        api_enabled: (new.action == ApprovalAction::ApiAccessOn).then_some(true),
        reason: new.reason.clone(),
        requested_by: Some(new.requested_by.clone()),
        approval_id: Some(id.clone()),
        ..base
    };
    let approvals = &ctx.state.approvals;
    let approval = claim
        .store(
            intent,
            async { approvals.create(&id, &new).await.map_err(AppError::store) },
            |a| Some(a.id.clone()),
        )
        .await?;
    tracing::info!(approval = %approval.id, action = approval.action.as_str(), "approval requested");
    metrics::counter!("keydesk_approvals_total", "event" => "request").increment(1);
    announce_request(&ctx.state, &approval);
    let view = ApprovalRequestedView {
        layout: ctx.layout().await,
        approval,
    };
    Ok(render(StatusCode::ACCEPTED, &view))
}

/// The request for a new key (create, rotate or claim link) of `user`.
pub fn key_request(
    ctx: &Ctx,
    action: ApprovalAction,
    facts: &crate::write::Facts,
    replaces: Option<&VultrId>,
    body: NewApiKey,
    reason: Option<String>,
    why: String,
) -> NewApproval {
    NewApproval {
        action,
        user_id: facts.user.id.clone(),
        user_email: facts.user.email.clone(),
        key_id: replaces.map(VultrId::to_string),
        key_name: Some(body.name),
        expire: body.expire,
        date_expire: body.date_expire,
        reason,
        why,
        requested_by: ctx.who.email.clone(),
        subnet: None,
        decided: Some(facts.decided(&ctx.state)),
    }
}

/// Tells the approvers of a new request (in the background).
fn announce_request(state: &AppState, a: &Approval) {
    let link = state.link(&paths::approval(&a.id));
    let subject = format!(
        "Approval needed: {} wants to {}",
        a.requested_by,
        a.action.words()
    );
    let text = format!(
        "{} asks to {} for {} ({}). Why it waits: {}. Reason: {}.\nDecide: {}",
        a.requested_by,
        a.action.words(),
        a.user_email.as_deref().unwrap_or(&a.user_id),
        a.key_name.as_deref().unwrap_or("-"),
        a.why,
        a.reason.as_deref().unwrap_or("-"),
        link
    );
    let to: Vec<String> = state
        .approvers
        .emails()
        .into_iter()
        .filter(|e| !a.is_requester(e))
        .collect();
    let notifier = state.notifier.clone();
    tokio::spawn(async move { notifier.announce(&subject, &text, &to).await });
}

/// Tells the requester of a decision (in the background).
fn announce_decision(state: &AppState, a: &Approval, approved: bool) {
    let link = state.link(&paths::approval(&a.id));
    let verb = if approved { "approved" } else { "denied" };
    let subject = format!("Your request to {} was {verb}", a.action.words());
    let text = format!(
        "{} {verb} your request to {} for {}.{}\n{}",
        a.decided_by.as_deref().unwrap_or("An approver"),
        a.action.words(),
        a.user_email.as_deref().unwrap_or(&a.user_id),
        if approved {
            " Open it and press \"Do it now\"."
        } else {
            ""
        },
        link
    );
    let to = vec![a.requested_by.clone()];
    let notifier = state.notifier.clone();
    tokio::spawn(async move { notifier.announce(&subject, &text, &to).await });
}

/// The approvals' own sweep (expiry, interrupted executions), before pages.
pub async fn expire_due(state: &AppState) {
    state.approvals.sweep(&state.audit).await;
}

/// The request `raw` names, expired first if past its time; or 404.
async fn current(state: &AppState, raw: &str) -> Result<Approval, AppError> {
    let missing = || AppError::NotFound("There is no such approval request.".into());
    if !plausible_id(raw) {
        return Err(missing());
    }
    let get = || async {
        state
            .approvals
            .get(raw)
            .await
            .map_err(AppError::store)?
            .ok_or_else(missing)
    };
    let a = get().await?;
    let now = state.db.now_ms().await.map_err(AppError::store)?;
    let open = matches!(a.state, ApprovalState::Pending | ApprovalState::Approved);
    if open && a.expires_ms <= now {
        expire_due(state).await;
        return get().await;
    }
    Ok(a)
}

/// Why a request in its state cannot take the step asked for.
fn closed(a: &Approval) -> AppError {
    match a.state {
        ApprovalState::Expired => AppError::Gone(
            "This request has expired without being carried out. Ask again if it is still needed.".into(),
        ),
        ApprovalState::Denied => AppError::Conflict(format!(
            "This request was denied by {}: it cannot be carried out.",
            a.decided_by.as_deref().unwrap_or("an approver")
        )),
        ApprovalState::Done | ApprovalState::Executing => AppError::Conflict(
            "This request was already carried out (or is being carried out now): it acts only once.".into(),
        ),
        ApprovalState::Approved => AppError::Conflict(format!(
            "This request was already approved by {}.",
            a.decided_by.as_deref().unwrap_or("an approver")
        )),
        ApprovalState::Pending => AppError::Conflict(
            "This request is still waiting for an approver.".into(),
        ),
        ApprovalState::Withdrawn => AppError::Gone(
            "This request was withdrawn by the person who asked: it cannot be carried out.".into(),
        ),
        ApprovalState::Newer => AppError::Conflict(format!(
            "This request is in a state a newer keydesk wrote ({}): act on it from a replica running that release.",
            crate::audit::NEWER
        )),
    }
}

#[derive(Deserialize, Default)]
pub struct ApprovalsQuery {
    state: Option<String>,
}

#[derive(Template)]
#[template(path = "approvals/list.html")]
pub struct ApprovalsListView {
    pub layout: Layout,
    pub approvals: Vec<Approval>,
    pub state: String,
    pub states: [ApprovalState; 7],
}

/// `GET /approvals`: requests, newest first, by state.
pub async fn approvals_list(
    Staff(_): Staff,
    ctx: Ctx,
    Query(q): Query<ApprovalsQuery>,
) -> Result<Response, AppError> {
    expire_due(&ctx.state).await;
    let state = q
        .state
        .filter(|s| !s.is_empty())
        .map(|s| {
            ApprovalState::ALL
                .into_iter()
                .find(|a| a.as_str() == s)
                .ok_or_else(|| AppError::BadRequest("Unknown request state.".into()))
        })
        .transpose()?;
    let approvals = ctx
        .state
        .approvals
        .list(state, 500)
        .await
        .map_err(AppError::store)?;
    let view = ApprovalsListView {
        layout: ctx.layout().await,
        approvals,
        state: state.map(|s| s.as_str().to_string()).unwrap_or_default(),
        states: ApprovalState::ALL,
    };
    Ok(render(StatusCode::OK, &view))
}

#[derive(Template)]
#[template(path = "approvals/show.html")]
pub struct ApprovalShowView {
    pub layout: Layout,
    pub approval: Approval,
    /// This person may decide it (an approver, not the requester, pending).
    pub can_decide: bool,
    pub is_approver: bool,
    pub is_requester: bool,
    /// Tokens of the approve, deny and execute forms, when shown.
    pub approve_token: Option<String>,
    pub deny_token: Option<String>,
    pub execute_token: Option<String>,
    /// The requester's "Withdraw" form, while it is open.
    pub withdraw_token: Option<String>,
    pub notice: Option<String>,
    /// For a request that gives keys (or access back): what they can do and
    /// from where, as Vultr reports it now.
    pub capability: Option<crate::powers::Capability>,
    /// Whether it makes a key or gives access: what was decided is shown.
    pub gives_keys: bool,
}

async fn show_page(
    ctx: &Ctx,
    a: Approval,
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let is_approver = ctx.state.approvers.includes(&ctx.who);
    let is_requester = a.is_requester(&ctx.who.email);
    // A kind only a newer release knows: shown, with no form to act on it.
    let known = a.action != ApprovalAction::Newer;
    let notice = notice.or_else(|| {
        (!known).then(|| {
            "This request is of a kind a newer keydesk made: decide it or carry it out from a replica running that release.".to_string()
        })
    });
    let can_decide = known
        && is_approver
        && !is_requester
        && !a.is_recipient(&ctx.who.email)
        && a.state == ApprovalState::Pending;
    let may_execute = ctx.who.can_write() || owner_may_execute(&ctx.state, &a, &ctx.who.email);
    let can_execute = known && is_requester && may_execute && a.state == ApprovalState::Approved;
    let (approve_token, deny_token) = if can_decide {
        (
            Some(ctx.issue(Scope::ApprovalDecide(&a.id)).await?),
            Some(ctx.issue(Scope::ApprovalDecide(&a.id)).await?),
        )
    } else {
        (None, None)
    };
    let execute_token = if can_execute {
        Some(ctx.issue(Scope::ApprovalExecute(&a.id)).await?)
    } else {
        None
    };
    let open = matches!(a.state, ApprovalState::Pending | ApprovalState::Approved);
    let withdraw_token = if known && is_requester && open {
        Some(ctx.issue(Scope::ApprovalWithdraw(&a.id)).await?)
    } else {
        None
    };
    let gives_keys = matches!(
        a.action,
        ApprovalAction::KeyCreate
            | ApprovalAction::KeyRotate
            | ApprovalAction::GrantCreate
            | ApprovalAction::ApiAccessOn
    );
    let capability = match VultrId::parse(&a.user_id) {
        Ok(id) if gives_keys => super::capability::shown(&ctx.state, &id).await.ok(),
        _ => None,
    };
    let view = ApprovalShowView {
        capability,
        gives_keys,
        layout: ctx.layout().await,
        withdraw_token,
        approval: a,
        can_decide,
        is_approver,
        is_requester,
        approve_token,
        deny_token,
        execute_token,
        notice,
    };
    Ok(render(status, &view))
}

/// `GET /approvals/{id}`: one request, with what this person may do with
/// it. Staff see every request; an owner without a role only their own.
pub async fn approval_show(ctx: Ctx, Path(raw): Path<String>) -> Result<Response, AppError> {
    let a = current(&ctx.state, &raw).await?;
    if ctx.who.role == Role::Claimant && !a.is_requester(&ctx.who.email) {
        return Err(refuse(
            &ctx,
            &a,
            "Only staff and the person who asked can see a request",
        )
        .await);
    }
    show_page(&ctx, a, None, StatusCode::OK).await
}

/// An owner's own request for their own key, which they may carry out
/// themselves once approved, without a staff role, while self-service is on.
pub fn owner_may_execute(state: &AppState, a: &Approval, email: &str) -> bool {
    state.self_service.enabled()
        && a.is_requester(email)
        && a.is_recipient(email)
        && matches!(
            a.action,
            ApprovalAction::KeyCreate | ApprovalAction::KeyRotate
        )
}

#[derive(Deserialize, Default)]
pub struct DecisionInput {
    form_token: Option<String>,
    comment: Option<String>,
}

/// Audits a refused attempt to decide or run a request, then the 403.
async fn refuse(ctx: &Ctx, a: &Approval, why: &str) -> AppError {
    let intent = Intent {
        target_user_id: Some(a.user_id.clone()),
        approval_id: Some(a.id.clone()),
        reason: Some(why.to_string()),
        ..ctx.intent(AuditAction::AccessDenied)
    };
    ctx.state.audit.record(&intent, Outcome::Failed).await;
    AppError::Forbidden(format!("{why}. Nothing was changed."))
}

/// The request `raw` for a step only its requester may take (withdraw,
/// execute), refused for anyone else and outside `states`.
async fn requester_step(
    ctx: &Ctx,
    raw: &str,
    what: &str,
    states: &[ApprovalState],
) -> Result<Approval, AppError> {
    let a = current(&ctx.state, raw).await?;
    if !a.is_requester(&ctx.who.email) {
        let why = format!("Only the person who asked can {what}");
        return Err(refuse(ctx, &a, &why).await);
    }
    if !states.contains(&a.state) {
        return Err(closed(&a));
    }
    decide::known_kind(&a)?;
    Ok(a)
}

/// Claims the form of a step on request `a`: a replay answers with the
/// request's state now, a refused form with the request's page (403).
async fn claim_step<'c>(
    ctx: &'c Ctx,
    a: &Approval,
    scope: Scope<'_>,
    token: Option<&str>,
) -> Result<Result<Claimed<'c>, Response>, AppError> {
    let user = VultrId::parse(&a.user_id)?;
    match ctx.claim(token, scope, &user, None).await {
        Ok(claim) => Ok(Ok(claim)),
        Err(Refusal::Replay { .. }) => Err(closed(&current(&ctx.state, &a.id).await?)),
        Err(Refusal::Unavailable(e)) => Err(e),
        Err(Refusal::Refused) => {
            let notice = "That form has expired or was not issued to you. Try again.";
            let page = show_page(ctx, a.clone(), Some(notice.into()), StatusCode::FORBIDDEN);
            Ok(Err(page.await?))
        }
    }
}
