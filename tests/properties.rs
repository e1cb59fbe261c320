//! Hostile input by the hundred against the real server and the fake Vultr
//! (issue 33, §2 and §8). Every answer is a 4xx with a clear error page or,
//! for input keydesk accepts, what it promises (a valid request id, a
//! same-origin redirect); never a 5xx; and nothing written: no POST, PATCH
//! or DELETE reaches the fake, and no audit row appears where the product
//! promises none. The pure parsers have their own 1,000-case properties
//! next to them (`cargo test --lib`); these go through HTTP.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::oidc;
use common::rogue_op::{Forge, Rogue};
use common::{Options, ROOT_KEY, TestApp, client, hidden_token};
use keydesk::audit::Filter;
use keydesk::fake_vultr::FakeVultr;
use keydesk::request_id::is_valid;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::header::HeaderValue;

/// A runtime the properties block on (proptest's runner is synchronous).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `cases` cases of `strategy` through `test`, each on `rt`.
fn check<S: Strategy>(
    rt: &tokio::runtime::Runtime,
    cases: u32,
    strategy: S,
    test: impl AsyncFn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config::with_cases(cases));
    let result = runner.run(&strategy, |v| rt.block_on(test(v)));
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// What was written: the fake's non-GET requests and the audit rows.
async fn written(app: &TestApp) -> (Vec<String>, i64) {
    let audit = app.state.audit.count(&Filter::default()).await.unwrap();
    (oidc::writes(&app.fake), audit)
}

/// The newest audit row with `action`: its request id.
async fn newest_request_id(app: &TestApp, action: &str) -> Option<String> {
    let filter = Filter {
        action: Some(action.into()),
        ..Default::default()
    };
    let rows = app.state.audit.list(&filter, 1, 0).await.unwrap();
    rows.into_iter().next().unwrap().intent.request_id
}

/// A request id header value made of raw bytes (reqwest would refuse
/// non-ASCII given as text; a client on the wire need not).
fn raw_header(id: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(id).unwrap()
}

#[tokio::test]
async fn a_clients_request_id_is_kept_only_in_its_shape_in_the_audit_and_the_answer() {
    let (app, ada) = TestApp::with_user("ada@example.com").await;
    let formula = format!(
        "=HYPERLINK(\"https://evil.example\",\"x\"){}",
        "A".repeat(12_000)
    );
    let cases: [(&[u8], bool); 5] = [
        (formula.as_bytes(), false),
        (b"has space", false),
        (b"a=b", false),
        ("caf\u{e9}-\u{212A}".as_bytes(), false),
        (b"abc-123_X.y", true),
    ];
    for (i, (sent, kept)) in cases.into_iter().enumerate() {
        let token = app.form_token(&ada).await;
        let name = format!("rid-{i}");
        let r = app
            .client
            .post(app.url(&format!("/users/{ada}/keys")))
            .header("x-request-id", raw_header(sent))
            .form(&[("form_token", token.as_str()), ("name", name.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(sent));
        let answered = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let audited = newest_request_id(&app, "key.create").await;
        assert_eq!(audited.as_deref(), Some(answered.as_str()));
        assert!(is_valid(&answered), "{answered:?}");
        if kept {
            assert_eq!(answered.as_bytes(), sent);
        } else {
            assert_ne!(answered.as_bytes(), sent);
        }
    }
}

/// Request-id header values as a client may send them: visible ASCII, the
/// shape's own characters, high bytes, and very long ones.
fn request_ids() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[A-Za-z0-9._-]{1,70}".prop_map(String::into_bytes),
        "[ -~]{0,80}".prop_map(String::into_bytes),
        prop::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff], 0..80),
        "[A-Za-z0-9=+(),\"]{60,3000}".prop_map(String::into_bytes),
    ]
    .prop_filter("a header value", |v| HeaderValue::from_bytes(v).is_ok())
}

#[test]
fn request_ids_by_the_hundred_are_kept_only_in_their_shape() {
    let rt = runtime();
    let app = rt.block_on(TestApp::spawn());
    // No role: every request is refused and audited `access.denied` with its id.
    let stranger = client(Some("stranger@example.com"));
    check(&rt, 400, request_ids(), async |sent: Vec<u8>| {
        let r = stranger
            .get(app.url("/users"))
            .header("x-request-id", raw_header(&sent))
            .send()
            .await
            .unwrap();
        prop_assert_eq!(r.status().as_u16(), 403);
        let answered = r.headers()["x-request-id"].to_str().unwrap().to_string();
        prop_assert!(is_valid(&answered), "{:?}", answered);
        let shaped = std::str::from_utf8(&sent).is_ok_and(is_valid);
        prop_assert_eq!(answered.as_bytes() == sent.as_slice(), shaped);
        let audited = newest_request_id(&app, "access.denied").await;
        prop_assert_eq!(audited.as_deref(), Some(answered.as_str()));
        prop_assert!(r.text().await.unwrap().contains(&answered));
        prop_assert!(oidc::writes(&app.fake).is_empty());
        Ok(())
    });
}

/// Path segments that are never a Vultr id, percent-encoded as a browser
/// or a script would send them.
fn hostile_ids() -> impl Strategy<Value = String> {
    let bad = prop_oneof![
        prop::sample::select(vec![
            ".", "..", "%", " ", "/", "\\", "\0", "\n", "?", "#", "é", "\u{212A}", "'", "\"", "<",
            ">", ";", "=",
        ])
        .prop_map(str::to_string),
        any::<char>()
            .prop_filter("not an id character", |c| {
                !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            })
            .prop_map(String::from),
    ];
    prop_oneof![
        ("[A-Za-z0-9_-]{0,20}", bad, "[A-Za-z0-9_-]{0,20}").prop_map(|(a, b, c)| a + &b + &c),
        "[A-Za-z0-9_-]{65,200}",
    ]
    // A lone `.` or `..` is a dot segment: the client's URL parser removes it.
    .prop_filter("not a dot segment", |id| id != "." && id != "..")
    .prop_map(|id| percent_encoding::utf8_percent_encode(&id, SEGMENT).to_string())
}

/// Everything but an id's own characters is encoded in a path segment.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_');

#[test]
fn hostile_path_ids_are_refused_in_words_and_reach_nothing() {
    let rt = runtime();
    let app = rt.block_on(TestApp::spawn());
    let ada = app.user_id("ada@example.com");
    let key = app.fake.keys_of(&ada)[0].id.clone();
    let routes = prop::sample::select(vec![
        "GET /users/{}",
        "POST /users/{}/keys",
        "GET /users/{ada}/keys/{}/delete",
        "POST /users/{ada}/keys/{}/rotate",
        "GET /users/{}/keys/{key}/rotate",
        "GET /users/{}/allowlist",
    ]);
    let before = rt.block_on(written(&app));
    app.fake.clear_log();
    check(&rt, 600, (routes, hostile_ids()), async |(route, id)| {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{ada}", &ada)
            .replace("{key}", &key)
            .replace("{}", &id);
        let req = match method {
            "GET" => app.client.get(app.url(&path)),
            _ => app.client.post(app.url(&path)).form(&[("name", "x")]),
        };
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        prop_assert!(
            (400..500).contains(&status),
            "{} {} → {}",
            method,
            path,
            status
        );
        prop_assert!(
            body.contains("That is not a valid Vultr id"),
            "{} {} → {}: {}",
            method,
            path,
            status,
            body
        );
        prop_assert!(
            app.fake.requests().is_empty(),
            "{} {} reached Vultr",
            method,
            path
        );
        Ok(())
    });
    assert_eq!(rt.block_on(written(&app)), before);
}

/// A key name keydesk refuses: empty, blank, too long, or holding a
/// control character.
fn bad_names() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[ \t]{1,5}",
        "[a-z][a-z ]{99,298}[a-z]",
        // Inside the name: at an edge, U+0085 is whitespace that trim()
        // takes away (the name is then kept without it, as typed).
        (
            "[!-~][ -~]{0,19}",
            "[\u{0}-\u{8}\u{b}\u{c}\u{e}-\u{1f}\u{7f}\u{85}]",
            "[ -~]{0,19}[!-~]"
        )
            .prop_map(|(a, b, c)| a + &b + &c),
    ]
}

/// An expiry keydesk refuses when ticked: no date, not a calendar date, or
/// today and earlier.
fn bad_dates() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[0-9]{4}-(1[3-9]|00)-[0-9]{2}",
        "[0-9]{4}-[0-9]{2}-(3[2-9]|00)",
        "[ -~]{1,40}".prop_filter("not a date", |s| {
            !s.trim().chars().next().is_some_and(|c| c.is_ascii_digit())
        }),
        (0i64..4000).prop_map(|d| (time::OffsetDateTime::now_utc().date()
            - time::Duration::days(d))
        .to_string()),
    ]
}

#[test]
fn hostile_add_key_forms_are_refused_in_words_and_write_nothing() {
    let rt = runtime();
    // Cached Vultr reads: each refused form shows the user page again.
    let mut opts = Options::default();
    opts.upstream.cache_ttl = Duration::from_secs(300);
    let app = rt.block_on(TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts));
    let ada = app.user_id("ada@example.com");
    // One form: a refused submit gives it back, so it serves every case.
    let token = rt.block_on(app.form_token(&ada));
    let fields = prop_oneof![
        (
            bad_names(),
            proptest::option::of("[ -~]{0,12}"),
            any::<bool>()
        ),
        ("[a-z]{1,20}", bad_dates().prop_map(Some), Just(true)),
    ];
    let before = rt.block_on(written(&app));
    check(&rt, 300, fields, async |(name, date, tick)| {
        let mut form = vec![("form_token", token.clone()), ("name", name.clone())];
        if let Some(d) = &date {
            form.push(("date_expire", d.clone()));
        }
        if tick {
            form.push(("expire", "on".into()));
        }
        let r = app
            .client
            .post(app.url(&format!("/users/{ada}/keys")))
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        prop_assert_eq!(status, 422, "{:?} {:?} {}: {}", name, date, tick, body);
        // The refused field says why, next to it.
        let said = body.contains(r#"id="name-error""#) || body.contains(r#"id="date-error""#);
        prop_assert!(
            said,
            "no field error for {:?} {:?} {}: {}",
            name,
            date,
            tick,
            body
        );
        prop_assert_eq!(hidden_token(&body), token.clone());
        prop_assert!(oidc::writes(&app.fake).is_empty());
        Ok(())
    });
    assert_eq!(rt.block_on(written(&app)), before);
}

/// `next=` values: plain paths, and what an open redirect is made of.
fn nexts() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        3 => "[A-Za-z0-9/?=&._~%-]{0,12}",
        1 => prop::sample::select(vec![
            "//", "/\\", "\\", "https://evil.example", "javascript:alert(1)", "@evil.example",
            "\t", "\n", "\u{0}", " ", "\u{e9}", "\u{3000}", "\u{FF0F}", "%2F%2F", "..",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ];
    (any::<bool>(), prop::collection::vec(part, 0..5)).prop_map(|(lead, parts)| {
        let tail = parts.concat();
        if lead { format!("/{tail}") } else { tail }
    })
}

#[test]
fn hostile_next_values_are_refused_or_stay_on_keydesk() {
    let rt = runtime();
    let (_rogue, app) = rt.block_on(async {
        let rogue = Rogue::start(oidc::CLIENT_ID).await;
        rogue.forge(Forge::Honest);
        let port = oidc::free_port();
        let opts = oidc::options(oidc::settings(rogue.issuer(), port));
        // `/auth/*` is limited per address; here every value must reach the parser.
        let app = oidc::serve_unlimited(&FakeVultr::seeded(ROOT_KEY), port, &opts).await;
        // Signed in: an accepted `next` is answered with the redirect itself.
        let first = app.response("/users").await;
        assert_eq!(first.status(), 302);
        let back = app.client.get(oidc::location(&first)).send().await.unwrap();
        let done = app.client.get(oidc::location(&back)).send().await.unwrap();
        assert!(done.status().is_redirection(), "{}", done.status());
        (rogue, app)
    });
    let before = rt.block_on(written(&app));
    check(&rt, 600, nexts(), async |next: String| {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("next", &next)
            .finish();
        let r = app
            .client
            .get(app.url(&format!("/auth/login?{query}")))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 303 {
            let to = r.headers()["location"].to_str().unwrap();
            let home = if next.is_empty() { "/" } else { next.as_str() };
            prop_assert_eq!(to, home);
            let joined = reqwest::Url::parse(&app.base).unwrap().join(to).unwrap();
            prop_assert_eq!(
                joined.origin(),
                reqwest::Url::parse(&app.base).unwrap().origin()
            );
        } else {
            let body = r.text().await.unwrap();
            let empty = next.is_empty();
            prop_assert!(!empty, "an empty next goes home: {}", status);
            prop_assert_eq!(status, 400, "{:?}: {}", next, body);
            prop_assert!(body.contains("next must be a path on keydesk"), "{}", body);
        }
        Ok(())
    });
    assert_eq!(rt.block_on(written(&app)), before);
}
