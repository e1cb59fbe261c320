//! Starting an access review: the review.start entry (the group every later
//! entry links to), the review row, then its snapshot as a durable job: one
//! scan of every user's keys through the shared rate budget (the same scan
//! as the report), the keys in scope recorded with their facts and
//! recommendation, and the review opens. A replica that stops mid-snapshot
//! leaves a lapsed lease; another takes the snapshot again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use time::OffsetDateTime;

use crate::audit::{AuditAction, Intent, Outcome, Settlement};
use crate::leases::Heartbeat;
use crate::report::{Progress, Row};
use crate::reviews::{Facts, NewItem, NewReview, Review, StartRefused, snapshot_job};
use crate::state::AppState;

/// How often a running snapshot publishes its progress.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Why a review did not start, in words for the form or the command.
#[derive(Debug)]
pub enum NotStarted {
    AlreadyOpen(i64),
    Failed(String),
}

impl std::fmt::Display for NotStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotStarted::AlreadyOpen(id) => write!(
                f,
                "a review of this scope is already open (#{id}): at most one is open per scope"
            ),
            NotStarted::Failed(e) => f.write_str(e),
        }
    }
}

/// Records the review (its review.start entry `group_id` already written)
/// and starts its snapshot in its own task. Returns the review id.
pub async fn begin(
    state: &AppState,
    new: &NewReview<'_>,
    group_id: i64,
) -> Result<i64, NotStarted> {
    let id = match state.reviews.begin(new, group_id).await {
        Ok(id) => id,
        Err(StartRefused::AlreadyOpen(open)) => return Err(NotStarted::AlreadyOpen(open)),
        Err(StartRefused::Store(e)) => {
            return Err(NotStarted::Failed(format!(
                "the review could not be recorded: {e}"
            )));
        }
    };
    let lease = snapshot_job(id);
    // Not leased now: the job loop takes the snapshot once nobody holds it.
    if let Some(running) = super::Running::claim(state, &lease)
        && let Ok(true) = state.leases.acquire(&lease).await
        && let Ok(Some(review)) = state.reviews.get(id).await
    {
        let state = state.clone();
        tokio::spawn(async move {
            take(&state, review, true).await;
            drop(running);
        });
    }
    Ok(id)
}

/// A review started by keydesk itself (the schedule, `keydesk review
/// --start`): its own review.start entry as `keydesk`, then `begin`.
pub async fn begin_as_system(state: &AppState, new: &NewReview<'_>) -> Result<i64, NotStarted> {
    if let Ok(Some(open)) = state.reviews.open_for_scope(&new.scope.to_string()).await {
        return Err(NotStarted::AlreadyOpen(open.id));
    }
    let intent = start_intent(
        Intent::system(AuditAction::ReviewStart),
        new,
        "started by keydesk",
    );
    let group_id =
        state.audit.intent(&intent).await.map_err(|e| {
            NotStarted::Failed(format!("the audit trail could not be written: {e}"))
        })?;
    match begin(state, new, group_id).await {
        Ok(id) => {
            let note = format!("review #{id}");
            let how = Settlement {
                error: Some(&note),
                ..Outcome::Ok.settled()
            };
            state.audit.settle(group_id, how).await;
            Ok(id)
        }
        Err(e) => {
            let why = e.to_string();
            let how = Settlement {
                error: Some(&why),
                ..Outcome::Failed.settled()
            };
            state.audit.settle(group_id, how).await;
            Err(e)
        }
    }
}

/// The review.start intent: the scope and rules in its subject, the reason.
pub fn start_intent(base: Intent, new: &NewReview<'_>, fallback_reason: &str) -> Intent {
    Intent {
        key_name: Some(format!(
            "access review of {} until {}; reviewers {}; default {}",
            new.scope,
            crate::timefmt::display_ms(new.deadline_ms),
            new.reviewers.as_str(),
            new.fallback.as_str()
        )),
        reason: Some(new.reason.unwrap_or(fallback_reason).to_string()),
        ..base
    }
}

/// Takes the snapshot of `review` under its lease (held by the caller) and
/// opens it; on failure the review is marked failed, in words.
pub async fn take(state: &AppState, review: Review, leased: bool) {
    let lease = snapshot_job(review.id);
    let heartbeat = if leased {
        state.leases.keep(&lease)
    } else {
        Heartbeat::none()
    };
    let started = std::time::Instant::now();
    let progress = Progress::default();
    let publisher = {
        let (reviews, progress, id) = (state.reviews.clone(), progress.clone(), review.id);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PUBLISH_EVERY).await;
                let read = progress.done.load(Ordering::Relaxed) as i64;
                let total = progress.total.load(Ordering::Relaxed) as i64;
                if let Err(e) = reviews.progress(id, read, total).await {
                    tracing::warn!(error = %e, "review snapshot progress not recorded");
                }
            }
        })
    };
    let scanned = crate::report::scan(&state.vultr, &state.audit, &progress).await;
    publisher.abort();
    if heartbeat.lost() {
        // Another replica took the snapshot over; it opens the review.
        return;
    }
    let outcome = match scanned {
        Err(e) => Err(e),
        Ok(report) if report.failed_users > 0 => Err(format!(
            "the keys of {} of {} users could not be read from Vultr, so the snapshot would be incomplete; start the review again",
            report.failed_users, report.users
        )),
        Ok(report) => match state.holds.held_ids().await {
            Err(e) => Err(format!("the holds could not be read: {e}")),
            Ok(held) => {
                let items = items_of(state, &review, &report.rows, &held);
                let n = items.len();
                match state
                    .reviews
                    .open_with(review.id, &items, report.users as i64)
                    .await
                {
                    Ok(_) => {
                        metrics::counter!("keydesk_review_items_total").increment(n as u64);
                        tracing::info!(
                            review = review.id,
                            users = report.users,
                            items = n,
                            took_ms = started.elapsed().as_millis() as u64,
                            "access review snapshot taken"
                        );
                        Ok(())
                    }
                    Err(e) => Err(format!("the snapshot could not be recorded: {e}")),
                }
            }
        },
    };
    drop(heartbeat);
    match outcome {
        Ok(()) => {
            if let Ok(Some(opened)) = state.reviews.get(review.id).await {
                super::notices::started(state, &opened).await;
            }
        }
        Err(why) => {
            tracing::warn!(review = review.id, error = %why, "access review snapshot failed");
            if let Err(e) = state.reviews.fail(review.id, &why).await {
                tracing::warn!(error = %e, "a failed snapshot could not be recorded");
            }
            let intent = Intent {
                group_id: Some(review.group_id),
                reason: Some("the snapshot failed".into()),
                ..Intent::system(AuditAction::ReviewClose)
            };
            let id = state.audit.intent(&intent).await;
            if let Ok(id) = id {
                let how = Settlement {
                    error: Some(&why),
                    ..Outcome::Failed.settled()
                };
                state.audit.settle(id, how).await;
            }
        }
    }
    state.leases.release(&lease).await;
}

/// The keys of the scan that the review covers, each with its facts and
/// recommendation. A key created after the review started is not in it.
fn items_of(
    state: &AppState,
    review: &Review,
    rows: &[Row],
    held: &std::collections::HashSet<String>,
) -> Vec<NewItem> {
    let Ok(scope) = review.scope.parse::<crate::reviews::Scope>() else {
        return vec![];
    };
    let now = OffsetDateTime::now_utc();
    let started =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(review.started_ms) * 1_000_000)
            .unwrap_or(now);
    let inactive_days = u32::try_from(review.inactive_days).unwrap_or(90);
    let powers: Arc<_> = Arc::new(state.powers.clone());
    rows.iter()
        .filter(|r| {
            r.key
                .date_created
                .as_deref()
                .and_then(crate::timefmt::parse_time)
                .is_none_or(|c| c <= started)
        })
        .filter_map(|r| {
            let level = r.level(&powers);
            let expires = match r.key.state_at(now) {
                crate::vultr::KeyState::Never => None,
                _ => r.key.expiry_time(),
            };
            let facts = Facts {
                now,
                level,
                anywhere: r.anywhere,
                expires,
                last_activity: r
                    .last_activity
                    .as_deref()
                    .and_then(crate::timefmt::parse_time),
                offboarded: held.contains(&r.user_id.to_ascii_lowercase()),
            };
            if !scope.covers(&facts) {
                return None;
            }
            let (recommendation, why) = facts.recommend(inactive_days);
            let masked = r.key.masked();
            let tail: String = masked
                .chars()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Some(NewItem {
                key_id: r.key.id.to_ascii_lowercase(),
                user_id: r.user_id.to_ascii_lowercase(),
                user_email: (!r.user_email.is_empty())
                    .then(|| crate::email::normalize_email(&r.user_email)),
                user_name: Some(r.user_name.clone()),
                key_name: r.key.name.clone(),
                key_tail: (masked != "—").then_some(tail),
                level: level.as_str().to_string(),
                acls: r.acls.join(" "),
                reach: match r.anywhere {
                    Some(true) => "anywhere",
                    Some(false) => "allowlisted",
                    None => "unknown",
                }
                .to_string(),
                expires: expires.and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                }),
                created: r.key.date_created.clone(),
                last_activity: r.last_activity.clone(),
                recommendation,
                recommendation_reason: why,
                needs_other: facts.needs_other(),
            })
        })
        .collect()
}

/// Takes over every snapshot whose replica stopped. Returns how many.
pub async fn resume_stalled(state: &AppState) -> usize {
    let stalled = match state.reviews.unheld("snapshot").await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for stalled review snapshots");
            return 0;
        }
    };
    let mut taken = 0;
    // A newer release's scope is left to it.
    for review in stalled.into_iter().filter(Review::known) {
        let Some(running) = super::Running::claim(state, &snapshot_job(review.id)) else {
            continue;
        };
        if let Ok(true) = state.leases.acquire(&snapshot_job(review.id)).await {
            let state = state.clone();
            tokio::spawn(async move {
                take(&state, review, true).await;
                drop(running);
            });
            taken += 1;
        }
    }
    taken
}
