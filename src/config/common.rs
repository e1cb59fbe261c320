//! What `serve` and `demo` both take from the flags they share.

use secrecy::SecretString;

use super::CommonArgs;
use crate::state::Settings;

impl CommonArgs {
    /// The settings these flags give, against `vultr_url` with `root_key`;
    /// each command adds its own (identity, database, roles).
    pub fn settings(&self, vultr_url: &str, root_key: SecretString) -> Result<Settings, String> {
        Ok(Settings {
            policy: self.key_policy()?,
            upstream: self.client_options(),
            page_size: self.page_size,
            listen: self.listen,
            admin_listen: self.edge.admin_listen,
            anon: self.edge.anon_rate(),
            public_url: self.public_url.clone(),
            claim_ttl: self.claim_ttl(),
            notify: self.notify.config()?,
            self_service: self.self_service.policy()?,
            me_posts: self.self_service.post_rate(),
            powers: self.powers.powers()?,
            review_schedule: self.review.schedule()?,
            ..Settings::new(vultr_url, root_key)
        })
    }
}
