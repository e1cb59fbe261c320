//! Creating (shown once) and revoking a user's API keys.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::{Date, OffsetDateTime};
use tower_sessions::Session;

use super::users::{check_id, user_page};
use super::{Layout, flash, record_forgery, render, session_id, upstream_failed, user_href};
use crate::app::AppState;
use crate::audit::{Intent, Outcome};
use crate::error::AppError;
use crate::idempotency::Claim;
use crate::identity::{Identity, Operator};
use crate::vultr::{ApiKey, NewApiKey, User};

/// Longest key name accepted.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest reason / ticket text accepted.
pub const MAX_REASON_CHARS: usize = 500;

/// Rules the keydesk operators set for new keys; staff see them in the form.
#[derive(Clone, Debug, Default)]
pub struct KeyPolicy {
    /// When set, expiry is mandatory and at most this many days away.
    pub max_days: Option<u32>,
    /// When set, key names must match this pattern (anchored).
    pub name_pattern: Option<regex::Regex>,
    /// When true, a reason / ticket is mandatory.
    pub require_reason: bool,
}

impl KeyPolicy {
    pub fn expiry_required(&self) -> bool {
        self.max_days.is_some()
    }

    /// The latest expiry date allowed, if any.
    pub fn max_date(&self) -> Option<Date> {
        self.max_days
            .map(|d| OffsetDateTime::now_utc().date() + time::Duration::days(i64::from(d)))
    }

    /// The rules in words, for the form.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(d) = self.max_days {
            out.push(format!("Keys must expire, at most {d} days from today."));
        }
        if let Some(p) = &self.name_pattern {
            out.push(format!("Key names must match the pattern {}.", p.as_str()));
        }
        if self.require_reason {
            out.push("A reason or ticket is required.".into());
        }
        out
    }
}

/// The add-key form as rendered: token, values and per-field errors.
#[derive(Debug, Clone, Default)]
pub struct KeyForm {
    pub token: String,
    pub name: String,
    pub expire: bool,
    pub date_expire: String,
    pub name_error: Option<String>,
    pub date_error: Option<String>,
    pub reason: String,
    pub reason_error: Option<String>,
    pub form_error: Option<String>,
    /// The latest date policy allows (the date input's `max`), if any.
    pub max_date: String,
    pub expiry_required: bool,
    pub reason_required: bool,
    pub policy_notes: Vec<String>,
    /// Tomorrow, the earliest valid expiry (the date input's `min`).
    pub min_date: String,
}

fn tomorrow() -> Date {
    OffsetDateTime::now_utc()
        .date()
        .next_day()
        .unwrap_or(Date::MAX)
}

impl KeyForm {
    pub fn scope(user_id: &str) -> String {
        format!("create:{user_id}")
    }

    pub fn blank(token: String, policy: &KeyPolicy) -> Self {
        Self {
            token,
            min_date: tomorrow().to_string(),
            max_date: policy.max_date().map(|d| d.to_string()).unwrap_or_default(),
            expiry_required: policy.expiry_required(),
            reason_required: policy.require_reason,
            policy_notes: policy.describe(),
            expire: policy.expiry_required(),
            ..Default::default()
        }
    }

    pub fn has_errors(&self) -> bool {
        self.name_error.is_some()
            || self.date_error.is_some()
            || self.reason_error.is_some()
            || self.form_error.is_some()
    }
}

/// What the browser posts. Field names are a contract: `name`, `expire`, `date_expire`.
#[derive(Deserialize, Default)]
pub struct CreateKeyInput {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    expire: Option<String>,
    #[serde(default)]
    date_expire: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    form_token: Option<String>,
}

/// An HTML checkbox sends `on` (or our `true`); accept the usual spellings of yes.
fn checkbox(v: Option<&str>) -> bool {
    matches!(
        v.map(|s| s.trim().to_ascii_lowercase()).as_deref(),
        Some("on" | "true" | "1" | "yes")
    )
}

/// Validates the input into the upstream body, or fills the form's errors.
pub fn validate(
    input: &CreateKeyInput,
    form: &mut KeyForm,
    policy: &KeyPolicy,
) -> Option<NewApiKey> {
    let raw_name = input.name.as_deref().unwrap_or("");
    let name = raw_name.trim();
    form.name = raw_name.chars().take(MAX_NAME_CHARS * 2).collect();
    form.expire = checkbox(input.expire.as_deref());
    form.date_expire = input
        .date_expire
        .as_deref()
        .unwrap_or("")
        .trim()
        .chars()
        .take(32)
        .collect();

    if name.is_empty() {
        form.name_error = Some("Enter a name for the key.".into());
    } else if name.chars().count() > MAX_NAME_CHARS {
        form.name_error = Some(format!(
            "The name is too long: {MAX_NAME_CHARS} characters at most."
        ));
    } else if name.chars().any(char::is_control) {
        form.name_error = Some("The name may not contain control characters.".into());
    } else if let Some(p) = &policy.name_pattern
        && !p.is_match(name)
    {
        form.name_error = Some(format!(
            "The name does not follow the naming policy ({}).",
            p.as_str()
        ));
    }

    match check_reason(input.reason.as_deref(), policy) {
        Ok(r) => form.reason = r.unwrap_or_default(),
        Err(e) => {
            form.reason = input
                .reason
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(MAX_REASON_CHARS)
                .collect();
            form.reason_error = Some(e);
        }
    }

    let mut date_expire = None;
    if form.expire {
        if form.date_expire.is_empty() {
            form.date_error = Some("Choose the date the key expires on.".into());
        } else {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            match Date::parse(&form.date_expire, &fmt) {
                Err(_) => {
                    form.date_error =
                        Some("That is not a real calendar date (expected YYYY-MM-DD).".into())
                }
                Ok(d) if d < tomorrow() => {
                    form.date_error = Some("The expiry date must be in the future.".into())
                }
                Ok(d) if policy.max_date().is_some_and(|m| d > m) => {
                    form.date_error = Some(format!(
                        "Policy allows keys to live at most {} days: choose {} or earlier.",
                        policy.max_days.unwrap_or(0),
                        policy.max_date().map(|m| m.to_string()).unwrap_or_default()
                    ))
                }
                Ok(d) => date_expire = Some(format!("{d}T00:00:00Z")),
            }
        }
    } else if policy.expiry_required() {
        form.date_error = Some(format!(
            "Policy requires every key to expire, at most {} days from today.",
            policy.max_days.unwrap_or(0)
        ));
    } else if !form.date_expire.is_empty() {
        form.date_error = Some(
            "You set an expiry date but did not tick Expiry. Tick it, or clear the date for a key that never expires.".into(),
        );
    }

    if form.has_errors() {
        return None;
    }
    Some(NewApiKey {
        name: name.to_string(),
        expire: form.expire,
        date_expire,
    })
}

/// A trimmed, bounded reason; an error when it is bad or required and missing.
pub fn check_reason(raw: Option<&str>, policy: &KeyPolicy) -> Result<Option<String>, String> {
    let r = raw.unwrap_or("").trim();
    if r.chars().count() > MAX_REASON_CHARS {
        return Err(format!(
            "The reason is too long: {MAX_REASON_CHARS} characters at most."
        ));
    }
    if r.chars().any(char::is_control) {
        return Err("The reason may not contain control characters.".into());
    }
    if r.is_empty() {
        if policy.require_reason {
            return Err("Give a reason or ticket for this action.".into());
        }
        return Ok(None);
    }
    Ok(Some(r.to_string()))
}

/// The one page that ever shows a key. The secret is exposed at one place:
/// `secret()`, called by the template.
#[derive(Template)]
#[template(path = "keys/created.html")]
pub struct CreatedView {
    pub layout: Layout,
    pub user: User,
    pub key: ApiKey,
    secret: SecretString,
    pub rotation: Option<Rotation>,
}

impl CreatedView {
    pub fn secret(&self) -> &str {
        self.secret.expose_secret()
    }
    pub fn user_href(&self) -> String {
        user_href(&self.user.id)
    }
    pub fn revoke_old_href(&self, old: &ApiKey) -> String {
        format!(
            "/users/{}/keys/{}/delete?replaced_by={}",
            self.user.id, old.id, self.key.id
        )
    }
}

#[derive(Template)]
#[template(path = "keys/replay.html")]
pub struct ReplayView {
    pub layout: Layout,
    pub user_id: String,
    pub key_id: Option<String>,
}

impl ReplayView {
    pub fn user_href(&self) -> String {
        user_href(&self.user_id)
    }
}

/// "Already created, cannot be shown again": the answer to any replayed
/// create or rotate form. Never holds the secret.
async fn replay_page(
    who: &Identity,
    session: &Session,
    user_id: String,
    key_id: Option<String>,
) -> Response {
    let layout = Layout::new(who, session).await;
    let mut resp = render(
        StatusCode::CONFLICT,
        &ReplayView {
            layout,
            user_id,
            key_id,
        },
    );
    no_store(&mut resp);
    resp
}

/// Headers for the reveal: never cached, never referred.
fn no_store(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

/// `POST /users/{id}/keys`: validate, claim the form token, record the
/// intent, create, reveal once.
// The body is never logged: `skip_all` keeps the form (and the response) out of spans.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id))]
pub async fn create_key(
    State(state): State<AppState>,
    Operator(who): Operator,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(input): Form<CreateKeyInput>,
) -> Result<Response, AppError> {
    check_id(&id)?;
    let scope = KeyForm::scope(&id);
    let token = input.form_token.clone().unwrap_or_default();
    let sid = session_id(&session);
    match state
        .tokens
        .claim(&token, &who.email, &scope, sid.as_deref())
    {
        Claim::Claimed => {}
        Claim::Replay { result_id } => {
            return Ok(replay_page(&who, &session, id, result_id).await);
        }
        Claim::Invalid => {
            // Unknown or foreign token: act on nothing, offer a fresh form.
            record_forgery(&state, &who, &headers, &id, None).await;
            let mut form = KeyForm::blank(
                state.tokens.issue(&who.email, &scope, sid.clone()),
                &state.policy,
            );
            let _ = validate(&input, &mut form, &state.policy);
            form.name_error = None;
            form.date_error = None;
            form.reason_error = None;
            form.form_error = Some(
                "This form has expired or was not issued to you. Nothing was created; check the keys below and submit again.".into(),
            );
            let layout = Layout::new(&who, &session).await;
            return user_page(&state, layout, &id, form, StatusCode::FORBIDDEN).await;
        }
    }

    let mut form = KeyForm::blank(token.clone(), &state.policy);
    let Some(body) = validate(&input, &mut form, &state.policy) else {
        // Nothing was sent: the same form may be submitted again once fixed.
        state.tokens.release(&token);
        let layout = Layout::new(&who, &session).await;
        return user_page(&state, layout, &id, form, StatusCode::UNPROCESSABLE_ENTITY).await;
    };

    // The user's email goes into the audit; this also 404s before any write.
    let user = state
        .tokens
        .release_on_err(&token, state.vultr.get_user(&id).await)?;
    let intent = Intent {
        target_user_id: Some(id.clone()),
        target_user_email: user.email.clone(),
        key_name: Some(body.name.clone()),
        requested_expiry: body.date_expire.clone(),
        reason: (!form.reason.is_empty()).then(|| form.reason.clone()),
        ..who.intent("key.create", &headers)
    };
    mint(&state, &who, &session, &token, user, &body, intent, None).await
}

/// The old key of a rotation, offered for revocation from the reveal page.
/// The reveal is `Referrer-Policy: no-referrer`, so browsers would send
/// `Origin: null` from a form there: the offer is a link to the normal
/// confirmation step instead.
pub struct Rotation {
    pub old_key: ApiKey,
}

/// Records the intent, creates the key, settles the audit, reveals it once.
/// Shared by create and rotate; `token` is already claimed.
#[allow(clippy::too_many_arguments)]
async fn mint(
    state: &AppState,
    who: &Identity,
    session: &Session,
    token: &str,
    user: User,
    body: &NewApiKey,
    intent: Intent,
    rotating: Option<ApiKey>,
) -> Result<Response, AppError> {
    let audit_id = state
        .tokens
        .release_on_err(token, state.audit.intent(&intent).await)?;
    match state.vultr.create_key(&user.id, body).await {
        Ok(created) => {
            state.tokens.complete(token, Some(created.id.clone()));
            state
                .audit
                .settle(audit_id, Outcome::Ok, Some(&created.id), None, None)
                .await;
            tracing::info!(key.id = %created.id, action = intent.action, "key created");
            metrics::counter!("keydesk_keys_created_total").increment(1);
            let rotation = rotating.map(|old_key| Rotation { old_key });
            let key = created.summary();
            let layout = Layout::new(who, session).await;
            let mut resp = render(
                StatusCode::OK,
                &CreatedView {
                    layout,
                    user,
                    key,
                    secret: created.api_key,
                    rotation,
                },
            );
            no_store(&mut resp);
            Ok(resp)
        }
        Err(e) => Err(upstream_failed(state, audit_id, token, &user.id, e).await),
    }
}

fn rotate_scope(user_id: &str, key_id: &str) -> String {
    format!("rotate:{user_id}:{key_id}")
}

#[derive(Template)]
#[template(path = "keys/rotate.html")]
pub struct RotateView {
    pub layout: Layout,
    pub user: User,
    pub key: ApiKey,
    pub form: KeyForm,
}

impl RotateView {
    pub fn action(&self) -> String {
        format!("/users/{}/keys/{}/rotate", self.user.id, self.key.id)
    }
    pub fn user_href(&self) -> String {
        user_href(&self.user.id)
    }
}

async fn rotate_page(
    state: &AppState,
    who: &Identity,
    session: &Session,
    id: &str,
    key_id: &str,
    form: Option<KeyForm>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let (user, key) = state.vultr.get_user_and_key(id, key_id).await?;
    let form = match form {
        Some(f) => f,
        None => {
            let mut f = KeyForm::blank(
                state
                    .tokens
                    .issue(&who.email, &rotate_scope(id, key_id), session_id(session)),
                &state.policy,
            );
            // Default to a 90-day replacement (or the policy maximum if shorter).
            let days = state.policy.max_days.map_or(90, |m| m.min(90));
            f.expire = true;
            f.date_expire = (OffsetDateTime::now_utc().date()
                + time::Duration::days(i64::from(days)))
            .to_string();
            f
        }
    };
    let layout = Layout::new(who, session).await;
    Ok(render(
        status,
        &RotateView {
            layout,
            user,
            key,
            form,
        },
    ))
}

/// `GET /users/{id}/keys/{key_id}/rotate`: choose the replacement's expiry.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id, key.id = %key_id))]
pub async fn rotate_form(
    State(state): State<AppState>,
    Operator(who): Operator,
    session: Session,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    check_id(&id)?;
    check_id(&key_id)?;
    rotate_page(&state, &who, &session, &id, &key_id, None, StatusCode::OK).await
}

/// `POST /users/{id}/keys/{key_id}/rotate`: a replacement with the same name
/// and a new expiry, revealed once; the old key stays until confirmed.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id, key.id = %key_id))]
pub async fn rotate_key(
    State(state): State<AppState>,
    Operator(who): Operator,
    session: Session,
    headers: HeaderMap,
    Path((id, key_id)): Path<(String, String)>,
    Form(mut input): Form<CreateKeyInput>,
) -> Result<Response, AppError> {
    check_id(&id)?;
    check_id(&key_id)?;
    let token = input.form_token.clone().unwrap_or_default();
    let sid = session_id(&session);
    match state.tokens.claim(
        &token,
        &who.email,
        &rotate_scope(&id, &key_id),
        sid.as_deref(),
    ) {
        Claim::Claimed => {}
        Claim::Replay { result_id } => {
            return Ok(replay_page(&who, &session, id, result_id).await);
        }
        Claim::Invalid => {
            record_forgery(&state, &who, &headers, &id, Some(&key_id)).await;
            return rotate_page(
                &state,
                &who,
                &session,
                &id,
                &key_id,
                None,
                StatusCode::FORBIDDEN,
            )
            .await;
        }
    }
    let (user, old) = state
        .tokens
        .release_on_err(&token, state.vultr.get_user_and_key(&id, &key_id).await)?;
    // Same name as the key it replaces.
    input.name = Some(old.name.clone().unwrap_or_default());
    let mut form = KeyForm::blank(token.clone(), &state.policy);
    let Some(body) = validate(&input, &mut form, &state.policy) else {
        state.tokens.release(&token);
        return rotate_page(
            &state,
            &who,
            &session,
            &id,
            &key_id,
            Some(form),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let intent = Intent {
        target_user_id: Some(id.clone()),
        target_user_email: user.email.clone(),
        key_name: Some(body.name.clone()),
        requested_expiry: body.date_expire.clone(),
        reason: (!form.reason.is_empty()).then(|| form.reason.clone()),
        related_key_id: Some(key_id.clone()),
        ..who.intent("key.rotate", &headers)
    };
    mint(
        &state,
        &who,
        &session,
        &token,
        user,
        &body,
        intent,
        Some(old),
    )
    .await
}

#[derive(Template)]
#[template(path = "keys/confirm_delete.html")]
pub struct ConfirmDeleteView {
    pub layout: Layout,
    pub user: User,
    pub key: ApiKey,
    pub token: String,
    pub notice: Option<String>,
    pub reason: String,
    pub require_reason: bool,
    /// When retiring the old key of a rotation: the replacement's id.
    pub replaced_by: Option<String>,
}

impl ConfirmDeleteView {
    pub fn action(&self) -> String {
        format!("/users/{}/keys/{}/delete", self.user.id, self.key.id)
    }
    pub fn user_href(&self) -> String {
        user_href(&self.user.id)
    }
}

fn revoke_scope(user_id: &str, key_id: &str) -> String {
    format!("revoke:{user_id}:{key_id}")
}

async fn confirm_page(
    state: &AppState,
    who: &Identity,
    session: &Session,
    id: &str,
    key_id: &str,
    notice: Option<String>,
    replaced_by: Option<String>,
) -> Result<Response, AppError> {
    let (user, key) = state.vultr.get_user_and_key(id, key_id).await?;
    let token = state
        .tokens
        .issue(&who.email, &revoke_scope(id, key_id), session_id(session));
    let layout = Layout::new(who, session).await;
    Ok(render(
        if notice.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        &ConfirmDeleteView {
            layout,
            user,
            key,
            token,
            notice,
            reason: String::new(),
            require_reason: state.policy.require_reason,
            replaced_by,
        },
    ))
}

/// `GET /users/{id}/keys/{key_id}/delete`: the confirmation step, naming the key.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id, key.id = %key_id))]
pub async fn confirm_delete(
    State(state): State<AppState>,
    Operator(who): Operator,
    session: Session,
    Path((id, key_id)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<ConfirmQuery>,
) -> Result<Response, AppError> {
    check_id(&id)?;
    check_id(&key_id)?;
    let replaced_by = valid_replacement(q.replaced_by)?;
    confirm_page(&state, &who, &session, &id, &key_id, None, replaced_by).await
}

#[derive(Deserialize, Default)]
pub struct ConfirmQuery {
    #[serde(default)]
    replaced_by: Option<String>,
}

fn valid_replacement(r: Option<String>) -> Result<Option<String>, AppError> {
    r.filter(|r| !r.is_empty())
        .map(|r| check_id(&r).map(|_| r))
        .transpose()
}

#[derive(Deserialize, Default)]
pub struct RevokeInput {
    #[serde(default)]
    form_token: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    /// Set when revoking the old key of a rotation: the replacement's id.
    #[serde(default)]
    replaced_by: Option<String>,
}

/// `POST /users/{id}/keys/{key_id}/delete`: revokes with a confirmed token;
/// without one it shows the confirmation step instead of acting.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id, key.id = %key_id))]
pub async fn revoke_key(
    State(state): State<AppState>,
    Operator(who): Operator,
    session: Session,
    headers: HeaderMap,
    Path((id, key_id)): Path<(String, String)>,
    Form(input): Form<RevokeInput>,
) -> Result<Response, AppError> {
    check_id(&id)?;
    check_id(&key_id)?;
    let scope = revoke_scope(&id, &key_id);
    let token = input.form_token.unwrap_or_default();
    let replaced_by = valid_replacement(input.replaced_by)?;
    let reason = match check_reason(input.reason.as_deref(), &state.policy) {
        Ok(r) => r,
        Err(e) => {
            return confirm_page(&state, &who, &session, &id, &key_id, Some(e), replaced_by).await;
        }
    };
    match state
        .tokens
        .claim(&token, &who.email, &scope, session_id(&session).as_deref())
    {
        Claim::Claimed => {}
        Claim::Replay { .. } => {
            flash(
                &session,
                &who,
                "info",
                "That key was already revoked.".into(),
            )
            .await;
            return Ok(Redirect::to(&user_href(&id)).into_response());
        }
        Claim::Invalid => {
            // No valid confirmation token: nothing happens; offer the confirmation step.
            record_forgery(&state, &who, &headers, &id, Some(&key_id)).await;
            let notice = if token.is_empty() {
                "Confirm below to revoke this key.".to_string()
            } else {
                "That confirmation has expired or was not issued to you. Confirm again to revoke the key.".to_string()
            };
            let mut resp = confirm_page(
                &state,
                &who,
                &session,
                &id,
                &key_id,
                Some(notice),
                replaced_by,
            )
            .await?;
            *resp.status_mut() = StatusCode::FORBIDDEN;
            return Ok(resp);
        }
    }

    let (user, key) = state
        .tokens
        .release_on_err(&token, state.vultr.get_user_and_key(&id, &key_id).await)?;
    let intent = Intent {
        reason,
        related_key_id: replaced_by,
        target_user_id: Some(id.clone()),
        target_user_email: user.email.clone(),
        key_id: Some(key_id.clone()),
        key_name: key.name.clone(),
        ..who.intent("key.revoke", &headers)
    };
    let audit_id = state
        .tokens
        .release_on_err(&token, state.audit.intent(&intent).await)?;
    match state.vultr.delete_key(&id, &key_id).await {
        Ok(()) => {
            metrics::counter!("keydesk_keys_revoked_total").increment(1);
            state.tokens.complete(&token, Some(key_id.clone()));
            state
                .audit
                .settle(audit_id, Outcome::Ok, None, None, None)
                .await;
            flash(
                &session,
                &who,
                "ok",
                format!("Revoked the key “{}”.", key.name_or_dash()),
            )
            .await;
            Ok(Redirect::to(&user_href(&id)).into_response())
        }
        Err(e) => Err(upstream_failed(&state, audit_id, &token, &id, e).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, expire: Option<&str>, date: &str) -> CreateKeyInput {
        CreateKeyInput {
            name: Some(name.into()),
            expire: expire.map(str::to_string),
            date_expire: Some(date.into()),
            reason: None,
            form_token: None,
        }
    }

    fn check(i: CreateKeyInput) -> (Option<NewApiKey>, KeyForm) {
        let p = KeyPolicy::default();
        let mut f = KeyForm::blank("t".into(), &p);
        (validate(&i, &mut f, &p), f)
    }

    #[test]
    fn a_valid_expiring_key() {
        let d = (OffsetDateTime::now_utc().date() + time::Duration::days(90)).to_string();
        let (body, _) = check(input("  ci  ", Some("on"), &d));
        let body = body.unwrap();
        assert_eq!(body.name, "ci");
        assert!(body.expire);
        assert_eq!(body.date_expire.unwrap(), format!("{d}T00:00:00Z"));
    }

    #[test]
    fn a_key_that_never_expires() {
        let (body, _) = check(input("ci", None, ""));
        assert_eq!(
            body.unwrap(),
            NewApiKey {
                name: "ci".into(),
                expire: false,
                date_expire: None
            }
        );
    }

    #[test]
    fn bad_inputs_are_explained() {
        let cases = [
            input("", None, ""),
            input("   ", None, ""),
            input(&"x".repeat(300), None, ""),
            input("a\u{7}b", None, ""),
            input("ok", Some("on"), ""),
            input("ok", Some("on"), "2030-02-30"),
            input("ok", Some("on"), "2020-01-01"),
            input("ok", Some("on"), "tomorrow"),
            input("ok", None, "2030-01-01"),
        ];
        for c in cases {
            let (body, f) = check(c);
            assert!(body.is_none());
            assert!(f.has_errors());
        }
    }

    #[test]
    fn policy_requires_expiry_within_the_limit_and_the_name_pattern() {
        let p = KeyPolicy {
            max_days: Some(90),
            name_pattern: Some(regex::Regex::new("^ci-[a-z]+$").unwrap()),
            require_reason: true,
        };
        let run = |i: CreateKeyInput| {
            let mut f = KeyForm::blank("t".into(), &p);
            (validate(&i, &mut f, &p), f)
        };
        let mut ok = input(
            "ci-deploy",
            Some("on"),
            &(OffsetDateTime::now_utc().date() + time::Duration::days(90)).to_string(),
        );
        ok.reason = Some("OPS-12".into());
        assert!(run(ok).0.is_some());
        let mut never = input("ci-deploy", None, "");
        never.reason = Some("OPS-12".into());
        assert!(
            run(never)
                .1
                .date_error
                .unwrap()
                .contains("requires every key to expire")
        );
        let mut far = input(
            "ci-deploy",
            Some("on"),
            &(OffsetDateTime::now_utc().date() + time::Duration::days(91)).to_string(),
        );
        far.reason = Some("OPS-12".into());
        assert!(run(far).1.date_error.unwrap().contains("at most 90 days"));
        let mut bad_name = input("Deploy", None, "");
        bad_name.reason = Some("x".into());
        assert!(
            run(bad_name)
                .1
                .name_error
                .unwrap()
                .contains("naming policy")
        );
        let no_reason = input(
            "ci-deploy",
            Some("on"),
            &(OffsetDateTime::now_utc().date() + time::Duration::days(9)).to_string(),
        );
        assert!(run(no_reason).1.reason_error.is_some());
    }

    #[test]
    fn entered_values_are_kept_on_error() {
        let (_, f) = check(input("my key", Some("on"), "2030-02-30"));
        assert_eq!(f.name, "my key");
        assert!(f.expire);
        assert_eq!(f.date_expire, "2030-02-30");
    }
}
