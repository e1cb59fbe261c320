//! The approval requests' own upkeep: requests past their time expire, and
//! an execution interrupted by a stop or a dropped request is settled as
//! unknown once past the bound, so nothing stays `executing` forever. Each
//! change is audited by the system, once.

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
        let stale = match self.abandon_stale_executions(bound).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "could not sweep interrupted executions");
                return;
            }
        };
        for a in stale {
            let action = match a.action {
                ApprovalAction::KeyCreate => AuditAction::KeyCreate,
                ApprovalAction::KeyRotate => AuditAction::KeyRotate,
                ApprovalAction::GrantCreate => AuditAction::GrantCreate,
                ApprovalAction::ApiAccessOn => AuditAction::UserApiAccess,
                ApprovalAction::Reinstate => AuditAction::UserReinstate,
                ApprovalAction::AllowlistAdd => AuditAction::UserAllowlistAdd,
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
}
