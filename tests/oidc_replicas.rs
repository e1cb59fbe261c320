//! An OpenID sign-in lives in the shared session store: it survives a
//! keydesk restart (SQLite and PostgreSQL) and is seen by every replica on
//! PostgreSQL; a sign-out on one replica ends it on all.

#![allow(clippy::unwrap_used)]

mod common;

use common::oidc::{self, OPS, Op, free_port, location, to_callback};
use common::*;
use keydesk::fake_vultr::FakeVultr;

/// The status of `path` for `browser` at `base`: 200 when signed in, 302
/// (to the provider) when not.
async fn status_at(browser: &reqwest::Client, base: &str, path: &str) -> u16 {
    browser
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Signs `browser` in as `account` at the keydesk at `base`.
async fn sign_in_at(browser: &reqwest::Client, base: &str, account: &str) {
    let first = browser.get(format!("{base}/users")).send().await.unwrap();
    assert_eq!(first.status(), 302);
    let callback = to_callback(browser, &location(&first), account).await;
    let back = browser.get(&callback).send().await.unwrap();
    assert_eq!(back.status(), 303);
}

/// Signed in before a restart, still signed in after it, on the database at `url`.
async fn a_restart_keeps_the_sign_in(url: &str) {
    let port = free_port();
    let Some(op) = Op::start(&[port]).await else {
        return;
    };
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let opts = Options {
        audit_db: url.to_string(),
        ..oidc::options(oidc::settings(&op.issuer, port))
    };
    let settings = || {
        let mut s = opts.settings(&upstream);
        s.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        s
    };
    let browser = client(None);
    let first = Stoppable::start(settings()).await;
    sign_in_at(&browser, &first.base, "ops").await;
    assert_eq!(status_at(&browser, &first.base, "/users").await, 200);
    first.stop().await;

    let second = Stoppable::start(settings()).await;
    let page = browser
        .get(format!("{}/users", second.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "still signed in after the restart");
    assert!(page.text().await.unwrap().contains(OPS));
    second.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_the_sign_in_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("keydesk-oidc-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    a_restart_keeps_the_sign_in(&format!("sqlite://{}", dir.join("k.db").display())).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_restart_keeps_the_sign_in_on_postgres() {
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    a_restart_keeps_the_sign_in(&url).await;
}

#[tokio::test]
async fn two_replicas_on_postgres_share_one_sign_in() {
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    let (pa, pb) = (free_port(), free_port());
    let Some(op) = Op::start(&[pa, pb]).await else {
        return;
    };
    let fake = FakeVultr::seeded(ROOT_KEY);
    let on = |port: u16| Options {
        audit_db: url.clone(),
        ..oidc::options(oidc::settings(&op.issuer, port))
    };
    let a = oidc::serve_on(&fake, pa, &on(pa)).await;
    let b = oidc::serve_on(&fake, pb, &on(pb)).await;
    // One browser (cookies are per host, not per port) signs in on A…
    let browser = client(None);
    sign_in_at(&browser, &a.base, "ops").await;
    // …and B knows who it is, and takes a form A rendered.
    let page = browser.get(b.url("/users")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(OPS));
    let ada = a.user_id(oidc::ADA);
    let token = hidden_token(&get_text(&browser, a.url(&format!("/users/{ada}"))).await);
    let made = browser
        .post(b.url(&format!("/users/{ada}/keys")))
        .form(&[("form_token", token.as_str()), ("name", "from-b")])
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 200);
    assert_eq!(fake.count("POST", "/v2/users"), 1);

    // A sign-out on B ends the session on A as well.
    let text = get_text(&browser, b.url("/users")).await;
    let marker = r#"name="sign_out_token" value=""#;
    let at = text.find(marker).unwrap() + marker.len();
    let token = &text[at..at + text[at..].find('"').unwrap()];
    let out = browser
        .post(b.url("/auth/logout"))
        .form(&[("sign_out_token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(status_at(&browser, &a.base, "/users").await, 302);
    assert_eq!(status_at(&browser, &b.base, "/users").await, 302);
    let signins = a.audit_count("access.signin").await;
    let signouts = b.audit_count("access.signout").await;
    assert_eq!((signins, signouts), (1, 1));
}
