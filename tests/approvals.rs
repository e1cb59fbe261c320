//! Two-person approval: risky actions wait for a second operator, who never
//! sees a key; the requester carries them out exactly once.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use keydesk::fake_vultr::FakeVultr;

async fn app(rules: &[&str]) -> (TestApp, String) {
    let app = TestApp::spawn_with(
        FakeVultr::seeded(ROOT_KEY),
        approval_options(rules, Duration::from_secs(3600)),
    )
    .await;
    let ada = app.user_id("ada@example.com");
    (app, ada)
}

/// STAFF asks for a key that never expires; returns the request id.
async fn ask_for_never_expiring_key(app: &TestApp, ada: &str) -> String {
    let resp = app
        .create_key(ada, &[("name", "forever"), ("reason", "OPS-9")])
        .await;
    assert_eq!(resp.status(), 202);
    request_of(&resp.text().await.unwrap())
}

/// `who` posts `step` of request `id` with a token no page issued.
async fn step_without_form(
    app: &TestApp,
    who: &reqwest::Client,
    id: &str,
    step: &str,
) -> reqwest::Response {
    let url = app.url(&format!("/approvals/{id}/{step}"));
    post_as(who, url, &[("form_token", "x")]).await
}

fn posts(app: &TestApp) -> usize {
    app.fake.count("POST", "/v2/users")
}

#[tokio::test]
async fn a_never_expiring_key_waits_for_a_second_person_then_runs_once() {
    let (app, ada) = app(&["no-expiry"]).await;
    let (_, page) = app.get(&format!("/users/{ada}")).await;
    assert!(
        page.contains("A key that never expires waits for a second person"),
        "the form says so"
    );
    let id = ask_for_never_expiring_key(&app, &ada).await;
    assert_eq!(posts(&app), 0, "nothing upstream while it waits");
    assert_eq!(app.audit_count("approval.request").await, 1);
    // A key with an expiry goes through at once.
    let now = app
        .create_key(
            &ada,
            &[
                ("name", "dated"),
                ("expire", "true"),
                ("date_expire", &date_in(30)),
            ],
        )
        .await;
    assert_eq!(now.status(), 200);
    assert_eq!(posts(&app), 1);

    // The requester cannot approve their own request, even as an approver.
    let staff = &app.client;
    let (_, page) = app.get(&format!("/approvals/{id}")).await;
    assert!(page.contains("id=\"approval-waiting\""), "{page}");
    assert!(!page.contains("id=\"approve\""));
    let r = post_as(
        staff,
        app.url(&format!("/approvals/{id}/approve")),
        &[("form_token", "x")],
    )
    .await;
    assert_eq!(r.status(), 403);
    // Nor can an operator who is not an approver.
    let other = client(Some(OTHER));
    let r = step_without_form(&app, &other, &id, "approve").await;
    assert_eq!(r.status(), 403);
    // And the database refuses it even if the application did not.
    assert!(
        !app.state
            .approvals
            .decide(&id, true, STAFF, None)
            .await
            .unwrap()
    );
    let not_yet = post_as(
        staff,
        app.url(&format!("/approvals/{id}/execute")),
        &[("form_token", "x")],
    )
    .await;
    assert_eq!(not_yet.status(), 409, "not approved yet");

    // The approver approves: still nothing upstream, and no key for them.
    let boss = client(Some(BOSS));
    let r = press(&app, &boss, &id, "approve").await;
    assert_eq!(r.status(), 303);
    assert_eq!(posts(&app), 1);
    let boss_view = get_text(&boss, app.url(&format!("/approvals/{id}"))).await;
    assert!(
        !boss_view.contains("id=\"execute\""),
        "only the requester runs it"
    );
    let r = step_without_form(&app, &boss, &id, "execute").await;
    assert_eq!(r.status(), 403);

    // The requester runs it: one POST, one reveal.
    let page = get_text(staff, app.url(&format!("/approvals/{id}"))).await;
    let at = page.find("id=\"execute-form\"").unwrap();
    let token = hidden_token(&page[at..]);
    let r = post_as(
        staff,
        app.url(&format!("/approvals/{id}/execute")),
        &[("form_token", token.as_str())],
    )
    .await;
    assert_eq!(r.status(), 200);
    let reveal = r.text().await.unwrap();
    let secret = revealed_key(&reveal).expect("revealed to the requester");
    assert_eq!(posts(&app), 2);
    let sent = app
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .nth(1)
        .unwrap();
    assert!(sent.body.contains("\"expire\":false"), "{}", sent.body);

    // Replayed: 409 and nothing more.
    let r = post_as(
        staff,
        app.url(&format!("/approvals/{id}/execute")),
        &[("form_token", token.as_str())],
    )
    .await;
    assert_eq!(r.status(), 409);
    assert_eq!(posts(&app), 2);

    // The audit names both people; the approver's pages never hold the key.
    let f = keydesk::audit::Filter {
        action: Some("key.create".into()),
        ..Default::default()
    };
    let e = app.state.audit.list(&f, 1, 0).await.unwrap().remove(0);
    assert_eq!(e.requested_by.as_deref(), Some(STAFF));
    assert_eq!(e.approved_by.as_deref(), Some(BOSS));
    assert_eq!(e.approval_id.as_deref(), Some(id.as_str()));
    assert_eq!(e.outcome, "ok");
    assert_eq!(app.audit_count("approval.approve").await, 1);
    for p in [
        format!("/approvals/{id}"),
        "/approvals".into(),
        "/audit".into(),
        format!("/users/{ada}"),
    ] {
        let body = get_text(&boss, app.url(&p)).await;
        assert!(!body.contains(&secret), "{p}");
    }
    let jsonl = get_text(&boss, app.url("/audit.jsonl")).await;
    assert!(jsonl.contains("\"approved_by\":\"boss@example.com\""));
}

#[tokio::test]
async fn concurrent_executes_make_one_key() {
    let (app, ada) = app(&["no-expiry"]).await;
    let id = ask_for_never_expiring_key(&app, &ada).await;
    let boss = client(Some(BOSS));
    assert_eq!(press(&app, &boss, &id, "approve").await.status(), 303);
    // Eight tabs of the requester, each with its own form, at once.
    let mut tokens = vec![];
    for _ in 0..8 {
        let page = get_text(&app.client, app.url(&format!("/approvals/{id}"))).await;
        let at = page.find("id=\"execute-form\"").unwrap();
        tokens.push(hidden_token(&page[at..]));
    }
    let url = app.url(&format!("/approvals/{id}/execute"));
    one_tab_wins(&app.client, url, tokens).await;
    assert_eq!(posts(&app), 1);
}

#[tokio::test]
async fn denied_and_expired_requests_cannot_be_carried_out() {
    let (app, ada) = app(&["no-expiry"]).await;
    let id = ask_for_never_expiring_key(&app, &ada).await;
    let boss = client(Some(BOSS));
    assert_eq!(press(&app, &boss, &id, "deny").await.status(), 303);
    // Final: approving after a denial does nothing.
    let again = step_without_form(&app, &boss, &id, "approve").await;
    assert_eq!(again.status(), 409);
    let r = step_without_form(&app, &app.client, &id, "execute").await;
    assert_eq!(r.status(), 409);
    assert_eq!(app.audit_count("approval.deny").await, 1);
    assert_eq!(posts(&app), 0);

    let app = TestApp::spawn_with(
        FakeVultr::seeded(ROOT_KEY),
        approval_options(&["no-expiry"], Duration::ZERO),
    )
    .await;
    let ada = app.user_id("ada@example.com");
    let id = ask_for_never_expiring_key(&app, &ada).await;
    let (status, _) = app.get(&format!("/approvals/{id}")).await;
    assert_eq!(status, 200, "an expired request can still be read");
    let r = step_without_form(&app, &boss, &id, "approve").await;
    assert_eq!(r.status(), 410);
    assert_eq!(app.audit_count("approval.expire").await, 1);
    assert_eq!(posts(&app), 0);
}

#[tokio::test]
async fn switching_api_access_back_on_waits_then_one_patch() {
    let (app, _) = app(&["api-access-on"]).await;
    let barbara = app.user_id("barbara@example.com");
    let path = format!("/users/{barbara}/api-access");
    let resp = app
        .through_form(
            &path,
            &[
                ("enabled", "true"),
                CONFIRMED,
                ("reason", "incident closed"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 202);
    let id = request_of(&resp.text().await.unwrap());
    assert_eq!(app.fake.count("PATCH", "/v2/users"), 0);
    // Switching off never waits.
    let ada = app.user_id("ada@example.com");
    let off = app
        .through_form(
            &format!("/users/{ada}/api-access"),
            &[("enabled", "false"), CONFIRMED],
        )
        .await;
    assert_eq!(off.status(), 303);
    assert_eq!(app.fake.count("PATCH", "/v2/users"), 1);

    let boss = client(Some(BOSS));
    assert_eq!(press(&app, &boss, &id, "approve").await.status(), 303);
    let r = press(&app, &app.client, &id, "execute").await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.fake.count("PATCH", "/v2/users"), 2);
    let patch = app
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .nth(1)
        .unwrap();
    assert!(patch.path.ends_with(&barbara));
    assert!(patch.body.contains("\"api_enabled\":true"));
    let f = keydesk::audit::Filter {
        action: Some("user.api_access".into()),
        ..Default::default()
    };
    let e = app.state.audit.list(&f, 1, 0).await.unwrap().remove(0);
    assert_eq!(
        (e.requested_by.as_deref(), e.approved_by.as_deref()),
        (Some(STAFF), Some(BOSS))
    );
}

#[tokio::test]
async fn long_expiries_and_claim_links_follow_the_rules() {
    let (app, ada) = app(&["over-days:90", "all-keys"]).await;
    // all-keys: even a short one waits; the first rule that applies is named.
    let resp = app
        .create_key(
            &ada,
            &[
                ("name", "short"),
                ("expire", "true"),
                ("date_expire", &date_in(30)),
            ],
        )
        .await;
    assert_eq!(resp.status(), 202);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("every new key needs a second person")
    );
    let (app, ada) = self::app(&["over-days:90"]).await;
    let resp = app
        .create_key(
            &ada,
            &[
                ("name", "long"),
                ("expire", "true"),
                ("date_expire", &date_in(120)),
            ],
        )
        .await;
    assert_eq!(resp.status(), 202);
    assert!(resp.text().await.unwrap().contains("more than 90 days"));
    let ok = app
        .create_key(
            &ada,
            &[
                ("name", "fine"),
                ("expire", "true"),
                ("date_expire", &date_in(90)),
            ],
        )
        .await;
    assert_eq!(ok.status(), 200);

    // A claim link that needs approval: approved, run, and then the owner claims.
    let token = app.form_token(&ada).await;
    let resp = app
        .submit(
            &format!("/users/{ada}/grants"),
            &token,
            &[
                ("name", "long-link"),
                ("expire", "true"),
                ("date_expire", &date_in(200)),
            ],
        )
        .await;
    assert_eq!(resp.status(), 202);
    let id = request_of(&resp.text().await.unwrap());
    let boss = client(Some(BOSS));
    assert_eq!(press(&app, &boss, &id, "approve").await.status(), 303);
    let r = press(&app, &app.client, &id, "execute").await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let marker = "<a id=\"claim-link\" href=\"";
    let s = page.find(marker).unwrap() + marker.len();
    let link = page[s..s + page[s..].find('"').unwrap()].to_string();
    let posts_before = posts(&app);
    let owner = client(Some("ada@example.com"));
    let claim = get_text(&owner, app.url(&link)).await;
    let r = post_as(
        &owner,
        app.url(&link),
        &[("form_token", hidden_token(&claim).as_str())],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(posts(&app), posts_before + 1);
    let f = keydesk::audit::Filter {
        action: Some("grant.create".into()),
        ..Default::default()
    };
    let e = app.state.audit.list(&f, 1, 0).await.unwrap().remove(0);
    assert_eq!(e.approved_by.as_deref(), Some(BOSS));
}

#[tokio::test]
async fn approval_rules_without_approvers_refuse_to_start() {
    let mut opts = approval_options(&["no-expiry"], Duration::from_secs(60));
    opts.approvers = vec![];
    let fake = FakeVultr::seeded(ROOT_KEY);
    let url = fake.spawn().await.unwrap();
    let err = keydesk::state::AppState::new(opts.settings(&url))
        .await
        .err()
        .unwrap();
    assert!(err.contains("KEYDESK_APPROVERS"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keydesk"))
        .arg("serve")
        .env("VULTR_API_KEY", ROOT_KEY)
        .env("KEYDESK_OPERATORS", STAFF)
        .env("KEYDESK_DATABASE_URL", "sqlite::memory:")
        .env("KEYDESK_APPROVAL_FOR", "no-expiry")
        .env_remove("KEYDESK_APPROVERS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEYDESK_APPROVERS"));
}

#[tokio::test]
async fn approvers_hear_of_requests_and_requesters_of_decisions() {
    let smtp = common::sinks::SmtpSink::start().await;
    let mut opts = approval_options(&["no-expiry"], Duration::from_secs(3600));
    opts.notify.smtp = Some(secrecy::SecretString::from(smtp.url.clone()));
    opts.public_url = Some("https://keydesk.example.com".into());
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let ada = app.user_id("ada@example.com");
    let id = ask_for_never_expiring_key(&app, &ada).await;
    // Wait for the announcement to be over, not only for its first mail:
    // then "nothing to the requester" means something.
    let notifier = app.state.notifier.clone();
    wait_until("the request's announcement to finish", || {
        notifier.announcements_finished() == 1
    })
    .await;
    assert!(smtp.mails().iter().any(|m| m.to == vec![BOSS.to_string()]));
    let mail = smtp
        .mails()
        .into_iter()
        .find(|m| m.to == vec![BOSS.to_string()])
        .unwrap();
    assert!(
        mail.text()
            .contains(&format!("https://keydesk.example.com/approvals/{id}"))
    );
    assert!(
        !smtp.mails().iter().any(|m| m.to == vec![STAFF.to_string()]),
        "not the requester"
    );
    let boss = client(Some(BOSS));
    press(&app, &boss, &id, "approve").await;
    wait_until("the decision's announcement to finish", || {
        notifier.announcements_finished() == 2
    })
    .await;
    let to_staff = smtp
        .mails()
        .into_iter()
        .filter(|m| m.to == vec![STAFF.to_string()]);
    assert_eq!(
        to_staff.count(),
        1,
        "the requester hears of the decision once"
    );
}

#[tokio::test]
async fn the_requester_can_withdraw_and_nobody_else_can() {
    let (app, ada) = app(&["no-expiry"]).await;
    let id = ask_for_never_expiring_key(&app, &ada).await;
    let boss = client(Some(BOSS));
    let url = app.url(&format!("/approvals/{id}/withdraw"));
    let r = post_as(&boss, url.clone(), &[("form_token", "x")]).await;
    assert_eq!(r.status(), 403, "only the requester");
    let r = press(&app, &app.client, &id, "withdraw").await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.audit_count("approval.withdraw").await, 1);
    let page = get_text(&boss, app.url(&format!("/approvals/{id}"))).await;
    assert!(!page.contains("id=\"approve\""), "nothing left to decide");
    let r = step_without_form(&app, &boss, &id, "approve").await;
    assert_eq!(r.status(), 410);
    let r = step_without_form(&app, &app.client, &id, "execute").await;
    assert_eq!(r.status(), 410);
    assert_eq!(posts(&app), 0);
}
