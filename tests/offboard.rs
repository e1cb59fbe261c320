//! Offboarding a user and clearing expired keys: one confirmed, audited step
//! each, safe to repeat after a partial failure.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use keydesk::fake_vultr::{FakeVultr, Fault};
use keydesk::vultr::{ClientOptions, User};

fn writes(app: &TestApp) -> Vec<(String, String)> {
    app.fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" || r.method == "DELETE")
        .map(|r| (r.method, r.path))
        .collect()
}

/// The `data-outcome` of the result row of `key`.
fn outcome_of<'a>(page: &'a str, key: &str) -> &'a str {
    let row = &page[page.find(&format!(r#"data-key-id="{key}""#)).unwrap()..];
    let marker = r#"data-outcome=""#;
    let start = row.find(marker).unwrap() + marker.len();
    &row[start..start + row[start..].find('"').unwrap()]
}

async fn group_entries(app: &TestApp, group: i64) -> Vec<keydesk::audit::Entry> {
    let f = keydesk::audit::Filter {
        group: Some(group.to_string()),
        ..Default::default()
    };
    app.state.audit.list(&f, 100, 0).await.unwrap()
}

fn group_id(page: &str) -> i64 {
    let marker = "/audit?group=";
    let start = page.find(marker).unwrap() + marker.len();
    page[start..start + page[start..].find('"').unwrap()]
        .parse()
        .unwrap()
}

#[tokio::test]
async fn offboarding_switches_access_off_first_then_revokes_every_key() {
    let (fake, id, keys) = leaver(3);
    let app = TestApp::spawn_with(fake, Options::default()).await;
    let path = format!("/users/{id}/offboard");
    let (status, confirm) = app.get(&path).await;
    assert_eq!(status, 200);
    for k in &keys {
        assert!(confirm.contains(k.as_str()), "the confirmation lists {k}");
    }
    assert!(confirm.contains("id=\"offboard-reason\""));
    assert!(writes(&app).is_empty(), "the confirmation changes nothing");

    let token = hidden_token(&confirm);
    let listed = keys.join(",");
    let resp = app
        .submit(
            &path,
            &token,
            &[("reason", "left the company, HR-42"), ("listed", &listed)],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains("id=\"offboard-done\""), "{page}");
    for k in &keys {
        assert_eq!(outcome_of(&page, k), "done");
    }

    // Upstream: one PATCH, then three DELETEs, in that order.
    let w = writes(&app);
    assert_eq!(w.len(), 4, "{w:?}");
    assert_eq!(w[0], ("PATCH".into(), format!("/v2/users/{id}")));
    assert!(w[0..1].iter().all(|(m, _)| m == "PATCH"));
    assert!(w[1..].iter().all(|(m, _)| m == "DELETE"));
    let patch = app.upstream_request("PATCH");
    assert!(
        patch.body.contains("\"api_enabled\":false"),
        "{}",
        patch.body
    );

    // The user page: no keys, API access off, and the Offboard control.
    let (_, user_page) = app.get(&format!("/users/{id}")).await;
    assert!(user_page.contains("id=\"api-access-off\""));
    assert!(app.fake.keys_of(&id).is_empty());
    assert!(user_page.contains(&format!("href=\"/users/{id}/offboard\"")));

    // The audit: one group with its entry and five linked ones (the hold,
    // the brake, three revocations), all ok.
    let group = group_id(&page);
    let entries = group_entries(&app, group).await;
    assert_eq!(entries.len(), 6, "{entries:?}");
    let head = entries.iter().find(|e| e.id == group).unwrap();
    assert_eq!(head.action, "user.offboard");
    assert_eq!(head.reason.as_deref(), Some("left the company, HR-42"));
    assert_eq!(head.actor, STAFF);
    assert_eq!(head.outcome, "ok");
    let parts: Vec<_> = entries.iter().filter(|e| e.id != group).collect();
    assert!(
        parts
            .iter()
            .all(|e| e.group_id == Some(group) && e.outcome == "ok")
    );
    assert_eq!(parts.iter().filter(|e| e.action == "key.revoke").count(), 3);
    assert_eq!(
        parts.iter().filter(|e| e.action == "user.offboard").count(),
        1,
        "the hold"
    );
    assert_eq!(
        parts
            .iter()
            .filter(|e| e.action == "user.api_access")
            .count(),
        1
    );
    // And the audit page shows it as one group.
    let (status, audit) = app.get(&format!("/audit?group={group}")).await;
    assert_eq!(status, 200);
    assert!(audit.contains("id=\"audit-group\""));
    assert_eq!(audit.matches(&format!("data-group=\"{group}\"")).count(), 5);

    // Replaying the same form: 409, and nothing more upstream.
    let before = app.fake.requests().len();
    let replay = app
        .submit(&path, &token, &[("reason", "again"), ("listed", &listed)])
        .await;
    assert_eq!(replay.status(), 409);
    assert_eq!(app.fake.requests().len(), before);
}

#[tokio::test]
async fn a_partial_failure_names_the_live_key_and_the_same_button_finishes() {
    let (fake, id, keys) = leaver(3);
    let app = TestApp::spawn_with(fake, Options::default()).await;
    let path = format!("/users/{id}/offboard");
    app.fake.fail_nth("DELETE", 2, 500);
    let resp = app.through_form(&path, &[("reason", "compromised")]).await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains("id=\"offboard-unfinished\""), "{page}");
    let live: Vec<_> = keys
        .iter()
        .filter(|k| outcome_of(&page, k) == "failed")
        .collect();
    assert_eq!(live.len(), 1, "exactly the second DELETE failed");
    assert!(page.contains("still live"));
    let group = group_id(&page);
    let head = group_entries(&app, group).await;
    assert_eq!(
        head.iter().find(|e| e.id == group).unwrap().outcome,
        "failed"
    );
    assert_eq!(app.fake.keys_of(&id).len(), 1);

    // The page's own button (a fresh form) finishes the job: one DELETE more.
    let deletes = app.fake.count("DELETE", "/v2/users");
    let token = hidden_token(&page);
    let again = app
        .submit(&path, &token, &[("reason", "compromised")])
        .await;
    assert_eq!(again.status(), 200);
    let page = again.text().await.unwrap();
    assert!(page.contains("id=\"offboard-done\""), "{page}");
    assert_eq!(app.fake.count("DELETE", "/v2/users"), deletes + 1);
    assert_eq!(outcome_of(&page, live[0]), "done");
    assert!(app.fake.keys_of(&id).is_empty());
}

#[tokio::test]
async fn a_key_vultr_no_longer_has_counts_as_already_gone() {
    let (fake, id, keys) = leaver(2);
    let app = TestApp::spawn_with(fake, Options::default()).await;
    // The first DELETE answers 404: gone between the list and the delete.
    app.fake.fail_nth("DELETE", 1, 404);
    let resp = app
        .through_form(&format!("/users/{id}/offboard"), &[])
        .await;
    let page = resp.text().await.unwrap();
    let outcomes: Vec<_> = keys.iter().map(|k| outcome_of(&page, k)).collect();
    assert!(
        outcomes.contains(&"gone") && outcomes.contains(&"done"),
        "{outcomes:?}"
    );
    assert!(
        page.contains("id=\"offboard-done\""),
        "404 is not a failure"
    );
    let group = group_id(&page);
    let entries = group_entries(&app, group).await;
    assert!(entries.iter().all(|e| e.outcome == "ok"), "{entries:?}");
}

#[tokio::test]
async fn keys_created_after_the_confirmation_are_revoked_and_named() {
    let (fake, id, _) = leaver(1);
    let app = TestApp::spawn_with(fake, Options::default()).await;
    let path = format!("/users/{id}/offboard");
    let (_, confirm) = app.get(&path).await;
    let listed = {
        let marker = r#"name="listed" value=""#;
        let s = confirm.find(marker).unwrap() + marker.len();
        confirm[s..s + confirm[s..].find('"').unwrap()].to_string()
    };
    let late = app.fake.add_key(&id, "created-meanwhile", None);
    let resp = app
        .submit(&path, &hidden_token(&confirm), &[("listed", &listed)])
        .await;
    let page = resp.text().await.unwrap();
    assert_eq!(outcome_of(&page, &late), "done");
    assert!(page.contains("id=\"offboard-newcomers\""), "{page}");
    assert!(app.fake.keys_of(&id).is_empty());
}

#[tokio::test]
async fn viewers_cannot_offboard() {
    let (fake, id, _) = leaver(2);
    let app = TestApp::spawn_with(
        fake,
        Options {
            identity: Some(VIEWER),
            ..Default::default()
        },
    )
    .await;
    let path = format!("/users/{id}/offboard");
    assert_eq!(app.get(&path).await.0, 403);
    let resp = app.post_form(&path, &[("form_token", "x")]).await;
    assert_eq!(resp.status(), 403);
    assert!(writes(&app).is_empty());
}

#[tokio::test]
async fn a_required_reason_is_asked_for_and_nothing_happens_without_it() {
    let (fake, id, _) = leaver(1);
    let mut opts = Options::default();
    opts.policy.require_reason = true;
    let app = TestApp::spawn_with(fake, opts).await;
    let resp = app
        .through_form(&format!("/users/{id}/offboard"), &[("reason", "  ")])
        .await;
    assert_eq!(resp.status(), 422);
    assert!(writes(&app).is_empty());
}

/// 30 users; the first ten have two expired keys, the rest one: 40 in all.
fn expired_fleet() -> (FakeVultr, Vec<(String, String)>) {
    let fake = FakeVultr::new(ROOT_KEY);
    let mut expired = vec![];
    for i in 0..30 {
        let id = fake.add_user(User {
            id: format!("{:013x}", 0xc1ea_0000_0000u64 + i),
            email: Some(format!("u{i}@example.test")),
            api_enabled: Some(true),
            ..Default::default()
        });
        let n = if i < 10 { 2 } else { 1 };
        for j in 0..n {
            let days = -1 - (i as i64 + j);
            let k = fake.add_key(
                &id,
                &format!("old-{i}-{j}"),
                Some(time::Duration::days(days)),
            );
            expired.push((id.clone(), k));
        }
        fake.add_key(&id, "current", Some(time::Duration::days(60)));
    }
    (fake, expired)
}

#[tokio::test]
async fn clearing_40_expired_keys_stays_inside_the_rate_budget_and_is_audited() {
    let (fake, expired) = expired_fleet();
    assert_eq!(expired.len(), 40);
    fake.set_rate_limit(Some(30));
    let app = TestApp::spawn_with(
        fake,
        Options {
            // The product's own limiter and retries, not the tests' fast ones.
            upstream: ClientOptions {
                cache_ttl: std::time::Duration::ZERO,
                ..ClientOptions::default()
            },
            ..Default::default()
        },
    )
    .await;
    assert_eq!(app.start_scan().await.status(), 303);
    scan_idle(&app).await;
    let (status, confirm) = app.get("/reports/keys/revoke-expired").await;
    assert_eq!(status, 200);
    assert_eq!(confirm.matches(r#"name="key""#).count(), 40);
    assert!(confirm.contains("checked"));

    // The browser sends every ticked box.
    let token = hidden_token(&confirm);
    let values: Vec<String> = expired.iter().map(|(u, k)| format!("{u}/{k}")).collect();
    let mut form: Vec<(&str, &str)> = vec![
        ("form_token", &token),
        ("selection", "ticked"),
        ("reason", "quarterly clean-up"),
    ];
    form.extend(values.iter().map(|v| ("key", v.as_str())));
    let resp = app.post_form("/reports/keys/revoke-expired", &form).await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains("id=\"cleanup-results\""));
    assert_eq!(page.matches("data-outcome=\"done\"").count(), 40, "{page}");
    assert!(page.contains("id=\"cleanup-summary\" data-revoked=\"40\" data-live=\"0\""));

    assert_eq!(app.fake.count("DELETE", "/v2/users"), 40);
    assert_eq!(app.fake.rate_limited_count(), 0, "no 429 from Vultr");
    for (u, _) in &expired {
        let left = app.fake.keys_of(u);
        assert_eq!(left.len(), 1, "only the current key is left");
        assert_eq!(left[0].name.as_deref(), Some("current"));
    }
    let group = group_id(&page);
    let entries = group_entries(&app, group).await;
    assert_eq!(entries.len(), 41);
    let head = entries.iter().find(|e| e.id == group).unwrap();
    assert_eq!(
        (head.action.as_str(), head.outcome.as_str()),
        ("keys.cleanup", "ok")
    );
    assert_eq!(head.reason.as_deref(), Some("quarterly clean-up"));
    assert!(
        entries
            .iter()
            .filter(|e| e.id != group)
            .all(|e| e.action == "key.revoke" && e.outcome == "ok" && e.key_id.is_some())
    );

    // A replay acts on nothing.
    let before = app.fake.requests().len();
    let replay = app.post_form("/reports/keys/revoke-expired", &form).await;
    assert_eq!(replay.status(), 409);
    assert_eq!(app.fake.requests().len(), before);
}

/// Sends the clean-up form as it stands (no ticks: the whole bucket); the
/// result page and how many keys it says were revoked.
async fn clean_up_all(app: &TestApp) -> (String, usize) {
    let token = app.token_of("/reports/keys/revoke-expired").await;
    let resp = app
        .post_form("/reports/keys/revoke-expired", &[("form_token", &token)])
        .await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    let done = page.matches("data-outcome=\"done\"").count();
    (page, done)
}

#[tokio::test]
async fn only_ticked_keys_that_are_still_expired_are_revoked() {
    let (fake, expired) = expired_fleet();
    let app = TestApp::spawn_with(fake, Options::default()).await;
    app.start_scan().await;
    scan_idle(&app).await;
    let token = app.token_of("/reports/keys/revoke-expired").await;
    // A live key slipped into the form is left alone; an unticked one too.
    let (u0, _) = &expired[0];
    let live = app.key_named(u0, "current");
    let (a, b) = (&expired[1], &expired[2]);
    let forged = format!("{u0}/{}", live.id);
    let first = format!("{}/{}", a.0, a.1);
    let second = format!("{}/{}", b.0, b.1);
    let resp = app
        .post_form(
            "/reports/keys/revoke-expired",
            &[
                ("form_token", &token),
                ("selection", "ticked"),
                ("key", &forged),
                ("key", &first),
                ("key", &second),
            ],
        )
        .await;
    let page = resp.text().await.unwrap();
    assert_eq!(page.matches("data-outcome=\"done\"").count(), 2, "{page}");
    assert_eq!(page.matches("data-outcome=\"skipped\"").count(), 1);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 2);
    assert!(app.fake.keys_of(u0).iter().any(|k| k.id == live.id));

    // A bare form (no ticks, no marker) means the whole bucket.
    let (fake2, expired2) = expired_fleet();
    let bare = TestApp::spawn_with(fake2, Options::default()).await;
    // Without a scan the page offers one (a POST); then it lists the keys.
    let (status, first) = bare.get("/reports/keys/revoke-expired").await;
    assert_eq!(status, 200);
    assert!(first.contains("id=\"cleanup-scan-form\""), "{first}");
    let scan = bare
        .submit(
            "/reports/keys/scan",
            &hidden_token(&first),
            &[("then", "revoke-expired")],
        )
        .await;
    assert_eq!(scan.status(), 303);
    scan_idle(&bare).await;
    let (page, done) = clean_up_all(&bare).await;
    assert_eq!(done, expired2.len(), "scanned now: {page}");

    // Nothing ticked: refused, nothing sent.
    let token = app.token_of("/reports/keys/revoke-expired").await;
    let resp = app
        .post_form(
            "/reports/keys/revoke-expired",
            &[("form_token", &token), ("selection", "ticked")],
        )
        .await;
    assert_eq!(resp.status(), 422);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 2);
}

#[tokio::test]
async fn the_cleanup_confirmation_flags_rotated_keys_not_yet_retired() {
    let (app, ada) = TestApp::with_user("ada@example.com").await;
    let old = app
        .fake
        .add_key(&ada, "deploy", Some(time::Duration::days(-2)));
    let form = app.key_form(&ada, "deploy", "rotate").await;
    let resp = app
        .submit(
            &form.path,
            &form.token,
            &[("expire", "true"), ("date_expire", &date_in(30))],
        )
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    app.start_scan().await;
    scan_idle(&app).await;
    let (status, confirm) = app.get("/reports/keys/revoke-expired").await;
    assert_eq!(status, 200);
    let row = &confirm[confirm.find(&format!("data-key-id=\"{old}\"")).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("rotated, not yet retired"), "{row}");

    let viewer = client(Some(VIEWER));
    let r = viewer
        .get(app.url("/reports/keys/revoke-expired"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// The clean-up when Vultr deletes but the answer is lost (a gateway's 504,
/// or a connection reset mid-answer): each such key is said to be still live
/// (the safe reading), audited as failed, and the next clean-up reads the
/// list again and sends no second DELETE for a key that is gone.
#[tokio::test]
async fn a_cleanup_whose_answers_were_lost_sends_no_second_delete() {
    for fault in [Fault::Status(504), Fault::Reset] {
        let (fake, expired) = expired_fleet();
        let app = TestApp::spawn_with(fake, Options::default()).await;
        app.start_scan().await;
        scan_idle(&app).await;
        app.fake.set_fault_after("DELETE", "", Some(fault.clone()));
        let (page, done) = clean_up_all(&app).await;
        assert_eq!(done, 0, "{fault:?}: {page}");
        assert_eq!(
            page.matches("class=\"still-live\"").count(),
            expired.len(),
            "{fault:?}"
        );
        assert_eq!(app.fake.count("DELETE", "/v2/users"), expired.len());
        // Vultr did delete them all.
        assert!(
            expired
                .iter()
                .all(|(u, k)| app.fake.keys_of(u).iter().all(|x| &x.id != k))
        );
        // Audited as not done: failed (a status) or unknown (a broken
        // answer), never ok, since keydesk did not see Vultr's yes.
        let revokes = keydesk::audit::Filter {
            action: Some("key.revoke".into()),
            ..Default::default()
        };
        let entries = app.state.audit.list(&revokes, 100, 0).await.unwrap();
        let outcomes: Vec<&str> = entries.iter().map(|e| e.outcome.as_str()).collect();
        assert_eq!(entries.len(), expired.len(), "{fault:?}: {outcomes:?}");
        assert!(
            outcomes.iter().all(|o| *o == "failed" || *o == "unknown"),
            "{fault:?}: {outcomes:?}"
        );

        // The next clean-up reads Vultr again: nothing left, nothing sent.
        app.fake.set_fault_after("DELETE", "", None);
        app.start_scan().await;
        scan_idle(&app).await;
        let (_, confirm) = app.get("/reports/keys/revoke-expired").await;
        assert_eq!(confirm.matches(r#"name="key""#).count(), 0, "{confirm}");
        assert_eq!(
            app.fake.count("DELETE", "/v2/users"),
            expired.len(),
            "{fault:?}"
        );
    }
}
