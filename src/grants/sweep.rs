//! The claim links' own upkeep: links past their time expire, claims left
//! unfinished by a stopped process become unknown, and a claim whose answer
//! was lost is settled from the user's key list. Each change is audited by
//! the system, once, by whichever replica wins the conditional update.

use super::{Grant, GrantState, Grants};
use crate::audit::{AuditAction, AuditStore, Intent, Outcome, Settlement};
use crate::vultr::ApiKey;

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

    /// Settles a grant whose claim lost its answer, from the user's key
    /// list: the tagged key exists (claimed), or, once the bound has passed
    /// with no such key, nothing was created and the link works again.
    /// Never reopened earlier: a key Vultr is still making must not get a twin.
    pub async fn reconcile(&self, audit: &AuditStore, grant: &Grant, keys: &[ApiKey]) {
        if grant.state != GrantState::Unknown {
            return;
        }
        let tag = grant.tag();
        let found = keys
            .iter()
            .find(|k| k.name.as_deref().is_some_and(|n| n.ends_with(&tag)));
        let (moved, outcome, note) = match found {
            Some(k) => (
                self.claimed(&grant.id, GrantState::Unknown, &k.id).await,
                Outcome::Ok,
                "reconciled: the key was created",
            ),
            None => {
                let now = match self.db.now_ms().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not reconcile a claim link");
                        return;
                    }
                };
                let started = grant.claim_ms.unwrap_or(grant.created_ms);
                if now - started < audit.pending_bound_ms() {
                    return;
                }
                (
                    self.reopen(&grant.id, GrantState::Unknown).await,
                    Outcome::Failed,
                    "reconciled: no key was created; the link works again",
                )
            }
        };
        match moved {
            Ok(true) => {
                let intent = Intent {
                    target_user_id: Some(grant.user_id.clone()),
                    target_user_email: Some(grant.user_email.clone()),
                    key_name: Some(grant.vultr_key_name()),
                    key_id: found.map(|k| k.id.clone()),
                    granted_by: Some(grant.created_by.clone()),
                    grant_id: Some(grant.id.clone()),
                    ..Intent::system(AuditAction::GrantClaim)
                };
                match audit.intent(&intent).await {
                    Ok(id) => {
                        let how = Settlement {
                            error: Some(note),
                            ..outcome.settled()
                        };
                        audit.settle(id, how).await
                    }
                    Err(e) => tracing::error!(error = %e, "reconciliation could not be audited"),
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not reconcile a claim link"),
        }
    }
}
