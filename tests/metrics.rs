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
    // Seconds, not milliseconds: 8 upstream calls at 2/s wait a few seconds.
    let waited = delta("keydesk_ratelimit_wait_seconds_total", "");
    assert!((1.0..20.0).contains(&waited), "waited {waited} s");
    assert!(!after.contains(ROOT_KEY));
}
