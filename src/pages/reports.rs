//! `GET /reports/keys`: expired keys, keys expiring within N days and keys
//! that never expire, across all users; `POST /reports/keys/scan` starts a scan.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use time::OffsetDateTime;
use tower_sessions::Session;

use super::{Layout, render, session_id};
use crate::app::AppState;
use crate::error::AppError;
use crate::idempotency::Claim;
use crate::identity::Identity;
use crate::report::Row;
use crate::vultr::KeyState;

const SCAN_SCOPE: &str = "report:scan";

#[derive(Deserialize, Default)]
pub struct ReportQuery {
    #[serde(default)]
    days: Option<String>,
}

/// One section of the report.
pub struct Bucket {
    pub title: String,
    pub id: &'static str,
    pub rows: Vec<Row>,
}

#[derive(Template)]
#[template(path = "reports/keys.html")]
pub struct KeysReportView {
    pub layout: Layout,
    pub days: i64,
    pub token: String,
    /// (done, total, seconds, started_by) while a scan runs.
    pub running: Option<(usize, usize, u64, String)>,
    pub has_report: bool,
    pub age: String,
    pub took: String,
    pub users: usize,
    pub failed_users: usize,
    pub buckets: Vec<Bucket>,
    pub outside: usize,
    pub error: Option<String>,
}

fn ago(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s => format!("{} h {} min ago", s / 3600, (s % 3600) / 60),
    }
}

pub async fn keys_report(
    State(state): State<AppState>,
    who: Identity,
    session: Session,
    Query(q): Query<ReportQuery>,
) -> Result<Response, AppError> {
    let days = q
        .days
        .as_deref()
        .and_then(|d| d.parse::<i64>().ok())
        .filter(|d| (1..=3650).contains(d))
        .unwrap_or(30);
    let snap = state.reports.snapshot();
    let token = state
        .tokens
        .issue(&who.email, SCAN_SCOPE, session_id(&session));
    let mut view = KeysReportView {
        layout: Layout::new(&who, &session).await,
        days,
        token,
        running: snap.running.map(|(d, t, e, by)| (d, t, e.as_secs(), by)),
        has_report: snap.last.is_some(),
        age: String::new(),
        took: String::new(),
        users: 0,
        failed_users: 0,
        buckets: vec![],
        outside: 0,
        error: snap.last_error,
    };
    if let Some(r) = snap.last {
        view.age = ago((OffsetDateTime::now_utc() - r.finished).whole_seconds());
        view.took = format!("{:.1} s", r.took.as_secs_f64());
        view.users = r.users;
        view.failed_users = r.failed_users;
        view.outside = r.rows.iter().filter(|r| r.outside).count();
        let (mut expired, mut expiring, mut never) = (vec![], vec![], vec![]);
        for row in r.rows.iter() {
            match row.key.state() {
                KeyState::Expired => expired.push(row.clone()),
                KeyState::ExpiresIn(n) if n <= days => expiring.push(row.clone()),
                KeyState::Never => never.push(row.clone()),
                KeyState::ExpiresIn(_) => {}
            }
        }
        view.buckets = vec![
            Bucket {
                title: "Expired".into(),
                id: "expired",
                rows: expired,
            },
            Bucket {
                title: format!("Expiring within {days} days"),
                id: "expiring",
                rows: expiring,
            },
            Bucket {
                title: "Never expire".into(),
                id: "never",
                rows: never,
            },
        ];
    }
    Ok(render(StatusCode::OK, &view))
}

#[derive(Deserialize, Default)]
pub struct ScanInput {
    #[serde(default)]
    form_token: Option<String>,
}

/// Starts a scan (any signed-in role: it only reads) and goes to the report.
pub async fn start_scan(
    State(state): State<AppState>,
    who: Identity,
    session: Session,
    Form(input): Form<ScanInput>,
) -> Result<Response, AppError> {
    let token = input.form_token.unwrap_or_default();
    match state.tokens.claim(
        &token,
        &who.email,
        SCAN_SCOPE,
        session_id(&session).as_deref(),
    ) {
        Claim::Claimed => {
            state.tokens.complete(&token, None);
            state
                .reports
                .start(state.vultr.clone(), state.audit.clone(), &who.email);
        }
        Claim::Replay { .. } => {}
        Claim::Invalid => {
            return Err(AppError::Forbidden(
                "This scan request has expired or was not issued to you. Reload the report and try again.".into(),
            ));
        }
    }
    Ok(Redirect::to("/reports/keys").into_response())
}
