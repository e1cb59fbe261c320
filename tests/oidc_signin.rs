//! keydesk as an OpenID Connect client against a real, certified provider
//! (`oidc-provider` from npm, see tests/oidc): signing in through the
//! provider's own login form, the roles, the claim link, sign-out at both
//! ends, and every attack of issue 21, each refused with nothing written
//! upstream. The attacks a real provider never makes (forged tokens) come
//! from `common::rogue_op`.

#![allow(clippy::unwrap_used)]

mod common;

use common::oidc::{self, ADA, OPS, VERA, audit_of, location, sign_in, to_callback, writes};
use common::rogue_op::{Forge, Rogue};
use common::*;
use keydesk::fake_vultr::FakeVultr;

/// The query parameter `name` of `url`.
fn param(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `url` with the query parameter `name` set to `value`.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut u = reqwest::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

/// Whether `app.client` is signed in: `/me` answers (200, or 403 for
/// someone with no Vultr user) rather than sending it to the provider.
async fn signed_in(app: &TestApp) -> bool {
    let r = app.response("/me").await;
    match r.status().as_u16() {
        200 | 403 => true,
        302 => false,
        s => panic!("/me answered {s}"),
    }
}

/// The number of `access.denied` entries whose reason contains `needle`.
async fn denied_for(app: &TestApp, needle: &str) -> usize {
    audit_of(app, "access.denied")
        .await
        .into_iter()
        .filter(|(_, _, reason)| reason.as_deref().is_some_and(|r| r.contains(needle)))
        .count()
}

#[tokio::test]
async fn an_operator_signs_in_through_the_provider_and_sees_a_new_key_once() {
    let Some((op, app)) = oidc::spawn(|_| {}).await else {
        return;
    };
    let ada = app.user_id(ADA);
    let page = format!("/users/{ada}?from=test");

    // A stranger asking for a page goes to the provider, with PKCE S256,
    // state and nonce, and the redirect URI keydesk registered.
    let first = app.response(&page).await;
    assert_eq!(first.status(), 302);
    let to = location(&first);
    assert!(to.starts_with(&format!("{}/auth?", op.issuer)), "{to}");
    assert_eq!(param(&to, "code_challenge_method").as_deref(), Some("S256"));
    assert!(param(&to, "code_challenge").is_some_and(|c| c.len() >= 43));
    assert!(param(&to, "state").is_some_and(|s| s.len() >= 16));
    assert!(param(&to, "nonce").is_some_and(|n| n.len() >= 16));
    assert_eq!(param(&to, "client_id").as_deref(), Some(oidc::CLIENT_ID));
    assert_eq!(
        param(&to, "redirect_uri"),
        Some(format!("{}/auth/callback", app.base))
    );
    assert_eq!(
        param(&to, "scope").as_deref(),
        Some("openid email profile groups")
    );

    // The provider's login form, then back to the page asked for.
    let callback = to_callback(&app.client, &to, "ops").await;
    let back = app.client.get(&callback).send().await.unwrap();
    assert_eq!(back.status(), 303, "{:?}", back.text().await);
    assert_eq!(location(&back), app.url(&page));
    let (status, body) = app.get(&page).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("Signed in as <strong>{OPS}</strong>")));
    assert!(body.contains(r#"<span id="role">operator</span>"#));
    assert!(body.contains(r#"id="sign-out""#));
    let signins = audit_of(&app, "access.signin").await;
    assert_eq!(signins.len(), 1);
    assert_eq!(
        (signins[0].0.as_str(), signins[0].1.as_str()),
        (OPS, "operator")
    );

    // A 90-day key, shown once, attributed to the signed-in operator.
    let date = date_in(90);
    let resp = app
        .create_key(
            &ada,
            &[
                ("name", "oidc-made"),
                ("expire", "true"),
                ("date_expire", &date),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let reveal = resp.text().await.unwrap();
    let secret = revealed_key(&reveal).expect("the new key is shown");
    assert_eq!(
        writes(&app.fake),
        vec![format!("POST /v2/users/{ada}/apikeys")]
    );
    let (_, again) = app.get(&format!("/users/{ada}")).await;
    assert!(!again.contains(&secret), "never shown again");
    let created = audit_of(&app, "key.create").await;
    assert_eq!(
        (created[0].0.as_str(), created[0].1.as_str()),
        (OPS, "operator")
    );
}

#[tokio::test]
async fn a_viewer_gets_the_role_through_a_group_and_cannot_write() {
    let Some((_op, app)) = oidc::spawn(|_| {}).await else {
        return;
    };
    let resp = sign_in(&app, "/users", "vera").await;
    assert_eq!(resp.status(), 303);
    let (status, body) = app.get("/users").await;
    assert_eq!(status, 200);
    assert!(body.contains(&format!("Signed in as <strong>{VERA}</strong>")));
    assert!(body.contains(r#"<span id="role">viewer</span>"#));
    let ada = app.user_id(ADA);
    let (_, user_page) = app.get(&format!("/users/{ada}")).await;
    assert!(
        !user_page.contains("name=\"form_token\""),
        "a viewer gets no forms"
    );
    let resp = app
        .submit(
            &format!("/users/{ada}/keys"),
            "t1.x",
            &[("name", "nope"), ("expire", "false")],
        )
        .await;
    assert_eq!(resp.status(), 403);
    assert!(writes(&app.fake).is_empty());
    let signins = audit_of(&app, "access.signin").await;
    assert_eq!(signins[0].0, VERA);
    assert_eq!(signins[0].1, "viewer");
    assert_eq!(signins[0].2.as_deref(), Some("groups: auditors"));
}

#[tokio::test]
async fn the_claim_link_owner_signs_in_and_lands_back_on_the_link() {
    let Some((_op, app)) = oidc::spawn(|_| {}).await else {
        return;
    };
    let ada = app.user_id(ADA);
    sign_in(&app, "/users", "ops").await;
    let token = app.form_token(&ada).await;
    let date = date_in(30);
    let resp = app
        .submit(
            &format!("/users/{ada}/grants"),
            &token,
            &[
                ("name", "claimed"),
                ("expire", "true"),
                ("date_expire", &date),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    let at = page.find(r#"<a id="claim-link" href=""#).unwrap() + 25;
    let link = page[at..at + page[at..].find('"').unwrap()].to_string();
    let path = link[link.find("/claim/").unwrap()..].to_string();

    // Ada, in her own browser, opens the link and is sent to sign in first.
    let owner = TestApp::assemble(
        app.base.clone(),
        app.fake.clone(),
        client(None),
        app.state.clone(),
    );
    let back = sign_in(&owner, &path, "ada").await;
    assert_eq!(back.status(), 303);
    assert_eq!(location(&back), owner.url(&path), "back on the claim link");
    let (status, claim_page) = owner.get(&path).await;
    assert_eq!(status, 200, "{claim_page}");
    let token = hidden_token(&claim_page);
    let resp = owner
        .post_form(&path, &[("form_token", token.as_str())])
        .await;
    assert_eq!(resp.status(), 200);
    assert!(revealed_key(&resp.text().await.unwrap()).is_some());
    assert_eq!(
        writes(&app.fake),
        vec![format!("POST /v2/users/{ada}/apikeys")]
    );
    // Ada has no staff role: the staff pages stay closed, and the refusal
    // lets her sign out (to come back with another account).
    let (status, refusal) = owner.get("/users").await;
    assert_eq!(status, 403);
    let marker = r#"name="sign_out_token" value=""#;
    let at = refusal
        .find(marker)
        .expect("a sign-out form on the 403 page")
        + marker.len();
    let token = &refusal[at..at + refusal[at..].find('"').unwrap()];
    let out = owner
        .post_form("/auth/logout", &[("sign_out_token", token)])
        .await;
    assert_eq!(out.status(), 303);
    assert!(!signed_in(&owner).await);
}

#[tokio::test]
async fn sign_out_ends_the_session_here_and_at_the_provider() {
    let Some((op, app)) = oidc::spawn(|_| {}).await else {
        return;
    };
    sign_in(&app, "/users", "ops").await;
    let (_, page) = app.get("/users").await;
    let marker = r#"name="sign_out_token" value=""#;
    let at = page.find(marker).unwrap() + marker.len();
    let token = page[at..at + page[at..].find('"').unwrap()].to_string();

    // Without the form's token nothing happens.
    let forged = app
        .post_form("/auth/logout", &[("sign_out_token", "x")])
        .await;
    assert_eq!(forged.status(), 403);
    assert!(signed_in(&app).await);

    let out = app
        .post_form("/auth/logout", &[("sign_out_token", &token)])
        .await;
    assert_eq!(out.status(), 303);
    let end = location(&out);
    assert!(
        end.starts_with(&format!("{}/session/end", op.issuer)),
        "{end}"
    );
    assert!(param(&end, "id_token_hint").is_some_and(|t| t.split('.').count() == 3));
    assert_eq!(
        param(&end, "post_logout_redirect_uri"),
        Some(format!("{}/auth/signed-out", app.base))
    );
    assert!(!signed_in(&app).await, "keydesk's session is gone");
    let outs = audit_of(&app, "access.signout").await;
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].0, OPS);

    // The provider asks to confirm, then comes back to keydesk's page.
    let confirm = app.client.get(&end).send().await.unwrap();
    assert_eq!(confirm.status(), 200);
    let confirm_url = confirm.url().clone();
    let form = confirm.text().await.unwrap();
    let action_at = form.find(r#"action=""#).unwrap() + 8;
    let action = &form[action_at..action_at + form[action_at..].find('"').unwrap()];
    let xsrf_at = form.find(r#"name="xsrf" value=""#).unwrap() + 19;
    let xsrf = &form[xsrf_at..xsrf_at + form[xsrf_at..].find('"').unwrap()];
    let done = app
        .client
        .post(confirm_url.join(action).unwrap())
        .form(&[("xsrf", xsrf), ("logout", "yes")])
        .send()
        .await
        .unwrap();
    assert!(done.status().is_redirection(), "{}", done.status());
    let back = location(&done);
    assert_eq!(back, format!("{}/auth/signed-out", app.base));
    let page = app.client.get(&back).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(r#"id="signed-out""#));

    // Signed out at the provider too: the next visit meets its login form.
    let again = app.response("/users").await;
    let mut url = location(&again);
    let mut form = String::new();
    for _ in 0..5 {
        let r = app.client.get(&url).send().await.unwrap();
        if r.status().is_redirection() {
            url = location(&r);
            continue;
        }
        form = r.text().await.unwrap();
        break;
    }
    assert!(
        form.contains(r#"id="op-login""#),
        "the provider asks again: {form}"
    );
}

#[tokio::test]
async fn a_form_sent_without_a_session_gets_a_sign_in_link_not_a_redirect() {
    let Some((_op, app)) = oidc::spawn(|_| {}).await else {
        return;
    };
    let ada = app.user_id(ADA);
    let resp = app
        .client
        .post(app.url(&format!("/users/{ada}/keys")))
        .header("referer", app.url(&format!("/users/{ada}")))
        .form(&[("name", "x"), ("expire", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body = resp.text().await.unwrap();
    let link = format!(r#"id="error-link" href="/auth/login?next=%2Fusers%2F{ada}""#);
    assert!(body.contains(&link), "{body}");
    assert!(writes(&app.fake).is_empty());
}

// ---- attacks, each refused with nothing written upstream ----

#[tokio::test]
async fn attack_a_wrong_state_is_refused() {
    let Some((_op, app)) = oidc::spawn(|_| {}).await else {
        return;
    };
    let first = app.response("/users").await;
    let callback = to_callback(&app.client, &location(&first), "ops").await;
    let forged = with_param(&callback, "state", "not-the-state-keydesk-sent");
    let resp = app.client.get(&forged).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(!signed_in(&app).await);
    // Nothing ties a wrong state to anyone: counted and logged, not audited.
    assert!(audit_of(&app, "access.denied").await.is_empty());
    assert!(writes(&app.fake).is_empty());
    assert!(audit_of(&app, "access.signin").await.is_empty());
}

#[tokio::test]
async fn attack_a_reused_code_is_refused() {
    let Some((_op, app)) = oidc::spawn(|_| {}).await else {
        return;
    };
    let first = app.response("/users").await;
    let callback = to_callback(&app.client, &location(&first), "ops").await;
    assert_eq!(
        app.client.get(&callback).send().await.unwrap().status(),
        303
    );

    // The same answer again in the same browser: its state is spent.
    let replay = app.client.get(&callback).send().await.unwrap();
    assert_eq!(replay.status(), 401);

    // The code carried into another browser's fresh sign-in: keydesk
    // redeems it, and the provider refuses a code already used.
    let thief = TestApp::assemble(
        app.base.clone(),
        app.fake.clone(),
        client(None),
        app.state.clone(),
    );
    let start = thief.response("/users").await;
    let state = param(&location(&start), "state").unwrap();
    let stolen = with_param(&callback, "state", &state);
    let resp = thief.client.get(&stolen).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(!signed_in(&thief).await);
    // The provider redeemed nothing: nobody signed in there, so the
    // refusal is counted and logged, never written.
    assert_eq!(denied_for(&app, "code exchange failed").await, 0);
    assert_eq!(
        audit_of(&app, "access.signin").await.len(),
        1,
        "only the first"
    );
    assert!(writes(&app.fake).is_empty());
}

#[tokio::test]
async fn attack_a_replayed_nonce_is_refused() {
    let Some((_op, app)) = oidc::spawn(|_| {}).await else {
        return;
    };
    // A first sign-in; its nonce is visible in the authorization URL.
    let first = app.response("/users").await;
    let old_nonce = param(&location(&first), "nonce").unwrap();
    let callback = to_callback(&app.client, &location(&first), "ops").await;
    assert_eq!(
        app.client.get(&callback).send().await.unwrap().status(),
        303
    );

    // A second browser's sign-in, with the request altered to carry the old
    // nonce: the provider mints a token with it, and keydesk refuses it.
    let other = TestApp::assemble(
        app.base.clone(),
        app.fake.clone(),
        client(None),
        app.state.clone(),
    );
    let start = other.response("/users").await;
    let altered = with_param(&location(&start), "nonce", &old_nonce);
    let callback = to_callback(&other.client, &altered, "ops").await;
    let resp = other.client.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(!signed_in(&other).await);
    assert_eq!(
        denied_for(&app, "nonce").await,
        1,
        "{:?}",
        audit_of(&app, "access.denied").await
    );
    assert!(writes(&app.fake).is_empty());
}

/// keydesk in OpenID mode against the rogue provider forging `forge`.
async fn against_rogue(forge: Forge) -> (Rogue, TestApp) {
    against_rogue_with(forge, |_| {}).await
}

/// The same, with keydesk's settings tweaked by `tweak`.
async fn against_rogue_with(
    forge: Forge,
    tweak: impl FnOnce(&mut keydesk::oidc::OidcSettings),
) -> (Rogue, TestApp) {
    let rogue = Rogue::start(oidc::CLIENT_ID).await;
    rogue.forge(forge);
    let port = oidc::free_port();
    let mut settings = oidc::settings(rogue.issuer(), port);
    tweak(&mut settings);
    let app = oidc::serve_on(&FakeVultr::seeded(ROOT_KEY), port, &oidc::options(settings)).await;
    (rogue, app)
}

/// Runs one sign-in through the rogue provider: keydesk's answer to it.
async fn rogue_sign_in(app: &TestApp) -> u16 {
    let first = app.response("/users").await;
    assert_eq!(first.status(), 302);
    let back = app.client.get(location(&first)).send().await.unwrap();
    let callback = location(&back);
    app.client
        .get(&callback)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A forged token is refused, unlike the same provider's honest one.
async fn forged_token_is_refused(forge: Forge, reason: &str) {
    let (rogue, app) = against_rogue(forge).await;
    refused_then_honest_accepted(&rogue, &app, forge, reason).await;
}

/// The next sign-in is refused for `reason`; then an honest token for
/// `OPS` is accepted on the same keydesk.
async fn refused_then_honest_accepted(rogue: &Rogue, app: &TestApp, forge: Forge, reason: &str) {
    assert_eq!(rogue_sign_in(app).await, 401);
    assert!(!signed_in(app).await);
    let denied = audit_of(app, "access.denied").await;
    assert!(
        denied
            .iter()
            .any(|(_, _, r)| r.as_deref().is_some_and(|r| r.contains(reason))),
        "{forge:?}: {denied:?}"
    );
    assert!(writes(&app.fake).is_empty());
    // The control: the same provider, signing honestly, is accepted.
    rogue.forge(Forge::Honest);
    rogue.email(OPS);
    assert_eq!(rogue_sign_in(app).await, 303);
    assert!(signed_in(app).await);
}

#[tokio::test]
async fn attack_a_token_authorized_for_another_client_is_refused() {
    forged_token_is_refused(Forge::OtherAzp, "azp `another-app` is another client").await;
}

#[tokio::test]
async fn attack_a_token_for_several_audiences_is_refused() {
    // The crate refuses an audience keydesk does not trust before keydesk
    // asks for `azp`; either way the token is refused.
    forged_token_is_refused(Forge::SeveralAudiences, "Invalid audiences").await;
}

#[tokio::test]
async fn attack_a_token_issued_hours_ago_is_refused_though_unexpired() {
    forged_token_is_refused(Forge::OldIat, "s old").await;
}

#[tokio::test]
async fn attack_a_domain_that_only_ends_like_an_allowed_one_is_refused() {
    let (rogue, app) = against_rogue_with(Forge::Honest, |s| {
        s.allowed_domains = vec!["example.com".into()];
    })
    .await;
    for email in ["alice@notexample.com", "alice@sub.example.com"] {
        rogue.email(email);
        let fresh = TestApp::assemble(
            app.base.clone(),
            app.fake.clone(),
            client(None),
            app.state.clone(),
        );
        refused_then_honest_accepted(
            &rogue,
            &fresh,
            Forge::Honest,
            "KEYDESK_OIDC_ALLOWED_DOMAINS",
        )
        .await;
    }
    let denied = audit_of(&app, "access.denied").await;
    let mut who: Vec<&str> = denied.iter().map(|(e, _, _)| e.as_str()).collect();
    who.sort();
    assert_eq!(
        who,
        ["alice@notexample.com", "alice@sub.example.com"],
        "{denied:?}"
    );
}

#[tokio::test]
async fn attack_a_token_for_another_audience_is_refused() {
    forged_token_is_refused(Forge::OtherAudience, "Invalid audiences").await;
}

#[tokio::test]
async fn attack_an_expired_token_is_refused() {
    forged_token_is_refused(Forge::Expired, "ID token was refused: Expired").await;
}

#[tokio::test]
async fn attack_an_unsigned_token_is_refused() {
    forged_token_is_refused(Forge::Unsigned, "No signature found").await;
}

#[tokio::test]
async fn attack_a_wrongly_signed_token_is_refused() {
    forged_token_is_refused(Forge::WrongKey, "bad signature").await;
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_unknown_kids_cannot_hammer_the_provider() {
    let (rogue, app) = against_rogue(Forge::Honest).await;
    assert_eq!(rogue_sign_in(&app).await, 303);
    assert_eq!(rogue.jwks_fetches(), 1, "fetched once, at discovery");
    // The provider rotates its key: one refetch, and the new key is accepted.
    rogue.forge(Forge::Rotated);
    let rotated = TestApp::assemble(
        app.base.clone(),
        app.fake.clone(),
        client(None),
        app.state.clone(),
    );
    assert_eq!(rogue_sign_in(&rotated).await, 303);
    assert_eq!(rogue.jwks_fetches(), 2);
    // Tokens under made-up kids: refused, and no refetch within the interval.
    rogue.forge(Forge::UnknownKid);
    for _ in 0..3 {
        let forger = TestApp::assemble(
            app.base.clone(),
            app.fake.clone(),
            client(None),
            app.state.clone(),
        );
        assert_eq!(rogue_sign_in(&forger).await, 401);
    }
    assert_eq!(rogue.jwks_fetches(), 2, "at most one refetch per interval");
    assert!(writes(&app.fake).is_empty());
}

#[tokio::test]
async fn attack_an_unverified_email_is_refused() {
    let Some((_op, app)) = oidc::spawn(|_| {}).await else {
        return;
    };
    let resp = sign_in(&app, "/users", "unverified").await;
    assert_eq!(resp.status(), 401);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("unverified@example.com")
    );
    assert!(!signed_in(&app).await);
    let denied = audit_of(&app, "access.denied").await;
    assert_eq!(denied[0].0, "unverified@example.com");
    assert!(denied[0].2.as_deref().unwrap().contains("email_verified"));
    assert!(writes(&app.fake).is_empty());

    // With KEYDESK_OIDC_REQUIRE_VERIFIED_EMAIL=false the same person gets in.
    let Some((_op, lax)) = oidc::spawn(|s| s.require_verified_email = false).await else {
        return;
    };
    assert_eq!(sign_in(&lax, "/users", "unverified").await.status(), 303);
    assert!(signed_in(&lax).await);
}

#[tokio::test]
async fn attack_a_domain_that_is_not_allowed_is_refused() {
    let Some((_op, app)) = oidc::spawn(|s| s.allowed_domains = vec!["example.com".into()]).await
    else {
        return;
    };
    // Eve is in the operators' group, but not of an allowed domain.
    let resp = sign_in(&app, "/users", "eve").await;
    assert_eq!(resp.status(), 401);
    assert!(!signed_in(&app).await);
    let denied = audit_of(&app, "access.denied").await;
    assert_eq!(denied[0].0, "eve@elsewhere.org");
    assert!(
        denied[0]
            .2
            .as_deref()
            .unwrap()
            .contains("KEYDESK_OIDC_ALLOWED_DOMAINS")
    );
    // Someone of the allowed domain signs in on the same keydesk.
    let ops = TestApp::assemble(
        app.base.clone(),
        app.fake.clone(),
        client(None),
        app.state.clone(),
    );
    assert_eq!(sign_in(&ops, "/users", "ops").await.status(), 303);
    assert!(writes(&app.fake).is_empty());
}

#[tokio::test]
async fn attack_an_open_redirect_in_next_is_refused() {
    let Some((_op, app)) = oidc::spawn(|_| {}).await else {
        return;
    };
    for bad in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "evil",
    ] {
        let q: String = form_urlencoded::byte_serialize(bad.as_bytes()).collect();
        let r = app.response(&format!("/auth/login?next={q}")).await;
        assert_eq!(r.status(), 400, "{bad}");
    }
    // A same-origin path is kept through the whole sign-in.
    let start = app
        .response("/auth/login?next=%2Faudit%3Faction%3Dkey.create")
        .await;
    assert_eq!(start.status(), 302);
    let callback = to_callback(&app.client, &location(&start), "ops").await;
    let back = app.client.get(&callback).send().await.unwrap();
    assert_eq!(location(&back), app.url("/audit?action=key.create"));
    assert!(writes(&app.fake).is_empty());
}

#[tokio::test]
async fn attack_a_callback_without_a_prior_login_is_refused() {
    let Some((op, app)) = oidc::spawn(|_| {}).await else {
        return;
    };
    let resp = app
        .response("/auth/callback?code=made-up&state=made-up&iss=x")
        .await;
    assert_eq!(resp.status(), 401);
    let body = resp.text().await.unwrap();
    assert!(body.contains("was not started in this browser"), "{body}");
    assert!(!signed_in(&app).await);
    // Anyone can send this: it writes no audit row.
    assert!(audit_of(&app, "access.denied").await.is_empty());
    // A genuine code, delivered to a browser that never started a sign-in.
    let other = TestApp::assemble(
        app.base.clone(),
        app.fake.clone(),
        client(None),
        app.state.clone(),
    );
    let first = other.response("/users").await;
    let callback = to_callback(&other.client, &location(&first), "ops").await;
    let fresh = TestApp::assemble(
        app.base.clone(),
        app.fake.clone(),
        client(None),
        app.state.clone(),
    );
    assert_eq!(
        fresh.client.get(&callback).send().await.unwrap().status(),
        401
    );
    assert!(!signed_in(&fresh).await);
    assert!(writes(&app.fake).is_empty());
    drop(op);
}

/// Moves the signed-in record of every stored session back by `secs` in
/// `field` (`signed_in` or `seen`), as time passing would.
async fn age_sessions(app: &TestApp, field: &str, secs: i64) {
    let keydesk::db::Db::Sqlite(pool) = &app.state.db else {
        panic!("these tests use SQLite");
    };
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, data FROM sessions")
        .fetch_all(pool)
        .await
        .unwrap();
    let mut aged = 0;
    for (id, data) in rows {
        let mut v: serde_json::Value = serde_json::from_str(&data).unwrap();
        if let Some(t) = v["keydesk.oidc.signed_in"][field].as_i64() {
            v["keydesk.oidc.signed_in"][field] = (t - secs).into();
            sqlx::query("UPDATE sessions SET data = $1 WHERE id = $2")
                .bind(v.to_string())
                .bind(id)
                .execute(pool)
                .await
                .unwrap();
            aged += 1;
        }
    }
    assert_eq!(aged, 1, "one signed-in session");
}

#[tokio::test]
async fn attack_a_session_used_past_its_lifetime_is_refused() {
    let Some((_op, app)) = oidc::spawn(|_| {}).await else {
        return;
    };
    let ada = app.user_id(ADA);
    // Past the absolute lifetime (12 h), though used a minute ago.
    sign_in(&app, "/users", "ops").await;
    let token = app.form_token(&ada).await;
    age_sessions(&app, "signed_in", 12 * 3600).await;
    let resp = app
        .submit(
            &format!("/users/{ada}/keys"),
            &token,
            &[("name", "late"), ("expire", "false")],
        )
        .await;
    assert_eq!(resp.status(), 401, "a form is answered with a sign-in link");
    assert!(!signed_in(&app).await);
    assert_eq!(denied_for(&app, "KEYDESK_SESSION_MAX_AGE").await, 1);

    // Idle past KEYDESK_SESSION_IDLE (1 h).
    sign_in(&app, "/users", "ops").await;
    assert!(signed_in(&app).await);
    age_sessions(&app, "seen", 3600).await;
    let r = app.response("/users").await;
    assert_eq!(r.status(), 302, "a page goes back to the provider");
    assert_eq!(denied_for(&app, "KEYDESK_SESSION_IDLE").await, 1);
    assert!(writes(&app.fake).is_empty());
}

#[tokio::test]
async fn the_session_id_changes_at_sign_in() {
    let Some((_op, app)) = oidc::spawn(|_| {}).await else {
        return;
    };
    let set_cookie = |resp: &reqwest::Response, name: &str| {
        resp.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|c| c.starts_with(&format!("{name}=")))
    };
    let first = app.response("/users").await;
    assert!(
        set_cookie(&first, "keydesk_session").is_none(),
        "a stranger gets no session"
    );
    let started = set_cookie(&first, "keydesk_signin").expect("the started sign-in's cookie");
    for attr in ["SameSite=Lax", "Max-Age=600", "HttpOnly", "Path=/"] {
        assert!(
            started.contains(attr),
            "the started sign-in survives the provider's cross-site redirect for 10 minutes only: {started}"
        );
    }
    let callback = to_callback(&app.client, &location(&first), "ops").await;
    let back = app.client.get(&callback).send().await.unwrap();
    let session = set_cookie(&back, "keydesk_session").expect("a session at sign-in");
    assert!(
        session.contains("Max-Age=43200"),
        "signed in: the 12 h lifetime: {session}"
    );
    let used = set_cookie(&back, "keydesk_signin").expect("the used sign-in is forgotten");
    assert!(used.contains("Max-Age=0"), "{used}");
    let id_of = |resp: &reqwest::Response| {
        resp.cookies()
            .find(|c| c.name() == "keydesk_session")
            .map(|c| c.value().to_string())
            .expect("a session cookie")
    };
    let before = id_of(&back);
    // The session goes idle; the same browser signs in again under a new id.
    age_sessions(&app, "seen", 3600).await;
    let again = app.response("/users").await;
    assert_eq!(again.status(), 302);
    let callback = to_callback(&app.client, &location(&again), "ops").await;
    let back = app.client.get(&callback).send().await.unwrap();
    assert_eq!(back.status(), 303);
    assert_ne!(before, id_of(&back));
    // The earlier id no longer names a session.
    let planted = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = planted
        .get(app.url("/users"))
        .header("cookie", format!("keydesk_session={before}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
}

#[tokio::test]
async fn discovery_checks_the_issuer_exactly() {
    let Some((op, _app)) = oidc::spawn(|_| {}).await else {
        return;
    };
    let good = keydesk::oidc::Oidc::new(oidc::settings(&op.issuer, 1)).unwrap();
    assert_eq!(good.check().await, Ok(()));
    // The provider says it is `http://127.0.0.1:PORT`; one slash more is another issuer.
    let slash = keydesk::oidc::Oidc::new(oidc::settings(&format!("{}/", op.issuer), 1)).unwrap();
    let err = slash.check().await.unwrap_err();
    assert!(err.contains("issuer") || err.contains("Issuer"), "{err}");
}

/// The operator's path: the real binary, configured by environment with the
/// client secret in a file, signs a person in through the provider; its log
/// says what happened and never holds the secret, a token or a code.
#[tokio::test]
async fn the_binary_signs_in_from_its_environment_and_logs_no_secret() {
    let port = oidc::free_port();
    let Some(op) = oidc::Op::start(&[port]).await else {
        return;
    };
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let dir = std::env::temp_dir().join(format!(
        "keydesk-oidc-bin-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("client-secret");
    std::fs::write(&secret_file, format!("{}\n", oidc::CLIENT_SECRET)).unwrap();
    let (child, base, mut logs) = spawn_binary(&[
        ("KEYDESK_VULTR_API_URL", upstream),
        ("KEYDESK_LISTEN", format!("127.0.0.1:{port}")),
        ("KEYDESK_AUTH_MODE", "oidc".into()),
        ("KEYDESK_OIDC_ISSUER", op.issuer.clone()),
        ("KEYDESK_OIDC_CLIENT_ID", oidc::CLIENT_ID.into()),
        (
            "KEYDESK_OIDC_CLIENT_SECRET_FILE",
            secret_file.display().to_string(),
        ),
        ("KEYDESK_OIDC_SCOPES", "groups".into()),
        ("KEYDESK_PUBLIC_URL", oidc::base_of(port)),
        ("KEYDESK_OPERATORS", format!("{OPS},group:platform")),
        ("KEYDESK_VIEWERS", "group:auditors".into()),
        ("KEYDESK_OIDC_ALLOWED_DOMAINS", "example.com".into()),
    ])
    .await;
    assert_eq!(base, oidc::base_of(port));
    let through = |account: &'static str| {
        let base = base.clone();
        async move {
            let browser = client(None);
            let first = browser.get(format!("{base}/users")).send().await.unwrap();
            assert_eq!(first.status(), 302);
            let callback = to_callback(&browser, &location(&first), account).await;
            let status = browser.get(&callback).send().await.unwrap().status();
            (browser, status.as_u16())
        }
    };
    let (vera, status) = through("vera").await;
    assert_eq!(status, 303);
    let page = get_text(&vera, format!("{base}/users")).await;
    assert!(
        page.contains(r#"<span id="role">viewer</span>"#),
        "the group claim gave the role"
    );
    assert_eq!(through("eve").await.1, 401, "not an allowed domain");
    assert!(writes(&fake).is_empty());
    // Read the log until the three events are in it (they are written
    // before the answers above were sent), then stop the binary.
    let mut text = String::new();
    let wanted = [
        "OpenID provider discovered",
        "signed in with OpenID Connect",
        "OpenID sign-in refused",
    ];
    while !wanted.iter().all(|w| text.contains(w)) {
        match within("keydesk's log", logs.recv()).await {
            Some(line) => {
                text.push_str(&line);
                text.push('\n');
            }
            None => break,
        }
    }
    drop(child);
    while let Ok(line) = logs.try_recv() {
        text.push_str(&line);
        text.push('\n');
    }
    assert!(text.contains("OpenID provider discovered"), "{text}");
    assert!(text.contains("signed in with OpenID Connect"), "{text}");
    assert!(
        text.contains("OpenID sign-in refused") && text.contains("ALLOWED_DOMAINS"),
        "{text}"
    );
    assert!(
        !text.contains(oidc::CLIENT_SECRET),
        "the client secret is never logged"
    );
    assert!(!text.contains("eyJ"), "no token is logged: {text}");
    assert!(!text.contains("code="), "no code is logged");
    let _ = std::fs::remove_dir_all(dir);
}

/// Two-person approval with identities from the provider: the requester
/// cannot approve, an approver who holds the role through a group can, and
/// the audit names both as the provider signed them in.
#[tokio::test]
async fn separation_of_duties_holds_with_identities_from_the_provider() {
    let port = oidc::free_port();
    let Some(op) = oidc::Op::start(&[port]).await else {
        return;
    };
    let opts = Options {
        approval: keydesk::policy::ApprovalPolicy {
            rules: vec!["all-keys".parse().unwrap()],
            ttl: std::time::Duration::from_secs(3600),
        },
        approvers: vec![OPS.into(), "group:platform".into()],
        ..oidc::options(oidc::settings(&op.issuer, port))
    };
    let ops = oidc::serve_on(&FakeVultr::seeded(ROOT_KEY), port, &opts).await;
    let pat = TestApp::assemble(
        ops.base.clone(),
        ops.fake.clone(),
        client(None),
        ops.state.clone(),
    );
    assert_eq!(sign_in(&ops, "/users", "ops").await.status(), 303);
    assert_eq!(sign_in(&pat, "/users", "platform").await.status(), 303);
    let ada = ops.user_id(ADA);
    let date = date_in(30);
    let asked = ops
        .create_key(
            &ada,
            &[
                ("name", "two-people"),
                ("expire", "true"),
                ("date_expire", &date),
            ],
        )
        .await;
    assert_eq!(asked.status(), 202);
    let id = request_of(&asked.text().await.unwrap());
    // The requester cannot approve their own request.
    let page = ops.get(&format!("/approvals/{id}")).await.1;
    assert!(!page.contains(&format!("action=\"/approvals/{id}/approve\"")));
    let forged = post_as(
        &ops.client,
        ops.url(&format!("/approvals/{id}/approve")),
        &[("form_token", "t1.x")],
    )
    .await;
    assert_eq!(forged.status(), 403);
    // Pat, an approver through the `platform` group, approves; Olive makes it.
    assert_eq!(press(&ops, &pat.client, &id, "approve").await.status(), 303);
    let done = press(&ops, &ops.client, &id, "execute").await;
    assert_eq!(done.status(), 200);
    assert!(revealed_key(&done.text().await.unwrap()).is_some());
    assert_eq!(
        writes(&ops.fake),
        vec![format!("POST /v2/users/{ada}/apikeys")]
    );
    let f = keydesk::audit::Filter {
        action: Some("key.create".into()),
        ..Default::default()
    };
    let e = ops.state.audit.list(&f, 1, 0).await.unwrap().remove(0);
    assert_eq!(e.requested_by.as_deref(), Some(OPS));
    assert_eq!(e.approved_by.as_deref(), Some("pat@example.com"));
}

/// A provider that takes the client secret only in the request body (it
/// lists just `client_secret_post` in discovery): keydesk sends it there.
#[tokio::test]
async fn a_provider_that_takes_the_secret_only_in_the_body_signs_people_in() {
    let port = oidc::free_port();
    let Some(op) = oidc::Op::start_with(&[port], "client_secret_post").await else {
        return;
    };
    let meta: serde_json::Value =
        reqwest::get(format!("{}/.well-known/openid-configuration", op.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        meta["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_post"])
    );
    let opts = oidc::options(oidc::settings(&op.issuer, port));
    let app = oidc::serve_on(&FakeVultr::seeded(ROOT_KEY), port, &opts).await;
    assert_eq!(sign_in(&app, "/users", "ops").await.status(), 303);
    assert!(signed_in(&app).await);
}

/// A provider that keeps email and groups out of the ID token (as
/// oidc-provider does by default): keydesk reads them from userinfo, asked
/// about the ID token's subject, and the roles and refusals still hold.
#[tokio::test]
async fn claims_missing_from_the_id_token_come_from_userinfo() {
    let port = oidc::free_port();
    let Some(op) = oidc::Op::start_conforming(&[port]).await else {
        return;
    };
    let opts = oidc::options(oidc::settings(&op.issuer, port));
    let app = oidc::serve_on(&FakeVultr::seeded(ROOT_KEY), port, &opts).await;
    // Vera's role comes from the `auditors` group, only at userinfo.
    assert_eq!(sign_in(&app, "/users", "vera").await.status(), 303);
    let (status, page) = app.get("/users").await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!("Signed in as <strong>{VERA}</strong>")));
    assert!(page.contains(r#"<span id="role">viewer</span>"#), "{page}");
    // The ID token keydesk kept (for id_token_hint) really had neither.
    let keydesk::db::Db::Sqlite(pool) = &app.state.db else {
        panic!("these tests use SQLite");
    };
    let data: Vec<(String,)> = sqlx::query_as("SELECT data FROM sessions")
        .fetch_all(pool)
        .await
        .unwrap();
    let token = data
        .iter()
        .find_map(|(d,)| {
            let v: serde_json::Value = serde_json::from_str(d).ok()?;
            v["keydesk.oidc.signed_in"]["id_token"]
                .as_str()
                .map(str::to_string)
        })
        .expect("a signed-in session");
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert!(
        payload.get("email").is_none() && payload.get("groups").is_none(),
        "{payload}"
    );
    // `email_verified: false` at userinfo is refused as in the ID token.
    let other = TestApp::assemble(
        app.base.clone(),
        app.fake.clone(),
        client(None),
        app.state.clone(),
    );
    assert_eq!(sign_in(&other, "/users", "unverified").await.status(), 401);
    let denied = audit_of(&app, "access.denied").await;
    assert_eq!(denied[0].0, "unverified@example.com");
    assert!(writes(&app.fake).is_empty());
}
