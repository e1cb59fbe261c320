//! The core flow over HTTP: list, paginate, search, open a user, create a key
//! shown exactly once, replays, revoke, and the error paths.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test]
async fn root_redirects_to_the_users_list() {
    let app = TestApp::spawn().await;
    let r = app.response("/").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/users");
}

#[tokio::test]
async fn users_list_paginates_with_the_upstream_cursor() {
    let app = TestApp::spawn().await;
    let (status, page1) = app.get("/users").await;
    assert_eq!(status, 200);
    assert!(page1.contains("25 users in the account"));
    assert!(page1.contains("Ada Lovelace"));
    assert!(!page1.contains("Radia Perlman"), "user 12 is on page 2");
    let next = page1
        .split(r#"id="next-page" href="/users?cursor="#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a next link")
        .to_string();
    let (status, page2) = app.get(&format!("/users?cursor={next}")).await;
    assert_eq!(status, 200);
    assert!(page2.contains("Radia Perlman"));
    assert!(page2.contains(r#"id="prev-page""#));
    // keydesk passed per_page and the cursor through.
    let lists: Vec<_> = app
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v2/users")
        .collect();
    assert_eq!(lists[0].query.as_deref(), Some("per_page=10"));
    assert!(lists[1].query.as_deref().unwrap().contains("cursor="));
}

#[tokio::test]
async fn search_matches_name_or_email_across_all_pages() {
    let app = TestApp::spawn().await;
    // Mallory is user 24 of 25: page 3 at 10 per page.
    let (status, body) = app.get("/users?q=MALLORY").await;
    assert_eq!(status, 200);
    assert!(body.contains("1 match"));
    assert!(body.contains("evil.test"));
    let (_, body) = app.get("/users?q=grace%40example").await;
    assert!(body.contains("Grace Hopper"));
    assert!(
        body.contains(r#"value="grace@example""#),
        "query kept in the box"
    );
    let (_, body) = app.get("/users?q=nobody-like-this").await;
    assert!(body.contains(r#"id="no-match""#));
}

#[tokio::test]
async fn user_page_shows_details_keys_and_the_add_key_form() {
    let (app, id) = TestApp::with_user("ada@example.com").await;
    app.fake.clear_log();
    let (status, body) = app.get(&format!("/users/{id}")).await;
    assert_eq!(status, 200);
    for needle in [
        "Ada Lovelace",
        "terraform",
        "old-laptop",
        "expired",
        "name=\"name\"",
        "name=\"expire\"",
        "type=\"date\"",
        "name=\"date_expire\"",
        "*****",
    ] {
        assert!(body.contains(needle), "missing {needle}");
    }
    // One user GET, one keys GET and one allowlist GET, nothing else.
    assert_eq!(app.fake.count("GET", &format!("/v2/users/{id}")), 3);
    assert_eq!(
        app.fake
            .count("GET", &format!("/v2/users/{id}/ip-whitelist")),
        1
    );
}

#[tokio::test]
async fn key_states_cover_expired_soon_and_never() {
    let app = TestApp::spawn().await;
    let (_, body) = app
        .get(&format!("/users/{}", app.user_id("grace@example.com")))
        .await;
    assert!(body.contains("expires in 3 days"), "{body}");
    assert!(body.contains("never expires"));
}

#[tokio::test]
async fn create_shows_the_key_once_and_sends_exactly_one_post() {
    let (app, id) = TestApp::with_user("ada@example.com").await;
    let token = app.form_token(&id).await;
    app.fake.clear_log();
    let date = date_in(90);
    let r = app
        .create_key_with(
            &id,
            &token,
            &[
                ("name", "  deploy-bot  "),
                ("expire", "true"),
                ("date_expire", &date),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    assert!(
        r.headers()
            .get("set-cookie")
            .is_none_or(|c| !c.to_str().unwrap().contains("deploy"))
    );
    let body = r.text().await.unwrap();
    let secret = revealed_key(&body).expect("the reveal shows the key");
    assert_eq!(secret.len(), 36);
    assert_eq!(body.matches(&secret).count(), 1, "the secret appears once");
    assert!(body.contains("will not be shown again"));
    assert!(body.contains("deploy-bot"));

    let posts: Vec<_> = app
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].path, format!("/v2/users/{id}/apikeys"));
    assert_eq!(
        posts[0].authorization.as_deref(),
        Some(format!("Bearer {ROOT_KEY}").as_str())
    );
    let sent: serde_json::Value = serde_json::from_str(&posts[0].body).unwrap();
    assert_eq!(
        sent,
        serde_json::json!({"name": "deploy-bot", "expire": true, "date_expire": format!("{date}T00:00:00Z")})
    );

    // Back on the user page the key is listed, masked.
    let (_, page) = app.get(&format!("/users/{id}")).await;
    assert!(page.contains("deploy-bot"));
    assert!(!page.contains(&secret));
    assert!(page.contains(&format!("*{}", &secret[31..])));
}

#[tokio::test]
async fn a_key_that_never_expires_is_sent_without_a_date() {
    let (app, id) = TestApp::with_user("alan@example.com").await;
    let token = app.form_token(&id).await;
    let r = app
        .create_key_with(&id, &token, &[("name", "forever"), ("date_expire", "")])
        .await;
    assert_eq!(r.status(), 200);
    let post = app.upstream_request("POST");
    let sent: serde_json::Value = serde_json::from_str(&post.body).unwrap();
    assert_eq!(
        sent,
        serde_json::json!({"name": "forever", "expire": false})
    );
}

#[tokio::test]
async fn replaying_a_create_never_creates_or_reveals_a_second_key() {
    let (app, id) = TestApp::with_user("ada@example.com").await;
    let token = app.form_token(&id).await;
    let form = [
        ("form_token", token.as_str()),
        ("name", "once"),
        ("date_expire", ""),
    ];
    let first = app.post_form(&format!("/users/{id}/keys"), &form).await;
    assert_eq!(first.status(), 200);
    let secret = revealed_key(&first.text().await.unwrap()).unwrap();
    for _ in 0..3 {
        let again = app.post_form(&format!("/users/{id}/keys"), &form).await;
        assert_eq!(again.status(), 409);
        let body = again.text().await.unwrap();
        assert!(revealed_key(&body).is_none());
        assert!(!body.contains(&secret));
        assert!(body.contains("already created"));
        assert!(body.contains(&format!("/users/{id}#keys")));
    }
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);
    // A GET of the create URL (a reload after navigation) is never a reveal.
    let r = app.response(&format!("/users/{id}/keys")).await;
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn eight_concurrent_submissions_create_one_key() {
    let (app, id) = TestApp::with_user("grace@example.com").await;
    let token = app.form_token(&id).await;
    let results = race_eight(&[&app], &id, &token).await;
    let reveals = results
        .iter()
        .filter(|(_, b)| revealed_key(b).is_some())
        .count();
    assert_eq!(reveals, 1, "exactly one reveal");
    assert_eq!(results.iter().filter(|(s, _)| *s == 200).count(), 1);
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);
}

#[tokio::test]
async fn validation_errors_keep_values_and_send_nothing() {
    let (app, id) = TestApp::with_user("ada@example.com").await;
    let long = "x".repeat(300);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("name", "  ")], "Enter a name"),
        (vec![("name", long.as_str())], "too long"),
        (vec![("name", "bad\u{1}name")], "control characters"),
        (vec![("name", "k"), ("expire", "on")], "Choose the date"),
        (
            vec![
                ("name", "k"),
                ("expire", "on"),
                ("date_expire", "2030-02-30"),
            ],
            "real calendar date",
        ),
        (
            vec![
                ("name", "k"),
                ("expire", "on"),
                ("date_expire", "2020-01-01"),
            ],
            "in the future",
        ),
    ];
    for (fields, message) in cases {
        let r = app.create_key(&id, &fields).await;
        assert_eq!(r.status(), 422, "{fields:?}");
        let body = r.text().await.unwrap();
        assert!(body.contains(message), "{message} for {fields:?}");
        if fields[0].1 == "k" {
            assert!(body.contains(r#"value="k""#), "entered name kept");
        }
    }
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
    // After fixing the form, the same token works.
    let token = app.form_token(&id).await;
    let bad = [("form_token", token.as_str()), ("name", "")];
    assert_eq!(
        app.post_form(&format!("/users/{id}/keys"), &bad)
            .await
            .status(),
        422
    );
    let good = [("form_token", token.as_str()), ("name", "fixed")];
    assert_eq!(
        app.post_form(&format!("/users/{id}/keys"), &good)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_post_without_a_valid_form_token_creates_nothing() {
    let (app, id) = TestApp::with_user("ada@example.com").await;
    for token in ["", "forged-token"] {
        let r = app.create_key_with(&id, token, &[("name", "x")]).await;
        assert_eq!(r.status(), 403);
        let body = r.text().await.unwrap();
        assert!(body.contains("expired or was not issued to you"));
        assert!(revealed_key(&body).is_none());
    }
    // A token minted for another staff member does not work either.
    let other = client(Some("other@example.com"));
    let (_, page) = {
        let r = other
            .get(app.url(&format!("/users/{id}")))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    };
    let foreign = hidden_token(&page);
    let r = app.create_key_with(&id, &foreign, &[("name", "x")]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
}

#[tokio::test]
async fn revoke_asks_for_confirmation_naming_the_key_then_deletes_once() {
    let (app, id) = TestApp::with_user("ada@example.com").await;
    let KeyForm {
        key,
        path,
        page: confirm,
        token,
    } = app.key_form(&id, "old-laptop", "delete").await;
    assert!(confirm.contains("Revoke the key “old-laptop”?"));
    // A POST without the confirmation token only shows the confirmation step.
    let r = app.post_form(&path, &[]).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("old-laptop"));
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 0);

    let r = app.submit(&path, &token, &[CONFIRMED]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], format!("/users/{id}"));
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 1);
    assert!(app.fake.keys_of(&id).iter().all(|k| k.id != key.id));
    // The notice after the redirect names the key.
    let (_, page) = app.get(&format!("/users/{id}")).await;
    assert!(page.contains("Revoked the key “old-laptop”."));
    // A replay does not delete again.
    let r = app.submit(&path, &token, &[CONFIRMED]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 1);
}

#[tokio::test]
async fn create_and_revoke_are_in_the_audit_trail_under_the_staff_name() {
    let (app, id) = TestApp::with_user("grace@example.com").await;
    let token = app.form_token(&id).await;
    let r = app
        .create_key_with(&id, &token, &[("name", "audited")])
        .await;
    let secret = revealed_key(&r.text().await.unwrap()).unwrap();
    let form = app.key_form(&id, "ci-runner", "delete").await;
    app.submit(&form.path, &form.token, &[CONFIRMED]).await;

    let (status, audit) = app.get("/audit").await;
    assert_eq!(status, 200);
    assert!(audit.contains("key.create"));
    assert!(audit.contains("key.revoke"));
    assert!(audit.contains("audited"));
    assert!(audit.contains("ci-runner"));
    assert!(
        audit.matches(STAFF).count() >= 3,
        "actor shown per row and in the header"
    );
    assert!(!audit.contains(&secret));
    let (_, filtered) = app.get("/audit?action=key.revoke").await;
    assert!(filtered.contains("ci-runner") && !filtered.contains("audited"));
    // The user page shows that user's recent history.
    let (_, page) = app.get(&format!("/users/{id}")).await;
    assert!(page.contains("key.create") && page.contains("key.revoke"));
}

#[tokio::test]
async fn unknown_user_gets_a_404_page() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/users/0000000000000").await;
    assert_eq!(status, 404);
    assert!(body.contains("no such user"));
    assert!(body.contains(r#"id="request-id""#));
}

#[tokio::test]
async fn hostile_names_from_upstream_are_rendered_inert() {
    let app = TestApp::spawn().await;
    let (_, list) = app.get("/users?q=mallory").await;
    assert!(!list.contains("<script>alert"));
    assert!(!list.contains("<img src=x"));
    assert!(!list.contains("<b>Bold</b>"));
    assert!(list.contains("&#60;script&#62;"));
    let id = app.user_id("\"><img src=x onerror=alert(1)>@evil.test");
    let (status, page) = app.get(&format!("/users/{id}")).await;
    assert_eq!(status, 200);
    assert!(!page.contains("<script>alert"));
    assert!(!page.contains("\"><img"));
    assert!(page.contains("&#34;&#62;&#60;img"));
}

#[tokio::test]
async fn bad_ids_are_rejected_before_any_upstream_call() {
    let app = TestApp::spawn().await;
    app.fake.clear_log();
    let long = "a".repeat(5000);
    // Sent raw: an HTTP client library would normalise `%2e%2e` away.
    for path in [
        "/users/..%2F..%2Faccount".to_string(),
        "/users/a%2Fb".to_string(),
        "/users/%2e%2e".to_string(),
        "/users/%2e%2e%2f".to_string(),
        "/users/a%00b".to_string(),
        format!("/users/{long}"),
        "/users/ok/keys/..%2F..%2Fx/delete".to_string(),
    ] {
        let (status, body) = raw_get(&app.base, &path, STAFF).await;
        assert_eq!(status, 400, "{path}");
        assert!(body.contains("not a valid Vultr id"));
    }
    let r = app
        .post_form("/users/a%2Fb/keys", &[("name", "x"), ("form_token", "t")])
        .await;
    assert_eq!(r.status(), 400);
    assert!(
        app.fake.requests().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn no_identity_gets_a_401_page() {
    let fake = keydesk::fake_vultr::FakeVultr::seeded(ROOT_KEY);
    let app = TestApp::spawn_with(
        fake,
        Options {
            identity: None,
            ..Default::default()
        },
    )
    .await;
    let (status, body) = app.get("/users").await;
    assert_eq!(status, 401);
    assert!(body.contains("SSO proxy"));
    assert!(app.fake.requests().is_empty());
    // Probes stay reachable without identity.
    assert_eq!(app.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn identity_header_from_an_untrusted_peer_is_rejected() {
    let fake = keydesk::fake_vultr::FakeVultr::seeded(ROOT_KEY);
    let app = TestApp::spawn_with(
        fake,
        Options {
            trusted: vec!["10.0.0.0/8"],
            ..Default::default()
        },
    )
    .await;
    let (status, body) = app.get("/users").await;
    assert_eq!(status, 401);
    assert!(body.contains("did not come through the SSO proxy"));
    // X-Forwarded-For never buys trust.
    let r = app
        .get_with_header("/users", ("x-forwarded-for", "10.1.2.3"))
        .await;
    assert_eq!(r.status(), 401);
    assert!(app.fake.requests().is_empty());
}

#[tokio::test]
async fn a_rejected_root_key_is_explained() {
    let fake = keydesk::fake_vultr::FakeVultr::seeded(ROOT_KEY);
    let app = TestApp::spawn_with(
        fake,
        Options {
            root_key: "WRONG",
            ..Default::default()
        },
    )
    .await;
    let (status, body) = app.get("/users").await;
    assert_eq!(status, 502);
    assert!(body.contains("Vultr rejected keydesk"));
    assert!(!body.contains("WRONG"));
    // Every replica shares Vultr's verdict: ready, with the reason in the body.
    let r = app.response("/readyz").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["upstream"]["ok"], false, "{body}");
    let reason = body["upstream"]["reason"].as_str().unwrap();
    assert!(reason.contains("root key rejected by Vultr"), "{body}");
}

#[tokio::test]
async fn readyz_fails_for_keydesks_own_database_not_for_vultr() {
    let app = TestApp::spawn().await;
    // Vultr down: still ready, the body says why Vultr is not usable.
    app.fake
        .set_fault(Some(keydesk::fake_vultr::Fault::Status(503)));
    let r = app.response("/readyz").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (body["ready"].clone(), body["upstream"]["ok"].clone()),
        (true.into(), false.into())
    );
    app.fake.set_fault(None);
    // A schema behind this keydesk: not ready, and says what to run.
    let db = app.state.db.clone();
    keydesk::on_pool!(write, &db, |p| {
        sqlx::query(
            "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
        )
        .execute(p)
        .await
        .unwrap()
        .rows_affected()
    });
    let r = app.response("/readyz").await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("schema not current") && body.contains("keydesk migrate"),
        "{body}"
    );
    // The database gone: not ready.
    db.close().await;
    let r = app.response("/readyz").await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("database unreachable"));
    assert_eq!(
        app.response("/healthz").await.status(),
        200,
        "liveness only"
    );
}

#[tokio::test]
async fn upstream_failures_render_explanatory_pages() {
    use keydesk::fake_vultr::Fault;
    let app = TestApp::spawn().await;
    for (fault, status, words) in [
        (Fault::Status(500), 502, "Vultr is having trouble"),
        (Fault::Status(429), 503, "rate limiting"),
        (Fault::Malformed, 502, "could not read"),
    ] {
        app.fake.set_fault(Some(fault));
        let (s, body) = app.get("/users").await;
        assert_eq!(s, status);
        assert!(body.contains(words), "{words}");
        assert!(body.contains(r#"id="request-id""#));
    }
    app.fake.set_fault(None);
    assert_eq!(app.get("/users").await.0, 200);
}

#[tokio::test]
async fn an_unreachable_upstream_is_explained() {
    // Reserved but not listening: connections are refused.
    let (_reserved, port) = refusing_port();
    let (base, _) = serve(demo_settings(
        &format!("http://127.0.0.1:{port}"),
        "d@x",
        keydesk::identity::Access::everyone_operates(),
    ))
    .await;
    let r = reqwest::get(format!("{base}/users")).await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("Vultr is unreachable"));
}

#[tokio::test]
async fn cross_site_posts_are_refused() {
    let (app, id) = TestApp::with_user("ada@example.com").await;
    let token = app.form_token(&id).await;
    let r = app
        .create_key_with_header(&id, &token, ("origin", "https://evil.example"))
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
}

#[tokio::test]
async fn every_response_carries_security_headers_and_a_request_id() {
    let app = TestApp::spawn().await;
    let r = app.response("/users").await;
    let h = r.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h.contains_key("x-request-id"));
    let r = app
        .get_with_header("/nowhere", ("x-request-id", "trace-me-123"))
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"], "trace-me-123");
    assert!(r.text().await.unwrap().contains("trace-me-123"));
}

#[tokio::test]
async fn users_sort_across_all_pages_and_search_keeps_its_query_when_paging() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/users?sort=name").await;
    assert_eq!(status, 200);
    // Sorted over all 25 users, not just the first upstream page.
    let first_rows: Vec<&str> = body.split("<tr data-user-id=").skip(1).take(2).collect();
    assert!(first_rows[0].contains("&#60;script"), "'<' sorts first");
    assert!(body.contains(r#"aria-sort="ascending""#));
    let (_, desc) = app.get("/users?sort=email&dir=desc").await;
    let first = desc.split("<tr data-user-id=").nth(1).unwrap();
    assert!(first.contains("tony@example.com"), "{first}");
    // 24 users match "example.com": three pages of ten, the query kept in the links.
    let (_, p1) = app.get("/users?q=example.com").await;
    assert!(p1.contains("24 matches"));
    assert!(p1.contains("page 1 of 3"));
    assert!(
        p1.contains(r#"id="next-page" href="/users?q=example%2Ecom&#38;page=2""#),
        "{p1}"
    );
    let (_, p3) = app.get("/users?q=example.com&page=3").await;
    assert!(p3.contains("page 3 of 3"));
    assert_eq!(p3.matches("<tr data-user-id=").count(), 4);
    let (status, _) = app.get("/users?sort=password").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn pages_stay_small_and_are_compressed() {
    let (app, id) = TestApp::with_user("grace@example.com").await;
    for path in [
        "/users",
        "/users?q=example",
        &format!("/users/{id}"),
        "/audit",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 200);
        assert!(body.len() < 100 * 1024, "{path} is {} bytes", body.len());
    }
    let r = app
        .get_with_header("/users", ("accept-encoding", "gzip"))
        .await;
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let r = app.response("/static/app.css").await;
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=31536000")
    );
}

#[tokio::test]
async fn revoke_without_the_understand_box_is_refused_and_sends_nothing() {
    let (app, id) = TestApp::with_user("ada@example.com").await;
    let KeyForm { path, token, .. } = app.key_form(&id, "old-laptop", "delete").await;
    let r = app.submit(&path, &token, &[]).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("Tick “I understand”"));
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 0);
    // Nothing happened, so the same confirmation still works once ticked.
    let r = app.submit(&path, &token, &[CONFIRMED]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 1);
}

#[tokio::test]
async fn the_brake_without_the_understand_box_is_refused_and_sends_nothing() {
    let (app, id) = TestApp::with_user("ada@example.com").await;
    let path = format!("/users/{id}/api-access");
    let token = app.token_of(&path).await;
    let r = app.submit(&path, &token, &[("enabled", "false")]).await;
    assert_eq!(r.status(), 422);
    assert_eq!(app.fake.count("PATCH", "/v2/users"), 0);
    let r = app
        .submit(&path, &token, &[("enabled", "false"), CONFIRMED])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.fake.count("PATCH", "/v2/users"), 1);
}

#[tokio::test]
async fn relative_dates_agree_with_the_key_state_on_every_page() {
    let (app, id) = TestApp::with_user("grace@example.com").await;
    // The seeded key that expires in 3 days (less a few hours).
    let (_, page) = app.get(&format!("/users/{id}")).await;
    let row = page
        .split("<tr data-key-id=")
        .find(|r| r.contains("expires in 3 days"))
        .expect("a key expiring in 3 days");
    assert!(row.contains("(in 3 days)"), "date and state agree: {row}");
    // The reveal says it once: "(in 90 days)", no repeated phrase.
    let r = app
        .create_key(
            &id,
            &[
                ("name", "q"),
                ("expire", "true"),
                ("date_expire", &date_in(90)),
            ],
        )
        .await;
    let body = r.text().await.unwrap();
    let expiry = body
        .split(r#"id="new-key-expiry">"#)
        .nth(1)
        .and_then(|s| s.split("</dd>").next())
        .unwrap();
    assert!(expiry.ends_with("(in 90 days)"), "{expiry}");
    assert!(!expiry.contains("expires in"), "{expiry}");
}
