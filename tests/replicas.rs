//! Several replicas on one PostgreSQL and one fake Vultr, and restarts on
//! both engines: forms, notices, the scan and the upstream budget are shared;
//! a restart loses nothing.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use keydesk::audit::{AuditAction, Filter, Intent};
use keydesk::fake_vultr::FakeVultr;

/// Two replicas, A and B, on a fresh PostgreSQL database, and the id of the
/// seeded user with `email`; None (skip) outside CI when there is no server.
async fn two_replicas(email: &str) -> Option<(TestApp, TestApp, String)> {
    let url = pg::fresh_database().await?;
    let a = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), Options::on(&url)).await;
    let b = a.replica(Options::on(&url)).await;
    let id = a.user_id(email);
    Some((a, b, id))
}

#[tokio::test]
async fn a_form_rendered_by_one_replica_works_once_on_the_other() {
    let Some((a, b, id)) = two_replicas("ada@example.com").await else {
        return;
    };
    let token = a.form_token(&id).await;
    let r = b.create_key_with(&id, &token, &[("name", "via-b")]).await;
    assert_eq!(r.status(), 200);
    assert!(revealed_key(&r.text().await.unwrap()).is_some());
    // The replay, on either replica, is the 409 page and sends nothing.
    for app in [&a, &b] {
        let r = app.create_key_with(&id, &token, &[("name", "via-b")]).await;
        assert_eq!(r.status(), 409);
    }
    assert_eq!(a.fake.count("POST", "/v2/users"), 1);
}

#[tokio::test]
async fn eight_concurrent_submits_split_across_replicas_make_one_key() {
    let Some((a, b, id)) = two_replicas("grace@example.com").await else {
        return;
    };
    let token = a.form_token(&id).await;
    let results = race_eight(&[&a, &b], &id, &token).await;
    assert_eq!(results.iter().filter(|(s, _)| *s == 200).count(), 1);
    assert_eq!(a.fake.count("POST", "/v2/users"), 1);
}

#[tokio::test]
async fn a_notice_set_on_one_replica_shows_on_the_other() {
    let Some((a, b, id)) = two_replicas("ada@example.com").await else {
        return;
    };
    let key = a.key_named(&id, "old-laptop");
    let r = a.revoke(&id, &key.id, &[]).await;
    assert_eq!(r.status(), 303);
    let (_, page) = b.get(&format!("/users/{id}")).await;
    assert!(
        page.contains("Revoked the key “old-laptop”."),
        "the flash crossed over"
    );
}

#[tokio::test]
async fn a_replica_never_marks_another_replicas_open_intent_until_the_bound() {
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    // Replica A (the real binary) is killed while Vultr holds its create.
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    fake.hold("POST", "/v2/users");
    let (mut child, base, _logs) = spawn_binary(&[
        ("KEYDESK_VULTR_API_URL", upstream.clone()),
        ("KEYDESK_DATABASE_URL", url.clone()),
    ])
    .await;
    let c = client(Some(STAFF));
    let id = user_id_in(&fake, "ada@example.com");
    let token = hidden_token(&get_text(&c, format!("{base}/users/{id}")).await);
    let post = tokio::spawn({
        let c = c.clone();
        let url = format!("{base}/users/{id}/keys");
        async move {
            let _ = c
                .post(url)
                .form(&[("form_token", token.as_str()), ("name", "doomed")])
                .send()
                .await;
        }
    });
    wait_until("A's create held at Vultr", || fake.held() == 1).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    post.abort();
    fake.release();

    // Replica B starts with a short bound (the longest a request can take).
    let bound = Duration::from_secs(2);
    let b = Stoppable::start(keydesk::state::Settings {
        pending_bound: bound,
        ..Options::on(&url).settings(&upstream)
    })
    .await;
    let open = Filter {
        outcome: Some("pending".into()),
        ..Default::default()
    };
    assert_eq!(
        b.state.audit.count(&open).await.unwrap(),
        1,
        "A's row left open"
    );
    assert_eq!(
        b.state.audit.mark_stale(false).await.unwrap(),
        0,
        "not within the bound"
    );
    tokio::time::sleep(bound + Duration::from_millis(200)).await;
    assert_eq!(
        b.state.audit.mark_stale(false).await.unwrap(),
        1,
        "marked after it"
    );
    let unknown = Filter {
        outcome: Some("unknown".into()),
        ..Default::default()
    };
    let rows = b.state.audit.list(&unknown, 10, 0).await.unwrap();
    assert_eq!(rows[0].key_name.as_deref(), Some("doomed"));
    // B's own fresh intent is untouched by the same sweep.
    let mine = b
        .state
        .audit
        .intent(&Intent::new(STAFF, "operator", AuditAction::KeyCreate))
        .await
        .unwrap();
    assert_eq!(b.state.audit.mark_stale(false).await.unwrap(), 0);
    assert!(
        b.state
            .audit
            .list(&open, 10, 0)
            .await
            .unwrap()
            .iter()
            .any(|e| e.id == mine)
    );
    b.stop().await;
}

#[tokio::test]
async fn a_scan_runs_once_across_replicas_and_both_see_it() {
    let Some((a, b, _)) = two_replicas("ada@example.com").await else {
        return;
    };
    // Hold the scan's first user list so it is visibly running.
    a.fake.hold("GET", "/v2/users");
    let r = a.start_scan().await;
    assert_eq!(r.status(), 303);
    wait_until("the scan listing users", || a.fake.held() == 1).await;
    let (_, on_b) = b.get("/reports/keys").await;
    assert!(on_b.contains(r#"id="scan-progress""#), "B shows A's scan");
    assert!(on_b.contains(STAFF), "started by");
    // A rescan on B joins the running scan instead of starting another.
    let r = b.start_scan().await;
    assert_eq!(r.status(), 303);
    a.fake.release();
    scan_idle(&b).await;
    let lists = a
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/v2/users")
        .count();
    assert_eq!(lists, 1, "one scan listed the users");
    let (_, report) = b.get("/reports/keys").await;
    assert!(report.contains(r#"id="report-age""#), "B shows the result");
}

#[tokio::test]
async fn two_replicas_share_one_upstream_budget() {
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    let fake = FakeVultr::with_users(ROOT_KEY, 1200);
    fake.set_rate_limit(Some(30));
    let mut opts = Options::on(&url);
    opts.upstream.rps = 25;
    let a = TestApp::spawn_with(fake, opts.clone()).await;
    let b = a.replica(opts).await;
    let started = std::time::Instant::now();
    assert_eq!(a.start_scan().await.status(), 303);
    // Meanwhile B serves user pages: its upstream calls share the budget.
    let ids: Vec<String> = a
        .fake
        .users()
        .iter()
        .take(40)
        .map(|u| u.id.clone())
        .collect();
    let browse = async {
        for id in &ids {
            assert_eq!(b.get(&format!("/users/{id}")).await.0, 200);
        }
    };
    // 1,200 users at 25 requests/s: about 50 s by design.
    let ((), ()) = within_secs(300, "the scan and the browsing", async {
        tokio::join!(browse, a.state.reports.wait_idle())
    })
    .await;
    let took = started.elapsed().as_secs_f64();
    let calls = a.fake.requests().len() as f64;
    let floor = calls / 25.0;
    println!("{calls} upstream calls in {took:.1} s; floor {floor:.1} s");
    assert_eq!(a.fake.rate_limited_count(), 0, "Vultr never answered 429");
    assert!(
        took >= floor * 0.9,
        "the budget held: {took:.1} s for {calls} calls"
    );
    // How close to the floor it runs is a benchmark figure (BENCHMARKS.md).
}

/// A form rendered before a restart is accepted once after it; a replay is 409.
async fn restart_keeps_forms(url: &str) {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let browser = client(Some(STAFF));
    let first = Stoppable::start(Options::on(url).settings(&upstream)).await;
    let id = user_id_in(&fake, "ada@example.com");
    let token = hidden_token(&get_text(&browser, format!("{}/users/{id}", first.base)).await);
    first.stop().await;
    let second = Stoppable::start(Options::on(url).settings(&upstream)).await;
    let post = |token: String| {
        browser
            .post(format!("{}/users/{id}/keys", second.base))
            .form(&[("form_token", token), ("name", "after-restart".to_string())])
            .send()
    };
    assert_eq!(post(token.clone()).await.unwrap().status(), 200);
    assert_eq!(post(token).await.unwrap().status(), 409);
    assert_eq!(fake.count("POST", "/v2/users"), 1);
    second.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_open_forms_on_sqlite() {
    let dir =
        std::env::temp_dir().join(format!("keydesk-restart-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    restart_keeps_forms(&format!("sqlite://{}", dir.join("k.db").display())).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_restart_keeps_open_forms_on_postgres() {
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    restart_keeps_forms(&url).await;
}

/// The replica steps of docs/deployment.md (the block after
/// `<!-- replica-steps -->`), with this server's values in its first lines.
fn readme_steps(admin: &str, db: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deployment.md"))
            .unwrap();
    let start = readme
        .find("<!-- replica-steps -->")
        .expect("the marked block");
    let block = &readme[start..];
    let body = &block[block.find("```sh\n").unwrap() + 6..];
    let body = &body[..body.find("```").unwrap()];
    let (base, query) = admin.split_once('?').unwrap();
    let host = &base[base.find('@').unwrap() + 1..base.rfind('/').unwrap()];
    let mut out = String::from("set -euo pipefail\n");
    for line in body.lines() {
        let line = match line.split_once('=') {
            Some(("ADMIN_URL", _)) => format!("ADMIN_URL=\"{admin}\""),
            Some(("KEYDESK_DB", _)) => format!("KEYDESK_DB={db}"),
            Some((var @ ("OWNER_URL" | "APP_URL"), v)) => {
                // The same URL, through this server's socket.
                format!(
                    "{var}={}",
                    v.replace("db.example.internal", host)
                        .trim_end_matches('"')
                        .to_string()
                        + "?"
                        + query
                        + "\""
                )
            }
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[tokio::test]
async fn the_readme_replica_steps_work_as_written() {
    let Some(admin) = pg::admin_url() else {
        return;
    };
    let db = format!("kd_readme_{}", uuid::Uuid::new_v4().simple());
    let script = readme_steps(admin, &db);
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_keydesk"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = {
        let script = script.clone();
        move || {
            std::process::Command::new("bash")
                .arg("-c")
                .arg(&script)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env("PATH", &path)
                .output()
                .unwrap()
        }
    };
    let first = tokio::task::spawn_blocking(run.clone()).await.unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr),
    );
    assert!(first.status.success(), "{script}\n{out}\n{err}");
    assert!(out.contains("applied 0001"), "{out}");
    // Safe to run again (an upgrade re-runs them): nothing left to apply.
    let again = tokio::task::spawn_blocking(run).await.unwrap();
    let out = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(out.contains("is up to date"), "{out}");

    // Two replicas as keydesk_app: one form, rendered by one, works on the other.
    let (base, query) = admin.split_once('?').unwrap();
    let host = &base[base.find('@').unwrap() + 1..base.rfind('/').unwrap()];
    let app_url = format!("postgres://keydesk_app:x@{host}/{db}?{query}");
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let env = [
        ("KEYDESK_VULTR_API_URL", upstream.clone()),
        ("KEYDESK_DATABASE_URL", app_url.clone()),
    ];
    let (a, base_a, _) = spawn_binary(&env).await;
    let (b, base_b, _) = spawn_binary(&env).await;
    let c = client(Some(STAFF));
    let id = user_id_in(&fake, "ada@example.com");
    let token = hidden_token(&get_text(&c, format!("{base_a}/users/{id}")).await);
    // Cookies are per host, not per port: the same browser on both.
    let r = c
        .post(format!("{base_b}/users/{id}/keys"))
        .form(&[
            ("form_token", token.as_str()),
            ("name", "readme"),
            ("expire", "false"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(fake.count("POST", "/v2/users"), 1);
    for base in [&base_a, &base_b] {
        assert_eq!(
            reqwest::get(format!("{base}/readyz"))
                .await
                .unwrap()
                .status(),
            200
        );
    }
    drop((a, b));
}
