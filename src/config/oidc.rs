//! `KEYDESK_OIDC_*` and `KEYDESK_SESSION_*`: keydesk signing people in itself
//! with OpenID Connect (`KEYDESK_AUTH_MODE=oidc`). Every refusal names the
//! variable to fix.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::values::parse_span;
use crate::identity::AuthMode;
use crate::oidc::{Lifetimes, Oidc, OidcSettings};

#[derive(Args, Clone, Default)]
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

/// The client secret never shows: `{:?}` of the settings goes to logs.
impl std::fmt::Debug for OidcArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = self.oidc_client_secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("OidcArgs")
            .field("oidc_issuer", &self.oidc_issuer)
            .field("oidc_client_id", &self.oidc_client_id)
            .field("oidc_client_secret", &secret)
            .field("oidc_client_secret_file", &self.oidc_client_secret_file)
            .field("oidc_scopes", &self.oidc_scopes)
            .field("oidc_groups_claim", &self.oidc_groups_claim)
            .field("oidc_allowed_domains", &self.oidc_allowed_domains)
            .field(
                "oidc_require_verified_email",
                &self.oidc_require_verified_email,
            )
            .field("session_max_age", &self.session_max_age)
            .field("session_idle", &self.session_idle)
            .finish()
    }
}

/// Whether `url` names this machine (a provider run beside keydesk).
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
        // Discovery, keys and the code exchange all go to the issuer: over
        // plain http anyone on the path could hand keydesk their own keys.
        if url.scheme() == "http" && !crate::oidc::is_loopback(&url) {
            return Err(format!(
                "KEYDESK_OIDC_ISSUER {issuer:?} is plain http: use https (plain http is for a provider on this machine only: 127.0.0.1, localhost, [::1])"
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(issuer: &str) -> OidcArgs {
        OidcArgs {
            oidc_issuer: Some(issuer.into()),
            oidc_client_id: Some("keydesk".into()),
            oidc_client_secret: Some("TOP-SECRET-CLIENT-VALUE".into()),
            oidc_groups_claim: "groups".into(),
            session_max_age: 3600,
            session_idle: 600,
            ..OidcArgs::default()
        }
    }

    fn mode(issuer: &str) -> Result<AuthMode, String> {
        args(issuer).mode(&Some("https://keydesk.example.com".into()), true)
    }

    #[test]
    fn debug_output_never_holds_the_client_secret() {
        let text = format!("{:?}", args("https://idp.example.com"));
        assert!(!text.contains("TOP-SECRET"), "{text}");
        assert!(text.contains("<redacted>") && text.contains("idp.example.com"));
    }

    #[test]
    fn a_plain_http_issuer_is_refused_unless_it_is_this_machine() {
        for far in [
            "http://idp.example.com",
            "http://10.0.0.5:8080",
            "http://127.0.0.1.nip.io",
        ] {
            let err = mode(far).map(|_| ()).unwrap_err();
            assert!(
                err.contains("KEYDESK_OIDC_ISSUER") && err.contains("https"),
                "{far}: {err}"
            );
        }
        for near in [
            "https://idp.example.com",
            "http://127.0.0.1:9000",
            "http://127.8.0.1",
            "http://localhost:9000/realms/x",
            "http://LOCALHOST",
            "http://[::1]:9000",
        ] {
            assert!(mode(near).is_ok(), "{near}");
        }
    }
}
