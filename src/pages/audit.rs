//! `GET /audit`: the attributed history, newest first, filterable.

use askama::Template;
use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Layout, paths, render};
use crate::audit::{CsvSafe, Entry, Filter};
use crate::error::AppError;
use crate::identity::Staff;
use crate::write::Ctx;

const PER_PAGE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(flatten)]
    filter: Filter,
    page: Option<String>,
}

#[derive(Template)]
#[template(path = "audit/list.html")]
pub struct AuditListView {
    pub layout: Layout,
    pub entries: Vec<Entry>,
    pub filter: Filter,
    pub total: i64,
    pub page: i64,
    pub pages: i64,
}

impl AuditListView {
    pub fn f<'a>(&self, v: &'a Option<String>) -> &'a str {
        v.as_deref().unwrap_or("")
    }
    /// The current filter as a query string (for exports and paging).
    pub fn filter_qs(&self) -> String {
        self.page_href(0)
            .trim_start_matches(paths::AUDIT)
            .trim_start_matches('?')
            .split('&')
            .filter(|p| !p.starts_with("page="))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The pager's links: newer entries are on the page before.
    pub fn newer(&self) -> Option<String> {
        (self.page > 1).then(|| self.page_href(self.page - 1))
    }
    pub fn older(&self) -> Option<String> {
        (self.page < self.pages).then(|| self.page_href(self.page + 1))
    }
    /// Where the pager stands.
    pub fn at(&self) -> String {
        format!("Page {} of {}", self.page, self.pages)
    }

    /// Link to another page of the same filtered view.
    pub fn page_href(&self, page: i64) -> String {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for (k, v) in [
            ("actor", &self.filter.actor),
            ("user", &self.filter.user),
            ("action", &self.filter.action),
            ("outcome", &self.filter.outcome),
            ("level", &self.filter.level),
            ("group", &self.filter.group),
            ("review", &self.filter.review),
        ] {
            if let Some(v) = v.as_deref().filter(|s| !s.is_empty()) {
                pairs.push((k, v));
            }
        }
        let page = page.to_string();
        pairs.push(("page", &page));
        let qs: Vec<String> = pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={}", paths::enc(v)))
            .collect();
        format!("{}?{}", paths::AUDIT, qs.join("&"))
    }
}

/// Most rows one export returns.
const EXPORT_LIMIT: i64 = 100_000;

/// The entries an export holds: the page's filter, newest first, bounded.
async fn export_entries(ctx: &Ctx, q: &AuditQuery) -> Result<Vec<Entry>, AppError> {
    Ok(ctx.state.audit.list(&q.filter, EXPORT_LIMIT, 0).await?)
}

/// `GET /audit.csv`: the filtered trail as CSV, safe to open in a spreadsheet.
pub async fn audit_csv(
    Staff(_): Staff,
    ctx: Ctx,
    Query(q): Query<AuditQuery>,
) -> Result<Response, AppError> {
    let failed = |e: csv::Error| AppError::Internal(format!("csv: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    for e in &export_entries(&ctx, &q).await? {
        w.serialize(CsvSafe(e)).map_err(failed)?;
    }
    let body = w.into_inner().map_err(|e| failed(e.into_error().into()))?;
    Ok(export(body, "text/csv; charset=utf-8", "keydesk-audit.csv"))
}

/// `GET /audit.jsonl`: the filtered trail as JSON Lines, values as stored.
pub async fn audit_jsonl(
    Staff(_): Staff,
    ctx: Ctx,
    Query(q): Query<AuditQuery>,
) -> Result<Response, AppError> {
    let mut body = Vec::new();
    for e in &export_entries(&ctx, &q).await? {
        serde_json::to_writer(&mut body, e)
            .map_err(|e| AppError::Internal(format!("jsonl: {e}")))?;
        body.push(b'\n');
    }
    Ok(export(
        body,
        "application/jsonl; charset=utf-8",
        "keydesk-audit.jsonl",
    ))
}

pub(super) fn export(body: Vec<u8>, mime: &'static str, name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /audit`: the attributed history, newest first, filtered and paged.
pub async fn audit_list(
    Staff(_): Staff,
    ctx: Ctx,
    Query(q): Query<AuditQuery>,
) -> Result<Response, AppError> {
    let state = &ctx.state;
    let page = q
        .page
        .as_deref()
        .and_then(|p| p.parse::<i64>().ok())
        .filter(|p| *p >= 1 && *p <= 1_000_000)
        .unwrap_or(1);
    let total = state.audit.count(&q.filter).await?;
    let entries = state
        .audit
        .list(&q.filter, PER_PAGE, (page - 1) * PER_PAGE)
        .await?;
    let view = AuditListView {
        layout: ctx.layout().await,
        entries,
        filter: q.filter,
        total,
        page,
        pages: ((total + PER_PAGE - 1) / PER_PAGE).max(1),
    };
    Ok(render(StatusCode::OK, &view))
}
