//! "My keys": a key owner serves themselves. The user always comes from the
//! signed-in identity; every cell checks what reached the fake Vultr.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use keydesk::audit::Filter;
use keydesk::fake_vultr::FakeVultr;

const ADA: &str = "ada@example.com";

/// Ada's browser: signed in through the proxy, no staff role.
fn ada() -> reqwest::Client {
    client(Some(ADA))
}

/// Opens the revoke confirmation of `key` as `who`; its form token.
async fn confirm(app: &TestApp, who: &reqwest::Client, key: &str) -> String {
    let page = get_text(who, app.url(&format!("/me/keys/{key}/revoke"))).await;
    assert!(page.contains("I understand"), "{page}");
    hidden_token(&page)
}

async fn revoke(app: &TestApp, who: &reqwest::Client, key: &str, token: &str) -> reqwest::Response {
    let url = app.url(&format!("/me/keys/{key}/revoke"));
    post_as(who, url, &[("form_token", token), CONFIRMED]).await
}

async fn entries(app: &TestApp, action: &str) -> Vec<keydesk::audit::Entry> {
    let f = Filter {
        action: Some(action.into()),
        ..Default::default()
    };
    app.state.audit.list(&f, 100, 0).await.unwrap()
}

/// The leaked-key drill: every create waits for a second person here, and
/// still the owner's revocation runs at once, in one confirmed step.
#[tokio::test]
async fn an_owner_revokes_a_leaked_key_at_once_without_any_approval() {
    let opts = approval_options(&["all-keys"], Duration::from_secs(3600));
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let id = app.user_id(ADA);
    let leaked = app.key_named(&id, "terraform");
    let owner = ada();

    let page = get_text(&owner, app.url("/me")).await;
    assert!(page.contains(&leaked.id), "{page}");
    assert!(page.contains("id=\"nav-me\""), "My keys in the navigation");
    assert!(
        !page.contains("href=\"/users\""),
        "no staff navigation for an owner"
    );
    let token = confirm(&app, &owner, &leaked.id).await;
    let r = revoke(&app, &owner, &leaked.id, &token).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/me");

    assert_eq!(app.fake.count("DELETE", "/v2/users"), 1);
    let path = format!("/v2/users/{id}/apikeys/{}", leaked.id);
    assert_eq!(app.fake.count("DELETE", &path), 1);
    assert!(app.fake.keys_of(&id).iter().all(|k| k.id != leaked.id));
    let revoked = entries(&app, "key.revoke").await;
    assert_eq!(revoked.len(), 1);
    let e = &revoked[0];
    assert_eq!(
        (e.actor.as_str(), e.role.as_str(), e.outcome.as_str()),
        (ADA, "self-service", "ok")
    );
    assert_eq!(e.key_id.as_deref(), Some(leaked.id.as_str()));
    assert!(
        app.state.approvals.list(None, 10).await.unwrap().is_empty(),
        "0 approvals"
    );

    // The same form again: nothing more is sent.
    let again = revoke(&app, &owner, &leaked.id, &token).await;
    assert_eq!(again.status(), 303);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 1);
    let page = get_text(&owner, app.url("/me")).await;
    assert!(!page.contains(&leaked.id));
    assert!(
        page.contains("self-service") || page.contains("key.revoke"),
        "in the history"
    );
}

/// An owner can never reach another user's keys: the key id in the URL is
/// looked up among the owner's own keys only.
#[tokio::test]
async fn an_owner_cannot_touch_another_users_key() {
    let app = TestApp::spawn().await;
    let grace = app.user_id("grace@example.com");
    let theirs = app.fake.keys_of(&grace)[0].id.clone();
    let owner = ada();
    let url = app.url(&format!("/me/keys/{theirs}/revoke"));
    assert_eq!(status_as(&owner, url.clone()).await, 403);
    // A token for one of Ada's own keys, aimed at Grace's key.
    let mine = app.fake.keys_of(&app.user_id(ADA))[0].id.clone();
    let token = confirm(&app, &owner, &mine).await;
    let r = post_as(&owner, url, &[("form_token", token.as_str()), CONFIRMED]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 0);
    let denied = entries(&app, "access.denied").await;
    assert_eq!(denied.len(), 2, "both tries audited");
    assert!(
        denied
            .iter()
            .all(|e| e.key_id.as_deref() == Some(theirs.as_str()))
    );
    // Staff pages stay closed to an owner without a role.
    assert_eq!(
        status_as(&owner, app.url(&format!("/users/{grace}"))).await,
        403
    );
    assert_eq!(status_as(&owner, app.url("/users")).await, 403);
}

/// Signed in with no Vultr user: a page in words, 403, nothing about others.
#[tokio::test]
async fn someone_without_a_vultr_user_is_told_so() {
    let app = TestApp::spawn().await;
    let stranger = client(Some("stranger@example.com"));
    let r = stranger.get(app.url("/me")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("no Vultr user of this account has that email"),
        "{body}"
    );
    assert!(!body.contains(ADA), "nothing about other users");
    assert!(app.fake.requests().iter().all(|r| r.method == "GET"));
    // Anonymous: no identity at all.
    let anonymous = client(None);
    assert_eq!(status_as(&anonymous, app.url("/me")).await, 401);
}

/// The Vultr user's email changed after the page was opened: the owner is
/// read again before the write, and the revocation is refused.
#[tokio::test]
async fn an_owner_whose_vultr_email_changed_is_refused_before_any_write() {
    let mut opts = Options::default();
    opts.upstream.cache_ttl = Duration::from_secs(300);
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let id = app.user_id(ADA);
    let key = app.fake.keys_of(&id)[0].id.clone();
    let owner = ada();
    let token = confirm(&app, &owner, &key).await;
    app.fake.set_user_email(&id, "ada.new@example.com");
    let r = revoke(&app, &owner, &key, &token).await;
    assert_eq!(r.status(), 403);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 0);
    assert!(entries(&app, "key.revoke").await.is_empty());
}

/// Staff with a Vultr user of their own are owners too, and a hold from an
/// offboarding never stops an owner from revoking.
#[tokio::test]
async fn a_viewer_owns_their_keys_and_a_held_owner_can_still_revoke() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let viewer_id = fake.add_user(keydesk::vultr::User {
        id: "0000000000aa1".into(),
        email: Some(VIEWER.into()),
        api_enabled: Some(true),
        ..Default::default()
    });
    let key = fake.add_key(&viewer_id, "laptop", Some(time::Duration::days(30)));
    let app = TestApp::spawn_with(fake, Options::default()).await;
    app.state
        .holds
        .place(&viewer_id, Some(VIEWER), STAFF, Some("left"), None)
        .await
        .unwrap();
    let viewer = client(Some(VIEWER));
    let page = get_text(&viewer, app.url("/me")).await;
    assert!(page.contains("id=\"me-hold\""), "{page}");
    let token = confirm(&app, &viewer, &key).await;
    assert_eq!(revoke(&app, &viewer, &key, &token).await.status(), 303);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 1);
    assert!(app.fake.keys_of(&viewer_id).is_empty());
    // Without the box ticked nothing happens.
    let other = app.fake.add_key(&viewer_id, "other", None);
    let token = confirm(&app, &viewer, &other).await;
    let url = app.url(&format!("/me/keys/{other}/revoke"));
    let r = post_as(&viewer, url, &[("form_token", token.as_str())]).await;
    assert_eq!(r.status(), 422);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 1);
}

/// `keydesk demo --as ada@example.com`: the owner's view in one command.
#[tokio::test]
async fn the_demo_signs_in_as_a_seeded_owner() {
    let (_child, base, _logs) = spawn_args(&["demo", "--as", ADA], &[]).await;
    let browser = client(None);
    let r = browser.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/me");
    let page = get_text(&browser, format!("{base}/me")).await;
    assert!(page.contains("My keys") && page.contains(ADA), "{page}");
    assert!(page.contains("my-revoke"), "Ada's keys, each with Revoke");
    assert_eq!(status_as(&browser, format!("{base}/users")).await, 403);
    // Without --as, the demo identity is still the operator.
    let (_op, base, _) = spawn_args(&["demo"], &[]).await;
    assert_eq!(status_as(&browser, format!("{base}/users")).await, 200);
}

/// `keydesk demo` starts with one finished scan of its fake: the reports,
/// the Privileged keys one first, have content on the first visit.
#[tokio::test]
async fn the_demo_opens_with_a_finished_scan_and_privileged_keys() {
    let (_child, base, _logs) = spawn_args(&["demo"], &[]).await;
    let browser = client(None);
    let page = get_text(&browser, format!("{base}/reports/keys/privileged")).await;
    assert!(!page.contains("privileged-no-scan"), "{page}");
    assert!(page.contains("id=\"privileged-table\""), "{page}");
    assert!(
        page.contains("data-level=\"root\""),
        "a root-equivalent key"
    );
    assert!(
        page.contains("id=\"nav-privileged\""),
        "the report is in the navigation"
    );
    let report = get_text(&browser, format!("{base}/reports/keys")).await;
    assert!(!report.contains("No scan yet"), "{report}");
}
