//! `KEYDESK_SELF_SERVICE*`: what key owners may get for themselves;
//! `KEYDESK_ME_POSTS_*`: how many "My keys" forms one person may send.

use clap::Args;

use crate::post_quota::PostRate;
use crate::self_service::{Mode, SelfService};

#[derive(Args, Clone, Debug)]
pub struct SelfServiceArgs {
    /// What key owners (signed in with the email of a Vultr user) may do on "My keys" besides revoking their own keys: off (read-only), request (every new key or rotation waits for an approver), direct (a key expiring within KEYDESK_SELF_SERVICE_MAX_DAYS is made at once; anything else waits).
    #[arg(long, env = "KEYDESK_SELF_SERVICE", default_value = "off")]
    pub self_service: String,

    /// In direct mode: the longest key, in days from today, that an owner makes without an approver.
    #[arg(long, env = "KEYDESK_SELF_SERVICE_MAX_DAYS", default_value_t = crate::self_service::DEFAULT_MAX_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub self_service_max_days: u32,

    /// Forms on "My keys" (revoke, request, rotate) one signed-in person may send per minute, steadily; above it keydesk answers 429 with Retry-After and sends nothing to Vultr.
    #[arg(long, env = "KEYDESK_ME_POSTS_PER_MINUTE", default_value_t = PostRate::default().per_minute, value_parser = clap::value_parser!(u32).range(1..=6000))]
    pub me_posts_per_minute: u32,

    /// Forms on "My keys" one person may send at once before KEYDESK_ME_POSTS_PER_MINUTE applies.
    #[arg(long, env = "KEYDESK_ME_POSTS_BURST", default_value_t = PostRate::default().burst, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub me_posts_burst: u32,
}

impl SelfServiceArgs {
    /// The policy, or an error naming the variable.
    pub fn policy(&self) -> Result<SelfService, String> {
        Ok(SelfService {
            mode: self.self_service.parse::<Mode>()?,
            max_days: self.self_service_max_days,
        })
    }

    /// Each person's quota of "My keys" forms.
    pub fn post_rate(&self) -> PostRate {
        PostRate {
            per_minute: self.me_posts_per_minute,
            burst: self.me_posts_burst,
        }
    }
}
