//! `GET|POST /users/{id}/offboard`: a leaver (or a compromised account) in
//! one confirmed step. API access goes off first, so no key works while the
//! deletions run; then every key is revoked. Safe to repeat: the key list is
//! read anew each time and a key already gone is not deleted again.

use askama::Template;
use axum::Form;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::paths::UserPath;
use super::{Layout, render};
use crate::audit::{AuditAction, Intent};
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::identity::Operator;
use crate::ids::VultrId;
use crate::policy::check_reason;
use crate::vultr::{ApiKey, User};
use crate::write::{Ctx, Refusal, StepOutcome};

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
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let claim = match ctx.claim(token, Scope::Offboard(&id), &id, None).await {
        Ok(claim) => claim,
        Err(Refusal::Replay { .. }) => {
            return Err(AppError::Conflict(
                "This offboarding form was already submitted; it did nothing more. Open the user's page to see where things stand.".into(),
            ));
        }
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => {
            let notice = "That confirmation has expired or was not issued to you. Confirm again.";
            return confirm_page(&ctx, &id, Some(notice.into()), StatusCode::FORBIDDEN).await;
        }
    };
    // The key list as it is now, not as the confirmation showed it.
    let (user, keys) = tokio::join!(
        ctx.state.vultr.get_user(&id),
        ctx.state.vultr.list_keys(&id)
    );
    let user = claim.prepare(user).await?;
    let keys = claim.prepare(keys).await?;
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
            key_name: Some(format!("API access off, {} key(s) revoked", keys.len())),
            ..ctx.intent(AuditAction::UserOffboard)
        })
        .await?;
    let vultr = &ctx.state.vultr;
    // First the brake: from here on Vultr refuses every key of the user.
    let brake = group
        .step(
            Intent {
                target_user_id: Some(id.to_string()),
                target_user_email: email.clone(),
                api_enabled: Some(false),
                ..group.part(AuditAction::UserApiAccess)
            },
            vultr.set_api_enabled(&id, false),
            false,
        )
        .await;
    let mut results = Vec::with_capacity(keys.len());
    for key in keys {
        let outcome = match VultrId::parse(&key.id) {
            Ok(key_id) => {
                group
                    .step(
                        Intent {
                            target_user_id: Some(id.to_string()),
                            target_user_email: email.clone(),
                            key_id: Some(key.id.clone()),
                            key_name: key.name.clone(),
                            ..group.part(AuditAction::KeyRevoke)
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
    let group_id = group.id();
    group
        .finish(std::iter::once(&brake).chain(results.iter().map(|r| &r.outcome)))
        .await;
    let live = results.iter().filter(|r| r.outcome.still_live()).count();
    let unfinished = live > 0 || brake.still_live();
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
        keys: results,
        group_id,
        live,
        require_reason: ctx.state.policy.require_reason,
        reason: reason.unwrap_or_default(),
    };
    Ok(render(StatusCode::OK, &view))
}
