//! Leases of durable jobs (an offboarding, a notice pass), kept in the
//! store: the replica that runs a job holds its lease and renews its
//! heartbeat; when the heartbeat stops (the replica was killed), the lease
//! expires and another replica takes the job over. Taken, renewed and
//! released by conditional updates only, on both engines, against the
//! database clock (one clock for every replica).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::db::Db;
use crate::on_pool;

/// How long a lease lasts without a heartbeat, by default: a job of a killed
/// replica is taken over within this plus one look (a third of it), 20 s.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// A lease as stored: who runs the job, since when, last heartbeat.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Lease {
    pub job: String,
    pub holder: String,
    pub acquired_ms: i64,
    pub heartbeat_ms: i64,
    pub expires_ms: i64,
}

impl Lease {
    pub fn since_display(&self) -> String {
        crate::timefmt::display_ms(self.acquired_ms)
    }
}

/// This replica's side of the lease table. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leases {
    db: Db,
    replica: Arc<str>,
    lease: Duration,
}

/// This process's name among replicas: the host name and a random suffix
/// (two processes on one host differ), shown to staff.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "keydesk".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..6])
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Leases {
    pub fn new(db: Db, lease: Duration) -> Self {
        Self {
            db,
            replica: replica_name().into(),
            lease,
        }
    }

    /// This replica's id, as leases name it.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// How long a lease lasts without a heartbeat.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often a holder renews, and how often replicas look for jobs to
    /// take over: a third of the lease, so two heartbeats may be lost.
    pub fn beat(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(100))
    }

    /// Takes `job` when nobody holds it or its lease expired (or this
    /// replica holds it already). True when this replica holds it now.
    pub async fn acquire(&self, job: &str) -> Result<bool, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let won: Option<String> = on_pool!(write, &self.db, |p| {
            sqlx::query_scalar(
                "INSERT INTO job_leases (job, holder, acquired_ms, heartbeat_ms, expires_ms)
                 VALUES ($1, $2, $3, $3, $4)
                 ON CONFLICT (job) DO UPDATE SET holder = excluded.holder,
                    acquired_ms = excluded.acquired_ms, heartbeat_ms = excluded.heartbeat_ms,
                    expires_ms = excluded.expires_ms
                 WHERE job_leases.expires_ms < $3 OR job_leases.holder = $2
                 RETURNING job",
            )
            .bind(job)
            .bind(&*self.replica)
            .bind(now)
            .bind(now + ms(self.lease))
            .fetch_optional(p)
            .await?
        });
        Ok(won.is_some())
    }

    /// The heartbeat: false when the lease is no longer this replica's
    /// (it lapsed and another took the job): the holder must stop.
    pub async fn renew(&self, job: &str) -> Result<bool, sqlx::Error> {
        let now = self.db.now_ms().await?;
        let n = on_pool!(write, &self.db, |p| {
            sqlx::query(
                "UPDATE job_leases SET heartbeat_ms = $1, expires_ms = $2
                 WHERE job = $3 AND holder = $4",
            )
            .bind(now)
            .bind(now + ms(self.lease))
            .bind(job)
            .bind(&*self.replica)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// The job is over: the lease ends now (the row stays, for the record).
    pub async fn release(&self, job: &str) {
        let r: Result<(), sqlx::Error> = async {
            let now = self.db.now_ms().await?;
            on_pool!(write, &self.db, |p| {
                sqlx::query(
                    "UPDATE job_leases SET expires_ms = $1 - 1 WHERE job = $2 AND holder = $3",
                )
                .bind(now)
                .bind(job)
                .bind(&*self.replica)
                .execute(p)
                .await
                .map(|_| ())
            })
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, job, "lease not released; it lapses on its own");
        }
    }

    /// The lease of `job`, held or not.
    pub async fn get(&self, job: &str) -> Result<Option<Lease>, sqlx::Error> {
        on_pool!(read, &self.db, |p| {
            sqlx::query_as::<_, Lease>(
                "SELECT job, holder, acquired_ms, heartbeat_ms, expires_ms FROM job_leases WHERE job = $1",
            )
            .bind(job)
            .fetch_optional(p)
            .await
        })
    }

    /// Takes `job` and keeps it while the guard lives (an approval's
    /// execution, inside its request): a heartbeat that never says stop
    /// when the lease could not be taken.
    pub async fn hold(&self, job: &str) -> Heartbeat {
        match self.acquire(job).await {
            Ok(true) => self.keep(job),
            Ok(false) => Heartbeat::none(),
            Err(e) => {
                tracing::warn!(error = %e, job, "lease not taken");
                Heartbeat::none()
            }
        }
    }

    /// Renews `job` every `beat()` until the returned guard is dropped; the
    /// guard says when the lease was lost, so the job stops before its next
    /// call upstream.
    pub fn keep(&self, job: &str) -> Heartbeat {
        let lost = Arc::new(AtomicBool::new(false));
        let task = {
            let (me, job, lost) = (self.clone(), job.to_string(), lost.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(me.beat()).await;
                    match me.renew(&job).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(job, "lease lost to another replica; stopping");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        // A missed beat: the next one may get through in time.
                        Err(e) => tracing::warn!(error = %e, job, "lease heartbeat failed"),
                    }
                }
            })
        };
        Heartbeat { task, lost }
    }
}

/// A running heartbeat; stops when dropped.
pub struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl Heartbeat {
    /// No lease could be taken (the store failed): the job runs on
    /// regardless, never told to stop.
    pub fn none() -> Self {
        Heartbeat {
            task: tokio::spawn(async {}),
            lost: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Another replica holds the lease now: this one must not go on.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The lease key of an approval's execution (`approvals` looks for it).
pub fn approval_job(approval_id: &str) -> String {
    format!("approval:{approval_id}")
}

/// The lease key of an offboarding run.
pub fn offboarding_job(group_id: i64) -> String {
    format!("offboarding:{group_id}")
}
