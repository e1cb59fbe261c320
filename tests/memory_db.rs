//! The in-memory database (the demo's, and the tests' default) outlives any
//! one connection: requests dropped mid-query leave it intact.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

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
    keydesk::idempotency::FormTokens::new(db)
        .issue("a@x", keydesk::idempotency::Scope::ReportScan, None)
        .await
        .unwrap();
}
