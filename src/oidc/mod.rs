//! Signing in without a proxy: keydesk as an OpenID Connect client
//! (Authorization Code with PKCE S256, `state` and `nonce`), built on the
//! `openidconnect` crate. Nothing here hand-rolls OAuth or token checks:
//! discovery checks the issuer for an exact match, and the crate's ID-token
//! verifier checks the signature (provider JWKS), `iss`, `aud`, `exp` and
//! the nonce; keydesk adds (in `token`) `iat` and `azp`, which the crate
//! leaves out, then `email_verified` and the domains (an exact match).
//!
//! The provider's metadata and keys are cached; an unknown `kid` refetches
//! the keys at most once per `REFETCH_INTERVAL`, as JWT mode does.

mod claims;
mod http;
mod person;
pub mod session;
pub mod started;
mod token;

use std::time::{Duration, Instant};

use openidconnect::core::{CoreClientAuthMethod, CoreResponseType};
use openidconnect::{
    AuthType, AuthenticationFlow, AuthorizationCode, ClaimsVerificationError, ClientId,
    ClientSecret, CsrfToken, IssuerUrl, JsonWebKeySet, LogoutRequest, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::RwLock;

use self::claims::{OidcClient, describe};
use self::http::Http;
pub use self::session::{Lifetimes, Pending, SignedIn};
pub use self::started::StartedSignIns;

/// Least time between two key fetches triggered by an unknown `kid`.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Cached metadata and keys older than this are refreshed on next use.
const MAX_AGE: Duration = Duration::from_secs(3600);
/// The scopes keydesk always asks for.
pub const BASE_SCOPES: [&str; 3] = ["openid", "email", "profile"];

/// What the operator configured (`KEYDESK_OIDC_*`, `KEYDESK_PUBLIC_URL`).
#[derive(Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// `KEYDESK_PUBLIC_URL`, without a trailing slash.
    pub public_url: String,
    /// Scopes asked for after `openid email profile`.
    pub extra_scopes: Vec<String>,
    pub groups_claim: String,
    /// Lower-case email domains; empty: any.
    pub allowed_domains: Vec<String>,
    pub require_verified_email: bool,
    pub lifetimes: Lifetimes,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("public_url", &self.public_url)
            .field("extra_scopes", &self.extra_scopes)
            .field("groups_claim", &self.groups_claim)
            .field("allowed_domains", &self.allowed_domains)
            .field("require_verified_email", &self.require_verified_email)
            .field("lifetimes", &self.lifetimes)
            .finish_non_exhaustive()
    }
}

impl OidcSettings {
    pub fn redirect_uri(&self) -> String {
        format!("{}/auth/callback", self.public_url)
    }

    /// The issuer's origin (`https://host[:port]`), for the page policy.
    pub fn issuer_origin(&self) -> Option<String> {
        let url = reqwest::Url::parse(&self.issuer).ok()?;
        let origin = url.origin();
        origin.is_tuple().then(|| origin.ascii_serialization())
    }

    /// Where the provider sends the browser after signing out.
    pub fn post_logout_uri(&self) -> String {
        format!("{}/auth/signed-out", self.public_url)
    }
}

/// Why a sign-in was refused: `reason` goes to the log (and the audit, when
/// `answered`), `email` names who tried when the provider said so.
#[derive(Debug)]
pub struct Denied {
    pub reason: String,
    pub email: Option<String>,
    /// The provider redeemed the code and answered with tokens: someone
    /// signed in at the provider. Before that (a junk code, the provider
    /// down), nothing ties the refusal to anyone, so it is not audited.
    pub answered: bool,
}

impl Denied {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            email: None,
            answered: false,
        }
    }

    /// The same refusal, once the provider has answered with tokens.
    fn answered(self) -> Self {
        Self {
            answered: true,
            ..self
        }
    }
}

struct Provider {
    metadata: ProviderMetadataWithLogout,
    fetched: Instant,
    /// The last refetch an unknown `kid` caused.
    refetched: Option<Instant>,
}

/// The OpenID client: settings, the provider's cached metadata and keys.
pub struct Oidc {
    pub settings: OidcSettings,
    http: Http,
    provider: RwLock<Option<Provider>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Result<Self, String> {
        IssuerUrl::new(settings.issuer.clone())
            .map_err(|e| format!("KEYDESK_OIDC_ISSUER is not a URL: {e}"))?;
        RedirectUrl::new(settings.redirect_uri())
            .map_err(|e| format!("KEYDESK_PUBLIC_URL does not make a redirect URI: {e}"))?;
        Ok(Self {
            settings,
            http: Http::new()?,
            provider: RwLock::new(None),
        })
    }

    /// The provider's metadata, discovered (issuer checked for an exact
    /// match by the crate) and cached for `MAX_AGE`.
    async fn metadata(&self) -> Result<ProviderMetadataWithLogout, String> {
        if let Some(p) = self.provider.read().await.as_ref()
            && p.fetched.elapsed() < MAX_AGE
        {
            return Ok(p.metadata.clone());
        }
        let mut slot = self.provider.write().await;
        if let Some(p) = slot.as_ref()
            && p.fetched.elapsed() < MAX_AGE
        {
            return Ok(p.metadata.clone());
        }
        let issuer =
            IssuerUrl::new(self.settings.issuer.clone()).map_err(|e| format!("issuer: {e}"))?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
            .await
            .map_err(|e| format!("OpenID discovery at {} failed: {e}", self.settings.issuer))?;
        endpoints_are_secure(&metadata)?;
        *slot = Some(Provider {
            metadata: metadata.clone(),
            fetched: Instant::now(),
            refetched: None,
        });
        Ok(metadata)
    }

    /// Discovers the provider now (at start): its metadata, keys and issuer.
    pub async fn check(&self) -> Result<(), String> {
        let metadata = self.metadata().await?;
        if metadata.token_endpoint().is_none() {
            return Err(format!(
                "{} offers no token_endpoint: not an OpenID provider keydesk can use",
                self.settings.issuer
            ));
        }
        Ok(())
    }

    /// Refetches the signing keys after an unknown `kid`, at most once per
    /// `REFETCH_INTERVAL`; true when the keys changed.
    async fn refetch_keys(&self) -> bool {
        let mut slot = self.provider.write().await;
        let Some(p) = slot.as_mut() else { return false };
        if p.refetched.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
            return false;
        }
        p.refetched = Some(Instant::now());
        match JsonWebKeySet::fetch_async(p.metadata.jwks_uri(), &self.http).await {
            Ok(keys) => {
                p.metadata = p.metadata.clone().set_jwks(keys);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not refetch the OpenID provider's keys");
                false
            }
        }
    }

    fn client(&self, metadata: ProviderMetadataWithLogout) -> Result<OidcClient, String> {
        let redirect = RedirectUrl::new(self.settings.redirect_uri()).map_err(|e| e.to_string())?;
        // The secret goes in the Authorization header (the default when the
        // provider lists nothing), or in the body when that is all it takes.
        let post_only = metadata
            .token_endpoint_auth_methods_supported()
            .is_some_and(|m| {
                !m.contains(&CoreClientAuthMethod::ClientSecretBasic)
                    && m.contains(&CoreClientAuthMethod::ClientSecretPost)
            });
        let auth_type = match post_only {
            true => AuthType::RequestBody,
            false => AuthType::BasicAuth,
        };
        Ok(OidcClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose_secret().to_string(),
            )),
        )
        .set_redirect_uri(redirect)
        .set_auth_type(auth_type))
    }

    /// Starts a sign-in: the provider URL to send the browser to, and what
    /// the callback must find in this browser's started-sign-in cookie.
    pub async fn begin(&self, next: &str) -> Result<(String, Pending), String> {
        let client = self.client(self.metadata().await?)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in BASE_SCOPES
            .iter()
            .map(|s| s.to_string())
            .skip(1)
            .chain(self.settings.extra_scopes.iter().cloned())
        {
            request = request.add_scope(Scope::new(scope));
        }
        let (url, state, nonce) = request.url();
        let pending = Pending {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            next: next.to_string(),
            started: session::now(),
        };
        Ok((url.to_string(), pending))
    }

    /// Finishes a sign-in: exchanges the code (with the PKCE verifier) and
    /// verifies the ID token against this flow's nonce.
    pub async fn finish(&self, code: &str, pending: &Pending) -> Result<SignedIn, Denied> {
        let client = self
            .client(self.metadata().await.map_err(Denied::new)?)
            .map_err(Denied::new)?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| Denied::new(format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| Denied::new(format!("the code exchange failed: {}", describe(&e))))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| Denied::new("the provider returned no ID token").answered())?;
        let nonce = Nonce::new(pending.nonce.clone());
        let mut claims = token::verify(&client, id_token, &nonce);
        if let Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        )) = &claims
            && self.refetch_keys().await
        {
            let client = self
                .client(self.metadata().await.map_err(Denied::new)?)
                .map_err(Denied::new)?;
            claims = token::verify(&client, id_token, &nonce);
        }
        let claims = claims.map_err(|e| {
            Denied::new(format!("the ID token was refused: {}", describe(&e))).answered()
        })?;
        let about = person::of(
            &self.http,
            &client,
            &tokens,
            &claims,
            &self.settings.groups_claim,
        )
        .await
        .map_err(Denied::answered)?;
        let email = person::usable_email(&about.email).map_err(|e| Denied::new(e).answered())?;
        let denied = |reason: String| Denied {
            reason,
            email: Some(email.clone()),
            answered: true,
        };
        if self.settings.require_verified_email && about.email_verified != Some(true) {
            return Err(denied(format!(
                "the provider does not say {email} is verified (email_verified)"
            )));
        }
        // The domain after the last `@`, equal to an allowed one: never a
        // suffix match, or `alice@notexample.com` would pass `example.com`.
        if !self.settings.allowed_domains.is_empty() {
            let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            if !self.settings.allowed_domains.iter().any(|d| d == domain) {
                return Err(denied(format!(
                    "{domain:?} is not in KEYDESK_OIDC_ALLOWED_DOMAINS"
                )));
            }
        }
        let groups = about.groups;
        Ok(SignedIn {
            email,
            groups,
            id_token: id_token.to_string(),
            sign_out: uuid::Uuid::new_v4().simple().to_string(),
            signed_in: session::now(),
            seen: session::now(),
        })
    }

    /// The provider's sign-out URL for this session, when it offers one.
    pub async fn end_session_url(&self, id_token: Option<&str>) -> Option<String> {
        let metadata = self.metadata().await.ok()?;
        let endpoint = metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()?;
        // The page policy lets forms lead to the issuer's origin only.
        let same_origin = reqwest::Url::parse(endpoint.url().as_str())
            .ok()
            .map(|u| u.origin().ascii_serialization())
            == self.settings.issuer_origin();
        if !same_origin {
            tracing::warn!(
                "the provider's end_session_endpoint is not on the issuer's origin: sign-out ends keydesk's session only"
            );
            return None;
        }
        let mut request = LogoutRequest::from(endpoint)
            .set_client_id(ClientId::new(self.settings.client_id.clone()));
        if let Ok(uri) = PostLogoutRedirectUrl::new(self.settings.post_logout_uri()) {
            request = request.set_post_logout_redirect_uri(uri);
        }
        let hint = id_token.and_then(|t| t.parse::<token::IdToken>().ok());
        if let Some(hint) = &hint {
            request = request.set_id_token_hint(hint);
        }
        Some(request.http_get_url().to_string())
    }
}

/// Whether `url` is on this machine (127.0.0.0/8, `localhost`, `[::1]`):
/// the only place plain `http://` to the provider is accepted.
pub fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or("");
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The endpoints discovery names carry the code, the client secret and the
/// tokens: `https://`, as the issuer must be, unless on this machine.
fn secure_endpoint(name: &str, url: &reqwest::Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        _ => Err(format!(
            "the provider's {name} ({url}) is not https://: keydesk sends codes, its client secret and tokens only over TLS"
        )),
    }
}

fn endpoints_are_secure(m: &ProviderMetadataWithLogout) -> Result<(), String> {
    secure_endpoint("jwks_uri", m.jwks_uri().url())?;
    if let Some(u) = m.token_endpoint() {
        secure_endpoint("token_endpoint", u.url())?;
    }
    if let Some(u) = m.userinfo_endpoint() {
        secure_endpoint("userinfo_endpoint", u.url())?;
    }
    if let Some(u) = &m.additional_metadata().end_session_endpoint {
        secure_endpoint("end_session_endpoint", u.url())?;
    }
    Ok(())
}

/// `next` as a same-origin path, or `None`: never `//host`, `/\host`, a
/// scheme or control characters. Printable ASCII only (a browser's path is
/// percent-encoded), so it is always a valid `Location` header.
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && next.len() <= 2048
        && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    ok.then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_takes_same_origin_paths_only() {
        for good in ["/", "/users?page=2", "/claim/abc", "/users/x/keys#add"] {
            assert_eq!(safe_next(good), Some(good), "{good}");
        }
        for bad in [
            "",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "users",
            "/a\nb",
            "/a\\b",
        ] {
            assert_eq!(safe_next(bad), None, "{bad}");
        }
    }

    #[test]
    fn provider_endpoints_must_be_https_unless_on_this_machine() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        for ok in [
            "https://idp.example.com/token",
            "http://127.0.0.1:9000/token",
            "http://localhost/token",
            "http://[::1]:8080/token",
        ] {
            assert!(secure_endpoint("token_endpoint", &url(ok)).is_ok(), "{ok}");
        }
        for far in [
            "http://idp.example.com/token",
            "http://127.0.0.1.nip.io/token",
            "ftp://idp.example.com/token",
        ] {
            let err = secure_endpoint("token_endpoint", &url(far)).unwrap_err();
            assert!(
                err.contains("token_endpoint") && err.contains("https"),
                "{err}"
            );
        }
    }

    #[test]
    fn debug_output_never_holds_the_client_secret() {
        let settings = OidcSettings {
            issuer: "https://idp.example.com".into(),
            client_id: "keydesk".into(),
            client_secret: SecretString::from("TOP-SECRET-CLIENT-VALUE".to_string()),
            public_url: "https://keydesk.example.com".into(),
            extra_scopes: vec![],
            groups_claim: "groups".into(),
            allowed_domains: vec![],
            require_verified_email: true,
            lifetimes: Lifetimes::default(),
        };
        let oidc = Oidc::new(settings.clone()).expect("valid settings");
        for text in [
            format!("{settings:?}"),
            format!("{oidc:?}"),
            format!("{oidc:#?}"),
        ] {
            assert!(!text.contains("TOP-SECRET"), "{text}");
            assert!(text.contains("keydesk"), "{text}");
        }
        assert_eq!(
            settings.redirect_uri(),
            "https://keydesk.example.com/auth/callback"
        );
        assert_eq!(
            settings.issuer_origin().as_deref(),
            Some("https://idp.example.com")
        );
    }
}

#[cfg(test)]
mod next_properties {
    use super::safe_next;
    use proptest::prelude::*;

    /// Paths, ASCII-heavy, with what an attacker reaches for.
    fn hostile() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            4 => "[ -~]{0,12}",
            1 => prop::sample::select(vec![
                "/", "//", "\\", "/\\", "http:", "https://evil.example", "javascript:",
                "\t", "\n", "\r", "\u{0}", "%2F", "%5C", "@", "..", " ", "\u{3000}",
                "\u{FF0F}", "\u{2215}", "é", "?", "#",
            ])
            .prop_map(str::to_string),
            1 => any::<String>(),
        ];
        prop::collection::vec(part, 0..6).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// Accepted: a same-origin path (joined to keydesk's URL it stays on
        /// keydesk), printable ASCII with no `//` start, `\`, scheme or
        /// control character, valid as a `Location` header. Else refused.
        #[test]
        fn an_accepted_next_stays_on_keydesk(raw in hostile(), lead in any::<bool>()) {
            let next = if lead { format!("/{raw}") } else { raw };
            let Some(ok) = safe_next(&next) else { return Ok(()) };
            prop_assert_eq!(ok, next.as_str());
            prop_assert!(ok.starts_with('/') && !ok.starts_with("//"));
            prop_assert!(ok.bytes().all(|b| b.is_ascii_graphic() && b != b'\\'));
            prop_assert!(axum::http::HeaderValue::from_str(ok).is_ok());
            let base = reqwest::Url::parse("https://keydesk.example/users/x").unwrap();
            let joined = base.join(ok).unwrap();
            prop_assert_eq!(joined.origin(), base.origin());
        }

        /// A plain path and query of keydesk is taken as it is.
        #[test]
        fn a_plain_path_round_trips(path in "(/[A-Za-z0-9._~%=&?:@!$'()*+,;-]{1,20}){1,6}") {
            prop_assert_eq!(safe_next(&path), Some(path.as_str()));
        }
    }
}
