//! Probes for orchestrators: unauthenticated, secret-free.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppState;
use crate::vultr::VultrError;

/// How long a readiness verdict is reused before Vultr is asked again.
pub const READY_TTL: Duration = Duration::from_secs(30);

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// One cheap authenticated call: is Vultr reachable and the root key accepted?
pub async fn check_upstream(state: &AppState) -> Result<(), String> {
    match state.vultr.list_users(1, None).await {
        Ok(_) => Ok(()),
        Err(VultrError::Api {
            status: 401 | 403, ..
        }) => Err("root key rejected by Vultr".to_string()),
        Err(VultrError::Unreachable(_)) => Err("Vultr API unreachable".to_string()),
        Err(VultrError::Timeout) => Err("Vultr API timed out".to_string()),
        Err(e) => Err(format!("Vultr API check failed: {e}")),
    }
}

/// `GET /readyz`: Vultr reachable and the root key accepted (cached 30 s).
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut cached = state.readiness.lock().await;
    let verdict = match &*cached {
        Some((at, v)) if at.elapsed() < READY_TTL => v.clone(),
        _ => {
            let v = check_upstream(&state).await;
            if let Err(reason) = &v {
                tracing::warn!(reason = %reason, "not ready");
            }
            *cached = Some((Instant::now(), v.clone()));
            v
        }
    };
    match verdict {
        Ok(()) => (StatusCode::OK, Json(json!({"ready": true}))).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": reason})),
        )
            .into_response(),
    }
}
