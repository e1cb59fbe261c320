//! Expiry notices against real protocol peers: an SMTP listener and a
//! webhook receiver. Each (key, threshold, channel) goes out once, across
//! passes, restarts and replicas; a failed channel is retried, once.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use common::sinks::{SmtpSink, WebhookSink};
use common::*;
use keydesk::fake_vultr::FakeVultr;
use keydesk::notify::{NotifyConfig, Trigger};
use keydesk::vultr::User;
use secrecy::SecretString;
use time::{Duration, OffsetDateTime};

const PUBLIC: &str = "https://keydesk.example.com";
const TEAM: &str = "platform@example.com";

/// The pinned clock of a pass: whole seconds, so key expiries are exact.
fn pinned() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

struct Fleet {
    fake: FakeVultr,
    now: OffsetDateTime,
    ada: String,
    bob: String,
}

/// Ada's keys sit at every edge; Bob has one key due tomorrow.
fn fleet() -> Fleet {
    let fake = FakeVultr::new(ROOT_KEY);
    let now = pinned();
    let user = |id: &str, email: &str| {
        fake.add_user(User {
            id: id.into(),
            email: Some(email.into()),
            api_enabled: Some(true),
            ..Default::default()
        })
    };
    let ada = user("a0000000000a1", "ada@example.com");
    let bob = user("b0000000000b1", "bob@example.com");
    for (name, at) in [
        ("exactly-7d", now + Duration::days(7)),
        ("7d-and-1s", now + Duration::days(7) + Duration::seconds(1)),
        ("first-seen-5d", now + Duration::days(5)),
        ("expired-yesterday", now - Duration::days(1)),
        ("expired-40d-ago", now - Duration::days(40)),
        ("far-future", now + Duration::days(60)),
    ] {
        fake.add_key_expiring(&ada, name, at);
    }
    fake.add_key(&ada, "never-expires", None);
    fake.add_key_expiring(&bob, "nightly", now + Duration::hours(20));
    Fleet {
        fake,
        now,
        ada,
        bob,
    }
}

fn config(webhook: &WebhookSink, smtp: &SmtpSink) -> NotifyConfig {
    NotifyConfig {
        webhook: Some(SecretString::from(webhook.url.clone())),
        smtp: Some(SecretString::from(smtp.url.clone())),
        from: "keydesk <keydesk@example.com>".into(),
        team: vec![TEAM.into()],
        ..Default::default()
    }
}

fn options(db: &str, webhook: &WebhookSink, smtp: &SmtpSink) -> Options {
    Options {
        audit_db: db.into(),
        public_url: Some(PUBLIC.into()),
        notify: config(webhook, smtp),
        ..Default::default()
    }
}

fn temp_db(tag: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "keydesk-notices-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("keydesk.db").display());
    (dir, url)
}

async fn pass(app: &TestApp, now: OffsetDateTime) -> keydesk::notify::RunReport {
    let s = &app.state;
    s.notifier
        .run(&s.vultr, &s.audit, Trigger::Command, now)
        .await
        .unwrap()
}

/// (key name, threshold_days) of a webhook POST's keys, sorted.
fn webhook_keys(post: &serde_json::Value) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = post["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key_name"].as_str().unwrap().to_string(),
                k["threshold_days"].as_i64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn expected() -> Vec<(String, i64)> {
    let mut v = vec![
        ("7d-and-1s".to_string(), 30),
        ("exactly-7d".to_string(), 7),
        ("expired-yesterday".to_string(), 0),
        ("first-seen-5d".to_string(), 7),
        ("nightly".to_string(), 1),
    ];
    v.sort();
    v
}

#[tokio::test]
async fn a_pass_tells_the_team_and_each_owner_once_with_links_and_no_secret() {
    let (webhook, smtp) = (WebhookSink::start().await, SmtpSink::start().await);
    let f = fleet();
    let (dir, db) = temp_db("once");
    let app = TestApp::spawn_with(f.fake.clone(), options(&db, &webhook, &smtp)).await;

    let r = pass(&app, f.now).await;
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!((r.users, r.keys_due), (2, 5));

    // The webhook: one POST, a digest in words and the keys at their edges.
    let posts = webhook.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(webhook_keys(&posts[0]), expected());
    let text = posts[0]["text"].as_str().unwrap();
    for name in [
        "exactly-7d",
        "first-seen-5d",
        "expired-yesterday",
        "nightly",
    ] {
        assert!(text.contains(name), "{text}");
    }
    assert!(!text.contains("expired-40d-ago") && !text.contains("far-future"));
    let k = posts[0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_name"] == "exactly-7d")
        .unwrap()
        .clone();
    assert_eq!(k["days_left"], 7);
    assert_eq!(k["expired"], false);
    assert_eq!(k["user_email"], "ada@example.com");
    assert_eq!(k["user_id"], f.ada.as_str());
    let key_id = k["key_id"].as_str().unwrap();
    let rotate = format!("{PUBLIC}/users/{}/keys/{key_id}/rotate", f.ada);
    assert!(text.contains(&rotate), "absolute rotate link: {text}");
    let expired = posts[0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_name"] == "expired-yesterday")
        .unwrap()
        .clone();
    assert_eq!(expired["expired"], true);

    // Mail: one digest to the team, and each owner only their own keys.
    let mails = smtp.mails();
    assert_eq!(mails.len(), 3, "{mails:#?}");
    let to = |who: &str| {
        mails
            .iter()
            .find(|m| m.to == vec![who.to_string()])
            .unwrap()
    };
    let team = to(TEAM);
    assert_eq!(team.from, "keydesk@example.com");
    assert_eq!(
        team.subject(),
        "5 Vultr API keys expire soon or have expired"
    );
    let team_text = team.text();
    assert!(team_text.contains(&rotate), "{team_text}");
    assert!(team_text.contains("multipart/alternative"));
    assert!(team_text.contains("text/html"));
    let ada = to("ada@example.com");
    assert_eq!(
        ada.subject(),
        "Your 4 Vultr API keys expire soon or have expired"
    );
    assert!(ada.text().contains("exactly-7d") && !ada.text().contains("nightly"));
    let bob = to("bob@example.com");
    assert!(bob.text().contains(&format!("/users/{}/keys/", f.bob)));
    assert_eq!(
        bob.subject(),
        "Your Vultr API key “nightly” expires within a day"
    );
    assert!(!bob.text().contains("exactly-7d"));
    assert!(
        !mails.iter().any(|m| m.text().contains("expired-40d-ago")),
        "no flood of old keys"
    );

    // Never a secret, anywhere it went.
    let secrets = app.fake.secrets();
    let everything = format!(
        "{posts:?}{}",
        mails.iter().map(|m| m.data.clone()).collect::<String>()
    );
    for s in secrets.iter().chain([ROOT_KEY.to_string()].iter()) {
        assert!(!everything.contains(s.as_str()), "a secret went out");
    }

    // A second pass: nothing new.
    let r = pass(&app, f.now).await;
    assert_eq!((r.keys_due, r.sent, r.failed), (5, 0, 0), "{r:?}");
    assert_eq!(webhook.posts().len(), 1);
    assert_eq!(smtp.mails().len(), 3);

    // The user page shows the last notice per key; the audit has the passes.
    let (_, page) = app.get(&format!("/users/{}", f.ada)).await;
    assert_eq!(
        page.matches("class=\"muted last-notice\"").count(),
        4,
        "{page}"
    );
    assert_eq!(app.audit_count("notice.run").await, 2);
    let f2 = keydesk::audit::Filter {
        action: Some("notice.run".into()),
        ..Default::default()
    };
    let e = app.state.audit.list(&f2, 1, 0).await.unwrap().remove(0);
    assert_eq!(
        (e.actor.as_str(), e.role.as_str(), e.outcome.as_str()),
        ("keydesk", "system", "ok")
    );

    // A restart on the same database changes nothing.
    let again = TestApp::spawn_with(f.fake.clone(), options(&db, &webhook, &smtp)).await;
    let r = pass(&again, f.now).await;
    assert_eq!(r.sent, 0, "{r:?}");
    assert_eq!(webhook.posts().len(), 1);
    assert_eq!(smtp.mails().len(), 3);

    // Six days later each key has crossed its next threshold: one notice
    // each, the tightest (7d-and-1s goes from 30 straight to 1).
    let later = f.now + Duration::days(6) + Duration::hours(1);
    let r = pass(&again, later).await;
    assert!(r.error.is_none());
    let posts = webhook.posts();
    assert_eq!(posts.len(), 2);
    assert_eq!(
        webhook_keys(&posts[1]),
        vec![
            ("7d-and-1s".to_string(), 1),
            ("exactly-7d".to_string(), 1),
            ("first-seen-5d".to_string(), 0),
            ("nightly".to_string(), 0),
        ]
    );
    // Two months on, expired-yesterday is long past its week: no notice.
    let r = pass(&again, f.now + Duration::days(60)).await;
    assert!(webhook.posts().len() == 3 && r.error.is_none());
    assert!(
        !webhook_keys(&webhook.posts()[2])
            .iter()
            .any(|(n, _)| n == "expired-yesterday")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn two_replicas_passing_at_once_send_each_notice_once() {
    let (webhook, smtp) = (WebhookSink::start().await, SmtpSink::start().await);
    let f = fleet();
    let (dir, db) = temp_db("replicas");
    let a = TestApp::spawn_with(f.fake.clone(), options(&db, &webhook, &smtp)).await;
    let b = a.replica(options(&db, &webhook, &smtp)).await;
    let (ra, rb) = tokio::join!(pass(&a, f.now), pass(&b, f.now));
    assert_eq!(ra.sent + rb.sent, 5 + 5 + 5, "{ra:?} {rb:?}");
    assert!(ra.skipped || rb.skipped || ra.sent == 0 || rb.sent == 0);
    let posts = webhook.posts();
    let sent: usize = posts.iter().map(|p| webhook_keys(p).len()).sum();
    assert_eq!(sent, 5, "each key once on the webhook");
    assert_eq!(smtp.mails().len(), 3);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn two_replicas_on_postgres_send_each_notice_once() {
    let Some(db) = common::pg::fresh_database().await else {
        return;
    };
    let (webhook, smtp) = (WebhookSink::start().await, SmtpSink::start().await);
    let f = fleet();
    let a = TestApp::spawn_with(f.fake.clone(), options(&db, &webhook, &smtp)).await;
    let b = a.replica(options(&db, &webhook, &smtp)).await;
    // Both at once, then each once more (a restart would be the same rows).
    let (ra, rb) = tokio::join!(pass(&a, f.now), pass(&b, f.now));
    assert!(ra.error.is_none() && rb.error.is_none(), "{ra:?} {rb:?}");
    let (ra, rb) = tokio::join!(pass(&a, f.now), pass(&b, f.now));
    assert_eq!(ra.sent + rb.sent, 0);
    let sent: usize = webhook.posts().iter().map(|p| webhook_keys(p).len()).sum();
    assert_eq!(sent, 5);
    assert_eq!(smtp.mails().len(), 3);
    let (_, page) = b.get("/notices").await;
    assert_eq!(page.matches("data-state=\"sent\"").count(), 15);
}

#[tokio::test]
async fn a_failed_channel_is_retried_on_the_next_pass_exactly_once() {
    let (webhook, smtp) = (WebhookSink::start().await, SmtpSink::start().await);
    let f = fleet();
    let app =
        TestApp::spawn_with(f.fake.clone(), options("sqlite::memory:", &webhook, &smtp)).await;
    webhook.set_failing(true);
    let r = pass(&app, f.now).await;
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("webhook answered 500")),
        "{r:?}"
    );
    assert_eq!(r.failed, 5);
    assert_eq!(smtp.mails().len(), 3, "mail went out regardless");
    // A failing channel does not make keydesk unready; it shows on /notices.
    assert_eq!(app.get("/readyz").await.0, 200);
    let (_, page) = app.get("/notices").await;
    assert_eq!(page.matches("data-state=\"failed\"").count(), 5);
    assert!(page.contains("webhook answered 500"));

    webhook.set_failing(false);
    let r = pass(&app, f.now).await;
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(r.sent, 5, "only the webhook's five, again");
    let posts = webhook.posts();
    assert_eq!(posts.len(), 2);
    assert_eq!(webhook_keys(&posts[1]), expected());
    assert_eq!(smtp.mails().len(), 3, "mail not sent twice");
    let r = pass(&app, f.now).await;
    assert_eq!(r.sent, 0);
    assert_eq!(webhook.posts().len(), 2);

    // SMTP refusing: recorded as failed, retried once it accepts.
    let g = fleet();
    let app =
        TestApp::spawn_with(g.fake.clone(), options("sqlite::memory:", &webhook, &smtp)).await;
    smtp.set_failing(true);
    let before = smtp.mails().len();
    let r = pass(&app, g.now).await;
    assert!(
        r.error.as_deref().is_some_and(|e| e.contains("SMTP")),
        "{r:?}"
    );
    smtp.set_failing(false);
    let r = pass(&app, g.now).await;
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(smtp.mails().len(), before + 3);
}

#[tokio::test]
async fn vultr_down_fails_the_pass_and_the_next_one_completes_without_duplicates() {
    let (webhook, smtp) = (WebhookSink::start().await, SmtpSink::start().await);
    let f = fleet();
    let app =
        TestApp::spawn_with(f.fake.clone(), options("sqlite::memory:", &webhook, &smtp)).await;
    app.fake
        .set_fault(Some(keydesk::fake_vultr::Fault::Status(503)));
    let r = pass(&app, f.now).await;
    assert!(r.error.is_some(), "{r:?}");
    assert_eq!(r.sent, 0);
    assert!(webhook.posts().is_empty() && smtp.mails().is_empty());
    let (_, page) = app.get("/notices").await;
    assert!(page.contains("data-run-state=\"failed\""));
    app.fake.set_fault(None);
    let r = pass(&app, f.now).await;
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(webhook.posts().len(), 1);
    assert_eq!(smtp.mails().len(), 3);
    assert_eq!(pass(&app, f.now).await.sent, 0);
}

#[tokio::test]
async fn operators_run_a_pass_from_the_page_and_viewers_cannot() {
    let (webhook, smtp) = (WebhookSink::start().await, SmtpSink::start().await);
    let f = fleet();
    let app =
        TestApp::spawn_with(f.fake.clone(), options("sqlite::memory:", &webhook, &smtp)).await;
    let (status, page) = app.get("/notices").await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"run-notices\""));
    assert!(
        !page.contains("secret-token"),
        "the webhook URL is never shown"
    );
    let token = app.token_of("/notices").await;
    let resp = app.submit("/notices/run", &token, &[]).await;
    assert_eq!(resp.status(), 303);
    // The pass runs in the background: wait for its outcome.
    let notifier = app.state.notifier.clone();
    for _ in 0..500 {
        let s = notifier.snapshot(1, 1).await.unwrap();
        if !s.running && s.runs.first().is_some_and(|r| r.state != "running") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (_, page) = app.get("/notices").await;
    assert!(page.contains("data-run-state=\"ok\""), "{page}");
    assert!(page.contains("run now by staff@example.com"));
    assert_eq!(webhook.posts().len(), 1);
    // Exact counter deltas are checked in tests/metrics.rs, alone in its
    // process; here, only that this pass stamped its time.
    let metrics = app.get("/metrics").await.1;
    assert!(metrics.contains("keydesk_notice_last_run_timestamp_seconds"));

    let viewer = client(Some(VIEWER));
    assert_eq!(status_as(&viewer, app.url("/notices")).await, 200);
    let r = post_as(&viewer, app.url("/notices/run"), &[("form_token", "x")]).await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn keydesk_notify_once_sends_then_sends_nothing() {
    let (webhook, smtp) = (WebhookSink::start().await, SmtpSink::start().await);
    let (dir, db) = temp_db("cli");
    let (hook, mail) = (webhook.url.clone(), smtp.url.clone());
    let run = move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keydesk"))
            .args(["notify", "--once", "--demo"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KEYDESK_DATABASE_URL", &db)
            .env("KEYDESK_NOTIFY_WEBHOOK_URL", &hook)
            .env("KEYDESK_SMTP_URL", &mail)
            .env("KEYDESK_NOTIFY_FROM", "keydesk@example.com")
            .env("KEYDESK_NOTIFY_EMAIL_TO", TEAM)
            .env("KEYDESK_PUBLIC_URL", PUBLIC)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = tokio::task::spawn_blocking(run.clone()).await.unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    let posts = webhook.posts();
    assert_eq!(posts.len(), 1);
    // The demo's keys due within a week: "ci-runner" (3 days) and "staging" (6 days), five users each.
    let keys = webhook_keys(&posts[0]);
    assert_eq!(keys.len(), 10, "{keys:?}");
    assert!(
        keys.iter()
            .all(|(n, t)| (n == "ci-runner" || n == "staging") && *t == 7)
    );
    let team = smtp
        .mails()
        .into_iter()
        .filter(|m| m.to == vec![TEAM.to_string()])
        .count();
    assert_eq!(team, 1);
    assert!(
        !err.contains("secret-token") && !out.contains("secret-token"),
        "webhook URL never printed"
    );

    let (code, out, err) = tokio::task::spawn_blocking(run).await.unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("0 notices sent"), "{out}");
    assert_eq!(webhook.posts().len(), 1, "a second --once sends none");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn keydesk_notify_once_fails_loudly_when_a_channel_fails() {
    let webhook = WebhookSink::start().await;
    webhook.set_failing(true);
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_keydesk"))
            .args(["notify", "--once"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("VULTR_API_KEY", ROOT_KEY)
            .env("KEYDESK_VULTR_API_URL", upstream)
            .env("KEYDESK_DATABASE_URL", "sqlite::memory:")
            .env("KEYDESK_NOTIFY_WEBHOOK_URL", webhook.url.clone())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("webhook answered 500"), "{err}");
    assert!(!err.contains("secret-token"));
}

/// Polls until the newest pass has ended; returns how many passes exist.
async fn passes_after_the_first_ends(app: &TestApp) -> usize {
    for _ in 0..1000 {
        let s = app.state.notifier.snapshot(10, 1).await.unwrap();
        if !s.running && s.runs.first().is_some_and(|r| r.state != "running") {
            return s.runs.len();
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no scheduled pass ended within 10 s");
}

#[tokio::test]
async fn serve_schedules_one_pass_per_interval_across_replicas() {
    let (webhook, smtp) = (WebhookSink::start().await, SmtpSink::start().await);
    let f = fleet();
    let (dir, db) = temp_db("schedule");
    let mut opts = options(&db, &webhook, &smtp);
    opts.notify.interval = std::time::Duration::from_secs(3600);
    // Two replicas start; each scheduler looks at once, and one runs.
    let a = TestApp::spawn_with(f.fake.clone(), opts.clone()).await;
    let b = a.replica(opts).await;
    assert_eq!(passes_after_the_first_ends(&a).await, 1);
    assert_eq!(passes_after_the_first_ends(&b).await, 1);
    assert_eq!(webhook.posts().len(), 1);
    let (_, page) = a.get("/notices").await;
    assert!(page.contains("data-run-state=\"ok\""));
    assert!(page.contains("(every 3600 s)"), "the next pass is shown");
    assert!(page.contains("schedule"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn chat_text_is_inert_whatever_a_key_is_named() {
    let webhook = WebhookSink::start().await;
    let smtp = SmtpSink::start().await;
    let fake = FakeVultr::seeded(ROOT_KEY);
    let now = OffsetDateTime::now_utc();
    let ada = user_id_in(&fake, "ada@example.com");
    let evil = "<!channel> <https://evil.example|rotate now>";
    fake.add_key_expiring(&ada, evil, now + time::Duration::days(3));
    // Mattermost's Markdown: a disguised link, an image, emphasis, pings.
    let marked = "[rotate now](https://evil.example) ![x](https://evil.example/p.png) **urgent** @channel @all @here";
    fake.add_key_expiring(&ada, marked, now + time::Duration::days(3));
    let (dir, db) = temp_db("inert");
    let app = TestApp::spawn_with(fake, options(&db, &webhook, &smtp)).await;
    pass(&app, now).await;
    let posts = webhook.posts();
    // No link in a name is previewed in Slack (a stranger's image).
    for p in &posts {
        assert_eq!(
            (&p["unfurl_links"], &p["unfurl_media"]),
            (&false.into(), &false.into())
        );
    }
    let text = posts
        .iter()
        .map(|p| p["text"].as_str().unwrap().to_string())
        .find(|t| t.contains("evil.example"))
        .expect("the digest names the key");
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    assert!(
        text.contains("&lt;https://evil.example\u{01C0}rotate now&gt;"),
        "{text}"
    );
    assert!(
        !text.contains("<!channel>") && !text.contains("<https://"),
        "{text}"
    );
    for markup in ["](", "![", "**", "@channel", "@all", "@here", "|rotate"] {
        assert!(!text.contains(markup), "{markup} in {text}");
    }
    assert!(
        text.contains("［rotate now］(https://evil.example)"),
        "{text}"
    );
    assert!(text.contains("@\u{2060}channel"), "{text}");
    // The machine-readable list keeps the name as Vultr has it.
    assert!(posts.iter().any(|p| {
        p["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["key_name"] == evil)
    }));
    assert!(posts.iter().any(|p| {
        p["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["key_name"] == marked)
    }));
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn keydesk_notify_once_without_a_channel_exits_non_zero_and_says_so() {
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_keydesk"))
            .args(["notify", "--once", "--demo"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KEYDESK_DATABASE_URL", "sqlite::memory:")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("no channel")
            && err.contains("KEYDESK_NOTIFY_WEBHOOK_URL")
            && err.contains("KEYDESK_SMTP_URL"),
        "{err}"
    );
}

#[tokio::test]
async fn a_serve_without_channels_shows_the_passes_a_cronjob_ran() {
    let webhook = WebhookSink::start().await;
    let (dir, db) = temp_db("cron");
    let fake = FakeVultr::seeded(ROOT_KEY);
    // The portal: no channel, no schedule (a CronJob sends the notices).
    let portal = TestApp::spawn_with(fake.clone(), Options::on(&db)).await;
    let (_, before) = portal.get("/notices").await;
    assert!(!before.contains("never"), "{before}");
    // The CronJob's `notify --once`: same database, with the channel.
    let cron = Options {
        notify: NotifyConfig {
            webhook: Some(SecretString::from(webhook.url.clone())),
            ..Default::default()
        },
        ..Options::on(&db)
    };
    let job = TestApp::spawn_with(fake, cron).await;
    let report = pass(&job, OffsetDateTime::now_utc()).await;
    let (status, page) = portal.get("/notices").await;
    assert_eq!(status, 200);
    assert!(page.contains("from keydesk notify --once"), "{page}");
    assert!(
        page.contains(&format!("#{}", report.run_id)) || page.contains(&report.run_id.to_string()),
        "{page}"
    );
    assert!(!page.contains("never"), "{page}");
    std::fs::remove_dir_all(dir).ok();
}

/// A notice says what a leak of the key would mean: the webhook JSON carries
/// `level` and `anywhere`, the digest says it in words, and
/// KEYDESK_NOTIFY_DAYS_ROOT warns earlier for root-equivalent keys.
#[tokio::test]
async fn a_notice_for_a_root_equivalent_key_carries_its_level() {
    let fake = FakeVultr::new(ROOT_KEY);
    let now = pinned();
    let root = fake.add_user(User {
        id: "r0000000000r1".into(),
        email: Some("root@example.com".into()),
        api_enabled: Some(true),
        acls: Some(vec!["manage_users".into()]),
        ..Default::default()
    });
    let dns = fake.add_user(User {
        id: "d0000000000d1".into(),
        email: Some("dns@example.com".into()),
        api_enabled: Some(true),
        acls: Some(vec!["dns".into()]),
        ..Default::default()
    });
    fake.set_allowlist(&dns, &["45.76.1.0/24"]);
    // 45 days out: inside the root thresholds (60) only.
    fake.add_key_expiring(&root, "root-45d", now + Duration::days(45));
    fake.add_key_expiring(&dns, "dns-45d", now + Duration::days(45));
    fake.add_key_expiring(&dns, "dns-5d", now + Duration::days(5));
    let (webhook, smtp) = (WebhookSink::start().await, SmtpSink::start().await);
    let (_dir, db) = temp_db("level");
    let mut opts = options(&db, &webhook, &smtp);
    opts.notify.thresholds_root = Some(vec![60, 30, 7, 1]);
    let app = TestApp::spawn_with(fake, opts).await;
    let report = pass(&app, now).await;
    assert_eq!(report.keys_due, 2, "{report:?}");
    let posts = webhook.posts();
    assert_eq!(posts.len(), 1);
    let keys = posts[0]["keys"].as_array().unwrap();
    let by_name = |n: &str| keys.iter().find(|k| k["key_name"] == n).cloned();
    let root_key = by_name("root-45d").expect("the root key, 60 days ahead");
    assert_eq!(root_key["level"], "root");
    assert_eq!(root_key["anywhere"], true);
    assert_eq!(root_key["threshold_days"], 60);
    let dns_key = by_name("dns-5d").unwrap();
    assert_eq!(
        (dns_key["level"].as_str(), dns_key["anywhere"].as_bool()),
        (Some("limited"), Some(false))
    );
    assert!(by_name("dns-45d").is_none(), "45 days is outside 30,7,1");
    let text = posts[0]["text"].as_str().unwrap();
    assert!(
        text.contains("root-equivalent, usable from any address"),
        "{text}"
    );
    let digest = smtp
        .mails()
        .into_iter()
        .find(|m| m.to.iter().any(|t| t.contains(TEAM)))
        .unwrap();
    assert!(
        digest
            .text()
            .contains("limited, allowlisted addresses only")
    );
}
