//! Durable jobs finish on their own: a replica killed mid-job (kill -9)
//! leaves a lease that stops beating; another replica on the same database
//! takes the job over and finishes it, with no request made to it, and no
//! call Vultr already carried out is made again.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use keydesk::fake_vultr::{FakeVultr, Fault};
use keydesk::state::AppState;
use keydesk::vultr::User;

/// Polls the store (never the app's HTTP side) until the user's latest
/// offboarding is no longer running, or `within` has passed.
async fn settled_within(state: &AppState, user: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(o) = state.offboardings.latest_for_user(user).await.unwrap()
            && o.state != "running"
        {
            return Some(o.state);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// How many requests with `method` reached the fake for `path`, exactly.
fn calls(fake: &FakeVultr, method: &str, path: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

/// Starts an offboarding of `id` on the replica at `base`; the request is
/// left running in the background (its replica is about to die).
async fn start_offboarding(base: &str, id: &str, keys: &[String]) -> tokio::task::JoinHandle<()> {
    let c = client(Some(STAFF));
    let confirm = get_text(&c, format!("{base}/users/{id}/offboard")).await;
    let token = hidden_token(&confirm);
    let url = format!("{base}/users/{id}/offboard");
    let listed = keys.join(",");
    tokio::spawn(async move {
        let form = [
            ("form_token", token.as_str()),
            ("reason", "left, HR-7"),
            ("listed", listed.as_str()),
        ];
        let _ = c.post(url).form(&form).send().await;
    })
}

/// Checks what reached Vultr: one PATCH (the brake), one DELETE per key.
fn each_call_once(fake: &FakeVultr, id: &str, keys: &[String]) {
    assert!(fake.keys_of(id).is_empty(), "every key is gone");
    assert_eq!(
        calls(fake, "PATCH", &format!("/v2/users/{id}")),
        1,
        "the brake was not repeated"
    );
    for k in keys {
        assert_eq!(
            calls(fake, "DELETE", &format!("/v2/users/{id}/apikeys/{k}")),
            1,
            "one DELETE for {k}, none repeated"
        );
    }
}

#[tokio::test]
async fn an_offboarding_cut_by_kill_9_is_finished_by_another_replica_unasked() {
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    let (fake, id, keys) = leaver(3);
    let upstream = fake.spawn().await.unwrap();
    // Vultr carries out the second key's DELETE and keeps its answer: the
    // replica is killed while it waits.
    fake.set_fault_after(
        "DELETE",
        &keys[1],
        Some(Fault::Stall(Duration::from_secs(120))),
    );
    // Both replicas with the default lease: "within 30 s" as deployed.
    let (mut a, base_a, _logs) = spawn_binary(&[
        ("KEYDESK_VULTR_API_URL", upstream.clone()),
        ("KEYDESK_DATABASE_URL", url.clone()),
    ])
    .await;
    let b = Stoppable::start(Options::on(&url).settings(&upstream)).await;
    let post = start_offboarding(&base_a, &id, &keys).await;
    wait_until("the second key deleted at Vultr", || {
        !fake.keys_of(&id).iter().any(|k| k.id == keys[1])
    })
    .await;
    // The user page names the replica running it (B is asked nothing).
    let page = get_text(&client(Some(STAFF)), format!("{base_a}/users/{id}")).await;
    assert!(page.contains("id=\"offboarding-runner\""), "{page}");
    assert!(page.contains("run by replica "), "{page}");

    a.start_kill().unwrap();
    a.wait().await.unwrap();
    let killed = Instant::now();
    post.abort();
    fake.set_fault_after("DELETE", &keys[1], None);

    // Nobody presses anything: B finds the run, takes it over, finishes it.
    let state = settled_within(&b.state, &id, Duration::from_secs(30)).await;
    assert_eq!(
        state.as_deref(),
        Some("done"),
        "finished by the other replica within 30 s of the kill"
    );
    eprintln!("resumed and finished {:?} after the kill", killed.elapsed());
    each_call_once(&fake, &id, &keys);
    // The audit says who took it over.
    let run = b
        .state
        .offboardings
        .latest_for_user(&id)
        .await
        .unwrap()
        .unwrap();
    let group = keydesk::audit::Filter {
        group: Some(run.group_id.to_string()),
        ..Default::default()
    };
    let parts = b.state.audit.list(&group, 100, 0).await.unwrap();
    assert!(
        parts.iter().any(|e| e
            .key_name
            .as_deref()
            .is_some_and(|n| n.starts_with("resumed by replica "))),
        "{parts:?}"
    );
    b.stop().await;
}

/// A replica in a runtime of its own, on its own thread: `kill` drops the
/// runtime with every task in it at once (no drain, no lease released, no
/// open entry settled), as kill -9 leaves a process's work.
struct Doomed {
    base: String,
    kill: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Doomed {
    fn start(settings: keydesk::state::Settings) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (kill, killed) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let (base, _) = rt.block_on(serve(settings));
            ready_tx.send(base).unwrap();
            let _ = killed.recv();
            rt.shutdown_background();
        });
        let base = ready_rx.recv().unwrap();
        Self { base, kill, thread }
    }

    fn kill(self) {
        self.kill.send(()).unwrap();
        self.thread.join().unwrap();
    }
}

#[tokio::test]
async fn a_cleanup_cut_short_is_finished_by_another_replica_on_one_sqlite_file() {
    let dir = std::env::temp_dir().join(format!("kd-jobs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("keydesk.db").display());
    let fake = FakeVultr::new(ROOT_KEY);
    let id = fake.add_user(User {
        id: "5eed00000000b".into(),
        email: Some("old@example.com".into()),
        api_enabled: Some(true),
        ..Default::default()
    });
    let keys: Vec<String> = (0..3)
        .map(|i| fake.add_key(&id, &format!("old-{i}"), Some(time::Duration::days(-2))))
        .collect();
    let upstream = fake.spawn().await.unwrap();
    fake.set_fault_after(
        "DELETE",
        &keys[1],
        Some(Fault::Stall(Duration::from_secs(120))),
    );
    // A short lease for both: the test waits seconds, not the default 20.
    let lease = Duration::from_secs(1);
    let settings = || keydesk::state::Settings {
        job_lease: lease,
        ..Options::on(&url).settings(&upstream)
    };
    let a = Doomed::start(settings());
    let b = Stoppable::start(settings()).await;

    let c = client(Some(STAFF));
    // With no scan yet the confirmation offers one (a POST); its form
    // shows once the scan ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    let confirm = loop {
        let page = get_text(&c, format!("{}/reports/keys/revoke-expired", a.base)).await;
        if page.contains("id=\"cleanup-scan-form\"") {
            let token = hidden_token(&page);
            let url = format!("{}/reports/keys/scan", a.base);
            let form = [("form_token", token.as_str()), ("then", "revoke-expired")];
            assert_eq!(post_as(&c, url, &form).await.status(), 303);
            continue;
        }
        if page.contains("form_token") {
            break page;
        }
        assert!(Instant::now() < deadline, "the scan did not end: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let token = hidden_token(&confirm);
    let values: Vec<String> = keys.iter().map(|k| format!("{id}/{k}")).collect();
    let post = tokio::spawn({
        let url = format!("{}/reports/keys/revoke-expired", a.base);
        async move {
            let mut form: Vec<(&str, &str)> = vec![("form_token", &token), ("selection", "ticked")];
            form.extend(values.iter().map(|v| ("key", v.as_str())));
            // The page streams: read it until the replica dies.
            if let Ok(r) = c.post(url).form(&form).send().await {
                let _ = r.text().await;
            }
        }
    });
    wait_until("the second key deleted at Vultr", || {
        !fake.keys_of(&id).iter().any(|k| k.id == keys[1])
    })
    .await;
    a.kill();
    post.abort();
    fake.set_fault_after("DELETE", &keys[1], None);

    // The run's group, as the store has it (no request to B).
    let head = |entries: Vec<keydesk::audit::Entry>| {
        entries
            .into_iter()
            .find(|e| e.action == "keys.cleanup" && e.group_id.is_none())
    };
    let all = keydesk::audit::Filter::default();
    let group = head(b.state.audit.list(&all, 100, 0).await.unwrap())
        .expect("the clean-up's group entry")
        .id;
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.state.cleanups.state(group).await.unwrap().as_deref() != Some("done") {
        assert!(
            Instant::now() < deadline,
            "the clean-up was not finished by B"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fake.keys_of(&id).is_empty(), "every expired key is gone");
    for k in &keys {
        assert_eq!(
            calls(&fake, "DELETE", &format!("/v2/users/{id}/apikeys/{k}")),
            1,
            "one DELETE for {k}, none repeated"
        );
    }
    // B settled the group: nothing failed, and it says who resumed it.
    let head = head(b.state.audit.list(&all, 100, 0).await.unwrap()).unwrap();
    assert_eq!(head.outcome, "ok", "{head:?}");
    b.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_notice_pass_cut_short_is_resumed_by_another_replica_and_sends_once() {
    let dir = std::env::temp_dir().join(format!("kd-jobs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("keydesk.db").display());
    let fake = FakeVultr::new(ROOT_KEY);
    let id = fake.add_user(User {
        id: "5eed00000000c".into(),
        email: Some("due@example.com".into()),
        api_enabled: Some(true),
        ..Default::default()
    });
    fake.add_key(&id, "gone-stale", Some(time::Duration::days(-2)));
    let upstream = fake.spawn().await.unwrap();
    let webhook = sinks::WebhookSink::start().await;
    let settings = || keydesk::state::Settings {
        job_lease: Duration::from_secs(1),
        notify: keydesk::notify::NotifyConfig {
            webhook: Some(secrecy::SecretString::from(webhook.url.clone())),
            ..Default::default()
        },
        ..Options::on(&url).settings(&upstream)
    };
    let a = Doomed::start(settings());
    let b = Stoppable::start(settings()).await;
    // A's pass is killed while it reads the user's keys (before any notice).
    fake.hold("GET", &format!("/v2/users/{id}/apikeys"));
    let c = client(Some(STAFF));
    let token = hidden_token(&get_text(&c, format!("{}/notices", a.base)).await);
    let r = c
        .post(format!("{}/notices/run", a.base))
        .form(&[("form_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    wait_until("A's pass held at Vultr", || fake.held() == 1).await;
    a.kill();
    fake.release();

    // B resumes the pass unasked: one digest, the interrupted pass closed.
    let deadline = Instant::now() + Duration::from_secs(15);
    while webhook.posts().is_empty() {
        assert!(Instant::now() < deadline, "no replica resumed the pass");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snap = loop {
        let snap = b.state.notifier.snapshot(10, 10).await.unwrap();
        if !snap.running && snap.runs.iter().all(|r| r.state != "running") {
            break snap;
        }
        assert!(Instant::now() < deadline, "the resumed pass did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(webhook.posts().len(), 1, "sent once");
    assert_eq!(snap.runs.len(), 2, "{:?}", snap.runs);
    let (resumed, cut) = (&snap.runs[0], &snap.runs[1]);
    assert!(resumed.trigger.starts_with("resumed"), "{resumed:?}");
    assert_eq!(resumed.state, "ok", "{resumed:?}");
    assert_eq!(resumed.sent, 1);
    assert_eq!(cut.state, "failed");
    assert!(
        cut.error
            .as_deref()
            .unwrap_or_default()
            .contains("interrupted")
    );
    b.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_execution_cut_short_is_settled_by_another_replica_within_the_lease() {
    let dir = std::env::temp_dir().join(format!("kd-jobs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("keydesk.db").display());
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let ada = user_id_in(&fake, "ada@example.com");
    let opts = Options {
        audit_db: url.clone(),
        ..approval_options(&["no-expiry"], Duration::from_secs(3600))
    };
    let settings = || keydesk::state::Settings {
        job_lease: Duration::from_secs(1),
        ..opts.settings(&upstream)
    };
    let a = Doomed::start(settings());
    let b = Stoppable::start(settings()).await;
    let staff = client(Some(STAFF));
    let form = get_text(&staff, format!("{}/users/{ada}", a.base)).await;
    let token = hidden_token(&form);
    let asked = post_as(
        &staff,
        format!("{}/users/{ada}/keys", a.base),
        &[("form_token", token.as_str()), ("name", "forever")],
    )
    .await;
    assert_eq!(asked.status(), 202);
    let id = request_of(&asked.text().await.unwrap());
    // BOSS approves; STAFF carries it out, and A is killed mid-create.
    let step = |who: reqwest::Client, step: &'static str| {
        let (base, id) = (a.base.clone(), id.clone());
        async move {
            let page = get_text(&who, format!("{base}/approvals/{id}")).await;
            let at = page
                .find(&format!("action=\"/approvals/{id}/{step}\""))
                .unwrap();
            let token = hidden_token(&page[at..]);
            let url = format!("{base}/approvals/{id}/{step}");
            post_as(&who, url, &[("form_token", token.as_str())]).await
        }
    };
    assert_eq!(step(client(Some(BOSS)), "approve").await.status(), 303);
    fake.hold("POST", &format!("/v2/users/{ada}/apikeys"));
    let execute = tokio::spawn(step(staff.clone(), "execute"));
    wait_until("the create held at Vultr", || fake.held() == 1).await;
    a.kill();
    execute.abort();
    fake.release();

    // B settles it within the lease (not the 90 s bound), unasked.
    let deadline = Instant::now() + Duration::from_secs(10);
    let settled = loop {
        let a = b.state.approvals.get(&id).await.unwrap().unwrap();
        if a.state != keydesk::approvals::ApprovalState::Executing {
            break a;
        }
        assert!(Instant::now() < deadline, "still executing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(settled.state, keydesk::approvals::ApprovalState::Done);
    assert!(settled.comment.unwrap_or_default().contains("interrupted"));
    let unknown = keydesk::audit::Filter {
        outcome: Some("unknown".into()),
        ..Default::default()
    };
    // Audited once the state moved: wait for it.
    loop {
        let entries = b.state.audit.list(&unknown, 10, 0).await.unwrap();
        let said = |e: &keydesk::audit::Entry| {
            e.error
                .as_deref()
                .is_some_and(|m| m.contains("interrupted"))
        };
        if entries.iter().any(said) {
            break;
        }
        assert!(Instant::now() < deadline, "not audited: {entries:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Never run again: the one create A sent is the only one.
    assert_eq!(fake.count("POST", &format!("/v2/users/{ada}/apikeys")), 1);
    b.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_review_close_cut_by_kill_9_is_finished_by_another_replica_and_deletes_nothing_twice() {
    let dir =
        std::env::temp_dir().join(format!("kd-review-kill-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("keydesk.db").display());
    let fake = FakeVultr::new(ROOT_KEY);
    let id = fake.add_user(User {
        id: "5eed00000000c".into(),
        email: Some("leaving@example.com".into()),
        api_enabled: Some(true),
        acls: Some(vec!["dns".into()]),
        last_activity: Some("2020-01-01T00:00:00Z".into()),
        ..Default::default()
    });
    fake.set_allowlist(&id, &["45.76.1.0/24"]);
    let keys: Vec<String> = (0..3)
        .map(|i| fake.add_key(&id, &format!("ci-{i}"), None))
        .collect();
    let upstream = fake.spawn().await.unwrap();
    let lease = Duration::from_secs(1);
    let settings = || keydesk::state::Settings {
        job_lease: lease,
        ..Options::on(&url).settings(&upstream)
    };
    let a = Doomed::start(settings());
    let b = Stoppable::start(settings()).await;
    let c = client(Some(STAFF));

    // A review, started and decided on A: revoke every key (the filter).
    let page = get_text(&c, format!("{}/reviews/new", a.base)).await;
    let deadline = date_in(7);
    let token = hidden_token(&page);
    let form = [
        ("form_token", token.as_str()),
        ("scope", "all"),
        ("deadline", deadline.as_str()),
        ("default", "keep"),
        ("reviewers", "operators"),
    ];
    assert_eq!(
        post_as(&c, format!("{}/reviews/new", a.base), &form)
            .await
            .status(),
        303
    );
    let review = loop {
        let all = b.state.reviews.list(1).await.unwrap();
        if let Some(r) = all.into_iter().find(|r| r.state == "open") {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let page = get_text(&c, format!("{}/reviews/{}", a.base, review.id)).await;
    let at = page.find("/decide\"").unwrap();
    let token = hidden_token(&page[at..]);
    let decide = [
        ("form_token", token.as_str()),
        ("decision", "revoke"),
        ("select", "filter"),
        ("status", "undecided"),
    ];
    let r = post_as(
        &c,
        format!("{}/reviews/{}/decide", a.base, review.id),
        &decide,
    )
    .await;
    assert_eq!(r.status(), 303);
    let items = b.state.reviews.items(review.id).await.unwrap();
    assert_eq!(items.len(), 3);
    assert!(
        items
            .iter()
            .all(|i| i.decision.as_deref() == Some("revoke"))
    );

    // Vultr carries out one DELETE and keeps its answer: A is killed while it waits.
    let stalled = keys[1].clone();
    fake.set_fault_after(
        "DELETE",
        &stalled,
        Some(Fault::Stall(Duration::from_secs(120))),
    );
    let page = get_text(&c, format!("{}/reviews/{}", a.base, review.id)).await;
    let at = page.find("/end\"").unwrap();
    let end_token = hidden_token(&page[at..]);
    let end = [("form_token", end_token.as_str())];
    assert_eq!(
        post_as(&c, format!("{}/reviews/{}/end", a.base, review.id), &end)
            .await
            .status(),
        303
    );
    wait_until("the stalled key deleted at Vultr", || {
        !fake.keys_of(&id).iter().any(|k| k.id == stalled)
    })
    .await;
    a.kill();
    let killed = Instant::now();
    fake.set_fault_after("DELETE", &stalled, None);

    // Nobody presses anything: B takes the application over and finishes it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = b.state.reviews.get(review.id).await.unwrap().unwrap();
        if r.state == "closed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B did not finish the review: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("review finished {:?} after the kill", killed.elapsed());
    assert!(fake.keys_of(&id).is_empty(), "every key revoked");
    for k in &keys {
        assert_eq!(
            calls(&fake, "DELETE", &format!("/v2/users/{id}/apikeys/{k}")),
            1,
            "one DELETE for {k}, none repeated"
        );
    }
    let items = b.state.reviews.items(review.id).await.unwrap();
    for i in &items {
        // The stalled key's DELETE (A's, marked before it was sent) did it:
        // revoked, not "gone", though B found it missing.
        assert_eq!(i.outcome.as_deref(), Some("revoked"), "{i:?}");
        if i.key_id == stalled {
            assert!(
                i.outcome_detail
                    .as_deref()
                    .unwrap_or("")
                    .contains("run cut short"),
                "{i:?}"
            );
        }
        assert_eq!(i.applied_by.as_deref(), Some(STAFF));
    }
    b.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
