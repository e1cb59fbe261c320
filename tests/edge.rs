//! Facing the internet: anonymous requests and the `/auth/*` sign-in steps
//! within a per-client-address quota (429 with `Retry-After`, nothing
//! written), `X-Forwarded-For` believed only from trusted proxies, and the
//! probes and metrics on `KEYDESK_ADMIN_LISTEN` alone.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use common::oidc::{self, location};
use common::rogue_op::{Forge, Rogue};
use common::*;
use keydesk::client_quota::ClientRate;
use keydesk::fake_vultr::FakeVultr;

/// A tight quota: five at once, then one a minute (no refill within a test).
const TIGHT: ClientRate = ClientRate {
    per_minute: 1,
    burst: 5,
};

/// keydesk in OpenID mode against an honest rogue provider, with `anon`.
async fn oidc_app(anon: ClientRate) -> (Rogue, TestApp) {
    let rogue = Rogue::start(oidc::CLIENT_ID).await;
    rogue.forge(Forge::Honest);
    let port = oidc::free_port();
    let opts = oidc::options(oidc::settings(rogue.issuer(), port));
    let fake = FakeVultr::seeded(ROOT_KEY);
    let url = fake.spawn().await.unwrap();
    let mut settings = opts.settings(&url);
    settings.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    settings.anon = anon;
    let (base, state) = serve(settings).await;
    (rogue, TestApp::assemble(base, fake, client(None), state))
}

/// Rows in `audit` and `sessions`: what an anonymous request could write.
async fn rows(app: &TestApp) -> (i64, i64) {
    let keydesk::db::Db::Sqlite(pool) = &app.state.db else {
        panic!("these tests use SQLite");
    };
    let count = |sql: &'static str| async move {
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.unwrap();
        n
    };
    (
        count("SELECT COUNT(*) FROM audit").await,
        count("SELECT COUNT(*) FROM sessions").await,
    )
}

/// Sends `paths` one after another with `c`: how many were refused with a
/// 429; each refusal must carry `Retry-After` and leave both tables as
/// they were.
async fn refusals_write_nothing(app: &TestApp, c: &reqwest::Client, paths: &[String]) -> usize {
    let mut refused = 0;
    for path in paths {
        let before = rows(app).await;
        let r = c.get(app.url(path)).send().await.unwrap();
        if r.status() == 429 {
            let wait: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(wait >= 1, "Retry-After {wait}");
            assert_eq!(rows(app).await, before, "a 429 on {path} wrote a row");
            refused += 1;
        }
    }
    refused
}

/// A browser-like client that keeps no cookie and follows no redirect.
fn cookieless() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The attack from one address: 300 × `/auth/login` and 200
/// anonymous page hits, then 500 × `/auth/callback?junk=N`. Past the burst
/// every answer is a 429 that writes nothing; someone signed in from the
/// same address meanwhile browses on, never held to that quota.
#[tokio::test]
async fn an_anonymous_flood_from_one_address_is_refused_and_writes_nothing() {
    let (_rogue, app) = oidc_app(TIGHT).await;
    // Ops signs in first (two of the address's five).
    let first = app.response("/users").await;
    assert_eq!(first.status(), 302);
    let back = app.client.get(location(&first)).send().await.unwrap();
    let signed_in = app.client.get(location(&back)).send().await.unwrap();
    assert_eq!(signed_in.status(), 303);

    let paths: Vec<String> = (0..500)
        .map(|i| {
            if i % 5 < 3 {
                "/auth/login".to_string()
            } else {
                format!("/users?page={i}")
            }
        })
        .collect();
    let refused = refusals_write_nothing(&app, &cookieless(), &paths).await;
    assert!(refused >= 500 - 4, "only {refused} of 500 refused");
    let junk: Vec<String> = (0..500)
        .map(|n| format!("/auth/callback?junk={n}"))
        .collect();
    assert_eq!(
        refusals_write_nothing(&app, &cookieless(), &junk).await,
        500
    );
    let text = keydesk::metrics::install().unwrap().render();
    assert!(
        metric_sum(
            &text,
            "keydesk_client_limited_total",
            "route_class=\"auth\""
        ) >= 300.0 - 4.0 + 500.0,
        "{text}"
    );
    for i in 0..40 {
        let (status, _) = app.get(&format!("/users?page={}", i % 3 + 1)).await;
        assert_eq!(status, 200, "signed-in page view {i}");
    }
}

/// A session cookie that names nobody does not buy a way round the quota:
/// the gate counts it once the session is read, before anything is written.
#[tokio::test]
async fn an_invented_session_cookie_is_counted_as_anonymous() {
    use base64::Engine;
    let (_rogue, app) = oidc_app(TIGHT).await;
    let mut refused = 0;
    for i in 0..60 {
        let before = rows(&app).await;
        // A new, well-formed session id each time, as an attacker would send.
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(uuid::Uuid::new_v4().as_bytes());
        let r = cookieless()
            .get(app.url(&format!("/users?page={i}")))
            .header("cookie", format!("keydesk_session={id}"))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            assert_eq!(rows(&app).await, before, "a 429 wrote a row");
            refused += 1;
        }
    }
    assert!(refused >= 60 - 6, "only {refused} of 60 refused");
}

/// Header mode behind a proxy at 127.0.0.1 (trusted): the client address is
/// the right-most `X-Forwarded-For` entry, so two clients have two quotas.
#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_quota() {
    let app = header_app(&["127.0.0.1/32"]).await;
    let stranger = client(None);
    let as_from = |xff: &'static str| {
        let r = stranger
            .get(app.url("/users"))
            .header("x-forwarded-for", xff);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    for _ in 0..TIGHT.burst {
        assert_eq!(as_from("198.51.100.1, 203.0.113.1").await, 401);
    }
    assert_eq!(as_from("198.51.100.1, 203.0.113.1").await, 429);
    // What the client put on the left is not who it is.
    assert_eq!(as_from("198.51.100.9, 203.0.113.1").await, 429);
    // Another client behind the same proxy.
    assert_eq!(as_from("203.0.113.2").await, 401);
    // Staff through the proxy are signed in: never counted.
    let (status, _) = app.get("/users").await;
    assert_eq!(status, 200);
}

/// A peer that is not a trusted proxy cannot pick its address: rotating
/// `X-Forwarded-For` does not escape its quota.
#[tokio::test]
async fn an_untrusted_peer_cannot_rotate_forwarded_for_to_escape() {
    let app = header_app(&["10.0.0.0/8"]).await;
    let stranger = client(None);
    let mut statuses = vec![];
    for i in 0..(TIGHT.burst + 3) {
        let r = stranger
            .get(app.url("/users"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
}

/// keydesk in header mode whose trusted proxies are `trusted`, with `TIGHT`.
async fn header_app(trusted: &[&'static str]) -> TestApp {
    let opts = Options {
        trusted: trusted.to_vec(),
        ..Default::default()
    };
    let fake = FakeVultr::seeded(ROOT_KEY);
    let url = fake.spawn().await.unwrap();
    let mut settings = opts.settings(&url);
    settings.trusted_proxies = trusted.iter().map(|c| c.parse().unwrap()).collect();
    settings.anon = TIGHT;
    let (base, state) = serve(settings).await;
    TestApp::assemble(base, fake, client(Some(STAFF)), state)
}

/// The real binary: `KEYDESK_ANON_*` set the quota, `KEYDESK_ADMIN_LISTEN`
/// moves the probes and metrics to their own address (the public one
/// answers 404 for them), and `keydesk healthcheck` finds it there.
#[tokio::test]
async fn the_admin_address_serves_the_probes_and_the_healthcheck_finds_it() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let (_child, base, mut logs) = spawn_binary(&[
        ("KEYDESK_VULTR_API_URL", upstream),
        ("KEYDESK_ADMIN_LISTEN", "127.0.0.1:0".into()),
        ("KEYDESK_ANON_PER_MINUTE", "1".into()),
        ("KEYDESK_ANON_BURST", "2".into()),
    ])
    .await;
    let mut admin = None;
    while let Ok(line) = logs.try_recv() {
        if line.contains("keydesk serving") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            admin = v["fields"]["admin_listen"].as_str().map(str::to_string);
        }
        assert!(!line.contains("is not a keydesk variable"), "{line}");
    }
    let admin = format!("http://{}", admin.expect("the admin address is logged"));
    let c = client(None);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let public = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(public.status(), 404, "public {path}");
        let inside = c.get(format!("{admin}{path}")).send().await.unwrap();
        assert_eq!(inside.status(), 200, "admin {path}");
    }
    // The admin address serves nothing else.
    let users = client(Some(STAFF));
    assert_eq!(status_as(&users, format!("{admin}/users")).await, 404);
    assert_eq!(status_as(&users, format!("{base}/users")).await, 200);
    // The probes are never counted; pages without an identity are: a
    // burst of two, then a 429.
    let mut statuses = vec![];
    for _ in 0..3 {
        let r = c.get(format!("{base}/users")).send().await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(statuses, [401, 401, 429]);

    let port = admin.rsplit(':').next().unwrap();
    let healthcheck = |env: Vec<(&'static str, String)>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keydesk"));
        cmd.arg("healthcheck").env_remove("KEYDESK_HEALTHCHECK_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let ok = healthcheck(vec![("KEYDESK_ADMIN_LISTEN", format!("0.0.0.0:{port}"))]);
    assert!(ok.status.success(), "{ok:?}");
    // Told the public address, the probe finds no /healthz there.
    let public = healthcheck(vec![
        ("KEYDESK_ADMIN_LISTEN", format!("0.0.0.0:{port}")),
        ("KEYDESK_HEALTHCHECK_URL", format!("{base}/healthz")),
    ]);
    assert!(!public.status.success(), "{public:?}");
}
