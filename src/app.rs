//! Application state, the one router builder, middleware order, and the
//! `serve` / `demo` entry points with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, MemoryStore, SessionManagerLayer};

use crate::audit::AuditStore;
use crate::idempotency::FormTokens;
use crate::identity::{Access, AuthMode};
use crate::pages::keys::KeyPolicy;
use crate::pages::{assets, audit, keys, ops, reports, users};
use crate::vultr::{ClientOptions, VultrClient};

/// The last readiness verdict and when it was reached.
pub type Readiness = Arc<tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>>;

/// Everything a handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub vultr: VultrClient,
    pub auth: AuthMode,
    pub access: Access,
    pub policy: KeyPolicy,
    pub tokens: Arc<FormTokens>,
    pub audit: AuditStore,
    pub page_size: u32,
    pub cookie_secure: bool,
    pub readiness: Readiness,
    pub reports: Arc<crate::report::Reports>,
}

/// What `serve`, `demo` and the tests configure.
pub struct Settings {
    pub vultr_url: String,
    pub root_key: SecretString,
    pub auth: AuthMode,
    pub access: Access,
    pub policy: KeyPolicy,
    pub audit_db: String,
    pub cookie_secure: bool,
    pub upstream: ClientOptions,
    pub page_size: u32,
}

impl AppState {
    pub async fn new(s: Settings) -> Result<Self, String> {
        let vultr = VultrClient::with_options(&s.vultr_url, s.root_key, s.upstream)
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        crate::metrics::install();
        let audit = AuditStore::open(&s.audit_db)
            .await
            .map_err(|e| format!("KEYDESK_AUDIT_DB {}: {e}", s.audit_db))?;
        Ok(Self {
            vultr,
            auth: s.auth,
            access: s.access,
            policy: s.policy,
            tokens: Arc::new(FormTokens::default()),
            audit,
            page_size: s.page_size,
            cookie_secure: s.cookie_secure,
            readiness: Arc::new(tokio::sync::Mutex::new(None)),
            reports: Arc::new(crate::report::Reports::default()),
        })
    }
}

/// Largest request body accepted (forms are tiny).
const BODY_LIMIT: usize = 64 * 1024;
/// A request that takes longer than this is answered 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Content Security Policy: only our own static files; no inline script or style.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The one router: every path is spelled here.
pub fn build_router(state: AppState) -> Router {
    let sessions = SessionManagerLayer::new(MemoryStore::default())
        .with_name("keydesk_session")
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_secure(state.cookie_secure)
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(8)));

    let x_request_id = HeaderName::from_static("x-request-id");

    Router::new()
        .route("/", get(users::index))
        .route("/users", get(users::list_users))
        .route("/users/{id}", get(users::show_user))
        .route(
            "/users/{id}/keys",
            get(users::keys_anchor).post(keys::create_key),
        )
        .route(
            "/users/{id}/keys/{key_id}/delete",
            get(keys::confirm_delete).post(keys::revoke_key),
        )
        .route(
            "/users/{id}/keys/{key_id}/rotate",
            get(keys::rotate_form).post(keys::rotate_key),
        )
        .route(
            "/users/{id}/api-access",
            get(users::confirm_api_access).post(users::set_api_access),
        )
        .route("/reports/keys", get(reports::keys_report))
        .route(
            "/reports/keys/scan",
            axum::routing::post(reports::start_scan),
        )
        .route("/audit", get(audit::audit_page))
        .route("/audit.csv", get(audit::audit_csv))
        .route("/audit.jsonl", get(audit::audit_jsonl))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(crate::metrics::metrics_page))
        .route("/static/{name}", get(assets::serve_static))
        // Innermost first: these run closest to the handlers.
        .layer(axum::middleware::from_fn(crate::csrf::check_origin))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::identity::require_identity,
        ))
        .layer(sessions)
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(
            ServiceBuilder::new()
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
                    HeaderValue::from_static(CSP),
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
                .layer(axum::middleware::from_fn(crate::error::error_pages))
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

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
