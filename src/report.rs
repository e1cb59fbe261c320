//! The expiring-keys report: one scan over every user's keys, run as a
//! background job with progress, its result cached until the next scan.
//!
//! A scan costs one upstream call per user, so it runs with bounded
//! concurrency through the client's shared rate limiter: keydesk never
//! causes a 429 itself, and pages stay responsive while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::Semaphore;

use serde::{Deserialize, Serialize};

use crate::audit::AuditStore;
use crate::db::Db;
use crate::ids::VultrId;
use crate::on_pool;
use crate::vultr::{ApiKey, VultrClient, VultrError};

/// Users whose keys are fetched at once (the rate limiter is the real bound).
const SCAN_CONCURRENCY: usize = 8;

/// How long a scan's lease lasts without a heartbeat: a replica that dies
/// mid-scan frees the job after this.
const LEASE: Duration = Duration::from_secs(30);
/// How often the running scan renews its lease and publishes progress.
const HEARTBEAT: Duration = Duration::from_secs(2);
const JOB: &str = "report.scan";

/// One key in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub user_id: String,
    pub user_name: String,
    pub user_email: String,
    pub key: ApiKey,
    /// No keydesk audit entry created this key: console, API or another root holder.
    pub outside: bool,
    /// The user's ACLs (their level follows `KEYDESK_SENSITIVE_ACLS`).
    #[serde(default)]
    pub acls: Vec<String>,
    /// The user's allowlist admits any address; `None`: it could not be read.
    #[serde(default)]
    pub anywhere: Option<bool>,
    /// The user's last Vultr activity (RFC 3339), as the users list said.
    #[serde(default)]
    pub last_activity: Option<String>,
}

impl Row {
    pub fn level(&self, powers: &crate::powers::Powers) -> crate::powers::Level {
        powers.level(&self.acls)
    }
    /// The reach in words, for the report and its CSV.
    pub fn reach_words(&self) -> &'static str {
        match self.anywhere {
            Some(true) => "any address",
            Some(false) => "allowlisted addresses",
            None => "unknown",
        }
    }
}

/// A finished scan, as stored (masked keys only, never a secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub finished_ms: i64,
    pub took_ms: u64,
    pub users: usize,
    pub failed_users: usize,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn finished(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.finished_ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// A scan in progress, as its runner counts it.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub done: Arc<AtomicUsize>,
    pub total: Arc<AtomicUsize>,
}

/// What the page shows: a running scan (from any replica) and the last result.
pub struct Snapshot {
    /// (done, total, elapsed, started_by) while a scan runs.
    pub running: Option<(usize, usize, Duration, String)>,
    pub last: Option<Arc<Report>>,
    pub last_error: Option<String>,
}

/// The report's state, in the database: at most one scan runs across all
/// replicas (a lease), and every replica sees its progress and result.
pub struct Reports {
    db: Db,
    /// This process, as the lease owner.
    instance: String,
}

type JobRow = (
    i64,
    Option<String>,
    Option<i64>,
    i64,
    i64,
    Option<String>,
    Option<String>,
);

impl Reports {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            instance: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    pub async fn snapshot(&self) -> Result<Snapshot, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let (lease, by, started, done, total, result, error): JobRow = on_pool!(
            read,
            &self.db,
            |p| {
                sqlx::query_as(
                "SELECT lease_until_ms, started_by, started_ms, done, total, result, error FROM jobs WHERE name = $1",
            )
            .bind(JOB)
            .fetch_one(p)
            .await?
            }
        );
        let running = (lease > now).then(|| {
            let elapsed = u64::try_from(now - started.unwrap_or(now)).unwrap_or(0);
            (
                usize::try_from(done).unwrap_or(0),
                usize::try_from(total).unwrap_or(0),
                Duration::from_millis(elapsed),
                by.unwrap_or_default(),
            )
        });
        let last = match result {
            Some(json) => match serde_json::from_str::<Report>(&json) {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    tracing::warn!(error = %e, "stored report unreadable");
                    None
                }
            },
            None => None,
        };
        Ok(Snapshot {
            running,
            last,
            last_error: error,
        })
    }

    /// Starts a scan unless one runs anywhere in the cluster; returns whether
    /// this call started it (a second "Rescan" joins the running one).
    pub async fn start(
        self: &Arc<Self>,
        vultr: VultrClient,
        audit: AuditStore,
        actor: &str,
    ) -> Result<bool, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let won: Option<String> = on_pool!(write, &self.db, |p| {
            sqlx::query_scalar(
            "UPDATE jobs SET owner = $1, lease_until_ms = $2, started_by = $3, started_ms = $4, done = 0, total = 0, error = NULL
             WHERE name = $5 AND lease_until_ms < $4 RETURNING name",
        )
        .bind(&self.instance)
        .bind(now + LEASE.as_millis() as i64)
        .bind(actor)
        .bind(now)
        .bind(JOB)
        .fetch_optional(p)
        .await?
        });
        if won.is_none() {
            return Ok(false);
        }
        let progress = Progress {
            done: Arc::new(AtomicUsize::new(0)),
            total: Arc::new(AtomicUsize::new(0)),
        };
        let me = self.clone();
        tokio::spawn(async move {
            let heartbeat = {
                let (me, progress) = (me.clone(), progress.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(HEARTBEAT).await;
                        if let Err(e) = me.publish(&progress).await {
                            tracing::warn!(error = %e, "scan heartbeat failed");
                        }
                    }
                })
            };
            let result = scan(&vultr, &audit, &progress).await;
            heartbeat.abort();
            if let Err(e) = me.finish(result).await {
                tracing::error!(error = %e, "could not store the scan result");
            }
        });
        Ok(true)
    }

    /// Renews the lease and publishes progress.
    async fn publish(&self, p: &Progress) -> Result<(), sqlx::Error> {
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |pool| {
            sqlx::query(
            "UPDATE jobs SET lease_until_ms = $1, done = $2, total = $3 WHERE name = $4 AND owner = $5",
        )
        .bind(now + LEASE.as_millis() as i64)
        .bind(p.done.load(Ordering::Relaxed) as i64)
        .bind(p.total.load(Ordering::Relaxed) as i64)
        .bind(JOB)
        .bind(&self.instance)
        .execute(pool)
        .await
        .map(|_| ())
        })
    }

    /// Stores the outcome and frees the job.
    async fn finish(&self, result: Result<Report, String>) -> Result<(), sqlx::Error> {
        let (report, error) = match result {
            Ok(r) => {
                tracing::info!(
                    users = r.users,
                    keys = r.rows.len(),
                    failed_users = r.failed_users,
                    took_ms = r.took_ms,
                    "key report scan finished"
                );
                let json = serde_json::to_string(&r).map_err(|e| sqlx::Error::Encode(e.into()))?;
                (Some(json), None)
            }
            Err(e) => {
                tracing::warn!(error = %e, "key report scan failed");
                (None, Some(e))
            }
        };
        let now = self.db.now_ms().await?;
        on_pool!(write, &self.db, |p| sqlx::query(
            "UPDATE jobs SET lease_until_ms = 0, owner = NULL, finished_ms = $1,
                 result = COALESCE($2, result), error = $3
             WHERE name = $4 AND owner = $5",
        )
        .bind(now)
        .bind(report)
        .bind(error)
        .bind(JOB)
        .bind(&self.instance)
        .execute(p)
        .await
        .map(|_| ()))
    }

    /// Waits until no scan runs anywhere (tests and benchmarks).
    pub async fn wait_idle(&self) {
        loop {
            match self.snapshot().await {
                Ok(s) if s.running.is_none() => return,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

/// Lists every user, then every user's keys with bounded concurrency.
pub async fn scan(
    vultr: &VultrClient,
    audit: &AuditStore,
    progress: &Progress,
) -> Result<Report, String> {
    let started = Instant::now();
    let users = vultr
        .list_all_users()
        .await
        .map_err(|e| format!("listing users failed: {e}"))?;
    progress.total.store(users.len(), Ordering::Relaxed);
    let permits = Arc::new(Semaphore::new(SCAN_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for user in users.iter().cloned() {
        let vultr = vultr.clone();
        let permits = permits.clone();
        let done = progress.done.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            // An id Vultr itself sent that is not a plain id is not followed.
            let id = VultrId::parse(&user.id);
            let keys = match &id {
                Ok(id) => vultr.list_keys(id).await,
                Err(_) => Err(VultrError::Malformed(
                    "user id is not a plain Vultr id".into(),
                )),
            };
            // Where the keys work from, for users that have any: one more
            // call per such user. Unreadable is shown as unknown.
            let anywhere = match (&id, &keys) {
                (Ok(id), Ok(k)) if !k.is_empty() => vultr
                    .allowlist(id)
                    .await
                    .ok()
                    .map(|e| crate::allowlist::Reach::new(e).anywhere()),
                _ => None,
            };
            done.fetch_add(1, Ordering::Relaxed);
            (user, keys.map(|k| (k, anywhere)))
        });
    }
    let mut per_user = Vec::with_capacity(users.len());
    let mut failed_users = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((user, Ok((keys, anywhere)))) => per_user.push((user, keys, anywhere)),
            Ok((user, Err(e))) => {
                failed_users += 1;
                tracing::warn!(vultr.user_id = %user.id, error = %e, "keys of a user could not be read");
            }
            Err(e) => {
                failed_users += 1;
                tracing::warn!(error = %e, "scan task failed");
            }
        }
    }
    let ours = audit.keys_created_here().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "audit unavailable: cannot tell which keys keydesk created");
        Default::default()
    });
    let mut rows: Vec<Row> = per_user
        .into_iter()
        .flat_map(|(user, keys, anywhere)| {
            let name = user.display_name();
            let email = user.email.clone().unwrap_or_default();
            let acls = user.acls.clone().unwrap_or_default();
            let ours = &ours;
            keys.into_iter().map(move |key| Row {
                user_id: user.id.clone(),
                user_name: name.clone(),
                user_email: email.clone(),
                outside: !ours.contains(&key.id),
                acls: acls.clone(),
                anywhere,
                last_activity: user.last_activity.clone(),
                key,
            })
        })
        .collect();
    rows.sort_by_key(|r| {
        r.key
            .expiry_time()
            .map(|t| t.unix_timestamp())
            .unwrap_or(i64::MAX)
    });
    let finished = OffsetDateTime::now_utc();
    Ok(Report {
        finished_ms: (finished.unix_timestamp_nanos() / 1_000_000) as i64,
        took_ms: started.elapsed().as_millis() as u64,
        users: users.len(),
        failed_users,
        rows,
    })
}
