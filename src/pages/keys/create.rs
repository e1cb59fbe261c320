//! `POST /users/{id}/keys`: validate, create, reveal once.

use axum::Form;
use axum::http::StatusCode;
use axum::response::Response;

use crate::approvals::ApprovalAction;
use crate::audit::AuditAction;
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::identity::Operator;
use crate::pages::approvals::key_request;
use crate::pages::paths::UserPath;
use crate::pages::users::user_page;
use crate::policy::{Change, CreateKeyInput, KeyForm, validate};
use crate::write::{Ctx, Facts, Refusal};

/// Creates a key for the user and reveals it once. A replay gets the
/// "already created" page; a refused form a fresh one, with nothing sent.
// The body is never logged: `skip_all` keeps the form (and the response) out of spans.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id))]
pub async fn key_create(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
    Form(input): Form<CreateKeyInput>,
) -> Result<Response, AppError> {
    let policy = &ctx.state.policy;
    let scope = Scope::CreateKey(&id);
    let claim = match ctx
        .claim(input.form_token.as_deref(), scope, &id, None)
        .await
    {
        Ok(claim) => claim,
        Err(Refusal::Replay { result_id }) => return Ok(super::replay(&ctx, &id, result_id).await),
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => {
            // Keep what was typed, drop the field errors, offer a fresh token.
            let mut form = KeyForm::blank(ctx.issue(scope).await?, policy);
            let _ = validate(&input, &mut form, policy);
            form.name_error = None;
            form.date_error = None;
            form.reason_error = None;
            form.form_error = Some(
                "This form has expired or was not issued to you. Nothing was created; check the keys below and submit again.".into(),
            );
            return user_page(&ctx, &id, form, StatusCode::FORBIDDEN).await;
        }
    };
    let mut form = KeyForm::blank(claim.token().to_string(), policy);
    let Some(body) = validate(&input, &mut form, policy) else {
        claim.release().await;
        return user_page(&ctx, &id, form, StatusCode::UNPROCESSABLE_ENTITY).await;
    };
    // The user's email goes into the audit; this also 404s before any write.
    // Vultr's word now: the rules read the user's ACLs and allowlist.
    let facts = claim.facts(&id).await?;
    if let Some(why) = ctx.state.approval.why(Change::Key(&body, &facts.cap)) {
        let new = key_request(
            &ctx,
            ApprovalAction::KeyCreate,
            &facts,
            None,
            body,
            form.reason(),
            why,
        );
        return crate::pages::approvals::request(&ctx, claim, new).await;
    }
    let Facts { user, cap } = facts;
    let intent = super::new_key_intent(&ctx, AuditAction::KeyCreate, &user, &body, &form);
    let intent = crate::pages::capability::stamp(intent, &cap);
    let call = ctx.state.vultr.create_key(&id, &body);
    let created = claim.execute(intent, call, |k| Some(k.id.clone())).await?;
    Ok(super::reveal(&ctx, user, created, None).await)
}
