//! The confirm-with-reason flow of the changes to one user that a page
//! confirms first (the brake, an offboarding, a reinstatement): `show` is
//! the `GET`, and `submitted` the first steps of the `POST` (the reason
//! checked, the one-time form claimed, the "I understand" box), each answered
//! with the page again, and the words why, when the submit cannot go on.
//! Also the approval request such a change (or an allowlist entry) stores
//! instead of acting.

use std::future::Future;

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::paths::{self, UserPath};
use super::render;
use crate::approvals::{ApprovalAction, NewApproval};
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::identity::Operator;
use crate::ids::VultrId;
use crate::policy::{KeyPolicy, check_reason, checkbox};
use crate::write::{CONFIRM_AGAIN, Claimed, Confirmation, Ctx};

/// A confirmation page about one user.
pub trait Confirm: Template + Sized {
    /// The form has an "I understand" box that must be ticked.
    const TICK: bool = false;
    /// What a form submitted again answers: back to the user's page when
    /// `None`, else a 409 in these words.
    const REPLAYED: Option<&'static str> = None;

    /// The page about `id`, with `notice` saying why it is shown again.
    fn view(
        ctx: &Ctx,
        id: &VultrId,
        notice: Option<String>,
    ) -> impl Future<Output = Result<Self, AppError>> + Send;
}

/// The page about `id`, answered with `status`.
async fn page<P: Confirm>(
    ctx: &Ctx,
    id: &VultrId,
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    Ok(render(status, &P::view(ctx, id, notice).await?))
}

/// The page again, with `notice` saying why, as a submit's answer.
async fn again<P: Confirm>(ctx: &Ctx, id: &VultrId, notice: String, status: StatusCode) -> Stop {
    match page::<P>(ctx, id, Some(notice), status).await {
        Ok(page) => Stop::Page(page),
        Err(e) => Stop::Error(e),
    }
}

/// Why a submit stops before it acts: its page shown again (or a
/// redirect), or an error. A handler answering `Result<Response, Stop>`
/// passes either on with `?`.
pub enum Stop {
    Page(Response),
    Error(AppError),
}

impl<E: Into<AppError>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Error(e.into())
    }
}

impl IntoResponse for Stop {
    fn into_response(self) -> Response {
        match self {
            Stop::Page(page) => page,
            Stop::Error(e) => e.into_response(),
        }
    }
}

/// The fields every confirmation form sends.
#[derive(Deserialize, Default)]
pub struct ConfirmInput {
    pub form_token: Option<String>,
    pub reason: Option<String>,
    /// The "I understand" box, on the pages that have one.
    pub understand: Option<String>,
}

/// `GET`: the confirmation, as first shown.
pub async fn show<P: Confirm>(
    Operator(_): Operator,
    ctx: Ctx,
    UserPath(id): UserPath,
) -> Result<Response, AppError> {
    page::<P>(&ctx, &id, None, StatusCode::OK).await
}

/// A submit's first steps, in this order: the reason checked against
/// `policy` (422), the form claimed for `scope` (403 when refused, as
/// `P::REPLAYED` says when replayed), the box ticked where there is one
/// (422, the form released). What passes goes on with the claim and the
/// reason.
pub async fn submitted<'c, P: Confirm>(
    ctx: &'c Ctx,
    id: &VultrId,
    scope: Scope<'_>,
    input: &ConfirmInput,
    policy: &KeyPolicy,
) -> Result<(Claimed<'c>, Option<String>), Stop> {
    let reason = match check_reason(input.reason.as_deref(), policy) {
        Ok(r) => r,
        Err(e) => return Err(again::<P>(ctx, id, e, StatusCode::UNPROCESSABLE_ENTITY).await),
    };
    let claim = match ctx.confirm(input.form_token.as_deref(), scope, id).await? {
        Confirmation::Go(claim) => claim,
        Confirmation::Replay => {
            return Err(match P::REPLAYED {
                None => Stop::Page(Redirect::to(&paths::user(id.as_str())).into_response()),
                Some(words) => Stop::Error(AppError::Conflict(words.into())),
            });
        }
        Confirmation::Refused => {
            let notice = CONFIRM_AGAIN.into();
            return Err(again::<P>(ctx, id, notice, StatusCode::FORBIDDEN).await);
        }
    };
    if P::TICK && !checkbox(input.understand.as_deref()) {
        claim.release().await;
        let notice = "Tick “I understand” to confirm. Nothing was changed.".into();
        return Err(again::<P>(ctx, id, notice, StatusCode::UNPROCESSABLE_ENTITY).await);
    }
    Ok((claim, reason))
}

/// The approval request a change to the user itself (no key) stores
/// instead of acting: the brake, a reinstatement, an allowlist entry.
pub fn user_request(
    ctx: &Ctx,
    action: ApprovalAction,
    (id, email): (&VultrId, Option<String>),
    reason: Option<String>,
    why: String,
    subnet: Option<String>,
) -> NewApproval {
    NewApproval {
        action,
        user_id: id.to_string(),
        user_email: email,
        key_id: None,
        key_name: None,
        expire: false,
        date_expire: None,
        reason,
        why,
        requested_by: ctx.who.email.clone(),
        subnet,
        // A caller whose change a rule reads facts for sets them.
        decided: None,
    }
}
