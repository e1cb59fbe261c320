//! The one router: every route, and the middleware in order. Paths are
//! spelled here as patterns and in `pages::paths` as links.

use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::identity::{AuthMode, Gate};
use crate::pages::confirm;
use crate::pages::keys::{create, revoke, rotate};
use crate::pages::{
    allowlist, approvals, assets, audit, auth, brake, claim, cleanup, grants, me, notices,
    offboard, ops, privileged, reinstate, reports, reviews, users,
};
use crate::session_store::DbSessionStore;
use crate::state::AppState;

/// Largest request body accepted (forms are tiny).
const BODY_LIMIT: usize = 64 * 1024;
/// A request that takes longer than this is answered 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Content Security Policy: only our own static files; no inline script or style.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The policy for this mode: in OpenID mode the sign-out form ends in a
/// redirect to the provider, which `form-action` must allow (Chrome applies
/// it to a form's redirects too).
fn csp(auth: &AuthMode) -> HeaderValue {
    let provider = match auth {
        AuthMode::Oidc(o) => o.settings.issuer_origin(),
        _ => None,
    };
    provider
        .map(|origin| {
            CSP.replace(
                "form-action 'self'",
                &format!("form-action 'self' {origin}"),
            )
        })
        .and_then(|policy| HeaderValue::from_str(&policy).ok())
        .unwrap_or_else(|| HeaderValue::from_static(CSP))
}

/// Where `/metrics`, `/healthz` and `/readyz` are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probes {
    /// On the public listener, with the pages.
    Public,
    /// On `KEYDESK_ADMIN_LISTEN` only: the public listener answers 404.
    Admin,
}

/// The probes and metrics, shared by the public and the admin router.
fn probe_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(crate::metrics::metrics_page))
}

/// `KEYDESK_ADMIN_LISTEN`'s router: the probes and metrics, nothing else.
/// No identity and no session: that address is reached only from inside.
pub fn admin_router(state: AppState) -> Router {
    probe_routes()
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// The one router: every path is spelled here.
pub fn build_router(state: AppState, probes: Probes) -> Router {
    // OpenID mode: the provider's redirect back is a cross-site navigation,
    // which must carry the session (Lax); POSTs still never do cross-site,
    // and GETs never write. The proxy modes keep Strict.
    let (same_site, inactivity) = match &state.auth {
        AuthMode::Oidc(o) => (
            SameSite::Lax,
            time::Duration::seconds(o.settings.lifetimes.max_age.max(8 * 3600)),
        ),
        _ => (SameSite::Strict, time::Duration::hours(8)),
    };
    let sessions = SessionManagerLayer::new(DbSessionStore::new(state.db.clone()))
        .with_name(crate::session_store::cookie_name(state.cookie_secure))
        .with_http_only(true)
        .with_same_site(same_site)
        .with_secure(state.cookie_secure)
        .with_expiry(Expiry::OnInactivity(inactivity));

    let x_request_id = HeaderName::from_static("x-request-id");
    let clients = crate::identity::ClientGate::new(
        state.clients.clone(),
        &state.trusted_proxies,
        &state.auth,
        crate::session_store::cookie_name(state.cookie_secure),
    );
    let probes = match probes {
        Probes::Public => probe_routes(),
        Probes::Admin => Router::new(),
    };

    Router::new()
        .route("/", get(users::index))
        .route("/users", get(users::users_list))
        .route("/users/{id}", get(users::user_show))
        .route(
            "/users/{id}/keys",
            get(users::keys_anchor).post(create::key_create),
        )
        .route(
            "/users/{id}/keys/{key_id}/delete",
            get(revoke::revoke_confirm).post(revoke::revoke_submit),
        )
        .route(
            "/users/{id}/keys/{key_id}/rotate",
            get(rotate::rotate_form).post(rotate::rotate_submit),
        )
        .route(
            "/users/{id}/api-access",
            get(confirm::show::<brake::BrakeConfirmView>).post(brake::brake_submit),
        )
        .route(
            "/users/{id}/offboard",
            get(confirm::show::<offboard::OffboardConfirmView>).post(offboard::offboard_submit),
        )
        .route(
            "/users/{id}/reinstate",
            get(confirm::show::<reinstate::ReinstateView>).post(reinstate::reinstate_submit),
        )
        .route("/users/{id}/grants", post(grants::grant_create))
        .route(
            "/users/{id}/allowlist",
            get(allowlist::add_form).post(allowlist::add_submit),
        )
        .route(
            "/users/{id}/allowlist/remove",
            get(allowlist::remove_confirm).post(allowlist::remove_submit),
        )
        .route("/grants", get(grants::grants_list))
        .route(
            "/grants/{grant}/revoke",
            get(grants::grant_revoke_confirm).post(grants::grant_revoke),
        )
        .route(
            "/claim/{grant}",
            get(claim::claim_show).post(claim::claim_submit),
        )
        .route("/me", get(me::me_show))
        .route(
            "/me/keys/new",
            get(me::new_key_form).post(me::new_key_submit),
        )
        .route(
            "/me/keys/{key_id}/rotate",
            get(me::rotate_form).post(me::rotate_submit),
        )
        .route(
            "/me/keys/{key_id}/revoke",
            get(me::revoke_confirm).post(me::revoke_submit),
        )
        .route("/approvals", get(approvals::approvals_list))
        .route("/approvals/{id}", get(approvals::approval_show))
        .route("/approvals/{id}/approve", post(approvals::approval_approve))
        .route("/approvals/{id}/deny", post(approvals::approval_deny))
        .route("/approvals/{id}/execute", post(approvals::approval_execute))
        .route(
            "/approvals/{id}/withdraw",
            post(approvals::approval_withdraw),
        )
        .route("/reviews", get(reviews::reviews_list))
        .route(
            "/reviews/new",
            get(reviews::review_new_form).post(reviews::review_new_submit),
        )
        .route("/reviews/{id}", get(reviews::review_show))
        .route("/reviews/{id}/decide", post(reviews::review_decide))
        .route("/reviews/{id}/end", post(reviews::review_end))
        .route("/me/reviews/{id}/decide", post(reviews::my_decide))
        .route("/notices", get(notices::notices_list))
        .route("/notices/run", post(notices::notices_run))
        .route("/reports/keys", get(reports::keys_report))
        .route(
            "/reports/keys/revoke-expired",
            get(cleanup::cleanup_confirm).post(cleanup::cleanup_submit),
        )
        .route("/reports/keys/scan", post(reports::scan_start))
        .route(
            "/reports/keys/privileged",
            get(privileged::privileged_report),
        )
        .route(
            "/reports/keys/privileged.csv",
            get(privileged::privileged_csv),
        )
        .route("/audit", get(audit::audit_list))
        .route("/audit.csv", get(audit::audit_csv))
        .route("/audit.jsonl", get(audit::audit_jsonl))
        .route("/auth/login", get(auth::login))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/signed-out", get(auth::signed_out))
        .route("/static/{name}", get(assets::serve_static))
        .merge(probes)
        // Innermost first: these run closest to the handlers.
        .layer(axum::middleware::from_fn(crate::csrf::check_origin))
        .layer(axum::middleware::from_fn_with_state(
            Gate::from_ref(&state),
            crate::identity::require_identity,
        ))
        .layer(sessions)
        // Before the session is read or anything written: anonymous
        // requests and sign-in steps within their address's quota.
        .layer(axum::middleware::from_fn_with_state(
            clients,
            crate::identity::limit_clients,
        ))
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(
            ServiceBuilder::new()
                // A client's request id only when it has the documented shape.
                .layer(axum::middleware::map_request(crate::request_id::keep_valid))
                .layer(SetRequestIdLayer::new(
                    x_request_id.clone(),
                    MakeRequestUuid,
                ))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                        let id = req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        // Path only: bodies, query strings and cookies stay out of spans.
                        tracing::info_span!(
                            "request",
                            request_id = %id,
                            method = %req.method(),
                            path = %req.uri().path(),
                            user = tracing::field::Empty,
                        )
                    }),
                )
                .layer(PropagateRequestIdLayer::new(x_request_id))
                .layer(SetResponseHeaderLayer::overriding(
                    header::CONTENT_SECURITY_POLICY,
                    csp(&state.auth),
                ))
                .layer(SetResponseHeaderLayer::overriding(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetResponseHeaderLayer::overriding(
                    header::X_FRAME_OPTIONS,
                    HeaderValue::from_static("DENY"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("same-origin"),
                ))
                // Pages hold account data: not cached unless a handler says so.
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("no-store"),
                ))
                .layer(CompressionLayer::new())
                .layer(axum::middleware::from_fn(crate::pages::error::error_pages))
                // A panic becomes a bare 500 that `error_pages` renders: never a stack trace.
                .layer(CatchPanicLayer::new())
                .layer(axum::middleware::from_fn(limit_header_size))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    REQUEST_TIMEOUT,
                ))
                .layer(RequestBodyLimitLayer::new(BODY_LIMIT)),
        )
        .with_state(state)
}

/// Largest total size of request headers accepted.
const HEADER_LIMIT: usize = 16 * 1024;

/// Refuses requests whose headers add up to more than `HEADER_LIMIT` (431).
async fn limit_header_size(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > HEADER_LIMIT {
        return crate::error::AppError::HeadersTooLarge.into_response();
    }
    next.run(req).await
}
