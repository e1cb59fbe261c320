//! An expired-key clean-up as a durable job: the run and its keys are in
//! the store (`cleanups`) before the first DELETE, each key's outcome as it
//! ends, all under a lease (`leases`). When the replica running it stops,
//! another takes it over within the lease and deals with the keys left,
//! each checked at Vultr again first (one already gone is not deleted).

use std::collections::BTreeMap;

use askama::Template;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::audit::{AuditAction, Intent};
use crate::cleanups::cleanup_job;
use crate::ids::VultrId;
use crate::leases::Heartbeat;
use crate::state::AppState;
use crate::vultr::KeyState;
use crate::write::{Group, StepOutcome};

/// Users whose keys are checked and revoked at once (the budget is the real bound).
const CONCURRENCY: usize = 4;

/// Runs the clean-up of `by_user` under its lease (taken by the caller):
/// every outcome, or None when another replica took it over meanwhile. The
/// group is settled and the lease released when it ends; `earlier` are the
/// outcomes a stopped replica recorded before.
pub(super) async fn carry_out(
    group: &Group,
    by_user: BTreeMap<VultrId, Vec<VultrId>>,
    tx: &mpsc::UnboundedSender<String>,
    leased: bool,
    earlier: Vec<StepOutcome>,
) -> Option<Vec<StepOutcome>> {
    let state = group.state();
    let lease = cleanup_job(group.id());
    let heartbeat = if leased {
        state.leases.keep(&lease)
    } else {
        Heartbeat::none()
    };
    let mine = run(group, by_user, tx, &heartbeat).await?;
    drop(heartbeat);
    if let Err(e) = state.cleanups.finish(group.id()).await {
        tracing::warn!(error = %e, "clean-up end not recorded");
    }
    state.leases.release(&lease).await;
    Some(earlier.into_iter().chain(mine).collect())
}

/// An outcome as recorded (`StepOutcome::code`), for settling a resumed group.
fn recorded(code: &str) -> StepOutcome {
    match code {
        "failed" => StepOutcome::Failed("recorded by the stopped replica".into()),
        "unknown" => StepOutcome::Unknown("recorded by the stopped replica".into()),
        "skipped" => StepOutcome::Skipped("recorded by the stopped replica".into()),
        "gone" => StepOutcome::AlreadyGone,
        _ => StepOutcome::Done,
    }
}

/// Takes over every clean-up whose replica stopped and that this replica
/// can lease; each runs in its own task. Returns how many.
pub async fn resume_stalled(state: &AppState) -> usize {
    let stalled = match state.cleanups.stalled().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for stalled clean-ups");
            return 0;
        }
    };
    let mut taken = 0;
    for run in stalled {
        match state.leases.acquire(&cleanup_job(run.group_id)).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "could not take a stalled clean-up over");
                continue;
            }
        }
        let keys = match state.cleanups.keys(run.group_id).await {
            Ok(k) => k,
            Err(e) => {
                // The lease lapses again; the next look tries anew.
                tracing::warn!(error = %e, "a stalled clean-up's keys could not be read");
                continue;
            }
        };
        let mut earlier = vec![];
        let mut by_user: BTreeMap<VultrId, Vec<VultrId>> = BTreeMap::new();
        for (user, key, outcome) in keys {
            match (outcome, VultrId::parse(&user), VultrId::parse(&key)) {
                (Some(code), _, _) => earlier.push(recorded(&code)),
                (None, Ok(u), Ok(k)) => by_user.entry(u).or_default().push(k),
                _ => earlier.push(StepOutcome::Failed("an id keydesk will not follow".into())),
            }
        }
        let intent = Intent {
            reason: run.reason.clone(),
            ..Intent::new(&run.started_by, "operator", AuditAction::KeysCleanup)
        };
        let group = Group::resume(state.clone(), run.group_id, intent);
        let note = Intent {
            key_name: Some(format!(
                "resumed by replica {} after its replica stopped",
                state.leases.replica()
            )),
            ..group.part(AuditAction::KeysCleanup)
        };
        group.note(note, "resumed").await;
        tracing::warn!(
            group = run.group_id,
            by = run.holder.as_deref().unwrap_or("an earlier release"),
            "clean-up resumed: its replica stopped"
        );
        tokio::spawn(async move {
            // Nobody watches a resumed run: its lines go nowhere.
            let (tx, _rx) = mpsc::unbounded_channel::<String>();
            if let Some(outcomes) = carry_out(&group, by_user, &tx, true, earlier).await {
                group.finish(outcomes.iter()).await;
            }
        });
        taken += 1;
    }
    taken
}

/// One line of the streamed result.
#[derive(Template)]
#[template(path = "reports/cleanup_line.html")]
struct LineView<'a> {
    user: &'a str,
    key_id: &'a str,
    key_name: &'a str,
    outcome: &'a StepOutcome,
}

/// Checks each user's keys anew and revokes the targeted ones that are still
/// there and still expired, a few users at a time.
/// Stops (None) when the lease went to another replica, which finishes.
async fn run(
    group: &Group,
    by_user: BTreeMap<VultrId, Vec<VultrId>>,
    tx: &mpsc::UnboundedSender<String>,
    heartbeat: &Heartbeat,
) -> Option<Vec<StepOutcome>> {
    let vultr = group.state().vultr.clone();
    let store = group.state().cleanups.clone();
    let per_user = futures_util::stream::iter(by_user)
        .map(|(user, keys)| {
            let (vultr, store) = (vultr.clone(), store.clone());
            async move {
                let (current, owner, allowlist) = tokio::join!(
                    vultr.list_keys(&user),
                    vultr.get_user(&user),
                    vultr.allowlist(&user)
                );
                // What the keys could do, for the audit, when both were read.
                let cap = match (&owner, allowlist) {
                    (Ok(u), Ok(list)) => Some(crate::powers::Capability::of(
                        &group.state().powers,
                        u.acls.as_deref(),
                        list,
                    )),
                    _ => None,
                };
                let email = owner.ok().and_then(|u| u.email);
                let mut out = Vec::with_capacity(keys.len());
                for key_id in keys {
                    // Another replica took the run over: it deals with the rest.
                    if heartbeat.lost() {
                        return None;
                    }
                    let intent = Intent {
                        target_user_id: Some(user.to_string()),
                        target_user_email: email.clone(),
                        key_id: Some(key_id.to_string()),
                        ..group.part(AuditAction::KeyRevoke)
                    };
                    let intent = match &cap {
                        Some(cap) => crate::pages::capability::stamp(intent, cap),
                        None => intent,
                    };
                    let (name, outcome) = match &current {
                        Err(e) => (
                            String::new(),
                            StepOutcome::Failed(format!("the user's keys could not be read: {e}")),
                        ),
                        Ok(list) => match list.iter().find(|k| k.id == key_id.as_str()) {
                            None => {
                                group.note(intent, "already gone").await;
                                (String::new(), StepOutcome::AlreadyGone)
                            }
                            Some(k) if k.state() != KeyState::Expired => {
                                let why = "no longer expired";
                                group
                                    .note(
                                        Intent {
                                            key_name: k.name.clone(),
                                            ..intent
                                        },
                                        why,
                                    )
                                    .await;
                                (
                                    k.name_or_dash().to_string(),
                                    StepOutcome::Skipped(why.into()),
                                )
                            }
                            Some(k) => {
                                let intent = Intent {
                                    key_name: k.name.clone(),
                                    ..intent
                                };
                                let call = vultr.delete_key(&user, &key_id);
                                (
                                    k.name_or_dash().to_string(),
                                    group.step(intent, call, true).await,
                                )
                            }
                        },
                    };
                    if outcome == StepOutcome::Done {
                        metrics::counter!("keydesk_keys_revoked_total").increment(1);
                    }
                    let (gid, u, k) = (group.id(), user.as_str(), key_id.as_str());
                    if let Err(e) = store.key_done(gid, u, k, outcome.code()).await {
                        tracing::warn!(error = %e, "clean-up progress not recorded; a resumed run checks the key again");
                    }
                    let line = LineView {
                        user: email.as_deref().unwrap_or(user.as_str()),
                        key_id: key_id.as_str(),
                        key_name: &name,
                        outcome: &outcome,
                    };
                    let _ = tx.send(line.render().unwrap_or_default());
                    out.push(outcome);
                }
                Some(out)
            }
        })
        .buffer_unordered(CONCURRENCY);
    let per_user: Vec<Option<Vec<StepOutcome>>> = per_user.collect().await;
    per_user
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .map(|v| v.into_iter().flatten().collect())
}
