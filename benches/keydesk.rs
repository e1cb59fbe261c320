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

mod support;
use support::{postgres_database, sqlite_database};

const ROOT: &str = "BENCHROOTKEY0000000000000000000000000";
const WHO: &str = "bench@example.com";

/// A client signed in as `WHO` through the proxy header, keeping cookies
/// (a browser with its session) or not, with up to `idle` pooled connections.
fn staff(keeps_cookies: bool, idle: usize) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-forwarded-email", WHO.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(h)
        .cookie_store(keeps_cookies)
        .pool_max_idle_per_host(idle)
        .build()
        .unwrap()
}

fn http() -> reqwest::Client {
    staff(false, 512)
}

/// `http()`, keeping cookies: a browser with its session.
fn browser() -> reqwest::Client {
    staff(true, 512)
}

/// A fake Vultr with `users` users and Vultr's 30/s limit off (keydesk's own
/// cost is measured above it), answering after `latency`; and its URL.
async fn unlimited_fake(users: usize, latency: Duration) -> (FakeVultr, String) {
    let fake = FakeVultr::with_users(ROOT, users);
    fake.set_rate_limit(None);
    fake.set_latency(latency);
    let fake_url = fake.spawn().await.unwrap();
    (fake, fake_url)
}

async fn keydesk_on(fake_url: &str, cache_ttl: Duration, rps: u32) -> String {
    keydesk_on_db(fake_url, cache_ttl, rps, "sqlite::memory:").await
}

async fn keydesk_on_db(fake_url: &str, cache_ttl: Duration, rps: u32, db: &str) -> String {
    let settings = Settings {
        database_url: db.to_string(),
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
                fetch(&c, &url, auth.as_deref()).await;
                out.push(t.elapsed());
            }
            out
        });
    }
    sorted(tasks).await
}

/// One GET of `url` (`auth` as the bearer), read to the end; it must succeed.
async fn fetch(c: &reqwest::Client, url: &str, auth: Option<&str>) {
    let mut req = c.get(url);
    if let Some(a) = auth {
        req = req.bearer_auth(a);
    }
    let r = req.send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.bytes().await.unwrap();
}

/// Every worker's latencies, together and sorted.
async fn sorted(mut tasks: tokio::task::JoinSet<Vec<Duration>>) -> Vec<Duration> {
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
        "\n## Added latency of GET /users/{{id}} (SQLite file, cache off, fake latency 20 ms, each worker on its own user, one browser keeping its session)"
    );
    let (fake, fake_url) = unlimited_fake(32, Duration::from_millis(20)).await;
    // A limiter far above the load, so the figure is keydesk's own overhead.
    // The store as deployed on one host: a SQLite file in WAL mode.
    let db = sqlite_database("latency");
    let kd = keydesk_on_db(&fake_url, Duration::ZERO, 100_000, &db).await;
    // Distinct users per worker: no two concurrent requests can share an upstream call.
    let ids: Vec<String> = fake.users().into_iter().map(|u| u.id).collect();
    let kd_urls: Vec<String> = ids.iter().map(|id| format!("{kd}/users/{id}")).collect();
    let fake_urls: Vec<String> = ids
        .iter()
        .map(|id| format!("{fake_url}/v2/users/{id}"))
        .collect();
    // A staff browser: it keeps its session cookie, as every real one does.
    let c = browser();
    // Warm up connections and caches of the OS.
    latencies(&c, &kd_urls, None, 64, 32).await;
    println!(
        "| concurrency | baseline: fake GET /v2/users/{{id}} p50 / p99 | keydesk GET /users/{{id}} p50 / p99 | added p50 / p99 |"
    );
    println!("|---|---|---|---|");
    let mut pairs = Vec::new();
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
        pairs.push((conc, n, k50, k99));
    }
    // The page needs the user and its keys: two upstream calls in parallel,
    // whose slower one it waits for. The same wait, without keydesk.
    println!(
        "\n## The same page beside its own upstream wait (the user and its keys fetched in parallel by the same client)"
    );
    println!(
        "| concurrency | upstream pair p50 / p99 | keydesk p50 / p99 | added over the pair p50 / p99 |"
    );
    println!("|---|---|---|---|");
    for (conc, n, k50, k99) in pairs {
        let pair = pair_latencies(&c, &fake_url, &ids, n, conc).await;
        let (p50, p99) = (pct(&pair, 0.5), pct(&pair, 0.99));
        println!(
            "| {conc} | {} / {} | {} / {} | {} / {} |",
            ms(p50),
            ms(p99),
            ms(k50),
            ms(k99),
            ms(k50.saturating_sub(p50)),
            ms(k99.saturating_sub(p99))
        );
    }
}

/// `latencies`, each request being the user and its keys fetched at once.
async fn pair_latencies(
    c: &reqwest::Client,
    fake_url: &str,
    ids: &[String],
    n: usize,
    concurrency: usize,
) -> Vec<Duration> {
    let per = n / concurrency;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let c = c.clone();
        let user = format!("{fake_url}/v2/users/{}", ids[i % ids.len()]);
        let keys = format!("{user}/apikeys");
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                tokio::join!(fetch(&c, &user, Some(ROOT)), fetch(&c, &keys, Some(ROOT)));
                out.push(t.elapsed());
            }
            out
        });
    }
    sorted(tasks).await
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
                fetch(&c, &url, auth.as_deref()).await;
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
    let (_fake, fake_url) = unlimited_fake(100, Duration::ZERO).await;
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

/// A fresh PostgreSQL database for the benches: `KEYDESK_BENCH_DATABASE_URL`
/// (an admin URL), else the tests' throwaway cluster if it runs. None: skip.
/// The release binary, `keydesk serve`, on `db` against the fake at `fake`.
async fn spawn_serve(fake: &str, db: &str) -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keydesk"))
        .arg("serve")
        .env("VULTR_API_KEY", ROOT)
        .env("KEYDESK_VULTR_API_URL", fake)
        .env("KEYDESK_LISTEN", "127.0.0.1:0")
        .env("KEYDESK_OPERATORS", WHO)
        .env("KEYDESK_COOKIE_SECURE", "false")
        .env("KEYDESK_DATABASE_URL", db)
        .env("KEYDESK_UPSTREAM_RPS", "30")
        .env("KEYDESK_LOG_FORMAT", "json")
        .env("RUST_LOG", "info,tower_http=warn,sqlx=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next_line().await.unwrap().expect("keydesk serving");
        if line.contains("keydesk serving") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break format!("http://{}", v["fields"]["listen"].as_str().unwrap());
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, base)
}

/// Soak: `cookieless` page requests from clients that keep no cookies (a
/// monitor, a script) beside `keeping` from clients that keep their session,
/// against the release binary; RSS and throughput sampled every second.
async fn soak(label: &str, db: &str, cookieless: u64, keeping: u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (fake, fake_url) = unlimited_fake(100, Duration::ZERO).await;
    let (mut child, base) = spawn_serve(&fake_url, db).await;
    let pid = child.id().unwrap();
    let ids: Vec<String> = fake.users().iter().map(|u| u.id.clone()).collect();
    let done = std::sync::Arc::new(AtomicU64::new(0));
    let left_cookieless = std::sync::Arc::new(AtomicU64::new(cookieless));
    let left_keeping = std::sync::Arc::new(AtomicU64::new(keeping));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..24 {
        let keeps = w < 4;
        let c = staff(keeps, 4);
        let (base, ids, done) = (base.clone(), ids.clone(), done.clone());
        let left = if keeps {
            left_keeping.clone()
        } else {
            left_cookieless.clone()
        };
        tasks.spawn(async move {
            let mut i = w;
            while left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                // A kept session is loaded on every page; one page in 50 has a
                // form (a token, and a Vultr call under the 30/s budget).
                let url = if keeps && i % 50 == w {
                    format!("{base}/users/{}", ids[i % ids.len()])
                } else {
                    format!("{base}/users")
                };
                let r = c.get(url).send().await.unwrap();
                assert!(r.status().is_success(), "{}", r.status());
                r.bytes().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        });
    }
    let total = cookieless + keeping;
    let started = Instant::now();
    let mut samples: Vec<(f64, u64, u64)> = Vec::new(); // (secs, done, rss KiB)
    while done.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push((
            started.elapsed().as_secs_f64(),
            done.load(Ordering::Relaxed),
            rss_kib(pid).0,
        ));
    }
    while tasks.join_next().await.is_some() {}
    let at = |frac: f64| {
        let want = (total as f64 * frac) as u64;
        *samples
            .iter()
            .find(|s| s.1 >= want)
            .unwrap_or(samples.last().unwrap())
    };
    let rate = |from: f64, to: f64| {
        let (a, b) = (at(from), at(to));
        (b.1 - a.1) as f64 / (b.0 - a.0).max(0.001)
    };
    let (start_rate, end_rate) = (rate(0.02, 0.12), rate(0.88, 0.98));
    let (rss_10, rss_50, rss_end) = (at(0.1).2, at(0.5).2, samples.last().unwrap().2);
    let (_, hwm) = rss_kib(pid);
    println!(
        "| {label} | {} | {:.0} s | {:.1} / {:.1} / {:.1} MiB (peak {:.1}) | {:+.2} MiB | {start_rate:.0} → {end_rate:.0} req/s ({:.0} %) |",
        total,
        started.elapsed().as_secs_f64(),
        rss_10 as f64 / 1024.0,
        rss_50 as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        hwm as f64 / 1024.0,
        (rss_end as f64 - rss_50 as f64) / 1024.0,
        end_rate / start_rate * 100.0
    );
    child.kill().await.unwrap();
}

async fn bench_soak() {
    let cookieless: u64 = std::env::var("SOAK_COOKIELESS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let keeping: u64 = std::env::var("SOAK_KEEPING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    println!(
        "\n## Soak: {cookieless} cookieless + {keeping} cookie-keeping page requests (release binary, 24 clients)"
    );
    println!(
        "| store | requests | time | RSS at 10 % / 50 % / end | growth, last half | throughput start → end |"
    );
    println!("|---|---|---|---|---|---|");
    soak("SQLite file", &sqlite_database("soak"), cookieless, keeping).await;
    match postgres_database().await {
        Some(url) => soak("PostgreSQL", &url, cookieless, keeping).await,
        None => {
            println!("| PostgreSQL | skipped: no server (set KEYDESK_BENCH_DATABASE_URL) | | | | |")
        }
    }
}

/// Added latency of `GET /users/{id}` per store, beside the direct upstream.
async fn bench_store_latency() {
    println!(
        "\n## GET /users/{{id}} per store (fake latency 20 ms, cache off, a cookie-keeping browser): p50 / p99"
    );
    let (fake, fake_url) = unlimited_fake(64, Duration::from_millis(20)).await;
    let ids: Vec<String> = fake.users().iter().map(|u| u.id.clone()).collect();
    // A staff browser keeps its session cookie.
    let c = staff(true, 64);
    let direct: Vec<String> = ids
        .iter()
        .map(|id| format!("{fake_url}/v2/users/{id}"))
        .collect();
    let mut stores = vec![
        ("SQLite in memory", "sqlite::memory:".to_string()),
        ("SQLite file (WAL)", sqlite_database("lat")),
    ];
    if let Some(url) = postgres_database().await {
        stores.push(("PostgreSQL (unix socket)", url));
    }
    println!("| store | c | upstream alone p50 / p99 | keydesk p50 / p99 | added p50 / p99 |");
    println!("|---|---|---|---|---|");
    for (label, db) in stores {
        let settings = Settings {
            access: Access::new(&[], &[WHO.into()]),
            cookie_secure: false,
            database_url: db,
            upstream: ClientOptions {
                rps: 100_000,
                cache_ttl: Duration::ZERO,
                ..ClientOptions::default()
            },
            ..Settings::new(&fake_url, SecretString::from(ROOT.to_string()))
        };
        let base = Application::build(settings).await.unwrap().spawn().0;
        let pages: Vec<String> = ids.iter().map(|id| format!("{base}/users/{id}")).collect();
        for conc in [1usize, 16] {
            let n = 400;
            let d = latencies(&c, &direct, Some(ROOT), n, conc).await;
            let k = latencies(&c, &pages, None, n, conc).await;
            let added = |p: f64| pct(&k, p).saturating_sub(pct(&d, p));
            println!(
                "| {label} | {conc} | {} / {} | {} / {} | **{} / {}** |",
                ms(pct(&d, 0.5)),
                ms(pct(&d, 0.99)),
                ms(pct(&k, 0.5)),
                ms(pct(&k, 0.99)),
                ms(added(0.5)),
                ms(added(0.99))
            );
        }
    }
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
    for name in [
        "latency",
        "throughput",
        "startup",
        "memory",
        "scan",
        "store",
        "soak",
    ] {
        if !run(name) {
            continue;
        }
        match name {
            "latency" => bench_latency().await,
            "throughput" => bench_throughput().await,
            "startup" => bench_startup().await,
            "memory" => bench_memory().await,
            "scan" => bench_scan().await,
            "store" => bench_store_latency().await,
            _ => bench_soak().await,
        }
    }
}
