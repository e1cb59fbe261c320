//! A per-identity quota on the forms of "My keys" (`POST /me/...`). Anyone
//! the proxy vouches for may send them, role or not, so each person gets a
//! small bucket, checked before the form costs a database write or a call
//! on the Vultr rate budget every replica shares. Kept in memory: a refusal
//! writes nothing (each replica counts its own share).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// `KEYDESK_ME_POSTS_PER_MINUTE` and `KEYDESK_ME_POSTS_BURST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostRate {
    /// Forms a person may send per minute, steadily.
    pub per_minute: u32,
    /// Forms a person may send at once before the steady rate applies.
    pub burst: u32,
}

impl Default for PostRate {
    /// Ten at once, then one a second.
    fn default() -> Self {
        Self {
            per_minute: 60,
            burst: 10,
        }
    }
}

/// People remembered before those whose bucket is full again are dropped.
const RETAIN_ABOVE: usize = 10_000;

/// The buckets, one per signed-in identity (its normalised email).
pub struct PostQuota {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl std::fmt::Debug for PostQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostQuota")
            .field("people", &self.limiter.len())
            .finish()
    }
}

impl PostQuota {
    pub fn new(rate: PostRate) -> Self {
        let per_minute = NonZeroU32::new(rate.per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
        }
    }

    /// Takes one form from `who`'s bucket, or says how long until one is
    /// there again (at least a second, as `Retry-After` counts).
    pub fn take(&self, who: &str) -> Result<(), Duration> {
        if self.limiter.len() > RETAIN_ABOVE {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&who.to_string())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_wait_per_person() {
        let q = PostQuota::new(PostRate {
            per_minute: 6,
            burst: 3,
        });
        for _ in 0..3 {
            assert_eq!(q.take("ada@example.com"), Ok(()));
        }
        let wait = q.take("ada@example.com").unwrap_err();
        assert!(
            (Duration::from_secs(1)..=Duration::from_secs(10)).contains(&wait),
            "{wait:?}"
        );
        // Someone else has a bucket of their own.
        assert_eq!(q.take("grace@example.com"), Ok(()));
    }
}
