//! A page view costs the database no write: counted by
//! `keydesk_db_queries_total`, not timed. The Prometheus recorder is
//! process-global, so this file holds a single test: nothing else in this
//! test binary moves the counters it reads.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use keydesk::fake_vultr::FakeVultr;

fn metric(text: &str, kind: &str) -> f64 {
    let label = format!("kind=\"{kind}\"");
    text.lines()
        .filter(|l| l.starts_with("keydesk_db_queries_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Read and write queries since `before`, as /metrics tells.
async fn queries_since(app: &TestApp, before: &str) -> (f64, f64) {
    let (status, now) = app.get("/metrics").await;
    assert_eq!(status, 200);
    (
        metric(&now, "read") - metric(before, "read"),
        metric(&now, "write") - metric(before, "write"),
    )
}

#[tokio::test]
async fn a_page_view_writes_nothing_and_a_submit_writes_its_claim() {
    let dir = std::env::temp_dir().join(format!("keydesk-dbq-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    // SQLite with the cache off: a view that calls Vultr twice writes nothing.
    // PostgreSQL as deployed beside other replicas: the rate budget is
    // shared through the database.
    let mut engines = vec![Options::on(&format!(
        "sqlite://{}",
        dir.join("k.db").display()
    ))];
    match common::pg::fresh_database().await {
        // On PostgreSQL the upstream calls draw on the rate budget that
        // replicas share, leased in batches: one UPDATE takes a batch of
        // slots, which later calls spend without writing. With the cache on,
        // as deployed, the user is read once; the key list is never cached,
        // so each view makes exactly one upstream call.
        Some(url) => engines.push(Options {
            // 1 call a second with a burst of 30: every leased slot is
            // usable at once and slot j stays valid until j + 0.5 s, so
            // which view takes a lease follows from the count of calls.
            upstream: keydesk::vultr::ClientOptions {
                cache_ttl: std::time::Duration::from_secs(300),
                rps: 1,
                burst: 30,
                ..Options::default().upstream
            },
            ..Options::on(&url)
        }),
        None => common::pg::skip_line("the PostgreSQL half of the page-view write count"),
    }
    for opts in engines {
        let url = opts.audit_db.clone();
        let upkeeps = upkeep_passes();
        let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
        let id = app.user_id("ada@example.com");
        // The first visit creates the browser session: that write is allowed.
        let first = app.get(&format!("/users/{id}")).await;
        assert_eq!(first.0, 200, "{url}");
        // The upkeep's first pass (it writes) runs at start; the next is a
        // minute away. Measure after it.
        let before = metrics_after_first_upkeep(&app, upkeeps).await;
        assert!(
            metric(&before, "read") > 0.0,
            "{url}: no read counted: {before}"
        );

        let postgres = url.starts_with("postgres");
        let view = || async {
            let (status, body) = app.get(&format!("/users/{id}")).await;
            assert_eq!(status, 200);
            let _ = hidden_token(&body);
        };
        if postgres {
            // The first visit's three calls (user, keys, allowlist) and the
            // first of these views spend the first lease (4 slots); the
            // second view leases 8 (the first was spent in full), which the
            // rest of these and the five views measured below spend.
            for _ in 0..4 {
                view().await;
            }
            let (_, writes) = queries_since(&app, &before).await;
            assert_eq!(writes, 1.0, "{url}: 4 calls, one lease of 8 taken");
        }
        let before = app.get("/metrics").await.1;
        let calls_before = app.fake.requests().len();
        for _ in 0..5 {
            view().await;
        }
        let (reads, writes) = queries_since(&app, &before).await;
        let calls = (app.fake.requests().len() - calls_before) as f64;
        assert_eq!(
            writes, 0.0,
            "{url}: 5 user-page views wrote {writes} times ({calls} upstream calls)"
        );
        if postgres {
            assert_eq!(calls, 5.0, "{url}: one key list per view, the user cached");
            let leases = metric_sum(
                &app.get("/metrics").await.1,
                "keydesk_budget_leases_total",
                "",
            );
            assert_eq!(leases, 2.0, "{url}: 11 calls, 2 leases (4 then 8 slots)");
        }
        // The session, the page's own reads (one transaction) and no more.
        assert!(
            (5.0..=10.0).contains(&reads),
            "{url}: 5 views made {reads} read queries"
        );

        // A submit claims its token: one write at least, and it acts once.
        let before = app.get("/metrics").await.1;
        let token = hidden_token(&app.get(&format!("/users/{id}")).await.1);
        let made = app
            .create_key_with(&id, &token, &[("name", "counted")])
            .await;
        assert_eq!(made.status(), 200);
        let (_, writes) = queries_since(&app, &before).await;
        assert!(writes >= 2.0, "{url}: claim and audit were {writes} writes");
        let again = app
            .create_key_with(&id, &token, &[("name", "counted")])
            .await;
        assert_eq!(again.status(), 409, "{url}: the same form twice");
        assert_eq!(app.fake.count("POST", "/v2/users/"), 1, "{url}");
    }
}
