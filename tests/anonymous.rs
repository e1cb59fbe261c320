//! Facing the internet in OpenID mode (issue 33 §1 and §4): anonymous
//! traffic writes nothing to any table on either engine (a started sign-in
//! lives in an encrypted cookie, an unknown callback is counted, never
//! audited), and a sign-out is final even for a request already in flight.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::oidc::{self, location};
use common::rogue_op::{Forge, Rogue};
use common::*;
use keydesk::db::Db;
use keydesk::fake_vultr::FakeVultr;

/// keydesk in OpenID mode on the database at `url` (SQLite when `None`),
/// signing in through the in-crate provider.
async fn oidc_app(url: Option<String>) -> (Rogue, TestApp) {
    let rogue = Rogue::start(oidc::CLIENT_ID).await;
    rogue.forge(Forge::Honest);
    let port = oidc::free_port();
    let mut opts = oidc::options(oidc::settings(rogue.issuer(), port));
    if let Some(url) = url {
        opts.audit_db = url;
    }
    // Every request must reach the handlers.
    let app = oidc::serve_unlimited(&FakeVultr::seeded(ROOT_KEY), port, &opts).await;
    (rogue, app)
}

/// A sign-in started by a stranger: its cookie (as sent back) and `state`.
async fn started_by_a_stranger(app: &TestApp) -> (String, String) {
    let r = client(None)
        .get(app.url("/auth/login?next=/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("keydesk_signin="))
        .unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let state = reqwest::Url::parse(&location(&r))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    (cookie, state)
}

/// Every table's row count.
async fn rows(db: &Db) -> BTreeMap<String, i64> {
    let tables: Vec<String> = match db {
        Db::Sqlite(p) => sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(p)
        .await
        .unwrap(),
        Db::Postgres(p) => sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
        )
        .fetch_all(p)
        .await
        .unwrap(),
    };
    let mut counts = BTreeMap::new();
    for t in tables {
        // Names from the catalogue, not from input.
        let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM \"{t}\""));
        let n: i64 = match db {
            Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
            Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        };
        counts.insert(t, n);
    }
    assert!(counts.contains_key("audit") && counts.contains_key("sessions"));
    counts
}

/// 600 requests nobody signed in for: junk callbacks, sign-in starts (with
/// and without the cookie they set), replays of a started sign-in's cookie
/// with a provider error or a junk code, junk sign-in and session cookies,
/// page hits and forms. Each is refused or sent to the provider; no table
/// gains or loses a row.
async fn anonymous_traffic_writes_nothing(url: Option<String>) {
    let (_rogue, app) = oidc_app(url).await;
    // A first visit, so the app's own start-up writes are behind us.
    assert_eq!(app.response("/healthz").await.status(), 200);
    let before = rows(&app.state.db).await;
    let refusals = |text: &str| {
        metric_sum(
            text,
            "keydesk_signin_refusals_total",
            "reason=\"not_started\"",
        )
    };
    let refused_before = refusals(&app.get("/metrics").await.1);
    let stranger = client(None);
    let keeper = app.client.clone();
    let (started, state) = started_by_a_stranger(&app).await;
    let mut answers = BTreeMap::<u16, usize>::new();
    for n in 0..60 {
        let replay = |query: String| {
            stranger
                .get(app.url(&format!("/auth/callback?{query}")))
                .header("cookie", started.as_str())
        };
        let batch = vec![
            stranger.get(app.url(&format!("/auth/callback?junk={n}"))),
            stranger.get(app.url(&format!("/auth/callback?code=c{n}&state=made-up-{n}&iss=x"))),
            stranger.get(app.url("/auth/login?next=/users")),
            keeper.get(app.url(&format!("/auth/login?next=/users/{n}"))),
            keeper.get(app.url(&format!("/users?page={n}"))),
            stranger
                .post(app.url("/users/abc/keys"))
                .form(&[("form_token", "x"), ("name", "evil")]),
            replay(format!("state={state}&error=access_denied&n={n}")),
            replay(format!("state={state}&code=junk-{n}")),
            stranger
                .get(app.url("/users"))
                .header("cookie", format!("keydesk_signin=junk{n}")),
            stranger.get(app.url("/users")).header(
                "cookie",
                format!("keydesk_session={}", uuid::Uuid::new_v4().simple()),
            ),
        ];
        for req in batch {
            let status = req.send().await.unwrap().status().as_u16();
            *answers.entry(status).or_default() += 1;
        }
    }
    assert_eq!(answers.values().sum::<usize>(), 600);
    assert!(
        answers.keys().all(|s| [302, 401, 403].contains(s)),
        "{answers:?}"
    );
    assert_eq!(rows(&app.state.db).await, before, "answers: {answers:?}");
    assert!(oidc::writes(&app.fake).is_empty());
    // The refusals are counted, not written: 120 callbacks nobody started
    // (metrics are per process, and other tests here sign in too).
    let refused = refusals(&app.get("/metrics").await.1) - refused_before;
    assert!(refused >= 120.0, "refused {refused}");
}

#[tokio::test]
async fn anonymous_traffic_writes_nothing_on_sqlite() {
    anonymous_traffic_writes_nothing(None).await;
}

#[tokio::test]
async fn anonymous_traffic_writes_nothing_on_postgres() {
    let Some(url) = common::pg::fresh_database().await else {
        common::pg::skip_line("anonymous traffic on PostgreSQL");
        return;
    };
    anonymous_traffic_writes_nothing(Some(url)).await;
}

/// Signs `app.client` in through the in-crate provider.
async fn sign_in(app: &TestApp) {
    let first = app.response("/users").await;
    assert_eq!(first.status(), 302);
    let set = first
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert!(
        set.iter().any(|c| c.starts_with("keydesk_signin=")),
        "{set:?}"
    );
    let back = app.client.get(location(&first)).send().await.unwrap();
    let done = app.client.get(location(&back)).send().await.unwrap();
    assert_eq!(done.status(), 303);
}

/// The sign-out form's token on `body`.
fn sign_out_token(body: &str) -> String {
    let marker = r#"name="sign_out_token" value=""#;
    let start = body.find(marker).expect("a sign-out form") + marker.len();
    let end = body[start..].find('"').unwrap() + start;
    body[start..end].to_string()
}

/// A revocation held at Vultr while its person signs out: when it finishes,
/// its session is not written back, and the copied cookie is signed out.
async fn a_sign_out_is_final(url: Option<String>) {
    let (_rogue, app) = oidc_app(url).await;
    let sessions = || async {
        let c = rows(&app.state.db).await;
        c["sessions"]
    };
    // Nothing stored until someone signs in.
    assert_eq!(app.response("/users").await.status(), 302);
    assert_eq!(sessions().await, 0);
    sign_in(&app).await;
    assert_eq!(sessions().await, 1);
    let cookie: String = match &app.state.db {
        Db::Sqlite(p) => sqlx::query_scalar("SELECT id FROM sessions")
            .fetch_one(p)
            .await
            .unwrap(),
        Db::Postgres(p) => sqlx::query_scalar("SELECT id FROM sessions")
            .fetch_one(p)
            .await
            .unwrap(),
    };
    let copied = |path: &str| {
        client(None)
            .get(app.url(path))
            .header("cookie", format!("keydesk_session={cookie}"))
            .send()
    };
    let (status, page) = app.get("/users").await;
    assert_eq!(status, 200);
    assert_eq!(copied("/users").await.unwrap().status(), 200);

    let user = app.fake.users()[0].id.clone();
    let key = app.fake.add_key(&user, "leaky", None);
    let path = format!("/users/{user}/keys/{key}/delete");
    let token = app.token_of(&path).await;
    app.fake.hold("DELETE", "/v2/users/");
    let revoking = {
        let app_client = app.client.clone();
        let url = app.url(&path);
        tokio::spawn(async move {
            app_client
                .post(url)
                .form(&[("form_token", token.as_str()), CONFIRMED])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    wait_until("the revocation reaches Vultr", || app.fake.held() == 1).await;
    let out = app
        .client
        .post(app.url("/auth/logout"))
        .form(&[("sign_out_token", sign_out_token(&page))])
        .send()
        .await
        .unwrap();
    assert!(out.status().is_redirection(), "{}", out.status());
    assert_eq!(sessions().await, 0);
    app.fake.release();
    assert_eq!(within("the revocation", revoking).await.unwrap(), 303);
    assert!(app.fake.keys_of(&user).iter().all(|k| k.id != key));
    // The finished request wrote nothing back: the copied cookie is anonymous.
    assert_eq!(sessions().await, 0);
    let again = copied("/users").await.unwrap();
    assert_eq!(again.status(), 302, "signed out for good");
}

#[tokio::test]
async fn a_sign_out_is_final_across_a_request_in_flight_on_sqlite() {
    a_sign_out_is_final(None).await;
}

#[tokio::test]
async fn a_sign_out_is_final_across_a_request_in_flight_on_postgres() {
    let Some(url) = common::pg::fresh_database().await else {
        common::pg::skip_line("sign-out on PostgreSQL");
        return;
    };
    a_sign_out_is_final(Some(url)).await;
}

/// Behind a load balancer: a sign-in started on one replica finishes on the
/// other (the cookie's key comes from the form keys both read from the
/// shared database), and both then know the person.
#[tokio::test]
async fn a_sign_in_started_on_one_replica_finishes_on_the_other() {
    let Some(url) = common::pg::fresh_database().await else {
        common::pg::skip_line("a sign-in across replicas on PostgreSQL");
        return;
    };
    let (rogue, first) = oidc_app(Some(url.clone())).await;
    let mut opts = oidc::options(oidc::settings(rogue.issuer(), oidc::free_port()));
    opts.audit_db = url;
    // The second replica answers at its own port, for the same public URL.
    let public = first.base.clone();
    let mut settings = opts.settings(&first.fake.spawn().await.unwrap());
    if let keydesk::identity::AuthMode::Oidc(o) = &settings.auth {
        let mut s = o.settings.clone();
        s.public_url = public;
        settings.auth = keydesk::identity::AuthMode::Oidc(std::sync::Arc::new(
            keydesk::oidc::Oidc::new(s).unwrap(),
        ));
    }
    let (second_base, _state) = serve(settings).await;
    let browser = &first.client;
    let start = browser.get(first.url("/users")).send().await.unwrap();
    assert_eq!(start.status(), 302);
    let back = browser.get(location(&start)).send().await.unwrap();
    let callback = location(&back);
    assert!(callback.starts_with(&first.base), "{callback}");
    let elsewhere = callback.replacen(&first.base, &second_base, 1);
    let done = browser.get(&elsewhere).send().await.unwrap();
    assert_eq!(done.status(), 303, "the other replica opens the cookie");
    for base in [&second_base, &first.base] {
        let page = browser.get(format!("{base}/users")).send().await.unwrap();
        assert_eq!(page.status(), 200, "{base}");
    }
    assert_eq!(rows(&first.state.db).await["sessions"], 1);
}
