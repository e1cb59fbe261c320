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

use super::confirm::{self, Confirm, ConfirmInput, Stop};
use super::paths::UserPath;
use super::{Layout, render};
use crate::audit::{AuditAction, Intent};
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::identity::Operator;
use crate::ids::VultrId;
use crate::vultr::{ApiKey, User};
use crate::write::{Ctx, StepOutcome};

mod job;
mod resume;

use job::{Job, Report};
pub use job::{KeyResult, Withdrawn};
pub use resume::resume_stalled;

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

/// The confirmation: every key of the user, and what will happen.
impl Confirm for OffboardConfirmView {
    const REPLAYED: Option<&'static str> = Some(
        "This offboarding form was already submitted; it did nothing more. Open the user's page to see where things stand.",
    );

    #[tracing::instrument(skip_all, fields(vultr.user_id = %id))]
    async fn view(ctx: &Ctx, id: &VultrId, notice: Option<String>) -> Result<Self, AppError> {
        let (user, keys) =
            tokio::join!(ctx.state.vultr.get_user(id), ctx.state.vultr.list_keys(id));
        let keys = keys?;
        Ok(OffboardConfirmView {
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
        })
    }
}

#[derive(Deserialize, Default)]
pub struct OffboardInput {
    #[serde(flatten)]
    confirm: ConfirmInput,
    /// Comma-separated ids of the keys the confirmation listed.
    listed: Option<String>,
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
) -> Result<Response, Stop> {
    let scope = Scope::Offboard(&id);
    let policy = &ctx.state.policy;
    let (claim, reason) =
        confirm::submitted::<OffboardConfirmView>(&ctx, &id, scope, &input.confirm, policy).await?;
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
    let group_id = group.id();
    let listed = listed.join(",");
    let start = crate::offboardings::StartInfo {
        reason: reason.as_deref(),
        email: email.as_deref(),
        listed: &listed,
    };
    if let Err(e) = ctx
        .state
        .offboardings
        .start_with(group_id, id.as_str(), &ctx.who.email, start)
        .await
    {
        // The run goes on: its steps are in the audit trail all the same.
        tracing::error!(error = %e, "offboarding progress not recorded");
    }
    let job = Job {
        state: ctx.state.clone(),
        group,
        user_id: id.clone(),
        email,
        actor: ctx.who.email.clone(),
        reason: reason.clone(),
        listed: listed
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        resumed: None,
    };
    // Its own task: a dropped request or a timeout never stops it halfway.
    let report = tokio::spawn(job.run())
        .await
        .map_err(|e| AppError::Internal(format!("offboarding task: {e}")))?
        .ok_or_else(|| {
            AppError::Conflict(
                "Another replica took this offboarding over and is finishing it. Open the user's page to see where it stands.".into(),
            )
        })?;
    let Report {
        hold,
        brake,
        withdrawn,
        list_error,
        keys: results,
    } = report;
    let live = results.iter().filter(|r| r.outcome.still_live()).count();
    let unfinished = live > 0
        || brake.still_live()
        || hold.still_live()
        || list_error.is_some()
        || withdrawn.iter().any(|w| w.outcome.still_live());
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
