//! The sweep of review revocations whose outcome was unknown: the key gone
//! from Vultr's list settles as revoked; still there, it is revoked again
//! (the decision stands) through the one audited write; after a few looks
//! that settle nothing, the item is failed (audited). One replica at a time.

use super::apply::{ATTEMPTS, decision_of, group_of};
use crate::audit::{AuditAction, Intent, Outcome};
use crate::ids::VultrId;
use crate::reviews::{Item, Review};
use crate::state::AppState;
use crate::write::{Group, StepOutcome};

/// Looks at one unknown outcome before it settles as failed.
const RECONCILE_ATTEMPTS: i64 = 5;

/// The sweep of revocations whose outcome was unknown: the key gone from
/// Vultr's list settles as revoked; still there, it is revoked again (the
/// decision stands), through the one audited write.
pub async fn reconcile_unknown(state: &AppState) {
    const JOB: &str = "review-reconcile";
    let Some(_running) = super::Running::claim(state, JOB) else {
        return;
    };
    // A look first (a read): with nothing unknown, nothing is written,
    // not even the sweep's lease (anonymous traffic writes nothing).
    if !matches!(state.reviews.unknown_items().await, Ok(items) if !items.is_empty()) {
        return;
    }
    if !matches!(state.leases.acquire(JOB).await, Ok(true)) {
        return;
    }
    reconcile_leased(state).await;
    state.leases.release(JOB).await;
}

async fn reconcile_leased(state: &AppState) {
    let items = match state.reviews.unknown_items().await {
        Ok(items) => items,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for review items with an unknown outcome");
            return;
        }
    };
    for item in items {
        let Ok(Some(review)) = state.reviews.get(item.review_id).await else {
            continue;
        };
        let (Ok(user), Ok(key)) = (VultrId::parse(&item.user_id), VultrId::parse(&item.key_id))
        else {
            continue;
        };
        let group = group_of(state, &review);
        let list = match state.vultr.list_keys(&user).await {
            Ok(list) => list,
            Err(e) => {
                give_up_after(
                    state,
                    &group,
                    &review,
                    &item,
                    &format!("the user's keys could not be read: {e}"),
                )
                .await;
                continue;
            }
        };
        let (_, by) = decision_of(&review, &item);
        let part = Intent {
            target_user_id: Some(item.user_id.clone()),
            target_user_email: item.user_email.clone(),
            key_id: Some(item.key_id.clone()),
            key_name: item.key_name.clone(),
            approved_by: Some(by),
            level: Some(item.level.clone()),
            acls: Some(item.acls.clone()),
            reason: Some(format!(
                "access review #{}: reconciling an unknown outcome",
                review.id
            )),
            ..group.part(AuditAction::ReviewApply)
        };
        if !list.iter().any(|k| k.id.eq_ignore_ascii_case(&item.key_id)) {
            if let Ok(true) = state
                .reviews
                .reconciled(
                    review.id,
                    &item.key_id,
                    "revoked",
                    "reconciled: the key is gone from Vultr's list",
                )
                .await
            {
                group
                    .note(part, "reconciled: revoked (the key is gone)")
                    .await;
            }
            continue;
        }
        let revoke = Intent {
            action: AuditAction::KeyRevoke,
            ..part
        };
        let outcome = group
            .step(revoke, state.vultr.delete_key(&user, &key), true)
            .await;
        let settled = match &outcome {
            StepOutcome::Done => Some(("revoked", "reconciled: revoked again")),
            StepOutcome::AlreadyGone => Some(("revoked", "reconciled: Vultr answered 404")),
            _ => None,
        };
        match settled {
            Some((o, d)) => {
                if let Err(e) = state
                    .reviews
                    .reconciled(review.id, &item.key_id, o, d)
                    .await
                {
                    tracing::warn!(error = %e, "a reconciled review item was not recorded");
                }
            }
            None => {
                let why = outcome.words("revoked");
                give_up_after(state, &group, &review, &item, &why).await;
            }
        }
    }
}

/// A look at an unknown outcome that settled nothing: counted; after
/// `RECONCILE_ATTEMPTS` more looks the item settles as failed (audited), so
/// the sweep neither repeats a DELETE forever nor starves the items after it.
async fn give_up_after(state: &AppState, group: &Group, review: &Review, item: &Item, why: &str) {
    match state
        .reviews
        .reconcile_attempt(review.id, &item.key_id, why)
        .await
    {
        Ok(n) if n >= ATTEMPTS + RECONCILE_ATTEMPTS => {
            let detail =
                format!("unknown, then {why} (after {n} attempts): check the key in Vultr");
            if let Ok(true) = state
                .reviews
                .reconciled(review.id, &item.key_id, "failed", &detail)
                .await
            {
                let part = Intent {
                    target_user_id: Some(item.user_id.clone()),
                    target_user_email: item.user_email.clone(),
                    key_id: Some(item.key_id.clone()),
                    key_name: item.key_name.clone(),
                    reason: Some(format!(
                        "access review #{}: an unknown outcome could not be reconciled",
                        review.id
                    )),
                    ..group.part(AuditAction::ReviewApply)
                };
                state.audit.record(&part, Outcome::Failed).await;
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "a reconciliation attempt was not recorded"),
    }
}
