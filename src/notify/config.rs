//! What `serve` and `notify --once` configure for expiry notices.

use std::time::Duration;

use secrecy::SecretString;

/// What `serve` (and `notify --once`) configure.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    /// Days ahead of expiry, loosest first (`KEYDESK_NOTIFY_DAYS`).
    pub thresholds: Vec<i64>,
    /// For keys of root-equivalent users (`KEYDESK_NOTIFY_DAYS_ROOT`).
    pub thresholds_root: Option<Vec<i64>>,
    /// The levels of keys, for each notice's `level`.
    pub powers: crate::powers::Powers,
    /// Between scheduled passes; zero turns the scheduler off.
    pub interval: Duration,
    pub webhook: Option<SecretString>,
    pub smtp: Option<SecretString>,
    pub from: String,
    /// Fixed recipients of one digest per pass.
    pub team: Vec<String>,
    /// Mail each key's owner about their own keys (default: when SMTP is set).
    pub owners: Option<bool>,
    /// A pass's lease without a heartbeat (`KEYDESK_JOB_LEASE_SECS`): a pass
    /// whose replica stopped is resumed by another after it.
    pub lease: Duration,
}

impl Default for NotifyConfig {
    /// Thresholds 30, 7 and 1 days; no channel and no scheduler.
    fn default() -> Self {
        Self {
            thresholds: vec![30, 7, 1],
            thresholds_root: None,
            powers: Default::default(),
            interval: Duration::ZERO,
            webhook: None,
            smtp: None,
            from: "keydesk <keydesk@localhost>".into(),
            team: vec![],
            owners: None,
            lease: crate::leases::DEFAULT_LEASE,
        }
    }
}
