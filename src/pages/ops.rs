//! Probes for orchestrators: unauthenticated, secret-free.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// How long a readiness verdict is reused before Vultr is asked again.
pub const READY_TTL: Duration = Duration::from_secs(30);

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// `GET /readyz`: 503 when this replica cannot serve pages (its database
/// unreachable, or its schema not current). Vultr's state is in the body and
/// in `keydesk_upstream_up`, never in the status: every replica shares it,
/// and taking them all out would hide keydesk's own error page and stall a
/// rolling update. Vultr is asked at most every 30 s.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let upstream = {
        let mut cached = state.readiness.lock().await;
        match &*cached {
            Some((at, v)) if at.elapsed() < READY_TTL => v.clone(),
            _ => {
                let v = state.check_upstream().await;
                if let Err(reason) = &v {
                    tracing::warn!(reason = %reason, "Vultr not usable");
                }
                *cached = Some((Instant::now(), v.clone()));
                v
            }
        }
    };
    let upstream_json = match &upstream {
        Ok(()) => json!({"ok": true}),
        Err(reason) => json!({"ok": false, "reason": reason}),
    };
    match state.db.serving_check().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"ready": true, "upstream": upstream_json})),
        )
            .into_response(),
        Err(reason) => {
            tracing::warn!(reason = %reason, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"ready": false, "reason": reason, "upstream": upstream_json})),
            )
                .into_response()
        }
    }
}

/// `keydesk healthcheck`: exits 0 when the liveness probe at `url` answers 2xx.
pub async fn probe(url: &str) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{url} answered {}", r.status())),
        Err(e) => Err(format!("{url}: {e}")),
    }
}
