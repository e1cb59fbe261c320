//! `GET|POST /reports/keys/revoke-expired`: the "Expired" bucket of the
//! report cleared in one confirmed step. Each ticked key is checked again
//! at Vultr (still there, still expired) before its DELETE, every call goes
//! through the shared rate budget, and the page streams each outcome as it
//! happens. The work runs on even if the browser goes away.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;

use askama::Template;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::sync::mpsc;

use super::cleanup_job::carry_out;
use super::{Layout, render};
use crate::audit::{AuditAction, Intent};
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::identity::Operator;
use crate::ids::VultrId;
use crate::policy::check_reason;
use crate::report::Row;
use crate::vultr::KeyState;
use crate::write::{Ctx, Group, Refusal};

/// One expired key on the confirmation page.
pub struct CleanupRow {
    pub row: Row,
    /// A rotation replaced this key and it was never retired: its replacement.
    pub replaced_by: Option<String>,
}

#[derive(Template)]
#[template(path = "reports/cleanup_confirm.html")]
pub struct CleanupConfirmView {
    pub layout: Layout,
    pub has_report: bool,
    /// A scan runs now: the page refreshes until it ends.
    pub scanning: bool,
    /// No scan yet and none running: the token of the button that starts
    /// one (a POST; opening this page never starts anything).
    pub scan_token: Option<String>,
    pub rows: Vec<CleanupRow>,
    pub token: String,
    pub notice: Option<String>,
    pub require_reason: bool,
}

/// The expired keys of the last scan.
async fn expired_rows(ctx: &Ctx) -> Result<Option<Vec<Row>>, AppError> {
    Ok(expired_in(&ctx.report().await?))
}

fn expired_in(snap: &crate::report::Snapshot) -> Option<Vec<Row>> {
    snap.last.as_ref().map(|r| {
        r.rows
            .iter()
            .filter(|r| r.key.state() == KeyState::Expired)
            .cloned()
            .collect()
    })
}

/// The expired keys across all users, scanned now (when no scan exists).
async fn scan_expired(ctx: &Ctx) -> Result<Vec<Row>, AppError> {
    let progress = crate::report::Progress::default();
    let report = crate::report::scan(&ctx.state.vultr, &ctx.state.audit, &progress)
        .await
        .map_err(|e| AppError::Upstream(crate::vultr::VultrError::Unreachable(e)))?;
    Ok(report
        .rows
        .into_iter()
        .filter(|r| r.key.state() == KeyState::Expired)
        .collect())
}

async fn confirm_page(
    ctx: &Ctx,
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let snap = ctx.report().await?;
    let rows = expired_in(&snap);
    // No scan yet: a GET starts nothing; the page offers the button.
    let scanning = rows.is_none() && snap.running.is_some();
    let scan_token = if rows.is_none() && !scanning {
        Some(ctx.issue(Scope::ReportScan).await?)
    } else {
        None
    };
    let rotated = ctx.state.audit.rotated_keys().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "audit unavailable: rotated keys cannot be flagged");
        HashMap::new()
    });
    let view = CleanupConfirmView {
        layout: ctx.layout().await,
        has_report: rows.is_some(),
        scanning,
        scan_token,
        rows: rows
            .unwrap_or_default()
            .into_iter()
            .map(|row| CleanupRow {
                replaced_by: rotated.get(&row.key.id).cloned(),
                row,
            })
            .collect(),
        token: ctx.issue(Scope::KeysCleanup).await?,
        notice,
        require_reason: ctx.state.policy.require_reason,
    };
    Ok(render(status, &view))
}

/// The confirmation: every expired key of the last scan, all ticked; with
/// no scan yet, a button that starts one and comes back here.
pub async fn cleanup_confirm(Operator(_): Operator, ctx: Ctx) -> Result<Response, AppError> {
    confirm_page(&ctx, None, StatusCode::OK).await
}

/// The form: `key` repeats (`{user_id}/{key_id}`, one per ticked box), so
/// it is read by hand. The page sends `selection=ticked`; a form without it
/// and without any `key` means the whole bucket as the last scan listed it.
#[derive(Default)]
struct CleanupInput {
    form_token: Option<String>,
    reason: Option<String>,
    keys: Vec<String>,
    ticked: bool,
}

fn parse_input(body: &[u8]) -> CleanupInput {
    let mut input = CleanupInput::default();
    for (k, v) in form_urlencoded::parse(body) {
        match &*k {
            "form_token" => input.form_token = Some(v.into_owned()),
            "reason" => input.reason = Some(v.into_owned()),
            "key" => input.keys.push(v.into_owned()),
            "selection" => input.ticked = true,
            _ => {}
        }
    }
    input
}

/// `{user_id}/{key_id}` into its two ids.
fn parse_target(raw: &str) -> Result<(VultrId, VultrId), AppError> {
    let (u, k) = raw
        .split_once('/')
        .ok_or_else(|| AppError::BadRequest("A ticked key is not in the form user/key.".into()))?;
    Ok((VultrId::parse(u)?, VultrId::parse(k)?))
}

/// The end of the streamed result.
#[derive(Template)]
#[template(path = "reports/cleanup_summary.html")]
struct SummaryView {
    revoked: usize,
    gone: usize,
    skipped: usize,
    live: usize,
    group_id: i64,
}

/// The page around the streamed lines; split at the markers.
#[derive(Template)]
#[template(path = "reports/cleanup_run.html")]
struct RunView {
    layout: Layout,
    total: usize,
    users: usize,
}

const LINES: &str = "<!--lines-->";
const SUMMARY: &str = "<!--summary-->";

const TAKEN_OVER: &str = "<p class=\"warn\" id=\"cleanup-taken-over\">Another replica took this clean-up over and is finishing it: see the audit trail.</p>";

/// Takes the run's lease and records it with its keys, so another replica
/// can finish it if this one stops. False when it could not (the run goes
/// on, not resumable).
async fn durable(
    ctx: &Ctx,
    group: &Group,
    by_user: &BTreeMap<VultrId, Vec<VultrId>>,
    reason: Option<&str>,
) -> bool {
    let state = &ctx.state;
    let targets: Vec<(String, String)> = by_user
        .iter()
        .flat_map(|(u, keys)| keys.iter().map(move |k| (u.to_string(), k.to_string())))
        .collect();
    let lease = crate::cleanups::cleanup_job(group.id());
    let recorded = match state.leases.acquire(&lease).await {
        Ok(true) => {
            state
                .cleanups
                .start(group.id(), &ctx.who.email, reason, &targets)
                .await
        }
        Ok(false) => return false,
        Err(e) => Err(e),
    };
    match recorded {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "clean-up not recorded: it cannot be resumed elsewhere");
            // No record: nothing for another replica to take over.
            state.leases.release(&lease).await;
            false
        }
    }
}

/// Revokes the ticked expired keys, streaming each outcome.
pub async fn cleanup_submit(
    Operator(_): Operator,
    ctx: Ctx,
    body: Bytes,
) -> Result<Response, AppError> {
    let input = parse_input(&body);
    let reason = match check_reason(input.reason.as_deref(), &ctx.state.policy) {
        Ok(r) => r,
        Err(e) => return confirm_page(&ctx, Some(e), StatusCode::UNPROCESSABLE_ENTITY).await,
    };
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let claim = match ctx.claim_for(token, Scope::KeysCleanup, None, None).await {
        Ok(claim) => claim,
        Err(Refusal::Replay { .. }) => {
            return Err(AppError::Conflict(
                "This clean-up form was already submitted; it did nothing more. Rescan the report to see what is left.".into(),
            ));
        }
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => {
            let notice = "That confirmation has expired or was not issued to you. Confirm again.";
            return confirm_page(&ctx, Some(notice.into()), StatusCode::FORBIDDEN).await;
        }
    };
    let raw: Vec<String> = if input.keys.is_empty() && !input.ticked {
        let rows = match claim.prepare(expired_rows(&ctx).await).await? {
            Some(rows) => rows,
            // No scan yet: find the expired keys now (same scan, same budget).
            None => claim.prepare(scan_expired(&ctx).await).await?,
        };
        rows.into_iter()
            .map(|r| format!("{}/{}", r.user_id, r.key.id))
            .collect()
    } else {
        input.keys
    };
    if raw.is_empty() {
        claim.release().await;
        let notice = "Tick at least one key. Nothing was revoked.";
        return confirm_page(&ctx, Some(notice.into()), StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let targets: Vec<(VultrId, VultrId)> = claim
        .prepare(
            raw.iter()
                .map(|r| parse_target(r))
                .collect::<Result<Vec<_>, _>>(),
        )
        .await?;
    let mut by_user: BTreeMap<VultrId, Vec<VultrId>> = BTreeMap::new();
    for (user, key) in targets {
        let keys = by_user.entry(user).or_default();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let total: usize = by_user.values().map(Vec::len).sum();
    let reason_kept = reason.clone();
    let group = claim
        .group(Intent {
            reason,
            key_name: Some(format!(
                "{total} expired key(s) of {} user(s)",
                by_user.len()
            )),
            ..ctx.intent(AuditAction::KeysCleanup)
        })
        .await?;
    let page = RunView {
        layout: ctx.layout().await,
        total,
        users: by_user.len(),
    }
    .render()?;
    let (head, rest) = page.split_once(LINES).unwrap_or((&page, ""));
    let (middle, tail) = rest.split_once(SUMMARY).unwrap_or((rest, ""));
    let (head, middle, tail) = (head.to_string(), middle.to_string(), tail.to_string());

    let leased = durable(&ctx, &group, &by_user, reason_kept.as_deref()).await;
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let _ = tx.send(head);
    tokio::spawn(async move {
        let Some(outcomes) = carry_out(&group, by_user, &tx, leased, vec![]).await else {
            // Another replica took the run over; it settles the group.
            let _ = tx.send(middle);
            let _ = tx.send(TAKEN_OVER.into());
            let _ = tx.send(tail);
            return;
        };
        let count = |code: &str| outcomes.iter().filter(|o| o.code() == code).count();
        let summary = SummaryView {
            revoked: count("done"),
            gone: count("gone"),
            skipped: count("skipped"),
            live: outcomes.iter().filter(|o| o.still_live()).count(),
            group_id: group.id(),
        };
        tracing::info!(
            revoked = summary.revoked,
            gone = summary.gone,
            skipped = summary.skipped,
            live = summary.live,
            "expired keys cleared"
        );
        group.finish(outcomes.iter()).await;
        let _ = tx.send(middle);
        let _ = tx.send(summary.render().unwrap_or_default());
        let _ = tx.send(tail);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Lines must reach the browser as they happen: not held for compression.
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    Ok(resp)
}
