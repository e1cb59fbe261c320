//! `GET /audit`: the attributed history, newest first, filterable.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tower_sessions::Session;

use super::{Layout, render};
use crate::app::AppState;
use crate::audit::{Entry, Filter};
use crate::error::AppError;
use crate::identity::Identity;

const PER_PAGE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(flatten)]
    filter: Filter,
    #[serde(default)]
    page: Option<String>,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditView {
    pub layout: Layout,
    pub entries: Vec<Entry>,
    pub filter: Filter,
    pub total: i64,
    pub page: i64,
    pub pages: i64,
}

impl AuditView {
    pub fn f<'a>(&self, v: &'a Option<String>) -> &'a str {
        v.as_deref().unwrap_or("")
    }
    /// Link to another page of the same filtered view.
    pub fn page_href(&self, page: i64) -> String {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for (k, v) in [
            ("actor", &self.filter.actor),
            ("user", &self.filter.user),
            ("action", &self.filter.action),
            ("outcome", &self.filter.outcome),
        ] {
            if let Some(v) = v.as_deref().filter(|s| !s.is_empty()) {
                pairs.push((k, v));
            }
        }
        let page = page.to_string();
        pairs.push(("page", &page));
        let qs: Vec<String> = pairs
            .into_iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .collect();
        format!("/audit?{}", qs.join("&"))
    }
}

pub async fn audit_page(
    State(state): State<AppState>,
    who: Identity,
    session: Session,
    Query(q): Query<AuditQuery>,
) -> Result<Response, AppError> {
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
    let layout = Layout::new(&who, &session).await;
    Ok(render(
        StatusCode::OK,
        &AuditView {
            layout,
            entries,
            filter: q.filter,
            total,
            page,
            pages: ((total + PER_PAGE - 1) / PER_PAGE).max(1),
        },
    ))
}
