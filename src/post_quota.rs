//! A per-identity quota on the forms of "My keys" (`POST /me/...`). Anyone
//! the proxy vouches for may send them, role or not, so each person gets a
//! small bucket, checked before the form costs a database write or a call
//! on the Vultr rate budget every replica shares. Kept in memory: a refusal
//! writes nothing (each replica counts its own share).

use std::time::Duration;

use crate::keyed_quota::KeyedQuota;

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

/// The buckets, one per signed-in identity (its normalised email).
pub struct PostQuota {
    quota: KeyedQuota<String>,
}

impl std::fmt::Debug for PostQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostQuota")
            .field("people", &self.quota.len())
            .finish()
    }
}

impl PostQuota {
    pub fn new(rate: PostRate) -> Self {
        Self {
            quota: KeyedQuota::new(rate.per_minute, rate.burst),
        }
    }

    /// Takes one form from `who`'s bucket, or says how long until one is
    /// there again (at least a second, as `Retry-After` counts).
    pub fn take(&self, who: &str) -> Result<(), Duration> {
        self.quota.take(&who.to_string())
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
