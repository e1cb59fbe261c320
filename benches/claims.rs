//! Form-token claims per second: `cargo bench --bench claims`.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

mod support;
use support::{postgres_database, sqlite_database};

const WHO: &str = "bench@example.com";

/// Form-token claims per second: 2 replicas (two pools) on PostgreSQL,
/// beside one SQLite file.
async fn bench_claims() {
    use keydesk::idempotency::{FormTokens, Scope};
    println!("\n## Form-token claims (issue + claim + complete), 32 concurrent");
    println!("| store | claims | time | claims/s |");
    println!("|---|---|---|---|");
    let mut stores = vec![("SQLite file, 1 process", sqlite_database("claims"), 1)];
    if let Some(url) = postgres_database().await {
        stores.push(("PostgreSQL, 2 replicas", url, 2));
    }
    for (label, url, replicas) in stores {
        let mut pools = Vec::new();
        for _ in 0..replicas {
            let db = keydesk::db::Db::open(&url).await.unwrap();
            pools.push(FormTokens::with_db_keys(db).await.unwrap());
        }
        let n = 4000usize;
        let mut tokens = Vec::new();
        for i in 0..n {
            tokens.push(pools[i % replicas].issue(WHO, Scope::ReportScan, None));
        }
        let started = Instant::now();
        let tokens = std::sync::Arc::new(tokens);
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..32 {
            let (t, tokens) = (pools[w % replicas].clone(), tokens.clone());
            tasks.spawn(async move {
                for tok in tokens.iter().skip(w).step_by(32) {
                    let c = t.claim(tok, WHO, Scope::ReportScan, None).await.unwrap();
                    assert_eq!(c, keydesk::idempotency::Claim::Claimed);
                    t.complete(tok, None).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let took = started.elapsed().as_secs_f64();
        println!("| {label} | {n} | {took:.2} s | {:.0} |", n as f64 / took);
    }
}

#[tokio::main]
async fn main() {
    bench_claims().await;
}
