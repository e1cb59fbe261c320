//! In OpenID mode too, a signed-in page view costs the database no write:
//! the session is read (one query) and the last activity is written at most
//! every twelfth of the idle timeout. Counted by `keydesk_db_queries_total`
//! (process-global, so this file holds a single test), not timed.

#![allow(clippy::unwrap_used)]

mod common;

use common::oidc::{self, sign_in};
use common::*;
use keydesk::fake_vultr::FakeVultr;

#[tokio::test]
async fn a_signed_in_page_view_writes_nothing() {
    let port = oidc::free_port();
    let Some(op) = oidc::Op::start(&[port]).await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "keydesk-oidc-dbq-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let upkeeps = upkeep_passes();
    let opts = Options {
        audit_db: format!("sqlite://{}", dir.join("k.db").display()),
        ..oidc::options(oidc::settings(&op.issuer, port))
    };
    let app = oidc::serve_on(&FakeVultr::seeded(ROOT_KEY), port, &opts).await;
    assert_eq!(sign_in(&app, "/users", "ops").await.status(), 303);
    let id = app.user_id(oidc::ADA);
    // The first page with a form binds it to the session (a write); then
    // wait for the upkeep's first pass, which writes, before measuring.
    assert_eq!(app.get(&format!("/users/{id}")).await.0, 200);
    let before = metrics_after_first_upkeep(&app, upkeeps).await;
    for _ in 0..5 {
        let (status, body) = app.get(&format!("/users/{id}")).await;
        assert_eq!(status, 200, "still signed in");
        assert!(body.contains(oidc::OPS));
    }
    let now = app.get("/metrics").await.1;
    let q = |text: &str, kind: &str| {
        metric_sum(
            text,
            "keydesk_db_queries_total",
            &format!("kind=\"{kind}\""),
        )
    };
    let (reads, writes) = (
        q(&now, "read") - q(&before, "read"),
        q(&now, "write") - q(&before, "write"),
    );
    assert_eq!(writes, 0.0, "5 signed-in page views wrote {writes} times");
    assert!(
        (5.0..=10.0).contains(&reads),
        "5 views made {reads} read queries"
    );
    let _ = std::fs::remove_dir_all(dir);
}
