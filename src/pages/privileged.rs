//! `GET /reports/keys/privileged` and `/reports/keys/privileged.csv`: the
//! keys of root-equivalent and sensitive users and of users whose allowlist
//! admits any address, from the last scan. Keys that never expire first,
//! then the strongest; each with its level, reach and origin.

use askama::Template;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{Layout, render};
use crate::audit::neutralise;
use crate::error::AppError;
use crate::identity::Staff;
use crate::powers::{Level, Powers};
use crate::report::Row;
use crate::write::Ctx;

#[derive(Deserialize, Default)]
pub struct PrivilegedQuery {
    level: Option<String>,
}

/// One privileged key, as the page and the CSV show it.
pub struct Privileged {
    pub row: Row,
    pub level: Level,
}

impl Privileged {
    pub fn expires(&self) -> String {
        self.row
            .key
            .date_expire
            .clone()
            .filter(|d| !d.is_empty() && self.row.key.expiry_time().is_some())
            .unwrap_or_else(|| "never".into())
    }
    pub fn origin(&self) -> &'static str {
        if self.row.outside {
            "outside keydesk"
        } else {
            "keydesk"
        }
    }
}

#[derive(Template)]
#[template(path = "reports/privileged.html")]
pub struct PrivilegedView {
    pub layout: Layout,
    pub has_report: bool,
    pub level: String,
    pub keys: Vec<Privileged>,
}

impl PrivilegedView {
    pub fn csv_href(&self) -> String {
        if self.level.is_empty() {
            super::paths::PRIVILEGED_CSV.to_string()
        } else {
            format!("{}?level={}", super::paths::PRIVILEGED_CSV, self.level)
        }
    }
}

/// The privileged keys of `rows`, at `level` when given: never-expiring
/// first, then root before sensitive before the rest, then by expiry.
pub fn privileged(rows: &[Row], powers: &Powers, level: Option<Level>) -> Vec<Privileged> {
    let mut keys: Vec<Privileged> = rows
        .iter()
        .map(|r| Privileged {
            level: r.level(powers),
            row: r.clone(),
        })
        .filter(|p| p.level >= Level::Sensitive || p.row.anywhere == Some(true))
        .filter(|p| level.is_none_or(|l| p.level == l))
        .collect();
    keys.sort_by_key(|p| {
        let expiry = p.row.key.expiry_time().map(|t| t.unix_timestamp());
        (
            expiry.is_some(),
            std::cmp::Reverse(p.level),
            p.row.anywhere != Some(true),
            expiry,
        )
    });
    keys
}

fn level_of(q: &PrivilegedQuery) -> Result<Option<Level>, AppError> {
    match q.level.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        None => Ok(None),
        Some(l) => Level::parse(l).map(Some).ok_or_else(|| {
            AppError::BadRequest(format!(
                "Unknown level {l:?}: use root, sensitive or limited."
            ))
        }),
    }
}

async fn current(ctx: &Ctx, q: &PrivilegedQuery) -> Result<(bool, Vec<Privileged>), AppError> {
    let level = level_of(q)?;
    let snap = ctx.report().await?;
    Ok(match snap.last {
        Some(r) => (true, privileged(&r.rows, &ctx.state.powers, level)),
        None => (false, vec![]),
    })
}

/// `GET /reports/keys/privileged?level=`.
pub async fn privileged_report(
    Staff(_): Staff,
    ctx: Ctx,
    Query(q): Query<PrivilegedQuery>,
) -> Result<Response, AppError> {
    let (has_report, keys) = current(&ctx, &q).await?;
    let view = PrivilegedView {
        layout: ctx.layout().await,
        has_report,
        level: level_of(&q)?
            .map(|l| l.as_str().to_string())
            .unwrap_or_default(),
        keys,
    };
    Ok(render(StatusCode::OK, &view))
}

#[derive(serde::Serialize)]
struct CsvRow<'a> {
    user_id: &'a str,
    user_email: String,
    key_id: &'a str,
    key_name: String,
    expires: String,
    level: &'static str,
    acls: String,
    reach: &'static str,
    origin: &'static str,
}

/// `GET /reports/keys/privileged.csv?level=`: the same rows, safe to open in a spreadsheet.
pub async fn privileged_csv(
    Staff(_): Staff,
    ctx: Ctx,
    Query(q): Query<PrivilegedQuery>,
) -> Result<Response, AppError> {
    let failed = |e: csv::Error| AppError::Internal(format!("csv: {e}"));
    let (_, keys) = current(&ctx, &q).await?;
    let mut w = csv::Writer::from_writer(Vec::new());
    for p in &keys {
        w.serialize(CsvRow {
            user_id: &p.row.user_id,
            user_email: neutralise(&p.row.user_email).into_owned(),
            key_id: &p.row.key.id,
            key_name: neutralise(p.row.key.name_or_dash()).into_owned(),
            expires: p.expires(),
            level: p.level.as_str(),
            acls: neutralise(&p.row.acls.join(" ")).into_owned(),
            reach: p.row.reach_words(),
            origin: p.origin(),
        })
        .map_err(failed)?;
    }
    let body = w.into_inner().map_err(|e| failed(e.into_error().into()))?;
    Ok(super::audit::export(
        body,
        "text/csv; charset=utf-8",
        "keydesk-privileged-keys.csv",
    ))
}
