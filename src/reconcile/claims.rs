//! Claim links whose claim lost its answer (`unknown`), settled from the
//! user's key list: a new tagged key appeared (claimed), more than one did
//! (left unknown, ambiguous, each shown), or, once the bound has passed
//! with none, nothing was created and the link works again. Never reopened
//! earlier: a key Vultr is still making must not get a twin.

use super::{Candidate, Finding, Sought, find, parse_before};
use crate::audit::{AuditAction, AuditStore, Intent, Outcome};
use crate::grants::{Grant, GrantState, Grants};
use crate::vultr::ApiKey;

/// Settles `grant` from `keys` (the user's list now), audited once by the
/// replica whose conditional update wins.
pub async fn reconcile(grants: &Grants, audit: &AuditStore, grant: &Grant, keys: &[ApiKey]) {
    if grant.state != GrantState::Unknown || grant.candidates.is_some() {
        return;
    }
    let taken = match audit.keys_created_here().await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "could not reconcile a claim link");
            return;
        }
    };
    let tag = grant.tag();
    let named = |n: &str| n.ends_with(&tag);
    let before = parse_before(grant.keys_before.as_deref());
    let started = grant.claim_ms.unwrap_or(grant.created_ms);
    let sought = Sought {
        named: &named,
        before: before.as_ref(),
        taken: &taken,
        started_ms: started,
        bound_ms: audit.pending_bound_ms(),
    };
    let name = grant.vultr_key_name();
    let (moved, outcome, note, key_id) = match find(keys, &sought) {
        Finding::Appeared(c) => (
            grants.claimed(&grant.id, GrantState::Unknown, &c.id).await,
            Outcome::Ok,
            format!("reconciled: a key named {name} appeared while the claim's answer was lost"),
            Some(c.id),
        ),
        Finding::Ambiguous(list) => {
            let note = super::ambiguity(&name, &list, "the claim's answer was lost");
            (
                grants
                    .ambiguous(&grant.id, &Candidate::to_json(&list))
                    .await,
                Outcome::Unknown,
                note,
                None,
            )
        }
        Finding::Nothing => {
            let now = match grants.now_ms().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "could not reconcile a claim link");
                    return;
                }
            };
            if now - started < audit.pending_bound_ms() {
                return;
            }
            (
                grants.reopen(&grant.id, GrantState::Unknown).await,
                Outcome::Failed,
                "reconciled: no key was created; the link works again".to_string(),
                None,
            )
        }
    };
    match moved {
        Ok(true) => {
            let intent = Intent {
                target_user_id: Some(grant.user_id.clone()),
                target_user_email: Some(grant.user_email.clone()),
                key_name: Some(name),
                key_id,
                granted_by: Some(grant.created_by.clone()),
                grant_id: Some(grant.id.clone()),
                ..Intent::system(AuditAction::GrantClaim)
            };
            super::audited(audit, &intent, outcome, &note).await;
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "could not reconcile a claim link"),
    }
}
