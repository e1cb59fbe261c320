//! `POST /approvals/{id}/approve|deny`: the one final decision, by an
//! approver who is neither the requester nor the recipient; and
//! `POST /approvals/{id}/withdraw`: the requester takes a request back.

use axum::Form;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::{
    DecisionInput, announce_decision, claim_step, closed, current, refuse, requester_step,
    show_page,
};
use crate::approvals::{Approval, ApprovalAction, ApprovalState};
use crate::audit::{AuditAction, Intent};
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::identity::Staff;
use crate::pages::paths;
use crate::policy::check_reason;
use crate::write::Ctx;

/// `POST /approvals/{id}/approve`.
pub async fn approval_approve(
    Staff(_): Staff,
    ctx: Ctx,
    Path(raw): Path<String>,
    Form(input): Form<DecisionInput>,
) -> Result<Response, AppError> {
    decide(ctx, raw, input, true).await
}

/// `POST /approvals/{id}/deny`.
pub async fn approval_deny(
    Staff(_): Staff,
    ctx: Ctx,
    Path(raw): Path<String>,
    Form(input): Form<DecisionInput>,
) -> Result<Response, AppError> {
    decide(ctx, raw, input, false).await
}

/// The one final decision, by an approver who is not the requester.
async fn decide(
    ctx: Ctx,
    raw: String,
    input: DecisionInput,
    approve: bool,
) -> Result<Response, AppError> {
    let a = current(&ctx.state, &raw).await?;
    if !ctx.state.approvers.includes(&ctx.who) {
        return Err(refuse(
            &ctx,
            &a,
            "Only approvers (KEYDESK_APPROVERS) can decide requests",
        )
        .await);
    }
    if a.is_requester(&ctx.who.email) {
        return Err(refuse(&ctx, &a, "Nobody can decide their own request").await);
    }
    if a.is_recipient(&ctx.who.email) {
        let why = "Nobody can approve a request whose key or access would reach themselves";
        return Err(refuse(&ctx, &a, why).await);
    }
    if a.state != ApprovalState::Pending {
        return Err(closed(&a));
    }
    known_kind(&a)?;
    let comment = match check_reason(input.comment.as_deref(), &Default::default()) {
        Ok(c) => c,
        Err(e) => return show_page(&ctx, a, Some(e), StatusCode::UNPROCESSABLE_ENTITY).await,
    };
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let claim = match claim_step(&ctx, &a, Scope::ApprovalDecide(&a.id), token).await? {
        Ok(claim) => claim,
        Err(page) => return Ok(page),
    };
    let action = if approve {
        AuditAction::ApprovalApprove
    } else {
        AuditAction::ApprovalDeny
    };
    let intent = Intent {
        target_user_id: Some(a.user_id.clone()),
        target_user_email: a.user_email.clone(),
        key_id: a.key_id.clone(),
        key_name: a.key_name.clone(),
        requested_expiry: a.date_expire.clone(),
        reason: comment.clone(),
        requested_by: Some(a.requested_by.clone()),
        approved_by: approve.then(|| ctx.who.email.clone()),
        approval_id: Some(a.id.clone()),
        ..ctx.intent(action)
    };
    let state = &ctx.state;
    let who = ctx.who.email.clone();
    let change = async {
        match state
            .approvals
            .decide(&a.id, approve, &who, comment.as_deref())
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(closed(&current(state, &raw).await?)),
            Err(e) => Err(AppError::store(e)),
        }
    };
    claim.store(intent, change, |_| None).await?;
    let event = if approve { "approve" } else { "deny" };
    metrics::counter!("keydesk_approvals_total", "event" => event).increment(1);
    let decided = current(state, &raw).await?;
    announce_decision(state, &decided, approve);
    let text = if approve {
        format!("Approved. {} can now carry it out.", decided.requested_by)
    } else {
        "Denied. The request can no longer be carried out.".to_string()
    };
    ctx.flash("ok", text).await;
    Ok(Redirect::to(&paths::approval(&decided.id)).into_response())
}

/// `POST /approvals/{id}/withdraw`: the requester takes a pending or
/// approved request back; it can then never be carried out.
pub async fn approval_withdraw(
    ctx: Ctx,
    Path(raw): Path<String>,
    Form(input): Form<DecisionInput>,
) -> Result<Response, AppError> {
    let open = [ApprovalState::Pending, ApprovalState::Approved];
    let a = requester_step(&ctx, &raw, "withdraw a request", &open).await?;
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let claim = match claim_step(&ctx, &a, Scope::ApprovalWithdraw(&a.id), token).await? {
        Ok(claim) => claim,
        Err(page) => return Ok(page),
    };
    let intent = a.about(ctx.intent(AuditAction::ApprovalWithdraw));
    let state = &ctx.state;
    let who = ctx.who.email.clone();
    let change = async {
        match state.approvals.withdraw(&a.id, &who).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(closed(&current(state, &raw).await?)),
            Err(e) => Err(AppError::store(e)),
        }
    };
    claim.store(intent, change, |_| None).await?;
    ctx.flash(
        "ok",
        "Request withdrawn: it can no longer be carried out.".into(),
    )
    .await;
    Ok(Redirect::to(&paths::approval(&a.id)).into_response())
}

/// A request of a kind only a newer release knows is shown here, never
/// decided or carried out: that release's replicas do it.
pub(super) fn known_kind(a: &Approval) -> Result<(), AppError> {
    if a.action == ApprovalAction::Newer {
        return Err(AppError::Conflict(format!(
            "This request is of a kind a newer keydesk made ({}): decide it or carry it out from a replica running that release. Nothing was changed.",
            crate::audit::NEWER
        )));
    }
    Ok(())
}
