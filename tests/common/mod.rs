//! Test harness: the fake Vultr and keydesk on ephemeral ports, a
//! cookie-keeping client that does not follow redirects, and helpers.
#![allow(dead_code, clippy::unwrap_used)]

pub mod oidc;
pub mod pg;
pub mod rogue_op;
pub mod sinks;

use std::time::Duration;

use keydesk::Application;
use keydesk::fake_vultr::FakeVultr;
use keydesk::identity::{Access, AuthMode};
use keydesk::policy::{ApprovalPolicy, ApprovalRule, KeyPolicy};
use keydesk::state::{AppState, Settings};
use keydesk::vultr::ClientOptions;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::SecretString;

pub const ROOT_KEY: &str = "ROOTKEY0TEST0ABCDEFGHIJKLMNOPQRSTUV";
pub const STAFF: &str = "staff@example.com";
pub const VIEWER: &str = "viewer@example.com";
pub const OTHER: &str = "other@example.com";
/// The ticked "I understand" box of the revoke and brake confirmations.
pub const CONFIRMED: (&str, &str) = ("understand", "true");

pub struct TestApp {
    pub base: String,
    pub fake: FakeVultr,
    pub client: reqwest::Client,
    pub state: AppState,
    _paced: Paced,
}

/// Fails the test, when its app is dropped, if the fake's Vultr rate limit
/// (on by default) answered any 429: keydesk's own pacing must keep every
/// flow under Vultr's 30 requests a second. A test that means to exceed it
/// turns the limit off (`fake.set_rate_limit(None)`) and says why.
struct Paced(FakeVultr);

impl Drop for Paced {
    fn drop(&mut self) {
        let n = self.0.rate_limited_count();
        if n > 0 && !std::thread::panicking() {
            panic!("Vultr's rate limit answered {n} × 429 during this test");
        }
    }
}

#[derive(Clone)]
pub struct Options {
    pub trusted: Vec<&'static str>,
    pub identity: Option<&'static str>,
    pub page_size: u32,
    pub root_key: &'static str,
    pub audit_db: String,
    pub upstream: ClientOptions,
    pub access: Access,
    pub policy: KeyPolicy,
    /// Overrides the default header mode (e.g. JWT).
    pub auth: Option<AuthMode>,
    pub cookie_secure: bool,
    pub public_url: Option<String>,
    pub claim_ttl: Duration,
    pub notify: keydesk::notify::NotifyConfig,
    pub approval: keydesk::policy::ApprovalPolicy,
    pub approvers: Vec<String>,
    /// How long before an open audit intent, or a lost create, is settled.
    pub pending_bound: Duration,
    /// `KEYDESK_SELF_SERVICE` (off by default, as deployed).
    pub self_service: keydesk::self_service::SelfService,
}

impl Options {
    /// keydesk's settings for these options against the Vultr API at `url`.
    pub fn settings(&self, url: &str) -> Settings {
        Settings {
            auth: self.auth.clone().unwrap_or_else(|| {
                AuthMode::header(
                    "x-forwarded-email",
                    self.trusted.iter().map(|c| c.parse().unwrap()).collect(),
                )
                .unwrap()
            }),
            access: self.access.clone(),
            policy: self.policy.clone(),
            database_url: self.audit_db.clone(),
            cookie_secure: self.cookie_secure,
            upstream: self.upstream.clone(),
            page_size: self.page_size,
            public_url: self.public_url.clone(),
            claim_ttl: self.claim_ttl,
            notify: self.notify.clone(),
            approval: self.approval.clone(),
            approvers: self.approvers.clone(),
            pending_bound: self.pending_bound,
            self_service: self.self_service,
            ..Settings::new(url, SecretString::from(self.root_key.to_string()))
        }
    }

    /// These options on the database at `url`.
    pub fn on(url: &str) -> Self {
        Self {
            audit_db: url.to_string(),
            ..Default::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            trusted: vec!["127.0.0.1/32"],
            identity: Some(STAFF),
            page_size: 10,
            root_key: ROOT_KEY,
            audit_db: "sqlite::memory:".into(),
            // Uncached by default (tests of the cache turn it on), and paced
            // as deployed: the fake enforces Vultr's 30 requests a second.
            upstream: ClientOptions {
                timeout: Duration::from_secs(5),
                rps: 25,
                cache_ttl: Duration::ZERO,
                max_retries: 3,
                backoff_base: Duration::from_millis(10),
                burst: 4,
                shared_budget: None,
            },
            access: Access::new(
                &[VIEWER.into()],
                &[STAFF.into(), OTHER.into(), "group:platform".into()],
            ),
            policy: KeyPolicy::default(),
            auth: None,
            cookie_secure: false,
            public_url: None,
            claim_ttl: Duration::from_secs(72 * 3600),
            notify: Default::default(),
            approval: keydesk::policy::ApprovalPolicy {
                rules: vec![],
                ttl: Duration::from_secs(24 * 3600),
            },
            approvers: vec![],
            pending_bound: keydesk::audit::PENDING_BOUND,
            self_service: Default::default(),
        }
    }
}

pub fn client(identity: Option<&str>) -> reqwest::Client {
    let mut headers = HeaderMap::new();
    if let Some(id) = identity {
        headers.insert("x-forwarded-email", HeaderValue::from_str(id).unwrap());
    }
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap()
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(FakeVultr::seeded(ROOT_KEY), Options::default()).await
    }

    /// An app already served at `base` on `fake`, used through `client`.
    pub fn assemble(
        base: String,
        fake: FakeVultr,
        client: reqwest::Client,
        state: AppState,
    ) -> Self {
        Self {
            base,
            _paced: Paced(fake.clone()),
            fake,
            client,
            state,
        }
    }

    /// A seeded app whose open intents and lost creates settle after
    /// `ms` milliseconds, and Ada's user id.
    pub async fn with_pending_bound(ms: u64) -> (Self, String) {
        let opts = Options {
            pending_bound: Duration::from_millis(ms),
            ..Default::default()
        };
        let app = Self::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
        let ada = app.user_id("ada@example.com");
        (app, ada)
    }

    /// A default app and the id of its seeded user with `email`.
    pub async fn with_user(email: &str) -> (Self, String) {
        let app = Self::spawn().await;
        let id = app.user_id(email);
        (app, id)
    }

    pub async fn spawn_with(fake: FakeVultr, opts: Options) -> Self {
        let url = fake.spawn().await.unwrap();
        let (base, state) = serve(opts.settings(&url)).await;
        Self {
            base,
            _paced: Paced(fake.clone()),
            fake,
            client: client(opts.identity),
            state,
        }
    }

    /// A second keydesk (a replica) on the same fake and `opts`' database,
    /// sharing this app's browser (cookies are per host, not per port).
    pub async fn replica(&self, opts: Options) -> Self {
        let url = self.fake.spawn().await.unwrap();
        let (base, state) = serve(opts.settings(&url)).await;
        Self {
            base,
            fake: self.fake.clone(),
            _paced: Paced(self.fake.clone()),
            client: self.client.clone(),
            state,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.text().await.unwrap())
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Opens the `action` form ("delete" or "rotate") of `user`'s key named
    /// `name`; it must answer 200.
    pub async fn key_form(&self, user: &str, name: &str, action: &str) -> KeyForm {
        let key = self.key_named(user, name);
        let path = format!("/users/{user}/keys/{}/{action}", key.id);
        let (status, page) = self.get(&path).await;
        assert_eq!(status, 200, "{path}: {page}");
        let token = hidden_token(&page);
        KeyForm {
            key,
            path,
            page,
            token,
        }
    }

    /// The key of `user` named `name`, as the fake holds it.
    pub fn key_named(&self, user: &str, name: &str) -> keydesk::vultr::ApiKey {
        self.fake
            .keys_of(user)
            .into_iter()
            .find(|k| k.name.as_deref() == Some(name))
            .unwrap()
    }

    /// The response to a GET of `path`, whatever its status.
    pub async fn response(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// A GET to `path` with one extra header.
    pub async fn get_with_header(&self, path: &str, header: (&str, &str)) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header(header.0, header.1)
            .send()
            .await
            .unwrap()
    }

    /// How many audit entries have `action`.
    pub async fn audit_count(&self, action: &str) -> i64 {
        let filter = keydesk::audit::Filter {
            action: Some(action.into()),
            ..Default::default()
        };
        self.state.audit.count(&filter).await.unwrap()
    }

    /// The first request with `method` that the fake received.
    pub fn upstream_request(&self, method: &str) -> keydesk::fake_vultr::Recorded {
        self.fake
            .requests()
            .into_iter()
            .find(|r| r.method == method)
            .unwrap()
    }

    /// The id of the seeded user whose email is `email`.
    pub fn user_id(&self, email: &str) -> String {
        user_id_in(&self.fake, email)
    }

    /// Opens a user page and returns the add-key form's one-time token.
    pub async fn form_token(&self, user_id: &str) -> String {
        self.token_of(&format!("/users/{user_id}")).await
    }

    /// Opens the page at `path` (it must answer 200) and returns its form token.
    pub async fn token_of(&self, path: &str) -> String {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        hidden_token(&body)
    }

    /// Posts `fields` with `token` as the form's one-time token.
    pub async fn submit(
        &self,
        path: &str,
        token: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut form = vec![("form_token", token)];
        form.extend_from_slice(fields);
        self.post_form(path, &form).await
    }

    /// The add-key form of `user`, sent with `fields` and a fresh token.
    pub async fn create_key(&self, user: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let token = self.form_token(user).await;
        self.create_key_with(user, &token, fields).await
    }

    /// The add-key form of `user`, sent with `fields` and the given token.
    pub async fn create_key_with(
        &self,
        user: &str,
        token: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        self.submit(&format!("/users/{user}/keys"), token, fields)
            .await
    }

    /// The add-key form of `user` with `token`, sent with one extra header.
    pub async fn create_key_with_header(
        &self,
        user: &str,
        token: &str,
        header: (&str, &str),
    ) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/users/{user}/keys")))
            .header(header.0, header.1)
            .form(&[("form_token", token), ("name", "x")])
            .send()
            .await
            .unwrap()
    }

    /// Opens the form at `path` and sends it back with `fields`.
    pub async fn through_form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let token = self.token_of(path).await;
        self.submit(path, &token, fields).await
    }

    /// Confirms the revocation of `key` of `user` with `fields`.
    pub async fn revoke(
        &self,
        user: &str,
        key: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let path = format!("/users/{user}/keys/{key}/delete");
        let mut all = vec![CONFIRMED];
        all.extend_from_slice(fields);
        self.through_form(&path, &all).await
    }

    /// Starts the expiring-keys scan from the report page.
    pub async fn start_scan(&self) -> reqwest::Response {
        let token = self.token_of("/reports/keys").await;
        self.submit("/reports/keys/scan", &token, &[]).await
    }
}

/// A key's rotate or revoke form, opened: the key, the form's path, the
/// page and its one-time token.
pub struct KeyForm {
    pub key: keydesk::vultr::ApiKey,
    pub path: String,
    pub page: String,
    pub token: String,
}

/// A loopback port that refuses connections for as long as the returned
/// socket lives: bound (so nobody else can take it) but never listening.
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// Waits until `cond` holds, checking every 5 ms for at most 10 s; a
/// condition that never comes fails the test with `what`.
pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends `user`'s add-key form with `token` as 8 concurrent requests, spread
/// over `apps`, while Vultr holds the one POST that gets through: the seven
/// other answers must come back while it is held (so the eight truly
/// overlap). Returns all eight (status, body), the held one last.
pub async fn race_eight(apps: &[&TestApp], user: &str, token: &str) -> Vec<(u16, String)> {
    let fake = &apps[0].fake;
    fake.hold("POST", "/v2/users");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..8 {
        let app = apps[i % apps.len()];
        let req = app
            .client
            .post(app.url(&format!("/users/{user}/keys")))
            .form(&[("form_token", token), ("name", "race")]);
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = req.send().await.unwrap();
            let _ = tx.send((r.status().as_u16(), r.text().await.unwrap()));
        });
    }
    let mut results = Vec::new();
    for i in 0..7 {
        results.push(
            within(&format!("replay {i} of the race"), rx.recv())
                .await
                .unwrap(),
        );
    }
    wait_until("the one POST held at Vultr", || fake.held() == 1).await;
    assert!(
        results.iter().all(|(s, _)| *s == 409),
        "seven replays meanwhile"
    );
    fake.release();
    results.push(within("the held POST's answer", rx.recv()).await.unwrap());
    results
}

/// Posts the forms of `tokens` (one per tab) to `url` with `c`, all at once:
/// exactly one gets through (200), every other is told it was done (409).
pub async fn one_tab_wins(c: &reqwest::Client, url: String, tokens: Vec<String>) {
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                let r = post_as(&c, url, &[("form_token", t.as_str())]).await;
                r.status().as_u16()
            })
        })
        .collect();
    let mut statuses = vec![];
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    let won = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(won, 1, "{statuses:?}");
    let done = statuses.iter().all(|s| *s == 200 || *s == 409);
    assert!(done, "{statuses:?}");
}

/// `fut`, or a failure naming `what` after 30 s: a test never hangs.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    within_secs(30, what, fut).await
}

/// `within`, for work that is slow by design (a rate-limited scan).
pub async fn within_secs<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs} s waiting for {what}"))
}

/// Waits (at most 30 s) until `app`'s report scan is idle.
pub async fn scan_idle(app: &TestApp) {
    within("the report scan to finish", app.state.reports.wait_idle()).await
}

/// The body of a GET to `url` with client `c`, whatever the status.
pub async fn get_text(c: &reqwest::Client, url: impl reqwest::IntoUrl) -> String {
    c.get(url).send().await.unwrap().text().await.unwrap()
}

/// The id of the user of `fake` whose email is `email`.
pub fn user_id_in(fake: &FakeVultr, email: &str) -> String {
    fake.users()
        .into_iter()
        .find(|u| u.email.as_deref() == Some(email))
        .map(|u| u.id)
        .unwrap()
}

/// Serves keydesk in-process on an ephemeral port; returns its base URL.
pub async fn serve(settings: Settings) -> (String, AppState) {
    Application::build(settings).await.unwrap().spawn()
}

/// keydesk in-process until `stop`: for restart tests.
pub struct Stoppable {
    pub base: String,
    pub state: AppState,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<Result<(), String>>,
}

impl Stoppable {
    pub async fn start(settings: Settings) -> Self {
        let app = Application::build(settings).await.unwrap();
        let (base, state) = (app.base_url(), app.state().clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            base,
            state,
            stop,
            done,
        }
    }

    /// Stops gracefully and waits until the server has closed its database.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.done.await.unwrap().unwrap();
    }
}

/// Settings for a demo-identity keydesk (no SSO header needed, e.g. a browser).
pub fn demo_settings(upstream: &str, who: &str, access: Access) -> Settings {
    Settings {
        auth: AuthMode::Demo(who.into()),
        access,
        cookie_secure: false,
        upstream: ClientOptions {
            timeout: Duration::from_secs(2),
            ..Default::default()
        },
        page_size: 10,
        ..Settings::new(upstream, SecretString::from(ROOT_KEY.to_string()))
    }
}

/// The real binary, `keydesk serve`, with `env` on top of a working base
/// configuration. Returns the child, its base URL and its log lines (JSON).
pub async fn spawn_binary(
    env: &[(&str, String)],
) -> (
    tokio::process::Child,
    String,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    spawn_command("serve", env).await
}

/// Starts `cmd` with its stderr drained line by line into the receiver (so
/// keydesk never blocks on a full pipe); killed when dropped.
pub fn start_logged(
    mut cmd: tokio::process::Command,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let _ = tx.send(l);
        }
    });
    (child, rx)
}

/// The real binary running `command` (`serve`, `demo`), as `spawn_binary`.
pub async fn spawn_command(
    command: &str,
    env: &[(&str, String)],
) -> (
    tokio::process::Child,
    String,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    spawn_args(&[command], env).await
}

/// `spawn_command` with arguments after the subcommand (`demo --as X`).
pub async fn spawn_args(
    args: &[&str],
    env: &[(&str, String)],
) -> (
    tokio::process::Child,
    String,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    spawn_program(env!("CARGO_BIN_EXE_keydesk"), args, env).await
}

/// `spawn_args` for any keydesk binary at `program` (e.g. the previous
/// release, in tests/rolling.rs). A keydesk that exits before serving fails
/// the test with what it logged.
pub async fn spawn_program(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    env: &[(&str, String)],
) -> (
    tokio::process::Child,
    String,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let mut cmd = tokio::process::Command::new(program);
    // None of the test tooling's variables (KEYDESK_PREVIOUS_BIN…): only these.
    without_inherited_keydesk_variables(cmd.as_std_mut());
    cmd.args(args)
        .env("VULTR_API_KEY", ROOT_KEY)
        .env("KEYDESK_LISTEN", "127.0.0.1:0")
        .env("KEYDESK_COOKIE_SECURE", "false")
        .env("KEYDESK_OPERATORS", STAFF)
        // Never the working directory's default file; tests pass their own.
        .env("KEYDESK_AUDIT_DB", "sqlite::memory:")
        .env("KEYDESK_LOG_FORMAT", "json");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (child, mut rx) = start_logged(cmd);
    let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let base = tokio::time::timeout(Duration::from_secs(20), async {
        let mut said = Vec::new();
        loop {
            let Some(line) = rx.recv().await else {
                panic!("keydesk exited before serving:\n{}", said.join("\n"));
            };
            said.push(line.clone());
            let _ = out_tx.send(line.clone());
            if line.contains("keydesk serving") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                return format!("http://{}", v["fields"]["listen"].as_str().unwrap());
            }
        }
    })
    .await
    .expect("keydesk started");
    tokio::spawn(async move {
        while let Some(l) = rx.recv().await {
            let _ = out_tx.send(l);
        }
    });
    (child, base, out_rx)
}

/// The value of the first `form_token` hidden input in a page.
pub fn hidden_token(body: &str) -> String {
    let marker = r#"name="form_token" value=""#;
    let start = body.find(marker).expect("page has a form token") + marker.len();
    let end = body[start..].find('"').unwrap() + start;
    body[start..end].to_string()
}

/// The text inside `<textarea id="new-api-key" ...>…</textarea>`, if any.
pub fn revealed_key(body: &str) -> Option<String> {
    let start = body.find(r#"id="new-api-key""#)?;
    let open = body[start..].find('>')? + start + 1;
    let close = body[open..].find('<')? + open;
    Some(body[open..close].trim().to_string())
}

/// `YYYY-MM-DD`, `days` from today (UTC).
pub fn date_in(days: i64) -> String {
    (time::OffsetDateTime::now_utc().date() + time::Duration::days(days)).to_string()
}

/// A GET written byte for byte on a TCP socket, so the path is not normalised.
pub async fn raw_get(base: &str, path: &str, identity: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-Forwarded-Email: {identity}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// POSTs `form` as `c` (its identity and cookies) to `url`.
pub async fn post_as(
    c: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    form: &[(&str, &str)],
) -> reqwest::Response {
    c.post(url).form(form).send().await.unwrap()
}

/// The status of a GET of `url` as `c`.
pub async fn status_as(c: &reqwest::Client, url: impl reqwest::IntoUrl) -> reqwest::StatusCode {
    c.get(url).send().await.unwrap().status()
}

/// Stops a `spawn_binary` keydesk with SIGTERM (it must exit within 10 s)
/// and returns everything it logged.
pub async fn stop_and_drain(
    mut child: tokio::process::Child,
    mut logs: tokio::sync::mpsc::UnboundedReceiver<String>,
) -> (std::process::ExitStatus, String) {
    let pid = child.id().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("keydesk stops within 10 s of SIGTERM")
        .unwrap();
    let mut out = String::new();
    while let Some(line) = logs.recv().await {
        out.push_str(&line);
        out.push('\n');
    }
    (status, out)
}

/// Every file of `dir`, as lossy text (to search a database for a leak).
pub fn files_text(dir: &std::path::Path) -> String {
    let mut files = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        files.push_str(&String::from_utf8_lossy(&bytes));
    }
    files
}

/// The request id in a 202 page's link.
pub fn request_of(page: &str) -> String {
    let marker = "href=\"/approvals/";
    let s = page.find(marker).expect("link to the request") + marker.len();
    page[s..s + 32].to_string()
}

/// `who` opens the request and presses `step` (approve, deny, execute).
pub async fn press(
    app: &TestApp,
    who: &reqwest::Client,
    id: &str,
    step: &str,
) -> reqwest::Response {
    let page = get_text(who, app.url(&format!("/approvals/{id}"))).await;
    let form = format!("action=\"/approvals/{id}/{step}\"");
    let at = page
        .find(&form)
        .unwrap_or_else(|| panic!("no {step} form: {page}"));
    let token = hidden_token(&page[at..]);
    post_as(
        who,
        app.url(&format!("/approvals/{id}/{step}")),
        &[("form_token", token.as_str()), ("comment", "ok by me")],
    )
    .await
}

pub const BOSS: &str = "boss@example.com";

/// STAFF asks; BOSS approves; OTHER is an operator but no approver. STAFF
/// is an approver too, to show nobody approves their own request.
pub fn approval_options(rules: &[&str], ttl: Duration) -> Options {
    Options {
        access: Access::new(&[VIEWER.into()], &[STAFF.into(), OTHER.into(), BOSS.into()]),
        approval: ApprovalPolicy {
            rules: rules
                .iter()
                .map(|r| r.parse::<ApprovalRule>().unwrap())
                .collect(),
            ttl,
        },
        approvers: vec![STAFF.into(), BOSS.into()],
        ..Default::default()
    }
}

/// Runs `keydesk serve` with `set` and without `unset`; it must refuse to
/// start. Returns what it said.
pub fn serve_refuses(set: &[(&str, &str)], unset: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keydesk"));
    // Never a fixed port: a refusal after binding must not meet a busy 8080.
    // Only the variables given: none of the test tooling's (KEYDESK_PREVIOUS_BIN…).
    without_inherited_keydesk_variables(&mut cmd);
    cmd.arg("serve").env("KEYDESK_LISTEN", "127.0.0.1:0");
    for (k, v) in set {
        cmd.env(k, v);
    }
    for k in unset {
        cmd.env_remove(k);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "keydesk started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Removes every `KEYDESK_*` variable the test process inherited (the
/// tooling's: `KEYDESK_PREVIOUS_BIN`, `KEYDESK_WRITE_DOCS`, …) from `cmd`: a
/// child keydesk sees only what its test gives it.
pub fn without_inherited_keydesk_variables(cmd: &mut std::process::Command) {
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("KEYDESK_")) {
        cmd.env_remove(k);
    }
}

/// Makes the audit table of `db` refuse every new entry, as a full disk or a
/// revoked grant would (SQLite).
pub async fn refuse_audit_inserts(db: &keydesk::db::Db) {
    keydesk::on_pool!(write, db, |p| {
        sqlx::query(
        "CREATE TRIGGER refuse_intents BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    .execute(p)
    .await
    .map(|_| ())
    .unwrap()
    });
}

/// The sum of the Prometheus samples of `name` whose line contains `label`.
pub fn metric_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How many upkeep passes this process has counted so far (installs the
/// process-global recorder if needed): take it before starting an app.
pub fn upkeep_passes() -> f64 {
    keydesk::metrics::install().map_or(0.0, |h| {
        metric_sum(&h.render(), "keydesk_upkeep_passes_total", "")
    })
}

/// `/metrics` of `app` once its upkeep's first pass (which writes, at
/// start; the next is a minute away) is counted beyond `passes_before`:
/// what later query counts are measured from.
pub async fn metrics_after_first_upkeep(app: &TestApp, passes_before: f64) -> String {
    let passes = |text: &str| metric_sum(text, "keydesk_upkeep_passes_total", "");
    let mut before = app.get("/metrics").await.1;
    within("the first upkeep pass", async {
        while passes(&before) <= passes_before {
            tokio::time::sleep(Duration::from_millis(20)).await;
            before = app.get("/metrics").await.1;
        }
    })
    .await;
    before
}

/// A fake with one user (`leaver@example.com`) holding `keys` keys.
pub fn leaver(keys: usize) -> (FakeVultr, String, Vec<String>) {
    let fake = FakeVultr::new(ROOT_KEY);
    let id = fake.add_user(keydesk::vultr::User {
        id: "5eed00000000a".into(),
        first_name: Some("Lee".into()),
        last_name: Some("Ver".into()),
        email: Some("leaver@example.com".into()),
        api_enabled: Some(true),
        ..Default::default()
    });
    let ids = (0..keys)
        .map(|i| fake.add_key(&id, &format!("key-{i}"), Some(time::Duration::days(30))))
        .collect();
    (fake, id, ids)
}
