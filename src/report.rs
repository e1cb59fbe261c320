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

use crate::audit::AuditStore;
use crate::ids::VultrId;
use crate::vultr::{ApiKey, VultrClient, VultrError};

/// Users whose keys are fetched at once (the rate limiter is the real bound).
const SCAN_CONCURRENCY: usize = 8;

/// One key in the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub user_id: String,
    pub user_name: String,
    pub user_email: String,
    pub key: ApiKey,
    /// No keydesk audit entry created this key: console, API or another root holder.
    pub outside: bool,
}

/// A finished scan.
#[derive(Debug, Clone)]
pub struct Report {
    pub finished: OffsetDateTime,
    pub took: Duration,
    pub users: usize,
    pub failed_users: usize,
    pub rows: Vec<Row>,
}

/// A scan in progress.
#[derive(Debug, Clone)]
pub struct Progress {
    pub done: Arc<AtomicUsize>,
    pub total: Arc<AtomicUsize>,
    pub started: Instant,
    pub started_by: String,
}

#[derive(Default)]
struct Inner {
    running: Option<Progress>,
    last: Option<Arc<Report>>,
    last_error: Option<String>,
}

/// The report's state, shared by the pages and the background job.
#[derive(Default)]
pub struct Reports {
    inner: std::sync::Mutex<Inner>,
}

/// What the page shows.
pub struct Snapshot {
    pub running: Option<(usize, usize, Duration, String)>,
    pub last: Option<Arc<Report>>,
    pub last_error: Option<String>,
}

impl Reports {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = self.lock();
        Snapshot {
            running: g.running.as_ref().map(|p| {
                (
                    p.done.load(Ordering::Relaxed),
                    p.total.load(Ordering::Relaxed),
                    p.started.elapsed(),
                    p.started_by.clone(),
                )
            }),
            last: g.last.clone(),
            last_error: g.last_error.clone(),
        }
    }

    /// Starts a scan unless one is running; returns whether it started.
    pub fn start(self: &Arc<Self>, vultr: VultrClient, audit: AuditStore, actor: &str) -> bool {
        let progress = {
            let mut g = self.lock();
            if g.running.is_some() {
                return false;
            }
            let p = Progress {
                done: Arc::new(AtomicUsize::new(0)),
                total: Arc::new(AtomicUsize::new(0)),
                started: Instant::now(),
                started_by: actor.to_string(),
            };
            g.running = Some(p.clone());
            p
        };
        let me = self.clone();
        tokio::spawn(async move {
            let result = scan(&vultr, &audit, &progress).await;
            let mut g = me.lock();
            g.running = None;
            match result {
                Ok(r) => {
                    tracing::info!(
                        users = r.users,
                        keys = r.rows.len(),
                        failed_users = r.failed_users,
                        took_ms = r.took.as_millis() as u64,
                        "key report scan finished"
                    );
                    g.last = Some(Arc::new(r));
                    g.last_error = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "key report scan failed");
                    g.last_error = Some(e);
                }
            }
        });
        true
    }

    /// Waits until no scan is running (tests and benchmarks).
    pub async fn wait_idle(&self) {
        while self.lock().running.is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
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
            let keys = match VultrId::parse(&user.id) {
                Ok(id) => vultr.list_keys(&id).await,
                Err(_) => Err(VultrError::Malformed(
                    "user id is not a plain Vultr id".into(),
                )),
            };
            done.fetch_add(1, Ordering::Relaxed);
            (user, keys)
        });
    }
    let mut per_user = Vec::with_capacity(users.len());
    let mut failed_users = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((user, Ok(keys))) => per_user.push((user, keys)),
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
        .flat_map(|(user, keys)| {
            let name = user.display_name();
            let email = user.email.clone().unwrap_or_default();
            let ours = &ours;
            keys.into_iter().map(move |key| Row {
                user_id: user.id.clone(),
                user_name: name.clone(),
                user_email: email.clone(),
                outside: !ours.contains(&key.id),
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
    Ok(Report {
        finished: OffsetDateTime::now_utc(),
        took: started.elapsed(),
        users: users.len(),
        failed_users,
        rows,
    })
}
