//! `KEYDESK_SELF_SERVICE*`: what key owners may get for themselves.

use clap::Args;

use crate::self_service::{Mode, SelfService};

#[derive(Args, Clone, Debug)]
pub struct SelfServiceArgs {
    /// What key owners (signed in with the email of a Vultr user) may do on "My keys" besides revoking their own keys: off (read-only), request (every new key or rotation waits for an approver), direct (a key expiring within KEYDESK_SELF_SERVICE_MAX_DAYS is made at once; anything else waits).
    #[arg(long, env = "KEYDESK_SELF_SERVICE", default_value = "off")]
    pub self_service: String,

    /// In direct mode: the longest key, in days from today, that an owner makes without an approver.
    #[arg(long, env = "KEYDESK_SELF_SERVICE_MAX_DAYS", default_value_t = crate::self_service::DEFAULT_MAX_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub self_service_max_days: u32,
}

impl SelfServiceArgs {
    /// The policy, or an error naming the variable.
    pub fn policy(&self) -> Result<SelfService, String> {
        Ok(SelfService {
            mode: self.self_service.parse::<Mode>()?,
            max_days: self.self_service_max_days,
        })
    }
}
