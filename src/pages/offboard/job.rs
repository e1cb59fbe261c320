//! One offboarding run, in a task of its own: the hold, the brake, open
//! links and requests withdrawn, the key list read after the brake and every
//! key revoked, each an audited part of the run's group. Its progress is in
//! the store (`offboardings`) after every key, for any replica's user page.
//! It runs under a lease (`leases`): when its replica stops, another resumes
//! it, skipping the steps recorded as done; the key list read anew names
//! only keys still there, so no key is deleted twice.

use crate::audit::{AuditAction, Intent};
use crate::grants::GrantState;
use crate::ids::VultrId;
use crate::leases::offboarding_job;
use crate::offboardings::Step;
use crate::state::AppState;
use crate::vultr::ApiKey;
use crate::write::{Group, StepOutcome};

/// What one run needs, owned: it outlives the request that started it.
pub(super) struct Job {
    pub state: AppState,
    pub group: Group,
    pub user_id: VultrId,
    pub email: Option<String>,
    pub actor: String,
    pub reason: Option<String>,
    /// Key ids the confirmation page listed (to name newcomers).
    pub listed: Vec<String>,
    /// A run taken over from a stopped replica: what it had done.
    pub resumed: Option<crate::offboardings::Offboarding>,
}

/// How each part of a run ended.
pub(super) struct Report {
    pub hold: StepOutcome,
    pub brake: StepOutcome,
    pub withdrawn: Vec<Withdrawn>,
    pub list_error: Option<String>,
    pub keys: Vec<KeyResult>,
}

/// One key's line on the result page.
pub struct KeyResult {
    pub key: ApiKey,
    pub outcome: StepOutcome,
    /// Created after the confirmation page was shown (revoked all the same).
    pub newcomer: bool,
}

/// An open claim link or approval request the offboarding withdrew.
pub struct Withdrawn {
    /// "claim link" or "approval request".
    pub kind: &'static str,
    pub id: String,
    pub what: String,
    pub outcome: StepOutcome,
}

/// Withdraws the user's pending claim links and their pending or approved
/// approval requests, one audited part each.
async fn withdraw_open(
    state: &AppState,
    actor: &str,
    group: &Group,
    id: &VultrId,
    on_user: &impl Fn(AuditAction) -> Intent,
) -> Vec<Withdrawn> {
    let mut out = vec![];
    match state.grants.open_for_user(id.as_str()).await {
        Ok(grants) => {
            for g in grants
                .into_iter()
                .filter(|g| matches!(g.state, GrantState::Pending | GrantState::Unknown))
            {
                let done = match state.grants.withdraw(&g, actor).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("the claim link could not be withdrawn: {e}")),
                };
                let intent = Intent {
                    grant_id: Some(g.id.clone()),
                    key_name: Some(g.key_name.clone()),
                    ..on_user(AuditAction::GrantRevoke)
                };
                out.push(Withdrawn {
                    kind: "claim link",
                    what: g.key_name.clone(),
                    outcome: group.local(intent, done).await,
                    id: g.id,
                });
            }
        }
        Err(e) => out.push(Withdrawn {
            kind: "claim link",
            id: String::new(),
            what: "open claim links".into(),
            outcome: StepOutcome::Failed(format!("could not be read: {e}")),
        }),
    }
    match state.approvals.withdraw_for_user(id.as_str()).await {
        Ok(approvals) => {
            for a in approvals {
                let intent = a.about(on_user(AuditAction::ApprovalWithdraw));
                out.push(Withdrawn {
                    kind: "approval request",
                    what: a.action.words().to_string(),
                    outcome: group.local(intent, Ok(())).await,
                    id: a.id,
                });
            }
        }
        Err(e) => out.push(Withdrawn {
            kind: "approval request",
            id: String::new(),
            what: "open approval requests".into(),
            outcome: StepOutcome::Failed(format!("could not be withdrawn: {e}")),
        }),
    }
    out
}

/// How long an offboarding waits for the user's writes in flight: longer
/// than the Vultr client's whole budget for one call.
const IN_FLIGHT_BOUND: std::time::Duration = std::time::Duration::from_secs(45);

/// Waits until no write that could give the user a key is in flight, or
/// the bound passes (a failed part, so the run stays unfinished).
async fn wait_in_flight(
    state: &AppState,
    id: &VultrId,
    group: &Group,
    on_user: &impl Fn(AuditAction) -> Intent,
) -> StepOutcome {
    let started = tokio::time::Instant::now();
    loop {
        match state.offboardings.writes_in_flight(id.as_str()).await {
            Ok(0) => return StepOutcome::Done,
            Ok(n) if started.elapsed() >= IN_FLIGHT_BOUND => {
                let why = format!(
                    "{n} write(s) for this user still at Vultr after {} s: finish the offboarding again once they settle",
                    IN_FLIGHT_BOUND.as_secs()
                );
                group.note(on_user(AuditAction::UserOffboard), &why).await;
                return StepOutcome::Failed(why);
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            Err(e) => {
                let why = format!("the writes in flight could not be read: {e}");
                group.note(on_user(AuditAction::UserOffboard), &why).await;
                return StepOutcome::Failed(why);
            }
        }
    }
}

/// Records that `step` ended well, unless it left something live.
async fn record(state: &AppState, group_id: i64, step: Step, outcome: &StepOutcome) {
    if outcome.still_live() {
        return;
    }
    if let Err(e) = state.offboardings.step_done(group_id, step).await {
        tracing::warn!(error = %e, "offboarding step not recorded; a resumed run repeats it");
    }
}

impl Job {
    /// Runs every step (those not done before), records progress, settles
    /// the group; the report. None when another replica holds the run, or
    /// took it over meanwhile (this one stopped: that one finishes it).
    pub async fn run(self) -> Option<Report> {
        let Job {
            state,
            group,
            user_id: id,
            email,
            actor,
            reason,
            listed,
            resumed,
        } = self;
        let group_id = group.id();
        let lease = offboarding_job(group_id);
        let heartbeat = match state.leases.acquire(&lease).await {
            Ok(true) => state.leases.keep(&lease),
            Ok(false) => return None,
            // The run goes on; with no lease, another replica may take it
            // over after the lease time (it then finds the work done).
            Err(e) => {
                tracing::warn!(error = %e, "offboarding lease not taken");
                crate::leases::Heartbeat::none()
            }
        };
        let did = |step| resumed.as_ref().is_some_and(|r| r.did(step));
        let on_user = |action| Intent {
            target_user_id: Some(id.to_string()),
            target_user_email: email.clone(),
            ..group.part(action)
        };
        // The hold first: from here on no keydesk path gives this user a key.
        let hold = if did(Step::Hold) {
            StepOutcome::Done
        } else {
            let placed = state
                .holds
                .place(
                    id.as_str(),
                    email.as_deref(),
                    &actor,
                    reason.as_deref(),
                    Some(group_id),
                )
                .await
                .map_err(|e| format!("the hold could not be stored: {e}"));
            let hold_part = Intent {
                key_name: Some(
                    "hold placed: no key, claim link or API access until reinstated".into(),
                ),
                ..on_user(AuditAction::UserOffboard)
            };
            let hold = group.local(hold_part, placed).await;
            record(&state, group_id, Step::Hold, &hold).await;
            hold
        };
        let vultr = &state.vultr;
        // Then the brake: from here on Vultr refuses every key of the user.
        let brake = if did(Step::Brake) {
            StepOutcome::Done
        } else if heartbeat.lost() {
            return None;
        } else {
            let brake = group
                .step(
                    Intent {
                        api_enabled: Some(false),
                        ..on_user(AuditAction::UserApiAccess)
                    },
                    vultr.set_api_enabled(&id, false),
                    false,
                )
                .await;
            record(&state, group_id, Step::Brake, &brake).await;
            brake
        };
        let withdrawn = if did(Step::Withdrawn) {
            vec![]
        } else {
            let withdrawn = withdraw_open(&state, &actor, &group, &id, &on_user).await;
            let all = if withdrawn.iter().any(|w| w.outcome.still_live()) {
                StepOutcome::Failed(String::new())
            } else {
                StepOutcome::Done
            };
            record(&state, group_id, Step::Withdrawn, &all).await;
            withdrawn
        };
        // Writes that passed the hold check just before it was placed may
        // still be at Vultr: wait for them (bounded), so the list sees what
        // they made. A run that waited in vain does not say finished.
        let settled = wait_in_flight(&state, &id, &group, &on_user).await;
        // The key list read after the brake, so a key made meanwhile is revoked too.
        let (keys, list_error) = match vultr.list_keys(&id).await {
            Ok(k) => (k, None),
            Err(e) => (vec![], Some(e.to_string())),
        };
        // What the keys could do, for each revocation's audit entry (left
        // out when unreadable: an offboarding never waits on it).
        let cap = if keys.is_empty() {
            None
        } else {
            crate::pages::capability::now(&state, &id)
                .await
                .ok()
                .map(|(_, c)| c)
        };
        let total = i64::try_from(keys.len()).unwrap_or(i64::MAX);
        let progress = |done: usize| {
            let store = state.offboardings.clone();
            let total = list_error.is_none().then_some(total);
            async move {
                let done = i64::try_from(done).unwrap_or(i64::MAX);
                if let Err(e) = store.progress(group_id, total, done).await {
                    tracing::warn!(error = %e, "offboarding progress not recorded");
                }
            }
        };
        progress(0).await;
        let mut results = Vec::with_capacity(keys.len());
        for key in keys {
            // Another replica took the run over: it deletes what is left.
            if heartbeat.lost() {
                return None;
            }
            let outcome = match VultrId::parse(&key.id) {
                Ok(key_id) => {
                    let intent = Intent {
                        key_id: Some(key.id.clone()),
                        key_name: key.name.clone(),
                        ..on_user(AuditAction::KeyRevoke)
                    };
                    let intent = match &cap {
                        Some(cap) => crate::pages::capability::stamp(intent, cap),
                        None => intent,
                    };
                    group
                        .step(intent, vultr.delete_key(&id, &key_id), true)
                        .await
                }
                Err(_) => {
                    StepOutcome::Failed("Vultr listed a key id keydesk will not follow".into())
                }
            };
            if outcome == StepOutcome::Done {
                metrics::counter!("keydesk_keys_revoked_total").increment(1);
            }
            results.push(KeyResult {
                newcomer: !listed.is_empty() && !listed.contains(&key.id),
                key,
                outcome,
            });
            progress(results.len()).await;
        }
        let listing = match &list_error {
            Some(e) => StepOutcome::Failed(format!("the key list could not be read: {e}")),
            None => StepOutcome::Done,
        };
        let live = results.iter().filter(|r| r.outcome.still_live()).count();
        let finished = live == 0
            && !settled.still_live()
            && !brake.still_live()
            && !hold.still_live()
            && list_error.is_none()
            && !withdrawn.iter().any(|w| w.outcome.still_live());
        group
            .finish(
                [&hold, &brake, &settled, &listing]
                    .into_iter()
                    .chain(withdrawn.iter().map(|w| &w.outcome))
                    .chain(results.iter().map(|r| &r.outcome)),
            )
            .await;
        let live_count = i64::try_from(live).unwrap_or(i64::MAX);
        if let Err(e) = state
            .offboardings
            .finish(group_id, finished, live_count)
            .await
        {
            tracing::warn!(error = %e, "offboarding end not recorded");
        }
        drop(heartbeat);
        state.leases.release(&lease).await;
        tracing::info!(
            keys = results.len(),
            live,
            resumed = resumed.is_some(),
            "offboarding finished"
        );
        Some(Report {
            hold,
            brake,
            withdrawn,
            list_error,
            keys: results,
        })
    }
}
