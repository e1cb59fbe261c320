//! The upstream rate budget: `KEYDESK_UPSTREAM_RPS` for the whole
//! deployment. Replicas share one egress IP and Vultr limits per IP, so with
//! PostgreSQL the budget is one GCRA row updated against the database clock:
//! every replica draws from it. One process (SQLite) keeps it in memory. When
//! the database cannot be reached, each replica falls back to a local limiter
//! at a safe fraction of the budget instead of stopping.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::Quota;

use crate::db::Db;

type Limiter = governor::DefaultDirectRateLimiter;

/// The share of the budget a replica allows itself without the database.
pub const FALLBACK_FRACTION: u32 = 3;

pub enum Budget {
    Local(Limiter),
    Shared {
        db: Db,
        /// GCRA emission interval: one request per this many ms.
        interval_ms: i64,
        /// How far ahead of now the schedule may run: the burst.
        tolerance_ms: i64,
        fallback: Limiter,
    },
}

fn limiter(rps: u32, burst: u32) -> Limiter {
    let rps = NonZeroU32::new(rps.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.min(rps.get()).max(1)).unwrap_or(NonZeroU32::MIN);
    governor::RateLimiter::direct(Quota::per_second(rps).allow_burst(burst))
}

/// One update for both engines: take a slot if the schedule is not too far
/// ahead of the database clock. `$1` interval, `$2` tolerance.
const TAKE_SQLITE: &str = "UPDATE rate_budget
    SET tat_ms = MAX(tat_ms, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)) + $1
    WHERE name = 'vultr'
      AND MAX(tat_ms, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
          - CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) <= $2
    RETURNING tat_ms";
const TAKE_POSTGRES: &str = "UPDATE rate_budget
    SET tat_ms = GREATEST(tat_ms, (extract(epoch from clock_timestamp()) * 1000)::BIGINT) + $1
    WHERE name = 'vultr'
      AND GREATEST(tat_ms, (extract(epoch from clock_timestamp()) * 1000)::BIGINT)
          - (extract(epoch from clock_timestamp()) * 1000)::BIGINT <= $2
    RETURNING tat_ms";
/// How long until a slot frees, in ms (may be ≤ 0: retry at once).
const WAIT_SQLITE: &str = "SELECT tat_ms - $1 - CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) FROM rate_budget WHERE name = 'vultr'";
const WAIT_POSTGRES: &str = "SELECT tat_ms - $1 - (extract(epoch from clock_timestamp()) * 1000)::BIGINT FROM rate_budget WHERE name = 'vultr'";

impl Budget {
    /// A budget of this process alone.
    pub fn local(rps: u32, burst: u32) -> Self {
        Budget::Local(limiter(rps, burst))
    }

    /// A budget shared through `db` by every process that uses it.
    pub fn shared(db: Db, rps: u32, burst: u32) -> Self {
        let interval_ms = (1000 / i64::from(rps.max(1))).max(1);
        Budget::Shared {
            db,
            interval_ms,
            tolerance_ms: interval_ms * i64::from(burst.max(1) - 1),
            fallback: limiter((rps / FALLBACK_FRACTION).max(1), 1),
        }
    }

    /// Waits for a slot; returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let started = Instant::now();
        match self {
            Budget::Local(l) => l.until_ready().await,
            Budget::Shared {
                db,
                interval_ms,
                tolerance_ms,
                fallback,
            } => loop {
                match take(db, *interval_ms, *tolerance_ms).await {
                    Ok(None) => break,
                    Ok(Some(wait_ms)) => {
                        let wait = u64::try_from(wait_ms.clamp(1, 1000)).unwrap_or(1);
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    Err(e) => {
                        metrics::counter!("keydesk_budget_fallbacks_total").increment(1);
                        tracing::warn!(error = %e, "shared rate budget unavailable: using the local fallback");
                        fallback.until_ready().await;
                        break;
                    }
                }
            },
        }
        started.elapsed()
    }
}

/// Takes a slot: `None` when taken, `Some(ms)` to wait before trying again.
async fn take(db: &Db, interval_ms: i64, tolerance_ms: i64) -> Result<Option<i64>, sqlx::Error> {
    let (take_sql, wait_sql) = match db {
        Db::Sqlite(_) => (TAKE_SQLITE, WAIT_SQLITE),
        Db::Postgres(_) => (TAKE_POSTGRES, WAIT_POSTGRES),
    };
    let taken: Option<i64> = crate::on_pool!(write, db, |p| sqlx::query_scalar(take_sql)
        .bind(interval_ms)
        .bind(tolerance_ms)
        .fetch_optional(p)
        .await?);
    if taken.is_some() {
        return Ok(None);
    }
    let wait: Option<i64> = crate::on_pool!(read, db, |p| sqlx::query_scalar(wait_sql)
        .bind(tolerance_ms)
        .fetch_optional(p)
        .await?);
    Ok(Some(wait.unwrap_or(interval_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_shared_budget_spaces_requests_by_the_interval() {
        let db = Db::open("sqlite::memory:").await.unwrap();
        let b = Budget::shared(db, 20, 2);
        let started = Instant::now();
        for _ in 0..8 {
            b.acquire().await;
        }
        // 8 slots at 20/s with a burst of 2: at least (8 - 2) × 50 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(290),
            "{:?}",
            started.elapsed()
        );
    }
}
