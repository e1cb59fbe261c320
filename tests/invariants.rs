//! Promises that span features (issue 19): a leaver stays out; one form,
//! claim link or approval makes at most one key whatever the gateway
//! answers; Vultr's answers are read strictly. Every test counts what
//! reached the fake.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use keydesk::fake_vultr::{FakeVultr, Fault};
use keydesk::identity::Access;
use keydesk::policy::{ApprovalPolicy, ApprovalRule};

const ADA: &str = "ada@example.com";
const BOSS: &str = "boss@example.com";

fn count(app: &TestApp, method: &str) -> usize {
    app.fake.count(method, "/v2/users")
}

/// The href of `<a id="claim-link" href="…">`.
fn claim_link(page: &str) -> String {
    let start = page.find(r#"<a id="claim-link" href=""#).unwrap() + 25;
    page[start..start + page[start..].find('"').unwrap()].to_string()
}

/// An operator issues Ada a claim link; its path.
async fn grant(app: &TestApp, ada: &str) -> String {
    let token = app.form_token(ada).await;
    let date = date_in(30);
    let fields = [
        ("name", "ci"),
        ("expire", "true"),
        ("date_expire", date.as_str()),
    ];
    let resp = app
        .submit(&format!("/users/{ada}/grants"), &token, &fields)
        .await;
    assert_eq!(resp.status(), 200);
    let link = claim_link(&resp.text().await.unwrap());
    link[link.find("/claim/").unwrap()..].to_string()
}

/// Confirms and submits the offboarding of `user`; the result page.
async fn offboard(app: &TestApp, user: &str) -> String {
    let path = format!("/users/{user}/offboard");
    let token = app.token_of(&path).await;
    let resp = app.submit(&path, &token, &[("reason", "left, HR-1")]).await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// STAFF asks, BOSS approves; both are operators and approvers.
fn approval_options(rules: &[&str]) -> Options {
    Options {
        access: Access::new(&[VIEWER.into()], &[STAFF.into(), OTHER.into(), BOSS.into()]),
        approval: ApprovalPolicy {
            rules: rules
                .iter()
                .map(|r| r.parse::<ApprovalRule>().unwrap())
                .collect(),
            ttl: Duration::from_secs(3600),
        },
        approvers: vec![STAFF.into(), BOSS.into()],
        ..Default::default()
    }
}

/// The request id in a 202 page's link.
fn request_of(page: &str) -> String {
    let marker = "href=\"/approvals/";
    let s = page.find(marker).expect("link to the request") + marker.len();
    page[s..s + 32].to_string()
}

/// `who` opens request `id` and presses `step`.
async fn press(app: &TestApp, who: &reqwest::Client, id: &str, step: &str) -> reqwest::Response {
    let page = get_text(who, app.url(&format!("/approvals/{id}"))).await;
    let form = format!("action=\"/approvals/{id}/{step}\"");
    let at = page
        .find(&form)
        .unwrap_or_else(|| panic!("no {step} form: {page}"));
    let token = hidden_token(&page[at..]);
    post_as(
        who,
        app.url(&format!("/approvals/{id}/{step}")),
        &[("form_token", token.as_str())],
    )
    .await
}

/// STAFF asks for a key that never expires and BOSS approves it.
async fn approved_request(app: &TestApp, ada: &str) -> String {
    let resp = app.create_key(ada, &[("name", "forever")]).await;
    assert_eq!(resp.status(), 202);
    let id = request_of(&resp.text().await.unwrap());
    let boss = client(Some(BOSS));
    assert_eq!(press(app, &boss, &id, "approve").await.status(), 303);
    id
}

#[tokio::test]
async fn a_leaver_has_no_way_back_until_reinstated() {
    let (app, ada) = TestApp::with_user(ADA).await;
    let claim = grant(&app, &ada).await;
    let page = offboard(&app, &ada).await;
    assert!(page.contains("id=\"offboard-done\""), "{page}");
    assert!(page.contains(r#"id="offboard-hold" data-outcome="done""#));
    assert!(
        page.contains(r#"data-kind="claim link""#),
        "the link is withdrawn"
    );

    // Ada, still signed in through SSO, opens the link: nothing is created.
    let owner = client(Some(ADA));
    let r = owner.get(app.url(&claim)).send().await.unwrap();
    assert_eq!(r.status(), 410, "the link was withdrawn");
    let r = post_as(&owner, app.url(&claim), &[("form_token", "x")]).await;
    assert!(r.status().is_client_error());
    assert_eq!(count(&app, "POST"), 0);

    // Every operator path that would give her a key or access: 409 in words.
    let r = app.create_key(&ada, &[("name", "back-door")]).await;
    assert_eq!(r.status(), 409);
    let body = r.text().await.unwrap();
    assert!(body.contains("offboarded by staff@example.com"), "{body}");
    assert!(body.contains("reinstate first"), "{body}");
    let token = app.form_token(&ada).await;
    let r = app
        .submit(
            &format!("/users/{ada}/grants"),
            &token,
            &[("name", "ci"), ("expire", "false")],
        )
        .await;
    assert_eq!(r.status(), 409, "no claim link for a held user");
    let brake = format!("/users/{ada}/api-access");
    let token = app.token_of(&brake).await;
    let r = app
        .submit(&brake, &token, &[("enabled", "true"), CONFIRMED])
        .await;
    assert_eq!(r.status(), 409, "the brake stays on");
    // A key made in the console meanwhile cannot be rotated through keydesk.
    app.fake
        .add_key(&ada, "console", Some(time::Duration::days(9)));
    let form = app.key_form(&ada, "console", "rotate").await;
    let r = app
        .submit(&form.path, &form.token, &[("expire", "false")])
        .await;
    assert_eq!(r.status(), 409, "no rotation for a held user");
    assert_eq!(count(&app, "POST"), 0, "no key was created upstream");
    assert_eq!(count(&app, "PATCH"), 1, "only the offboarding's brake");
    assert!(app.audit_count("access.denied").await >= 4);

    // The user page shows the hold; an operator reinstates with a reason.
    let (_, user_page) = app.get(&format!("/users/{ada}")).await;
    assert!(user_page.contains("id=\"user-hold\""), "{user_page}");
    assert!(user_page.contains("left, HR-1"));
    let path = format!("/users/{ada}/reinstate");
    let token = app.token_of(&path).await;
    let r = app.submit(&path, &token, &[("reason", "")]).await;
    assert_eq!(r.status(), 422, "a reason is required");
    let r = app
        .submit(&path, &token, &[("reason", "rehired, HR-2")])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.audit_count("user.reinstate").await, 1);
    let r = app
        .create_key(&ada, &[("name", "welcome-back"), ("expire", "false")])
        .await;
    assert_eq!(r.status(), 200, "reinstated: keys work again");
    assert_eq!(count(&app, "POST"), 1);
    let (status, _) = app.get(&path).await;
    assert_eq!(status, 409, "nothing left to reinstate");
}

#[tokio::test]
async fn offboarding_withdraws_requests_and_a_hold_stops_an_approved_one() {
    let app = TestApp::spawn_with(
        FakeVultr::seeded(ROOT_KEY),
        approval_options(&["no-expiry"]),
    )
    .await;
    let ada = app.user_id(ADA);
    let first = approved_request(&app, &ada).await;
    let page = offboard(&app, &ada).await;
    assert!(page.contains(r#"data-kind="approval request""#), "{page}");
    let a = app.state.approvals.get(&first).await.unwrap().unwrap();
    assert_eq!(a.state.as_str(), "withdrawn");
    let r = post_as(
        &app.client,
        app.url(&format!("/approvals/{first}/execute")),
        &[("form_token", "x")],
    )
    .await;
    assert_eq!(r.status(), 410);

    // A request approved while a hold stands (placed here directly) is
    // refused when carried out: the check is in the shared write.
    app.state.holds.lift(&ada).await.unwrap();
    let second = approved_request(&app, &ada).await;
    app.state
        .holds
        .place(&ada, Some(ADA), STAFF, Some("test"), None)
        .await
        .unwrap();
    let r = press(&app, &app.client, &second, "execute").await;
    assert_eq!(r.status(), 409);
    assert_eq!(count(&app, "POST"), 0);
}

#[tokio::test]
async fn the_key_list_is_read_after_the_brake() {
    let (app, ada) = TestApp::with_user(ADA).await;
    let path = format!("/users/{ada}/offboard");
    let token = app.token_of(&path).await;
    app.fake.hold("PATCH", "/v2/users/");
    let submit = {
        let (client, url) = (app.client.clone(), app.url(&path));
        tokio::spawn(async move { post_as(&client, url, &[("form_token", token.as_str())]).await })
    };
    wait_until("the brake to reach Vultr", || app.fake.held() == 1).await;
    // Made in the console while the brake is on its way.
    let late = app.fake.add_key(&ada, "made-meanwhile", None);
    app.fake.release();
    let page = submit.await.unwrap().text().await.unwrap();
    assert!(page.contains(&late), "{page}");
    assert!(
        app.fake.keys_of(&ada).is_empty(),
        "the late key was revoked"
    );
    assert_eq!(
        app.fake
            .count("DELETE", &format!("/v2/users/{ada}/apikeys/{late}")),
        1
    );
}

#[tokio::test]
async fn a_create_whose_answer_a_gateway_lost_spends_the_form() {
    let (app, ada) = TestApp::with_user(ADA).await;
    let before = app.fake.keys_of(&ada).len();
    for (i, status) in [504u16, 500, 502, 408].into_iter().enumerate() {
        app.fake
            .set_fault_after("POST", "/apikeys", Some(Fault::Status(status)));
        let token = app.form_token(&ada).await;
        let fields = [("name", "lost"), ("expire", "false")];
        let r = app.create_key_with(&ada, &token, &fields).await;
        assert!(r.status().is_server_error(), "{status}");
        app.fake.set_fault_after("POST", "", None);
        // The same form again: refused, nothing sent.
        let again = app.create_key_with(&ada, &token, &fields).await;
        assert_eq!(again.status(), 409, "{status}: the form is spent");
        assert_eq!(count(&app, "POST"), i + 1, "{status}: one POST per form");
        assert_eq!(app.fake.keys_of(&ada).len(), before + i + 1);
    }
    assert_eq!(
        app.state
            .audit
            .count(&keydesk::audit::Filter {
                action: Some("key.create".into()),
                outcome: Some("unknown".into()),
                ..Default::default()
            })
            .await
            .unwrap(),
        4
    );

    // A proven refusal gives the form back: the same form then works once.
    app.fake.fail_nth("POST", 1, 422);
    let token = app.form_token(&ada).await;
    let fields = [("name", "refused-then-made"), ("expire", "false")];
    let r = app.create_key_with(&ada, &token, &fields).await;
    assert_eq!(r.status(), 502);
    let r = app.create_key_with(&ada, &token, &fields).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_claim_or_approval_whose_answer_was_lost_never_reopens() {
    let (app, ada) = TestApp::with_user(ADA).await;
    let claim = grant(&app, &ada).await;
    let owner = client(Some(ADA));
    let page = get_text(&owner, app.url(&claim)).await;
    app.fake
        .set_fault_after("POST", "/apikeys", Some(Fault::Status(504)));
    let token = hidden_token(&page);
    let r = post_as(&owner, app.url(&claim), &[("form_token", token.as_str())]).await;
    assert!(r.status().is_server_error());
    app.fake.set_fault_after("POST", "", None);
    let grant_id = claim.rsplit('/').next().unwrap();
    let g = app.state.grants.get(grant_id).await.unwrap().unwrap();
    assert_ne!(g.state.as_str(), "pending", "the link is not given back");
    let r = owner.get(app.url(&claim)).send().await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(count(&app, "POST"), 1);

    let app = TestApp::spawn_with(
        FakeVultr::seeded(ROOT_KEY),
        approval_options(&["no-expiry"]),
    )
    .await;
    let ada = app.user_id(ADA);
    let id = approved_request(&app, &ada).await;
    app.fake
        .set_fault_after("POST", "/apikeys", Some(Fault::Status(502)));
    let r = press(&app, &app.client, &id, "execute").await;
    assert!(r.status().is_server_error());
    app.fake.set_fault_after("POST", "", None);
    let a = app.state.approvals.get(&id).await.unwrap().unwrap();
    assert_eq!(a.state.as_str(), "done", "never carried out twice");
    let r = post_as(
        &app.client,
        app.url(&format!("/approvals/{id}/execute")),
        &[("form_token", "x")],
    )
    .await;
    assert_eq!(r.status(), 409);
    assert_eq!(count(&app, "POST"), 1);
}

#[tokio::test]
async fn a_key_list_without_its_envelope_is_an_error_never_an_empty_list() {
    let (app, ada) = TestApp::with_user(ADA).await;
    let keys = app.fake.keys_of(&ada).len();
    assert!(keys > 0);
    let path = format!("/users/{ada}/offboard");
    let token = app.token_of(&path).await;
    app.fake.set_fault_after(
        "GET",
        "/apikeys",
        Some(Fault::Body(r#"{"meta":{}}"#.into())),
    );
    let r = app.submit(&path, &token, &[]).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("id=\"offboard-list-error\""), "{page}");
    assert!(page.contains("id=\"offboard-unfinished\""), "{page}");
    assert!(!page.contains("id=\"offboard-done\""));
    assert_eq!(count(&app, "DELETE"), 0);
    assert_eq!(
        app.fake.keys_of(&ada).len(),
        keys,
        "every key is still there"
    );

    let (status, page) = app.get(&format!("/users/{ada}")).await;
    assert_eq!(status, 502, "{page}");
    assert!(!page.contains("has no API keys"));
    app.fake.set_fault_after(
        "GET",
        "/v2/users",
        Some(Fault::Body(r#"{"meta":{}}"#.into())),
    );
    let (status, _) = app.get("/users").await;
    assert_eq!(status, 502, "a users list without `users` is malformed");
}

#[tokio::test]
async fn key_lists_follow_cursors_across_pages() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let (app, ada) = {
        let app = TestApp::spawn_with(fake, Options::default()).await;
        let ada = app.user_id(ADA);
        (app, ada)
    };
    let before = app.fake.keys_of(&ada).len();
    for i in 0..(501 - before) {
        app.fake.add_key(&ada, &format!("bulk-{i:03}"), None);
    }
    assert_eq!(app.fake.keys_of(&ada).len(), 501);
    let (status, page) = app.get(&format!("/users/{ada}")).await;
    assert_eq!(status, 200);
    assert!(page.contains("API keys (501)"), "both pages are read");
    let gets: Vec<_> = app
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/apikeys"))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(gets[0].query.as_deref().unwrap_or("").contains("per_page="));
    assert!(gets[1].query.as_deref().unwrap_or("").contains("cursor="));

    offboard(&app, &ada).await;
    assert!(app.fake.keys_of(&ada).is_empty(), "every page was revoked");
    assert_eq!(count(&app, "DELETE"), 501);
}
