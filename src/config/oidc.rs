//! `KEYDESK_OIDC_*` and `KEYDESK_SESSION_*`: keydesk signing people in itself
//! with OpenID Connect (`KEYDESK_AUTH_MODE=oidc`). Every refusal names the
//! variable to fix.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::values::parse_span;
use crate::identity::AuthMode;
use crate::oidc::{Lifetimes, Oidc, OidcSettings};

#[derive(Args, Clone, Debug, Default)]
pub struct OidcArgs {
    /// OIDC mode: the provider's issuer URL, exactly as its discovery document says (e.g. https://accounts.google.com).
    #[arg(long, env = "KEYDESK_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// OIDC mode: the client id registered at the provider.
    #[arg(long, env = "KEYDESK_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,

    /// OIDC mode: the client secret. Prefer KEYDESK_OIDC_CLIENT_SECRET_FILE.
    #[arg(long, env = "KEYDESK_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,

    /// OIDC mode: a file holding the client secret (a mounted secret); read once at start.
    #[arg(long, env = "KEYDESK_OIDC_CLIENT_SECRET_FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,

    /// OIDC mode: scopes asked for after `openid email profile`, comma-separated (e.g. groups).
    #[arg(long, env = "KEYDESK_OIDC_SCOPES", value_delimiter = ',')]
    pub oidc_scopes: Vec<String>,

    /// OIDC mode: the ID-token claim holding the person's groups, for `group:NAME` in the role lists.
    #[arg(long, env = "KEYDESK_OIDC_GROUPS_CLAIM", default_value = "groups")]
    pub oidc_groups_claim: String,

    /// OIDC mode: if set, only emails in these domains sign in (comma-separated, e.g. example.com).
    #[arg(long, env = "KEYDESK_OIDC_ALLOWED_DOMAINS", value_delimiter = ',')]
    pub oidc_allowed_domains: Vec<String>,

    /// OIDC mode: refuse an email the provider does not mark `email_verified: true`.
    #[arg(long, env = "KEYDESK_OIDC_REQUIRE_VERIFIED_EMAIL", default_value_t = true, action = clap::ArgAction::Set)]
    pub oidc_require_verified_email: bool,

    /// OIDC mode: a session ends this long after sign-in, whatever happens (e.g. 12h, 90m, 3600s).
    #[arg(long, env = "KEYDESK_SESSION_MAX_AGE", default_value = "12h", value_parser = parse_span)]
    pub session_max_age: i64,

    /// OIDC mode: a session unused this long ends (e.g. 1h, 30m).
    #[arg(long, env = "KEYDESK_SESSION_IDLE", default_value = "1h", value_parser = parse_span)]
    pub session_idle: i64,
}

impl OidcArgs {
    /// OpenID mode, or an error naming the variable that is missing or wrong.
    pub fn mode(
        &self,
        public_url: &Option<String>,
        cookie_secure: bool,
    ) -> Result<AuthMode, String> {
        let need = |var: &str, v: &Option<String>| -> Result<String, String> {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| format!("KEYDESK_AUTH_MODE=oidc needs {var}"))
        };
        let issuer = need("KEYDESK_OIDC_ISSUER", &self.oidc_issuer)?;
        let url = reqwest::Url::parse(&issuer)
            .map_err(|e| format!("KEYDESK_OIDC_ISSUER {issuer:?} is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
            return Err(format!(
                "KEYDESK_OIDC_ISSUER {issuer:?} must be an http(s) URL without a query (e.g. https://accounts.google.com)"
            ));
        }
        let client_id = need("KEYDESK_OIDC_CLIENT_ID", &self.oidc_client_id)?;
        let client_secret = super::notify::secret_from(
            "KEYDESK_OIDC_CLIENT_SECRET",
            &self.oidc_client_secret,
            &self.oidc_client_secret_file,
        )?
        .ok_or("KEYDESK_AUTH_MODE=oidc needs KEYDESK_OIDC_CLIENT_SECRET or KEYDESK_OIDC_CLIENT_SECRET_FILE")?;
        let public_url = public_url.clone().ok_or(
            "KEYDESK_AUTH_MODE=oidc needs KEYDESK_PUBLIC_URL: the redirect URI registered at the provider is KEYDESK_PUBLIC_URL/auth/callback",
        )?;
        if cookie_secure && public_url.starts_with("http://") {
            return Err(format!(
                "KEYDESK_PUBLIC_URL {public_url} is plain http but KEYDESK_COOKIE_SECURE is true: browsers would not keep the session cookie, so nobody could sign in. Use https, or set KEYDESK_COOKIE_SECURE=false for a local trial"
            ));
        }
        let groups_claim = self.oidc_groups_claim.trim().to_string();
        if groups_claim.is_empty() {
            return Err("KEYDESK_OIDC_GROUPS_CLAIM is empty: leave it unset for `groups`".into());
        }
        let mut allowed_domains = Vec::new();
        for d in self.oidc_allowed_domains.iter().map(|d| d.trim()) {
            if d.is_empty() {
                continue;
            }
            let d = d.trim_start_matches('@').to_ascii_lowercase();
            if d.contains('@') || d.contains('/') || !d.contains('.') {
                return Err(format!(
                    "KEYDESK_OIDC_ALLOWED_DOMAINS {d:?} is not an email domain such as example.com"
                ));
            }
            allowed_domains.push(d);
        }
        let extra_scopes = self
            .oidc_scopes
            .iter()
            .flat_map(|s| s.split_whitespace())
            .filter(|s| !crate::oidc::BASE_SCOPES.contains(s))
            .map(str::to_string)
            .collect();
        if self.session_idle > self.session_max_age {
            return Err(format!(
                "KEYDESK_SESSION_IDLE ({}s) is longer than KEYDESK_SESSION_MAX_AGE ({}s)",
                self.session_idle, self.session_max_age
            ));
        }
        let oidc = Oidc::new(OidcSettings {
            issuer,
            client_id,
            client_secret,
            public_url,
            extra_scopes,
            groups_claim,
            allowed_domains,
            require_verified_email: self.oidc_require_verified_email,
            lifetimes: Lifetimes {
                max_age: self.session_max_age,
                idle: self.session_idle,
            },
        })?;
        Ok(AuthMode::Oidc(Arc::new(oidc)))
    }
}
