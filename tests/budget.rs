//! The shared Vultr budget is not spent for free, and a GET has no effect
//! upstream: what reaches the fake Vultr (list reads, user reads, writes)
//! is counted for "My keys" forms, ids in any case, the clean-up page, and
//! staff pages behind a gate that made a mistake.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use keydesk::audit::Filter;
use keydesk::fake_vultr::FakeVultr;

const ADA: &str = "ada@example.com";
const STRANGER: &str = "stranger@example.com";

/// Reads of the users list (any page) that reached the fake.
fn list_reads(app: &TestApp) -> usize {
    app.fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/v2/users")
        .count()
}

/// Requests that reached the fake with `method` on exactly `path`.
fn exactly(app: &TestApp, method: &str, path: &str) -> usize {
    app.fake
        .requests()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

/// Every audit entry so far.
async fn audited(app: &TestApp) -> i64 {
    app.state.audit.count(&Filter::default()).await.unwrap()
}

/// An app whose users list stays cached for five minutes, as deployed
/// (`KEYDESK_CACHE_TTL` is on by default; the tests' default is off).
async fn cached_app() -> TestApp {
    let mut opts = Options::default();
    opts.upstream.cache_ttl = Duration::from_secs(300);
    TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await
}

/// Twenty forms from someone who is no key owner, with no token: at most
/// one read of the users list in all (the cache answers the rest), nothing
/// written upstream; past the quota the answer is a 429 with Retry-After,
/// and nothing more is read or written.
#[tokio::test]
async fn twenty_forms_from_a_stranger_cost_at_most_one_list_read() {
    let app = cached_app().await;
    let key = app.fake.keys_of(&app.user_id(ADA))[0].id.clone();
    let stranger = client(Some(STRANGER));
    let url = app.url(&format!("/me/keys/{key}/revoke"));
    let first = post_as(&stranger, url.clone(), &[CONFIRMED]).await;
    assert_eq!(first.status(), 403);
    let one_read = list_reads(&app);
    assert!(one_read >= 1, "the first form fills the cache");
    let mut statuses = vec![first.status().as_u16()];
    let mut limited = Vec::new();
    let audit_before = audited(&app).await;
    for _ in 1..20 {
        let r = post_as(&stranger, url.clone(), &[CONFIRMED]).await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            limited.push(r);
        }
    }
    assert_eq!(list_reads(&app), one_read, "no list read after the first");
    assert!(
        app.fake.requests().iter().all(|r| r.method == "GET"),
        "nothing but reads reached Vultr"
    );
    // The default quota: ten at once, then one a second.
    assert_eq!(&statuses[..10], &[403; 10], "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    let r = limited.remove(0);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    let page = r.text().await.unwrap();
    assert!(page.contains("Nothing was done"), "{page}");
    assert_eq!(
        audited(&app).await,
        audit_before,
        "a refusal writes nothing"
    );
}

/// The quota is per person: one person's refusals leave another's forms
/// alone, and a limited form reaches neither Vultr nor the audit.
#[tokio::test]
async fn the_quota_is_per_person_and_a_limited_form_sends_nothing() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let url = fake.spawn().await.unwrap();
    let settings = keydesk::state::Settings {
        me_posts: keydesk::post_quota::PostRate {
            per_minute: 1,
            burst: 2,
        },
        ..Options::default().settings(&url)
    };
    let (base, state) = serve(settings).await;
    let app = TestApp::assemble(base, fake, client(Some(STAFF)), state);
    let ada_id = app.user_id(ADA);
    let key = app.fake.keys_of(&ada_id)[0].id.clone();
    let ada = client(Some(ADA));
    let revoke = app.url(&format!("/me/keys/{key}/revoke"));
    let token = hidden_token(&get_text(&ada, revoke.clone()).await);
    // Two forms with a stale token: refused in words (the quota allows two).
    for _ in 0..2 {
        let r = post_as(&ada, revoke.clone(), &[("form_token", "stale"), CONFIRMED]).await;
        assert_eq!(r.status(), 403);
    }
    let (requests, entries) = (app.fake.requests().len(), audited(&app).await);
    // The third, with a good token: limited, nothing read, sent or written.
    let r = post_as(&ada, revoke.clone(), &[("form_token", &token), CONFIRMED]).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((2..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(app.fake.requests().len(), requests, "nothing reached Vultr");
    assert_eq!(audited(&app).await, entries, "nothing audited");
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 0);
    // Someone else's forms are not counted against Ada.
    let grace = client(Some("grace@example.com"));
    let grace_id = app.user_id("grace@example.com");
    let theirs = app.fake.keys_of(&grace_id)[0].id.clone();
    let url = app.url(&format!("/me/keys/{theirs}/revoke"));
    let token = hidden_token(&get_text(&grace, url.clone()).await);
    let r = post_as(&grace, url, &[("form_token", &token), CONFIRMED]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 1);
}

/// An owner's revocation: the owner comes from the cached list (no list
/// read at submit), then one uncached GET /v2/users/{id} confirms them.
#[tokio::test]
async fn an_owners_form_reads_the_owner_once_uncached_and_no_list() {
    let app = cached_app().await;
    let id = app.user_id(ADA);
    let key = app.fake.keys_of(&id)[0].id.clone();
    let ada = client(Some(ADA));
    let url = app.url(&format!("/me/keys/{key}/revoke"));
    let token = hidden_token(&get_text(&ada, url.clone()).await);
    let (lists, user_reads) = (
        list_reads(&app),
        exactly(&app, "GET", &format!("/v2/users/{id}")),
    );
    let r = post_as(&ada, url, &[("form_token", &token), CONFIRMED]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(list_reads(&app), lists, "no list read at submit");
    assert_eq!(
        exactly(&app, "GET", &format!("/v2/users/{id}")),
        user_reads + 1,
        "one uncached read of the owner"
    );
    assert_eq!(
        exactly(&app, "DELETE", &format!("/v2/users/{id}/apikeys/{key}")),
        1
    );
}

/// A form with a token that is not good stops at the token: no read of the
/// owner at Vultr, nothing sent.
#[tokio::test]
async fn a_bad_token_stops_before_the_owner_is_read_at_vultr() {
    let app = cached_app().await;
    let id = app.user_id(ADA);
    let key = app.fake.keys_of(&id)[0].id.clone();
    let ada = client(Some(ADA));
    let url = app.url(&format!("/me/keys/{key}/revoke"));
    let _ = get_text(&ada, url.clone()).await;
    let user_reads = exactly(&app, "GET", &format!("/v2/users/{id}"));
    let lists = list_reads(&app);
    let r = post_as(&ada, url, &[("form_token", "forged"), CONFIRMED]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(exactly(&app, "GET", &format!("/v2/users/{id}")), user_reads);
    assert_eq!(list_reads(&app), lists);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 0);
}

/// An id in upper case reaches the same hold, form scope and brake as the
/// lower-case one Vultr uses: one spelling, set once at the boundary.
#[tokio::test]
async fn an_upper_case_id_reaches_the_same_hold_form_and_brake() {
    let app = TestApp::spawn().await;
    let ada = app.user_id(ADA);
    let upper = ada.to_ascii_uppercase();
    assert_ne!(upper, ada, "the seeded id has letters");
    app.state
        .holds
        .place(&ada, Some(ADA), STAFF, Some("left"), None)
        .await
        .unwrap();
    // A form from the lower-case page, sent to the upper-case path: the
    // same scope, and the hold refuses it. Nothing sent.
    let token = app.form_token(&ada).await;
    let r = app
        .create_key_with(&upper, &token, &[("name", "shouting")])
        .await;
    assert_eq!(r.status(), 409, "{}", r.text().await.unwrap());
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);

    // The brake on another user, through the upper-case path.
    let grace = app.user_id("grace@example.com");
    let grace_upper = grace.to_ascii_uppercase();
    let (status, page) = app.get(&format!("/users/{grace_upper}")).await;
    assert_eq!(status, 200, "{page}");
    let (_, confirm) = app.get(&format!("/users/{grace}/api-access")).await;
    let t = hidden_token(&confirm);
    let r = app
        .submit(
            &format!("/users/{grace_upper}/api-access"),
            &t,
            &[("enabled", "false"), CONFIRMED],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(exactly(&app, "PATCH", &format!("/v2/users/{grace}")), 1);
    let f = Filter {
        action: Some("user.api_access".into()),
        ..Default::default()
    };
    let brake = app.state.audit.list(&f, 10, 0).await.unwrap();
    assert_eq!(brake.len(), 1);
    assert_eq!(brake[0].target_user_id.as_deref(), Some(grace.as_str()));
}

/// Opening the clean-up page with no scan starts nothing (a link on another
/// site could open it); its button is a POST with a form token that starts
/// the scan and comes back.
#[tokio::test]
async fn opening_the_cleanup_page_starts_no_scan() {
    let app = TestApp::spawn().await;
    let before = app.fake.requests().len();
    let (status, page) = app.get("/reports/keys/revoke-expired").await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"cleanup-scan-form\""), "{page}");
    assert!(
        !page.contains("http-equiv=\"refresh\""),
        "nothing to wait for"
    );
    // Nothing reached Vultr and no scan runs.
    assert_eq!(app.fake.requests().len(), before);
    let snap = app.state.reports.snapshot().await.unwrap();
    assert!(snap.running.is_none() && snap.last.is_none());

    // The button: a POST with its token, back to the clean-up page.
    let token = hidden_token(&page);
    let r = app
        .submit("/reports/keys/scan", &token, &[("then", "revoke-expired")])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/reports/keys/revoke-expired");
    scan_idle(&app).await;
    assert!(list_reads(&app) >= 1, "the POST started the scan");
    let (_, page) = app.get("/reports/keys/revoke-expired").await;
    assert!(page.contains("name=\"key\""), "{page}");
    // The same button again: a replay starts nothing more.
    let reads = list_reads(&app);
    let r = app
        .submit("/reports/keys/scan", &token, &[("then", "revoke-expired")])
        .await;
    assert_eq!(r.status(), 303);
    scan_idle(&app).await;
    assert_eq!(list_reads(&app), reads);
}

/// Every staff GET handler takes `Staff` (or `Operator`) itself: behind a
/// gate that wrongly let someone without a role through, each still
/// answers 403 and reads nothing at Vultr.
#[tokio::test]
async fn a_gate_mistake_opens_no_staff_page() {
    use axum::routing::get;
    use keydesk::identity::{Identity, Role};
    use keydesk::pages::{
        allowlist, approvals, audit, brake, cleanup, grants, keys, notices, offboard, privileged,
        reinstate, reports, users,
    };

    let app = TestApp::spawn().await;
    let ada = app.user_id(ADA);
    let key = app.fake.keys_of(&ada)[0].id.clone();
    // The gate's mistake: a person with no role, on every path.
    let wrong_gate = axum::middleware::from_fn(
        |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
            req.extensions_mut().insert(Identity {
                email: STRANGER.into(),
                groups: vec![],
                role: Role::Claimant,
            });
            next.run(req).await
        },
    );
    let sessions = tower_sessions::SessionManagerLayer::new(
        keydesk::session_store::DbSessionStore::new(app.state.db.clone()),
    )
    .with_secure(false);
    let router = axum::Router::new()
        .route("/users", get(users::users_list))
        .route("/users/{id}", get(users::user_show))
        .route("/users/{id}/keys", get(users::keys_anchor))
        .route(
            "/users/{id}/keys/{key_id}/delete",
            get(keys::revoke::revoke_confirm),
        )
        .route(
            "/users/{id}/keys/{key_id}/rotate",
            get(keys::rotate::rotate_form),
        )
        .route(
            "/users/{id}/api-access",
            get(keydesk::pages::confirm::show::<brake::BrakeConfirmView>),
        )
        .route(
            "/users/{id}/offboard",
            get(keydesk::pages::confirm::show::<offboard::OffboardConfirmView>),
        )
        .route(
            "/users/{id}/reinstate",
            get(keydesk::pages::confirm::show::<reinstate::ReinstateView>),
        )
        .route("/users/{id}/allowlist", get(allowlist::add_form))
        .route("/grants", get(grants::grants_list))
        .route("/approvals", get(approvals::approvals_list))
        .route("/notices", get(notices::notices_list))
        .route("/reports/keys", get(reports::keys_report))
        .route(
            "/reports/keys/revoke-expired",
            get(cleanup::cleanup_confirm),
        )
        .route(
            "/reports/keys/privileged",
            get(privileged::privileged_report),
        )
        .route(
            "/reports/keys/privileged.csv",
            get(privileged::privileged_csv),
        )
        .route("/audit", get(audit::audit_list))
        .route("/audit.csv", get(audit::audit_csv))
        .route("/audit.jsonl", get(audit::audit_jsonl))
        .layer(wrong_gate)
        .layer(sessions)
        .with_state(app.state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let before = app.fake.requests().len();
    let browser = client(None);
    for path in [
        "/users".to_string(),
        format!("/users/{ada}"),
        format!("/users/{ada}/keys"),
        format!("/users/{ada}/keys/{key}/delete"),
        format!("/users/{ada}/keys/{key}/rotate"),
        format!("/users/{ada}/api-access"),
        format!("/users/{ada}/offboard"),
        format!("/users/{ada}/reinstate"),
        format!("/users/{ada}/allowlist"),
        "/grants".into(),
        "/approvals".into(),
        "/notices".into(),
        "/reports/keys".into(),
        "/reports/keys/revoke-expired".into(),
        "/reports/keys/privileged".into(),
        "/reports/keys/privileged.csv".into(),
        "/audit".into(),
        "/audit.csv".into(),
        "/audit.jsonl".into(),
    ] {
        let status = status_as(&browser, format!("{base}{path}")).await;
        assert_eq!(status, 403, "{path}");
    }
    assert_eq!(app.fake.requests().len(), before, "nothing read at Vultr");
    let snap = app.state.reports.snapshot().await.unwrap();
    assert!(snap.running.is_none(), "no scan started");
}

/// `KEYDESK_ME_POSTS_PER_MINUTE` and `KEYDESK_ME_POSTS_BURST` on the real
/// binary: the third form of a burst of two is a 429 whose Retry-After
/// follows the per-minute rate.
#[tokio::test]
async fn the_quota_comes_from_the_environment() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let (_child, base, _logs) = spawn_binary(&[
        ("KEYDESK_VULTR_API_URL", upstream),
        ("KEYDESK_ME_POSTS_PER_MINUTE", "2".into()),
        ("KEYDESK_ME_POSTS_BURST", "2".into()),
    ])
    .await;
    let stranger = client(Some(STRANGER));
    let url = format!("{base}/me/keys/0123abcd/revoke");
    let mut statuses = vec![];
    let mut wait = 0;
    for _ in 0..3 {
        let r = post_as(&stranger, url.clone(), &[CONFIRMED]).await;
        statuses.push(r.status().as_u16());
        if let Some(v) = r.headers().get("retry-after") {
            wait = v.to_str().unwrap().parse().unwrap();
        }
    }
    assert_eq!(statuses, [403, 403, 429]);
    assert!((10..=30).contains(&wait), "Retry-After {wait}");
}

/// An owner's own new key (direct self-service) reads the owner once,
/// uncached, at submit: the rules take its ACLs from that read (before,
/// the write's facts read the owner a second time).
#[tokio::test]
async fn an_owners_new_key_reads_the_owner_once_at_submit() {
    let mut opts = Options {
        self_service: keydesk::self_service::SelfService {
            mode: keydesk::self_service::Mode::Direct,
            max_days: 90,
        },
        ..approval_options(&[], Duration::from_secs(3600))
    };
    opts.upstream.cache_ttl = Duration::from_secs(300);
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let id = app.user_id(ADA);
    let ada = client(Some(ADA));
    let url = app.url("/me/keys/new");
    let token = hidden_token(&get_text(&ada, url.clone()).await);
    let user = format!("/v2/users/{id}");
    let allowlist = format!("/v2/users/{id}/ip-whitelist");
    let (user_reads, allowlist_reads) = (
        exactly(&app, "GET", &user),
        exactly(&app, "GET", &allowlist),
    );
    let date = date_in(30);
    let form = [
        ("form_token", token.as_str()),
        ("name", "laptop-2"),
        ("expire", "true"),
        ("date_expire", date.as_str()),
    ];
    let r = post_as(&ada, url, &form).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        exactly(&app, "GET", &user),
        user_reads + 1,
        "the owner once"
    );
    // One for the rules at the write; one for the reveal page, which shows
    // what the new key can do after the create dropped the cached user.
    assert_eq!(exactly(&app, "GET", &allowlist), allowlist_reads + 2);
    assert_eq!(exactly(&app, "POST", &format!("{user}/apikeys")), 1);
}
