//! The add-key form's submit, one for both of its buttons: a key
//! (`create.rs`) or a claim link (`pages/grants.rs`). The one-time form is
//! claimed, the fields validated and the user read from Vultr now; under an
//! approval rule a request is stored instead of acting.

use axum::http::StatusCode;

use crate::approvals::ApprovalAction;
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::ids::VultrId;
use crate::pages::approvals::key_request;
use crate::pages::confirm::Stop;
use crate::pages::users::user_page;
use crate::policy::{Change, CreateKeyInput, KeyForm, validate};
use crate::powers::Capability;
use crate::vultr::{NewApiKey, User};
use crate::write::{Claimed, Ctx, Facts, Refusal};

/// What the submit makes.
#[derive(Clone, Copy)]
pub enum Makes {
    Key,
    Link,
}

/// A claimed, valid form, with the user and what their keys can do as
/// Vultr reports them now.
pub struct Valid<'c> {
    pub claim: Claimed<'c>,
    pub form: KeyForm,
    pub body: NewApiKey,
    pub user: User,
    pub cap: Capability,
}

/// Claims and validates the form. A replay gets the "already created" page
/// (a key) or a 409 (a link); a refused form a fresh one, nothing sent (a
/// key's keeps what was typed); invalid fields the form with their errors.
pub async fn submitted<'c>(
    ctx: &'c Ctx,
    id: &VultrId,
    input: &CreateKeyInput,
    makes: Makes,
) -> Result<Valid<'c>, Stop> {
    let policy = &ctx.state.policy;
    let scope = Scope::CreateKey(id);
    let claim = match ctx
        .claim(input.form_token.as_deref(), scope, id, None)
        .await
    {
        Ok(claim) => claim,
        Err(Refusal::Replay { result_id }) => {
            return Err(match makes {
                Makes::Key => Stop::Page(super::replay(ctx, id, result_id).await),
                Makes::Link => AppError::Conflict(
                    "This form was already used: its key or claim link exists. See the user's page or the claim links list.".into(),
                )
                .into(),
            });
        }
        Err(Refusal::Unavailable(e)) => return Err(e.into()),
        Err(Refusal::Refused) => {
            let mut form = KeyForm::blank(ctx.issue(scope).await?, policy);
            form.form_error = Some(match makes {
                Makes::Key => {
                    // Keep what was typed, drop the field errors.
                    let _ = validate(input, &mut form, policy);
                    form.name_error = None;
                    form.date_error = None;
                    form.reason_error = None;
                    "This form has expired or was not issued to you. Nothing was created; check the keys below and submit again.".into()
                }
                Makes::Link => "This form has expired or was not issued to you. No claim link was made; submit again.".into(),
            });
            return Err(Stop::Page(
                user_page(ctx, id, form, StatusCode::FORBIDDEN).await?,
            ));
        }
    };
    let mut form = KeyForm::blank(claim.token().to_string(), policy);
    let Some(body) = validate(input, &mut form, policy) else {
        claim.release().await;
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return Err(Stop::Page(user_page(ctx, id, form, status).await?));
    };
    // The user's email goes into the audit; this also 404s before any write.
    // Vultr's word now: the rules read the user's ACLs and allowlist.
    let Facts { user, cap } = claim.facts(id).await?;
    Ok(Valid {
        claim,
        form,
        body,
        user,
        cap,
    })
}

impl<'c> Valid<'c> {
    /// Under an approval rule, the request for `action` is stored instead
    /// and its page is the answer; otherwise the form goes on.
    pub async fn or_request(self, ctx: &'c Ctx, action: ApprovalAction) -> Result<Self, Stop> {
        let Some(why) = ctx.state.approval.why(Change::Key(&self.body, &self.cap)) else {
            return Ok(self);
        };
        let reason = self.form.reason();
        let facts = Facts {
            user: self.user,
            cap: self.cap,
        };
        let new = key_request(ctx, action, &facts, None, self.body, reason, why);
        let page = crate::pages::approvals::request(ctx, self.claim, new).await?;
        Err(Stop::Page(page))
    }
}
