//! `POST /users/{id}/keys`: validate, create, reveal once.

use axum::Form;
use axum::response::Response;

use super::add::{self, Makes, Valid};
use crate::approvals::ApprovalAction;
use crate::audit::AuditAction;
use crate::identity::Operator;
use crate::pages::confirm::Stop;
use crate::pages::paths::UserPath;
use crate::policy::CreateKeyInput;
use crate::write::Ctx;

/// Creates a key for the user and reveals it once. A replay gets the
/// "already created" page; a refused form a fresh one, with nothing sent.
// The body is never logged: `skip_all` keeps the form (and the response) out of spans.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id))]
pub async fn key_create(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
    Form(input): Form<CreateKeyInput>,
) -> Result<Response, Stop> {
    let valid = add::submitted(&ctx, &id, &input, Makes::Key).await?;
    let Valid {
        claim,
        form,
        body,
        user,
        cap,
    } = valid.or_request(&ctx, ApprovalAction::KeyCreate).await?;
    let intent = super::new_key_intent(&ctx, AuditAction::KeyCreate, &user, &body, &form);
    let intent = crate::pages::capability::stamp(intent, &cap);
    let call = ctx.state.vultr.create_key(&id, &body);
    let created = claim.execute(intent, call, |k| Some(k.id.clone())).await?;
    Ok(super::reveal(&ctx, user, created, None).await)
}
