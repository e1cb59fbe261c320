//! One bucket per key (a person, a client address), in memory: governor's
//! keyed limiter, with the wait spelled as `Retry-After` counts it and the
//! memory kept bounded. A refusal reads and writes nothing.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Keys remembered before those whose bucket is full again are dropped.
const RETAIN_ABOVE: usize = 10_000;
/// The drop scans every key: at most this often, whatever the traffic.
const RETAIN_EVERY: Duration = Duration::from_secs(1);

pub struct KeyedQuota<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    last_retain: Mutex<Option<Instant>>,
}

impl<K: Hash + Eq + Clone> KeyedQuota<K> {
    /// `per_minute` steadily, `burst` at once (each at least one).
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            last_retain: Mutex::new(None),
        }
    }

    /// Takes one from `key`'s bucket, or says how long until one is there
    /// again (whole seconds, at least one, as `Retry-After` counts).
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        if self.limiter.len() > RETAIN_ABOVE && self.may_retain() {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
    }

    fn may_retain(&self) -> bool {
        let mut last = self.last_retain.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= RETAIN_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// How many keys have a bucket now.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
