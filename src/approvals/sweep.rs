//! The approval requests' own upkeep: requests past their time expire, and
//! an execution interrupted by a stop or a dropped request is settled as
//! unknown once its lease lapsed (the job loop looks every third of the
//! lease) or, without one, once past the bound, so nothing stays
//! `executing` forever. Each change is audited by the system, once.

use super::{ApprovalAction, Approvals};
use crate::audit::{AuditAction, AuditStore, Intent, Outcome, Settlement};

impl Approvals {
    /// Runs from the upkeep task and before approval pages.
    pub async fn sweep(&self, audit: &AuditStore) {
        match self.expire_due().await {
            Ok(expired) => {
                for a in expired {
                    let intent = a.about(Intent::system(AuditAction::ApprovalExpire));
                    audit.record(&intent, Outcome::Ok).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not sweep expired approval requests"),
        }
        let bound = std::time::Duration::from_millis(audit.pending_bound_ms().max(0) as u64);
        match self.abandon_stale_executions(bound).await {
            Ok(stale) => settle_interrupted(audit, stale).await,
            Err(e) => tracing::warn!(error = %e, "could not sweep interrupted executions"),
        }
    }

    /// Runs from the job loop: executions whose replica stopped (their
    /// lease lapsed) are settled at once, not after the bound.
    pub async fn sweep_lapsed(&self, audit: &AuditStore) {
        match self.abandon_lapsed_executions().await {
            Ok(lapsed) => settle_interrupted(audit, lapsed).await,
            Err(e) => tracing::warn!(error = %e, "could not sweep interrupted executions"),
        }
    }
}

/// Audits each interrupted execution, once, by the system: outcome unknown.
async fn settle_interrupted(audit: &AuditStore, stale: Vec<super::Approval>) {
    for a in stale {
        let action = match a.action {
            ApprovalAction::KeyCreate => AuditAction::KeyCreate,
            ApprovalAction::KeyRotate => AuditAction::KeyRotate,
            ApprovalAction::GrantCreate => AuditAction::GrantCreate,
            ApprovalAction::ApiAccessOn => AuditAction::UserApiAccess,
            ApprovalAction::Reinstate => AuditAction::UserReinstate,
            ApprovalAction::AllowlistAdd => AuditAction::UserAllowlistAdd,
            // Never moved here (`each_moved` leaves them to their release).
            ApprovalAction::Newer => continue,
        };
        let intent = Intent {
            approved_by: a.decided_by.clone(),
            ..a.about(Intent::system(action))
        };
        let how = Settlement {
            error: Some("the execution was interrupted; outcome unknown, never run again"),
            ..Outcome::Unknown.settled()
        };
        match audit.intent(&intent).await {
            Ok(id) => audit.settle(id, how).await,
            Err(e) => tracing::error!(error = %e, "interrupted execution could not be audited"),
        }
        tracing::warn!(approval = %a.id, "interrupted approval execution settled as unknown");
    }
}
