//! `GET|POST /me/keys/new` and `GET|POST /me/keys/{key_id}/rotate`: an
//! owner asks for a key, or a replacement of one of theirs, under
//! `KEYDESK_SELF_SERVICE`. Off: these forms do not exist (404). Request: it
//! becomes an approval request. Direct: a key within the key policy and the
//! day limit is made at once and shown to its owner once; anything else
//! becomes a request. `KEYDESK_APPROVAL_FOR` applies on top. The one audited
//! write refuses a held user (offboarded) before anything is stored or sent.

use askama::Template;
use axum::Form;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use time::OffsetDateTime;

use super::{SELF_SERVICE, WithinQuota, own_key, owner, owner_now};
use crate::approvals::ApprovalAction;
use crate::audit::{AuditAction, Intent};
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::ids::VultrId;
use crate::pages::approvals::{key_request, request_as};
use crate::pages::keys::{new_key_intent, replay_to, reveal_to_owner};
use crate::pages::{Layout, paths, render};
use crate::policy::{Change, CreateKeyInput, KeyForm, validate};
use crate::self_service::Mode;
use crate::vultr::{ApiKey, NewApiKey, User};
use crate::write::{Claimed, Ctx, Refusal};

/// A new key's default lifetime on the owner's form, in days.
const DEFAULT_DAYS: u32 = 90;

#[derive(Template)]
#[template(path = "me/key_form.html")]
pub struct MyKeyFormView {
    pub layout: Layout,
    pub user: User,
    /// When rotating: the owner's key being replaced (same name).
    pub replaces: Option<ApiKey>,
    pub form: KeyForm,
    /// Whether this key would be made now or wait, in words.
    pub rule: String,
    pub cap: crate::powers::Capability,
}

impl MyKeyFormView {
    pub fn action(&self) -> String {
        match &self.replaces {
            Some(k) => paths::my_key_rotate(&k.id),
            None => paths::MY_NEW_KEY.to_string(),
        }
    }
}

/// Off: the forms are absent, in words, and nothing is read or written.
fn enabled(ctx: &Ctx) -> Result<(), AppError> {
    if ctx.state.self_service.enabled() {
        return Ok(());
    }
    Err(AppError::NotFound(
        "Asking for keys on “My keys” is off here (KEYDESK_SELF_SERVICE=off). You can still revoke your own keys there; for a new key, ask the keydesk operators.".into(),
    ))
}

/// The form, fresh (a new token, a default expiry) or as submitted.
async fn form_page(
    ctx: &Ctx,
    user: User,
    replaces: Option<ApiKey>,
    form: Option<KeyForm>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let (policy, service) = (&ctx.state.policy, ctx.state.self_service);
    let mut form = match form {
        Some(f) => f,
        None => {
            let id = VultrId::parse(&user.id)?;
            let token = match &replaces {
                Some(k) => {
                    let key_id = VultrId::parse(&k.id)?;
                    ctx.issue(Scope::RotateKey(&id, &key_id)).await?
                }
                None => ctx.issue(Scope::CreateKey(&id)).await?,
            };
            let mut f = KeyForm::blank(token, policy);
            // The longest key that is made at once, within the policy.
            let mut days = DEFAULT_DAYS;
            if service.mode == Mode::Direct {
                days = days.min(service.max_days);
            }
            if let Some(max) = policy.max_days {
                days = days.min(max);
            }
            f.expire = true;
            f.date_expire = (OffsetDateTime::now_utc().date()
                + time::Duration::days(i64::from(days)))
            .to_string();
            f
        }
    };
    if let Some(k) = &replaces {
        form.name = k.name.clone().unwrap_or_default();
        form.subject = "replacement";
    }
    form.policy_notes.extend(ctx.state.approval.describe_keys());
    let cap = crate::pages::capability::of(&ctx.state, &user).await?;
    let view = MyKeyFormView {
        cap,
        layout: ctx.layout().await,
        user,
        replaces,
        form,
        rule: service.describe(),
    };
    Ok(render(status, &view))
}

/// `GET /me/keys/new`.
#[tracing::instrument(skip_all)]
pub async fn new_key_form(ctx: Ctx) -> Result<Response, AppError> {
    enabled(&ctx)?;
    let user = owner(&ctx).await?;
    form_page(&ctx, user, None, None, StatusCode::OK).await
}

/// `GET /me/keys/{key_id}/rotate`.
#[tracing::instrument(skip_all)]
pub async fn rotate_form(ctx: Ctx, Path(raw): Path<String>) -> Result<Response, AppError> {
    enabled(&ctx)?;
    let key_id = VultrId::parse(&raw)?;
    let user = owner(&ctx).await?;
    let key = own_key(&ctx, &user, &key_id).await?;
    form_page(&ctx, user, Some(key), None, StatusCode::OK).await
}

/// A refused form (expired, or not issued to this person): what was typed,
/// a fresh token, nothing made.
async fn refused(
    ctx: &Ctx,
    user: User,
    replaces: Option<ApiKey>,
    input: &CreateKeyInput,
    scope: Scope<'_>,
) -> Result<Response, AppError> {
    let policy = &ctx.state.policy;
    let mut form = KeyForm::blank(ctx.issue(scope).await?, policy);
    let _ = validate(input, &mut form, policy);
    form.name_error = None;
    form.date_error = None;
    form.reason_error = None;
    form.form_error = Some(
        "This form has expired or was not issued to you. Nothing was made; check your keys and submit again.".into(),
    );
    form_page(ctx, user, replaces, Some(form), StatusCode::FORBIDDEN).await
}

/// `POST /me/keys/new`: the owner asks for a key. Found in the cached
/// users list, then the token, then Vultr's word on the owner now.
#[tracing::instrument(skip_all)]
pub async fn new_key_submit(
    _: WithinQuota,
    ctx: Ctx,
    Form(input): Form<CreateKeyInput>,
) -> Result<Response, AppError> {
    enabled(&ctx)?;
    let cached = owner(&ctx).await?;
    let id = VultrId::parse(&cached.id)?;
    let scope = Scope::CreateKey(&id);
    let claim = match ctx
        .claim(input.form_token.as_deref(), scope, &id, None)
        .await
    {
        Ok(claim) => claim,
        Err(Refusal::Replay { result_id }) => {
            return Ok(replay_to(&ctx, paths::ME.into(), result_id).await);
        }
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => return refused(&ctx, cached, None, &input, scope).await,
    };
    // Vultr's word now: the email may have changed since the list was read.
    let user = owner_now(&ctx, &claim, &cached).await?;
    let mut form = KeyForm::blank(claim.token().to_string(), &ctx.state.policy);
    let Some(body) = validate(&input, &mut form, &ctx.state.policy) else {
        claim.release().await;
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return form_page(&ctx, user, None, Some(form), status).await;
    };
    make(&ctx, claim, (&id, user), None, body, &form).await
}

/// `POST /me/keys/{key_id}/rotate`: a replacement with the same name; the
/// old key stays until its owner revokes it through the confirmation.
#[tracing::instrument(skip_all)]
pub async fn rotate_submit(
    _: WithinQuota,
    ctx: Ctx,
    Path(raw): Path<String>,
    Form(mut input): Form<CreateKeyInput>,
) -> Result<Response, AppError> {
    enabled(&ctx)?;
    let key_id = VultrId::parse(&raw)?;
    let cached = owner(&ctx).await?;
    let id = VultrId::parse(&cached.id)?;
    let scope = Scope::RotateKey(&id, &key_id);
    let token = input.form_token.as_deref();
    let claim = match ctx.claim(token, scope, &id, Some(&key_id)).await {
        Ok(claim) => claim,
        Err(Refusal::Replay { result_id }) => {
            return Ok(replay_to(&ctx, paths::ME.into(), result_id).await);
        }
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => {
            let key = own_key(&ctx, &cached, &key_id).await?;
            return refused(&ctx, cached, Some(key), &input, scope).await;
        }
    };
    let user = owner_now(&ctx, &claim, &cached).await?;
    // Not theirs (403, audited), or unreadable: the form is given back.
    let old = claim.prepare(own_key(&ctx, &user, &key_id).await).await?;
    input.name = Some(old.name.clone().unwrap_or_default());
    let mut form = KeyForm::blank(claim.token().to_string(), &ctx.state.policy);
    let Some(body) = validate(&input, &mut form, &ctx.state.policy) else {
        claim.release().await;
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return form_page(&ctx, user, Some(old), Some(form), status).await;
    };
    make(&ctx, claim, (&id, user), Some((key_id, old)), body, &form).await
}

/// Makes the key now and reveals it to its owner once, or stores a request
/// (202) when a rule says it waits: the approval rules first, then the
/// self-service mode.
async fn make(
    ctx: &Ctx,
    claim: Claimed<'_>,
    (id, user): (&VultrId, User),
    old: Option<(VultrId, ApiKey)>,
    body: NewApiKey,
    form: &KeyForm,
) -> Result<Response, AppError> {
    let state = &ctx.state;
    // The rules read the ACLs (the owner was just read uncached) and the
    // allowlist as Vultr reports them now.
    let facts = claim.facts_of(id, user.clone()).await?;
    let cap = facts.cap.clone();
    let why = state
        .approval
        .why(Change::Key(&body, &cap))
        .or_else(|| state.self_service.why(&body));
    if let Some(why) = why {
        let (action, old_id) = match &old {
            Some((k, _)) => (ApprovalAction::KeyRotate, Some(k)),
            None => (ApprovalAction::KeyCreate, None),
        };
        let new = key_request(ctx, action, &facts, old_id, body, form.reason(), why);
        return request_as(ctx, claim, new, Some(SELF_SERVICE)).await;
    }
    let action = match old {
        Some(_) => AuditAction::KeyRotate,
        None => AuditAction::KeyCreate,
    };
    let intent = Intent {
        role: SELF_SERVICE.into(),
        related_key_id: old.as_ref().map(|(k, _)| k.to_string()),
        ..new_key_intent(ctx, action, &user, &body, form)
    };
    let intent = crate::pages::capability::stamp(intent, &cap);
    let call = state.vultr.create_key(id, &body);
    let created = claim.execute(intent, call, |k| Some(k.id.clone())).await?;
    Ok(reveal_to_owner(ctx, user, created, old.map(|(_, k)| k)).await)
}
