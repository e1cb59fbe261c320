//! Expiry notices: a pass over every user's keys (the report's scan: shared
//! rate budget, bounded concurrency) that tells the people who can act about
//! keys crossing a threshold, on the channels configured.
//!
//! "Once" is a database fact: before a notice is sent, its `(key, threshold,
//! channel)` row is written (`sending`), by one conditional insert or the
//! retry of a `failed` row; so restarts, replicas and concurrent passes never
//! send it twice, and a failed send is tried again by the next pass. One
//! pass runs at a time across replicas (a lease in `jobs`); a scheduled pass
//! runs only when the last one started at least an interval ago.

mod announce;
mod config;
pub mod plan;
pub mod send;
mod store;

pub use config::NotifyConfig;
pub use store::{LAST_SENT_SQL, NoticeRow, RunRow, Snapshot, newest_per_key};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::audit::{AuditAction, AuditStore, Intent, Outcome, Settlement};
use crate::db::Db;
use crate::on_pool;
use crate::report::{Progress, scan};
use crate::vultr::VultrClient;
use send::{Mailer, Notice, Webhook};

const JOB: &str = "notices.run";

/// Where a notice goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Webhook,
    /// The digest to `KEYDESK_NOTIFY_EMAIL_TO`.
    Email,
    /// Each key's owner, about their own keys.
    Owner,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Email => "email",
            Channel::Owner => "owner",
        }
    }
}

/// What started a pass.
#[derive(Debug, Clone)]
pub enum Trigger {
    Schedule,
    Command,
    Person(String),
    /// The last pass never ended (its replica stopped): taken over.
    Resume,
}

impl Trigger {
    pub fn describe(&self) -> String {
        match self {
            Trigger::Schedule => "schedule".into(),
            Trigger::Command => "keydesk notify --once".into(),
            Trigger::Person(who) => format!("run now by {who}"),
            Trigger::Resume => "resumed: the last pass's replica stopped".into(),
        }
    }
}

/// How a pass ended.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub run_id: i64,
    /// Another pass held the lease (or the last one is too recent): nothing ran.
    pub skipped: bool,
    pub users: usize,
    pub keys_due: usize,
    pub sent: usize,
    pub failed: usize,
    /// Vultr or a channel failed; `None` when everything due went out.
    pub error: Option<String>,
}

pub struct Notifier {
    db: Db,
    thresholds: Vec<i64>,
    thresholds_root: Option<Vec<i64>>,
    powers: crate::powers::Powers,
    interval: Duration,
    webhook: Option<Webhook>,
    mailer: Option<Mailer>,
    team: Vec<String>,
    owners: bool,
    public_url: Option<String>,
    instance: String,
    /// A pass's lease without a heartbeat; renewed every third of it.
    lease: Duration,
    /// Announcements finished (delivered or given up): lets a caller know
    /// background work is over before checking what it did not send.
    announced: std::sync::atomic::AtomicU64,
}

impl Notifier {
    /// Checks the configuration (URLs, addresses) without connecting.
    pub fn new(db: Db, cfg: NotifyConfig, public_url: Option<String>) -> Result<Self, String> {
        let webhook = cfg.webhook.map(Webhook::new).transpose()?;
        let mailer = cfg
            .smtp
            .as_ref()
            .map(|url| Mailer::new(url, &cfg.from))
            .transpose()?;
        if mailer.is_none() && !cfg.team.is_empty() {
            return Err("KEYDESK_NOTIFY_EMAIL_TO is set but KEYDESK_SMTP_URL is not".into());
        }
        if mailer.is_none() && cfg.owners == Some(true) {
            return Err("KEYDESK_NOTIFY_OWNERS=true needs KEYDESK_SMTP_URL".into());
        }
        let owners = mailer.is_some() && cfg.owners.unwrap_or(true);
        let team: Vec<String> = cfg
            .team
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        for t in &team {
            t.parse::<lettre::message::Mailbox>()
                .map_err(|e| format!("KEYDESK_NOTIFY_EMAIL_TO {t:?} is not an address: {e}"))?;
        }
        Ok(Self {
            db,
            thresholds: cfg.thresholds,
            thresholds_root: cfg.thresholds_root,
            powers: cfg.powers,
            interval: cfg.interval,
            webhook,
            mailer,
            team,
            owners,
            public_url,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            lease: cfg.lease,
            announced: Default::default(),
        })
    }

    /// How many announcements this process has finished, sent or not.
    pub fn announcements_finished(&self) -> u64 {
        self.announced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The channels that are on.
    pub fn channels(&self) -> Vec<Channel> {
        let mut out = vec![];
        if self.webhook.is_some() {
            out.push(Channel::Webhook);
        }
        if self.mailer.is_some() && !self.team.is_empty() {
            out.push(Channel::Email);
        }
        if self.owners {
            out.push(Channel::Owner);
        }
        out
    }

    /// The channels in words, for the page (never a URL or a password).
    pub fn describe_channels(&self) -> Vec<String> {
        self.channels()
            .into_iter()
            .map(|c| match c {
                Channel::Webhook => "webhook: one digest per pass".to_string(),
                Channel::Email => format!("email digest to {}", self.team.join(", ")),
                Channel::Owner => "email to each key's owner about their own keys".to_string(),
            })
            .collect()
    }

    pub fn thresholds(&self) -> &[i64] {
        &self.thresholds
    }

    /// Between scheduled passes; zero when the scheduler is off.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether `serve` runs passes on its own: an interval and a channel.
    pub fn scheduled(&self) -> bool {
        !self.interval.is_zero() && !self.channels().is_empty()
    }

    fn link(&self, path: &str) -> String {
        match &self.public_url {
            Some(base) => format!("{base}{path}"),
            None => path.to_string(),
        }
    }

    /// One pass: scan, work out what is due, send, record. `now` is the
    /// clock the thresholds are measured against (tests pin it).
    pub async fn run(
        self: &Arc<Self>,
        vultr: &VultrClient,
        audit: &AuditStore,
        trigger: Trigger,
        now: OffsetDateTime,
    ) -> Result<RunReport, String> {
        let store = |e: sqlx::Error| format!("database: {e}");
        if !self.lease(&trigger).await.map_err(store)? {
            return Ok(RunReport {
                skipped: true,
                ..Default::default()
            });
        }
        if matches!(trigger, Trigger::Resume) {
            self.close_interrupted().await;
        }
        let heartbeat = {
            let me = self.clone();
            let beat = self.lease / 3;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(beat).await;
                    if let Err(e) = me.renew().await {
                        tracing::warn!(error = %e, "notice pass heartbeat failed");
                    }
                }
            })
        };
        let result = self.pass(vultr, audit, &trigger, now).await;
        heartbeat.abort();
        self.release().await;
        result
    }

    async fn pass(
        &self,
        vultr: &VultrClient,
        audit: &AuditStore,
        trigger: &Trigger,
        now: OffsetDateTime,
    ) -> Result<RunReport, String> {
        let store = |e: sqlx::Error| format!("database: {e}");
        let started = self.db.now_ms().await.map_err(store)?;
        let run_id: i64 = on_pool!(write, &self.db, |p| {
            sqlx::query_scalar(
                "INSERT INTO notice_runs (started_ms, trigger, state) VALUES ($1, $2, 'running') RETURNING id",
            )
            .bind(started)
            .bind(trigger.describe())
            .fetch_one(p)
            .await
            .map_err(store)?
        });
        let intent = Intent {
            reason: Some(trigger.describe()),
            key_name: Some(format!("notice pass #{run_id}")),
            ..Intent::system(AuditAction::NoticeRun)
        };
        // Unrecorded means not done: the pass does not send anything.
        let audit_id = match audit.intent(&intent).await {
            Ok(id) => id,
            Err(e) => {
                let msg = format!("audit trail unavailable: {e}");
                let report = RunReport {
                    run_id,
                    error: Some(msg.clone()),
                    ..Default::default()
                };
                self.finish(&report).await;
                return Err(msg);
            }
        };
        tracing::info!(run = run_id, trigger = %trigger.describe(), "notice pass started");
        let mut report = RunReport {
            run_id,
            ..Default::default()
        };
        let mut errors = vec![];
        let progress = Progress::default();
        match scan(vultr, audit, &progress).await {
            Err(e) => errors.push(e),
            Ok(scanned) => {
                report.users = scanned.users;
                if scanned.failed_users > 0 {
                    errors.push(format!(
                        "the keys of {} user(s) could not be read",
                        scanned.failed_users
                    ));
                }
                let due: Vec<Notice> = scanned
                    .rows
                    .iter()
                    .filter_map(|r| {
                        let expires = r.key.expiry_time()?;
                        let level = r.level(&self.powers);
                        let thresholds = match (&self.thresholds_root, level) {
                            (Some(root), crate::powers::Level::Root) => root,
                            _ => &self.thresholds,
                        };
                        let threshold = plan::due(expires, now, thresholds)?;
                        Some(Notice {
                            user_id: r.user_id.clone(),
                            user_email: Some(r.user_email.clone()).filter(|e| !e.is_empty()),
                            key_id: r.key.id.clone(),
                            key_name: r.key.name.clone(),
                            date_expire: r.key.date_expire.clone().unwrap_or_default(),
                            days_left: plan::days_left(expires, now),
                            threshold_days: threshold,
                            expired: threshold == plan::EXPIRED,
                            level: level.as_str().to_string(),
                            anywhere: r.anywhere,
                            rotate_url: self
                                .link(&format!("/users/{}/keys/{}/rotate", r.user_id, r.key.id)),
                        })
                    })
                    .collect();
                report.keys_due = due.len();
                for channel in self.channels() {
                    let (sent, failed, error) = self.deliver(channel, &due, run_id).await;
                    report.sent += sent;
                    report.failed += failed;
                    if let Some(e) = error {
                        errors.push(format!("{}: {e}", channel.as_str()));
                    }
                }
            }
        }
        report.error = (!errors.is_empty()).then(|| errors.join("; "));
        self.finish(&report).await;
        let how = match &report.error {
            None => Outcome::Ok.settled(),
            Some(e) => Settlement {
                error: Some(e),
                ..Outcome::Failed.settled()
            },
        };
        audit.settle(audit_id, how).await;
        metrics::gauge!("keydesk_notice_last_run_timestamp_seconds")
            .set(now.unix_timestamp() as f64);
        match &report.error {
            None => tracing::info!(
                run = run_id,
                users = report.users,
                due = report.keys_due,
                sent = report.sent,
                "notice pass finished"
            ),
            Some(e) => {
                tracing::warn!(run = run_id, users = report.users, due = report.keys_due, sent = report.sent, failed = report.failed, error = %e, "notice pass failed")
            }
        }
        Ok(report)
    }

    /// Sends what `channel` owes of `due`: claims each row first, then one
    /// message per batch (the digest, or each owner's own keys), then records
    /// sent or failed. Returns (sent, failed, first error).
    async fn deliver(
        &self,
        channel: Channel,
        due: &[Notice],
        run_id: i64,
    ) -> (usize, usize, Option<String>) {
        let mut claimed = vec![];
        for n in due {
            if channel == Channel::Owner && !send::is_address(n.user_email.as_deref()) {
                // No usable address for the owner: the team still hears of it.
                tracing::info!(vultr.user_id = %n.user_id, "key owner has no mail address; owner notice skipped");
                continue;
            }
            match self.claim(channel, n, run_id).await {
                Ok(true) => claimed.push(n.clone()),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "notice could not be recorded; not sent"),
            }
        }
        if claimed.is_empty() {
            return (0, 0, None);
        }
        // Batches: one for a digest, one per owner for owners.
        let batches: Vec<(Vec<String>, Vec<Notice>)> = match channel {
            Channel::Webhook | Channel::Email => vec![(self.team.clone(), claimed)],
            Channel::Owner => {
                let mut by: BTreeMap<String, Vec<Notice>> = BTreeMap::new();
                for n in claimed {
                    let to = n.user_email.clone().unwrap_or_default().to_lowercase();
                    by.entry(to).or_default().push(n);
                }
                by.into_iter().map(|(to, ns)| (vec![to], ns)).collect()
            }
        };
        let (mut sent, mut failed, mut first_error) = (0, 0, None);
        for (to, notices) in batches {
            let result = match channel {
                Channel::Webhook => match &self.webhook {
                    Some(w) => w.send(&notices).await,
                    None => Err("no webhook".into()),
                },
                Channel::Email | Channel::Owner => match &self.mailer {
                    Some(m) => m.send(&to, &notices, channel == Channel::Owner).await,
                    None => Err("no SMTP".into()),
                },
            };
            let outcome = if result.is_ok() { "sent" } else { "failed" };
            metrics::counter!("keydesk_notices_total", "channel" => channel.as_str(), "outcome" => outcome)
                .increment(notices.len() as u64);
            match &result {
                Ok(()) => sent += notices.len(),
                Err(e) => {
                    failed += notices.len();
                    tracing::warn!(channel = channel.as_str(), error = %e, "notice channel failed");
                    first_error.get_or_insert_with(|| e.clone());
                }
            }
            for n in &notices {
                if let Err(e) = self.settle(channel, n, &result).await {
                    tracing::error!(error = %e, "notice outcome not recorded");
                }
            }
        }
        (sent, failed, first_error)
    }
}
