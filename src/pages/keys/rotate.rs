//! `GET|POST /users/{id}/keys/{key_id}/rotate`: a replacement key with the
//! same name and a new expiry, revealed once; the old key stays until its
//! revocation is confirmed.

use askama::Template;
use axum::Form;
use axum::http::StatusCode;
use axum::response::Response;
use time::OffsetDateTime;

use crate::approvals::ApprovalAction;
use crate::audit::{AuditAction, Intent};
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::identity::Operator;
use crate::ids::VultrId;
use crate::pages::approvals::key_request;
use crate::pages::paths::KeyPath;
use crate::pages::{Layout, render};
use crate::policy::{Change, CreateKeyInput, KeyForm, validate};
use crate::vultr::{ApiKey, User};
use crate::write::{Ctx, Refusal};

/// A replacement defaults to 90 days (or the policy maximum if shorter).
const DEFAULT_DAYS: u32 = 90;

#[derive(Template)]
#[template(path = "keys/rotate_form.html")]
pub struct RotateFormView {
    pub layout: Layout,
    pub user: User,
    pub key: ApiKey,
    pub form: KeyForm,
    pub cap: crate::powers::Capability,
}

/// The rotate form: `form` re-rendered with errors, or a fresh one.
async fn rotate_page(
    ctx: &Ctx,
    (id, key_id): (&VultrId, &VultrId),
    form: Option<KeyForm>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let (user, key) = ctx.state.vultr.get_user_and_key(id, key_id).await?;
    let policy = &ctx.state.policy;
    let mut form = match form {
        Some(f) => f,
        None => {
            let mut f = KeyForm::blank(ctx.issue(Scope::RotateKey(id, key_id)).await?, policy);
            let days = policy
                .max_days
                .map_or(DEFAULT_DAYS, |m| m.min(DEFAULT_DAYS));
            f.expire = true;
            f.date_expire = (OffsetDateTime::now_utc().date()
                + time::Duration::days(i64::from(days)))
            .to_string();
            f
        }
    };
    form.subject = "replacement";
    form.policy_notes.extend(ctx.state.approval.describe_keys());
    let cap = crate::pages::capability::of(&ctx.state, &user).await?;
    let view = RotateFormView {
        cap,
        layout: ctx.layout().await,
        user,
        key,
        form,
    };
    Ok(render(status, &view))
}

/// Choose the replacement's expiry.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id, key.id = %key_id))]
pub async fn rotate_form(
    Operator(_): Operator,
    ctx: Ctx,
    KeyPath(id, key_id): KeyPath,
) -> Result<Response, AppError> {
    rotate_page(&ctx, (&id, &key_id), None, StatusCode::OK).await
}

/// Creates the replacement and reveals it, offering to retire the old key.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id, key.id = %key_id))]
pub async fn rotate_submit(
    Operator(_): Operator,
    ctx: Ctx,
    KeyPath(id, key_id): KeyPath,
    Form(mut input): Form<CreateKeyInput>,
) -> Result<Response, AppError> {
    let scope = Scope::RotateKey(&id, &key_id);
    let claim = match ctx
        .claim(input.form_token.as_deref(), scope, &id, Some(&key_id))
        .await
    {
        Ok(claim) => claim,
        Err(Refusal::Replay { result_id }) => return Ok(super::replay(&ctx, &id, result_id).await),
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => {
            return rotate_page(&ctx, (&id, &key_id), None, StatusCode::FORBIDDEN).await;
        }
    };
    // Vultr's word now: the rules read the user's ACLs and allowlist.
    let facts = claim.facts(&id).await?;
    let (_, old) = claim
        .prepare(ctx.state.vultr.get_user_and_key(&id, &key_id).await)
        .await?;
    // Same name as the key it replaces.
    input.name = Some(old.name.clone().unwrap_or_default());
    let mut form = KeyForm::blank(claim.token().to_string(), &ctx.state.policy);
    let Some(body) = validate(&input, &mut form, &ctx.state.policy) else {
        claim.release().await;
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return rotate_page(&ctx, (&id, &key_id), Some(form), status).await;
    };
    if let Some(why) = ctx.state.approval.why(Change::Key(&body, &facts.cap)) {
        let (action, old) = (ApprovalAction::KeyRotate, Some(&key_id));
        let new = key_request(&ctx, action, &facts, old, body, form.reason(), why);
        return crate::pages::approvals::request(&ctx, claim, new).await;
    }
    let crate::write::Facts { user, cap } = facts;
    let intent = Intent {
        related_key_id: Some(key_id.to_string()),
        ..super::new_key_intent(&ctx, AuditAction::KeyRotate, &user, &body, &form)
    };
    let intent = crate::pages::capability::stamp(intent, &cap);
    let call = ctx.state.vultr.create_key(&id, &body);
    let created = claim.execute(intent, call, |k| Some(k.id.clone())).await?;
    Ok(super::reveal(&ctx, user, created, Some(old)).await)
}
