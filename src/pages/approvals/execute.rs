//! `POST /approvals/{id}/execute`: carrying out an approved request, once,
//! through the same audited write as the direct action.

use axum::Form;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::{
    DecisionInput, claim_step, closed, current, owner_may_execute, refuse, requester_step,
};
use crate::approvals::{Approval, ApprovalAction, ApprovalState};
use crate::audit::{AuditAction, Intent, Outcome};
use crate::error::AppError;
use crate::grants::NewGrant;
use crate::idempotency::Scope;
use crate::ids::VultrId;
use crate::pages::grants::{GrantCreatedView, mail_link};
use crate::pages::keys::{reveal, reveal_to_owner};
use crate::pages::{paths, render};
use crate::vultr::NewApiKey;
use crate::write::{Claimed, Ctx, Facts};

/// `POST /approvals/{id}/execute`: the requester carries out an approved
/// request, once: an operator, or an owner their own key's request. A key is
/// revealed to them alone.
pub async fn approval_execute(
    ctx: Ctx,
    Path(raw): Path<String>,
    Form(input): Form<DecisionInput>,
) -> Result<Response, AppError> {
    let what = "carry out an approved request";
    let a = requester_step(&ctx, &raw, what, &[ApprovalState::Approved]).await?;
    if !ctx.who.can_write() && !owner_may_execute(&ctx.state, &a, &ctx.who.email) {
        let why = "Only operators, or an owner for their own key while self-service is on, can carry out a request";
        return Err(refuse(&ctx, &a, why).await);
    }
    let user_id = VultrId::parse(&a.user_id)?;
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let claim = match claim_step(&ctx, &a, Scope::ApprovalExecute(&a.id), token).await? {
        Ok(claim) => claim,
        Err(page) => return Ok(page),
    };
    // The one conditional start: a second or concurrent execute acts on nothing.
    let won = claim
        .prepare(
            ctx.state
                .approvals
                .begin_execute(&a.id, &ctx.who.email)
                .await,
        )
        .await?;
    if !won {
        claim.release().await;
        return Err(closed(&current(&ctx.state, &raw).await?));
    }
    // Held while it runs: if this replica stops, another settles it within the lease.
    let _lease = ctx
        .state
        .leases
        .hold(&crate::leases::approval_job(&a.id))
        .await;
    let approvals = &ctx.state.approvals;
    match carry_out(&ctx, claim, &a, &user_id).await {
        Ok((page, result_id)) => {
            if let Err(e) = approvals.done(&a.id, result_id.as_deref()).await {
                tracing::error!(error = %e, "approval not marked done");
            }
            metrics::counter!("keydesk_approvals_total", "event" => "execute").increment(1);
            Ok(page)
        }
        Err(e) => {
            // Unknown: it may have happened, so never again. A changed
            // recipient: the approval no longer covers it. Otherwise retry.
            let marked = match e {
                AppError::OutcomeUnknown { .. } => approvals.done(&a.id, None).await,
                AppError::Gone(_) => approvals.void(&a.id).await,
                // Refused or undone for an offboarding: it covers a leaver no more.
                AppError::Held(..) => approvals.void(&a.id).await,
                _ => approvals.reopen(&a.id).await,
            };
            if let Err(db) = marked {
                tracing::error!(error = %db, "approval state after a failed execution not written");
            }
            Err(e)
        }
    }
}

/// Runs the stored parameters through the usual audited write; the page
/// that follows and what it made.
async fn carry_out(
    ctx: &Ctx,
    claim: Claimed<'_>,
    a: &Approval,
    user_id: &VultrId,
) -> Result<(Response, Option<String>), AppError> {
    let state = &ctx.state;
    // Vultr's word now, not a cached one: the approver decided for this email.
    state.vultr.invalidate_user(user_id);
    // An owner carrying out their own key's request: the self-service marker.
    let own = a.is_recipient(&ctx.who.email);
    let stamp = |i: Intent| Intent {
        role: if own
            && matches!(
                a.action,
                ApprovalAction::KeyCreate | ApprovalAction::KeyRotate
            ) {
            crate::pages::me::SELF_SERVICE.into()
        } else {
            i.role
        },
        reason: a.reason.clone(),
        requested_by: Some(a.requested_by.clone()),
        approved_by: a.decided_by.clone(),
        approval_id: Some(a.id.clone()),
        ..i
    };
    let body = NewApiKey {
        name: a.key_name.clone().unwrap_or_default(),
        expire: a.expire,
        date_expire: a.date_expire.clone(),
    };
    match a.action {
        ApprovalAction::KeyCreate | ApprovalAction::KeyRotate => {
            let facts = approved_facts(ctx, &claim, a, user_id).await?;
            let old = match (&a.action, &a.key_id) {
                (ApprovalAction::KeyRotate, Some(k)) => {
                    let key_id = VultrId::parse(k)?;
                    let (_, old) = claim
                        .prepare(state.vultr.get_user_and_key(user_id, &key_id).await)
                        .await?;
                    Some(old)
                }
                _ => None,
            };
            let Facts { user, cap } = facts;
            let action = if old.is_some() {
                AuditAction::KeyRotate
            } else {
                AuditAction::KeyCreate
            };
            let intent = stamp(Intent {
                target_user_id: Some(user.id.clone()),
                target_user_email: user.email.clone(),
                key_name: Some(body.name.clone()),
                requested_expiry: body.date_expire.clone(),
                related_key_id: old.as_ref().map(|k| k.id.clone()),
                ..ctx.intent(action)
            });
            let intent = crate::pages::capability::stamp(intent, &cap);
            let call = state.vultr.create_key(user_id, &body);
            let created = claim.execute(intent, call, |k| Some(k.id.clone())).await?;
            let id = created.id.clone();
            let page = if own {
                reveal_to_owner(ctx, user, created, old).await
            } else {
                reveal(ctx, user, created, old).await
            };
            Ok((page, Some(id)))
        }
        ApprovalAction::GrantCreate => {
            let facts = approved_facts(ctx, &claim, a, user_id).await?;
            let decided = facts.decided(state);
            let user = facts.user;
            let Some(email) = user.email.clone().filter(|e| !e.trim().is_empty()) else {
                claim.release().await;
                return Err(AppError::BadRequest(
                    "This Vultr user has no email address any more, so no one could claim a link."
                        .into(),
                ));
            };
            let new = NewGrant {
                user_id: a.user_id.clone(),
                user_email: email.clone(),
                key_name: body.name.clone(),
                date_expire: body.date_expire.clone(),
                reason: a.reason.clone(),
                created_by: a.requested_by.clone(),
                decided,
            };
            let intent = stamp(Intent {
                target_user_id: Some(a.user_id.clone()),
                target_user_email: Some(email),
                key_name: Some(body.name.clone()),
                requested_expiry: body.date_expire.clone(),
                ..ctx.intent(AuditAction::GrantCreate)
            });
            let grant = claim
                .store(
                    intent,
                    async { state.grants.create(&new).await.map_err(AppError::store) },
                    |g| Some(g.id.clone()),
                )
                .await?;
            let link = state.link(&paths::claim(&grant.id));
            let mailed = mail_link(state, &grant, &link).await;
            let id = grant.id.clone();
            let view = GrantCreatedView {
                layout: ctx.layout().await,
                link,
                grant,
                mailed,
            };
            Ok((render(StatusCode::OK, &view), Some(id)))
        }
        ApprovalAction::Reinstate => {
            let user = claim.prepare(state.vultr.get_user(user_id).await).await?;
            same_recipient(ctx, &claim, a, &user).await?;
            let intent = stamp(Intent {
                target_user_id: Some(a.user_id.clone()),
                target_user_email: user.email.clone(),
                ..ctx.intent(AuditAction::UserReinstate)
            });
            let lift = crate::pages::reinstate::lift_hold(state, &a.user_id);
            claim.store(intent, lift, |_| None).await?;
            ctx.flash(
                "ok",
                "Reinstated, as approved: keydesk no longer refuses this user. API access is still off.".into(),
            )
            .await;
            Ok((Redirect::to(&paths::user(&a.user_id)).into_response(), None))
        }
        ApprovalAction::AllowlistAdd => {
            let (subnet, size) = a
                .subnet
                .as_deref()
                .and_then(|c| c.split_once('/'))
                .unwrap_or_default();
            let net = match crate::allowlist::check(subnet, size) {
                Ok(net) => net,
                Err(e) => {
                    claim.release().await;
                    return Err(AppError::BadRequest(e));
                }
            };
            let facts = approved_facts(ctx, &claim, a, user_id).await?;
            let Facts { user, cap } = facts;
            let intent = stamp(Intent {
                target_user_id: Some(a.user_id.clone()),
                target_user_email: user.email.clone(),
                key_name: Some(net.to_string()),
                ..ctx.intent(AuditAction::UserAllowlistAdd)
            });
            let intent = crate::pages::capability::stamp(intent, &cap);
            let call = state.vultr.allowlist_add(user_id, &net);
            claim.execute(intent, call, |_| None).await?;
            ctx.flash(
                "ok",
                format!("Added {net} to the allowlist, as approved: keys of this user now also work from there."),
            )
            .await;
            Ok((Redirect::to(&paths::user(&a.user_id)).into_response(), None))
        }
        // Refused before it began (`known_kind`); never carried out here.
        ApprovalAction::Newer => {
            claim.release().await;
            Err(AppError::Conflict(
                "This request is of a kind a newer keydesk made: carry it out from a replica running that release.".into(),
            ))
        }
        ApprovalAction::ApiAccessOn => {
            let facts = approved_facts(ctx, &claim, a, user_id).await?;
            let Facts { user, cap } = facts;
            let intent = stamp(Intent {
                target_user_id: Some(a.user_id.clone()),
                target_user_email: user.email.clone(),
                api_enabled: Some(true),
                ..ctx.intent(AuditAction::UserApiAccess)
            });
            let intent = crate::pages::capability::stamp(intent, &cap);
            let call = state.vultr.set_api_enabled(user_id, true);
            claim.execute(intent, call, |_| None).await?;
            ctx.flash(
                "ok",
                "API access switched on, as approved: the user's keys work again.".into(),
            )
            .await;
            Ok((Redirect::to(&paths::user(&a.user_id)).into_response(), None))
        }
    }
}

/// The facts read now, for the person the approver saw and no stronger than
/// what was approved (410 otherwise, the request void).
async fn approved_facts(
    ctx: &Ctx,
    claim: &Claimed<'_>,
    a: &Approval,
    user_id: &VultrId,
) -> Result<Facts, AppError> {
    let facts = claim.facts(user_id).await?;
    same_recipient(ctx, claim, a, &facts.user).await?;
    as_approved(claim, a, &facts).await?;
    Ok(facts)
}

/// Refuses (form given back, audited, 410: the request is void) a key or
/// access stronger than what the approver approved: the user's powers or
/// reach grew since the request was made.
async fn as_approved(claim: &Claimed<'_>, a: &Approval, facts: &Facts) -> Result<(), AppError> {
    let refusal = Intent {
        target_user_id: Some(a.user_id.clone()),
        target_user_email: facts.user.email.clone(),
        approval_id: Some(a.id.clone()),
        ..Intent::system(AuditAction::ApprovalWithdraw)
    };
    match claim.within(a.decided().as_ref(), facts, refusal).await {
        Ok(()) => Ok(()),
        Err(grown) => Err(AppError::Gone(format!(
            "This user's powers changed since the request was approved ({grown}), so the approval no longer covers the key and was voided. Nothing was sent to Vultr; ask again with a new request."
        ))),
    }
}

/// Refuses (form given back, audited, 410) when the Vultr user's email is
/// no longer the one the approver saw: the approval covered that person.
async fn same_recipient(
    ctx: &Ctx,
    claim: &Claimed<'_>,
    a: &Approval,
    user: &crate::vultr::User,
) -> Result<(), AppError> {
    let now = user.email.as_deref().map(crate::identity::normalize_email);
    let then = a
        .user_email
        .as_deref()
        .map(crate::identity::normalize_email);
    if now == then {
        return Ok(());
    }
    claim.release_ref().await;
    let intent = Intent {
        target_user_id: Some(a.user_id.clone()),
        target_user_email: user.email.clone(),
        approval_id: Some(a.id.clone()),
        reason: Some("the Vultr user's email changed since the request was approved".into()),
        ..Intent::system(AuditAction::ApprovalWithdraw)
    };
    ctx.state.audit.record(&intent, Outcome::Failed).await;
    Err(AppError::Gone(format!(
        "The Vultr user's email is now {} but the approver saw {}: this approval no longer covers it and was withdrawn. Nothing was sent to Vultr; ask again with a new request.",
        user.email.as_deref().unwrap_or("(none)"),
        a.user_email.as_deref().unwrap_or("(none)")
    )))
}
