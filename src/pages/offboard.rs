//! `GET|POST /users/{id}/offboard`: a leaver (or a compromised account) in
//! one confirmed step. A hold goes on first, so no keydesk path gives the
//! user a key any more; then API access goes off, so no key works while the
//! rest runs; open claim links and approval requests are withdrawn; the key
//! list is read (after the brake, so nothing made meanwhile is missed) and
//! every key is revoked. Safe to repeat: a key already gone is not deleted
//! again. `GET|POST /users/{id}/reinstate` lifts the hold.

use askama::Template;
use axum::Form;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::paths::UserPath;
use super::{Layout, render};
use crate::audit::{AuditAction, Intent};
use crate::error::AppError;
use crate::grants::GrantState;
use crate::idempotency::Scope;
use crate::identity::Operator;
use crate::ids::VultrId;
use crate::policy::check_reason;
use crate::vultr::{ApiKey, User};
use crate::write::{CONFIRM_AGAIN, Confirmation, Ctx, Group, StepOutcome};

#[derive(Template)]
#[template(path = "users/offboard_confirm.html")]
pub struct OffboardConfirmView {
    pub layout: Layout,
    pub user: User,
    pub keys: Vec<ApiKey>,
    /// The ids listed, sent back so the POST can name keys created since.
    pub listed: String,
    pub token: String,
    pub notice: Option<String>,
    pub require_reason: bool,
}

async fn confirm_page(
    ctx: &Ctx,
    id: &VultrId,
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let (user, keys) = tokio::join!(ctx.state.vultr.get_user(id), ctx.state.vultr.list_keys(id));
    let keys = keys?;
    let view = OffboardConfirmView {
        layout: ctx.layout().await,
        user: user?,
        listed: keys
            .iter()
            .map(|k| k.id.as_str())
            .collect::<Vec<_>>()
            .join(","),
        keys,
        token: ctx.issue(Scope::Offboard(id)).await?,
        notice,
        require_reason: ctx.state.policy.require_reason,
    };
    Ok(render(status, &view))
}

/// The confirmation: every key of the user, and what will happen.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id))]
pub async fn offboard_confirm(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
) -> Result<Response, AppError> {
    confirm_page(&ctx, &id, None, StatusCode::OK).await
}

#[derive(Deserialize, Default)]
pub struct OffboardInput {
    form_token: Option<String>,
    reason: Option<String>,
    /// Comma-separated ids of the keys the confirmation listed.
    listed: Option<String>,
}

/// One key's line on the result page.
pub struct KeyResult {
    pub key: ApiKey,
    pub outcome: StepOutcome,
    /// Created after the confirmation page was shown (revoked all the same).
    pub newcomer: bool,
}

#[derive(Template)]
#[template(path = "users/offboard_result.html")]
pub struct OffboardResultView {
    pub layout: Layout,
    pub user: User,
    pub brake: StepOutcome,
    /// The offboarding hold placed in keydesk's store.
    pub hold: StepOutcome,
    /// Claim links and approval requests withdrawn.
    pub withdrawn: Vec<Withdrawn>,
    /// The key list (read after the brake) could not be read.
    pub list_error: Option<String>,
    pub keys: Vec<KeyResult>,
    pub group_id: i64,
    /// Keys that may still work (failed or unknown).
    pub live: usize,
    /// A fresh form to finish the job, when something is left.
    pub token: Option<String>,
    pub listed: String,
    pub require_reason: bool,
    pub reason: String,
}

/// An open claim link or approval request the offboarding withdrew.
pub struct Withdrawn {
    /// "claim link" or "approval request".
    pub kind: &'static str,
    pub id: String,
    pub what: String,
    pub outcome: StepOutcome,
}

/// Withdraws the user's pending claim links and their pending or approved
/// approval requests, one audited part each.
async fn withdraw_open(
    ctx: &Ctx,
    group: &Group,
    id: &VultrId,
    on_user: &impl Fn(AuditAction) -> Intent,
) -> Vec<Withdrawn> {
    let state = &ctx.state;
    let mut out = vec![];
    match state.grants.open_for_user(id.as_str()).await {
        Ok(grants) => {
            for g in grants
                .into_iter()
                .filter(|g| g.state == GrantState::Pending)
            {
                let done = match state.grants.revoke(&g.id, &ctx.who.email).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("the claim link could not be withdrawn: {e}")),
                };
                let intent = Intent {
                    grant_id: Some(g.id.clone()),
                    key_name: Some(g.key_name.clone()),
                    ..on_user(AuditAction::GrantRevoke)
                };
                out.push(Withdrawn {
                    kind: "claim link",
                    what: g.key_name.clone(),
                    outcome: group.local(intent, done).await,
                    id: g.id,
                });
            }
        }
        Err(e) => out.push(Withdrawn {
            kind: "claim link",
            id: String::new(),
            what: "open claim links".into(),
            outcome: StepOutcome::Failed(format!("could not be read: {e}")),
        }),
    }
    match state.approvals.withdraw_for_user(id.as_str()).await {
        Ok(approvals) => {
            for a in approvals {
                let intent = a.about(on_user(AuditAction::ApprovalWithdraw));
                out.push(Withdrawn {
                    kind: "approval request",
                    what: a.action.words().to_string(),
                    outcome: group.local(intent, Ok(())).await,
                    id: a.id,
                });
            }
        }
        Err(e) => out.push(Withdrawn {
            kind: "approval request",
            id: String::new(),
            what: "open approval requests".into(),
            outcome: StepOutcome::Failed(format!("could not be withdrawn: {e}")),
        }),
    }
    out
}

impl OffboardResultView {
    pub fn newcomers(&self) -> usize {
        self.keys.iter().filter(|k| k.newcomer).count()
    }
}

/// Switches API access off, then revokes every key the user has now.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id))]
pub async fn offboard_submit(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
    Form(input): Form<OffboardInput>,
) -> Result<Response, AppError> {
    let reason = match check_reason(input.reason.as_deref(), &ctx.state.policy) {
        Ok(r) => r,
        Err(e) => {
            return confirm_page(&ctx, &id, Some(e), StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    let token = input.form_token.as_deref();
    let claim = match ctx.confirm(token, Scope::Offboard(&id), &id).await? {
        Confirmation::Go(claim) => claim,
        Confirmation::Replay => return Err(AppError::Conflict(
            "This offboarding form was already submitted; it did nothing more. Open the user's page to see where things stand.".into(),
        )),
        Confirmation::Refused => return confirm_page(&ctx, &id, Some(CONFIRM_AGAIN.into()), StatusCode::FORBIDDEN).await,
    };
    let user = claim.prepare(ctx.state.vultr.get_user(&id).await).await?;
    let listed: Vec<&str> = input
        .listed
        .as_deref()
        .map(|l| l.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let email = user.email.clone();
    let group = claim
        .group(Intent {
            target_user_id: Some(id.to_string()),
            target_user_email: email.clone(),
            reason: reason.clone(),
            key_name: Some(
                "hold, API access off, links and requests withdrawn, every key revoked".into(),
            ),
            ..ctx.intent(AuditAction::UserOffboard)
        })
        .await?;
    let on_user = |action| Intent {
        target_user_id: Some(id.to_string()),
        target_user_email: email.clone(),
        ..group.part(action)
    };
    // The hold first: from here on no keydesk path gives this user a key.
    let placed = ctx
        .state
        .holds
        .place(
            id.as_str(),
            email.as_deref(),
            &ctx.who.email,
            reason.as_deref(),
            Some(group.id()),
        )
        .await
        .map_err(|e| format!("the hold could not be stored: {e}"));
    let hold_part = Intent {
        key_name: Some("hold placed: no key, claim link or API access until reinstated".into()),
        ..on_user(AuditAction::UserOffboard)
    };
    let hold = group.local(hold_part, placed).await;
    let vultr = &ctx.state.vultr;
    // Then the brake: from here on Vultr refuses every key of the user.
    let brake = group
        .step(
            Intent {
                api_enabled: Some(false),
                ..on_user(AuditAction::UserApiAccess)
            },
            vultr.set_api_enabled(&id, false),
            false,
        )
        .await;
    let withdrawn = withdraw_open(&ctx, &group, &id, &on_user).await;
    // The key list read after the brake, so a key made meanwhile is revoked too.
    let (keys, list_error) = match vultr.list_keys(&id).await {
        Ok(k) => (k, None),
        Err(e) => (vec![], Some(e.to_string())),
    };
    let mut results = Vec::with_capacity(keys.len());
    for key in keys {
        let outcome = match VultrId::parse(&key.id) {
            Ok(key_id) => {
                group
                    .step(
                        Intent {
                            key_id: Some(key.id.clone()),
                            key_name: key.name.clone(),
                            ..on_user(AuditAction::KeyRevoke)
                        },
                        vultr.delete_key(&id, &key_id),
                        true,
                    )
                    .await
            }
            Err(_) => StepOutcome::Failed("Vultr listed a key id keydesk will not follow".into()),
        };
        if outcome == StepOutcome::Done {
            metrics::counter!("keydesk_keys_revoked_total").increment(1);
        }
        results.push(KeyResult {
            newcomer: !listed.is_empty() && !listed.contains(&key.id.as_str()),
            key,
            outcome,
        });
    }
    let listing = match &list_error {
        Some(e) => StepOutcome::Failed(format!("the key list could not be read: {e}")),
        None => StepOutcome::Done,
    };
    let group_id = group.id();
    group
        .finish(
            [&hold, &brake, &listing]
                .into_iter()
                .chain(withdrawn.iter().map(|w| &w.outcome))
                .chain(results.iter().map(|r| &r.outcome)),
        )
        .await;
    let live = results.iter().filter(|r| r.outcome.still_live()).count();
    let unfinished = live > 0
        || brake.still_live()
        || hold.still_live()
        || list_error.is_some()
        || withdrawn.iter().any(|w| w.outcome.still_live());
    tracing::info!(keys = results.len(), live, "offboarding finished");
    let view = OffboardResultView {
        layout: ctx.layout().await,
        token: if unfinished {
            Some(ctx.issue(Scope::Offboard(&id)).await?)
        } else {
            None
        },
        listed: results
            .iter()
            .map(|r| r.key.id.as_str())
            .collect::<Vec<_>>()
            .join(","),
        user,
        brake,
        hold,
        withdrawn,
        list_error,
        keys: results,
        group_id,
        live,
        require_reason: ctx.state.policy.require_reason,
        reason: reason.unwrap_or_default(),
    };
    Ok(render(StatusCode::OK, &view))
}
