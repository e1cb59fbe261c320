//! Creates whose answer was lost. A create answered by a gateway's 5xx, a
//! timeout or an unreadable 2xx may have made a key: its form is spent (see
//! `write`) and it is recorded here. The next view of the user, and the
//! upkeep sweep, settle it from the user's key list:
//! - a key with the intended name, created since, that no other keydesk
//!   entry made: created. The audit says so (by the system) and the user page
//!   marks the key "never shown to anyone", with Revoke one click away;
//! - none once the bound has passed: not created.
//!
//! Unknown is never treated as failed before that.

use std::collections::HashSet;

use crate::audit::{AuditAction, AuditStore, Intent, Outcome, Settlement};
use crate::db::Db;
use crate::ids::VultrId;
use crate::on_pool;
use crate::vultr::{ApiKey, VultrClient};

/// Slack for clocks: a key made up to this long before the record still matches.
const CLOCK_SLACK_MS: i64 = 5 * 60 * 1000;
/// Users settled per upkeep pass (each costs one key-list read).
const SWEEP_USERS: i64 = 20;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LostCreate {
    /// The create's own audit entry (settled unknown).
    pub audit_id: i64,
    pub user_id: String,
    pub key_name: String,
    pub started_ms: i64,
}

/// A user's (`$1`) lost creates still open or settled as made: (state, key id).
pub const VIEW_SQL: &str =
    "SELECT state, key_id FROM lost_creates WHERE user_id = $1 AND state IN ('open', 'created')";

#[derive(Clone, Debug)]
pub struct LostCreates {
    db: Db,
}

impl LostCreates {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Records a create of `key_name` for `user_id` whose outcome is unknown.
    pub async fn record(
        &self,
        audit_id: i64,
        user_id: &str,
        key_name: &str,
    ) -> Result<(), sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| {
            sqlx::query(
                "INSERT INTO lost_creates (audit_id, user_id, key_name, started_ms, state) VALUES ($1, $2, $3, $4, 'open')",
            )
            .bind(audit_id)
            .bind(user_id)
            .bind(key_name)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    pub async fn open_for_user(&self, user_id: &str) -> Result<Vec<LostCreate>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, LostCreate>(
                "SELECT audit_id, user_id, key_name, started_ms FROM lost_creates WHERE user_id = $1 AND state = 'open' ORDER BY audit_id",
            )
            .bind(user_id)
            .fetch_all(p)
            .await
        })
    }

    /// Ids of the user's keys that a lost create made: nobody ever saw them.
    pub async fn never_shown(&self, user_id: &str) -> Result<HashSet<String>, sqlx::Error> {
        let ids: Vec<String> = on_pool!(read, &self.db, |p| {
            sqlx::query_scalar(
                "SELECT key_id FROM lost_creates WHERE user_id = $1 AND state = 'created' AND key_id IS NOT NULL",
            )
            .bind(user_id)
            .fetch_all(p)
            .await?
        });
        Ok(ids.into_iter().collect())
    }

    async fn settle(&self, audit_id: i64, key_id: Option<&str>) -> Result<bool, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let state = if key_id.is_some() {
            "created"
        } else {
            "not_created"
        };
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE lost_creates SET state = $1, key_id = $2, settled_ms = $3 WHERE audit_id = $4 AND state = 'open'",
            )
            .bind(state)
            .bind(key_id)
            .bind(now)
            .bind(audit_id)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Settles the user's open lost creates from `keys` (their list now).
    /// Returns how many were settled.
    pub async fn reconcile(
        &self,
        audit: &AuditStore,
        user_id: &str,
        keys: &[ApiKey],
    ) -> Result<usize, sqlx::Error> {
        let open = self.open_for_user(user_id).await?;
        if open.is_empty() {
            return Ok(0);
        }
        let now = self.db.now_ms().await?;
        // Keys another entry already accounts for cannot be this create's.
        let mut taken = audit.keys_created_here().await?;
        taken.extend(self.never_shown(user_id).await?);
        let mut settled = 0;
        for lost in open {
            let found = keys.iter().find(|k| {
                !taken.contains(&k.id)
                    && k.name.as_deref() == Some(lost.key_name.as_str())
                    && created_ms(k).is_none_or(|c| c >= lost.started_ms - CLOCK_SLACK_MS)
            });
            let note = match found {
                Some(_) => format!(
                    "reconciled: entry #{} created this key; it was never shown to anyone",
                    lost.audit_id
                ),
                None if now - lost.started_ms >= audit.pending_bound_ms() => {
                    format!("reconciled: entry #{} created no key", lost.audit_id)
                }
                None => continue,
            };
            let key_id = found.map(|k| k.id.clone());
            if !self.settle(lost.audit_id, key_id.as_deref()).await? {
                continue; // another replica settled it
            }
            if let Some(k) = &key_id {
                taken.insert(k.clone());
            }
            settled += 1;
            let intent = Intent {
                target_user_id: Some(user_id.to_string()),
                key_id,
                key_name: Some(lost.key_name.clone()),
                related_key_id: None,
                ..Intent::system(AuditAction::KeyCreate)
            };
            let outcome = if found.is_some() {
                Outcome::Ok
            } else {
                Outcome::Failed
            };
            match audit.intent(&intent).await {
                Ok(id) => {
                    let how = Settlement {
                        error: Some(&note),
                        ..outcome.settled()
                    };
                    audit.settle(id, how).await
                }
                Err(e) => tracing::error!(error = %e, "reconciliation could not be audited"),
            }
            tracing::info!(audit_id = lost.audit_id, user_id, "{note}");
        }
        Ok(settled)
    }

    /// For the user page: the ids of the user's keys nobody saw, after
    /// settling any open lost create from `keys`. One query when nothing is
    /// open (the usual case).
    pub async fn view(
        &self,
        audit: &AuditStore,
        user_id: &str,
        keys: &[ApiKey],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let rows: Vec<(String, Option<String>)> = on_pool!(read, &self.db, |p| {
            sqlx::query_as(VIEW_SQL).bind(user_id).fetch_all(p).await?
        });
        self.view_from(rows, audit, user_id, keys).await
    }

    /// `view`, from `VIEW_SQL`'s rows already read.
    pub async fn view_from(
        &self,
        rows: Vec<(String, Option<String>)>,
        audit: &AuditStore,
        user_id: &str,
        keys: &[ApiKey],
    ) -> Result<HashSet<String>, sqlx::Error> {
        if rows.iter().any(|(state, _)| state == "open") {
            self.reconcile(audit, user_id, keys).await?;
            return self.never_shown(user_id).await;
        }
        Ok(rows.into_iter().filter_map(|(_, key)| key).collect())
    }

    /// The upkeep's pass: settles lost creates of a few users, one key-list
    /// read each.
    pub async fn sweep(&self, audit: &AuditStore, vultr: &VultrClient) {
        let users: Vec<String> = match on_pool!(read, &self.db, |p| {
            sqlx::query_scalar(
                "SELECT DISTINCT user_id FROM lost_creates WHERE state = 'open' ORDER BY user_id LIMIT $1",
            )
            .bind(SWEEP_USERS)
            .fetch_all(p)
            .await
        }) {
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
                    if let Err(e) = self.reconcile(audit, &user, &keys).await {
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
}

fn created_ms(k: &ApiKey) -> Option<i64> {
    let t = crate::timefmt::parse_time(k.date_created.as_deref()?)?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}
