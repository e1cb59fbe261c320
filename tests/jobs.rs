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

/// A fake with one user (`leaver@example.com`) holding `keys` keys.
fn leaver(keys: usize) -> (FakeVultr, String, Vec<String>) {
    let fake = FakeVultr::new(ROOT_KEY);
    let id = fake.add_user(User {
        id: "5eed00000000a".into(),
        first_name: Some("Lee".into()),
        last_name: Some("Ver".into()),
        email: Some("leaver@example.com".into()),
        api_enabled: Some(true),
        ..Default::default()
    });
    let ids = (0..keys)
        .map(|i| fake.add_key(&id, &format!("key-{i}"), Some(time::Duration::days(30))))
        .collect();
    (fake, id, ids)
}

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
    fake.set_fault_after("DELETE", &keys[1], Some(Fault::Stall(Duration::from_secs(120))));
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
    let run = b.state.offboardings.latest_for_user(&id).await.unwrap().unwrap();
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
