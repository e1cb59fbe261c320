//! The upstream rate budget: `KEYDESK_UPSTREAM_RPS` for the whole
//! deployment. Replicas share one egress IP and Vultr limits per IP, so with
//! PostgreSQL the budget is one GCRA schedule (a row) advanced against the
//! database clock: every replica draws from it. One process (SQLite) keeps it
//! in memory. When the database cannot be reached, each replica falls back to
//! a local limiter at a safe fraction of the budget instead of stopping.
//!
//! A replica does not write the row once per call: one conditional UPDATE
//! leases a batch of consecutive slots of the schedule, which the replica
//! then spends locally, each slot no earlier than GCRA would allow it and no
//! later than half an interval after its own time. A slot not spent by then is
//! forfeited, so a replica that dies or idles gives up at most its lease and
//! the calls across replicas keep GCRA's bound. The batch grows while leases
//! are spent in full (a busy replica writes once per many calls) and shrinks
//! to what was used when slots are forfeited (an idle one books little).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::Quota;

use crate::db::Db;

type Limiter = governor::DefaultDirectRateLimiter;

/// The share of the budget a replica allows itself without the database.
pub const FALLBACK_FRACTION: u32 = 3;
/// The smallest and largest batch of slots one UPDATE leases.
pub const LEASE_MIN: u32 = 2;
pub const LEASE_MAX: u32 = 16;
/// The first lease: a page view's calls, within the burst.
const LEASE_FIRST: u32 = 4;

pub enum Budget {
    Local(Limiter),
    Shared {
        db: Db,
        /// GCRA emission interval: one request per this many ms.
        interval_ms: i64,
        /// How far ahead of now the schedule may run: the burst.
        tolerance_ms: i64,
        lease: tokio::sync::Mutex<Lease>,
        fallback: Limiter,
    },
}

/// Slots of the shared schedule this replica holds, in local time.
#[derive(Debug)]
pub struct Lease {
    /// (usable from, usable until), in schedule order.
    slots: VecDeque<(Instant, Instant)>,
    /// Slots spent from the current lease, and its size.
    spent: u32,
    size: u32,
    /// How many slots the next UPDATE asks for.
    next: u32,
}

impl Lease {
    fn new() -> Self {
        Self {
            slots: VecDeque::new(),
            spent: 0,
            size: 0,
            next: LEASE_FIRST,
        }
    }

    /// Drops the slots whose time has passed; returns how many.
    fn forfeit_expired(&mut self, now: Instant) -> u32 {
        let before = self.slots.len();
        self.slots.retain(|&(_, until)| until >= now);
        u32::try_from(before - self.slots.len()).unwrap_or(u32::MAX)
    }

    /// How many slots to ask for, the last lease being gone: twice as many
    /// when it was spent in full, as many as were spent when some passed.
    fn size_next(&mut self) -> u32 {
        let forfeited = self.size.saturating_sub(self.spent);
        if self.size > 0 {
            self.next = if forfeited == 0 {
                (self.size * 2).min(LEASE_MAX)
            } else {
                self.spent.clamp(LEASE_MIN, LEASE_MAX)
            };
            // Sized once: a lease refused (the schedule is full) asks again
            // for the same number.
            self.size = 0;
        }
        self.next
    }

    /// Records a new lease of `count` slots, the first `ahead_ms` after the
    /// database's now.
    fn fill(&mut self, lease: Leased, interval_ms: i64, tolerance_ms: i64) {
        self.size = lease.count;
        self.spent = 0;
        for j in 0..i64::from(lease.count) {
            let own = lease.ahead_ms + j * interval_ms;
            // GCRA allows slot j from `own - tolerance`. The database's now
            // is taken as the moment its answer came: never early, and late
            // by the round trip, as a call made right after a per-call
            // UPDATE always was. Half an interval of lag past its own time
            // keeps GCRA's bound (rate + burst in any second) and lets a
            // slot survive a busy scheduler.
            let from = lease.received + millis(own - tolerance_ms);
            let until = lease.received + millis(own + interval_ms / 2);
            self.slots.push_back((from, until));
        }
    }
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// What one leasing UPDATE got.
struct Leased {
    count: u32,
    /// How far the first slot's own time is after the database's now, in ms.
    ahead_ms: i64,
    received: Instant,
}

fn limiter(rps: u32, burst: u32) -> Limiter {
    let rps = NonZeroU32::new(rps.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.min(rps.get()).max(1)).unwrap_or(NonZeroU32::MIN);
    governor::RateLimiter::direct(Quota::per_second(rps).allow_burst(burst))
}

/// One update for both engines: lease `$3` slots if the schedule is not too
/// far ahead of the database clock (`$1` interval, `$2` tolerance); returns
/// how far the first leased slot is after now. Both read one clock per
/// statement (SQLite's 'now' is fixed within a statement; PostgreSQL's
/// statement_timestamp() is), so the schedule and the answer agree.
const LEASE_SQLITE: &str = "UPDATE rate_budget
    SET tat_ms = MAX(tat_ms, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)) + $1 * $3
    WHERE name = 'vultr'
      AND MAX(tat_ms, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
          - CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) <= $2
    RETURNING tat_ms - $1 * $3 - CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
const LEASE_POSTGRES: &str = "UPDATE rate_budget
    SET tat_ms = GREATEST(tat_ms, (extract(epoch from statement_timestamp()) * 1000)::BIGINT) + $1 * $3
    WHERE name = 'vultr'
      AND GREATEST(tat_ms, (extract(epoch from statement_timestamp()) * 1000)::BIGINT)
          - (extract(epoch from statement_timestamp()) * 1000)::BIGINT <= $2
    RETURNING tat_ms - $1 * $3 - (extract(epoch from statement_timestamp()) * 1000)::BIGINT";
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
            lease: tokio::sync::Mutex::new(Lease::new()),
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
                lease,
                fallback,
            } => loop {
                // One caller at a time looks at (and refills) the lease; the
                // others queue in order behind it, never sleeping on the lock.
                let mut held = lease.lock().await;
                let now = Instant::now();
                let forfeited = held.forfeit_expired(now);
                if forfeited > 0 {
                    metrics::counter!("keydesk_budget_slots_forfeited_total")
                        .increment(u64::from(forfeited));
                }
                if let Some(&(from, _)) = held.slots.front() {
                    if from <= now {
                        held.slots.pop_front();
                        held.spent += 1;
                        break;
                    }
                    drop(held);
                    tokio::time::sleep_until(from.into()).await;
                    continue;
                }
                let count = held.size_next();
                match lease_slots(db, *interval_ms, *tolerance_ms, count).await {
                    Ok(Ok(leased)) => {
                        metrics::counter!("keydesk_budget_leases_total").increment(1);
                        held.fill(leased, *interval_ms, *tolerance_ms);
                    }
                    Ok(Err(wait_ms)) => {
                        drop(held);
                        let wait = u64::try_from(wait_ms.clamp(1, 1000)).unwrap_or(1);
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    Err(e) => {
                        drop(held);
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

/// Leases `count` slots: `Ok(leased)`, or `Err(ms)` to wait before trying again.
async fn lease_slots(
    db: &Db,
    interval_ms: i64,
    tolerance_ms: i64,
    count: u32,
) -> Result<Result<Leased, i64>, sqlx::Error> {
    let (lease_sql, wait_sql) = match db {
        Db::Sqlite(_) => (LEASE_SQLITE, WAIT_SQLITE),
        Db::Postgres(_) => (LEASE_POSTGRES, WAIT_POSTGRES),
    };
    let ahead: Option<i64> = crate::on_pool!(write, db, |p| sqlx::query_scalar(lease_sql)
        .bind(interval_ms)
        .bind(tolerance_ms)
        .bind(i64::from(count))
        .fetch_optional(p)
        .await?);
    if let Some(ahead_ms) = ahead {
        return Ok(Ok(Leased {
            count,
            ahead_ms: ahead_ms.max(0),
            received: Instant::now(),
        }));
    }
    let wait: Option<i64> = crate::on_pool!(read, db, |p| sqlx::query_scalar(wait_sql)
        .bind(tolerance_ms)
        .fetch_optional(p)
        .await?);
    Ok(Err(wait.unwrap_or(interval_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn file_db(name: &str) -> (Db, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "keydesk-budget-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("b.db").display());
        (Db::open(&url).await.unwrap(), dir)
    }

    fn next_lease(b: &Budget) -> u32 {
        match b {
            Budget::Shared { lease, .. } => lease.try_lock().unwrap().next,
            Budget::Local(_) => 0,
        }
    }

    /// How far the shared schedule runs ahead of the database clock, in ms.
    async fn ahead_ms(db: &Db) -> i64 {
        crate::on_pool!(read, db, |p| {
            sqlx::query_scalar::<_, i64>(
            "SELECT tat_ms - CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) FROM rate_budget"
        )
        .fetch_one(p)
        .await
        .unwrap()
        })
    }

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

    #[tokio::test]
    async fn a_busy_replica_leases_slots_in_growing_batches() {
        let (db, dir) = file_db("batches").await;
        // 10/s with a burst of 40: every slot is usable at once, so the
        // batches depend on the count of calls only.
        let b = Budget::shared(db.clone(), 10, 40);
        let mut leases = 0;
        let mut last_next = next_lease(&b);
        for _ in 0..40 {
            let before = match &b {
                Budget::Shared { lease, .. } => lease.lock().await.slots.len(),
                Budget::Local(_) => unreachable!(),
            };
            b.acquire().await;
            if before == 0 {
                leases += 1;
            }
            last_next = last_next.max(next_lease(&b));
        }
        // One UPDATE per call before; batches of 4, 8, 16, 16 cover 40 calls.
        assert_eq!(leases, 4, "{leases} leases for 40 calls");
        assert_eq!(last_next, LEASE_MAX);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn a_replica_that_dies_forfeits_at_most_its_lease() {
        let (db, dir) = file_db("dies").await;
        // 10/s, burst 1: each slot is 100 ms of the schedule.
        let dead = Budget::shared(db.clone(), 10, 1);
        dead.acquire().await;
        let booked = ahead_ms(&db).await;
        drop(dead);
        assert!(
            booked <= i64::from(LEASE_FIRST) * 100,
            "a replica booked {booked} ms of the schedule with one lease"
        );
        // Another replica's first call waits for the lease's slots to pass,
        // never longer: its slot is the one right after them.
        let alive = Budget::shared(db.clone(), 10, 1);
        alive.acquire().await;
        let after = ahead_ms(&db).await;
        assert!(
            after <= booked + i64::from(LEASE_FIRST) * 100,
            "{after} ms ahead after the second replica's lease ({booked} before)"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn replicas_leasing_batches_keep_the_rate_across_any_second() {
        let (db, dir) = file_db("rate").await;
        let (rps, burst) = (20u32, 2u32);
        let replicas: Vec<std::sync::Arc<Budget>> = (0..2)
            .map(|_| std::sync::Arc::new(Budget::shared(db.clone(), rps, burst)))
            .collect();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..4 {
            let b = replicas[i % 2].clone();
            tasks.spawn(async move {
                let mut at = Vec::new();
                for _ in 0..12 {
                    b.acquire().await;
                    at.push(Instant::now());
                }
                at
            });
        }
        let mut at: Vec<Instant> = Vec::new();
        while let Some(t) = tasks.join_next().await {
            at.extend(t.unwrap());
        }
        at.sort();
        // GCRA's bound over any second: the rate plus the burst.
        let most = at
            .iter()
            .map(|&s| {
                at.iter()
                    .filter(|&&t| t >= s && t < s + Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0);
        assert!(
            most <= (rps + burst) as usize,
            "{most} calls within one second at {rps}/s"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
