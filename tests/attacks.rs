//! The attack suite: each row is an attack, its expected outcome, and a check
//! that the fake upstream received nothing it should not.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use keydesk::fake_vultr::FakeVultr;
use keydesk::identity::AuthMode;
use keydesk::jwt::{JwtSettings, JwtVerifier};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::json;

const ISS: &str = "https://team.cloudflareaccess.com";
const AUD: &str = "keydesk-aud-tag";

struct Jwks {
    url: String,
    fetches: Arc<AtomicUsize>,
    /// The key set served now (a rotation replaces it).
    set: Arc<std::sync::Mutex<serde_json::Value>>,
    signing_pem: String,
    public_pem: String,
    other_pem: String,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn p256_pems() -> (String, String, serde_json::Value) {
    let key = p256::SecretKey::random(&mut rand_core::OsRng);
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let public = key.public_key();
    let public_pem = public.to_public_key_pem(LineEnding::LF).unwrap();
    let jwk: serde_json::Value = serde_json::from_str(&public.to_jwk_string()).unwrap();
    (pem, public_pem, jwk)
}

/// A local JWKS server with one ES256 key (kid "k1"), counting fetches.
async fn jwks() -> Jwks {
    let (signing_pem, public_pem, mut jwk) = p256_pems();
    jwk["kid"] = json!("k1");
    jwk["alg"] = json!("ES256");
    jwk["use"] = json!("sig");
    let (other_pem, _, _) = p256_pems();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let set = Arc::new(std::sync::Mutex::new(json!({ "keys": [jwk] })));
    let served = set.clone();
    let app = axum::Router::new().route(
        "/certs",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let set = served.lock().unwrap().clone();
            async move { Json(set) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Jwks {
        url: format!("http://{addr}/certs"),
        fetches,
        set,
        signing_pem,
        public_pem,
        other_pem,
    }
}

fn claims(email: &str, iss: &str, aud: &str, exp_in: i64) -> serde_json::Value {
    json!({"email": email, "iss": iss, "aud": aud, "exp": now() + exp_in, "iat": now(), "nbf": now() - 5, "groups": ["staff"]})
}

fn es256(pem: &str, kid: &str, claims: &serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    encode(
        &h,
        claims,
        &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Cloudflare Access as the tests configure it, on `j`'s key set.
fn verifier(j: &Jwks) -> JwtVerifier {
    JwtVerifier::new(JwtSettings {
        header: "cf-access-jwt-assertion".parse().unwrap(),
        jwks_url: j.url.clone(),
        issuer: ISS.into(),
        audience: vec![AUD.into()],
        email_claim: "email".into(),
        groups_claim: "groups".into(),
        algorithms: vec![Algorithm::RS256, Algorithm::ES256],
    })
    .unwrap()
}

async fn jwt_app(j: &Jwks) -> TestApp {
    let verifier = verifier(j);
    TestApp::spawn_with(
        FakeVultr::seeded(ROOT_KEY),
        Options {
            identity: None,
            auth: Some(AuthMode::Jwt(Arc::new(verifier))),
            ..Default::default()
        },
    )
    .await
}

async fn get_with_jwt(app: &TestApp, token: &str) -> (u16, String) {
    let r = app
        .get_with_header("/users", ("cf-access-jwt-assertion", token))
        .await;
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn jwt_attacks_are_rejected_and_a_valid_assertion_is_accepted() {
    let j = jwks().await;
    let app = jwt_app(&j).await;
    let good = es256(&j.signing_pem, "k1", &claims(STAFF, ISS, AUD, 300));
    let (status, body) = get_with_jwt(&app, &good).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(STAFF));
    let after_good = app.fake.requests().len();

    let header_none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims(STAFF, ISS, AUD, 300).to_string());
    let alg_none = format!("{header_none}.{payload}.");
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let hs256_with_public_key = encode(
        &hs,
        &claims(STAFF, ISS, AUD, 300),
        &EncodingKey::from_secret(j.public_pem.as_bytes()),
    )
    .unwrap();

    let attacks: Vec<(&str, String)> = vec![
        (
            "forged: signed by another key under the known kid",
            es256(&j.other_pem, "k1", &claims(STAFF, ISS, AUD, 300)),
        ),
        (
            "expired",
            es256(&j.signing_pem, "k1", &claims(STAFF, ISS, AUD, -600)),
        ),
        (
            "wrong aud",
            es256(
                &j.signing_pem,
                "k1",
                &claims(STAFF, ISS, "another-app", 300),
            ),
        ),
        (
            "wrong iss",
            es256(
                &j.signing_pem,
                "k1",
                &claims(STAFF, "https://evil.example", AUD, 300),
            ),
        ),
        ("alg none", alg_none),
        ("HS256 signed with the public key", hs256_with_public_key),
        (
            "unknown kid",
            es256(&j.other_pem, "k-unknown", &claims(STAFF, ISS, AUD, 300)),
        ),
        ("garbage", "not.a.jwt".into()),
    ];
    for (name, token) in attacks {
        let (status, body) = get_with_jwt(&app, &token).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert!(!body.contains("users-table"), "{name}");
    }
    // Missing assertion.
    let r = app.response("/users").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        app.fake.requests().len(),
        after_good,
        "no attack reached Vultr"
    );
    // Unknown kids refetch the JWKS, but rate-limited: not once per request.
    for _ in 0..5 {
        let t = es256(&j.other_pem, "k-unknown", &claims(STAFF, ISS, AUD, 300));
        get_with_jwt(&app, &t).await;
    }
    assert!(
        j.fetches.load(Ordering::SeqCst) <= 2,
        "JWKS fetched {} times",
        j.fetches.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn identity_attacks() {
    let app = TestApp::spawn().await;
    let untrusted = TestApp::spawn_with(
        FakeVultr::seeded(ROOT_KEY),
        Options {
            trusted: vec!["10.0.0.0/8"],
            ..Default::default()
        },
    )
    .await;
    let anonymous = client(None);
    let stranger = client(Some("stranger@example.com"));

    let (s, _) = {
        let r = anonymous.get(app.url("/users")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(s, 401, "no identity");
    let (s, _) = untrusted.get("/users").await;
    assert_eq!(s, 401, "identity header from an untrusted peer");
    let r = stranger.get(app.url("/users")).send().await.unwrap();
    assert_eq!(r.status(), 403, "unknown email");
    let body = r.text().await.unwrap();
    assert!(body.contains("signed in as stranger@example.com"));
    assert!(body.contains("do not have access"));
    assert!(app.fake.requests().is_empty());
    assert!(untrusted.fake.requests().is_empty());
    let denied = app.audit_count("access.denied").await;
    assert_eq!(denied, 1, "the refusal is audited");
}

#[tokio::test]
async fn a_viewer_sees_no_controls_and_cannot_post() {
    let app = TestApp::spawn().await;
    let viewer = client(Some(VIEWER));
    let id = app.user_id("ada@example.com");
    let page = get_text(&viewer, app.url(&format!("/users/{id}"))).await;
    assert!(page.contains("viewer"));
    assert!(!page.contains("add-key-form"));
    assert!(!page.contains("/delete"));
    // An operator's token does not help a viewer either.
    let token = app.form_token(&id).await;
    let key = app.fake.keys_of(&id)[0].id.clone();
    app.fake.clear_log();
    for (path, form) in [
        (
            format!("/users/{id}/keys"),
            vec![("form_token", token.as_str()), ("name", "x")],
        ),
        (
            format!("/users/{id}/keys/{key}/delete"),
            vec![("form_token", token.as_str())],
        ),
    ] {
        let r = viewer
            .post(app.url(&path))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert!(r.text().await.unwrap().contains("viewer role"));
    }
    let r = viewer
        .get(app.url(&format!("/users/{id}/keys/{key}/delete")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(app.fake.requests().is_empty(), "nothing reached Vultr");
}

#[tokio::test]
async fn forgery_attacks_change_nothing() {
    let (app, id) = TestApp::with_user("ada@example.com").await;
    // Session A renders a form (the cookie is set on the first page).
    app.get("/users").await;
    let token_a = app.form_token(&id).await;
    // Session B: the same person in another browser session.
    let other_session = client(Some(STAFF));
    other_session.get(app.url("/users")).send().await.unwrap();
    let path = format!("/users/{id}/keys");
    let rows: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "no anti-forgery token",
            app.client.post(app.url(&path)).form(&[("name", "x")]),
        ),
        (
            "another session's token",
            other_session
                .post(app.url(&path))
                .form(&[("form_token", token_a.as_str()), ("name", "x")]),
        ),
        (
            "foreign Origin",
            app.client
                .post(app.url(&path))
                .header("origin", "https://evil.example")
                .form(&[("form_token", token_a.as_str()), ("name", "x")]),
        ),
        (
            "foreign Referer",
            app.client
                .post(app.url(&path))
                .header("referer", "https://evil.example/page")
                .form(&[("form_token", token_a.as_str()), ("name", "x")]),
        ),
    ];
    for (name, req) in rows {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "{name}");
        assert!(revealed_key(&r.text().await.unwrap()).is_none(), "{name}");
    }
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
    // A forged revoke is refused the same way.
    let key = app.fake.keys_of(&id)[0].id.clone();
    let r = other_session
        .post(app.url(&format!("/users/{id}/keys/{key}/delete")))
        .form(&[("form_token", token_a.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 0);
    // Token refusals are audited (Origin/Referer refusals stop before any handler).
    let refused = app.audit_count("csrf.rejected").await;
    assert_eq!(
        refused, 3,
        "missing token, other session's token, forged revoke"
    );
    // The original session's token still works afterwards (it was never claimed).
    let r = app.submit(&path, &token_a, &[("name", "legit")]).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn input_attacks_are_rejected_before_vultr() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let app = TestApp::spawn_with(
        fake,
        Options {
            policy: keydesk::policy::KeyPolicy {
                max_days: Some(90),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let id = app.user_id("ada@example.com");
    let long = "n".repeat(300);
    let beyond = date_in(120);
    // A valid date, relative to today: only the field under test is bad.
    let fine = date_in(30);
    let rows: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "control characters in name",
            vec![
                ("name", "a\u{0}b"),
                ("expire", "on"),
                ("date_expire", &fine),
            ],
        ),
        (
            "300-character name",
            vec![("name", &long), ("expire", "on"), ("date_expire", &fine)],
        ),
        (
            "date in the past",
            vec![
                ("name", "k"),
                ("expire", "on"),
                ("date_expire", "2001-01-01"),
            ],
        ),
        (
            "2030-02-30",
            vec![
                ("name", "k"),
                ("expire", "on"),
                ("date_expire", "2030-02-30"),
            ],
        ),
        (
            "expiry beyond the policy",
            vec![("name", "k"), ("expire", "on"), ("date_expire", &beyond)],
        ),
        (
            "expiry flag without a date",
            vec![("name", "k"), ("expire", "on")],
        ),
        (
            "never expiring under a max-lifetime policy",
            vec![("name", "k")],
        ),
    ];
    for (name, fields) in rows {
        let r = app.create_key(&id, &fields).await;
        assert_eq!(r.status(), 422, "{name}");
        assert!(r.text().await.unwrap().contains("field-error"), "{name}");
    }
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
    let long_id = "a".repeat(5000);
    for bad in ["..", "a%2Fb", "%2e%2e%2f", "a%00b", long_id.as_str()] {
        let (status, _) = raw_get(&app.base, &format!("/users/{bad}"), STAFF).await;
        assert_eq!(status, 400, "{bad}");
    }
    assert!(
        app.fake
            .requests()
            .iter()
            .all(|r| r.method == "GET" && !r.path.contains("..")),
        "only the form pages' own reads reached Vultr"
    );
}

#[tokio::test]
async fn the_session_cookie_is_httponly_strict_secure_and_host_prefixed() {
    let app = TestApp::spawn_with(
        FakeVultr::seeded(ROOT_KEY),
        Options {
            cookie_secure: true,
            ..Default::default()
        },
    )
    .await;
    // A page that stores nothing sets no cookie; a page with a form does.
    let r = app.response("/users").await;
    assert!(r.headers().get("set-cookie").is_none());
    let id = app.user_id("ada@example.com");
    let r = app.response(&format!("/users/{id}")).await;
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    // Secure: the `__Host-` prefix, which browsers accept only over HTTPS,
    // with `Path=/` and no `Domain`, so no sibling host can plant it.
    assert!(cookie.starts_with("__Host-keydesk_session="), "{cookie}");
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");
}

#[tokio::test]
async fn protocol_abuse_gets_portal_error_pages() {
    let app = TestApp::spawn().await;
    // Wrong method.
    let r = app.client.delete(app.url("/users")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.text().await.unwrap().contains("Method not allowed"));
    // Oversized body.
    let id = app.user_id("ada@example.com");
    let big = "x".repeat(200 * 1024);
    let r = app
        .post_form(&format!("/users/{id}/keys"), &[("name", big.as_str())])
        .await;
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("too large"));
    // Oversized headers.
    let r = app
        .get_with_header("/users", ("x-padding", &"p".repeat(20 * 1024)))
        .await;
    assert_eq!(r.status(), 431);
    // Unknown page.
    let (s, body) = app.get("/nope").await;
    assert_eq!(s, 404);
    assert!(body.contains("There is no page at this address") && !body.contains("panicked"));
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
}

#[tokio::test]
async fn a_new_identity_on_the_same_cookie_gets_a_fresh_session() {
    let (app, id) = TestApp::with_user("ada@example.com").await;
    let key = app.fake.keys_of(&id)[0].clone();
    let path = format!("/users/{id}/keys/{}/delete", key.id);
    let (_, confirm) = app.get(&path).await;
    // STAFF revokes: a notice is queued in STAFF's session.
    let r = app
        .submit(&path, &hidden_token(&confirm), &[CONFIRMED])
        .await;
    assert_eq!(r.status(), 303);
    // The same browser (same cookie) now arrives as another person.
    let r = app
        .get_with_header(&format!("/users/{id}"), ("x-forwarded-email", OTHER))
        .await;
    let body = r.text().await.unwrap();
    assert!(body.contains(OTHER));
    assert!(
        !body.contains("Revoked the key"),
        "nothing crosses identities"
    );
    // And a form rendered for STAFF is useless to OTHER on that cookie.
    let token = app.form_token(&id).await;
    let r = app
        .create_key_with_header(&id, &token, ("x-forwarded-email", OTHER))
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
}

#[tokio::test]
async fn an_rs256_assertion_is_verified_and_an_rs256_forgery_is_not() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let mut rng = rand_core::OsRng;
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let other = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let jwk = json!({
        "kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    });
    let set = json!({ "keys": [jwk] });
    let jwks_app = axum::Router::new().route("/jwks", get(move || async move { Json(set) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, jwks_app).await });
    let verifier = JwtVerifier::new(JwtSettings {
        header: "x-goog-iap-jwt-assertion".parse().unwrap(),
        jwks_url: format!("http://{addr}/jwks"),
        issuer: "https://cloud.google.com/iap".into(),
        audience: vec!["/projects/1/global/backendServices/2".into()],
        email_claim: "email".into(),
        groups_claim: "groups".into(),
        algorithms: vec![Algorithm::RS256],
    })
    .unwrap();
    let app = TestApp::spawn_with(
        FakeVultr::seeded(ROOT_KEY),
        Options {
            identity: None,
            auth: Some(AuthMode::Jwt(Arc::new(verifier))),
            ..Default::default()
        },
    )
    .await;
    let sign = |k: &rsa::RsaPrivateKey| {
        let pem = k.to_pkcs1_pem(LineEnding::LF).unwrap();
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("r1".into());
        encode(
            &h,
            &claims(
                VIEWER,
                "https://cloud.google.com/iap",
                "/projects/1/global/backendServices/2",
                300,
            ),
            &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let ok = app
        .get_with_header("/users", ("x-goog-iap-jwt-assertion", &sign(&key)))
        .await;
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains(VIEWER));
    let forged = app
        .get_with_header("/users", ("x-goog-iap-jwt-assertion", &sign(&other)))
        .await;
    assert_eq!(forged.status(), 401);
}

/// Two identity headers: a proxy that appends its own header instead of
/// replacing the client's would let the client choose who they are.
#[tokio::test]
async fn an_identity_header_sent_twice_is_refused_and_audited() {
    let groups = AuthMode::Header {
        header: "x-forwarded-email".parse().unwrap(),
        groups_header: Some("x-forwarded-groups".parse().unwrap()),
        trusted: vec!["127.0.0.1/32".parse().unwrap()],
    };
    let app = TestApp::spawn_with(
        FakeVultr::seeded(ROOT_KEY),
        Options {
            identity: None,
            auth: Some(groups),
            ..Default::default()
        },
    )
    .await;
    let c = client(None);
    let twice = |pairs: &[(&'static str, &'static str)]| {
        let mut req = c.get(app.url("/users"));
        for (k, v) in pairs {
            req = req.header(*k, *v);
        }
        req
    };
    let cases: [&[(&str, &str)]; 2] = [
        &[
            ("x-forwarded-email", STAFF),
            ("x-forwarded-email", "nobody@example.com"),
        ],
        &[
            ("x-forwarded-email", STAFF),
            ("x-forwarded-groups", "platform"),
            ("x-forwarded-groups", "admins"),
        ],
    ];
    for pairs in cases {
        let r = twice(pairs).send().await.unwrap();
        assert_eq!(r.status(), 401, "{pairs:?}");
        let body = r.text().await.unwrap();
        assert!(body.contains("more than one identity"), "{body}");
        assert!(!body.contains(STAFF), "not served as the first identity");
    }
    assert_eq!(app.audit_count("access.denied").await, 2);
    assert!(app.fake.requests().is_empty(), "nothing reached Vultr");
    // Once each, the same person is served.
    let r = twice(&[("x-forwarded-email", STAFF)]).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// The same, from a peer that is not the proxy: refused, and nothing written
/// (anyone who can reach the port could otherwise fill the audit).
#[tokio::test]
async fn an_identity_header_sent_twice_by_a_stranger_writes_nothing() {
    let app = TestApp::spawn_with(
        FakeVultr::seeded(ROOT_KEY),
        Options {
            identity: None,
            trusted: vec!["10.9.8.7/32"],
            ..Default::default()
        },
    )
    .await;
    for _ in 0..20 {
        let r = client(None)
            .get(app.url("/users"))
            .header("x-forwarded-email", STAFF)
            .header("x-forwarded-email", "nobody@example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(app.audit_count("access.denied").await, 0);
    assert!(app.fake.requests().is_empty());
}

#[tokio::test]
async fn a_jwt_assertion_sent_twice_is_refused() {
    let j = jwks().await;
    let app = jwt_app(&j).await;
    let good = es256(&j.signing_pem, "k1", &claims(STAFF, ISS, AUD, 300));
    let r = client(None)
        .get(app.url("/users"))
        .header("cf-access-jwt-assertion", good.as_str())
        .header("cf-access-jwt-assertion", good.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Anyone can send two headers: refused and logged, not written.
    assert_eq!(app.audit_count("access.denied").await, 0);
    assert_eq!(get_with_jwt(&app, &good).await.0, 200);
}

#[tokio::test]
async fn an_unreachable_idp_is_asked_at_most_once_per_interval_from_the_start() {
    // A JWKS endpoint that always fails, counting how often it is asked.
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let failing = axum::Router::new().route(
        "/certs",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { axum::http::StatusCode::SERVICE_UNAVAILABLE }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, failing).await });
    let mut j = jwks().await;
    j.url = format!("http://{addr}/certs");
    let app = jwt_app(&j).await;
    let token = es256(&j.signing_pem, "k1", &claims(STAFF, ISS, AUD, 300));
    for _ in 0..20 {
        assert_eq!(get_with_jwt(&app, &token).await.0, 401);
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "20 requests before any successful fetch asked the IdP once"
    );
}

/// A form rendered on a first visit (no cookie yet) is bound to the session
/// created for it: the same person without that cookie cannot use it.
#[tokio::test]
async fn a_first_visit_form_token_is_bound_to_a_new_session() {
    let (app, id) = TestApp::with_user("ada@example.com").await;
    let r = app.response(&format!("/users/{id}")).await;
    let cookie = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    assert!(
        cookie
            .as_deref()
            .is_some_and(|c| c.starts_with("keydesk_session=")),
        "the first visit gets a session: {cookie:?}"
    );
    let token = hidden_token(&r.text().await.unwrap());
    // Same identity, no cookie: the token was not issued to this browser.
    let cookieless = client(Some(STAFF));
    let r = cookieless
        .post(app.url(&format!("/users/{id}/keys")))
        .form(&[("form_token", token.as_str()), ("name", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
    // The browser that got the page and its cookie can.
    let r = app.create_key_with(&id, &token, &[("name", "x")]).await;
    assert_eq!(r.status(), 200);
}

/// The proxy rotates its signing key: the JWKS now holds only `k2`. The
/// first assertion under `k2` fetches the set once and is accepted; later
/// ones need no fetch; an assertion under the retired `k1` is refused.
#[tokio::test]
async fn a_rotated_jwks_key_is_fetched_once_and_the_old_one_stops_working() {
    let j = jwks().await;
    let app = jwt_app(&j).await;
    let old = es256(&j.signing_pem, "k1", &claims(STAFF, ISS, AUD, 300));
    assert_eq!(get_with_jwt(&app, &old).await.0, 200);
    let before = j.fetches.load(Ordering::SeqCst);

    let (new_pem, _, mut jwk) = p256_pems();
    jwk["kid"] = json!("k2");
    jwk["alg"] = json!("ES256");
    *j.set.lock().unwrap() = json!({ "keys": [jwk] });
    let new = es256(&new_pem, "k2", &claims(STAFF, ISS, AUD, 300));
    // The set was fetched moments ago: keydesk refetches at most every 10 s,
    // so the new kid is accepted once that interval has passed, after one
    // fetch however many times it was asked for before.
    within_secs(20, "the new kid to be fetched and accepted", async {
        while get_with_jwt(&app, &new).await.0 != 200 {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    })
    .await;
    for _ in 0..3 {
        let (status, body) = get_with_jwt(&app, &new).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        j.fetches.load(Ordering::SeqCst) - before,
        1,
        "the new kid was fetched exactly once"
    );
    // The set no longer holds k1: a new assertion under it is refused. (A
    // verifier may keep a key it already has until the next fetch; it must
    // not keep it after one.)
    let retired = es256(&j.signing_pem, "k1", &claims(STAFF, ISS, AUD, 300));
    assert_eq!(get_with_jwt(&app, &retired).await.0, 401);
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
}

/// Roles granted through groups over HTTP: `group:platform` operates and
/// `group:readers` looks, in header mode and in JWT mode. Each cell checks
/// what reached the fake, not only the status.
#[tokio::test]
async fn roles_granted_through_groups_work_in_header_and_jwt_mode() {
    use keydesk::identity::Access;
    let access = Access::new(&["group:readers".into()], &["group:platform".into()]);
    let j = jwks().await;
    let verifier = verifier(&j);
    let header_mode = AuthMode::Header {
        header: "x-forwarded-email".parse().unwrap(),
        groups_header: Some("x-forwarded-groups".parse().unwrap()),
        trusted: vec!["127.0.0.1/32".parse().unwrap()],
    };
    for (mode, auth) in [
        ("header", header_mode),
        ("jwt", AuthMode::Jwt(Arc::new(verifier))),
    ] {
        let app = TestApp::spawn_with(
            FakeVultr::seeded(ROOT_KEY),
            Options {
                identity: None,
                auth: Some(auth),
                access: access.clone(),
                ..Default::default()
            },
        )
        .await;
        let ada = app.user_id("ada@example.com");
        // Who, with which groups, as this mode carries them.
        let as_member = |email: &str, groups: &[&str]| {
            let mut h = reqwest::header::HeaderMap::new();
            if mode == "header" {
                h.insert("x-forwarded-email", email.parse().unwrap());
                h.insert("x-forwarded-groups", groups.join(",").parse().unwrap());
            } else {
                let mut c = claims(email, ISS, AUD, 300);
                c["groups"] = json!(groups);
                let t = es256(&j.signing_pem, "k1", &c);
                h.insert("cf-access-jwt-assertion", t.parse().unwrap());
            }
            reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .default_headers(h)
                .build()
                .unwrap()
        };
        let operator = as_member("ops@example.com", &["platform", "other"]);
        let reader = as_member("reads@example.com", &["readers"]);
        let outsider = as_member("out@example.com", &["staff"]);

        let page = format!("/users/{ada}");
        assert_eq!(status_as(&operator, app.url(&page)).await, 200, "{mode}");
        assert_eq!(status_as(&reader, app.url(&page)).await, 200, "{mode}");
        assert_eq!(status_as(&outsider, app.url(&page)).await, 403, "{mode}");

        // The operator's create reaches Vultr once; the reader has no form.
        let body = get_text(&operator, app.url(&page)).await;
        let token = hidden_token(&body);
        let form = [("form_token", token.as_str()), ("name", "via-group")];
        let r = post_as(&operator, app.url(&format!("/users/{ada}/keys")), &form).await;
        assert_eq!(r.status(), 200, "{mode}: {}", r.text().await.unwrap());
        assert_eq!(app.fake.count("POST", "/v2/users"), 1, "{mode}");
        let reader_page = get_text(&reader, app.url(&page)).await;
        assert!(
            !reader_page.contains("name=\"form_token\""),
            "{mode}: a reader sees no form"
        );
        let r = post_as(&reader, app.url(&format!("/users/{ada}/keys")), &form).await;
        assert_eq!(r.status(), 403, "{mode}");
        assert_eq!(
            app.fake.count("POST", "/v2/users"),
            1,
            "{mode}: nothing more"
        );
        let entries = app
            .state
            .audit
            .list(&Default::default(), 50, 0)
            .await
            .unwrap();
        assert!(
            entries.iter().any(|e| e.action == "key.create"
                && e.actor == "ops@example.com"
                && e.outcome == "ok"),
            "{mode}: the create is audited under the member's name"
        );
    }
}

/// A look-alike is never someone else (issue 33, §5): `kim@example.com`
/// operates; an assertion for `\u{212A}im@example.com` (the Kelvin sign,
/// which Unicode lowercases to `k`) is a stranger, refused and audited as
/// written, while the same person in another ASCII case still operates.
#[tokio::test]
async fn a_kelvin_sign_in_an_assertion_is_not_the_operator_kim() {
    use keydesk::identity::Access;
    let j = jwks().await;
    let app = TestApp::spawn_with(
        FakeVultr::seeded(ROOT_KEY),
        Options {
            identity: None,
            auth: Some(AuthMode::Jwt(Arc::new(verifier(&j)))),
            access: Access::new(&[], &["kim@example.com".into()]),
            ..Default::default()
        },
    )
    .await;
    let kelvin = "\u{212A}im@example.com";
    let look_alike = es256(&j.signing_pem, "k1", &claims(kelvin, ISS, AUD, 300));
    let (status, body) = get_with_jwt(&app, &look_alike).await;
    assert_eq!(status, 403, "{body}");
    let denied = app
        .state
        .audit
        .list(
            &keydesk::audit::Filter {
                action: Some("access.denied".into()),
                ..Default::default()
            },
            5,
            0,
        )
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].intent.actor, kelvin);

    let same_person = es256(
        &j.signing_pem,
        "k1",
        &claims("Kim@Example.COM", ISS, AUD, 300),
    );
    let (status, body) = get_with_jwt(&app, &same_person).await;
    assert_eq!(status, 200, "{body}");
}
