//! OpenID mode's own pages: `GET /auth/login?next=` starts a sign-in,
//! `GET /auth/callback` finishes it, `POST /auth/logout` ends it (at the
//! provider too, when it offers `end_session_endpoint`), and
//! `GET /auth/signed-out` says so. In the other modes they do not exist.
//! A refused sign-in is counted in `keydesk_signin_refusals_total{reason}`
//! and logged; it is an `access.denied` entry only once the provider has
//! answered with tokens (someone signed in there): an anonymous callback,
//! even one replaying a started sign-in's cookie, writes nothing.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{Layout, render};
use crate::audit::{AuditAction, Intent, Outcome};
use crate::error::AppError;
use crate::identity::{
    AuthMode, Identity, Role, found_with, login_link, request_id, start_sign_in,
};
use crate::oidc::{self, Oidc};
use crate::state::AppState;

/// Who a refused sign-in is recorded as when the provider named nobody.
const UNKNOWN: &str = "(sign-in)";

fn oidc_of(state: &AppState) -> Result<Arc<Oidc>, AppError> {
    match &state.auth {
        AuthMode::Oidc(o) => Ok(o.clone()),
        _ => Err(AppError::NotFound(
            "Sign-in pages exist only with KEYDESK_AUTH_MODE=oidc; here the SSO proxy signs people in."
                .into(),
        )),
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /auth/login?next=/path`: to the provider, coming back to `next`.
pub async fn login(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, AppError> {
    let oidc = oidc_of(&state)?;
    let next = match q.next.as_deref() {
        None | Some("") => "/",
        Some(n) => oidc::safe_next(n).ok_or_else(|| {
            AppError::BadRequest(
                "next must be a path on keydesk (starting with a single /). Nothing was done."
                    .into(),
            )
        })?,
    };
    if let Ok(Some(_)) = oidc::session::current(&session, oidc.settings.lifetimes).await {
        return Ok(Redirect::to(next).into_response());
    }
    let (url, cookie) = start_sign_in(&oidc, &state.sign_ins(), &headers, next)
        .await
        .map_err(AppError::ProviderDown)?;
    Ok(found_with(&url, cookie))
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// Why a sign-in was refused, as counted in `keydesk_signin_refusals_total`.
#[derive(Clone, Copy)]
enum Refusal {
    /// No sign-in with this `state` was started in this browser (or it
    /// expired, or was used): anonymous, never audited.
    NotStarted,
    /// The provider answered with an error.
    ProviderError,
    /// The provider sent no code.
    NoCode,
    /// The code exchange failed (a junk or spent code, the provider down):
    /// nobody signed in at the provider, so it is not audited.
    NotRedeemed,
    /// The provider answered with tokens that failed keydesk's checks.
    NotVerified,
    /// A verified person whom the settings do not let in (domain, email).
    NotAllowed,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::NotStarted => "not_started",
            Refusal::ProviderError => "provider_error",
            Refusal::NoCode => "no_code",
            Refusal::NotRedeemed => "not_redeemed",
            Refusal::NotVerified => "not_verified",
            Refusal::NotAllowed => "not_allowed",
        }
    }
}

/// `GET /auth/callback`: the provider's answer to a sign-in this browser started.
pub async fn callback(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, AppError> {
    let oidc = oidc_of(&state)?;
    let taken = match q.state.as_deref() {
        Some(s) if !s.is_empty() => state.sign_ins().take(&headers, s).await,
        _ => None,
    };
    let Some((pending, forget)) = taken else {
        // Nothing ties this request to anyone: counted and logged, never
        // written (anyone on the internet can send it).
        refused(
            Refusal::NotStarted,
            "callback without a sign-in started in this browser",
        );
        return Err(AppError::SignIn(
            "This sign-in was not started in this browser, was already used, or took too long. Nothing was done; start again.".into(),
            login_link("/"),
        ));
    };
    // Every answer from here forgets the started sign-in in this browser.
    let forgetting = |resp: Response| match &forget {
        Some(cookie) => ([(header::SET_COOKIE, cookie.clone())], resp).into_response(),
        None => resp,
    };
    // Audited only once the provider has answered with tokens (someone
    // signed in there): a started sign-in costs a stranger nothing and can
    // be replayed from its cookie, so a refusal before that writes nothing.
    let deny = |kind: Refusal, who: Option<String>, reason: String, shown: String| {
        let state = state.clone();
        let headers = headers.clone();
        async move {
            refused(kind, &reason);
            if matches!(
                kind,
                Refusal::NotStarted
                    | Refusal::ProviderError
                    | Refusal::NoCode
                    | Refusal::NotRedeemed
            ) {
                return AppError::SignIn(shown, login_link("/")).into_response();
            }
            let intent = Intent {
                request_id: request_id(&headers),
                reason: Some(reason),
                ..Intent::new(
                    who.as_deref().unwrap_or(UNKNOWN),
                    "none",
                    AuditAction::AccessDenied,
                )
            };
            state.audit.record(&intent, Outcome::Failed).await;
            AppError::SignIn(shown, login_link("/")).into_response()
        }
    };
    if let Some(err) = q.error.as_deref() {
        let err: String = err.chars().filter(|c| !c.is_control()).take(100).collect();
        let shown = "The sign-in provider did not sign you in. Nothing was done.";
        let resp = deny(
            Refusal::ProviderError,
            None,
            format!("the provider answered {err}"),
            shown.into(),
        );
        return Ok(forgetting(resp.await));
    }
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        let shown = "The sign-in provider sent no code. Nothing was done.";
        let resp = deny(
            Refusal::NoCode,
            None,
            "callback without a code".into(),
            shown.into(),
        );
        return Ok(forgetting(resp.await));
    };
    let who = match oidc.finish(code, &pending).await {
        Ok(who) => who,
        Err(denied) => {
            let (kind, shown) = match &denied.email {
                Some(email) => (
                    Refusal::NotAllowed,
                    format!(
                        "keydesk did not sign you in as {email}: {}. Nothing was done.",
                        denied.reason
                    ),
                ),
                None if !denied.answered => (
                    Refusal::NotRedeemed,
                    "keydesk could not verify this sign-in. Nothing was done; start again."
                        .to_string(),
                ),
                None => (
                    Refusal::NotVerified,
                    "keydesk could not verify this sign-in. Nothing was done; start again."
                        .to_string(),
                ),
            };
            let resp = deny(kind, denied.email, denied.reason, shown);
            return Ok(forgetting(resp.await));
        }
    };
    oidc::session::sign_in(&session, &who)
        .await
        .map_err(AppError::Internal)?;
    let role = role_name(&state, &who);
    let intent = Intent {
        request_id: request_id(&headers),
        reason: (!who.groups.is_empty()).then(|| format!("groups: {}", who.groups.join(", "))),
        ..Intent::new(&who.email, role, AuditAction::AccessSignin)
    };
    state.audit.record(&intent, Outcome::Ok).await;
    tracing::info!(user = %who.email, "signed in with OpenID Connect");
    Ok(forgetting(Redirect::to(&pending.next).into_response()))
}

/// Counts and logs a refused sign-in.
fn refused(kind: Refusal, reason: &str) {
    metrics::counter!("keydesk_signin_refusals_total", "reason" => kind.label()).increment(1);
    tracing::warn!(reason = %reason, kind = kind.label(), "OpenID sign-in refused");
}

/// The role the policy gives `who` now, for the audit ("none": no staff role).
fn role_name(state: &AppState, who: &oidc::SignedIn) -> &'static str {
    state
        .access
        .role_of(&who.email, &who.groups)
        .map_or("none", Role::as_str)
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    sign_out_token: String,
}

/// `POST /auth/logout`: ends the session here, then at the provider.
pub async fn logout(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Result<Response, AppError> {
    let oidc = oidc_of(&state)?;
    let signed_in = session
        .get::<oidc::SignedIn>(oidc::session::SIGNED_IN_KEY)
        .await
        .ok()
        .flatten();
    let Some(who) = signed_in else {
        return Ok(Redirect::to(crate::pages::paths::SIGNED_OUT).into_response());
    };
    if !oidc::session::same_secret(&who.sign_out, &form.sign_out_token) {
        return Err(AppError::Forbidden(
            "This sign-out form did not come from your keydesk page. You are still signed in; use the Sign out button."
                .into(),
        ));
    }
    oidc::session::sign_out(&session).await;
    let role = role_name(&state, &who);
    let intent = Intent {
        request_id: request_id(&headers),
        ..Intent::new(&who.email, role, AuditAction::AccessSignout)
    };
    state.audit.record(&intent, Outcome::Ok).await;
    let to = oidc
        .end_session_url(Some(&who.id_token))
        .await
        .unwrap_or_else(|| crate::pages::paths::SIGNED_OUT.to_string());
    Ok(Redirect::to(&to).into_response())
}

#[derive(askama::Template)]
#[template(path = "auth/signed_out.html")]
struct SignedOutPage {
    layout: Layout,
    at_provider: bool,
}

/// `GET /auth/signed-out`: where the provider sends people back.
pub async fn signed_out(State(state): State<AppState>) -> Result<Response, AppError> {
    let oidc = oidc_of(&state)?;
    let at_provider = oidc.end_session_url(None).await.is_some();
    Ok(render(
        axum::http::StatusCode::OK,
        &SignedOutPage {
            layout: Layout::plain(None::<&Identity>),
            at_provider,
        },
    ))
}
