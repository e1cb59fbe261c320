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

const ADA: &str = "ada@example.com";

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

fn approval_options(rules: &[&str]) -> Options {
    common::approval_options(rules, Duration::from_secs(3600))
}

/// An app under these approval rules, and Ada's user id.
async fn with_rules(rules: &[&str]) -> (TestApp, String) {
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), approval_options(rules)).await;
    let ada = app.user_id(ADA);
    (app, ada)
}

/// Posts `step` of request `id` with a token no page issued.
async fn step_without_form(app: &TestApp, id: &str, step: &str) -> reqwest::StatusCode {
    let url = app.url(&format!("/approvals/{id}/{step}"));
    post_as(&app.client, url, &[("form_token", "x")])
        .await
        .status()
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
    let (app, ada) = with_rules(&["no-expiry"]).await;
    let first = approved_request(&app, &ada).await;
    let page = offboard(&app, &ada).await;
    assert!(page.contains(r#"data-kind="approval request""#), "{page}");
    let a = app.state.approvals.get(&first).await.unwrap().unwrap();
    assert_eq!(a.state.as_str(), "withdrawn");
    assert_eq!(step_without_form(&app, &first, "execute").await, 410);

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
    // Nor can anyone ask for a key for a held user: no request is stored.
    let before = app.state.approvals.list(None, 100).await.unwrap().len();
    let r = app.create_key(&ada, &[("name", "forever-again")]).await;
    assert_eq!(
        r.status(),
        409,
        "a request for a held user is refused, not queued"
    );
    assert_eq!(
        app.state.approvals.list(None, 100).await.unwrap().len(),
        before
    );
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

    let (app, ada) = with_rules(&["no-expiry"]).await;
    let id = approved_request(&app, &ada).await;
    app.fake
        .set_fault_after("POST", "/apikeys", Some(Fault::Status(502)));
    let r = press(&app, &app.client, &id, "execute").await;
    assert!(r.status().is_server_error());
    app.fake.set_fault_after("POST", "", None);
    let a = app.state.approvals.get(&id).await.unwrap().unwrap();
    assert_eq!(a.state.as_str(), "done", "never carried out twice");
    assert_eq!(step_without_form(&app, &id, "execute").await, 409);
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

async fn create_entries(app: &TestApp) -> Vec<keydesk::audit::Entry> {
    let f = keydesk::audit::Filter {
        action: Some("key.create".into()),
        ..Default::default()
    };
    app.state.audit.list(&f, 100, 0).await.unwrap()
}

#[tokio::test]
async fn a_lost_create_that_made_a_key_says_only_that_a_key_appeared() {
    let (app, ada) = TestApp::with_user(ADA).await;
    app.fake
        .set_fault_after("POST", "/apikeys", Some(Fault::Status(504)));
    let r = app
        .create_key(&ada, &[("name", "lost-but-made"), ("expire", "false")])
        .await;
    assert_eq!(r.status(), 504);
    app.fake.set_fault_after("POST", "", None);
    let made = app.key_named(&ada, "lost-but-made");

    // The next view of the user settles it from the key list.
    let (status, page) = app.get(&format!("/users/{ada}")).await;
    assert_eq!(status, 200);
    let row = &page[page.find(&format!(r#"data-key-id="{}""#, made.id)).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains("appeared while keydesk's answer was lost"),
        "{row}"
    );
    assert!(row.contains("/delete\""), "Revoke is one click away: {row}");
    assert!(
        page.contains(
            "A key named <strong>lost-but-made</strong> appeared while keydesk's answer was lost"
        ),
        "{page}"
    );
    assert!(!page.contains("never shown"), "nobody knows that: {page}");
    let entries = create_entries(&app).await;
    let settled = entries
        .iter()
        .find(|e| e.actor == "keydesk" && e.key_id.as_deref() == Some(made.id.as_str()))
        .expect("a system entry names the key");
    assert_eq!(settled.outcome, "ok");
    let note = settled.error.as_deref().unwrap();
    assert!(
        note.contains("a key named lost-but-made appeared while entry #"),
        "{note}"
    );
    assert!(!note.contains("never shown"), "{note}");
    // Settled once: another view adds nothing.
    app.get(&format!("/users/{ada}")).await;
    assert_eq!(create_entries(&app).await.len(), entries.len());
    assert_eq!(count(&app, "POST"), 1);
}

/// A key named `name` made for `user` straight at Vultr (as in its
/// console): not through keydesk, dated now. Its id.
async fn made_in_the_console(app: &TestApp, user: &str, name: &str) -> String {
    let body = keydesk::vultr::NewApiKey {
        name: name.into(),
        expire: false,
        date_expire: None,
    };
    let id = keydesk::ids::VultrId::parse(user).unwrap();
    app.state.vultr.create_key(&id, &body).await.unwrap().id
}

/// Views `user`'s page until a system `key.create` entry settles the lost
/// create (`what` names the wait); that entry.
async fn settled_by_a_view(app: &TestApp, user: &str, what: &str) -> keydesk::audit::Entry {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        app.get(&format!("/users/{user}")).await;
        if let Some(e) = create_entries(app)
            .await
            .into_iter()
            .find(|e| e.actor == "keydesk")
        {
            return e;
        }
        assert!(std::time::Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_lost_create_is_not_matched_to_a_same_named_key_that_existed_before_the_intent() {
    let (app, ada) = TestApp::with_pending_bound(300).await;
    // Made in the console a moment before: dated now, named the same.
    let older = made_in_the_console(&app, &ada, "ci").await;
    // The gateway answers 504 without Vultr ever seeing keydesk's create.
    app.fake.set_fault_on("POST", Fault::Status(504));
    let r = app
        .create_key(&ada, &[("name", "ci"), ("expire", "false")])
        .await;
    assert_eq!(r.status(), 504);
    app.fake.set_fault(None);
    let e = settled_by_a_view(&app, &ada, "settled").await;
    assert_eq!(e.outcome, "failed", "{e:?}");
    assert!(
        e.error.as_deref().unwrap().contains("created no key"),
        "{e:?}"
    );
    assert_eq!(e.key_id, None, "the older key is not keydesk's");
    let (_, page) = app.get(&format!("/users/{ada}")).await;
    assert!(page.contains(&older), "{page}");
    assert!(!page.contains("data-appeared-while-lost"), "{page}");
    assert!(!page.contains(r#"id="lost-answers""#), "{page}");
    // The console's create and keydesk's one (lost at the gateway); nothing else.
    assert_eq!(count(&app, "POST"), 2);
    assert_eq!(count(&app, "DELETE"), 0);
    assert_eq!(count(&app, "PATCH"), 0);
}

#[tokio::test]
async fn a_key_dated_after_the_bound_is_not_the_lost_creates() {
    let (app, ada) = TestApp::with_pending_bound(300).await;
    app.fake.set_fault_on("POST", Fault::Status(504));
    let r = app
        .create_key(&ada, &[("name", "ci"), ("expire", "false")])
        .await;
    assert_eq!(r.status(), 504);
    app.fake.set_fault(None);
    // Vultr's dates have whole seconds: well past start + bound, even rounded down.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let late = made_in_the_console(&app, &ada, "ci").await;
    let e = settled_by_a_view(&app, &ada, "settled").await;
    assert!(
        e.error.as_deref().unwrap().contains("created no key"),
        "{e:?}"
    );
    let (_, page) = app.get(&format!("/users/{ada}")).await;
    assert!(page.contains(&late) && !page.contains("data-appeared-while-lost"));
    assert_eq!(count(&app, "POST"), 2);
    assert_eq!(count(&app, "DELETE"), 0);
}

#[tokio::test]
async fn two_keys_that_appeared_leave_a_lost_create_open_as_ambiguous() {
    let (app, ada) = TestApp::with_user(ADA).await;
    // Vultr makes keydesk's key and the answer is lost...
    app.fake
        .set_fault_after("POST", "/apikeys", Some(Fault::Status(504)));
    let r = app
        .create_key(&ada, &[("name", "ci"), ("expire", "false")])
        .await;
    assert_eq!(r.status(), 504);
    app.fake.set_fault_after("POST", "", None);
    let ours = app.key_named(&ada, "ci");
    // ...and someone makes another "ci" in the console meanwhile.
    let theirs = made_in_the_console(&app, &ada, "ci").await;
    let e = settled_by_a_view(&app, &ada, "looked at").await;
    assert_eq!(e.outcome, "unknown", "{e:?}");
    let note = e.error.as_deref().unwrap();
    assert!(
        note.contains("ambiguous") && note.contains(&ours.id) && note.contains(&theirs),
        "{note}"
    );
    assert_eq!(e.key_id, None);

    let (_, page) = app.get(&format!("/users/{ada}")).await;
    let lost = &page[page.find(r#"id="lost-answers""#).expect(&page)..];
    let lost = &lost[..lost.find("</section>").unwrap()];
    assert!(lost.contains(r#"data-lost-state="ambiguous""#), "{lost}");
    assert!(
        lost.contains("appeared while keydesk's answer was lost"),
        "{lost}"
    );
    for id in [&ours.id, &theirs] {
        assert!(
            lost.contains(&format!(r#"data-candidate="{id}""#)),
            "{id}: {lost}"
        );
    }
    assert!(
        !page.contains("data-appeared-while-lost"),
        "neither is called made"
    );
    let open = app.state.lost.open_for_user(&ada).await.unwrap();
    assert_eq!(open.len(), 1, "still open");
    // Neither another view nor the sweep decides it, or audits it again.
    let before = create_entries(&app).await.len();
    app.get(&format!("/users/{ada}")).await;
    keydesk::reconcile::lost::sweep(&app.state.lost, &app.state.audit, &app.state.vultr).await;
    assert_eq!(create_entries(&app).await.len(), before);
    assert_eq!(app.state.lost.open_for_user(&ada).await.unwrap().len(), 1);
    assert_eq!(count(&app, "POST"), 2);
    assert_eq!(count(&app, "DELETE"), 0);
}

#[tokio::test]
async fn a_lost_create_whose_keys_before_went_unread_never_calls_a_key_made() {
    let (app, ada) = TestApp::with_user(ADA).await;
    let token = app.form_token(&ada).await;
    // The key list just before the create is unreadable: the create still goes.
    app.fake.set_fault_after(
        "GET",
        "/apikeys",
        Some(Fault::Body(r#"{"meta":{}}"#.into())),
    );
    app.fake.set_fault_on("POST", Fault::Status(504));
    let fields = [("name", "ci"), ("expire", "false")];
    let r = app.create_key_with(&ada, &token, &fields).await;
    assert_eq!(r.status(), 504);
    app.fake.set_fault(None);
    app.fake.set_fault_after("GET", "", None);
    let lost = app.state.lost.open_for_user(&ada).await.unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].keys_before, None);
    // A "ci" appears: it may be anyone's, so it is shown, never called made.
    let key = made_in_the_console(&app, &ada, "ci").await;
    let e = settled_by_a_view(&app, &ada, "looked at").await;
    assert_eq!((e.outcome.as_str(), e.key_id.as_deref()), ("unknown", None));
    let (_, page) = app.get(&format!("/users/{ada}")).await;
    assert!(page.contains("did not read the keys before it"), "{page}");
    assert!(
        page.contains(&format!(r#"data-candidate="{key}""#)),
        "{page}"
    );
    assert!(!page.contains("data-appeared-while-lost"), "{page}");
    assert_eq!(count(&app, "POST"), 2, "keydesk's create and the console's");
    assert_eq!(count(&app, "DELETE"), 0);
}

#[tokio::test]
async fn a_create_reads_the_users_keys_just_before_it_uncached() {
    let (app, ada) = TestApp::with_user(ADA).await;
    let ids = |app: &TestApp| -> Vec<String> {
        app.fake.keys_of(&ada).into_iter().map(|k| k.id).collect()
    };
    let mut expected = ids(&app);
    app.fake
        .set_fault_after("POST", "/apikeys", Some(Fault::Status(504)));
    for name in ["one", "two"] {
        app.fake.clear_log();
        let r = app
            .create_key(&ada, &[("name", name), ("expire", "false")])
            .await;
        assert_eq!(r.status(), 504);
        let log = app.fake.requests();
        let post = log.iter().position(|r| r.method == "POST").unwrap();
        let keys = format!("/v2/users/{ada}/apikeys");
        assert!(
            post > 0 && log[post - 1].method == "GET" && log[post - 1].path == keys,
            "the key list, read at Vultr right before the create: {log:?}"
        );
        let lost = app.state.lost.open_for_user(&ada).await.unwrap();
        let kept = lost.iter().find(|l| l.key_name == name).unwrap();
        let mut before: Vec<String> =
            serde_json::from_str(kept.keys_before.as_deref().unwrap()).unwrap();
        before.sort();
        expected.sort();
        assert_eq!(before, expected, "{name}");
        expected = ids(&app);
    }
    // A rotation goes the same way.
    let KeyForm {
        key: old,
        path,
        token,
        ..
    } = app.key_form(&ada, "two", "rotate").await;
    app.fake.clear_log();
    let r = app.submit(&path, &token, &[("expire", "false")]).await;
    assert_eq!(r.status(), 504);
    let lost = app.state.lost.open_for_user(&ada).await.unwrap();
    let kept: Vec<_> = lost.iter().filter(|l| l.key_name == "two").collect();
    assert_eq!(kept.len(), 2, "the create and the rotation");
    let mut before: Vec<String> =
        serde_json::from_str(kept[1].keys_before.as_deref().unwrap()).unwrap();
    before.sort();
    expected.sort();
    assert_eq!(before, expected, "the rotation's");
    assert!(before.contains(&old.id));
    assert_eq!(count(&app, "DELETE"), 0, "the old key is kept");
}

#[tokio::test]
async fn a_lost_create_that_made_nothing_settles_as_not_created_after_the_bound() {
    let (app, ada) = TestApp::with_pending_bound(300).await;
    // The gateway answers 504 without Vultr ever seeing the create.
    app.fake.set_fault_on("POST", Fault::Status(504));
    let r = app
        .create_key(&ada, &[("name", "never-made"), ("expire", "false")])
        .await;
    assert_eq!(r.status(), 504);
    app.fake.set_fault(None);
    let failed = |entries: &[keydesk::audit::Entry]| {
        entries
            .iter()
            .any(|e| e.actor == "keydesk" && e.outcome == "failed")
    };
    // Before the bound, a view leaves it unknown (a slow Vultr may still make it).
    app.get(&format!("/users/{ada}")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        app.get(&format!("/users/{ada}")).await;
        if failed(&create_entries(&app).await) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = create_entries(&app).await;
    let note = e.iter().find(|e| e.actor == "keydesk").unwrap();
    assert!(note.error.as_deref().unwrap().contains("created no key"));
    assert!(
        app.fake
            .keys_of(&ada)
            .iter()
            .all(|k| k.name.as_deref() != Some("never-made"))
    );
}

#[tokio::test]
async fn over_days_holds_a_key_that_never_expires() {
    let (app, ada) = with_rules(&["over-days:90"]).await;
    let r = app.create_key(&ada, &[("name", "forever")]).await;
    assert_eq!(
        r.status(),
        202,
        "a key that never expires lives past 90 days"
    );
    let date = date_in(30);
    let r = app
        .create_key(
            &ada,
            &[
                ("name", "month"),
                ("expire", "true"),
                ("date_expire", &date),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(count(&app, "POST"), 1);
}

#[tokio::test]
async fn nobody_approves_a_key_that_would_reach_themselves() {
    let mut opts = approval_options(&["no-expiry"]);
    opts.access = Access::new(&[], &[STAFF.into(), BOSS.into(), ADA.into()]);
    opts.approvers = vec![BOSS.into(), ADA.into()];
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let ada = app.user_id(ADA);
    let r = app.create_key(&ada, &[("name", "for-ada")]).await;
    assert_eq!(r.status(), 202);
    let id = request_of(&r.text().await.unwrap());
    let recipient = client(Some("  ADA@example.com "));
    let page = get_text(&recipient, app.url(&format!("/approvals/{id}"))).await;
    assert!(
        !page.contains(&format!("/approvals/{id}/approve\"")),
        "no approve form"
    );
    let r = post_as(
        &recipient,
        app.url(&format!("/approvals/{id}/approve")),
        &[("form_token", "x")],
    )
    .await;
    assert_eq!(r.status(), 403);
    let a = app.state.approvals.get(&id).await.unwrap().unwrap();
    assert_eq!(a.state.as_str(), "pending");
    assert_eq!(count(&app, "POST"), 0);
}

#[tokio::test]
async fn execution_rereads_the_recipient_and_refuses_a_changed_email() {
    let (app, ada) = with_rules(&["no-expiry"]).await;
    let id = approved_request(&app, &ada).await;
    app.fake.set_user_email(&ada, "mallory@example.com");
    let r = press(&app, &app.client, &id, "execute").await;
    assert_eq!(r.status(), 410);
    let body = r.text().await.unwrap();
    assert!(body.contains("mallory@example.com"), "{body}");
    assert_eq!(count(&app, "POST"), 0);
    let a = app.state.approvals.get(&id).await.unwrap().unwrap();
    assert_eq!(a.state.as_str(), "withdrawn", "a new request is needed");
}

#[tokio::test]
async fn an_interrupted_execution_is_settled_unknown_and_never_runs() {
    let mut opts = approval_options(&["no-expiry"]);
    opts.pending_bound = Duration::ZERO;
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let ada = app.user_id(ADA);
    let id = approved_request(&app, &ada).await;
    // A process stopped right after starting the execution.
    assert!(app.state.approvals.begin_execute(&id, STAFF).await.unwrap());
    // Past the bound (zero here, once the clock has moved on), the sweep settles it.
    eventually("the sweep to settle the execution", || async {
        app.state.approvals.sweep(&app.state.audit).await;
        let a = app.state.approvals.get(&id).await.unwrap().unwrap();
        a.state.as_str() == "done"
    })
    .await;
    let f = keydesk::audit::Filter {
        outcome: Some("unknown".into()),
        ..Default::default()
    };
    let unknown = app.state.audit.list(&f, 10, 0).await.unwrap();
    assert!(
        unknown
            .iter()
            .any(|e| e.approval_id.as_deref() == Some(id.as_str()) && e.actor == "keydesk"),
        "{unknown:?}"
    );
    assert_eq!(step_without_form(&app, &id, "execute").await, 409);
    assert_eq!(count(&app, "POST"), 0);
}

#[tokio::test]
async fn one_identity_compared_one_way() {
    let (app, ada) = TestApp::with_user(ADA).await;
    // The same operator, however the proxy spells them.
    let shouty = client(Some("  Staff@Example.COM"));
    let page = get_text(&shouty, app.url(&format!("/users/{ada}"))).await;
    assert!(page.contains("id=\"role\">operator"), "{page}");
    let token = hidden_token(&page);
    let r = post_as(
        &shouty,
        app.url(&format!("/users/{ada}/keys")),
        &[
            ("form_token", token.as_str()),
            ("name", "n"),
            ("expire", "false"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let e = create_entries(&app).await;
    assert_eq!(e[0].actor, STAFF, "the audit holds the one normalised form");

    // Someone with no role: a 403 that claims no role and shows no staff navigation.
    let nobody = client(Some("nobody@example.com"));
    let r = nobody.get(app.url("/users")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("nobody@example.com"));
    assert!(!body.contains("id=\"role\""), "{body}");
    assert!(!body.contains("· <span"), "{body}");
    assert!(
        !body.contains("aria-label=\"Main\""),
        "no staff navigation: {body}"
    );
}

/// Polls `check` until it holds, for at most 10 s.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_offboarding_outlives_its_request_and_any_replica_shows_its_progress() {
    let dir = std::env::temp_dir().join(format!(
        "keydesk-offboard-job-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("kd.db").display());
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), Options::on(&db)).await;
    let other = app.replica(Options::on(&db)).await;
    let ada = app.user_id(ADA);
    let keys = app.fake.keys_of(&ada).len();
    assert!(keys > 0);
    let path = format!("/users/{ada}/offboard");
    let token = app.token_of(&path).await;
    app.fake.hold("DELETE", "/v2/users/");
    let browser = {
        let req = app
            .client
            .post(app.url(&path))
            .form(&[("form_token", token.as_str()), ("reason", "left")]);
        tokio::spawn(async move { req.send().await })
    };
    wait_until("a revocation to reach Vultr", || app.fake.held() == 1).await;
    // The browser gives up while the revocations are under way.
    browser.abort();
    assert!(browser.await.is_err(), "the request was dropped");
    let (_, page) = other.get(&format!("/users/{ada}")).await;
    assert!(
        page.contains(r#"id="offboarding-progress" data-state="running""#),
        "{page}"
    );
    assert!(page.contains(&format!("0 of {keys} keys")), "{page}");
    app.fake.release();
    wait_until("every key revoked", || app.fake.keys_of(&ada).is_empty()).await;
    eventually("the run to be recorded done", || async {
        let o = other
            .state
            .offboardings
            .latest_for_user(&ada)
            .await
            .unwrap();
        o.is_some_and(|o| o.state == "done")
    })
    .await;
    let (_, page) = other.get(&format!("/users/{ada}")).await;
    assert!(!page.contains("id=\"offboarding-progress\""), "{page}");
    assert!(page.contains("id=\"user-hold\""));
    assert_eq!(count(&app, "DELETE"), keys);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn an_offboarding_cut_short_shows_unfinished_and_finish_completes_it() {
    let (app, ada) = TestApp::with_user(ADA).await;
    // A run whose process stopped: its row stays `running`, its heartbeat ages.
    app.state
        .offboardings
        .start(424242, &ada, STAFF)
        .await
        .unwrap();
    eventually("the heartbeat to age", || async {
        app.state.offboardings.sweep(0).await.unwrap() == 1
    })
    .await;
    let (_, page) = app.get(&format!("/users/{ada}")).await;
    assert!(page.contains(r#"data-state="unfinished""#), "{page}");
    assert!(page.contains("id=\"finish-offboarding\""), "{page}");
    let page = offboard(&app, &ada).await;
    assert!(page.contains("id=\"offboard-done\""), "{page}");
    assert!(app.fake.keys_of(&ada).is_empty());
    let (_, page) = app.get(&format!("/users/{ada}")).await;
    assert!(!page.contains("id=\"offboarding-progress\""), "{page}");
}

#[tokio::test]
async fn under_api_access_on_reinstating_needs_a_second_person() {
    let (app, ada) = with_rules(&["api-access-on"]).await;
    offboard(&app, &ada).await;
    let path = format!("/users/{ada}/reinstate");
    let token = app.token_of(&path).await;
    let r = app
        .submit(&path, &token, &[("reason", "rehired, HR-3")])
        .await;
    assert_eq!(r.status(), 202, "a request, not a reinstatement");
    let id = request_of(&r.text().await.unwrap());
    assert!(
        app.state.holds.get(&ada).await.unwrap().is_some(),
        "still on hold"
    );
    let boss = client(Some(BOSS));
    assert_eq!(press(&app, &boss, &id, "approve").await.status(), 303);
    let r = press(&app, &app.client, &id, "execute").await;
    assert_eq!(r.status(), 303);
    assert!(
        app.state.holds.get(&ada).await.unwrap().is_none(),
        "reinstated"
    );
    let f = keydesk::audit::Filter {
        action: Some("user.reinstate".into()),
        ..Default::default()
    };
    let e = app.state.audit.list(&f, 10, 0).await.unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].approved_by.as_deref(), Some(BOSS));
    assert_eq!(
        count(&app, "POST") + count(&app, "DELETE"),
        app.fake.count("DELETE", "/v2/users")
    );
}

#[tokio::test]
async fn offboarding_also_withdraws_a_claim_link_whose_answer_was_lost() {
    let (app, ada) = TestApp::with_user(ADA).await;
    let claim = grant(&app, &ada).await;
    let owner = client(Some(ADA));
    let token = hidden_token(&get_text(&owner, app.url(&claim)).await);
    // The gateway answers 504 and Vultr never saw the create.
    app.fake.set_fault_on("POST", Fault::Status(504));
    let r = post_as(&owner, app.url(&claim), &[("form_token", token.as_str())]).await;
    assert!(r.status().is_server_error());
    app.fake.set_fault(None);
    let grant_id = claim.rsplit('/').next().unwrap();
    let g = app.state.grants.get(grant_id).await.unwrap().unwrap();
    assert_eq!(g.state.as_str(), "unknown");
    let page = offboard(&app, &ada).await;
    assert!(page.contains(&format!(r#"data-id="{grant_id}""#)), "{page}");
    let g = app.state.grants.get(grant_id).await.unwrap().unwrap();
    assert_eq!(
        g.state.as_str(),
        "revoked",
        "it can never reopen for a leaver"
    );
}

#[tokio::test]
async fn a_revocation_whose_answer_was_lost_is_finished_without_a_second_delete() {
    let (app, ada) = TestApp::with_user(ADA).await;
    let keys = app.fake.keys_of(&ada).len();
    // Vultr deletes each key, then a gateway loses every answer.
    app.fake
        .set_fault_after("DELETE", "", Some(Fault::Status(504)));
    let page = offboard(&app, &ada).await;
    app.fake.set_fault_after("DELETE", "", None);
    assert!(page.contains("id=\"offboard-unfinished\""), "{page}");
    // A DELETE keeps its own rule: repeating it is safe, so a 504 reads as
    // failed (still live) and Finish looks again.
    assert!(
        page.contains(r#"data-outcome="failed" class="still-live""#),
        "{page}"
    );
    assert!(
        app.fake.keys_of(&ada).is_empty(),
        "they were deleted all the same"
    );
    assert_eq!(count(&app, "DELETE"), keys);
    // Finish: the list is read again; nothing is left, nothing is deleted twice.
    let token = hidden_token(&page[page.find("id=\"offboard-form\"").unwrap()..]);
    let r = app
        .submit(
            &format!("/users/{ada}/offboard"),
            &token,
            &[("reason", "finish")],
        )
        .await;
    let done = r.text().await.unwrap();
    assert!(done.contains("id=\"offboard-done\""), "{done}");
    assert_eq!(count(&app, "DELETE"), keys, "no second DELETE");
}

#[tokio::test]
async fn an_offboarding_whose_brake_fails_still_holds_and_revokes_and_says_so() {
    let (app, ada) = TestApp::with_user(ADA).await;
    app.fake.set_fault_on("PATCH", Fault::Status(500));
    let page = offboard(&app, &ada).await;
    app.fake.set_fault(None);
    assert!(
        page.contains(r#"id="offboard-brake" data-outcome="failed""#),
        "{page}"
    );
    assert!(page.contains("API access may still be on"), "{page}");
    assert!(page.contains(r#"id="offboard-hold" data-outcome="done""#));
    assert!(
        app.fake.keys_of(&ada).is_empty(),
        "every key revoked regardless"
    );
    assert!(app.state.holds.get(&ada).await.unwrap().is_some());
    let r = app
        .create_key(&ada, &[("name", "x"), ("expire", "false")])
        .await;
    assert_eq!(r.status(), 409, "held although the brake failed");
}

/// With the users cache on (as deployed), every write that changes what a
/// page shows is visible on the next page without `?refresh`: the brake and
/// offboarding (API access, on the user page and the users list), a claim,
/// an approval's execution and the clean-up (the keys).
#[tokio::test]
async fn the_cache_never_shows_a_page_older_than_a_write() {
    let mut opts = approval_options(&["no-expiry"]);
    opts.upstream.cache_ttl = Duration::from_secs(300);
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let (ada, grace) = (app.user_id(ADA), app.user_id("grace@example.com"));
    let access_of = |page: &str| page.contains(r#"id="api-access-off""#);
    let users_off = |list: &str| list.matches(r#"<span class="off">off</span>"#).count();
    // Fill the cache: the users list and both user pages.
    let list_before = app.get("/users").await.1;
    for id in [&ada, &grace] {
        assert!(!access_of(&app.get(&format!("/users/{id}")).await.1));
    }

    // The brake.
    let path = format!("/users/{ada}/api-access");
    let token = app.token_of(&path).await;
    let fields = [("enabled", "false"), ("reason", "INC-9"), CONFIRMED];
    assert_eq!(app.submit(&path, &token, &fields).await.status(), 303);
    assert!(
        access_of(&app.get(&format!("/users/{ada}")).await.1),
        "brake"
    );
    let list = app.get("/users").await.1;
    assert_eq!(
        users_off(&list),
        users_off(&list_before) + 1,
        "users list after the brake"
    );

    // Offboarding: access off and no key left, on the next page.
    offboard(&app, &grace).await;
    let page = app.get(&format!("/users/{grace}")).await.1;
    assert!(access_of(&page), "offboarding");
    assert!(app.fake.keys_of(&grace).is_empty());
    for k in ["terraform", "ci-runner", "monitoring", "legacy-cron"] {
        assert!(!page.contains(&format!(">{k}<")), "{k} still listed");
    }
    let list = app.get("/users").await.1;
    assert_eq!(
        users_off(&list),
        users_off(&list_before) + 2,
        "users list after offboarding"
    );

    // A claim: Ada's page, cached before, lists the claimed key at once.
    let alan = app.user_id("alan@example.com");
    let _ = app.get(&format!("/users/{alan}")).await;
    let had: Vec<String> = app.fake.keys_of(&alan).into_iter().map(|k| k.id).collect();
    let link = grant(&app, &alan).await;
    let owner = client(Some("alan@example.com"));
    let page = get_text(&owner, app.url(&link)).await;
    let token = hidden_token(&page);
    let r = post_as(&owner, app.url(&link), &[("form_token", token.as_str())]).await;
    assert_eq!(r.status(), 200);
    let made = app
        .fake
        .keys_of(&alan)
        .into_iter()
        .find(|k| !had.contains(&k.id))
        .unwrap();
    assert!(
        app.get(&format!("/users/{alan}"))
            .await
            .1
            .contains(&made.id),
        "claim"
    );

    // An approval's execution.
    let margaret = app.user_id("margaret@example.com");
    let _ = app.get(&format!("/users/{margaret}")).await;
    let had: Vec<String> = app
        .fake
        .keys_of(&margaret)
        .into_iter()
        .map(|k| k.id)
        .collect();
    let id = approved_request(&app, &margaret).await;
    let exec = format!("/approvals/{id}");
    let token = app.token_of(&exec).await;
    let r = app.submit(&format!("{exec}/execute"), &token, &[]).await;
    assert_eq!(r.status(), 200);
    let forever = app
        .fake
        .keys_of(&margaret)
        .into_iter()
        .find(|k| !had.contains(&k.id))
        .expect("the approved key was made");
    let page = app.get(&format!("/users/{margaret}")).await.1;
    assert!(page.contains(&forever.id), "approval execution");

    // The clean-up: expired keys gone from the user page at once.
    let don = app.user_id("don@example.com");
    let expired: Vec<String> = app
        .fake
        .keys_of(&don)
        .into_iter()
        .filter(|k| k.state() == keydesk::vultr::KeyState::Expired)
        .map(|k| k.id)
        .collect();
    assert!(!expired.is_empty());
    let _ = app.get(&format!("/users/{don}")).await;
    app.start_scan().await;
    scan_idle(&app).await;
    let token = app.token_of("/reports/keys/revoke-expired").await;
    let r = app
        .post_form("/reports/keys/revoke-expired", &[("form_token", &token)])
        .await;
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    let page = app.get(&format!("/users/{don}")).await.1;
    for k in &expired {
        assert!(!page.contains(k.as_str()), "clean-up: {k} still listed");
    }
}

/// The clean-up runs on after the browser that started it goes away: every
/// selected key is revoked and audited, none twice.
#[tokio::test]
async fn the_cleanup_finishes_after_the_browser_disconnects() {
    let app = TestApp::spawn().await;
    let expired: Vec<(String, String)> = app
        .fake
        .users()
        .iter()
        .flat_map(|u| {
            app.fake
                .keys_of(&u.id)
                .into_iter()
                .filter(|k| k.state() == keydesk::vultr::KeyState::Expired)
                .map(|k| (u.id.clone(), k.id))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(expired.len() >= 2, "the demo data has expired keys");
    app.start_scan().await;
    scan_idle(&app).await;
    let token = app.token_of("/reports/keys/revoke-expired").await;
    app.fake.hold("DELETE", "/v2/users/");
    let post = {
        let (c, url) = (app.client.clone(), app.url("/reports/keys/revoke-expired"));
        tokio::spawn(async move { post_as(&c, url, &[("form_token", token.as_str())]).await })
    };
    wait_until("the first revocation to reach Vultr", || {
        app.fake.held() >= 1
    })
    .await;
    // The browser goes away mid-run.
    post.abort();
    let _ = post.await;
    app.fake.release();
    within("every expired key revoked after the disconnect", async {
        while expired
            .iter()
            .any(|(u, k)| app.fake.keys_of(u).iter().any(|x| &x.id == k))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(count(&app, "DELETE"), expired.len(), "none twice");
    within("every revocation audited", async {
        loop {
            let f = keydesk::audit::Filter {
                action: Some("key.revoke".into()),
                outcome: Some("ok".into()),
                ..Default::default()
            };
            let n = app.state.audit.list(&f, 500, 0).await.unwrap().len();
            if n == expired.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
