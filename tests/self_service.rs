//! "My keys" beyond revoking: owners ask for keys and rotate them under
//! `KEYDESK_SELF_SERVICE` (off, request, direct), inside the approval rules,
//! the hold and the audit. Every cell checks what reached the fake Vultr.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use keydesk::audit::Filter;
use keydesk::fake_vultr::FakeVultr;
use keydesk::self_service::{Mode, SelfService};

const ADA: &str = "ada@example.com";
const GRACE: &str = "grace@example.com";

/// Viewer VIEWER; operators STAFF and BOSS, both approvers; self-service in
/// `mode`; `rules` for KEYDESK_APPROVAL_FOR.
fn options(mode: Mode, rules: &[&str]) -> Options {
    Options {
        self_service: SelfService { mode, max_days: 90 },
        ..approval_options(rules, Duration::from_secs(3600))
    }
}

/// Gives `email` a Vultr user of its own with one key, "laptop"; its id.
fn own_user(fake: &FakeVultr, email: &str, id: &str) -> String {
    let id = fake.add_user(keydesk::vultr::User {
        id: id.into(),
        email: Some(email.into()),
        api_enabled: Some(true),
        ..Default::default()
    });
    fake.add_key(&id, "laptop", Some(time::Duration::days(30)));
    id
}

/// Everything but reads that reached the fake, as (method, path).
fn writes(app: &TestApp) -> Vec<(String, String)> {
    app.fake
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| (r.method, r.path))
        .collect()
}

async fn entries(app: &TestApp, action: &str) -> Vec<keydesk::audit::Entry> {
    let f = Filter {
        action: Some(action.into()),
        ..Default::default()
    };
    app.state.audit.list(&f, 100, 0).await.unwrap()
}

/// The form at `path` as `who` sees it: its token, or "" when refused.
async fn token_at(app: &TestApp, who: &reqwest::Client, path: &str) -> String {
    let r = who.get(app.url(path)).send().await.unwrap();
    if r.status() != 200 {
        return String::new();
    }
    hidden_token(&r.text().await.unwrap())
}

/// Asks for a key on "My keys" through the form, as a browser would.
async fn ask(app: &TestApp, who: &reqwest::Client, fields: &[(&str, &str)]) -> reqwest::Response {
    let token = token_at(app, who, "/me/keys/new").await;
    let mut form = vec![("form_token", token.as_str())];
    form.extend_from_slice(fields);
    post_as(who, app.url("/me/keys/new"), &form).await
}

#[tokio::test]
async fn off_by_default_my_keys_stays_read_only() {
    let app = TestApp::spawn().await;
    let id = app.user_id(ADA);
    let key = app.fake.keys_of(&id)[0].id.clone();
    let owner = client(Some(ADA));
    let page = get_text(&owner, app.url("/me")).await;
    assert!(page.contains("id=\"self-service-off\""), "{page}");
    assert!(!page.contains("me-new-key") && !page.contains("my-rotate"));
    assert!(page.contains("my-revoke"), "revoking stays");
    for path in ["/me/keys/new".to_string(), format!("/me/keys/{key}/rotate")] {
        let r = owner.get(app.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.text().await.unwrap().contains("KEYDESK_SELF_SERVICE=off"));
        let r = post_as(&owner, app.url(&path), &[("name", "x"), ("expire", "true")]).await;
        assert_eq!(r.status(), 404, "{path}");
    }
    assert!(writes(&app).is_empty());
}

/// The role matrix over every "My keys" route and two staff pages:
/// anonymous, signed in with no Vultr user, owner, viewer, operator,
/// approver. Each cell: the status, and exactly what reached Vultr.
#[tokio::test]
async fn the_role_matrix_over_every_my_keys_route() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let ada = user_id_in(&fake, ADA);
    let viewer_id = own_user(&fake, VIEWER, "0000000000ab1");
    let boss_id = own_user(&fake, BOSS, "0000000000ab2");
    let app = TestApp::spawn_with(fake, options(Mode::Direct, &[])).await;
    let keys = |id: &str| format!("/v2/users/{id}/apikeys");
    let ada_key = app.fake.keys_of(&ada)[0].id.clone();
    let create = [
        ("name", "matrix"),
        ("expire", "true"),
        ("date_expire", &date_in(30)),
    ];
    let create: Vec<(&str, &str)> = create.iter().map(|(k, v)| (*k, *v)).collect();

    // (who, their own Vultr user if any, staff pages' status)
    let people: [(Option<&str>, Option<&str>, u16); 6] = [
        (None, None, 401),
        (Some("stranger@example.com"), None, 403),
        (Some(ADA), Some(&ada), 403),
        (Some(VIEWER), Some(&viewer_id), 200),
        (Some(STAFF), None, 200),
        (Some(BOSS), Some(&boss_id), 200),
    ];
    for (who, mine, staff) in people {
        let c = client(who);
        let label = who.unwrap_or("anonymous");
        let none: u16 = if who.is_none() { 401 } else { 403 };
        app.fake.clear_log();
        // Staff pages.
        assert_eq!(
            status_as(&c, app.url("/users")).await,
            staff,
            "{label} /users"
        );
        assert_eq!(
            status_as(&c, app.url("/approvals")).await,
            staff,
            "{label} /approvals"
        );
        // GET /me and the new-key form.
        let ok = if mine.is_some() { 200 } else { none };
        assert_eq!(status_as(&c, app.url("/me")).await, ok, "{label} /me");
        assert_eq!(
            status_as(&c, app.url("/me/keys/new")).await,
            ok,
            "{label} new"
        );
        assert!(writes(&app).is_empty(), "{label}: pages write nothing");
        if who.is_none() {
            assert!(app.fake.requests().is_empty(), "anonymous reaches nothing");
        }
        // Ada's key: hers alone. Anyone else is refused, audited, 0 writes.
        let own = mine == Some(ada.as_str());
        let on_ada = if own { 200 } else { none };
        for step in ["rotate", "revoke"] {
            let path = app.url(&format!("/me/keys/{ada_key}/{step}"));
            assert_eq!(status_as(&c, path).await, on_ada, "{label} GET {step}");
        }
        if !own {
            for step in ["rotate", "revoke"] {
                let path = format!("/me/keys/{ada_key}/{step}");
                let token = token_at(&app, &c, &path).await;
                let form = [
                    ("form_token", token.as_str()),
                    ("expire", "true"),
                    ("date_expire", &date_in(30)),
                    CONFIRMED,
                ];
                let r = post_as(&c, app.url(&path), &form).await;
                assert_eq!(r.status(), none, "{label} POST {step}");
            }
            assert!(
                writes(&app).is_empty(),
                "{label}: nothing sent for Ada's key"
            );
        }
        // Asking for a key: made for their own user, or refused.
        let r = ask(&app, &c, &create).await;
        match mine {
            Some(id) => {
                assert_eq!(r.status(), 200, "{label} asks");
                let body = r.text().await.unwrap();
                assert!(revealed_key(&body).is_some(), "{label}: shown once");
                assert_eq!(writes(&app), vec![("POST".into(), keys(id))], "{label}");
            }
            None => {
                assert_eq!(r.status(), none, "{label} asks");
                assert!(writes(&app).is_empty(), "{label}: nothing made");
            }
        }
    }
    // Ada's request (a key that never expires waits): who may open it, and
    // who may carry it out (nobody but Ada, and only once approved).
    let r = ask(&app, &client(Some(ADA)), &[("name", "forever")]).await;
    assert_eq!(r.status(), 202);
    let request = request_of(&r.text().await.unwrap());
    let page = format!("/approvals/{request}");
    let execute = format!("/approvals/{request}/execute");
    for (who, _, staff) in people {
        let c = client(who);
        let label = who.unwrap_or("anonymous");
        let none: u16 = if who.is_none() { 401 } else { 403 };
        let sees = if staff == 200 || who == Some(ADA) {
            200
        } else {
            none
        };
        assert_eq!(status_as(&c, app.url(&page)).await, sees, "{label} sees");
        app.fake.clear_log();
        let r = post_as(&c, app.url(&execute), &[]).await;
        let refused = if who == Some(ADA) { 409 } else { none };
        assert_eq!(r.status(), refused, "{label} executes a pending request");
        assert!(writes(&app).is_empty(), "{label}: nothing sent");
    }

    // Ada rotates, then revokes, her own key: one POST, one DELETE, hers.
    let c = client(Some(ADA));
    app.fake.clear_log();
    let path = format!("/me/keys/{ada_key}/rotate");
    let token = token_at(&app, &c, &path).await;
    let form = [
        ("form_token", token.as_str()),
        ("expire", "true"),
        ("date_expire", &date_in(60)),
    ];
    let r = post_as(&c, app.url(&path), &form).await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let revoke_old = format!("/me/keys/{ada_key}/revoke");
    assert!(body.contains(&revoke_old), "the reveal offers to retire it");
    let token = token_at(&app, &c, &revoke_old).await;
    let r = post_as(
        &c,
        app.url(&revoke_old),
        &[("form_token", token.as_str()), CONFIRMED],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        writes(&app),
        vec![
            ("POST".into(), keys(&ada)),
            ("DELETE".into(), format!("{}/{ada_key}", keys(&ada)))
        ]
    );
    // Every try on Ada's key by another owner was audited as denied: the
    // viewer and BOSS each opened rotate and revoke twice and posted both.
    // (Without a Vultr user of their own, the others never got that far.)
    let denied = entries(&app, "access.denied").await;
    let on_key = denied
        .iter()
        .filter(|e| e.key_id.as_deref() == Some(ada_key.as_str()))
        .count();
    assert_eq!(on_key, 2 * 6);
}

/// `direct`: within the limit the owner sees the key once; over it, or
/// never expiring, it waits (202, nothing sent).
#[tokio::test]
async fn direct_mode_makes_short_keys_at_once_and_the_rest_wait() {
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), options(Mode::Direct, &[])).await;
    let id = app.user_id(ADA);
    let owner = client(Some(ADA));
    let page = get_text(&owner, app.url("/me")).await;
    assert!(page.contains("id=\"me-new-key\"") && page.contains("within 90 days"));

    // Within 90 days: made, shown once, never again.
    let token = token_at(&app, &owner, "/me/keys/new").await;
    let form = [
        ("form_token", token.as_str()),
        ("name", "deploy-bot"),
        ("expire", "true"),
        ("date_expire", &date_in(90)),
        ("reason", "INC-7"),
    ];
    let r = post_as(&owner, app.url("/me/keys/new"), &form).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = r.text().await.unwrap();
    let secret = revealed_key(&body).unwrap();
    assert!(app.fake.secrets().contains(&secret));
    assert!(body.contains("href=\"/me\""), "back to My keys");
    assert!(!body.contains("href=\"/users"), "no staff links");
    let again = post_as(&owner, app.url("/me/keys/new"), &form).await;
    assert_eq!(again.status(), 409);
    assert!(!again.text().await.unwrap().contains(&secret));
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);
    let made = entries(&app, "key.create").await;
    assert_eq!(made.len(), 1);
    assert_eq!(
        (made[0].actor.as_str(), made[0].role.as_str()),
        (ADA, "self-service")
    );
    assert_eq!(made[0].target_user_id.as_deref(), Some(id.as_str()));

    // Over the limit, and never expiring: each waits, nothing is sent.
    for fields in [
        vec![
            ("name", "long"),
            ("expire", "true"),
            ("date_expire", &*date_in(91)),
        ],
        vec![("name", "forever")],
    ] {
        let r = ask(&app, &owner, &fields).await;
        assert_eq!(r.status(), 202, "{fields:?}");
        let body = r.text().await.unwrap();
        assert!(body.contains("Back to my keys"), "{body}");
    }
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);
    let waiting = app.state.approvals.list(None, 10).await.unwrap();
    assert_eq!(waiting.len(), 2);
    assert!(waiting.iter().all(|a| a.requested_by == ADA));
    assert!(waiting.iter().any(|a| a.why.contains("never")));
    let requests = entries(&app, "approval.request").await;
    assert!(requests.iter().all(|e| e.role == "self-service"));
    // The owner sees them on "My keys", linked.
    let page = get_text(&owner, app.url("/me")).await;
    assert_eq!(page.matches("class=\"my-request\"").count(), 2, "{page}");
}

/// The approval rules apply on top: under all-keys even a short key waits.
#[tokio::test]
async fn the_approval_rules_apply_on_top_of_direct() {
    let opts = options(Mode::Direct, &["all-keys"]);
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let owner = client(Some(ADA));
    let fields = [
        ("name", "short"),
        ("expire", "true"),
        ("date_expire", &*date_in(7)),
    ];
    let r = ask(&app, &owner, &fields).await;
    assert_eq!(r.status(), 202);
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
    let a = &app.state.approvals.list(None, 10).await.unwrap()[0];
    assert!(a.why.contains("every new key"), "{}", a.why);
}

/// `request`: approved by someone else, then carried out once by the owner,
/// who sees the key; the approver never does. Nobody approves their own.
#[tokio::test]
async fn request_mode_the_owner_executes_once_after_someone_else_approves() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let boss_id = own_user(&fake, BOSS, "0000000000ab2");
    let app = TestApp::spawn_with(fake, options(Mode::Request, &[])).await;
    let ada = app.user_id(ADA);
    let owner = client(Some(ADA));
    let fields = [
        ("name", "ci"),
        ("expire", "true"),
        ("date_expire", &*date_in(30)),
    ];
    let r = ask(&app, &owner, &fields).await;
    assert_eq!(r.status(), 202);
    let id = request_of(&r.text().await.unwrap());
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);

    // The owner sees their request, with no way to decide it.
    let page = get_text(&owner, app.url(&format!("/approvals/{id}"))).await;
    assert!(!page.contains("id=\"approve\"") && !page.contains("id=\"execute\""));
    let r = post_as(&owner, app.url(&format!("/approvals/{id}/approve")), &[]).await;
    assert_eq!(r.status(), 403, "an owner never approves");
    // Someone else without a role cannot even see it.
    let grace = client(Some(GRACE));
    assert_eq!(
        status_as(&grace, app.url(&format!("/approvals/{id}"))).await,
        403
    );

    // An approver who is an owner cannot approve their own request either.
    let boss = client(Some(BOSS));
    let r = ask(&app, &boss, &fields).await;
    assert_eq!(r.status(), 202);
    let own = request_of(&r.text().await.unwrap());
    let page = get_text(&boss, app.url(&format!("/approvals/{own}"))).await;
    assert!(!page.contains("id=\"approve\""), "{page}");
    let r = post_as(&boss, app.url(&format!("/approvals/{own}/approve")), &[]).await;
    assert_eq!(r.status(), 403);

    // BOSS approves Ada's; Ada carries it out, once.
    assert_eq!(press(&app, &boss, &id, "approve").await.status(), 303);
    let r = press(&app, &owner, &id, "execute").await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let secret = revealed_key(&body).unwrap();
    assert!(body.contains("href=\"/me\""));
    assert_eq!(
        app.fake.count("POST", &format!("/v2/users/{ada}/apikeys")),
        1
    );
    let again = post_as(&owner, app.url(&format!("/approvals/{id}/execute")), &[]).await;
    assert!(matches!(again.status().as_u16(), 403 | 409));
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);
    // The approver never sees the key.
    let page = get_text(&boss, app.url(&format!("/approvals/{id}"))).await;
    assert!(page.contains("id=\"approval-done\"") && !page.contains(&secret));
    let made = entries(&app, "key.create").await;
    assert_eq!(made.len(), 1);
    let e = &made[0];
    assert_eq!((e.actor.as_str(), e.role.as_str()), (ADA, "self-service"));
    assert_eq!(e.approved_by.as_deref(), Some(BOSS));
    assert!(
        app.fake.keys_of(&boss_id).len() == 1,
        "BOSS's own request still waits"
    );
}

/// The hold from an offboarding: an owner keeps revoking, but gets nothing new.
#[tokio::test]
async fn a_held_owner_gets_no_new_key_in_any_mode() {
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), options(Mode::Direct, &[])).await;
    let id = app.user_id(ADA);
    let key = app.fake.keys_of(&id)[0].id.clone();
    let owner = client(Some(ADA));
    // Forms opened before the offboarding.
    let new_token = token_at(&app, &owner, "/me/keys/new").await;
    let rotate = format!("/me/keys/{key}/rotate");
    let rotate_token = token_at(&app, &owner, &rotate).await;
    app.state
        .holds
        .place(&id, Some(ADA), STAFF, Some("left"), None)
        .await
        .unwrap();
    let page = get_text(&owner, app.url("/me")).await;
    assert!(page.contains("id=\"self-service-held\"") && !page.contains("my-rotate"));
    let short = [("expire", "true"), ("date_expire", &*date_in(10))];
    let mut form = vec![("form_token", new_token.as_str()), ("name", "again")];
    form.extend_from_slice(&short);
    let r = post_as(&owner, app.url("/me/keys/new"), &form).await;
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("offboarded"));
    // Over the limit it would be a request: refused too, none stored.
    let long = [
        ("name", "long"),
        ("expire", "true"),
        ("date_expire", &*date_in(200)),
    ];
    assert_eq!(ask(&app, &owner, &long).await.status(), 409);
    let mut form = vec![("form_token", rotate_token.as_str())];
    form.extend_from_slice(&short);
    assert_eq!(post_as(&owner, app.url(&rotate), &form).await.status(), 409);
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
    assert!(app.state.approvals.list(None, 10).await.unwrap().is_empty());
}

/// The owner's Vultr email changes after the form: refused before any write,
/// for a direct key and for an approved request alike.
#[tokio::test]
async fn an_owner_whose_email_changed_gets_no_key() {
    let mut opts = options(Mode::Direct, &[]);
    opts.upstream.cache_ttl = Duration::from_secs(300);
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let id = app.user_id(ADA);
    let owner = client(Some(ADA));
    let fields = [
        ("name", "x"),
        ("expire", "true"),
        ("date_expire", &*date_in(300)),
    ];
    let r = ask(&app, &owner, &fields).await;
    assert_eq!(r.status(), 202);
    let request = request_of(&r.text().await.unwrap());
    assert_eq!(
        press(&app, &client(Some(BOSS)), &request, "approve")
            .await
            .status(),
        303
    );
    let token = token_at(&app, &owner, "/me/keys/new").await;
    let page = get_text(&owner, app.url(&format!("/approvals/{request}"))).await;
    assert!(page.contains("id=\"execute\""), "{page}");
    app.fake.set_user_email(&id, "ada.new@example.com");

    let form = [
        ("form_token", token.as_str()),
        ("name", "y"),
        ("expire", "true"),
        ("date_expire", &*date_in(10)),
    ];
    assert_eq!(
        post_as(&owner, app.url("/me/keys/new"), &form)
            .await
            .status(),
        403
    );
    let r = press(&app, &owner, &request, "execute").await;
    assert_eq!(r.status(), 410, "the approval covered the old email");
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
}

/// `KEYDESK_SELF_SERVICE_MAX_DAYS` other than 90, on the real binary: the
/// limit reaches the words, the form's default date and the rule. A key
/// one day over it waits (nothing sent); one at the limit is made.
#[tokio::test]
async fn a_day_limit_other_than_90_is_honoured_in_direct_mode() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let (_child, base, _logs) = spawn_binary(&[
        ("KEYDESK_VULTR_API_URL", upstream),
        ("KEYDESK_SELF_SERVICE", "direct".into()),
        ("KEYDESK_SELF_SERVICE_MAX_DAYS", "30".into()),
        ("KEYDESK_APPROVERS", STAFF.into()),
    ])
    .await;
    let owner = client(Some(ADA));
    let new = format!("{base}/me/keys/new");
    let page = get_text(&owner, new.clone()).await;
    assert!(page.contains("within 30 days"), "{page}");
    assert!(page.contains(&date_in(30)), "the default expiry: {page}");
    let send = |days: i64, name: &'static str| {
        let (owner, new) = (owner.clone(), new.clone());
        async move {
            let token = hidden_token(&get_text(&owner, new.clone()).await);
            let date = date_in(days);
            let form = [
                ("form_token", token.as_str()),
                ("name", name),
                ("expire", "true"),
                ("date_expire", date.as_str()),
            ];
            post_as(&owner, new, &form).await.status().as_u16()
        }
    };
    assert_eq!(send(31, "one-over").await, 202);
    assert_eq!(fake.count("POST", "/v2/users"), 0, "waits: nothing sent");
    assert_eq!(send(30, "at-the-limit").await, 200);
    assert_eq!(fake.count("POST", "/v2/users"), 1);
}
