//! `GET /notices`: expiry-notice passes and the notices they sent (or
//! failed to), the last pass and the next; `POST /notices/run` starts a pass
//! now (operators). A pass runs in the background; the page shows it.

use askama::Template;
use axum::Form;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Layout, paths, render};
use crate::error::AppError;
use crate::idempotency::{Claim, Scope};
use crate::identity::{Operator, Staff};
use crate::notify::{NoticeRow, RunRow, Trigger};
use crate::timefmt::display_ms;
use crate::write::Ctx;

#[derive(Template)]
#[template(path = "notices/list.html")]
pub struct NoticesView {
    pub layout: Layout,
    pub token: String,
    pub channels: Vec<String>,
    pub thresholds: String,
    pub running: bool,
    pub last: Option<RunRow>,
    pub next: String,
    pub runs: Vec<RunRow>,
    pub notices: Vec<NoticeRow>,
}

impl NoticesView {
    pub fn at(&self, ms: &i64) -> String {
        display_ms(*ms)
    }
    pub fn at_opt(&self, ms: &Option<i64>) -> String {
        ms.map(display_ms).unwrap_or_else(|| "—".into())
    }
}

/// The passes, the notices, and the run button.
pub async fn notices_list(Staff(_): Staff, ctx: Ctx) -> Result<Response, AppError> {
    let notifier = &ctx.state.notifier;
    let snap = notifier.snapshot(20, 300).await.map_err(AppError::store)?;
    let next = if !notifier.scheduled() {
        if notifier.channels().is_empty() {
            // Passes may still come from elsewhere (a CronJob running
            // `keydesk notify --once` on the same database): they are listed.
            match snap.last_started_ms {
                Some(s) => format!(
                    "not scheduled by this process (no channel here); the last pass, from keydesk notify --once, started {}",
                    display_ms(s)
                ),
                None => "not scheduled by this process (no channel here); passes run by keydesk notify --once (a CronJob) appear below".to_string(),
            }
        } else {
            "not scheduled (KEYDESK_NOTIFY_INTERVAL=0): run it from cron with keydesk notify --once"
                .to_string()
        }
    } else {
        let every = notifier.interval().as_millis() as i64;
        match snap.last_started_ms {
            Some(s) => format!("{} (every {} s)", display_ms(s + every), every / 1000),
            None => "within a minute of start".to_string(),
        }
    };
    let view = NoticesView {
        layout: ctx.layout().await,
        token: ctx.issue(Scope::NoticeRun).await?,
        channels: notifier.describe_channels(),
        thresholds: notifier
            .thresholds()
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        running: snap.running,
        last: snap.runs.first().cloned(),
        next,
        runs: snap.runs,
        notices: snap.notices,
    };
    Ok(render(StatusCode::OK, &view))
}

#[derive(Deserialize, Default)]
pub struct RunInput {
    form_token: Option<String>,
}

/// Starts a pass now, in the background (one at a time across replicas).
pub async fn notices_run(
    Operator(_): Operator,
    ctx: Ctx,
    Form(input): Form<RunInput>,
) -> Result<Response, AppError> {
    let (state, who) = (&ctx.state, &ctx.who);
    let token = input.form_token.unwrap_or_default();
    let sid = ctx.session_binding().await;
    match state
        .tokens
        .claim(&token, &who.email, Scope::NoticeRun, sid.as_deref())
        .await
        .map_err(AppError::store)?
    {
        Claim::Claimed => {
            state.tokens.complete(&token, None).await;
            let (notifier, vultr, audit) = (
                state.notifier.clone(),
                state.vultr.clone(),
                state.audit.clone(),
            );
            let trigger = Trigger::Person(who.email.clone());
            tokio::spawn(async move {
                let now = time::OffsetDateTime::now_utc();
                match notifier.run(&vultr, &audit, trigger, now).await {
                    Ok(r) if r.skipped => tracing::info!("a notice pass is already running"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "notice pass could not run"),
                }
            });
            ctx.flash(
                "ok",
                "Notice pass started: this page shows it when it ends.".into(),
            )
            .await;
        }
        Claim::Replay { .. } => {}
        Claim::Invalid => {
            return Err(AppError::Forbidden(
                "This request has expired or was not issued to you. Reload the page and try again."
                    .into(),
            ));
        }
    }
    Ok(Redirect::to(paths::NOTICES).into_response())
}
