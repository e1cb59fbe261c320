//! The upstream rate budget: `KEYDESK_UPSTREAM_RPS` for the whole
//! deployment. Replicas share one egress IP and Vultr limits per IP, so with
//! PostgreSQL the budget is one GCRA schedule (a row) advanced against the
//! database clock: every replica draws from it. One process (SQLite) keeps it
//! in memory. When the database cannot be reached, each replica falls back to
//! a local limiter at a safe fraction of the budget instead of stopping.
//!
//! A replica does not write the row once per call: one conditional UPDATE
//! leases a batch of consecutive slots of the schedule. The caller that
//! leased spends the first slot at once, as a per-call UPDATE always did; the
//! others are spent locally, in order, each no earlier than GCRA allows it
//! and no later than half an interval after its own time. The database's now
//! lies between sending the UPDATE and its answer, so the earliest use is
//! reckoned from the answer and the latest from the sending: a slow round
//! trip makes slots expire, never bunch. A slot not spent by then is
//! forfeited, so a replica that dies or idles gives up at most its lease, and
//! any second across replicas sees at most the rate plus the burst. The batch
//! doubles while leases are spent in full (a busy replica writes once per up
//! to 16 calls) and shrinks to what was spent when slots pass unused (an
//! idle one books one slot per call, as before).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::Quota;

use crate::db::Db;

type Limiter = governor::DefaultDirectRateLimiter;

/// The share of the budget a replica allows itself without the database.
pub const FALLBACK_FRACTION: u32 = 3;
/// The smallest and largest batch of slots one UPDATE leases.
pub const LEASE_MIN: u32 = 1;
pub const LEASE_MAX: u32 = 16;
/// The first lease: a page view's calls, within the burst.
const LEASE_FIRST: u32 = 4;
/// After the database failed a lease, callers go straight to the local
/// fallback for this long instead of queueing on a dead connection.
const DOWN_FOR: Duration = Duration::from_secs(1);
/// Above Vultr's 30/s, the least tolerance and lag of a slot (see `Shared`).
const ABOVE_VULTR_FLOOR_US: i64 = 5_000;

pub enum Budget {
    Local(Limiter),
    Shared {
        db: Db,
        /// GCRA emission interval: one request per this many µs. The row
        /// counts ms; a lease books its slots' span rounded up to whole ms,
        /// so rates above 1,000/s (benches) are not capped by the unit.
        interval_us: i64,
        /// How far ahead of now the schedule may run: the burst.
        tolerance_us: i64,
        /// The least a slot may lag its own time: 0 at Vultr's rates; above
        /// them (benches and tests against the fake, at thousands a second)
        /// 5 ms, as slots µs apart cannot be handed out on time.
        lag_floor_us: i64,
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
    /// Until when the database is taken as unreachable.
    down_until: Option<Instant>,
}

impl Lease {
    fn new() -> Self {
        Self {
            slots: VecDeque::new(),
            spent: 0,
            size: 0,
            next: LEASE_FIRST,
            down_until: None,
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

    /// Records a new lease and spends its first slot (the caller's).
    /// The slots are spread evenly over the span the lease booked (whole
    /// ms, so at least one interval apart).
    fn fill(&mut self, lease: Leased, span_ms: i64, tolerance_us: i64, lag_floor_us: i64) {
        self.size = lease.count;
        self.spent = 1;
        let count = i64::from(lease.count.max(1));
        let spacing = span_ms * 1000 / count;
        let lag = (spacing / 2).max(lag_floor_us);
        for j in 1..count {
            let own = lease.ahead_us + j * spacing;
            let from = lease.received + micros(own - tolerance_us);
            let until = lease.sent + micros(own + lag);
            self.slots.push_back((from, until));
        }
    }
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// What one leasing UPDATE got.
struct Leased {
    count: u32,
    /// How far the first slot's own time is after the database's now, in µs.
    ahead_us: i64,
    sent: Instant,
    received: Instant,
}

fn limiter(rps: u32, burst: u32) -> Limiter {
    let rps = NonZeroU32::new(rps.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.min(rps.get()).max(1)).unwrap_or(NonZeroU32::MIN);
    governor::RateLimiter::direct(Quota::per_second(rps).allow_burst(burst))
}

/// One update for both engines: book `$1` ms of the schedule (a lease's
/// slots) if it is not too far ahead of the database clock (`$2`, the
/// tolerance); returns how far the first leased slot is after now, in µs.
/// PostgreSQL reads its clock after the row lock is taken
/// (clock_timestamp(), as every release has), so a lease queued behind
/// another replica's is not booked in the past.
const LEASE_SQLITE: &str = "UPDATE rate_budget
    SET tat_ms = MAX(tat_ms, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)) + $1
    WHERE name = 'vultr'
      AND MAX(tat_ms, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
          - CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) <= $2
    RETURNING (tat_ms - $1) * 1000 - CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)";
const LEASE_POSTGRES: &str = "UPDATE rate_budget
    SET tat_ms = GREATEST(tat_ms, (extract(epoch from clock_timestamp()) * 1000)::BIGINT) + $1
    WHERE name = 'vultr'
      AND GREATEST(tat_ms, (extract(epoch from clock_timestamp()) * 1000)::BIGINT)
          - (extract(epoch from clock_timestamp()) * 1000)::BIGINT <= $2
    RETURNING (tat_ms - $1) * 1000 - (extract(epoch from clock_timestamp()) * 1000000)::BIGINT";
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
        let interval_us = (1_000_000 / i64::from(rps.max(1))).max(1);
        let tolerance_us = interval_us * i64::from(burst.max(1) - 1);
        let above_vultr = rps > 30;
        Budget::Shared {
            db,
            interval_us,
            tolerance_us: if above_vultr {
                tolerance_us.max(ABOVE_VULTR_FLOOR_US)
            } else {
                tolerance_us
            },
            lag_floor_us: if above_vultr { ABOVE_VULTR_FLOOR_US } else { 0 },
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
                interval_us,
                tolerance_us,
                lag_floor_us,
                lease,
                fallback,
            } => {
                // Callers queue on the lease in order (tokio's Mutex is
                // fair); the one at the head waits for its slot, or leases
                // more, holding it, so slots go out in the order asked.
                let mut held = lease.lock().await;
                loop {
                    let now = Instant::now();
                    if held.down_until.is_some_and(|t| t > now) {
                        drop(held);
                        fallback.until_ready().await;
                        break;
                    }
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
                        tokio::time::sleep_until(from.into()).await;
                        continue;
                    }
                    let count = held.size_next();
                    // The span the slots take, in the row's whole ms.
                    let span_ms = (i64::from(count) * *interval_us + 999) / 1000;
                    match lease_slots(db, span_ms, *tolerance_us / 1000, count).await {
                        Ok(Ok(leased)) => {
                            metrics::counter!("keydesk_budget_leases_total").increment(1);
                            held.fill(leased, span_ms, *tolerance_us, *lag_floor_us);
                            break;
                        }
                        Ok(Err(wait_ms)) => {
                            let wait = u64::try_from(wait_ms.clamp(1, 1000)).unwrap_or(1);
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                        }
                        Err(e) => {
                            held.down_until = Some(Instant::now() + DOWN_FOR);
                            drop(held);
                            metrics::counter!("keydesk_budget_fallbacks_total").increment(1);
                            tracing::warn!(error = %e, "shared rate budget unavailable: using the local fallback");
                            fallback.until_ready().await;
                            break;
                        }
                    }
                }
            }
        }
        started.elapsed()
    }
}

/// Leases `count` slots: `Ok(leased)`, or `Err(ms)` to wait before trying
/// again. A missing budget row is an error (the fallback), never a wait.
async fn lease_slots(
    db: &Db,
    span_ms: i64,
    tolerance_ms: i64,
    count: u32,
) -> Result<Result<Leased, i64>, sqlx::Error> {
    let (lease_sql, wait_sql) = match db {
        Db::Sqlite(_) => (LEASE_SQLITE, WAIT_SQLITE),
        Db::Postgres(_) => (LEASE_POSTGRES, WAIT_POSTGRES),
    };
    let sent = Instant::now();
    let ahead: Option<i64> = crate::on_pool!(write, db, |p| sqlx::query_scalar(lease_sql)
        .bind(span_ms)
        .bind(tolerance_ms)
        .fetch_optional(p)
        .await?);
    if let Some(ahead_us) = ahead {
        return Ok(Ok(Leased {
            count,
            ahead_us: ahead_us.max(0),
            sent,
            received: Instant::now(),
        }));
    }
    let wait: Option<i64> = crate::on_pool!(read, db, |p| sqlx::query_scalar(wait_sql)
        .bind(tolerance_ms)
        .fetch_optional(p)
        .await?);
    match wait {
        Some(ms) => Ok(Err(ms)),
        None => Err(sqlx::Error::RowNotFound),
    }
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
        // 1/s with a burst of 40: every slot is usable at once and for
        // seconds, so the batches follow from the count of calls.
        let b = Budget::shared(db.clone(), 1, 40);
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
            (300..=i64::from(LEASE_FIRST) * 100).contains(&booked),
            "a replica booked {booked} ms of the schedule with one lease of {LEASE_FIRST}"
        );
        // Another replica's first call waits for the dead one's unspent
        // slots to pass (they are not handed out twice), and no longer.
        let alive = Budget::shared(db.clone(), 10, 1);
        let waited = alive.acquire().await;
        assert!(
            waited >= Duration::from_millis(u64::try_from(booked).unwrap() - 50),
            "the second replica waited {waited:?}, the lease booked {booked} ms"
        );
        assert!(
            waited <= Duration::from_millis(u64::try_from(booked).unwrap() + 1000),
            "the second replica waited {waited:?} for a lease of {booked} ms"
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
