//! keydesk at scale: 1,000, 3,000 and 10,000 users with 5 keys each on the
//! in-crate fake Vultr API, through keydesk's own pages:
//!
//! - a search across every page of the users list (`GET /users?q=…`);
//! - the keys scan (`POST /reports/keys/scan`) that the Privileged keys and
//!   expiring-keys reports read, then both reports rendered from it;
//! - an access review's snapshot (`POST /reviews/new`, scope all).
//!
//! Each upstream-bound step is set beside its rate floor: the calls the fake
//! received divided by the rate budget. The budget is 500 calls a second here
//! (Vultr allows 30; keydesk's own cost is measured above it so 10,000 users
//! take seconds, not minutes); the fake's own limit is off and it answers at
//! once. Memory is the process's resident set sampled every 20 ms: the fake's
//! 50,000 keys live in this process too, so the figure given is the growth
//! over the process with the fake seeded and keydesk idle.
//!
//!   cargo bench --bench scale                 # 1,000, 3,000 and 10,000 users
//!   cargo bench --bench scale -- 1000 3000    # chosen sizes

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keydesk::Application;
use keydesk::fake_vultr::FakeVultr;
use keydesk::identity::Access;
use keydesk::state::Settings;
use keydesk::vultr::ClientOptions;
use secrecy::SecretString;

const ROOT: &str = "BENCHROOTKEY0000000000000000000000000";
const WHO: &str = "bench@example.com";
const RPS: u32 = 500;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The highest resident set seen while a step runs, sampled every 20 ms.
struct Peak {
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Peak {
    fn start() -> Self {
        let max = Arc::new(AtomicU64::new(rss_kib()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (max.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Peak { max, stop }
    }

    fn end(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.max.fetch_max(rss_kib(), Ordering::Relaxed);
        self.max.load(Ordering::Relaxed)
    }
}

fn token(body: &str) -> String {
    let marker = r#"name="form_token" value=""#;
    let start = body.find(marker).expect("a form token") + marker.len();
    let end = body[start..].find('"').unwrap() + start;
    body[start..end].to_string()
}

struct Row {
    step: &'static str,
    calls: usize,
    took: Duration,
    peak_kib: u64,
}

async fn one_size(n: usize) -> (Vec<Row>, u64) {
    let fake = FakeVultr::with_users(ROOT, n);
    // 2 keys each from the seed; 3 more: 5 per user.
    for (i, u) in fake.users().iter().enumerate() {
        fake.add_key(
            &u.id,
            "deploy",
            Some(time::Duration::days(5 + (i % 60) as i64)),
        );
        fake.add_key(&u.id, "backup", Some(time::Duration::days(200)));
        fake.add_key(&u.id, "laptop", None);
    }
    fake.set_rate_limit(None);
    let fake_url = fake.spawn().await.unwrap();
    let settings = Settings {
        access: Access::new(&[], &[WHO.into()]),
        cookie_secure: false,
        database_url: "sqlite::memory:".into(),
        upstream: ClientOptions {
            rps: RPS,
            cache_ttl: Duration::ZERO,
            ..ClientOptions::default()
        },
        ..Settings::new(&fake_url, SecretString::from(ROOT.to_string()))
    };
    let (base, state) = Application::build(settings).await.unwrap().spawn();
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-forwarded-email", WHO.parse().unwrap());
    let c = reqwest::Client::builder()
        .default_headers(h)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: String| {
        let c = c.clone();
        let url = format!("{base}{path}");
        async move {
            let r = c.get(&url).send().await.unwrap();
            let status = r.status();
            let body = r.text().await.unwrap();
            assert_eq!(status, 200, "{url}: {body}");
            body
        }
    };
    // The session exists before anything is measured.
    get("/users".into()).await;
    let idle_kib = rss_kib();
    let mut rows = Vec::new();

    // Search: every page of the users list, filtered here.
    let (calls, peak, started) = (fake.requests().len(), Peak::start(), Instant::now());
    let page = get("/users?q=nobody-is-called-this".into()).await;
    assert!(
        page.contains("0 matches"),
        "the search read every page: {page}"
    );
    rows.push(Row {
        step: "search across all pages",
        calls: fake.requests().len() - calls,
        took: started.elapsed(),
        peak_kib: peak.end(),
    });

    // The keys scan, which both reports read.
    let form = get("/reports/keys".into()).await;
    let (calls, peak, started) = (fake.requests().len(), Peak::start(), Instant::now());
    let r = c
        .post(format!("{base}/reports/keys/scan"))
        .form(&[("form_token", token(&form))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "scan start");
    state.reports.wait_idle().await;
    let snap = state.reports.snapshot().await.unwrap();
    let report = snap.last.expect("the scan finished");
    assert_eq!(report.users, n, "every user scanned");
    rows.push(Row {
        step: "keys scan (Privileged + expiring)",
        calls: fake.requests().len() - calls,
        took: started.elapsed(),
        peak_kib: peak.end(),
    });
    for (step, path) in [
        ("Privileged keys page", "/reports/keys/privileged"),
        ("expiring-keys report page", "/reports/keys"),
    ] {
        let (calls, peak, started) = (fake.requests().len(), Peak::start(), Instant::now());
        get(path.into()).await;
        rows.push(Row {
            step,
            calls: fake.requests().len() - calls,
            took: started.elapsed(),
            peak_kib: peak.end(),
        });
    }

    // An access review of every key: its snapshot.
    let form = get("/reviews/new".into()).await;
    let deadline = (time::OffsetDateTime::now_utc() + time::Duration::days(14)).date();
    let (calls, peak, started) = (fake.requests().len(), Peak::start(), Instant::now());
    let r = c
        .post(format!("{base}/reviews/new"))
        .form(&[
            ("form_token", token(&form).as_str()),
            ("scope", "all"),
            ("deadline", &deadline.to_string()),
            ("default", "keep"),
            ("reviewers", "operators"),
            ("reason", "scale bench"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "review start: {}", r.text().await.unwrap());
    let id: i64 = r.headers()["location"]
        .to_str()
        .unwrap()
        .trim_start_matches("/reviews/")
        .parse()
        .unwrap();
    let review = loop {
        let review = state.reviews.get(id).await.unwrap().unwrap();
        if review.state != "snapshot" {
            break review;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(review.state, "open", "{:?}", review.error);
    let items = state.reviews.items(id).await.unwrap().len();
    assert_eq!(items, n * 5, "every key is an item");
    rows.push(Row {
        step: "review snapshot (scope all)",
        calls: fake.requests().len() - calls,
        took: started.elapsed(),
        peak_kib: peak.end(),
    });
    (rows, idle_kib)
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 3_000, 10_000]
    } else {
        sizes
    };
    println!(
        "keydesk scale bench on {} cores; budget {RPS} calls/s, fake answering at once, SQLite in memory, cache off",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "| users | keys | step | upstream calls | time | rate floor | over the floor | RSS peak (growth over idle) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let (rows, idle_kib) = one_size(n).await;
        for r in rows {
            let floor = r.calls as f64 / f64::from(RPS);
            let over = if r.calls == 0 {
                "—".to_string()
            } else {
                format!("{:+.1} %", (r.took.as_secs_f64() / floor - 1.0) * 100.0)
            };
            println!(
                "| {n} | {} | {} | {} | {:.3} s | {floor:.3} s | {over} | {:.1} MiB (+{:.1}) |",
                n * 5,
                r.step,
                r.calls,
                r.took.as_secs_f64(),
                r.peak_kib as f64 / 1024.0,
                r.peak_kib.saturating_sub(idle_kib) as f64 / 1024.0
            );
        }
    }
}
