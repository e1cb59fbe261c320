//! Upstream resilience and observability: a fault matrix over the list, user
//! and create pages; retries only where allowed; the cache and single-flight;
//! the rate limiter against the fake's own 30/s limit; a bounded load test;
//! metrics that move.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use keydesk::fake_vultr::{FakeVultr, Fault};
use keydesk::vultr::ClientOptions;

fn opts(timeout_ms: u64) -> Options {
    Options {
        upstream: ClientOptions {
            timeout: Duration::from_millis(timeout_ms),
            rps: 25,
            cache_ttl: Duration::ZERO,
            max_retries: 3,
            backoff_base: Duration::from_millis(10),
            burst: 4,
            shared_budget: None,
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn fault_matrix_for_list_user_and_create() {
    // (fault, expected status, words, GET attempts per GET call)
    let rows: Vec<(&str, Fault, u16, &str, usize)> = vec![
        ("500", Fault::Status(500), 502, "Vultr is having trouble", 1),
        ("503", Fault::Status(503), 502, "Vultr is having trouble", 4),
        (
            "429 with Retry-After",
            Fault::RateLimited(0),
            503,
            "rate limiting",
            4,
        ),
        ("malformed JSON", Fault::Malformed, 502, "could not read", 1),
        (
            "20 MiB body",
            Fault::Huge(20 * 1024 * 1024),
            502,
            "could not read",
            1,
        ),
        (
            "stall",
            Fault::Stall(Duration::from_secs(30)),
            504,
            "did not answer in time",
            1,
        ),
    ];
    for (name, fault, status, words, attempts) in rows {
        let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts(800)).await;
        let id = app.user_id("ada@example.com");
        let token = app.form_token(&id).await;
        app.fake.clear_log();
        app.fake.set_fault(Some(fault.clone()));

        let (s, body) = app.get("/users").await;
        assert_eq!(s, status, "{name}: list");
        assert!(body.contains(words), "{name}: list says {words}");
        assert!(body.contains(r#"id="request-id""#), "{name}");
        assert_eq!(
            app.fake.count("GET", "/v2/users"),
            attempts,
            "{name}: list attempts"
        );

        app.fake.clear_log();
        let (s, _) = app.get(&format!("/users/{id}")).await;
        assert_eq!(s, status, "{name}: user page");

        // The create POST alone suffers the fault: it is never retried.
        app.fake.set_fault_on("POST", fault.clone());
        app.fake.clear_log();
        let r = app.create_key_with(&id, &token, &[("name", "f")]).await;
        let (cs, body) = (r.status().as_u16(), r.text().await.unwrap());
        assert_eq!(app.fake.count("POST", "/v2/users"), 1, "{name}: one POST");
        assert!(revealed_key(&body).is_none());
        if name == "stall" {
            assert_eq!(cs, 504);
            assert!(body.contains("Outcome unknown"), "{body}");
            assert!(
                body.contains(&format!(r#"id="error-link" href="/users/{id}#keys""#)),
                "links to the key list"
            );
        } else {
            assert!(cs >= 500, "{name}: create answered {cs}");
        }
        // Only Vultr's limiter (before anything was done) gives the form
        // back; every other fault may have made the key, so it is spent.
        let refused = name.starts_with("429");
        let again = app.create_key_with(&id, &token, &[("name", "f")]).await;
        assert_eq!(
            again.status() == 409,
            !refused,
            "{name}: the form spent: {}",
            again.status()
        );
        let f = keydesk::audit::Filter {
            action: Some("key.create".into()),
            ..Default::default()
        };
        let first = app.state.audit.list(&f, 10, 0).await.unwrap();
        let first = first.last().unwrap();
        let want = if refused { "failed" } else { "unknown" };
        assert_eq!(first.outcome, want, "{name}: the audit says {want}");

        // Healthy afterwards.
        app.fake.set_fault(None);
        assert_eq!(app.get("/users").await.0, 200, "{name}: recovers");
        assert_eq!(app.get("/healthz").await.0, 200);
    }
}

#[tokio::test]
async fn an_unknown_create_outcome_spends_the_form() {
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts(500)).await;
    let id = app.user_id("ada@example.com");
    let token = app.form_token(&id).await;
    app.fake
        .set_fault_on("POST", Fault::Stall(Duration::from_secs(5)));
    let form = [("form_token", token.as_str()), ("name", "maybe")];
    let r = app.post_form(&format!("/users/{id}/keys"), &form).await;
    assert_eq!(r.status(), 504);
    app.fake.set_fault(None);
    let again = app.post_form(&format!("/users/{id}/keys"), &form).await;
    assert_eq!(
        again.status(),
        409,
        "a resubmission never creates a second key"
    );
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);
    let (_, audit) = app.get("/audit?outcome=unknown").await;
    assert!(
        audit.contains("maybe"),
        "the unknown outcome is in the audit"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_not_retried_forever() {
    // Reserved but not listening: connections are refused.
    let (_reserved, port) = refusing_port();
    let client = keydesk::vultr::VultrClient::with_options(
        &format!("http://127.0.0.1:{port}"),
        secrecy::SecretString::from("k".to_string()),
        opts(500).upstream,
    )
    .unwrap();
    // A deadline that says what hung, not a timing target.
    let err = within_secs(30, "giving up on an unreachable upstream", async {
        client.list_users(10, None).await.unwrap_err()
    })
    .await;
    assert!(matches!(err, keydesk::vultr::VultrError::Unreachable(_)));
}

#[tokio::test]
async fn the_cache_serves_repeat_views_and_writes_invalidate_it() {
    let mut o = opts(2000);
    o.upstream.cache_ttl = Duration::from_secs(60);
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), o).await;
    let id = app.user_id("ada@example.com");
    app.fake.clear_log();
    for _ in 0..3 {
        assert_eq!(app.get("/users").await.0, 200);
        assert_eq!(app.get(&format!("/users/{id}")).await.0, 200);
    }
    assert_eq!(
        app.fake.count("GET", "/v2/users"),
        1 + 1 + 1 + 3,
        "list once, user once, allowlist once, keys each time"
    );
    // The refresh control goes to Vultr again.
    app.fake.clear_log();
    app.get("/users?refresh=1").await;
    assert_eq!(app.fake.count("GET", "/v2/users"), 1);
    // A write to the user invalidates its cached details.
    let token = app.form_token(&id).await;
    app.create_key_with(&id, &token, &[("name", "c")]).await;
    app.fake.clear_log();
    app.get(&format!("/users/{id}")).await;
    assert_eq!(
        app.fake.count("GET", &format!("/v2/users/{id}")),
        2,
        "user refetched after the write (the reveal already read the allowlist again), keys as always"
    );
}

#[tokio::test]
async fn concurrent_identical_gets_share_one_upstream_request() {
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts(5000)).await;
    app.fake.clear_log();
    // The first list request is held at Vultr until all ten page requests
    // are inside keydesk's single flight: one fetching, nine waiting.
    app.fake.hold("GET", "/v2/users");
    let mut handles = Vec::new();
    for _ in 0..10 {
        let c = app.client.clone();
        let url = app.url("/users");
        handles.push(tokio::spawn(async move {
            c.get(url).send().await.unwrap().status()
        }));
    }
    wait_until("ten GETs in single flight", || {
        app.state.vultr.gets_in_flight() == 10 && app.fake.held() == 1
    })
    .await;
    app.fake.release();
    for h in handles {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(app.fake.count("GET", "/v2/users"), 1);
}

#[tokio::test]
async fn the_rate_limiter_keeps_keydesk_under_vultrs_limit() {
    let fake = FakeVultr::with_users(ROOT_KEY, 60);
    fake.set_rate_limit(Some(30));
    let client = keydesk::vultr::VultrClient::with_options(
        &fake.spawn().await.unwrap(),
        secrecy::SecretString::from(ROOT_KEY.to_string()),
        ClientOptions {
            cache_ttl: Duration::ZERO,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let users = fake.users();
    let started = std::time::Instant::now();
    let mut handles = Vec::new();
    for u in users {
        let c = client.clone();
        handles.push(tokio::spawn(async move {
            c.list_keys(&keydesk::ids::VultrId::parse(&u.id).unwrap())
                .await
                .is_ok()
        }));
    }
    for h in handles {
        assert!(h.await.unwrap());
    }
    assert_eq!(
        fake.rate_limited_count(),
        0,
        "Vultr's limiter never answered 429"
    );
    // 60 calls at 25/s with a burst of 4 take at least (60-4)/25 s.
    assert!(started.elapsed() >= Duration::from_millis(2000));
}

#[tokio::test]
async fn two_hundred_concurrent_clients_get_no_5xx() {
    let mut o = opts(5000);
    o.upstream.cache_ttl = Duration::from_secs(10);
    o.upstream.rps = 25;
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), o).await;
    // Clients first: building 200 TLS-capable clients takes a while in debug.
    let clients: Vec<_> = (0..200).map(|_| client(Some(STAFF))).collect();
    // Each client asks three times: a correctness check (no 5xx, nothing
    // lost), not a throughput figure; that is in BENCHMARKS.md.
    let mut handles = Vec::new();
    for c in clients {
        let url = app.url("/users");
        handles.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..3 {
                statuses.push(c.get(&url).send().await.map(|r| r.status().as_u16()));
            }
            statuses
        }));
    }
    let all = within_secs(120, "200 clients × 3 requests", async {
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        all
    })
    .await;
    let bad: Vec<_> = all.iter().filter(|s| !matches!(s, Ok(200))).collect();
    assert!(bad.is_empty(), "{} of {}: {bad:?}", bad.len(), all.len());
    assert_eq!(all.len(), 600);
}

/// Issue: a broken upstream answer was cached as if it were good. After every
/// fault mode, with the cache on, the first request after recovery is a 200.
#[tokio::test]
async fn the_first_request_after_any_fault_is_served_fresh_with_the_cache_on() {
    let modes: Vec<(&str, Fault)> = vec![
        ("truncated 200", Fault::Truncated),
        ("malformed 200", Fault::Malformed),
        ("non-JSON 200", Fault::NotJson),
        ("oversized body", Fault::Huge(9 * 1024 * 1024)),
        ("500", Fault::Status(500)),
        ("503", Fault::Status(503)),
        ("429", Fault::RateLimited(0)),
        ("stall", Fault::Stall(Duration::from_secs(5))),
        ("connection dropped", Fault::Reset),
    ];
    for (name, fault) in modes {
        let mut o = opts(600);
        o.upstream.cache_ttl = Duration::from_secs(300);
        o.upstream.max_retries = 1;
        let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), o).await;
        let id = app.user_id("ada@example.com");
        let user = format!("/users/{id}");
        app.fake.set_fault(Some(fault));
        for path in ["/users", user.as_str()] {
            let (status, _) = app.get(path).await;
            assert!(
                status >= 500,
                "{name}: {path} fails while Vultr does ({status})"
            );
        }
        app.fake.set_fault(None);
        for path in ["/users", user.as_str()] {
            let (status, body) = app.get(path).await;
            assert_eq!(status, 200, "{name}: {path} after recovery: {body}");
        }
    }
}
