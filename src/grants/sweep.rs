//! The claim links' own upkeep: links past their time expire and claims
//! left unfinished by a stopped process become unknown (settled from the
//! key list by `reconcile::claims`). Each change is audited by the system,
//! once, by whichever replica wins the conditional update.

use super::Grants;
use crate::audit::{AuditAction, AuditStore, Intent, Outcome};

impl Grants {
    /// Marks pending grants past their time expired, one audit entry each,
    /// and claims abandoned by a stopped process unknown. Runs from the
    /// upkeep task and before grant pages.
    pub async fn sweep(&self, audit: &AuditStore) {
        let bound = std::time::Duration::from_millis(audit.pending_bound_ms().max(0) as u64);
        match self.abandon_stale_claims(bound).await {
            Ok(n) if n > 0 => tracing::warn!(
                count = n,
                "claims left unfinished by a stopped process marked unknown"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not check for abandoned claims"),
        }
        let expired = match self.expire_due().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "could not sweep expired claim links");
                return;
            }
        };
        for g in expired {
            let intent = Intent {
                target_user_id: Some(g.user_id.clone()),
                target_user_email: Some(g.user_email.clone()),
                key_name: Some(g.key_name.clone()),
                grant_id: Some(g.id.clone()),
                ..Intent::system(AuditAction::GrantExpire)
            };
            audit.record(&intent, Outcome::Ok).await;
            metrics::counter!("keydesk_grants_total", "event" => "expire").increment(1);
        }
    }
}
