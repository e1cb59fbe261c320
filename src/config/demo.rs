//! `keydesk demo`'s settings: the in-process fake, a fixed identity, and
//! with `--as` a key owner without a staff role.

use secrecy::SecretString;

use super::DemoArgs;
use crate::identity::{Access, AuthMode};
use crate::state::Settings;

impl DemoArgs {
    /// The demo's settings against the in-process fake at `vultr_url`, which
    /// accepts `root_key`. Everyone is the fixed demo identity, an operator.
    pub fn settings(&self, vultr_url: &str, root_key: SecretString) -> Result<Settings, String> {
        // `--as`: someone else, an owner without a role; only the demo
        // identity operates then.
        let self_service = self.common.self_service.policy()?;
        // Someone must be able to approve an owner's request: the operator.
        let approvers = if self_service.enabled() {
            vec![self.identity.clone()]
        } else {
            vec![]
        };
        let (who, access) = match &self.as_person {
            Some(person) => (
                crate::email::normalize_email(person),
                Access::new(&[], std::slice::from_ref(&self.identity)),
            ),
            None => (self.identity.clone(), Access::everyone_operates()),
        };
        Ok(Settings {
            auth: AuthMode::Demo(who),
            access,
            database_url: self.database.clone(),
            cookie_secure: false,
            approvers,
            // The expiring-keys and privileged-keys reports show the fake's
            // keys from the first page, found by the real scan.
            scan_at_start: true,
            // The demo ships with one open access review to try.
            review_at_start: true,
            ..self.common.settings(vultr_url, root_key)?
        })
    }
}
