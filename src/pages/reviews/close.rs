//! Closing a review: End review now or the deadline (one conditional
//! update wins, audited review.close), then applying it as a durable job;
//! the job loop's look takes over closing reviews nobody holds.

use super::apply::apply;
use crate::audit::{AuditAction, Intent, Outcome};
use crate::reviews::{DEADLINE, Review, apply_job};
use crate::state::AppState;

/// Ends an open review now (`by`: an operator, or `DEADLINE`), audited
/// review.close, and starts applying it. False when it was not open (it
/// closed already, elsewhere): nothing done.
pub async fn end(state: &AppState, review: &Review, intent: Intent) -> Result<bool, sqlx::Error> {
    let by = intent.actor.clone();
    let by = if intent.role == "system" {
        DEADLINE.to_string()
    } else {
        by
    };
    if !state.reviews.close(review.id, &by).await? {
        return Ok(false);
    }
    let intent = Intent {
        group_id: Some(review.group_id),
        key_name: Some(format!("access review #{}", review.id)),
        ..intent
    };
    state.audit.record(&intent, Outcome::Ok).await;
    metrics::counter!("keydesk_reviews_closed_total").increment(1);
    start_applying(state, review.id).await;
    Ok(true)
}

/// Takes the review's lease and applies it in its own task; without the
/// lease (another replica has it, or the database failed) the job loop
/// finds the review closing and unheld later.
async fn start_applying(state: &AppState, id: i64) {
    let Some(running) = super::Running::claim(state, &apply_job(id)) else {
        return;
    };
    if let Ok(true) = state.leases.acquire(&apply_job(id)).await
        && let Ok(Some(review)) = state.reviews.get(id).await
    {
        let state = state.clone();
        tokio::spawn(async move {
            apply(&state, review).await;
            drop(running);
        });
    }
}

/// From the job loop, on every replica: reviews past their deadline are
/// ended, closing reviews nobody holds are taken over. Returns how many
/// were taken over.
pub async fn resume_stalled(state: &AppState) -> usize {
    match state.reviews.due().await {
        Ok(due) => {
            for review in due.into_iter().filter(Review::known) {
                let intent = Intent {
                    reason: Some("the deadline was reached".into()),
                    ..Intent::system(AuditAction::ReviewClose)
                };
                if let Err(e) = end(state, &review, intent).await {
                    tracing::warn!(error = %e, "a review past its deadline could not be closed");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not look for reviews past their deadline"),
    }
    let stalled = match state.reviews.unheld("closing").await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for closing reviews");
            return 0;
        }
    };
    let mut taken = 0;
    for review in stalled.into_iter().filter(Review::known) {
        let Some(running) = super::Running::claim(state, &apply_job(review.id)) else {
            continue;
        };
        if let Ok(true) = state.leases.acquire(&apply_job(review.id)).await {
            tracing::info!(
                review = review.id,
                "applying a closing review nobody holds (its replica stopped, or items wait to be tried again)"
            );
            let state = state.clone();
            tokio::spawn(async move {
                apply(&state, review).await;
                drop(running);
            });
            taken += 1;
        }
    }
    taken
}
