//! Offboardings whose replica stopped (killed, or cut off from the
//! database) are taken over by another, with nobody pressing anything: the
//! job loop of every replica looks every third of the lease; the one that
//! wins the expired lease finishes the run under the same audit group.

use super::job::Job;
use crate::audit::{AuditAction, Intent};
use crate::ids::VultrId;
use crate::state::AppState;
use crate::write::Group;

/// Takes over every stalled run this replica can lease; each runs in its
/// own task. Returns how many were taken over.
pub async fn resume_stalled(state: &AppState) -> usize {
    let lease_ms = i64::try_from(state.leases.lease().as_millis()).unwrap_or(i64::MAX);
    let stalled = match state.offboardings.stalled(lease_ms).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for stalled offboardings");
            return 0;
        }
    };
    let mut taken = 0;
    for run in stalled {
        let lease = crate::leases::offboarding_job(run.group_id);
        match state.leases.acquire(&lease).await {
            Ok(true) => {}
            // Another replica was quicker.
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "could not take a stalled offboarding over");
                continue;
            }
        }
        let Ok(user_id) = VultrId::parse(&run.user_id) else {
            tracing::error!(
                group = run.group_id,
                "stalled offboarding names no usable user id"
            );
            continue;
        };
        let intent = Intent {
            target_user_id: Some(run.user_id.clone()),
            target_user_email: run.user_email.clone(),
            reason: run.reason.clone(),
            ..Intent::new(&run.started_by, "operator", AuditAction::UserOffboard)
        };
        let group = Group::resume(state.clone(), run.group_id, intent);
        let note = Intent {
            target_user_id: Some(run.user_id.clone()),
            target_user_email: run.user_email.clone(),
            key_name: Some(format!(
                "resumed by replica {} after its replica stopped",
                state.leases.replica()
            )),
            ..group.part(AuditAction::UserOffboard)
        };
        group.note(note, "resumed").await;
        tracing::warn!(
            group = run.group_id,
            by = run.holder.as_deref().unwrap_or("an earlier release"),
            "offboarding resumed: its replica stopped"
        );
        let job = Job {
            state: state.clone(),
            group,
            user_id,
            email: run.user_email.clone(),
            actor: run.started_by.clone(),
            reason: run.reason.clone(),
            listed: run
                .listed
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            resumed: Some(run),
        };
        tokio::spawn(job.run());
        taken += 1;
    }
    taken
}
