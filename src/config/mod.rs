//! Command line and environment configuration. Every flag is also an
//! environment variable; `keydesk --help` documents each with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use secrecy::SecretString;

use crate::identity::{Access, AuthMode};
use crate::jwt::{JwtSettings, JwtVerifier, parse_algorithms};
use crate::state::Settings;

mod about;
mod common;
mod database;
mod demo;
mod edge;
mod explain;
mod notify;
mod oidc;
mod powers;
mod review;
mod roles;
mod root_key;
mod self_service;
mod values;

use about::{ABOUT, LONG_ABOUT};
pub use explain::unknown_variables;
use roles::no_wildcard;
use values::{
    header_name, parse_api_url, parse_cidr, parse_public_url, parse_seconds, parse_seconds_or_zero,
};

pub use database::{DatabaseArgs, MigrateArgs};
pub use edge::{EdgeArgs, healthcheck_url};
pub use notify::{NotifyArgs, NotifyCmd};
pub use powers::PowersArgs;
pub use review::{ReviewArgs, ReviewCmd};
pub use root_key::RootKeyError;
pub use self_service::SelfServiceArgs;

#[derive(Parser)]
#[command(
    name = "keydesk",
    version = crate::release::LONG_VERSION,
    about = ABOUT,
    long_about = LONG_ABOUT
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the portal against the real Vultr API (staff sign in by header, JWT or OpenID Connect: KEYDESK_AUTH_MODE).
    Serve(Box<ServeArgs>),
    /// Try keydesk locally: an in-process fake Vultr API with seeded users and a fixed demo identity.
    Demo(Box<DemoArgs>),
    /// Apply the database migrations and exit (run it as the schema's owner when keydesk itself runs with a restricted role).
    Migrate(MigrateArgs),
    /// Replace the form-token signing key kept in the database (when KEYDESK_SECRET_KEY is not set). Forms already open keep working until they expire; replicas sign with the new key within a minute.
    RotateFormKey(DatabaseArgs),
    /// Run one pass of expiry notices with serve's configuration, then exit: 0 when everything due went out (for cron or a Kubernetes CronJob).
    Notify(Box<NotifyCmd>),
    /// Start an access review with serve's configuration (KEYDESK_REVIEW_SCOPE, _DAYS, _DEFAULT, _REVIEWERS), wait for its snapshot, then exit: for cron. 0 when it started or one of that scope is already open.
    Review(Box<ReviewCmd>),
    /// Serve the demo's fake Vultr API (seeded users) on its own, to try `serve`, the SSO proxy, PostgreSQL and notices before touching the real account. Every secret it issues starts with FAKE.
    FakeVultr {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8099")]
        listen: SocketAddr,
        /// The root key it accepts (a fresh FAKE… key when not given); give serve the same as VULTR_API_KEY.
        #[arg(long)]
        root_key: Option<String>,
    },
    /// Probe a running keydesk's /healthz and exit 0 when healthy (for container HEALTHCHECKs).
    Healthcheck {
        /// URL of the liveness probe [default: http://127.0.0.1:8080/healthz, or /healthz on KEYDESK_ADMIN_LISTEN when that is set].
        #[arg(long, env = "KEYDESK_HEALTHCHECK_URL")]
        url: Option<String>,
        /// keydesk's admin address (the same variable `serve` reads): probed when no URL is given.
        #[arg(long, env = "KEYDESK_ADMIN_LISTEN")]
        admin_listen: Option<SocketAddr>,
    },
}

/// Settings shared by `serve` and `demo`.
#[derive(Args, Clone)]
pub struct CommonArgs {
    /// Address to listen on (use 0.0.0.0:8080 inside a container).
    #[arg(long, env = "KEYDESK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Timeout for each call to the Vultr API, in seconds.
    #[arg(long, env = "KEYDESK_UPSTREAM_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub upstream_timeout: Duration,

    /// Client-side rate limit for all calls to Vultr, requests per second (Vultr answers 429 above 30/s per IP).
    #[arg(long, env = "KEYDESK_UPSTREAM_RPS", default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub upstream_rps: u32,

    /// Seconds users lists and user details are cached (0 disables). Writes invalidate at once.
    #[arg(long, env = "KEYDESK_CACHE_TTL", default_value = "10", value_parser = parse_seconds_or_zero)]
    pub cache_ttl: Duration,

    /// Users shown per page of the users list (passed to Vultr as per_page, 1-500).
    #[arg(long, env = "KEYDESK_PAGE_SIZE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub page_size: u32,

    /// When set, every new key must expire within this many days.
    #[arg(long, env = "KEYDESK_MAX_KEY_LIFETIME_DAYS", value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub max_key_lifetime_days: Option<u32>,

    /// Optional regex every key name must match (anchor it, e.g. ^[a-z0-9-]+$).
    #[arg(long, env = "KEYDESK_KEY_NAME_PATTERN")]
    pub key_name_pattern: Option<String>,

    /// Make a reason / ticket mandatory on create, rotate and revoke.
    #[arg(long, env = "KEYDESK_REQUIRE_REASON", default_value_t = false, action = clap::ArgAction::Set)]
    pub require_reason: bool,

    /// Log format: text or json. The level comes from RUST_LOG (default info).
    #[arg(long, env = "KEYDESK_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// keydesk's address as staff reach it (e.g. https://keydesk.example.com): makes claim links and notice links absolute.
    #[arg(long, env = "KEYDESK_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,

    /// How long a claim link works, in hours.
    #[arg(long, env = "KEYDESK_CLAIM_TTL_HOURS", default_value_t = 72, value_parser = clap::value_parser!(u64).range(1..=8760))]
    pub claim_ttl_hours: u64,

    #[command(flatten)]
    pub edge: EdgeArgs,

    #[command(flatten)]
    pub notify: NotifyArgs,

    #[command(flatten)]
    pub self_service: SelfServiceArgs,

    #[command(flatten)]
    pub powers: PowersArgs,

    #[command(flatten)]
    pub review: ReviewArgs,
}

/// `keydesk serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Root Vultr API key. Prefer VULTR_API_KEY_FILE so it is not in the environment.
    #[arg(long, env = "VULTR_API_KEY", hide_env_values = true)]
    pub vultr_api_key: Option<String>,

    /// File holding the root Vultr API key (e.g. a mounted secret); read once at start.
    #[arg(long, env = "VULTR_API_KEY_FILE")]
    pub vultr_api_key_file: Option<PathBuf>,

    /// Base URL of the Vultr API.
    #[arg(
        long,
        env = "KEYDESK_VULTR_API_URL",
        default_value = "https://api.vultr.com",
        value_parser = parse_api_url
    )]
    pub vultr_api_url: String,

    /// Request header carrying the signed-in identity, set by the SSO proxy.
    #[arg(long, env = "KEYDESK_AUTH_HEADER", default_value = "X-Forwarded-Email")]
    pub auth_header: String,

    /// Comma-separated CIDRs of the proxies in front of keydesk: the identity header (header mode) is accepted only from these TCP peers, and X-Forwarded-For names the client (for KEYDESK_ANON_*) only from them.
    #[arg(
        long,
        env = "KEYDESK_TRUSTED_PROXIES",
        default_value = "127.0.0.1/32,::1/128",
        value_delimiter = ',',
        value_parser = parse_cidr
    )]
    pub trusted_proxies: Vec<IpNet>,

    /// How staff identity is established: `header` (trusted proxy header), `jwt` (signed assertion) or `oidc` (keydesk signs people in with OpenID Connect).
    #[arg(long, env = "KEYDESK_AUTH_MODE", default_value = "header", value_parser = ["header", "jwt", "oidc"])]
    pub auth_mode: String,

    #[command(flatten)]
    pub oidc: oidc::OidcArgs,

    /// Optional header with the signed-in person's groups, comma-separated (e.g. X-Forwarded-Groups). Header mode only.
    #[arg(long, env = "KEYDESK_GROUPS_HEADER")]
    pub groups_header: Option<String>,

    /// JWT mode: header carrying the assertion (Cf-Access-Jwt-Assertion, x-goog-iap-jwt-assertion, X-Pomerium-Jwt-Assertion).
    #[arg(
        long,
        env = "KEYDESK_JWT_HEADER",
        default_value = "Cf-Access-Jwt-Assertion"
    )]
    pub jwt_header: String,

    /// JWT mode: URL of the proxy's JWKS (signing keys).
    #[arg(long, env = "KEYDESK_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// JWT mode: required `iss` (e.g. https://TEAM.cloudflareaccess.com, https://cloud.google.com/iap).
    #[arg(long, env = "KEYDESK_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// JWT mode: accepted `aud` values, comma-separated (Cloudflare AUD tag, IAP backend, Pomerium route host).
    #[arg(long, env = "KEYDESK_JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,

    /// JWT mode: claim holding the identity.
    #[arg(long, env = "KEYDESK_JWT_EMAIL_CLAIM", default_value = "email")]
    pub jwt_email_claim: String,

    /// JWT mode: claim holding the groups (array or comma-separated string).
    #[arg(long, env = "KEYDESK_JWT_GROUPS_CLAIM", default_value = "groups")]
    pub jwt_groups_claim: String,

    /// JWT mode: accepted signature algorithms (asymmetric only).
    #[arg(
        long,
        env = "KEYDESK_JWT_ALGORITHMS",
        default_value = "RS256,ES256",
        value_delimiter = ','
    )]
    pub jwt_algorithms: Vec<String>,

    /// Who may look: comma list of emails and group:NAME entries.
    #[arg(long, env = "KEYDESK_VIEWERS", value_delimiter = ',')]
    pub viewers: Vec<String>,

    /// Who may also create, rotate and revoke keys: comma list of emails and group:NAME entries.
    #[arg(long, env = "KEYDESK_OPERATORS", value_delimiter = ',')]
    pub operators: Vec<String>,

    /// Who may approve requests that need a second person: comma list of emails and group:NAME (each must also be a viewer or operator).
    #[arg(long, env = "KEYDESK_APPROVERS", value_delimiter = ',')]
    pub approvers: Vec<String>,

    /// What needs a second person, comma list: no-expiry, over-days:N, api-access-on, all-keys, level:root, level:sensitive, acl:NAME[+NAME…], anywhere, allowlist-widen. Unset: nothing waits.
    #[arg(long, env = "KEYDESK_APPROVAL_FOR", value_delimiter = ',')]
    pub approval_for: Vec<String>,

    /// How long an approval request waits for a decision and its execution, in hours.
    #[arg(long, env = "KEYDESK_APPROVAL_TTL_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=8760))]
    pub approval_ttl_hours: u64,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Key that signs form tokens, the same on every replica: at least 32 characters (`openssl rand -hex 32`). During a rotation, a comma list: the first signs, the others still verify until their forms expire (12 h). Unset: generated once and kept in the database. A secret: prefer the _FILE form.
    #[arg(long, env = "KEYDESK_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// File holding KEYDESK_SECRET_KEY (e.g. a mounted secret).
    #[arg(long, env = "KEYDESK_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// Mark the session cookie Secure. Turn off only for plain-http local use.
    #[arg(long, env = "KEYDESK_COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// `keydesk demo`. It has no upstream URL option: the demo identity can never
/// be combined with a real Vultr account.
#[derive(Args)]
pub struct DemoArgs {
    /// The fixed identity the demo signs you in as.
    #[arg(
        long,
        env = "KEYDESK_DEMO_IDENTITY",
        default_value = "demo@keydesk.local"
    )]
    pub identity: String,

    /// Sign in as this person instead, with no staff role (e.g. ada@example.com, a seeded Vultr user): try "My keys" as a key owner. The demo identity stays the operator.
    #[arg(long = "as", value_name = "EMAIL")]
    pub as_person: Option<String>,

    /// Database for the demo: in memory unless given here. Never read from
    /// KEYDESK_DATABASE_URL or KEYDESK_AUDIT_DB, so a demo on a production
    /// host cannot write demo rows into the real, append-only audit trail.
    #[arg(
        long = "database",
        alias = "audit-db",
        default_value = "sqlite::memory:"
    )]
    pub database: String,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl CommonArgs {
    pub fn claim_ttl(&self) -> Duration {
        Duration::from_secs(self.claim_ttl_hours.saturating_mul(3600))
    }

    /// How keydesk talks to Vultr.
    pub fn client_options(&self) -> crate::vultr::ClientOptions {
        crate::vultr::ClientOptions {
            timeout: self.upstream_timeout,
            rps: self.upstream_rps,
            cache_ttl: self.cache_ttl,
            ..Default::default()
        }
    }

    /// The key policy, or an error naming the variable.
    pub fn key_policy(&self) -> Result<crate::policy::KeyPolicy, String> {
        let name_pattern = match self.key_name_pattern.as_deref().filter(|p| !p.is_empty()) {
            None => None,
            Some(p) => Some(
                regex::Regex::new(p)
                    .map_err(|e| format!("KEYDESK_KEY_NAME_PATTERN is not a valid regex: {e}"))?,
            ),
        };
        Ok(crate::policy::KeyPolicy {
            max_days: self.max_key_lifetime_days,
            name_pattern,
            require_reason: self.require_reason,
        })
    }
}

impl ServeArgs {
    /// Everything `serve` runs with, or an error naming the variable at fault.
    pub fn settings(&self) -> Result<Settings, String> {
        let root_key = self.root_key().map_err(|e| e.to_string())?;
        let access = Access::new(&self.viewers, &self.operators);
        if access.is_empty() {
            return Err("neither KEYDESK_VIEWERS nor KEYDESK_OPERATORS is set: keydesk denies by default and would admit nobody".into());
        }
        self.settings_with(&self.vultr_api_url, root_key)
    }

    /// `settings` against `vultr_url` with `root_key`, admitting whoever the
    /// role lists say (possibly nobody: `notify` serves no one).
    pub fn settings_with(
        &self,
        vultr_url: &str,
        root_key: SecretString,
    ) -> Result<Settings, String> {
        for (var, list) in [
            ("KEYDESK_VIEWERS", &self.viewers),
            ("KEYDESK_OPERATORS", &self.operators),
            ("KEYDESK_APPROVERS", &self.approvers),
        ] {
            no_wildcard(var, list)?;
        }
        self.roles_can_match()?;
        let access = Access::new(&self.viewers, &self.operators);
        let secret_key = notify::secret_from(
            "KEYDESK_SECRET_KEY",
            &self.secret_key,
            &self.secret_key_file,
        )?;
        if let Some(key) = &secret_key {
            crate::form_keys::FormKeys::configured(key)?;
        }
        Ok(Settings {
            secret_key,
            auth: self.auth_mode()?,
            access,
            database_url: self.database.url()?,
            cookie_secure: self.cookie_secure,
            trusted_proxies: self.trusted_proxies.clone(),
            job_lease: self.database.job_lease(),
            approval: self.approval_policy()?,
            approvers: self.approvers.clone(),
            ..self.common.settings(vultr_url, root_key)?
        })
    }

    /// How identities are established: the proxy's header, or a verified JWT.
    fn auth_mode(&self) -> Result<AuthMode, String> {
        let args = self;
        if args.auth_mode == "oidc" {
            return args.oidc.mode(&args.common.public_url, args.cookie_secure);
        }
        if args.auth_mode == "jwt" {
            let jwks_url = args
                .jwt_jwks_url
                .clone()
                .ok_or("KEYDESK_AUTH_MODE=jwt needs KEYDESK_JWT_JWKS_URL")?;
            let issuer = args
                .jwt_issuer
                .clone()
                .ok_or("KEYDESK_AUTH_MODE=jwt needs KEYDESK_JWT_ISSUER")?;
            let audience: Vec<String> = args
                .jwt_audience
                .iter()
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect();
            if audience.is_empty() {
                return Err("KEYDESK_AUTH_MODE=jwt needs KEYDESK_JWT_AUDIENCE".into());
            }
            let verifier = JwtVerifier::new(JwtSettings {
                header: header_name("KEYDESK_JWT_HEADER", &args.jwt_header)?,
                jwks_url,
                issuer,
                audience,
                email_claim: args.jwt_email_claim.clone(),
                groups_claim: args.jwt_groups_claim.clone(),
                algorithms: parse_algorithms(&args.jwt_algorithms)?,
            })?;
            return Ok(AuthMode::Jwt(std::sync::Arc::new(verifier)));
        }
        Ok(AuthMode::Header {
            header: header_name("KEYDESK_AUTH_HEADER", &args.auth_header)?,
            groups_header: match args
                .groups_header
                .as_deref()
                .filter(|g| !g.trim().is_empty())
            {
                Some(g) => Some(header_name("KEYDESK_GROUPS_HEADER", g)?),
                None => None,
            },
            trusted: args.trusted_proxies.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(parse_seconds("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_seconds("2.5s").unwrap(), Duration::from_millis(2500));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("abc").is_err());
    }
}
