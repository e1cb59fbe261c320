//! The in-memory database (the demo's, and the tests' default) outlives any
//! one connection: requests dropped mid-query leave it intact.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use keydesk::audit::{AuditStore, Filter};
use keydesk::db::Db;

#[tokio::test]
async fn queries_dropped_mid_flight_never_lose_the_in_memory_database() {
    let db = Db::open("sqlite::memory:").await.unwrap();
    let audit = AuditStore::new(db.clone(), keydesk::audit::PENDING_BOUND).await;
    let mut dropped = 0;
    for i in 0..400u64 {
        // Cut a read short at every stage, as a browser navigating away does.
        let cut = Duration::from_micros(i % 40 * 5);
        if tokio::time::timeout(cut, audit.list(&Filter::default(), 50, 0))
            .await
            .is_err()
        {
            dropped += 1;
        }
    }
    assert!(
        dropped > 0,
        "no query was cut short: the test proves nothing"
    );
    // Still the same database, with its tables.
    audit.list(&Filter::default(), 1, 0).await.unwrap();
    use keydesk::idempotency::{Claim, FormTokens, Scope};
    let tokens = FormTokens::with_db_keys(db).await.unwrap();
    let t = tokens.issue("a@x", Scope::ReportScan, None);
    let claim = tokens.claim(&t, "a@x", Scope::ReportScan, None).await;
    assert_eq!(claim.unwrap(), Claim::Claimed);
}

#[tokio::test]
async fn the_demo_survives_forty_requests_dropped_mid_flight() {
    let (child, base, _logs) = common::spawn_command("demo", &[]).await;
    let c = common::client(None);
    let users = common::get_text(&c, format!("{base}/users")).await;
    let start = users.find("href=\"/users/").unwrap() + 6;
    let user = &users[start..start + users[start..].find('"').unwrap()];
    let url = format!("{base}{user}");
    for i in 0..40u64 {
        // A browser navigating away: the request is dropped mid-flight.
        let _ = c
            .get(&url)
            .timeout(Duration::from_millis(1 + i % 8))
            .send()
            .await;
    }
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    drop(child);
}
