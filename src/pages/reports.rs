//! `GET /reports/keys`: expired keys, keys expiring within N days and keys
//! that never expire, across all users; `POST /reports/keys/scan` starts a scan.

use askama::Template;
use axum::Form;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use super::{Layout, paths, render};
use crate::error::AppError;
use crate::idempotency::{Claim, Scope};
use crate::identity::Staff;
use crate::report::Row;
use crate::vultr::KeyState;
use crate::write::Ctx;

#[derive(Deserialize, Default)]
pub struct ReportQuery {
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

/// `GET /reports/keys`: the last scan's buckets, or the running scan's progress.
pub async fn keys_report(
    Staff(_): Staff,
    ctx: Ctx,
    Query(q): Query<ReportQuery>,
) -> Result<Response, AppError> {
    let days = q
        .days
        .as_deref()
        .and_then(|d| d.parse::<i64>().ok())
        .filter(|d| (1..=3650).contains(d))
        .unwrap_or(30);
    let snap = ctx.report().await?;
    let token = ctx.issue(Scope::ReportScan).await?;
    let mut view = KeysReportView {
        layout: ctx.layout().await,
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
        view.age = ago((OffsetDateTime::now_utc() - r.finished()).whole_seconds());
        view.took = format!("{:.1} s", r.took_ms as f64 / 1000.0);
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
    form_token: Option<String>,
    /// `revoke-expired`: back to the clean-up page that offered the button.
    then: Option<String>,
}

/// Starts a scan (any signed-in role: it only reads) and goes to the report,
/// or back to the clean-up confirmation.
pub async fn scan_start(
    Staff(_): Staff,
    ctx: Ctx,
    Form(input): Form<ScanInput>,
) -> Result<Response, AppError> {
    let (state, who) = (&ctx.state, &ctx.who);
    let token = input.form_token.unwrap_or_default();
    let sid = ctx.session_binding().await;
    match state
        .tokens
        .claim(&token, &who.email, Scope::ReportScan, sid.as_deref())
        .await
        .map_err(AppError::store)?
    {
        Claim::Claimed => {
            state.tokens.complete(&token, None).await;
            // Joins a scan already running on any replica.
            state
                .reports
                .start(state.vultr.clone(), state.audit.clone(), &who.email)
                .await
                .map_err(AppError::store)?;
        }
        Claim::Replay { .. } => {}
        Claim::Invalid => {
            return Err(AppError::Forbidden(
                "This scan request has expired or was not issued to you. Reload the report and try again.".into(),
            ));
        }
    }
    let next = match input.then.as_deref() {
        Some("revoke-expired") => paths::KEYS_REVOKE_EXPIRED,
        _ => paths::KEYS_REPORT,
    };
    Ok(Redirect::to(next).into_response())
}
