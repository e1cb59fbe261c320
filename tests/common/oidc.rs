//! A real OpenID Provider for the tests: `oidc-provider` from npm
//! (tests/oidc, installed by `npm ci`), run with the system `node`, and
//! keydesk in OpenID mode in front of the fake Vultr. The provider's own
//! login form is filled in as a person would (account, password `secret`).
//! With `CI=true` a provider that cannot start fails the run, never skips.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use keydesk::fake_vultr::FakeVultr;
use keydesk::identity::{Access, AuthMode};
use keydesk::oidc::{Lifetimes, Oidc, OidcSettings};
use secrecy::SecretString;

use super::{Options, ROOT_KEY, TestApp};

pub const CLIENT_ID: &str = "keydesk";
pub const CLIENT_SECRET: &str = "test-client-secret-0123456789abcdefXYZ";
/// Every account's password at the test provider.
pub const PASSWORD: &str = "secret";
pub const OPS: &str = "ops@example.com";
pub const VERA: &str = "vera@example.com";
pub const ADA: &str = "ada@example.com";

/// The provider process (killed when dropped) and its issuer URL.
pub struct Op {
    pub issuer: String,
    _child: tokio::process::Child,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// A loopback port nobody listens on now, for a keydesk whose redirect URI
/// must be registered before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn base_of(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

impl Op {
    /// The provider with keydesk registered for these ports, or None (skip)
    /// outside CI when node or the npm packages are missing.
    pub async fn start(ports: &[u16]) -> Option<Op> {
        Self::start_with(ports, "client_secret_basic").await
    }

    /// `start`, with the provider keeping email and groups out of the ID
    /// token (oidc-provider's default): they are only at userinfo.
    pub async fn start_conforming(ports: &[u16]) -> Option<Op> {
        Self::start_configured(ports, "client_secret_basic", true).await
    }

    /// `start`, with keydesk registered for the token endpoint
    /// authentication `method`, the only one the provider then accepts.
    pub async fn start_with(ports: &[u16], method: &str) -> Option<Op> {
        Self::start_configured(ports, method, false).await
    }

    async fn start_configured(ports: &[u16], method: &str, conform: bool) -> Option<Op> {
        let in_ci = super::pg::require_all();
        let installed = dir().join("node_modules/oidc-provider").exists();
        let node = std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok();
        if !installed || !node {
            assert!(
                !in_ci,
                "CI is set but the OpenID provider cannot start: node {} and tests/oidc/node_modules {} (run `npm ci` in tests/oidc)",
                if node { "found" } else { "missing" },
                if installed { "found" } else { "missing" },
            );
            super::pg::skip_line(
                "node or tests/oidc/node_modules missing (cd tests/oidc && npm ci): the OpenID tests",
            );
            return None;
        }
        let bases: Vec<String> = ports.iter().map(|p| base_of(*p)).collect();
        let mut clients = serde_json::json!({ "clients": [{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": bases.iter().map(|b| format!("{b}/auth/callback")).collect::<Vec<_>>(),
            "post_logout_redirect_uris": bases.iter().map(|b| format!("{b}/auth/signed-out")).collect::<Vec<_>>(),
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": method,
        }, {
            "client_id": "another-app",
            "client_secret": "another-app-secret-0123456789abcdef",
            "redirect_uris": bases.iter().map(|b| format!("{b}/auth/callback")).collect::<Vec<_>>(),
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": method,
        }]});
        clients["conform"] = serde_json::json!(conform);
        if method != "client_secret_basic" {
            clients["clientAuthMethods"] = serde_json::json!([method]);
        }
        let mut child = tokio::process::Command::new("node")
            .arg("provider.mjs")
            .arg(clients.to_string())
            .current_dir(dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts the OpenID provider");
        let stdout = child.stdout.take().expect("provider stdout");
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        let issuer = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("ISSUER ") {
                    return Some(url.trim().to_string());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("the OpenID provider says its issuer");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Some(Op {
            issuer,
            _child: child,
        })
    }
}

/// keydesk's OpenID settings for `issuer`, served on `port`.
pub fn settings(issuer: &str, port: u16) -> OidcSettings {
    OidcSettings {
        issuer: issuer.to_string(),
        client_id: CLIENT_ID.into(),
        client_secret: SecretString::from(CLIENT_SECRET.to_string()),
        public_url: base_of(port),
        extra_scopes: vec!["groups".into()],
        groups_claim: "groups".into(),
        allowed_domains: vec![],
        require_verified_email: true,
        lifetimes: Lifetimes::default(),
    }
}

/// The tests' role policy: Olive by email, Vera through the `auditors`
/// group, the `platform` group as operators.
pub fn access() -> Access {
    Access::new(
        &["group:auditors".into()],
        &[OPS.into(), "group:platform".into()],
    )
}

/// keydesk options in OpenID mode with these settings.
pub fn options(oidc: OidcSettings) -> Options {
    Options {
        auth: Some(AuthMode::Oidc(Arc::new(Oidc::new(oidc).unwrap()))),
        access: access(),
        identity: None,
        ..Options::default()
    }
}

/// keydesk served on `port` with `opts`, reached through a fresh browser-like client.
pub async fn serve_on(fake: &FakeVultr, port: u16, opts: &Options) -> TestApp {
    let url = fake.spawn().await.unwrap();
    let mut settings = opts.settings(&url);
    settings.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (base, state) = super::serve(settings).await;
    assert_eq!(base, base_of(port));
    TestApp::assemble(base, fake.clone(), super::client(None), state)
}

/// `serve_on`, with an anonymous quota no test run reaches: every request
/// gets to the handlers (the per-address limit is tested in tests/edge.rs).
pub async fn serve_unlimited(fake: &FakeVultr, port: u16, opts: &Options) -> TestApp {
    let url = fake.spawn().await.unwrap();
    let mut settings = opts.settings(&url);
    settings.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    settings.anon = keydesk::client_quota::ClientRate {
        per_minute: 1_000_000,
        burst: 1_000_000,
    };
    let (base, state) = super::serve(settings).await;
    TestApp::assemble(base, fake.clone(), super::client(None), state)
}

/// A provider and a keydesk in OpenID mode (tweaked by `tweak`), or None (skip).
pub async fn spawn(tweak: impl FnOnce(&mut OidcSettings)) -> Option<(Op, TestApp)> {
    let port = free_port();
    let op = Op::start(&[port]).await?;
    let mut s = settings(&op.issuer, port);
    tweak(&mut s);
    let app = serve_on(&FakeVultr::seeded(ROOT_KEY), port, &options(s)).await;
    Some((op, app))
}

/// `location` of a redirect, made absolute against `from`.
pub fn location(resp: &reqwest::Response) -> String {
    let raw = resp
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("{} {} is not a redirect", resp.status(), resp.url()))
        .to_str()
        .unwrap();
    resp.url().join(raw).unwrap().to_string()
}

/// Follows `url` through the provider, signing in as `account` on its login
/// form, until the provider sends the browser to a keydesk callback: returns
/// that callback URL, not yet visited.
pub async fn to_callback(c: &reqwest::Client, url: &str, account: &str) -> String {
    let mut url = url.to_string();
    for _ in 0..12 {
        if url.contains("/auth/callback") {
            return url;
        }
        let resp = c.get(&url).send().await.unwrap();
        if resp.status().is_redirection() {
            url = location(&resp);
            continue;
        }
        let here = resp.url().clone();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(
            status == 200 && body.contains(r#"id="op-login""#),
            "expected the provider's login form at {here}: {status} {body}"
        );
        let post = c
            .post(here.as_str())
            .form(&[("login", account), ("password", PASSWORD)])
            .send()
            .await
            .unwrap();
        assert!(
            post.status().is_redirection(),
            "login as {account}: {}",
            post.status()
        );
        url = location(&post);
    }
    panic!("the provider never sent the browser back to keydesk");
}

/// Signs `app.client` in as `account` by opening `path` (which must send it
/// to the provider); returns keydesk's answer to the callback.
pub async fn sign_in(app: &TestApp, path: &str, account: &str) -> reqwest::Response {
    let first = app.response(path).await;
    assert_eq!(
        first.status(),
        302,
        "{path} should send a stranger to the provider"
    );
    let callback = to_callback(&app.client, &location(&first), account).await;
    app.client.get(&callback).send().await.unwrap()
}

/// The non-GET requests the fake Vultr received: what "written upstream" means.
pub fn writes(fake: &FakeVultr) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// The latest audit entries with `action`, as (actor, role, reason).
pub async fn audit_of(app: &TestApp, action: &str) -> Vec<(String, String, Option<String>)> {
    let filter = keydesk::audit::Filter {
        action: Some(action.into()),
        ..Default::default()
    };
    app.state
        .audit
        .list(&filter, 50, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.intent.actor, e.intent.role, e.intent.reason))
        .collect()
}
