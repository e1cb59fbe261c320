//! `GET|POST /claim/{grant}`: the owner's side of a claim link. Only the
//! person the link is addressed to (their SSO identity equals the Vultr
//! user's email, then and now) may open it; anyone else, operators
//! included, gets 403 and learns nothing about the key. The GET has no side
//! effect (mail scanners fetch links); the POST creates the key upstream and
//! reveals it once, to the owner alone.

use askama::Template;
use axum::Form;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::grants::{closed, expire_due, find};
use super::keys::{Claimed, reveal_to};
use super::{Layout, render};
use crate::audit::{AuditAction, Intent, Outcome};
use crate::error::AppError;
use crate::grants::{Grant, GrantState};
use crate::idempotency::Scope;
use crate::ids::VultrId;
use crate::vultr::NewApiKey;
use crate::write::{Ctx, Refusal};

#[derive(Template)]
#[template(path = "grants/claim.html")]
pub struct ClaimView {
    pub layout: Layout,
    pub grant: Grant,
    pub token: String,
    pub notice: Option<String>,
    /// What the key will be able to do and from where (none when unreadable).
    pub capability: Option<crate::powers::Capability>,
}

/// Refuses anyone but the grant's owner, audited, saying nothing about it.
async fn owner_only(ctx: &Ctx, grant: &Grant) -> Result<(), AppError> {
    if grant.is_owner(&ctx.who.email) {
        return Ok(());
    }
    let intent = Intent {
        grant_id: Some(grant.id.clone()),
        reason: Some("claim link addressed to someone else".into()),
        ..ctx.intent(AuditAction::AccessDenied)
    };
    ctx.state.audit.record(&intent, Outcome::Failed).await;
    Err(AppError::Forbidden(format!(
        "This claim link is not addressed to {}. Only the person it was made for can open it, signed in as themselves.",
        ctx.who.email
    )))
}

/// The grant, for its owner, with its state brought up to date: expired if
/// past its time, and a lost claim reconciled from the user's key list.
async fn current(ctx: &Ctx, raw: &str) -> Result<(Grant, VultrId), AppError> {
    let mut grant = find(&ctx.state, raw).await?;
    owner_only(ctx, &grant).await?;
    let user = VultrId::parse(&grant.user_id)?;
    let now = ctx.state.db.now_ms().await.map_err(AppError::store)?;
    let overdue = grant.state == GrantState::Pending && grant.expires_ms <= now;
    if overdue || grant.state == GrantState::Claiming {
        expire_due(&ctx.state).await;
        grant = find(&ctx.state, raw).await?;
    }
    if grant.state == GrantState::Unknown {
        let keys = ctx.state.vultr.list_keys(&user).await?;
        crate::reconcile::claims::reconcile(&ctx.state.grants, &ctx.state.audit, &grant, &keys)
            .await;
        grant = find(&ctx.state, raw).await?;
    }
    Ok((grant, user))
}

async fn claim_page(
    ctx: &Ctx,
    grant: Grant,
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let capability = match VultrId::parse(&grant.user_id) {
        Ok(id) => super::capability::shown(&ctx.state, &id).await.ok(),
        Err(_) => None,
    };
    let view = ClaimView {
        capability,
        layout: ctx.layout().await,
        token: ctx.issue(Scope::GrantClaim(&grant.id)).await?,
        grant,
        notice,
    };
    // `no-store` comes from the default layer; not `no_store()`, whose
    // no-referrer would make this form post `Origin: null`.
    Ok(render(status, &view))
}

/// The owner's confirmation: who granted what, and a "Create my key" form.
#[tracing::instrument(skip_all)]
pub async fn claim_show(ctx: Ctx, Path(raw): Path<String>) -> Result<Response, AppError> {
    let (grant, _) = current(&ctx, &raw).await?;
    if grant.state != GrantState::Pending {
        return Err(closed(&grant));
    }
    claim_page(&ctx, grant, None, StatusCode::OK).await
}

#[derive(Deserialize, Default)]
pub struct ClaimInput {
    form_token: Option<String>,
}

/// Creates the key for its owner and reveals it once.
#[tracing::instrument(skip_all)]
pub async fn claim_submit(
    ctx: Ctx,
    Path(raw): Path<String>,
    Form(input): Form<ClaimInput>,
) -> Result<Response, AppError> {
    let (grant, user_id) = current(&ctx, &raw).await?;
    if grant.state != GrantState::Pending {
        return Err(closed(&grant));
    }
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let scope = Scope::GrantClaim(&grant.id);
    let claim = match ctx.claim(token, scope, &user_id, None).await {
        Ok(claim) => claim,
        Err(Refusal::Replay { .. }) => {
            let now = find(&ctx.state, &raw).await?;
            return Err(closed(&now));
        }
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => {
            let notice =
                "That form has expired or was opened in another session. Press the button again.";
            return claim_page(&ctx, grant, Some(notice.into()), StatusCode::FORBIDDEN).await;
        }
    };
    // Vultr's word now, not a cached one: the owner must still be this user.
    let facts = claim.facts(&user_id).await?;
    let user = &facts.user;
    let still_theirs = user
        .email
        .as_deref()
        .is_some_and(|e| grant.is_owner(e) && grant.is_owner(&ctx.who.email));
    if !still_theirs {
        claim.release().await;
        let intent = Intent {
            target_user_id: Some(grant.user_id.clone()),
            grant_id: Some(grant.id.clone()),
            reason: Some("the Vultr user's email changed since the link was made".into()),
            ..ctx.intent(AuditAction::AccessDenied)
        };
        ctx.state.audit.record(&intent, Outcome::Failed).await;
        return Err(AppError::Forbidden(
            "The Vultr account this link was made for no longer has your email address, so keydesk refused to create the key. Ask an operator for a new link.".into(),
        ));
    }
    // The rules again, with the facts read now: a key stronger than the
    // link was decided on is refused, and the link withdrawn.
    let refusal = Intent {
        target_user_id: Some(grant.user_id.clone()),
        target_user_email: user.email.clone(),
        grant_id: Some(grant.id.clone()),
        key_name: Some(grant.key_name.clone()),
        ..Intent::system(AuditAction::GrantRevoke)
    };
    if let Err(grown) = claim
        .within(grant.decided().as_ref(), &facts, refusal)
        .await
    {
        if let Err(e) = ctx.state.grants.withdraw(&grant, "keydesk").await {
            tracing::error!(error = %e, "outgrown claim link not withdrawn");
        }
        return Err(AppError::PowersChanged(format!(
            "This user's powers changed since the link was made; ask for a new link. What changed: {grown}. keydesk withdrew this link and sent nothing to Vultr."
        )));
    }
    // The one conditional claim: a second or concurrent one acts on nothing.
    let won = claim
        .prepare(
            ctx.state
                .grants
                .begin_claim(&grant.id, &ctx.who.email)
                .await,
        )
        .await?;
    if !won {
        claim.release().await;
        let now = find(&ctx.state, &raw).await?;
        return Err(closed(&now));
    }
    let body = NewApiKey {
        name: grant.vultr_key_name(),
        expire: grant.date_expire.is_some(),
        date_expire: grant.date_expire.clone(),
    };
    let intent = Intent {
        target_user_id: Some(grant.user_id.clone()),
        target_user_email: user.email.clone(),
        key_name: Some(body.name.clone()),
        requested_expiry: body.date_expire.clone(),
        reason: grant.reason.clone(),
        granted_by: Some(grant.created_by.clone()),
        grant_id: Some(grant.id.clone()),
        ..ctx.intent(AuditAction::GrantClaim)
    };
    let crate::write::Facts { user, cap } = facts;
    let intent = super::capability::stamp(intent, &cap);
    let call = ctx.state.vultr.create_key(&user_id, &body);
    let grants = &ctx.state.grants;
    match claim.execute(intent, call, |k| Some(k.id.clone())).await {
        Ok(created) => {
            if let Err(e) = grants
                .claimed(&grant.id, GrantState::Claiming, &created.id)
                .await
            {
                // The key exists and is audited; the grant stays "claiming".
                tracing::error!(error = %e, "claimed grant could not be marked");
            }
            metrics::counter!("keydesk_grants_total", "event" => "claim").increment(1);
            let from = Claimed {
                granted_by: grant.created_by.clone(),
                grant_id: grant.id.clone(),
            };
            Ok(reveal_to(&ctx, user, created, None, Some(from)).await)
        }
        Err(e) => {
            let marked = match e {
                AppError::OutcomeUnknown { .. } => grants.unknown(&grant.id).await,
                // Made and undone at once: the link ends here.
                AppError::Held(..) => grants.undone(&grant.id, None).await,
                _ => grants.reopen(&grant.id, GrantState::Claiming).await,
            };
            if let Err(db) = marked {
                tracing::error!(error = %db, "grant state after a failed claim not written");
            }
            Err(e)
        }
    }
}
