//! Lost creates and rotations (`lost_creates`), settled from the user's key
//! list on the next view of the user and by the upkeep sweep.

use std::collections::HashSet;

use super::{Candidate, Finding, Sought, find, parse_before};
use crate::audit::{AuditAction, AuditStore, Intent, Outcome};
use crate::ids::VultrId;
use crate::lost_creates::{LostCreates, LostRow};
use crate::vultr::{ApiKey, VultrClient};

/// Users settled per upkeep pass (each costs one key-list read).
const SWEEP_USERS: i64 = 20;

/// Settles the user's open lost creates from `keys` (their list now).
/// Returns how many were settled or found ambiguous.
pub async fn reconcile(
    lost: &LostCreates,
    audit: &AuditStore,
    user_id: &str,
    keys: &[ApiKey],
) -> Result<usize, sqlx::Error> {
    let open: Vec<_> = lost
        .open_for_user(user_id)
        .await?
        .into_iter()
        .filter(|l| l.candidates.is_none())
        .collect();
    if open.is_empty() {
        return Ok(0);
    }
    let now = lost.db().now_ms().await?;
    // Keys another entry already accounts for cannot be this create's.
    let mut taken = audit.keys_created_here().await?;
    taken.extend(lost.appeared(user_id).await?);
    let mut moved = 0;
    for l in open {
        let before = parse_before(l.keys_before.as_deref());
        let named = |n: &str| n == l.key_name;
        let sought = Sought {
            named: &named,
            before: before.as_ref(),
            taken: &taken,
            started_ms: l.started_ms,
            bound_ms: audit.pending_bound_ms(),
        };
        let (note, outcome, key_id) = match find(keys, &sought) {
            Finding::Appeared(c) => {
                if !lost.settle(l.audit_id, Some(&c.id)).await? {
                    continue; // another replica settled it
                }
                taken.insert(c.id.clone());
                let note = format!(
                    "reconciled: a key named {} appeared while entry #{}'s answer was lost",
                    l.key_name, l.audit_id
                );
                (note, Outcome::Ok, Some(c.id))
            }
            Finding::Ambiguous(list) => {
                if !lost
                    .ambiguous(l.audit_id, &Candidate::to_json(&list))
                    .await?
                {
                    continue;
                }
                let when = format!("entry #{}'s answer was lost", l.audit_id);
                let note = super::ambiguity(&l.key_name, &list, &when);
                (note, Outcome::Unknown, None)
            }
            Finding::Nothing if now - l.started_ms >= audit.pending_bound_ms() => {
                if !lost.settle(l.audit_id, None).await? {
                    continue;
                }
                let note = format!("reconciled: entry #{} created no key", l.audit_id);
                (note, Outcome::Failed, None)
            }
            Finding::Nothing => continue,
        };
        moved += 1;
        // The settling row carries what the key could do, as the lost one did.
        let (level, acls, allowlist) = audit.capability_of(l.audit_id).await.unwrap_or_default();
        let intent = Intent {
            target_user_id: Some(user_id.to_string()),
            key_id,
            key_name: Some(l.key_name.clone()),
            related_key_id: None,
            level,
            acls,
            allowlist,
            ..Intent::system(AuditAction::KeyCreate)
        };
        super::audited(audit, &intent, outcome, &note).await;
        tracing::info!(audit_id = l.audit_id, user_id, "{note}");
    }
    Ok(moved)
}

/// The user page's lost creates, each with what is known.
#[derive(Debug, Default)]
pub struct LostView {
    /// Ids of the user's keys that appeared while an answer was lost.
    pub appeared: HashSet<String>,
    /// Settled as made (the key still listed) or ambiguous, oldest first.
    pub rows: Vec<LostRow>,
}

impl LostView {
    fn of(rows: Vec<LostRow>, keys: &[ApiKey]) -> Self {
        let listed: HashSet<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        let rows: Vec<LostRow> = rows
            .into_iter()
            .filter(|r| match (&r.key_id, &r.candidates) {
                (Some(k), _) => listed.contains(k.as_str()),
                (None, Some(_)) => true,
                (None, None) => false,
            })
            .collect();
        Self {
            appeared: rows.iter().filter_map(|r| r.key_id.clone()).collect(),
            rows,
        }
    }
}

/// For the user page: settles any open lost create from `keys`, given
/// `VIEW_SQL`'s rows already read. One query more only when one is open.
pub async fn view(
    lost: &LostCreates,
    audit: &AuditStore,
    user_id: &str,
    rows: Vec<LostRow>,
    keys: &[ApiKey],
) -> Result<LostView, sqlx::Error> {
    if rows.iter().any(LostRow::unsettled) {
        reconcile(lost, audit, user_id, keys).await?;
        return Ok(LostView::of(lost.view_rows(user_id).await?, keys));
    }
    Ok(LostView::of(rows, keys))
}

/// The upkeep's pass: settles lost creates of a few users, one key-list
/// read each.
pub async fn sweep(lost: &LostCreates, audit: &AuditStore, vultr: &VultrClient) {
    let users = match lost.unsettled_users(SWEEP_USERS).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "could not read lost creates");
            return;
        }
    };
    for user in users {
        let Ok(id) = VultrId::parse(&user) else {
            continue;
        };
        match vultr.list_keys(&id).await {
            Ok(keys) => {
                if let Err(e) = reconcile(lost, audit, &user, &keys).await {
                    tracing::warn!(error = %e, "could not reconcile lost creates");
                }
            }
            // Unknown stays unknown: try again next pass.
            Err(e) => {
                tracing::warn!(error = %e, "lost creates not reconciled: key list unreadable")
            }
        }
    }
}
