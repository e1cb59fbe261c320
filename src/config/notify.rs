//! Expiry-notice settings: thresholds, schedule and channels. The webhook
//! and SMTP URLs are secrets, read from their variable or a `_FILE`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

/// Expiry notices: when, and on which channels. Each channel is off unless set.
#[derive(Args, Clone)]
pub struct NotifyArgs {
    /// Days before expiry at which a key's owner and the team are told, comma list (each once per key).
    #[arg(long, env = "KEYDESK_NOTIFY_DAYS", default_value = "30,7,1", value_delimiter = ',', value_parser = super::values::parse_days)]
    pub notify_days: Vec<u32>,

    /// Days before expiry for keys of root-equivalent users (manage_users), comma list; unset: KEYDESK_NOTIFY_DAYS.
    #[arg(long, env = "KEYDESK_NOTIFY_DAYS_ROOT", value_delimiter = ',', value_parser = super::values::parse_days)]
    pub notify_days_root: Vec<u32>,

    /// Seconds between notice passes in `serve`; 0 turns the scheduler off.
    #[arg(long, env = "KEYDESK_NOTIFY_INTERVAL", default_value_t = 3600)]
    pub notify_interval: u64,

    /// Webhook (Slack, Mattermost or any HTTP receiver) sent one JSON digest per pass. A secret: prefer the _FILE form.
    #[arg(long, env = "KEYDESK_NOTIFY_WEBHOOK_URL", hide_env_values = true)]
    pub notify_webhook_url: Option<String>,

    /// File holding the webhook URL.
    #[arg(long, env = "KEYDESK_NOTIFY_WEBHOOK_URL_FILE")]
    pub notify_webhook_url_file: Option<PathBuf>,

    /// SMTP server in lettre's URL form: smtp://host:port (plain relay), smtp://user:pass@host:587?tls=required (STARTTLS), smtps://user:pass@host (TLS). A secret: prefer the _FILE form.
    #[arg(long, env = "KEYDESK_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// File holding the SMTP URL.
    #[arg(long, env = "KEYDESK_SMTP_URL_FILE")]
    pub smtp_url_file: Option<PathBuf>,

    /// Sender of notice mail.
    #[arg(
        long,
        env = "KEYDESK_NOTIFY_FROM",
        default_value = "keydesk <keydesk@localhost>"
    )]
    pub notify_from: String,

    /// Fixed recipients (the platform team) of one digest per pass, comma list.
    #[arg(long, env = "KEYDESK_NOTIFY_EMAIL_TO", value_delimiter = ',')]
    pub notify_email_to: Vec<String>,

    /// Also mail each key's Vultr user about their own keys (default: true when SMTP is set).
    #[arg(long, env = "KEYDESK_NOTIFY_OWNERS", action = clap::ArgAction::Set)]
    pub notify_owners: Option<bool>,
}

/// A secret from its variable or its `_FILE`, trimmed; both set is refused
/// (one would silently win).
pub(crate) fn secret_from(
    var: &str,
    value: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<SecretString>, String> {
    if file.is_some() && value.is_some() {
        return Err(format!("{var} and {var}_FILE are both set: keep one"));
    }
    if let Some(path) = file {
        let raw = std::fs::read_to_string(path)
            .map_err(|e| format!("{var}_FILE {}: {e}", path.display()))?;
        let v = raw.trim();
        if v.is_empty() {
            return Err(format!("{var}_FILE {} is empty", path.display()));
        }
        return Ok(Some(SecretString::from(v.to_string())));
    }
    Ok(value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| SecretString::from(v.to_string())))
}

impl NotifyArgs {
    /// The notice configuration, or an error naming the variable.
    pub fn config(&self) -> Result<crate::notify::NotifyConfig, String> {
        Ok(crate::notify::NotifyConfig {
            thresholds: crate::notify::plan::thresholds(&self.notify_days)?,
            thresholds_root: match self.notify_days_root.as_slice() {
                [] => None,
                days => {
                    Some(crate::notify::plan::thresholds(days).map_err(|e| {
                        e.replace("KEYDESK_NOTIFY_DAYS", "KEYDESK_NOTIFY_DAYS_ROOT")
                    })?)
                }
            },
            powers: Default::default(),
            // `serve` puts KEYDESK_JOB_LEASE_SECS here (state.rs).
            lease: crate::leases::DEFAULT_LEASE,
            interval: Duration::from_secs(self.notify_interval),
            webhook: secret_from(
                "KEYDESK_NOTIFY_WEBHOOK_URL",
                &self.notify_webhook_url,
                &self.notify_webhook_url_file,
            )?,
            smtp: secret_from("KEYDESK_SMTP_URL", &self.smtp_url, &self.smtp_url_file)?,
            from: self.notify_from.clone(),
            team: self
                .notify_email_to
                .iter()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            owners: self.notify_owners,
        })
    }
}

/// `keydesk notify --once`. It reads serve's configuration (so one set of
/// variables serves both), but its help lists only what a pass uses.
#[derive(Args)]
#[command(mut_arg("auth_header", |a| a.hide(true)))]
#[command(mut_arg("trusted_proxies", |a| a.hide(true)))]
#[command(mut_arg("auth_mode", |a| a.hide(true)))]
#[command(mut_arg("groups_header", |a| a.hide(true)))]
#[command(mut_arg("jwt_header", |a| a.hide(true)))]
#[command(mut_arg("jwt_jwks_url", |a| a.hide(true)))]
#[command(mut_arg("jwt_issuer", |a| a.hide(true)))]
#[command(mut_arg("jwt_audience", |a| a.hide(true)))]
#[command(mut_arg("jwt_email_claim", |a| a.hide(true)))]
#[command(mut_arg("jwt_groups_claim", |a| a.hide(true)))]
#[command(mut_arg("jwt_algorithms", |a| a.hide(true)))]
#[command(mut_arg("viewers", |a| a.hide(true)))]
#[command(mut_arg("operators", |a| a.hide(true)))]
#[command(mut_arg("approvers", |a| a.hide(true)))]
#[command(mut_arg("approval_for", |a| a.hide(true)))]
#[command(mut_arg("approval_ttl_hours", |a| a.hide(true)))]
#[command(mut_arg("cookie_secure", |a| a.hide(true)))]
#[command(mut_arg("listen", |a| a.hide(true)))]
#[command(mut_arg("page_size", |a| a.hide(true)))]
#[command(mut_arg("max_key_lifetime_days", |a| a.hide(true)))]
#[command(mut_arg("key_name_pattern", |a| a.hide(true)))]
#[command(mut_arg("require_reason", |a| a.hide(true)))]
#[command(mut_arg("claim_ttl_hours", |a| a.hide(true)))]
#[command(mut_arg("notify_interval", |a| a.hide(true)))]
pub struct NotifyCmd {
    /// Run one pass now and exit (required: in `serve`, KEYDESK_NOTIFY_INTERVAL schedules passes).
    #[arg(long)]
    pub once: bool,

    /// Against the demo's built-in fake Vultr API and seeded users instead of Vultr (try the channels without an account).
    #[arg(long)]
    pub demo: bool,

    #[command(flatten)]
    pub serve: super::ServeArgs,
}
