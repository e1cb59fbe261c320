//! Closing an access review and applying its decisions, as a durable job.
//! The close is one conditional update (one replica wins, audited
//! review.close); then, under the review's lease, each item not applied yet
//! is checked at Vultr and settled: a revoke (decided, or the default) is
//! the one audited write, a DELETE linked to the review; keep does nothing
//! upstream. Each item's outcome is recorded as it ends, so a run cut short
//! (kill -9) is taken over by another replica and applies nothing twice: a
//! key already gone is never sent a second DELETE.

use std::collections::BTreeMap;

use futures_util::StreamExt;

use crate::audit::{AuditAction, Intent, Outcome};
use crate::ids::VultrId;
use crate::leases::Heartbeat;
use crate::reviews::{Applied, DEADLINE, DEFAULT_DECIDER, Decision, Item, Review, apply_job};
use crate::state::AppState;
use crate::write::{Group, StepOutcome};

/// Users whose items are applied at once (the rate budget is the real bound).
const CONCURRENCY: usize = 4;
/// Attempts at an item whose call failed (Vultr down) before it settles as
/// failed, the first retry `BACKOFF` after the first failure, doubling:
/// about 7.5 minutes of an outage before an item is given up.
pub(super) const ATTEMPTS: i64 = 5;
const BACKOFF_MS: i64 = 30_000;

/// The group every part of the review links to, acting as whoever closed it.
pub(super) fn group_of(state: &AppState, review: &Review) -> Group {
    let closer = review.closed_by.as_deref().unwrap_or(DEADLINE);
    let intent = if closer == DEADLINE {
        Intent::system(AuditAction::ReviewStart)
    } else {
        Intent::new(closer, "operator", AuditAction::ReviewStart)
    };
    Group::resume(state.clone(), review.group_id, intent)
}

/// Applies every item not applied yet, under the lease the caller took.
pub(super) async fn apply(state: &AppState, review: Review) {
    let lease = apply_job(review.id);
    let heartbeat = state.leases.keep(&lease);
    let items = match state.reviews.unapplied(review.id).await {
        Ok(items) => items,
        Err(e) => {
            tracing::warn!(error = %e, "a closing review's items could not be read");
            drop(heartbeat);
            state.leases.release(&lease).await;
            return;
        }
    };
    let group = group_of(state, &review);
    // An item whose last attempt failed waits its backoff (the review stays
    // closing; a later look applies it).
    let now = state.db.now_ms().await.unwrap_or(i64::MAX);
    let mut waiting = false;
    let mut by_user: BTreeMap<String, Vec<Item>> = BTreeMap::new();
    for item in items {
        let wait = BACKOFF_MS << (item.attempts.clamp(1, 8) - 1);
        if item.attempts > 0 && item.applied_ms.is_some_and(|t| now < t + wait) {
            waiting = true;
            continue;
        }
        by_user.entry(item.user_id.clone()).or_default().push(item);
    }
    let finished = futures_util::stream::iter(by_user)
        .map(|(user, items)| apply_user(&group, &review, user, items, &heartbeat))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<bool>>()
        .await
        .into_iter()
        .all(|done| done)
        && !waiting;
    drop(heartbeat);
    if finished {
        match state.reviews.finish(review.id).await {
            Ok(true) => closed(state, &review).await,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "a review's end could not be recorded"),
        }
    }
    state.leases.release(&lease).await;
}

/// The review's items all applied: the summary entry, the metric, the notices.
async fn closed(state: &AppState, review: &Review) {
    let items = state.reviews.items(review.id).await.unwrap_or_default();
    let count = |o: &str| {
        items
            .iter()
            .filter(|i| i.outcome.as_deref() == Some(o))
            .count()
    };
    let summary = format!(
        "{} revoked, {} kept, {} gone, {} offboarded, {} unknown, {} failed",
        count("revoked"),
        count("kept"),
        count("gone"),
        count("offboarded"),
        count("unknown"),
        count("failed")
    );
    let outcome = match (count("failed"), count("unknown")) {
        (0, 0) => Outcome::Ok,
        (0, _) => Outcome::Unknown,
        _ => Outcome::Failed,
    };
    let intent = Intent {
        group_id: Some(review.group_id),
        key_name: Some(format!("access review #{} applied: {summary}", review.id)),
        ..Intent::system(AuditAction::ReviewApply)
    };
    state.audit.record(&intent, outcome).await;
    tracing::info!(review = review.id, %summary, "access review applied");
    if let Ok(Some(done)) = state.reviews.get(review.id).await {
        super::notices::closed(state, &done, &items).await;
    }
}

/// One user's items: false when the lease was lost, or an item is left to
/// try again (its call failed and it has attempts left).
async fn apply_user(
    group: &Group,
    review: &Review,
    user: String,
    items: Vec<Item>,
    heartbeat: &Heartbeat,
) -> bool {
    let state = group.state();
    let Ok(user_id) = VultrId::parse(&user) else {
        for item in &items {
            settle(
                state,
                review,
                item,
                "failed",
                Some("a user id keydesk will not follow"),
                None,
            )
            .await;
        }
        return true;
    };
    let held = match state.holds.get(user_id.as_str()).await {
        Ok(h) => h.is_some(),
        Err(e) => {
            for item in &items {
                retry(
                    state,
                    review,
                    item,
                    &format!("the holds could not be read: {e}"),
                )
                .await;
            }
            return false;
        }
    };
    // An offboarded user's keys are the offboarding's to revoke: no call.
    let current = if held {
        None
    } else {
        Some(state.vultr.list_keys(&user_id).await)
    };
    let mut all_done = true;
    for item in items {
        if heartbeat.lost() {
            return false;
        }
        let (decision, by) = decision_of(review, &item);
        let part = Intent {
            target_user_id: Some(item.user_id.clone()),
            target_user_email: item.user_email.clone(),
            key_id: Some(item.key_id.clone()),
            key_name: item.key_name.clone(),
            approved_by: Some(by.clone()),
            level: Some(item.level.clone()),
            acls: Some(item.acls.clone()),
            reason: Some(reason_of(review, &item)),
            ..group.part(AuditAction::ReviewApply)
        };
        let listed = match &current {
            None => {
                group
                    .note(part, "offboarded: the offboarding revokes the user's keys")
                    .await;
                apply_as(
                    state,
                    review,
                    &item,
                    "offboarded",
                    decision,
                    &by,
                    None,
                    None,
                )
                .await;
                continue;
            }
            Some(Err(e)) => {
                all_done &= !retry(
                    state,
                    review,
                    &item,
                    &format!("the user's keys could not be read: {e}"),
                )
                .await;
                continue;
            }
            Some(Ok(list)) => list,
        };
        if !listed
            .iter()
            .any(|k| k.id.eq_ignore_ascii_case(&item.key_id))
        {
            // Marked before its DELETE by a run cut short: that DELETE did it.
            if item.applied_decision.as_deref() == Some("revoke") {
                let why = "revoked: the DELETE of a run cut short reached Vultr";
                group.note(part, why).await;
                apply_as(
                    state,
                    review,
                    &item,
                    "revoked",
                    decision,
                    &by,
                    Some(why),
                    None,
                )
                .await;
                continue;
            }
            group
                .note(part, "gone: the key was revoked or rotated meanwhile")
                .await;
            apply_as(state, review, &item, "gone", decision, &by, None, None).await;
            continue;
        }
        if decision == Decision::Keep {
            apply_as(state, review, &item, "kept", decision, &by, None, None).await;
            continue;
        }
        let Ok(key_id) = VultrId::parse(&item.key_id) else {
            settle(
                state,
                review,
                &item,
                "failed",
                Some("a key id keydesk will not follow"),
                None,
            )
            .await;
            continue;
        };
        if let Err(e) = state
            .reviews
            .mark_applying(review.id, &item.key_id, &by)
            .await
        {
            // Unmarked, a run cut short would read the key's absence as "gone".
            all_done &= !retry(
                state,
                review,
                &item,
                &format!("the item could not be marked: {e}"),
            )
            .await;
            continue;
        }
        let revoke = Intent {
            action: AuditAction::KeyRevoke,
            ..part
        };
        let call = state.vultr.delete_key(&user_id, &key_id);
        match group.step(revoke, call, true).await {
            StepOutcome::Done => {
                metrics::counter!("keydesk_keys_revoked_total").increment(1);
                apply_as(
                    state,
                    review,
                    &item,
                    "revoked",
                    decision,
                    &by,
                    None,
                    Some(204),
                )
                .await;
            }
            StepOutcome::AlreadyGone => {
                apply_as(
                    state,
                    review,
                    &item,
                    "gone",
                    decision,
                    &by,
                    Some("Vultr answered 404: already gone"),
                    Some(404),
                )
                .await;
            }
            StepOutcome::Unknown(e) => {
                apply_as(
                    state,
                    review,
                    &item,
                    "unknown",
                    decision,
                    &by,
                    Some(&e),
                    None,
                )
                .await;
            }
            StepOutcome::Failed(e) => {
                all_done &= !retry(state, review, &item, &e).await;
            }
            StepOutcome::Skipped(e) => {
                apply_as(
                    state,
                    review,
                    &item,
                    "failed",
                    decision,
                    &by,
                    Some(&e),
                    None,
                )
                .await;
            }
        }
    }
    all_done
}

/// The decision that counts for an item, and whose it is.
pub(super) fn decision_of(review: &Review, item: &Item) -> (Decision, String) {
    match (item.decided(), &item.decided_by) {
        (Some(d), Some(by)) => (d, by.clone()),
        _ => (
            review.fallback().apply(item.recommended()),
            DEFAULT_DECIDER.to_string(),
        ),
    }
}

/// The reason an applied item carries into the audit.
fn reason_of(review: &Review, item: &Item) -> String {
    match (&item.decision, &item.decision_reason) {
        (Some(_), Some(r)) if !r.trim().is_empty() => format!("access review #{}: {r}", review.id),
        (Some(d), _) => format!("access review #{}: decided {d}", review.id),
        (None, _) => format!(
            "access review #{}: undecided, default {} ({})",
            review.id, review.default_decision, item.recommendation_reason
        ),
    }
}

#[allow(clippy::too_many_arguments)]
async fn apply_as(
    state: &AppState,
    review: &Review,
    item: &Item,
    outcome: &str,
    decision: Decision,
    by: &str,
    detail: Option<&str>,
    status: Option<u16>,
) {
    let a = Applied {
        outcome,
        decision,
        by,
        detail,
        upstream_status: status,
    };
    if let Err(e) = state.reviews.applied(review.id, &item.key_id, a).await {
        tracing::warn!(error = %e, "a review item's outcome was not recorded; a resumed run checks it again");
    }
}

async fn settle(
    state: &AppState,
    review: &Review,
    item: &Item,
    outcome: &str,
    detail: Option<&str>,
    status: Option<u16>,
) {
    let (decision, by) = decision_of(review, item);
    apply_as(state, review, item, outcome, decision, &by, detail, status).await;
}

/// A failed attempt: counted; after `ATTEMPTS` the item settles as failed.
/// True when it is left to try again.
async fn retry(state: &AppState, review: &Review, item: &Item, why: &str) -> bool {
    match state
        .reviews
        .attempt_failed(review.id, &item.key_id, why)
        .await
    {
        Ok(n) if n >= ATTEMPTS => {
            let detail = format!("{why} (after {n} attempts)");
            let (decision, by) = decision_of(review, item);
            let a = Applied {
                outcome: "failed",
                decision,
                by: &by,
                detail: Some(&detail),
                upstream_status: None,
            };
            // `applied` counts one more attempt: the record says what was tried.
            if let Err(e) = state.reviews.applied(review.id, &item.key_id, a).await {
                tracing::warn!(error = %e, "a failed review item was not recorded");
            }
            let part = Intent {
                target_user_id: Some(item.user_id.clone()),
                target_user_email: item.user_email.clone(),
                key_id: Some(item.key_id.clone()),
                key_name: item.key_name.clone(),
                approved_by: Some(by.clone()),
                reason: Some(reason_of(review, item)),
                group_id: Some(review.group_id),
                ..Intent::system(AuditAction::ReviewApply)
            };
            state
                .audit
                .record(&Intent { ..part }, Outcome::Failed)
                .await;
            tracing::warn!(review = review.id, key = %item.key_id, %detail, "a review item could not be applied");
            false
        }
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "a review item's attempt was not recorded");
            true
        }
    }
}
