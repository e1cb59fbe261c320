//! `AppState`, what a handler may use, and `Settings`, what builds it. The
//! lowest layer of the web side: it knows the parts, never the pages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRef;
use ipnet::IpNet;
use secrecy::SecretString;

use crate::approvals::Approvals;
use crate::audit::AuditStore;
use crate::client_quota::{ClientQuota, ClientRate};
use crate::db::{Db, redacted};
use crate::form_keys::FormKeys;
use crate::grants::Grants;
use crate::holds::Holds;
use crate::idempotency::FormTokens;
use crate::identity::{Access, Approvers, AuthMode, Gate};
use crate::lost_creates::LostCreates;
use crate::notify::{Notifier, NotifyConfig};
use crate::offboardings::Offboardings;
use crate::policy::{ApprovalPolicy, KeyPolicy};
use crate::post_quota::{PostQuota, PostRate};
use crate::powers::Powers;
use crate::report::Reports;
use crate::self_service::SelfService;
use crate::vultr::{ClientOptions, VultrClient, VultrError};

/// The last readiness verdict and when it was reached.
pub type Readiness = Arc<tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>>;

/// Everything a handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub vultr: VultrClient,
    pub auth: AuthMode,
    pub access: Access,
    pub policy: KeyPolicy,
    pub tokens: FormTokens,
    pub db: Db,
    pub audit: AuditStore,
    pub page_size: u32,
    pub cookie_secure: bool,
    pub readiness: Readiness,
    pub reports: Arc<Reports>,
    pub grants: Grants,
    /// Offboarded users kept out until reinstated.
    pub holds: Holds,
    /// Creates whose answer was lost, until settled from the key list.
    pub lost: LostCreates,
    /// Offboarding runs: progress any replica can show.
    pub offboardings: Offboardings,
    /// Leases of durable jobs, and this replica's id.
    pub leases: crate::leases::Leases,
    /// Expired-key clean-ups: what each run still has to revoke.
    pub cleanups: crate::cleanups::Cleanups,
    /// Access reviews: their items, decisions and reminders.
    pub reviews: crate::reviews::Reviews,
    /// `KEYDESK_REVIEW_*`: the recurring review, and the reminder days.
    pub review_schedule: crate::reviews::Schedule,
    pub notifier: Arc<Notifier>,
    /// Two-person approval: the rules, who decides, the requests.
    pub approval: ApprovalPolicy,
    pub approvers: Approvers,
    pub approvals: Approvals,
    /// What key owners may get for themselves on "My keys".
    pub self_service: SelfService,
    /// The levels of keys (root-equivalent, sensitive, limited).
    pub powers: Powers,
    /// keydesk's own address, for absolute links (claim links, notices).
    pub public_url: Option<String>,
    /// Each person's quota of "My keys" forms.
    pub me_posts: Arc<PostQuota>,
    /// Each client address's quota of anonymous requests and sign-in steps.
    pub clients: Arc<ClientQuota>,
    /// `KEYDESK_TRUSTED_PROXIES`: whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
}

impl AppState {
    /// The cookie that keeps a sign-in this browser started (OpenID mode).
    pub fn sign_ins(&self) -> crate::oidc::StartedSignIns {
        crate::oidc::StartedSignIns::new(self.tokens.keys().clone(), self.cookie_secure)
    }

    /// `path` as a link to send out: absolute when the public URL is known.
    pub fn link(&self, path: &str) -> String {
        match &self.public_url {
            Some(base) => format!("{base}{path}"),
            None => path.to_string(),
        }
    }
}

/// What `serve`, `demo`, the tests and the benches configure. `Settings::new`
/// gives safe defaults; set the fields that differ with struct update syntax.
pub struct Settings {
    pub vultr_url: String,
    pub root_key: SecretString,
    pub auth: AuthMode,
    pub access: Access,
    pub policy: KeyPolicy,
    /// `sqlite://PATH` (the default, embedded) or `postgres://…` (shared).
    pub database_url: String,
    /// The form-token signing keys (`KEYDESK_SECRET_KEY`); `None`: keydesk
    /// generates one in the database and shares it between replicas.
    pub secret_key: Option<SecretString>,
    /// How old an open audit intent must be before it is marked unknown.
    pub pending_bound: std::time::Duration,
    pub cookie_secure: bool,
    pub upstream: ClientOptions,
    pub page_size: u32,
    pub listen: SocketAddr,
    /// `KEYDESK_ADMIN_LISTEN`: `/metrics`, `/healthz` and `/readyz` on
    /// their own address (and no longer on `listen`).
    pub admin_listen: Option<SocketAddr>,
    /// `KEYDESK_TRUSTED_PROXIES`: the proxies whose `X-Forwarded-For` is
    /// believed (the client address the anonymous quota counts).
    pub trusted_proxies: Vec<IpNet>,
    /// `KEYDESK_ANON_*`: each client address's quota of anonymous requests.
    pub anon: ClientRate,
    /// `KEYDESK_PUBLIC_URL`: absolute links when set.
    pub public_url: Option<String>,
    /// How long a claim link works.
    pub claim_ttl: std::time::Duration,
    /// Expiry notices (no channel and no scheduler by default).
    pub notify: NotifyConfig,
    /// Two-person approval (no rule by default: nothing waits).
    pub approval: ApprovalPolicy,
    /// `KEYDESK_APPROVERS`: emails and `group:NAME`.
    pub approvers: Vec<String>,
    /// `KEYDESK_SELF_SERVICE`: what owners may get themselves (off by default).
    pub self_service: SelfService,
    /// `KEYDESK_SENSITIVE_ACLS`: which ACLs make a key sensitive.
    pub powers: Powers,
    /// `KEYDESK_ME_POSTS_*`: each person's quota of "My keys" forms.
    pub me_posts: PostRate,
    /// `KEYDESK_JOB_LEASE_SECS`: a durable job's lease without a heartbeat.
    pub job_lease: std::time::Duration,
    /// Run one expiring-keys scan at start and wait for it (`keydesk demo`:
    /// the reports have content from the first page).
    pub scan_at_start: bool,
    /// Open one access review at start when there is none (`keydesk demo`).
    pub review_at_start: bool,
    /// `KEYDESK_REVIEW_*`: recurring access reviews (off by default) and reminders.
    pub review_schedule: crate::reviews::Schedule,
}

impl Settings {
    /// Defaults: identity from `X-Forwarded-Email` sent by a loopback proxy,
    /// nobody admitted, no key policy, an in-memory audit, Secure cookies,
    /// 20 users a page, listening on an ephemeral loopback port.
    pub fn new(vultr_url: &str, root_key: SecretString) -> Self {
        let loopback: Vec<IpNet> = ["127.0.0.1/32", "::1/128"]
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        Self {
            vultr_url: vultr_url.to_string(),
            root_key,
            auth: AuthMode::Header {
                header: http::HeaderName::from_static("x-forwarded-email"),
                groups_header: None,
                trusted: loopback.clone(),
            },
            access: Access::default(),
            policy: KeyPolicy::default(),
            database_url: "sqlite::memory:".into(),
            pending_bound: crate::audit::PENDING_BOUND,
            secret_key: None,
            cookie_secure: true,
            upstream: ClientOptions::default(),
            page_size: 20,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: None,
            trusted_proxies: loopback,
            anon: ClientRate::default(),
            public_url: None,
            claim_ttl: std::time::Duration::from_secs(72 * 3600),
            notify: NotifyConfig::default(),
            approval: ApprovalPolicy {
                rules: vec![],
                ttl: std::time::Duration::from_secs(24 * 3600),
            },
            approvers: vec![],
            self_service: SelfService::default(),
            powers: Powers::default(),
            me_posts: PostRate::default(),
            job_lease: crate::leases::DEFAULT_LEASE,
            scan_at_start: false,
            review_at_start: false,
            review_schedule: crate::reviews::Schedule::default(),
        }
    }
}

impl AppState {
    pub async fn new(s: Settings) -> Result<Self, String> {
        let approvers = Approvers::new(&s.approvers);
        if !s.approval.rules.is_empty() && approvers.is_empty() {
            return Err(
                "KEYDESK_APPROVAL_FOR is set but KEYDESK_APPROVERS is empty: nobody could approve"
                    .into(),
            );
        }
        if s.self_service.enabled() && approvers.is_empty() {
            return Err(format!(
                "KEYDESK_SELF_SERVICE={} sends owners' requests to approvers, but KEYDESK_APPROVERS is empty: nobody could approve them",
                s.self_service.mode.as_str()
            ));
        }
        crate::metrics::start_upkeep();
        let db = Db::open(&s.database_url)
            .await
            .map_err(|e| format!("KEYDESK_DATABASE_URL {}: {e}", redacted(&s.database_url)))?;
        // Replicas share one egress IP: on PostgreSQL the budget is shared.
        let mut upstream = s.upstream;
        if db.engine() == crate::db::Engine::Postgres {
            upstream.shared_budget = Some(db.clone());
        }
        let vultr = VultrClient::with_options(&s.vultr_url, s.root_key, upstream)
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let audit = AuditStore::new(db.clone(), s.pending_bound).await;
        let keys = match &s.secret_key {
            Some(value) => FormKeys::configured(value)?,
            None => FormKeys::from_db(db.clone()).await.map_err(|e| {
                format!("cannot read or create the form-token signing key in the database: {e}")
            })?,
        };
        Ok(Self {
            vultr,
            auth: s.auth,
            access: s.access,
            policy: s.policy,
            tokens: FormTokens::new(db.clone(), keys),
            audit,
            reports: Arc::new(Reports::new(db.clone())),
            grants: Grants::new(db.clone(), s.claim_ttl),
            holds: Holds::new(db.clone()),
            lost: LostCreates::new(db.clone()),
            offboardings: Offboardings::new(db.clone()),
            leases: crate::leases::Leases::new(db.clone(), s.job_lease),
            cleanups: crate::cleanups::Cleanups::new(db.clone()),
            reviews: crate::reviews::Reviews::new(db.clone()),
            review_schedule: s.review_schedule,
            notifier: Arc::new(Notifier::new(
                db.clone(),
                crate::notify::NotifyConfig {
                    powers: s.powers.clone(),
                    lease: s.job_lease,
                    ..s.notify
                },
                s.public_url.clone(),
            )?),
            approvals: Approvals::new(db.clone(), s.approval.ttl),
            approval: s.approval,
            approvers,
            self_service: s.self_service,
            powers: s.powers,
            public_url: s.public_url,
            me_posts: Arc::new(PostQuota::new(s.me_posts)),
            clients: Arc::new(ClientQuota::new(s.anon)),
            trusted_proxies: s.trusted_proxies,
            db,
            page_size: s.page_size,
            cookie_secure: s.cookie_secure,
            readiness: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// One cheap authenticated call: is Vultr reachable and the root key accepted?
    pub async fn check_upstream(&self) -> Result<(), String> {
        let verdict = self.upstream_verdict().await;
        metrics::gauge!("keydesk_upstream_up").set(if verdict.is_ok() { 1.0 } else { 0.0 });
        verdict
    }

    async fn upstream_verdict(&self) -> Result<(), String> {
        match self.vultr.list_users(1, None).await {
            Ok(_) => Ok(()),
            Err(VultrError::Api {
                status: status @ (401 | 403),
                message,
            }) => Err(format!(
                "root key rejected by Vultr ({status}: {message}): check VULTR_API_KEY and the key's IP allow-list in Vultr's console (Account → API → Access Control), which must admit this host's public address"
            )),
            Err(VultrError::Unreachable(cause)) => Err(format!(
                "Vultr API at {} unreachable: {cause}",
                self.vultr.base_url()
            )),
            Err(VultrError::Timeout) => {
                Err(format!("Vultr API at {} timed out", self.vultr.base_url()))
            }
            Err(e) => Err(format!("Vultr API check failed: {e}")),
        }
    }
}

impl FromRef<AppState> for AuditStore {
    fn from_ref(s: &AppState) -> Self {
        s.audit.clone()
    }
}

impl FromRef<AppState> for Gate {
    fn from_ref(s: &AppState) -> Self {
        Gate {
            auth: s.auth.clone(),
            access: s.access.clone(),
            audit: s.audit.clone(),
            sign_ins: s.sign_ins(),
            clients: s.clients.clone(),
        }
    }
}
