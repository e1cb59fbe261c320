//! Decided at the write: every rule reads the facts at the moment keydesk
//! acts. A claim link or an approved request is held to what it was decided
//! on; unknown facts count as the strongest; a hold that appears while a
//! create is at Vultr undoes it. Every case counts what reached the fake.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use keydesk::audit::Filter;
use keydesk::fake_vultr::FakeVultr;

const ALICE: &str = "alice@example.com";
const RULES: &[&str] = &["level:root", "over-days:30"];

/// A fake with alice: limited (`subscriptions_view`), usable only from
/// 45.76.11.0/24.
fn with_alice() -> (FakeVultr, String) {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let id = fake.add_user(keydesk::vultr::User {
        id: "a11ce000-0000-4000-8000-000000000001".into(),
        email: Some(ALICE.into()),
        api_enabled: Some(true),
        acls: Some(vec!["subscriptions_view".into()]),
        ..Default::default()
    });
    fake.set_allowlist(&id, &["45.76.11.0/24"]);
    (fake, id)
}

async fn app_with_alice(rules: &[&str]) -> (TestApp, String) {
    let (fake, id) = with_alice();
    let app = TestApp::spawn_with(fake, approval_options(rules, Duration::from_secs(3600))).await;
    (app, id)
}

/// Key creations that reached the fake.
fn creates(app: &TestApp) -> usize {
    app.fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/apikeys"))
        .count()
}

fn deletes(app: &TestApp) -> usize {
    app.fake.count("DELETE", "/v2/users")
}

fn dated(days: i64) -> Vec<(&'static str, String)> {
    vec![
        ("name", "ci".to_string()),
        ("expire", "true".to_string()),
        ("date_expire", date_in(days)),
    ]
}

fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The path of the claim link an operator issues alice (20 days: no rule).
async fn link_for(app: &TestApp, user: &str) -> String {
    let token = app.form_token(user).await;
    let fields = dated(20);
    let resp = app
        .submit(&format!("/users/{user}/grants"), &token, &pairs(&fields))
        .await;
    assert_eq!(resp.status(), 200, "no rule applies to a 20-day link");
    let page = resp.text().await.unwrap();
    let start = page.find(r#"<a id="claim-link" href=""#).unwrap() + 25;
    let link = &page[start..start + page[start..].find('"').unwrap()];
    link[link.find("/claim/").unwrap()..].to_string()
}

/// The owner opens the link and presses the button.
async fn claim(app: &TestApp, owner: &reqwest::Client, path: &str) -> reqwest::Response {
    let page = get_text(owner, app.url(path)).await;
    let token = hidden_token(&page);
    post_as(owner, app.url(path), &[("form_token", token.as_str())]).await
}

/// The requester presses Execute on the approval `page` of request `id`;
/// the answer and the form's token.
async fn execute(app: &TestApp, page: &str, id: &str) -> (reqwest::Response, String) {
    let at = page.find("id=\"execute-form\"").unwrap();
    let token = hidden_token(&page[at..]);
    (post_token(app, id, &token).await, token)
}

async fn post_token(app: &TestApp, id: &str, token: &str) -> reqwest::Response {
    let url = app.url(&format!("/approvals/{id}/execute"));
    post_as(&app.client, url, &[("form_token", token)]).await
}

async fn entries(app: &TestApp, action: &str) -> Vec<keydesk::audit::Entry> {
    let f = Filter {
        action: Some(action.into()),
        ..Default::default()
    };
    app.state.audit.list(&f, 50, 0).await.unwrap()
}

#[tokio::test]
async fn a_claim_link_is_refused_when_its_user_became_root_since() {
    let (app, alice) = app_with_alice(RULES).await;
    let path = link_for(&app, &alice).await;
    // An admin gives alice manage_users in Vultr's console.
    app.fake
        .set_user_acls(&alice, &["subscriptions_view", "manage_users"]);
    let owner = client(Some(ALICE));
    let r = claim(&app, &owner, &path).await;
    assert_eq!(r.status(), 409);
    let body = r.text().await.unwrap().replace("&#39;", "'");
    assert!(
        body.contains("This user's powers changed since the link was made; ask for a new link"),
        "{body}"
    );
    assert!(revealed_key(&body).is_none());
    assert_eq!(creates(&app), 0, "nothing was sent to Vultr");
    // The link is withdrawn, and the refusal audited with what grew.
    let gid = path.rsplit('/').next().unwrap();
    let g = app.state.grants.get(gid).await.unwrap().unwrap();
    assert_eq!(g.state.as_str(), "revoked");
    let refused = entries(&app, "grant.revoke").await;
    assert_eq!(refused.len(), 1);
    let why = refused[0].intent.reason.clone().unwrap_or_default();
    assert!(why.contains("root-equivalent"), "{why}");
    assert_eq!(refused[0].outcome, "failed");
    assert_eq!(status_as(&owner, app.url(&path)).await, 410);
    // A direct create for alice now waits for a second person.
    let fields = dated(20);
    let r = app.create_key(&alice, &pairs(&fields)).await;
    assert_eq!(r.status(), 202);
    assert_eq!(creates(&app), 0);
}

#[tokio::test]
async fn a_claim_link_of_an_unchanged_user_still_works() {
    let (app, alice) = app_with_alice(RULES).await;
    let path = link_for(&app, &alice).await;
    // A limited ACL no rule names changes nothing.
    app.fake
        .set_user_acls(&alice, &["subscriptions_view", "support"]);
    let r = claim(&app, &client(Some(ALICE)), &path).await;
    assert_eq!(r.status(), 200);
    assert!(revealed_key(&r.text().await.unwrap()).is_some());
    assert_eq!(creates(&app), 1);
}

#[tokio::test]
async fn an_approval_for_a_limited_key_is_void_once_the_user_is_root() {
    let (app, alice) = app_with_alice(RULES).await;
    let fields = dated(60);
    let r = app.create_key(&alice, &pairs(&fields)).await;
    assert_eq!(r.status(), 202, "over 30 days waits");
    let id = request_of(&r.text().await.unwrap());
    let boss = client(Some(BOSS));
    assert_eq!(press(&app, &boss, &id, "approve").await.status(), 303);
    // The page says what was approved, beside what Vultr says now.
    let (_, page) = app.get(&format!("/approvals/{id}")).await;
    assert!(page.contains("Approved for"), "{page}");
    assert!(
        page.contains("a limited key, usable only from 45.76.11.0/24"),
        "{page}"
    );
    assert!(page.contains("Vultr says now"), "{page}");

    app.fake
        .set_user_acls(&alice, &["subscriptions_view", "manage_users"]);
    let (_, page) = app.get(&format!("/approvals/{id}")).await;
    assert!(page.contains("a limited key, usable only from 45.76.11.0/24"));
    assert!(
        page.contains(r#"data-level="root""#),
        "and Vultr's word now"
    );
    let (r, token) = execute(&app, &page, &id).await;
    assert_eq!(r.status(), 410);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("powers changed since the request was approved"),
        "{body}"
    );
    assert!(revealed_key(&body).is_none());
    assert_eq!(creates(&app), 0, "nothing was sent to Vultr");
    let a = app.state.approvals.get(&id).await.unwrap().unwrap();
    assert_eq!(a.state.as_str(), "withdrawn", "voided: ask again");
    let voided = entries(&app, "approval.withdraw").await;
    assert_eq!(voided.len(), 1);
    assert!(
        voided[0]
            .intent
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("decided for a limited key")
    );
    // It cannot be carried out again.
    let r = post_token(&app, &id, &token).await;
    assert!(r.status().is_client_error());
    assert_eq!(creates(&app), 0);
}

#[tokio::test]
async fn an_allowlist_widened_to_anywhere_voids_an_approval_too() {
    let (app, alice) = app_with_alice(RULES).await;
    let fields = dated(60);
    let r = app.create_key(&alice, &pairs(&fields)).await;
    let id = request_of(&r.text().await.unwrap());
    let boss = client(Some(BOSS));
    assert_eq!(press(&app, &boss, &id, "approve").await.status(), 303);
    app.fake
        .set_allowlist(&alice, &["45.76.11.0/24", "0.0.0.0/0"]);
    let page = get_text(&app.client, app.url(&format!("/approvals/{id}"))).await;
    let (r, _) = execute(&app, &page, &id).await;
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap().contains("any address"));
    assert_eq!(creates(&app), 0);
}

#[tokio::test]
async fn unknown_facts_count_as_the_strongest() {
    // An allowlist entry keydesk cannot read counts as "anywhere".
    let (app, alice) = app_with_alice(&["anywhere"]).await;
    app.fake.set_allowlist(&alice, &["45.76.11.0/24"]);
    let fields = dated(20);
    let r = app.create_key(&alice, &pairs(&fields)).await;
    assert_eq!(r.status(), 200, "a narrow allowlist goes through");
    app.fake.set_allowlist_entries(
        &alice,
        vec![keydesk::allowlist::Entry {
            subnet: "45.76.11.0".into(),
            subnet_size: None,
            ..Default::default()
        }],
    );
    let r = app.create_key(&alice, &pairs(&fields)).await;
    assert_eq!(r.status(), 202, "an unreadable entry waits");
    assert_eq!(creates(&app), 1);

    // A user whose ACLs Vultr leaves out counts as root-equivalent.
    let (app, alice) = app_with_alice(&["level:root"]).await;
    app.fake.set_user_acls_missing(&alice);
    let r = app.create_key(&alice, &pairs(&fields)).await;
    assert_eq!(r.status(), 202, "missing ACLs wait as root would");
    assert_eq!(creates(&app), 0);
    let (_, page) = app.get(&format!("/users/{alice}")).await;
    assert!(page.contains("did not report"), "{page}");
}

#[tokio::test]
async fn a_hold_placed_directly_refuses_the_owners_open_link() {
    let (app, alice) = app_with_alice(&[]).await;
    let path = link_for(&app, &alice).await;
    // Not through an offboarding (which would withdraw the link first).
    app.state
        .holds
        .place(&alice, Some(ALICE), STAFF, Some("HR-3"), None)
        .await
        .unwrap();
    let r = claim(&app, &client(Some(ALICE)), &path).await;
    assert_eq!(r.status(), 409);
    assert!(revealed_key(&r.text().await.unwrap()).is_none());
    assert_eq!(creates(&app), 0);
}

/// Confirms the offboarding of `user` as `who`; the result page.
async fn offboard_as(app: &TestApp, who: &reqwest::Client, user: &str) -> reqwest::Response {
    let path = format!("/users/{user}/offboard");
    let page = get_text(who, app.url(&path)).await;
    let token = hidden_token(&page);
    post_as(
        who,
        app.url(&path),
        &[("form_token", token.as_str()), ("reason", "left, HR-9")],
    )
    .await
}

#[tokio::test]
async fn a_create_in_flight_when_an_offboarding_begins_is_undone_and_never_shown() {
    let (app, alice) = app_with_alice(&[]).await;
    let before = app.fake.keys_of(&alice).len();
    app.fake.hold("POST", &format!("/v2/users/{alice}/apikeys"));
    let create = {
        let fields = dated(20);
        let token = app.form_token(&alice).await;
        let client = app.client.clone();
        let url = app.url(&format!("/users/{alice}/keys"));
        tokio::spawn(async move {
            let mut form = pairs(&fields);
            form.push(("form_token", token.as_str()));
            let r = client.post(url).form(&form).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    within("the create reaches Vultr", async {
        while app.fake.held() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The offboarding begins while the create is at Vultr: it waits for it.
    let other = client(Some(OTHER));
    let offboarding = {
        let app_url = app.url("");
        let alice = alice.clone();
        let other = other.clone();
        tokio::spawn(async move {
            let path = format!("{app_url}/users/{alice}/offboard");
            let page = get_text(&other, &path).await;
            let token = hidden_token(&page);
            let r = post_as(
                &other,
                &path,
                &[("form_token", token.as_str()), ("reason", "left, HR-9")],
            )
            .await;
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    within("the hold is placed", async {
        while app.state.holds.get(&alice).await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        !offboarding.is_finished(),
        "the offboarding waits for the write in flight"
    );
    app.fake.release();
    let (status, body) = within("the create answers", create).await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(revealed_key(&body).is_none(), "never shown");
    let (status, page) = within("the offboarding ends", offboarding).await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("id=\"offboard-done\""), "{page}");
    assert_eq!(creates(&app), 1);
    assert_eq!(
        app.fake.keys_of(&alice).len(),
        0,
        "no live key for the leaver (had {before})"
    );
    assert_eq!(
        deletes(&app),
        before + 1,
        "each key deleted once, the late one included"
    );
    // The undo is part of the offboarding's group in the audit.
    let hold = app.state.holds.get(&alice).await.unwrap().unwrap();
    let undone: Vec<_> = entries(&app, "key.revoke")
        .await
        .into_iter()
        .filter(|e| {
            e.intent
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("undone at once"))
        })
        .collect();
    assert_eq!(undone.len(), 1);
    assert_eq!(undone[0].intent.group_id, hold.group_id);
    assert_eq!(undone[0].outcome, "ok");
}

#[tokio::test]
async fn a_held_operator_cannot_reinstate_themselves() {
    let (fake, _) = with_alice();
    let staff = fake.add_user(keydesk::vultr::User {
        id: "5aff0000-0000-4000-8000-000000000002".into(),
        email: Some(STAFF.into()),
        api_enabled: Some(true),
        acls: Some(vec![]),
        ..Default::default()
    });
    let app = TestApp::spawn_with(fake, approval_options(&[], Duration::from_secs(3600))).await;
    let other = client(Some(OTHER));
    let r = offboard_as(&app, &other, &staff).await;
    assert_eq!(r.status(), 200);
    let path = format!("/users/{staff}/reinstate");
    let token = app.token_of(&path).await;
    let r = app.submit(&path, &token, &[("reason", "I am back")]).await;
    assert_eq!(r.status(), 403);
    assert!(app.state.holds.get(&staff).await.unwrap().is_some());
    assert_eq!(app.audit_count("user.reinstate").await, 0);
    // Someone else may.
    let page = get_text(&other, app.url(&path)).await;
    let token = hidden_token(&page);
    let r = post_as(
        &other,
        app.url(&path),
        &[("form_token", token.as_str()), ("reason", "rehired, HR-10")],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert!(app.state.holds.get(&staff).await.unwrap().is_none());
}

#[tokio::test]
async fn a_request_to_widen_a_held_users_allowlist_is_refused_when_asked() {
    let (app, alice) = app_with_alice(&["allowlist-widen"]).await;
    let r = offboard_as(&app, &app.client, &alice).await;
    assert_eq!(r.status(), 200);
    let path = format!("/users/{alice}/allowlist");
    let token = app.token_of(&path).await;
    let r = app
        .submit(
            &path,
            &token,
            &[("address", "45.77.0.0"), ("prefix", "16"), ("reason", "x")],
        )
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(app.audit_count("approval.request").await, 0);
    assert!(app.state.approvals.list(None, 10).await.unwrap().is_empty());
    assert_eq!(
        app.fake
            .count("POST", &format!("/v2/users/{alice}/ip-whitelist")),
        0
    );
}

#[tokio::test]
async fn a_claim_in_flight_when_an_offboarding_begins_is_undone_and_the_link_ends() {
    let (app, alice) = app_with_alice(&[]).await;
    let path = link_for(&app, &alice).await;
    let before = app.fake.keys_of(&alice).len();
    app.fake.hold("POST", &format!("/v2/users/{alice}/apikeys"));
    let owner = client(Some(ALICE));
    let claiming = {
        let page = get_text(&owner, app.url(&path)).await;
        let token = hidden_token(&page);
        let (owner, url) = (owner.clone(), app.url(&path));
        tokio::spawn(async move {
            let r = post_as(&owner, url, &[("form_token", token.as_str())]).await;
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    within("the claim reaches Vultr", async {
        while app.fake.held() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let offboarding = {
        let (app_url, alice) = (app.url(""), alice.clone());
        let other = client(Some(OTHER));
        tokio::spawn(async move {
            let path = format!("{app_url}/users/{alice}/offboard");
            let page = get_text(&other, &path).await;
            let token = hidden_token(&page);
            let form = [("form_token", token.as_str()), ("reason", "left, HR-9")];
            post_as(&other, &path, &form).await.status().as_u16()
        })
    };
    within("the hold is placed", async {
        while app.state.holds.get(&alice).await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(!offboarding.is_finished(), "it waits for the claim");
    app.fake.release();
    let (status, body) = within("the claim answers", claiming).await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(revealed_key(&body).is_none(), "never shown");
    assert_eq!(
        within("the offboarding ends", offboarding).await.unwrap(),
        200
    );
    assert_eq!(creates(&app), 1);
    assert!(
        app.fake.keys_of(&alice).is_empty(),
        "no live key for the leaver"
    );
    assert_eq!(deletes(&app), before + 1, "each key deleted once");
    let gid = path.rsplit('/').next().unwrap();
    let g = app.state.grants.get(gid).await.unwrap().unwrap();
    assert_eq!(g.state.as_str(), "revoked", "the link ends");
}

#[tokio::test]
async fn an_approved_allowlist_entry_is_void_once_the_user_is_root() {
    let (app, alice) = app_with_alice(&["allowlist-widen"]).await;
    let path = format!("/users/{alice}/allowlist");
    let token = app.token_of(&path).await;
    let fields = [
        ("address", "45.77.0.0"),
        ("prefix", "16"),
        ("reason", "VPN"),
    ];
    let r = app.submit(&path, &token, &fields).await;
    assert_eq!(r.status(), 202);
    let id = request_of(&r.text().await.unwrap());
    let boss = client(Some(BOSS));
    assert_eq!(press(&app, &boss, &id, "approve").await.status(), 303);
    app.fake
        .set_user_acls(&alice, &["subscriptions_view", "manage_users"]);
    let page = get_text(&app.client, app.url(&format!("/approvals/{id}"))).await;
    let (r, _) = execute(&app, &page, &id).await;
    assert_eq!(r.status(), 410);
    let whitelist = format!("/v2/users/{alice}/ip-whitelist");
    assert_eq!(app.fake.count("POST", &whitelist), 0, "nothing sent");
    assert_eq!(app.fake.allowlist_of(&alice).len(), 1, "still one entry");
    let a = app.state.approvals.get(&id).await.unwrap().unwrap();
    assert_eq!(a.state.as_str(), "withdrawn");
}
