//! Reviews started by keydesk itself: on `KEYDESK_REVIEW_EVERY` from the
//! job loop (every replica looks; the one-open-per-scope index lets one
//! start it), and by `keydesk review --start` for cron.

use std::time::Duration;

use crate::reviews::{NewReview, Review};
use crate::state::AppState;

use super::snapshot::{NotStarted, begin_as_system};

/// The review the schedule's settings describe, with its deadline from `now_ms`.
async fn start_scheduled(state: &AppState, why: &str) -> Result<i64, NotStarted> {
    let s = &state.review_schedule;
    let now = state
        .db
        .now_ms()
        .await
        .map_err(|e| NotStarted::Failed(format!("the database could not be read: {e}")))?;
    let new = NewReview {
        scope: &s.scope,
        deadline_ms: now + i64::from(s.days) * 86_400_000,
        fallback: s.fallback,
        reviewers: s.reviewers,
        inactive_days: s.scope.inactive_days().unwrap_or(s.inactive_days),
        reason: Some(why),
        started_by: crate::audit::SYSTEM_ACTOR,
    };
    begin_as_system(state, &new).await
}

/// From the job loop: starts the scheduled review when one is due. Quiet
/// when it is not, or when one of its scope is open.
pub async fn start_if_due(state: &AppState) {
    let Some(every) = state.review_schedule.every else {
        return;
    };
    let scope = state.review_schedule.scope.to_string();
    let (last, now) = match (
        state.reviews.last_started(&scope).await,
        state.db.now_ms().await,
    ) {
        (Ok(last), Ok(now)) => (last, now),
        _ => return,
    };
    if last.is_some_and(|l| now - l < every.as_millis() as i64) {
        return;
    }
    // A start that failed (Vultr unreadable) is tried again an hour later,
    // not at every look.
    if let Ok(Some(failed)) = state.reviews.last_failed(&scope).await
        && now - failed < 3_600_000
    {
        return;
    }
    match start_scheduled(state, "scheduled (KEYDESK_REVIEW_EVERY)").await {
        Ok(id) => tracing::info!(review = id, %scope, "scheduled access review started"),
        Err(NotStarted::AlreadyOpen(_)) => {}
        Err(e) => tracing::warn!(error = %e, "the scheduled access review did not start"),
    }
}

/// `keydesk demo`: one open review to try, when the database has none.
pub async fn open_one_at_start(state: &AppState) {
    if state.reviews.list(1).await.is_ok_and(|l| !l.is_empty()) {
        return;
    }
    match start_and_wait(state, "the demo's access review: try it").await {
        Ok(words) => tracing::info!("demo: {words}"),
        Err(e) => tracing::warn!(error = %e, "demo: no access review opened"),
    }
}

/// `keydesk review --start`: starts one, waits for its snapshot, and says
/// what it holds. A review of the scope already open is reported, not an error.
pub async fn start_and_wait(state: &AppState, why: &str) -> Result<String, String> {
    let id = match start_scheduled(state, why).await {
        Ok(id) => id,
        Err(NotStarted::AlreadyOpen(open)) => {
            return Ok(format!(
                "review #{open} of {} is already open; none started",
                state.review_schedule.scope
            ));
        }
        Err(e) => return Err(e.to_string()),
    };
    let review: Review = loop {
        match state.reviews.get(id).await {
            Ok(Some(r)) if r.state != "snapshot" => break r,
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => return Err(format!("review #{id}: {e}")),
        }
    };
    if review.state == "failed" {
        return Err(format!(
            "review #{id} failed: {}",
            review.error.unwrap_or_default()
        ));
    }
    let items = state.reviews.items(id).await.map_err(|e| e.to_string())?;
    Ok(format!(
        "review #{id} of {} started: {} keys of {} users to confirm by {}",
        review.scope,
        items.len(),
        review.users_total,
        review.deadline_display()
    ))
}
