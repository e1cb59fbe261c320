//! Claim links: an operator grants, only the key's owner (signed in as
//! themselves, with or without a keydesk role) creates and sees the key.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use keydesk::fake_vultr::FakeVultr;

const ADA: &str = "ada@example.com";
const STRANGER: &str = "stranger@example.com";

/// The href of `<a id="claim-link" href="…">`.
fn claim_link(page: &str) -> String {
    let start = page
        .find(r#"<a id="claim-link" href=""#)
        .expect("claim link")
        + 25;
    page[start..start + page[start..].find('"').unwrap()].to_string()
}

/// The grant id at the end of a claim link.
fn grant_of(link: &str) -> String {
    link.rsplit('/').next().unwrap().to_string()
}

/// The stored grant a claim link points at.
async fn grant_at(app: &TestApp, link: &str) -> keydesk::grants::Grant {
    let id = grant_of(link);
    app.state.grants.get(&id).await.unwrap().unwrap()
}

/// An operator (the app's own client) grants Ada a key; returns the link.
async fn grant(app: &TestApp, ada: &str, fields: &[(&str, &str)]) -> String {
    let token = app.form_token(ada).await;
    let resp = app
        .submit(&format!("/users/{ada}/grants"), &token, fields)
        .await;
    assert_eq!(resp.status(), 200);
    claim_link(&resp.text().await.unwrap())
}

fn posts(app: &TestApp) -> usize {
    app.fake.count("POST", "/v2/users")
}

#[tokio::test]
async fn the_owner_claims_once_and_only_the_owner_sees_the_key() {
    let opts = Options {
        public_url: Some("https://keydesk.example.com".into()),
        ..Default::default()
    };
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let ada = app.user_id(ADA);
    let date = date_in(90);
    let link = grant(
        &app,
        &ada,
        &[
            ("name", "ci-deploy"),
            ("expire", "true"),
            ("date_expire", &date),
            ("reason", "OPS-7"),
        ],
    )
    .await;
    assert!(
        link.starts_with("https://keydesk.example.com/claim/"),
        "{link}"
    );
    let gid = grant_of(&link);
    assert!(gid.len() >= 32, "at least 128 bits");
    assert_eq!(posts(&app), 0, "granting creates nothing upstream");
    let path = format!("/claim/{gid}");

    // The operator's user page lists the open link; no key yet.
    let (_, user_page) = app.get(&format!("/users/{ada}")).await;
    assert!(user_page.contains("id=\"pending-grants\""));
    assert!(user_page.contains("ci-deploy"));

    // The owner has no keydesk role: only their claim page opens.
    let owner = client(Some(ADA));
    let r = owner.get(app.url("/users")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = owner.get(app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let page = r.text().await.unwrap();
    assert!(page.contains("id=\"claim-submit\""));
    assert!(page.contains(STAFF), "names who granted it");
    assert!(!page.contains("href=\"/users\""), "no staff navigation");
    assert_eq!(posts(&app), 0, "the GET has no side effect");

    let token = hidden_token(&page);
    let resp = post_as(&owner, app.url(&path), &[("form_token", token.as_str())]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let reveal = resp.text().await.unwrap();
    let secret = revealed_key(&reveal).expect("revealed to the owner");
    assert_eq!(reveal.matches(&secret).count(), 1);
    assert_eq!(posts(&app), 1);
    let sent = app.upstream_request("POST");
    assert!(sent.path.ends_with(&format!("/users/{ada}/apikeys")));
    assert!(sent.body.contains("ci-deploy [claim "), "{}", sent.body);
    assert!(sent.body.contains(&date), "{}", sent.body);

    // A replay: 409 and nothing upstream.
    let replay = post_as(&owner, app.url(&path), &[("form_token", token.as_str())]).await;
    assert_eq!(replay.status(), 409);
    assert_eq!(status_as(&owner, app.url(&path)).await, 409);
    assert_eq!(posts(&app), 1);

    // The audit: the owner created it, the operator granted it.
    let f = keydesk::audit::Filter {
        action: Some("grant.claim".into()),
        ..Default::default()
    };
    let entries = app.state.audit.list(&f, 10, 0).await.unwrap();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(
        (
            e.actor.as_str(),
            e.granted_by.as_deref(),
            e.outcome.as_str()
        ),
        (ADA, Some(STAFF), "ok")
    );
    assert_eq!(e.grant_id.as_deref(), Some(gid.as_str()));
    assert_eq!(e.role, "claimant");
    assert_eq!(app.audit_count("grant.create").await, 1);
    let (_, audit) = app.get("/audit").await;
    assert!(audit.contains("granted by staff@example.com"));
    let (_, jsonl) = app.get("/audit.jsonl").await;
    assert!(jsonl.contains("\"granted_by\":\"staff@example.com\""));

    // The operator's pages, after the claim: never the key.
    for p in [format!("/users/{ada}"), "/grants".into(), "/audit".into()] {
        let (_, body) = app.get(&p).await;
        assert!(!body.contains(&secret), "{p}");
    }
    let (_, grants) = app.get("/grants?state=claimed").await;
    assert!(grants.contains("data-grant-state=\"claimed\""));
    // The key counts as keydesk's in the report.
    app.start_scan().await;
    scan_idle(&app).await;
    let report = app.state.reports.snapshot().await.unwrap().last.unwrap();
    let row = report
        .rows
        .iter()
        .find(|r| {
            r.key
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("ci-deploy"))
        })
        .unwrap();
    assert!(!row.outside, "a claimed key is created by keydesk");
}

#[tokio::test]
async fn nobody_but_the_owner_may_open_or_claim() {
    let (app, ada) = TestApp::with_user(ADA).await;
    let link = grant(&app, &ada, &[("name", "mine")]).await;
    assert!(link.starts_with("/claim/"), "relative without a public URL");
    let path = link;
    let owner = client(Some(ADA));
    let token = hidden_token(&get_text(&owner, app.url(&path)).await);
    for who in [STAFF, VIEWER, STRANGER] {
        let c = client(Some(who));
        let r = c.get(app.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{who}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("mine"), "{who} learns nothing about the key");
        let r = post_as(&c, app.url(&path), &[("form_token", token.as_str())]).await;
        assert_eq!(r.status(), 403, "{who}");
    }
    assert_eq!(posts(&app), 0);
    // A stranger still gets 403 everywhere else.
    let stranger = client(Some(STRANGER));
    for p in ["/users", "/grants", "/audit"] {
        assert_eq!(status_as(&stranger, app.url(p)).await, 403);
    }
    // Case does not matter for the owner's email.
    let upper = client(Some("ADA@Example.com"));
    assert_eq!(status_as(&upper, app.url(&path)).await, 200);
}

#[tokio::test]
async fn eight_concurrent_claims_create_one_key() {
    let (app, ada) = TestApp::with_user(ADA).await;
    let path = grant(&app, &ada, &[("name", "race")]).await;
    let owner = client(Some(ADA));
    // Eight tabs, each with its own form, pressed at once.
    let mut tokens = vec![];
    for _ in 0..8 {
        tokens.push(hidden_token(&get_text(&owner, app.url(&path)).await));
    }
    one_tab_wins(&owner, app.url(&path), tokens).await;
    assert_eq!(posts(&app), 1);
}

#[tokio::test]
async fn expired_and_withdrawn_links_are_gone() {
    let opts = Options {
        claim_ttl: Duration::ZERO,
        ..Default::default()
    };
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let ada = app.user_id(ADA);
    let path = grant(&app, &ada, &[("name", "late")]).await;
    let owner = client(Some(ADA));
    let r = owner.get(app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 410);
    let r = post_as(&owner, app.url(&path), &[("form_token", "x")]).await;
    assert_eq!(r.status(), 410);
    assert_eq!(app.audit_count("grant.expire").await, 1);
    assert_eq!(posts(&app), 0);

    let (app, ada) = TestApp::with_user(ADA).await;
    let path = grant(&app, &ada, &[("name", "withdrawn")]).await;
    let owner_token = hidden_token(&get_text(&owner, app.url(&path)).await);
    let gid = grant_of(&path);
    let resp = app
        .through_form(
            &format!("/grants/{gid}/revoke"),
            &[("reason", "wrong user")],
        )
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(app.audit_count("grant.revoke").await, 1);
    let r = owner.get(app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 410);
    let r = post_as(
        &owner,
        app.url(&path),
        &[("form_token", owner_token.as_str())],
    )
    .await;
    assert_eq!(r.status(), 410);
    assert_eq!(posts(&app), 0);
    // Withdrawing again: the link is no longer pending.
    let again = app.response(&format!("/grants/{gid}/revoke")).await;
    assert_eq!(again.status(), 410);
    // A viewer cannot withdraw.
    let viewer = client(Some(VIEWER));
    let r = viewer
        .get(app.url(&format!("/grants/{gid}/revoke")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(status_as(&viewer, app.url("/grants")).await, 200);
}

#[tokio::test]
async fn a_changed_email_at_vultr_refuses_the_claim() {
    let (app, ada) = TestApp::with_user(ADA).await;
    let path = grant(&app, &ada, &[("name", "moved")]).await;
    let owner = client(Some(ADA));
    let token = hidden_token(&get_text(&owner, app.url(&path)).await);
    app.fake.set_user_email(&ada, "someone-else@example.com");
    let r = post_as(&owner, app.url(&path), &[("form_token", token.as_str())]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(posts(&app), 0);
}

/// Ada claims a new link named `name` and the answer is cut off: before
/// Vultr saw the create, or (`made`) after it made the key. Returns the
/// link's path and Ada's client.
async fn claim_cut_off(
    app: &TestApp,
    ada: &str,
    name: &str,
    made: bool,
) -> (String, reqwest::Client) {
    use keydesk::fake_vultr::Fault;
    let path = grant(app, ada, &[("name", name)]).await;
    let owner = client(Some(ADA));
    let token = hidden_token(&get_text(&owner, app.url(&path)).await);
    if made {
        app.fake
            .set_fault_after("POST", "/apikeys", Some(Fault::Truncated));
    } else {
        app.fake.set_fault_on("POST", Fault::Truncated);
    }
    let r = post_as(&owner, app.url(&path), &[("form_token", token.as_str())]).await;
    app.fake.set_fault(None);
    app.fake.set_fault_after("POST", "", None);
    assert_eq!(r.status(), 504, "outcome unknown");
    (path, owner)
}

/// A claim whose create answer is lost leaves the grant `unknown`.
async fn lost_claim(app: &TestApp, ada: &str, name: &str) -> keydesk::grants::Grant {
    let (path, owner) = claim_cut_off(app, ada, name, false).await;
    let g = grant_at(app, &path).await;
    assert_eq!(g.state, keydesk::grants::GrantState::Unknown);
    // Before the bound the link stays closed: Vultr may still be making it.
    let early = owner.get(app.url(&path)).send().await.unwrap();
    assert_eq!(early.status(), 409, "unknown is not failed");
    // Once past the bound, opening the link settles it from the key list.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = owner.get(app.url(&path)).send().await.unwrap();
        if again.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reconciled: {}",
            again.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    g
}

#[tokio::test]
async fn a_lost_answer_is_reconciled_from_the_key_list() {
    use keydesk::grants::GrantState;
    let (app, ada) = TestApp::with_pending_bound(500).await;
    // Nothing was created: opening the link reconciles it back to pending.
    let g = lost_claim(&app, &ada, "lost").await;
    let now = app.state.grants.get(&g.id).await.unwrap().unwrap();
    assert_eq!(now.state, GrantState::Pending);

    // Vultr made the key, then the answer was cut off: the tagged key is in
    // the list, so opening the link settles the grant as claimed at once.
    let (path, owner) = claim_cut_off(&app, &ada, "made", true).await;
    let again = owner.get(app.url(&path)).send().await.unwrap();
    assert_eq!(again.status(), 409, "claimed: the link is used");
    let made = grant_at(&app, &path).await;
    assert_eq!(made.state, GrantState::Claimed);
    let key = app.key_named(&ada, &made.vultr_key_name());
    assert_eq!(made.key_id.as_deref(), Some(key.id.as_str()));
    assert_eq!(posts(&app), 2, "one create per claim, never a second");
    // The other case below needs a link that is pending again.
    let g = lost_claim(&app, &ada, "made").await;
    // The other branch: a claim whose process stopped mid-call (left
    // `claiming`) becomes unknown once past the bound, and the key exists.
    assert!(app.state.grants.begin_claim(&g.id, ADA).await.unwrap());
    // What the write path keeps before the claim's create (it stopped after).
    let before: Vec<String> = app.fake.keys_of(&ada).into_iter().map(|k| k.id).collect();
    let before = serde_json::to_string(&before).unwrap();
    assert!(
        app.state
            .grants
            .set_keys_before(&g.id, &before)
            .await
            .unwrap()
    );
    let mut abandoned = 0;
    for _ in 0..200 {
        abandoned = app
            .state
            .grants
            .abandon_stale_claims(Duration::ZERO)
            .await
            .unwrap();
        if abandoned > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(abandoned, 1);
    // The key that stopped claim made (dated now: Vultr dates it when made).
    let key = made_in_the_console(&app, &ada, &g.vultr_key_name()).await;
    let (status, _) = app.get(&format!("/users/{ada}")).await;
    assert_eq!(status, 200);
    let now = app.state.grants.get(&g.id).await.unwrap().unwrap();
    assert_eq!(now.state, GrantState::Claimed);
    assert_eq!(now.key_id.as_deref(), Some(key.as_str()));
    assert_eq!(
        posts(&app),
        4,
        "one attempt per claim (the last one's key made above), never a second create"
    );
    let owner = client(Some(ADA));
    let r = owner
        .get(app.url(&format!("/claim/{}", g.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

/// A key for `user` named `name` made straight at Vultr (as in its
/// console), dated now; its id.
async fn made_in_the_console(app: &TestApp, user: &str, name: &str) -> String {
    let body = keydesk::vultr::NewApiKey {
        name: name.into(),
        expire: false,
        date_expire: None,
    };
    let id = keydesk::ids::VultrId::parse(user).unwrap();
    app.state.vultr.create_key(&id, &body).await.unwrap().id
}

#[tokio::test]
async fn a_lost_claim_is_not_matched_to_a_tagged_key_that_existed_before_it() {
    use keydesk::grants::GrantState;
    let (app, ada) = TestApp::with_pending_bound(300).await;
    let path = grant(&app, &ada, &[("name", "ci")]).await;
    let g = app
        .state
        .grants
        .get(&grant_of(&path))
        .await
        .unwrap()
        .unwrap();
    // A key bearing the link's very name, made in the console beforehand.
    let older = made_in_the_console(&app, &ada, &g.vultr_key_name()).await;
    // The claim is cut off before Vultr sees it: nothing of its own exists.
    let owner = client(Some(ADA));
    let token = hidden_token(&get_text(&owner, app.url(&path)).await);
    app.fake
        .set_fault_on("POST", keydesk::fake_vultr::Fault::Truncated);
    let r = post_as(&owner, app.url(&path), &[("form_token", token.as_str())]).await;
    app.fake.set_fault(None);
    assert_eq!(r.status(), 504);
    // Past the bound, the link works again: the older key is not its key.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = owner.get(app.url(&path)).send().await.unwrap();
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 409, "never claimed with the older key");
        assert!(std::time::Instant::now() < deadline, "never reconciled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = app.state.grants.get(&g.id).await.unwrap().unwrap();
    assert_eq!(now.state, GrantState::Pending);
    assert_eq!(now.key_id, None);
    assert!(app.fake.keys_of(&ada).iter().any(|k| k.id == older));
    assert_eq!(posts(&app), 2, "the console's create and the claim's one");
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 0);
}

#[tokio::test]
async fn two_tagged_keys_leave_a_lost_claim_unknown_and_ambiguous() {
    use keydesk::grants::GrantState;
    let (app, ada) = TestApp::with_pending_bound(300).await;
    // Vultr makes the claim's key and the answer is cut off...
    let (path, owner) = claim_cut_off(&app, &ada, "ci", true).await;
    let g = app
        .state
        .grants
        .get(&grant_of(&path))
        .await
        .unwrap()
        .unwrap();
    let ours = app.key_named(&ada, &g.vultr_key_name());
    // ...and another key with that name is made in the console meanwhile.
    let theirs = made_in_the_console(&app, &ada, &g.vultr_key_name()).await;
    let r = owner.get(app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("more than one key with its name appeared"),
        "{text}"
    );
    let now = app.state.grants.get(&g.id).await.unwrap().unwrap();
    assert_eq!(now.state, GrantState::Unknown);
    assert_eq!(now.key_id, None, "neither is called the claim's");
    // The operator's page shows each candidate.
    let (_, page) = app.get(&format!("/users/{ada}")).await;
    assert!(page.contains("ambiguous: keys named"), "{page}");
    for id in [&ours.id, &theirs] {
        assert!(page.contains(&format!(r#"data-candidate="{id}""#)), "{id}");
    }
    // Past the bound it never reopens: a link that may have made a key stays shut.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = owner.get(app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let now = app.state.grants.get(&g.id).await.unwrap().unwrap();
    assert_eq!(now.state, GrantState::Unknown);
    let claims = app
        .state
        .audit
        .list(
            &keydesk::audit::Filter {
                action: Some("grant.claim".into()),
                ..Default::default()
            },
            100,
            0,
        )
        .await
        .unwrap();
    let system: Vec<_> = claims.iter().filter(|e| e.actor == "keydesk").collect();
    assert_eq!(system.len(), 1, "audited once: {system:?}");
    assert_eq!(system[0].outcome, "unknown");
    assert!(system[0].error.as_deref().unwrap().contains("ambiguous"));
    assert_eq!(posts(&app), 2);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 0);
}

#[tokio::test]
async fn a_claim_link_reveals_its_key_exactly_once_anywhere() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let dir = std::env::temp_dir().join(format!("keydesk-claims-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("keydesk.db");
    let (child, base, rx) = spawn_binary(&[
        ("KEYDESK_VULTR_API_URL", upstream.clone()),
        ("KEYDESK_AUDIT_DB", format!("sqlite://{}", db.display())),
        ("KEYDESK_PUBLIC_URL", "https://keydesk.example.com".into()),
        ("RUST_LOG", "trace".into()),
    ])
    .await;
    let staff = client(Some(STAFF));
    let ada = user_id_in(&fake, ADA);
    let token = hidden_token(&get_text(&staff, format!("{base}/users/{ada}")).await);
    let created = post_as(
        &staff,
        format!("{base}/users/{ada}/grants"),
        &[("form_token", token.as_str()), ("name", "handoff")],
    )
    .await;
    let mut captured = format!("{:?}", created.headers());
    let page = created.text().await.unwrap();
    captured.push_str(&page);
    let path = claim_link(&page).replace("https://keydesk.example.com", "");

    let owner = client(Some(ADA));
    let claim_page = owner.get(format!("{base}{path}")).send().await.unwrap();
    captured.push_str(&format!("{:?}", claim_page.headers()));
    let claim_page = claim_page.text().await.unwrap();
    captured.push_str(&claim_page);
    let resp = post_as(
        &owner,
        format!("{base}{path}"),
        &[("form_token", hidden_token(&claim_page).as_str())],
    )
    .await;
    let reveal_headers = format!("{:?}", resp.headers());
    let reveal = resp.text().await.unwrap();
    let secret = revealed_key(&reveal).expect("revealed");
    assert_eq!(reveal.matches(&secret).count(), 1, "once on the reveal");
    captured.push_str(&reveal_headers);
    for p in [
        path.clone(),
        format!("/users/{ada}"),
        "/grants".into(),
        "/audit".into(),
        "/audit.jsonl".into(),
        "/audit.csv".into(),
    ] {
        for c in [&staff, &owner] {
            let r = c.get(format!("{base}{p}")).send().await.unwrap();
            captured.push_str(&format!("{:?}", r.headers()));
            captured.push_str(&r.text().await.unwrap());
        }
    }
    let (_, logs) = stop_and_drain(child, rx).await;
    assert!(logs.contains("key created"), "trace logs were captured");
    let files = files_text(&dir);
    assert!(files.contains("handoff"), "the database was written");
    for (what, text) in [
        ("logs", &logs),
        ("pages and headers", &captured),
        ("files", &files),
    ] {
        assert!(!text.contains(&secret), "new key found in {what}");
        assert!(!text.contains(ROOT_KEY), "root key found in {what}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn with_smtp_the_owner_is_mailed_the_link_and_never_a_key() {
    let smtp = common::sinks::SmtpSink::start().await;
    let opts = Options {
        public_url: Some("https://keydesk.example.com".into()),
        notify: keydesk::notify::NotifyConfig {
            smtp: Some(secrecy::SecretString::from(smtp.url.clone())),
            from: "keydesk@example.com".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let ada = app.user_id(ADA);
    let token = app.form_token(&ada).await;
    let resp = app
        .submit(
            &format!("/users/{ada}/grants"),
            &token,
            &[("name", "mailed")],
        )
        .await;
    let page = resp.text().await.unwrap();
    assert!(page.contains("id=\"claim-mailed\""), "{page}");
    let link = claim_link(&page);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec![ADA.to_string()]);
    assert!(mails[0].text().contains(&link), "the mail holds the link");
    assert!(
        mails[0]
            .subject()
            .contains("approved a Vultr API key for you")
    );
    // The owner claims; the mail never held the key.
    let owner = client(Some(ADA));
    let path = link.replace("https://keydesk.example.com", "");
    let token = hidden_token(&get_text(&owner, app.url(&path)).await);
    let reveal = post_as(&owner, app.url(&path), &[("form_token", token.as_str())])
        .await
        .text()
        .await
        .unwrap();
    let secret = revealed_key(&reveal).unwrap();
    assert!(!mails[0].data.contains(&secret));
    assert_eq!(smtp.mails().len(), 1, "claiming sends nothing more");
}
