//! keydesk benchmarks: each figure is measured side by side with its baseline
//! in the same run, against the in-process fake Vultr API.
//!
//!   cargo bench --bench keydesk                # everything (the scan takes ~50 s)
//!   cargo bench --bench keydesk -- latency     # one scenario: latency, throughput, memory, startup, scan
//!
//! Loopback only, bounded in time and count.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use keydesk::Application;
use keydesk::fake_vultr::FakeVultr;
use keydesk::identity::Access;
use keydesk::state::Settings;
use keydesk::vultr::ClientOptions;
use secrecy::SecretString;

const ROOT: &str = "BENCHROOTKEY0000000000000000000000000";
const WHO: &str = "bench@example.com";

fn http() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-forwarded-email", WHO.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(h)
        .pool_max_idle_per_host(512)
        .build()
        .unwrap()
}

async fn keydesk_on(fake_url: &str, cache_ttl: Duration, rps: u32) -> String {
    let settings = Settings {
        access: Access::new(&[], &[WHO.into()]),
        cookie_secure: false,
        upstream: ClientOptions {
            rps,
            cache_ttl,
            ..ClientOptions::default()
        },
        page_size: 100,
        ..Settings::new(fake_url, SecretString::from(ROOT.to_string()))
    };
    Application::build(settings).await.unwrap().spawn().0
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `n` requests at `concurrency`, worker `i` fetching `urls[i % len]`;
/// sorted latencies.
async fn latencies(
    c: &reqwest::Client,
    urls: &[String],
    auth: Option<&str>,
    n: usize,
    concurrency: usize,
) -> Vec<Duration> {
    let per = n / concurrency;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let c = c.clone();
        let url = urls[i % urls.len()].clone();
        let auth = auth.map(str::to_string);
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                let mut req = c.get(&url);
                if let Some(a) = &auth {
                    req = req.bearer_auth(a);
                }
                let r = req.send().await.unwrap();
                assert!(r.status().is_success(), "{url}: {}", r.status());
                r.bytes().await.unwrap();
                out.push(t.elapsed());
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    all.sort();
    all
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn bench_latency() {
    println!(
        "\n## Added latency of GET /users/{{id}} (cache off, fake latency 20 ms, each worker on its own user)"
    );
    let fake = FakeVultr::with_users(ROOT, 32);
    fake.set_latency(Duration::from_millis(20));
    let fake_url = fake.spawn().await.unwrap();
    // A limiter far above the load, so the figure is keydesk's own overhead.
    let kd = keydesk_on(&fake_url, Duration::ZERO, 100_000).await;
    // Distinct users per worker: no two concurrent requests can share an upstream call.
    let ids: Vec<String> = fake.users().into_iter().map(|u| u.id).collect();
    let kd_urls: Vec<String> = ids.iter().map(|id| format!("{kd}/users/{id}")).collect();
    let fake_urls: Vec<String> = ids
        .iter()
        .map(|id| format!("{fake_url}/v2/users/{id}"))
        .collect();
    let c = http();
    // Warm up connections and caches of the OS.
    latencies(&c, &kd_urls, None, 64, 32).await;
    println!(
        "| concurrency | baseline: fake GET /v2/users/{{id}} p50 / p99 | keydesk GET /users/{{id}} p50 / p99 | added p50 / p99 |"
    );
    println!("|---|---|---|---|");
    for conc in [1usize, 32] {
        let n = if conc == 1 { 200 } else { 1600 };
        let base = latencies(&c, &fake_urls, Some(ROOT), n, conc).await;
        let kdl = latencies(&c, &kd_urls, None, n, conc).await;
        let (b50, b99, k50, k99) = (
            pct(&base, 0.5),
            pct(&base, 0.99),
            pct(&kdl, 0.5),
            pct(&kdl, 0.99),
        );
        println!(
            "| {conc} | {} / {} | {} / {} | {} / {} |",
            ms(b50),
            ms(b99),
            ms(k50),
            ms(k99),
            ms(k50.saturating_sub(b50)),
            ms(k99.saturating_sub(b99))
        );
    }
}

async fn rate(
    c: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
    secs: u64,
    concurrency: usize,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let c = c.clone();
        let url = url.to_string();
        let auth = auth.map(str::to_string);
        tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let mut req = c.get(&url);
                if let Some(a) = &auth {
                    req = req.bearer_auth(a);
                }
                let r = req.send().await.unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap();
                n += 1;
            }
            n
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap();
    }
    total as f64 / secs as f64
}

async fn bench_throughput() {
    println!("\n## Throughput of GET /users (100 users), 16 concurrent clients, 5 s each");
    let fake = FakeVultr::with_users(ROOT, 100);
    let fake_url = fake.spawn().await.unwrap();
    let c = http();
    let direct = rate(
        &c,
        &format!("{fake_url}/v2/users?per_page=100"),
        Some(ROOT),
        5,
        16,
    )
    .await;
    let kd_off = keydesk_on(&fake_url, Duration::ZERO, 100_000).await;
    let off = rate(&c, &format!("{kd_off}/users"), None, 5, 16).await;
    // Upstream-bound: what keydesk could serve if every page cost one upstream call at Vultr's 25/s.
    let kd_on = keydesk_on(&fake_url, Duration::from_secs(10), 25).await;
    let on = rate(&c, &format!("{kd_on}/users"), None, 5, 16).await;
    println!("| what | req/s | ratio |");
    println!("|---|---|---|");
    println!("| baseline: fake /v2/users JSON, same client | {direct:.0} | 1.00 |");
    println!(
        "| keydesk /users, cache off | {off:.0} | {:.2} of baseline |",
        off / direct
    );
    println!(
        "| keydesk /users, cache on (10 s), limiter 25/s | {on:.0} | {:.0}x the upstream-bound 25/s |",
        on / 25.0
    );
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn spawn_demo() -> (tokio::process::Child, String, Instant) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keydesk"))
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .env("KEYDESK_CACHE_TTL", "10")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://127.0.0.1:{port}"), started)
}

async fn bench_startup() {
    println!("\n## Process start to /readyz ready (keydesk demo, release binary), 5 runs");
    let c = reqwest::Client::new();
    let mut times = Vec::new();
    for _ in 0..5 {
        let (mut child, base, started) = spawn_demo().await;
        loop {
            if let Ok(r) = c.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert!(started.elapsed() < Duration::from_secs(10));
        }
        times.push(started.elapsed());
        child.kill().await.unwrap();
    }
    times.sort();
    println!(
        "| median | max |\n|---|---|\n| {} | {} |",
        ms(pct(&times, 0.5)),
        ms(times[times.len() - 1])
    );
}

async fn bench_memory() {
    println!("\n## Resident memory (keydesk demo, release binary)");
    let (mut child, base, _) = spawn_demo().await;
    let pid = child.id().unwrap();
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .unwrap();
    while c.get(format!("{base}/healthz")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.get(format!("{base}/users")).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle, _) = rss_kib(pid);
    // 200 concurrent connections for 5 s.
    let clients: Vec<_> = (0..200)
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut tasks = tokio::task::JoinSet::new();
    for cl in clients {
        let url = format!("{base}/users");
        tasks.spawn(async move {
            let mut n = 0u32;
            while Instant::now() < deadline {
                if let Ok(r) = cl.get(&url).send().await {
                    let _ = r.bytes().await;
                    n += 1;
                }
            }
            n
        });
    }
    let mut peak_seen = 0;
    while Instant::now() < deadline {
        peak_seen = peak_seen.max(rss_kib(pid).0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut reqs = 0;
    while let Some(n) = tasks.join_next().await {
        reqs += n.unwrap();
    }
    let (_, hwm) = rss_kib(pid);
    println!("| idle RSS | RSS under 200 connections (max sampled / VmHWM) | requests served |");
    println!("|---|---|---|");
    println!(
        "| {:.1} MiB | {:.1} MiB / {:.1} MiB | {reqs} |",
        idle as f64 / 1024.0,
        peak_seen as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    child.kill().await.unwrap();
}

async fn bench_scan() {
    println!("\n## Expiring-keys scan: 1,200 users, fake latency 100 ms, fake enforces 30 req/s");
    let fake = FakeVultr::with_users(ROOT, 1200);
    fake.set_latency(Duration::from_millis(100));
    fake.set_rate_limit(Some(30));
    let fake_url = fake.spawn().await.unwrap();
    let client = keydesk::vultr::VultrClient::with_options(
        &fake_url,
        SecretString::from(ROOT.to_string()),
        ClientOptions::default(),
    )
    .unwrap();
    let db = keydesk::db::Db::open("sqlite::memory:").await.unwrap();
    let audit = keydesk::audit::AuditStore::new(db.clone(), keydesk::audit::PENDING_BOUND).await;
    let reports = std::sync::Arc::new(keydesk::report::Reports::new(db));
    let started = Instant::now();
    assert!(reports.start(client, audit, WHO).await.unwrap());
    reports.wait_idle().await;
    let took = started.elapsed();
    let snap = reports.snapshot().await.unwrap();
    let r = snap.last.expect("scan finished");
    let floor = 1200.0 / 25.0;
    println!(
        "| users | keys | scan time | rate-limit floor | over the floor | 429s from the fake |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.1} s | {floor:.0} s | {:+.1} % | {} |",
        r.users,
        r.rows.len(),
        took.as_secs_f64(),
        (took.as_secs_f64() / floor - 1.0) * 100.0,
        fake.rate_limited_count()
    );
}

#[tokio::main]
async fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    println!(
        "keydesk bench on {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::ARCH
    );
    if run("latency") {
        bench_latency().await;
    }
    if run("throughput") {
        bench_throughput().await;
    }
    if run("startup") {
        bench_startup().await;
    }
    if run("memory") {
        bench_memory().await;
    }
    if run("scan") {
        bench_scan().await;
    }
}
