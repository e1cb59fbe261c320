//! Metrics move by exactly what a request did. The Prometheus recorder is
//! process-global, so this file holds a single test: nothing else in this
//! test binary moves the counters it reads.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use keydesk::fake_vultr::{FakeVultr, Fault};
use keydesk::vultr::ClientOptions;

/// The sum of the samples of `name` whose labels contain `label_part`.
fn metric(text: &str, name: &str, label_part: &str) -> f64 {
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(label_part))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_move_by_exactly_what_was_done() {
    let opts = Options {
        upstream: ClientOptions {
            timeout: Duration::from_secs(5),
            rps: 2,
            cache_ttl: Duration::ZERO,
            max_retries: 3,
            backoff_base: Duration::from_millis(10),
            burst: 4,
            shared_budget: None,
        },
        ..Default::default()
    };
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let id = app.user_id("ada@example.com");
    let before = app.get("/metrics").await.1;

    // One user page (2 upstream GETs), one create (GET user + POST), then a
    // users list against a 503: 1 try + 3 retries. 2 requests a second with a
    // burst of 2 makes the limiter wait about 3.5 s in all.
    let token = app.form_token(&id).await;
    assert_eq!(
        app.create_key_with(&id, &token, &[("name", "m")])
            .await
            .status(),
        200
    );
    app.fake.set_fault(Some(Fault::Status(503)));
    assert_eq!(app.get("/users").await.0, 502);
    app.fake.set_fault(None);

    let (status, after) = app.get("/metrics").await;
    assert_eq!(status, 200);
    let delta =
        |name: &str, label: &str| metric(&after, name, label) - metric(&before, name, label);
    assert_eq!(delta("keydesk_keys_created_total", ""), 1.0);
    assert_eq!(delta("keydesk_upstream_retries_total", ""), 3.0);
    assert_eq!(
        delta("keydesk_http_requests_total", "route=\"/users/{id}/keys\""),
        1.0
    );
    assert_eq!(
        delta(
            "keydesk_upstream_requests_total",
            "endpoint=\"POST /v2/users/{id}/apikeys\""
        ),
        1.0
    );
    assert_eq!(
        delta(
            "keydesk_upstream_requests_total",
            "endpoint=\"GET /v2/users\",status=\"503\""
        ),
        4.0
    );
    // Seconds, not milliseconds: 8 upstream calls at 2/s wait a second or
    // more (a lower bound: the limiter worked; how long is a bench figure).
    let waited = delta("keydesk_ratelimit_wait_seconds_total", "");
    assert!(waited >= 1.0, "waited {waited} s");
    assert!(!after.contains(ROOT_KEY));

    notices_and_audit_failures_count_exactly().await;
}

/// A notice pass counts each notice once per channel and outcome; an audit
/// intent that cannot be written counts one failure.
async fn notices_and_audit_failures_count_exactly() {
    use common::sinks::WebhookSink;
    use keydesk::notify::{NotifyConfig, Trigger};
    use secrecy::SecretString;

    let webhook = WebhookSink::start().await;
    let fake = FakeVultr::new(ROOT_KEY);
    let ada = fake.add_user(keydesk::vultr::User {
        id: "a0000000000a1".into(),
        email: Some("ada@example.com".into()),
        api_enabled: Some(true),
        ..Default::default()
    });
    fake.add_key(&ada, "soon", Some(time::Duration::days(3)));
    fake.add_key(&ada, "sooner", Some(time::Duration::hours(20)));
    fake.add_key(&ada, "later", Some(time::Duration::days(90)));
    let dir =
        std::env::temp_dir().join(format!("keydesk-metrics-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("k.db").display());
    let opts = Options {
        notify: NotifyConfig {
            webhook: Some(SecretString::from(webhook.url.clone())),
            ..Default::default()
        },
        ..Options::on(&url)
    };
    let app = TestApp::spawn_with(fake, opts).await;
    let pass = || async {
        let s = &app.state;
        let now = time::OffsetDateTime::now_utc();
        s.notifier
            .run(&s.vultr, &s.audit, Trigger::Command, now)
            .await
    };
    let sent = "channel=\"webhook\",outcome=\"sent\"";
    let failed = "channel=\"webhook\",outcome=\"failed\"";
    let before = app.get("/metrics").await.1;
    pass().await.unwrap();
    let after = app.get("/metrics").await.1;
    let delta =
        |name: &str, label: &str| metric(&after, name, label) - metric(&before, name, label);
    assert_eq!(delta("keydesk_notices_total", sent), 2.0, "soon and sooner");
    assert_eq!(delta("keydesk_notices_total", failed), 0.0);
    assert_eq!(webhook.posts().len(), 1);

    // The receiver fails: the next key due counts as failed, once.
    webhook.set_failing(true);
    app.fake
        .add_key(&ada, "tomorrow", Some(time::Duration::hours(30)));
    let before = app.get("/metrics").await.1;
    let _ = pass().await;
    let after = app.get("/metrics").await.1;
    let delta =
        |name: &str, label: &str| metric(&after, name, label) - metric(&before, name, label);
    assert_eq!(delta("keydesk_notices_total", failed), 1.0);
    assert_eq!(delta("keydesk_notices_total", sent), 0.0);

    // An audit that refuses new entries: one create refused, one failure.
    refuse_audit_inserts(&app.state.db).await;
    let token = app.form_token(&ada).await;
    let before = app.get("/metrics").await.1;
    let r = app.create_key_with(&ada, &token, &[("name", "x")]).await;
    assert_eq!(r.status(), 503);
    let after = app.get("/metrics").await.1;
    let failures = metric(&after, "keydesk_audit_write_failures_total", "")
        - metric(&before, "keydesk_audit_write_failures_total", "");
    assert_eq!(failures, 1.0, "one refused intent");
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
    let _ = std::fs::remove_dir_all(dir);
}
