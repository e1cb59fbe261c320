//! Real-browser tests: Debian's chromium driven over WebDriver (fantoccini +
//! chromedriver) against keydesk on an ephemeral port with the fake upstream.
//! With CI=true a browser that cannot start fails the tests; locally, without
//! chromedriver, they are skipped with a message.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

struct Driver {
    _child: tokio::process::Child,
    url: String,
    _profile: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts chromedriver, or returns None (skip) outside CI when it is missing.
async fn start_driver() -> Option<Driver> {
    let in_ci = common::pg::require_all();
    let bin = ["/usr/bin/chromedriver", "chromedriver"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok()
        });
    let Some(bin) = bin else {
        assert!(
            !in_ci,
            "CI (or KEYDESK_TEST_REQUIRE_ALL) is set but chromedriver is not installed"
        );
        common::pg::skip_line(
            "chromedriver not installed (apt-get install chromium chromium-driver): the browser tests",
        );
        return None;
    };
    // Port 0: chromedriver picks a free port itself and says which, so no
    // port is guessed, dropped and reused.
    let mut child = tokio::process::Command::new(bin)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let stdout = child.stdout.take().expect("chromedriver stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let port = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                return rest.trim_end_matches('.').trim().parse::<u16>().ok();
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("chromedriver reports its port");
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = format!("http://127.0.0.1:{port}");
    let status = format!("{url}/status");
    for _ in 0..100 {
        if reqwest::get(&status)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            let profile = std::env::temp_dir().join(format!("keydesk-chrome-{port}"));
            return Some(Driver {
                _child: child,
                url,
                _profile: TempDir(profile),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not become ready");
}

async fn browser(driver: &Driver, javascript: bool) -> Client {
    let mut args = vec![
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--no-first-run".into(),
        "--window-size=1280,1000".into(),
        format!("--user-data-dir={}", driver._profile.0.display()),
    ];
    if std::path::Path::new("/usr/bin/chromium").exists() {
        args.push("--disable-features=Translate".into());
    }
    let mut opts = json!({ "args": args });
    if std::path::Path::new("/usr/bin/chromium").exists() {
        opts["binary"] = json!("/usr/bin/chromium");
    }
    if !javascript {
        opts["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), opts);
    let client = ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("chromium starts under chromedriver");
    // Let the page read the clipboard back, so the copy can be verified.
    client
}

/// Lets the current page read the clipboard back, so the copy can be verified.
/// Permissions are per origin, so this runs once a keydesk page is open.
async fn grant_clipboard(driver: &Driver, c: &Client) {
    let session = c.session_id().await.unwrap().unwrap();
    for name in ["clipboard-read", "clipboard-write"] {
        let r = reqwest::Client::new()
            .post(format!("{}/session/{session}/permissions", driver.url))
            .json(&json!({"descriptor": {"name": name}, "state": "granted"}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(status.is_success(), "{name}: {}", r.text().await.unwrap());
    }
}

/// Where screenshots go: the docs' own pictures, so the pages the docs show
/// are the pages this run saw. Commit them with the change that altered them.
fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
}

/// Saves the page as `docs/screenshots/NAME.png`, leaving the file alone
/// when the picture is byte for byte the one already there.
async fn screenshot(c: &Client, name: &str) {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    let path = dir.join(format!("{name}.png"));
    if std::fs::read(&path).is_ok_and(|old| old == png) {
        return;
    }
    std::fs::write(path, png).unwrap();
}

async fn css(c: &Client, sel: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(sel))
        .await
        .unwrap_or_else(|e| panic!("{sel}: {e}"))
}

/// The current value of a form field (the revealed key, a date input).
async fn value(c: &Client, sel: &str) -> String {
    css(c, sel)
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

#[tokio::test]
async fn staff_create_copy_reload_and_revoke_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let app = TestApp::spawn_with(
        keydesk::fake_vultr::FakeVultr::seeded(ROOT_KEY),
        Options::default(),
    )
    .await;
    // The browser cannot set the SSO header, so this app runs in demo identity mode.
    let demo = demo_app(&app).await;
    let c = browser(&driver, true).await;

    // Users list → search → open a user.
    c.goto(&format!("{demo}/users")).await.unwrap();
    screenshot(&c, "users-list").await;
    let q = css(&c, "#q").await;
    q.send_keys("grace").await.unwrap();
    css(&c, "form.search button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    css(&c, "#users-table").await;
    c.find(Locator::LinkText("Grace Hopper"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    css(&c, "#add-key-form").await;
    screenshot(&c, "user-page").await;

    // A validation error keeps the entered values.
    css(&c, "#key-expire").await.click().await.unwrap();
    css(&c, "#add-key").await.click().await.unwrap();
    let err = css(&c, "#name-error").await;
    assert!(err.text().await.unwrap().contains("Enter a name"));
    screenshot(&c, "add-key-error").await;

    // Add a key with the 90-day preset.
    type_into(&c, "#key-name", "browser-90d").await;
    css(&c, "button.preset[data-days='90']")
        .await
        .click()
        .await
        .unwrap();
    let date = value(&c, "#key-date-expire").await;
    assert_eq!(date, date_in(90));
    css(&c, "#add-key").await.click().await.unwrap();

    // The reveal page shows the key.
    let secret = value(&c, "#new-api-key").await;
    assert_eq!(secret.len(), 36);
    assert!(
        c.source()
            .await
            .unwrap()
            .contains("will not be shown again")
    );
    screenshot(&c, "reveal").await;

    // The copy button puts exactly the key on the clipboard and says so.
    css(&c, "#copy-key").await.click().await.unwrap();
    wait_copied(&c).await;
    let status = css(&c, "#copy-status").await;
    assert_eq!(
        status.attr("aria-live").await.unwrap().as_deref(),
        Some("polite")
    );
    grant_clipboard(&driver, &c).await;
    let clip = c
        .execute_async(
            "const done = arguments[0]; navigator.clipboard.readText().then(done, e => done('ERR ' + e));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        clip.as_str(),
        Some(secret.as_str()),
        "clipboard holds exactly the key"
    );

    // "I have copied the key" → the user page lists it, masked.
    css(&c, "#copied-done").await.click().await.unwrap();
    css(&c, "#keys-table").await;
    let page = c.source().await.unwrap();
    assert!(page.contains("browser-90d"));
    assert!(!page.contains(&secret));
    assert!(page.contains(&secret[31..]), "masked tail visible");

    // Back and reload never show the secret again nor create a second key.
    c.back().await.unwrap();
    reload(&c).await;
    let back = c.source().await.unwrap();
    assert!(
        back.contains(r#"id="already-created""#),
        "the resent form gets the 409 page that cannot show the key again"
    );
    assert!(!back.contains(&secret), "secret gone after back + reload");
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);

    // Revoke with its confirmation.
    let grace = app.user_id("grace@example.com");
    c.goto(&format!("{demo}/users/{grace}")).await.unwrap();
    let row = css(&c, "tr[data-key-id] a.danger-link").await;
    row.click().await.unwrap();
    let name = css(&c, "#revoke-key-name").await.text().await.unwrap();
    let flash = confirm_revoke(&c).await;
    assert!(flash.contains(&name), "{flash}");
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 1);

    // Both actions are in the audit trail under the demo identity.
    c.goto(&format!("{demo}/audit")).await.unwrap();
    let audit = css(&c, "#audit-table").await.text().await.unwrap();
    assert!(audit.contains("key.create") && audit.contains("key.revoke"));
    assert!(audit.contains("demo@keydesk.local"));
    screenshot(&c, "audit").await;

    // Narrow screens: the user page still fits at 375 px.
    c.set_window_size(375, 800).await.unwrap();
    c.goto(&format!("{demo}/users/{grace}")).await.unwrap();
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .unwrap();
    if overflow != json!(true) {
        let wide = c
            .execute(
                "return Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).filter(e => !e.closest('.table-wrap')).slice(0, 8).map(e => e.tagName + '.' + e.className + '#' + e.id + ' ' + Math.round(e.getBoundingClientRect().right)).join(', ') +  ' tw=' + getComputedStyle(document.querySelector('.table-wrap')).overflowX + ' ' + document.querySelector('.table-wrap').getBoundingClientRect().width + ' main=' + document.querySelector('main').getBoundingClientRect().width + ' body=' + document.body.getBoundingClientRect().width + ' scrollWidth=' + document.documentElement.scrollWidth + ' clientWidth=' + document.documentElement.clientWidth + ' inner=' + window.innerWidth;",
                vec![],
            )
            .await
            .unwrap();
        panic!("horizontal page scroll at 375 px, too wide: {wide}");
    }
    screenshot(&c, "user-page-375px").await;
    c.close().await.unwrap();
}

#[tokio::test]
async fn the_flow_works_without_javascript() {
    let Some((_driver, app, _demo, c, _ada)) = open_user(false, "ada@example.com").await else {
        return;
    };
    // Progressive enhancement: presets and copy need JS and stay hidden.
    assert!(
        !css(&c, "#expiry-presets")
            .await
            .is_displayed()
            .await
            .unwrap()
    );
    type_into(&c, "#key-name", "no-js-key").await;
    css(&c, "#add-key").await.click().await.unwrap();
    let secret = value(&c, "#new-api-key").await;
    assert_eq!(secret.len(), 36);
    assert!(!css(&c, "#copy-key").await.is_displayed().await.unwrap());
    reload(&c).await;
    let again = c.source().await.unwrap();
    assert!(again.contains(r#"id="already-created""#), "the 409 page");
    assert!(!again.contains(&secret));
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);
    c.close().await.unwrap();
}

/// A second keydesk on the same fake, in demo-identity mode: a browser cannot
/// add the SSO proxy's header itself.
/// Reloads the page; a POST result makes Chromium ask to send the form
/// again, and the answer is yes: the server must then refuse to act twice.
async fn reload(c: &Client) {
    if c.refresh().await.is_err() {
        c.accept_alert().await.unwrap();
    }
}

/// Ticks "I understand", confirms the revocation; the notice that follows.
async fn confirm_revoke(c: &Client) -> String {
    css(c, "#understand").await.click().await.unwrap();
    css(c, "#confirm-revoke-button")
        .await
        .click()
        .await
        .unwrap();
    css(c, "#flash").await.text().await.unwrap()
}

/// Waits until the copy button has said "Copied".
async fn wait_copied(c: &Client) {
    let copied = "//*[@id='copy-status' and contains(., 'Copied')]";
    c.wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::XPath(copied))
        .await
        .unwrap();
}

/// Types `text` into the element matching `selector`.
async fn type_into(c: &Client, selector: &str, text: &str) {
    css(c, selector).await.send_keys(text).await.unwrap();
}

/// `open_demo`, then the page of the seeded user with `email`; also returns
/// that user's id.
async fn open_user(
    javascript: bool,
    email: &str,
) -> Option<(Driver, TestApp, String, Client, String)> {
    let (driver, app, demo, c) = open_demo(javascript).await?;
    let id = app.user_id(email);
    c.goto(&format!("{demo}/users/{id}")).await.unwrap();
    Some((driver, app, demo, c, id))
}

/// Chromium on a demo keydesk over a fresh seeded fake: the driver (keep it
/// alive), the app, the demo's base URL and the browser. None when skipped.
async fn open_demo(javascript: bool) -> Option<(Driver, TestApp, String, Client)> {
    let driver = start_driver().await?;
    let app = TestApp::spawn().await;
    let demo = demo_app(&app).await;
    let c = browser(&driver, javascript).await;
    Some((driver, app, demo, c))
}

/// Two keydesks on one database, signed in as `first` and `second`; the
/// second on another host name, so the identities keep separate cookies.
async fn two_identities(
    settings: impl Fn(&str) -> keydesk::state::Settings,
    first: &str,
    second: &str,
) -> (String, String) {
    let a = serve(settings(first)).await.0;
    let b = serve(settings(second))
        .await
        .0
        .replace("127.0.0.1", "localhost");
    (a, b)
}

async fn demo_app(app: &TestApp) -> String {
    demo_app_as(
        app,
        "demo@keydesk.local",
        keydesk::identity::Access::everyone_operates(),
    )
    .await
}

async fn demo_app_as(app: &TestApp, who: &str, access: keydesk::identity::Access) -> String {
    serve(demo_settings(app.state.vultr.base_url(), who, access))
        .await
        .0
}

#[tokio::test]
async fn rotate_end_to_end_and_a_viewer_sees_no_controls() {
    let Some((driver, app, demo, c)) = open_demo(true).await else {
        return;
    };
    let grace = app.user_id("grace@example.com");
    let old = app.key_named(&grace, "ci-runner");

    // Rotate: choose the replacement's expiry, reveal once, then retire the old key.
    c.goto(&format!("{demo}/users/{grace}")).await.unwrap();
    css(&c, &format!("tr[data-key-id='{}'] a.rotate-link", old.id))
        .await
        .click()
        .await
        .unwrap();
    css(&c, "#rotate-form").await;
    type_into(&c, "#key-reason", "quarterly rotation").await;
    css(&c, "#rotate-button").await.click().await.unwrap();
    let secret = value(&c, "#new-api-key").await;
    assert_eq!(secret.len(), 36);
    assert!(
        app.fake.keys_of(&grace).iter().any(|k| k.id == old.id),
        "old key kept until confirmed"
    );
    css(&c, "#revoke-old").await.click().await.unwrap();
    let flash = confirm_revoke(&c).await;
    assert!(flash.contains("ci-runner"), "{flash}");
    let keys = app.fake.keys_of(&grace);
    assert!(keys.iter().all(|k| k.id != old.id), "old key revoked");
    assert!(
        keys.iter().any(|k| k.name.as_deref() == Some("ci-runner")),
        "replacement present"
    );
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);

    // The expiring-keys report, scanned from the browser.
    c.goto(&format!("{demo}/reports/keys")).await.unwrap();
    css(&c, "#rescan").await.click().await.unwrap();
    c.wait()
        .at_most(std::time::Duration::from_secs(20))
        .for_element(Locator::Css("#report-age"))
        .await
        .unwrap();
    screenshot(&c, "report").await;
    // The Privileged keys report, from the navigation, on the same scan.
    css(&c, "#nav-privileged").await.click().await.unwrap();
    css(&c, "#privileged-table").await;
    screenshot(&c, "privileged").await;
    c.close().await.unwrap();

    // A viewer: no add-key form, no rotate or revoke links, no brake.
    let viewer = demo_app_as(
        &app,
        "auditor@example.com",
        keydesk::identity::Access::new(&["auditor@example.com".into()], &[]),
    )
    .await;
    let v = browser(&driver, true).await;
    v.goto(&format!("{viewer}/users/{grace}")).await.unwrap();
    css(&v, "#keys-table").await;
    let role = css(&v, "#role").await.text().await.unwrap();
    assert_eq!(role, "viewer");
    // A viewer may read the reports, so the navigation offers them.
    css(&v, "#nav-privileged").await;
    for sel in [
        "#add-key-form",
        "a.rotate-link",
        "a.danger-link",
        "#api-access-toggle",
    ] {
        assert!(
            v.find(Locator::Css(sel)).await.is_err(),
            "{sel} rendered for a viewer"
        );
    }
    v.close().await.unwrap();
}

const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";
const SPACE: &str = "\u{E00D}";

/// Presses Tab until the focused element satisfies `want` (id, or `data-days`).
async fn tab_to(c: &Client, want: &str) {
    for _ in 0..80 {
        let el = c.active_element().await.unwrap();
        let id = el.attr("id").await.unwrap().unwrap_or_default();
        let days = el.attr("data-days").await.unwrap().unwrap_or_default();
        if id == want || format!("days-{days}") == want {
            return;
        }
        el.send_keys(TAB).await.unwrap();
    }
    panic!("Tab never reached {want}");
}

async fn press(c: &Client, keys: &str) {
    c.active_element()
        .await
        .unwrap()
        .send_keys(keys)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_key_can_be_created_and_copied_with_the_keyboard_alone() {
    let Some((driver, app, _demo, c, alan)) = open_user(true, "alan@example.com").await else {
        return;
    };
    css(&c, "#add-key-form").await;

    tab_to(&c, "key-name").await;
    // Focus is visible where the keyboard is.
    let outline = c
        .execute(
            "return getComputedStyle(document.activeElement).outlineStyle;",
            vec![],
        )
        .await
        .unwrap();
    assert_ne!(outline, json!("none"), "focus ring visible");
    press(&c, "keyboard-key").await;
    tab_to(&c, "days-90").await;
    press(&c, ENTER).await;
    tab_to(&c, "add-key").await;
    press(&c, ENTER).await;

    let secret = value(&c, "#new-api-key").await;
    assert_eq!(secret.len(), 36);
    grant_clipboard(&driver, &c).await;
    tab_to(&c, "copy-key").await;
    press(&c, SPACE).await;
    wait_copied(&c).await;
    tab_to(&c, "copied-done").await;
    press(&c, ENTER).await;
    css(&c, "#keys-table").await;
    let created = app
        .fake
        .keys_of(&alan)
        .into_iter()
        .find(|k| k.name.as_deref() == Some("keyboard-key"))
        .expect("created from the keyboard");
    assert!(created.date_expire.unwrap().starts_with(&date_in(90)));
    c.close().await.unwrap();
}

#[tokio::test]
async fn offboarding_and_clearing_expired_keys_in_a_real_browser() {
    let Some((_driver, app, demo, c, grace)) = open_user(true, "grace@example.com").await else {
        return;
    };
    let keys = app.fake.keys_of(&grace).len();
    assert!(keys > 0, "the demo's Grace has keys");

    // Offboard: from the user page, confirm with a reason.
    css(&c, "#offboard").await.click().await.unwrap();
    css(&c, "#offboard-confirm").await;
    screenshot(&c, "offboard-confirm").await;
    type_into(&c, "#offboard-reason", "left the company, HR-1234").await;
    css(&c, "#offboard-submit").await.click().await.unwrap();
    let done = css(&c, "#offboard-done").await.text().await.unwrap();
    assert!(done.contains("API access is off"), "{done}");
    screenshot(&c, "offboard-result").await;
    assert!(app.fake.keys_of(&grace).is_empty());
    assert_eq!(app.fake.count("DELETE", "/v2/users"), keys);
    assert_eq!(app.fake.count("PATCH", "/v2/users"), 1);
    css(&c, "#offboard-audit").await.click().await.unwrap();
    css(&c, "#audit-group").await;
    let rows = c
        .find_all(Locator::Css("#audit-table tbody tr"))
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        keys + 3,
        "the group entry, the hold, the brake and each key"
    );

    // Clear expired keys from the report.
    c.goto(&format!("{demo}/reports/keys")).await.unwrap();
    css(&c, "#rescan").await.click().await.unwrap();
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#report-age"))
        .await
        .unwrap();
    css(&c, "#revoke-expired").await.click().await.unwrap();
    let ticked = c
        .find_all(Locator::Css("#cleanup-keys input[name=key]:checked"))
        .await
        .unwrap()
        .len();
    assert!(ticked > 0, "every expired key is ticked by default");
    type_into(&c, "#cleanup-reason", "monthly clean-up").await;
    css(&c, "#cleanup-submit").await.click().await.unwrap();
    let summary = css(&c, "#cleanup-summary").await;
    let revoked = summary.attr("data-revoked").await.unwrap().unwrap();
    assert_eq!(revoked, ticked.to_string());
    screenshot(&c, "cleanup-result").await;
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_claim_link_hands_a_key_to_its_owner_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let ada = app.user_id("ada@example.com");
    let dir = std::env::temp_dir().join(format!("keydesk-handoff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("keydesk.db").display());
    // Two identities, one database: the operator, and Ada with no role at all.
    let access = keydesk::identity::Access::new(&[], &["demo@keydesk.local".into()]);
    let upstream = app.state.vultr.base_url().to_string();
    let settings = |who: &str| keydesk::state::Settings {
        database_url: db.clone(),
        ..demo_settings(&upstream, who, access.clone())
    };
    let (operator, owner) = two_identities(settings, "demo@keydesk.local", "ada@example.com").await;
    let c = browser(&driver, true).await;

    // The operator issues a claim link from the add-key form.
    c.goto(&format!("{operator}/users/{ada}")).await.unwrap();
    type_into(&c, "#key-name", "handoff-90d").await;
    css(&c, "button.preset[data-days='90']")
        .await
        .click()
        .await
        .unwrap();
    css(&c, "#send-claim-link").await.click().await.unwrap();
    let link = css(&c, "#claim-link").await;
    let href = link.attr("href").await.unwrap().unwrap();
    assert!(href.starts_with("/claim/"), "{href}");
    screenshot(&c, "claim-link").await;
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);

    // Ada opens it as herself, and creates her key.
    c.goto(&format!("{owner}{href}")).await.unwrap();
    css(&c, "#claim").await;
    assert!(c.find(Locator::Css("nav[aria-label=Main]")).await.is_err());
    screenshot(&c, "claim-page").await;
    css(&c, "#claim-submit").await.click().await.unwrap();
    let secret = value(&c, "#new-api-key").await;
    assert_eq!(secret.len(), 36);
    let granted = css(&c, "#granted-by").await.text().await.unwrap();
    assert!(granted.contains("demo@keydesk.local"), "{granted}");
    screenshot(&c, "claim-reveal").await;
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);
    // Reloading never shows it again, nor creates another.
    reload(&c).await;
    css(&c, "#request-id").await;
    assert!(!c.source().await.unwrap().contains(&secret));
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);

    // The operator's view: the key exists, the link is used, no secret.
    c.goto(&format!("{operator}/grants")).await.unwrap();
    css(&c, "tr[data-grant-state='claimed']").await;
    assert!(!c.source().await.unwrap().contains(&secret));
    c.goto(&format!("{operator}/users/{ada}")).await.unwrap();
    let page = c.source().await.unwrap();
    assert!(page.contains("handoff-90d [claim "));
    assert!(!page.contains(&secret));
    c.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn notices_are_run_from_the_page_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let webhook = common::sinks::WebhookSink::start().await;
    let smtp = common::sinks::SmtpSink::start().await;
    let app = TestApp::spawn().await;
    let demo = serve(keydesk::state::Settings {
        notify: keydesk::notify::NotifyConfig {
            webhook: Some(secrecy::SecretString::from(webhook.url.clone())),
            smtp: Some(secrecy::SecretString::from(smtp.url.clone())),
            team: vec!["platform@example.com".into()],
            ..Default::default()
        },
        public_url: Some("https://keydesk.example.com".into()),
        ..demo_settings(
            app.state.vultr.base_url(),
            "demo@keydesk.local",
            keydesk::identity::Access::everyone_operates(),
        )
    })
    .await
    .0;
    let c = browser(&driver, true).await;
    c.goto(&format!("{demo}/notices")).await.unwrap();
    let channels = css(&c, "#notice-channels").await.text().await.unwrap();
    assert!(
        channels.contains("webhook") && channels.contains("platform@example.com"),
        "{channels}"
    );
    css(&c, "#run-notices").await.click().await.unwrap();
    // The page refreshes itself while the pass runs.
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("tr[data-run-state='ok']"))
        .await
        .unwrap();
    let sent = c
        .find_all(Locator::Css("#notices-table tr[data-state='sent']"))
        .await
        .unwrap()
        .len();
    assert!(sent > 0);
    assert_eq!(webhook.posts().len(), 1);
    screenshot(&c, "notices").await;
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_two_person_approval_round_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let ada = app.user_id("ada@example.com");
    let dir = std::env::temp_dir().join(format!("keydesk-approval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("keydesk.db").display());
    let access = keydesk::identity::Access::new(
        &[],
        &["demo@keydesk.local".into(), "boss@example.com".into()],
    );
    let rules = keydesk::policy::ApprovalPolicy {
        rules: vec![keydesk::policy::ApprovalRule::NoExpiry],
        ttl: Duration::from_secs(3600),
    };
    let upstream = app.state.vultr.base_url().to_string();
    let settings = |who: &str| keydesk::state::Settings {
        database_url: db.clone(),
        approval: rules.clone(),
        approvers: vec!["boss@example.com".into()],
        ..demo_settings(&upstream, who, access.clone())
    };
    let (requester, approver) =
        two_identities(settings, "demo@keydesk.local", "boss@example.com").await;
    let c = browser(&driver, true).await;

    // The requester asks for a key that never expires: it waits.
    c.goto(&format!("{requester}/users/{ada}")).await.unwrap();
    type_into(&c, "#key-name", "forever-key").await;
    css(&c, "#add-key").await.click().await.unwrap();
    css(&c, "#approval-requested").await;
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
    let href = css(&c, "#approval-link")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();

    // The approver opens it and approves.
    c.goto(&format!("{approver}{href}")).await.unwrap();
    screenshot(&c, "approval-request").await;
    type_into(&c, "#approve-comment", "ok for the migration").await;
    css(&c, "#approve").await.click().await.unwrap();
    // `#approval-state` is on both pages: wait for the one after the redirect.
    let approved = "//*[@id='approval-state' and contains(., 'approved')]";
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(approved))
        .await
        .unwrap();
    assert!(
        c.find(Locator::Css("#execute")).await.is_err(),
        "the approver cannot run it"
    );

    // The requester does it now: the key is shown to them, once.
    c.goto(&format!("{requester}{href}")).await.unwrap();
    css(&c, "#execute").await.click().await.unwrap();
    let secret = value(&c, "#new-api-key").await;
    assert_eq!(secret.len(), 36);
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);
    screenshot(&c, "approval-executed").await;
    c.goto(&format!("{approver}/audit")).await.unwrap();
    assert!(!c.source().await.unwrap().contains(&secret));
    c.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The leaked-key drill in a real browser: Ada, with no staff role, opens My
/// keys, revokes a key in one confirmed step, and it is gone.
#[tokio::test]
async fn an_owner_revokes_a_leaked_key_from_my_keys_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let ada = app.user_id("ada@example.com");
    let leaked = app.key_named(&ada, "terraform");
    let access = keydesk::identity::Access::new(&[], &["demo@keydesk.local".into()]);
    let owner = demo_app_as(&app, "ada@example.com", access).await;
    let c = browser(&driver, true).await;

    c.goto(&format!("{owner}/")).await.unwrap();
    css(&c, "#my-keys-table").await;
    assert!(c.current_url().await.unwrap().path() == "/me");
    assert!(c.find(Locator::Css("nav[aria-label=Main]")).await.is_err());
    screenshot(&c, "my-keys").await;
    css(&c, &format!("tr[data-key-id='{}'] a.my-revoke", leaked.id))
        .await
        .click()
        .await
        .unwrap();
    css(&c, "#understand").await.click().await.unwrap();
    screenshot(&c, "my-keys-revoke").await;
    css(&c, "#confirm-revoke-button")
        .await
        .click()
        .await
        .unwrap();
    css(&c, "#my-keys-table").await;
    let page = c.source().await.unwrap();
    assert!(page.contains("Revoked your key"), "the notice");
    assert!(!page.contains(&leaked.id), "gone from the list");
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 1);
    assert!(app.fake.keys_of(&ada).iter().all(|k| k.id != leaked.id));
    c.close().await.unwrap();
}

/// The owner's whole round, in a real browser: ask for a key on "My keys",
/// an approver approves, the owner makes it and copies it once, then
/// revokes the old key it replaces. Two identities, one database.
#[tokio::test]
async fn an_owner_asks_is_approved_makes_and_retires_a_key_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let ada = app.user_id("ada@example.com");
    let old = app.key_named(&ada, "terraform");
    let dir = std::env::temp_dir().join(format!("keydesk-self-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("keydesk.db").display());
    let access = keydesk::identity::Access::new(&[], &["demo@keydesk.local".into()]);
    let upstream = app.state.vultr.base_url().to_string();
    let request = keydesk::self_service::SelfService {
        mode: keydesk::self_service::Mode::Request,
        max_days: 90,
    };
    let settings = |who: &str| keydesk::state::Settings {
        database_url: db.clone(),
        self_service: request,
        approvers: vec!["demo@keydesk.local".into()],
        ..demo_settings(&upstream, who, access.clone())
    };
    let (approver, owner) = two_identities(settings, "demo@keydesk.local", "ada@example.com").await;
    let c = browser(&driver, true).await;

    // Ada rotates her old key from "My keys": the request waits.
    c.goto(&format!("{owner}/me")).await.unwrap();
    css(&c, "#me-new-key").await;
    css(&c, &format!("tr[data-key-id='{}'] a.my-rotate", old.id))
        .await
        .click()
        .await
        .unwrap();
    css(&c, "#my-key-form").await;
    css(&c, "button.preset[data-days='30']")
        .await
        .click()
        .await
        .unwrap();
    type_into(&c, "#key-reason", "laptop stolen").await;
    screenshot(&c, "my-keys-rotate").await;
    css(&c, "#my-key-submit").await.click().await.unwrap();
    let link = css(&c, "#approval-link").await;
    let href = link.attr("href").await.unwrap().unwrap();
    assert!(c.find(Locator::Css("nav[aria-label=Main]")).await.is_err());
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);

    // The approver approves it on their own keydesk; they see no key.
    c.goto(&format!("{approver}{href}")).await.unwrap();
    type_into(&c, "#approve-comment", "ok, rotate it").await;
    css(&c, "#approve").await.click().await.unwrap();
    css(&c, "#flash").await;
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);

    // Ada makes it, once, and copies it.
    c.goto(&format!("{owner}/me")).await.unwrap();
    css(&c, "a.my-request").await.click().await.unwrap();
    css(&c, "#execute").await.click().await.unwrap();
    let secret = value(&c, "#new-api-key").await;
    assert_eq!(secret.len(), 36);
    assert!(app.fake.secrets().contains(&secret));
    screenshot(&c, "my-keys-reveal").await;
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);
    reload(&c).await;
    assert!(!c.source().await.unwrap().contains(&secret));
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);

    // Then she retires the old key through the confirmation.
    c.goto(&format!("{owner}/me/keys/{}/revoke", old.id))
        .await
        .unwrap();
    css(&c, "#understand").await.click().await.unwrap();
    css(&c, "#confirm-revoke-button")
        .await
        .click()
        .await
        .unwrap();
    css(&c, "#my-keys-table").await;
    let page = c.source().await.unwrap();
    assert!(page.contains("Revoked your key"));
    assert!(!page.contains(&secret));
    screenshot(&c, "my-keys-after").await;
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 1);
    assert!(app.fake.keys_of(&ada).iter().all(|k| k.id != old.id));
    // The approver's view: done, by Ada, no secret anywhere.
    c.goto(&format!("{approver}{href}")).await.unwrap();
    css(&c, "#approval-done").await;
    assert!(!c.source().await.unwrap().contains(&secret));
    c.goto(&format!("{approver}/audit")).await.unwrap();
    let audit = c.source().await.unwrap();
    assert!(audit.contains("self-service") && !audit.contains(&secret));
    c.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a key can do, before it is made: the warnings on the add-key form
/// of a root-equivalent user usable from anywhere, and the allowlist
/// narrowed in the browser, as in Vultr's console.
#[tokio::test]
async fn the_add_key_form_warns_and_the_allowlist_is_narrowed_in_a_real_browser() {
    let Some((_driver, app, demo, c)) = open_demo(true).await else {
        return;
    };
    let ada = app.user_id("ada@example.com");
    c.goto(&format!("{demo}/users/{ada}")).await.unwrap();
    css(&c, "#add-warn-root").await;
    css(&c, "#add-warn-anywhere").await;
    c.execute("document.getElementById('add-h').scrollIntoView()", vec![])
        .await
        .unwrap();
    screenshot(&c, "capability-warnings").await;

    // Add an office range, then remove "Any IPv4".
    css(&c, "#allowlist-add").await.click().await.unwrap();
    type_into(&c, "#allowlist-address", "45.32.0.0").await;
    let prefix = css(&c, "#allowlist-prefix").await;
    prefix.clear().await.unwrap();
    prefix.send_keys("16").await.unwrap();
    type_into(&c, "#allowlist-reason", "office egress").await;
    css(&c, "#allowlist-submit").await.click().await.unwrap();
    css(&c, "#flash").await;
    css(&c, "tr[data-entry='0.0.0.0/0'] a.allowlist-remove")
        .await
        .click()
        .await
        .unwrap();
    css(&c, "#understand").await.click().await.unwrap();
    css(&c, "#allowlist-remove-button")
        .await
        .click()
        .await
        .unwrap();
    css(&c, "#flash").await;
    let listed: Vec<String> = app
        .fake
        .allowlist_of(&ada)
        .iter()
        .map(|e| e.cidr())
        .collect();
    assert_eq!(listed, vec!["::/0".to_string(), "45.32.0.0/16".to_string()]);
    c.execute(
        "document.getElementById('user-powers').scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    screenshot(&c, "allowlist").await;
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 1);
    c.close().await.unwrap();
}

/// OpenID mode in a real browser: the provider's own login form, a key made
/// and seen once, a keydesk restart that keeps the browser signed in, and a
/// sign-out that ends the session at keydesk and at the provider.
#[tokio::test]
async fn an_operator_signs_in_through_the_provider_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let port = common::oidc::free_port();
    let Some(op) = common::oidc::Op::start(&[port]).await else {
        return;
    };
    let fake = keydesk::fake_vultr::FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let dir =
        std::env::temp_dir().join(format!("keydesk-oidc-b-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = Options {
        audit_db: format!("sqlite://{}", dir.join("k.db").display()),
        ..common::oidc::options(common::oidc::settings(&op.issuer, port))
    };
    let settings = || {
        let mut s = opts.settings(&upstream);
        s.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        s
    };
    let first = Stoppable::start(settings()).await;
    let base = first.base.clone();
    let c = browser(&driver, true).await;

    // A stranger meets the provider's login form, and comes back signed in.
    let ada = user_id_in(&fake, "ada@example.com");
    c.goto(&format!("{base}/users/{ada}")).await.unwrap();
    type_into(&c, "#op-login", "ops").await;
    type_into(&c, "#op-password", common::oidc::PASSWORD).await;
    css(&c, "#op-submit").await.click().await.unwrap();
    css(&c, "#add-key-form").await;
    assert_eq!(
        c.current_url().await.unwrap().as_str(),
        format!("{base}/users/{ada}")
    );
    let who = css(&c, "#signed-in-as").await.text().await.unwrap();
    assert!(
        who.contains("ops@example.com") && who.contains("operator"),
        "{who}"
    );

    // A 90-day key, shown once.
    type_into(&c, "#key-name", "oidc-browser").await;
    css(&c, "button.preset[data-days='90']")
        .await
        .click()
        .await
        .unwrap();
    css(&c, "#add-key").await.click().await.unwrap();
    let secret = value(&c, "#new-api-key").await;
    assert_eq!(secret.len(), 36);
    c.refresh().await.unwrap();
    assert!(
        !c.source().await.unwrap().contains(&secret),
        "gone on reload"
    );
    assert_eq!(fake.count("POST", "/v2/users"), 1);

    // keydesk restarts; the browser is still signed in.
    first.stop().await;
    let second = Stoppable::start(settings()).await;
    c.goto(&format!("{base}/users")).await.unwrap();
    css(&c, "#users-table").await;
    assert!(
        css(&c, "#signed-in-as")
            .await
            .text()
            .await
            .unwrap()
            .contains("ops@example.com")
    );
    screenshot(&c, "oidc-signed-in").await;

    // Sign out: keydesk ends its session, the provider asks and ends its own.
    css(&c, "#sign-out").await.click().await.unwrap();
    css(&c, "#op-sign-out").await.click().await.unwrap();
    css(&c, "#signed-out").await;
    assert_eq!(
        c.current_url().await.unwrap().as_str(),
        format!("{base}/auth/signed-out")
    );
    screenshot(&c, "oidc-signed-out").await;
    c.goto(&format!("{base}/users")).await.unwrap();
    css(&c, "#op-login").await;
    assert_eq!(
        second
            .state
            .audit
            .count(&keydesk::audit::Filter {
                action: Some("access.signout".into()),
                ..Default::default()
            })
            .await
            .unwrap(),
        1
    );
    c.close().await.unwrap();
    second.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Loads `url` until its `#review` section is in `state`: the snapshot and
/// the applying are background jobs. Bounded; reloads, never a blind wait.
async fn wait_review_state(c: &Client, url: &str, state: &str) {
    let sel = format!("#review[data-state='{state}']");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        c.goto(url).await.unwrap();
        if c.find(Locator::Css(&sel)).await.is_ok() {
            return;
        }
        if std::time::Instant::now() > deadline {
            let now = css(c, "#review").await.attr("data-state").await.unwrap();
            panic!("{url}: still {now:?} after 30 s, never {state}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for the notice containing `text` (the page before a redirect may
/// have a notice of its own).
async fn wait_flash(c: &Client, text: &str) -> String {
    let xpath = format!("//*[@id='flash' and contains(., '{text}')]");
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|e| panic!("no notice with {text:?}: {e}"))
        .text()
        .await
        .unwrap()
}

/// An access review in a real browser (issue 35): an operator starts it
/// from the form; a key owner with no staff role keeps one key and revokes
/// another on "My keys"; the operator ends it now, and exactly that one key
/// is deleted at Vultr. Two identities, one database.
#[tokio::test]
async fn an_access_review_is_started_confirmed_by_an_owner_and_ended_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let dir =
        std::env::temp_dir().join(format!("keydesk-review-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("keydesk.db").display());
    let access = keydesk::identity::Access::new(&[], &["demo@keydesk.local".into()]);
    let upstream = app.state.vultr.base_url().to_string();
    let settings = |who: &str| keydesk::state::Settings {
        database_url: db.clone(),
        ..demo_settings(&upstream, who, access.clone())
    };
    let (operator, ops) = serve(settings("demo@keydesk.local")).await;
    let c = browser(&driver, true).await;

    // 1. The operator starts a review from the form.
    c.goto(&format!("{operator}/reviews/new")).await.unwrap();
    let scope = css(&c, "#scope").await;
    scope.clear().await.unwrap();
    scope.send_keys("all").await.unwrap();
    let deadline = date_in(7);
    // A date input's typing depends on the browser's locale: set its value.
    c.execute(
        "document.getElementById('deadline').value = arguments[0];",
        vec![json!(deadline)],
    )
    .await
    .unwrap();
    assert_eq!(value(&c, "#deadline").await, deadline);
    css(&c, "input[name=default][value=keep]")
        .await
        .click()
        .await
        .unwrap();
    css(&c, "input[name=reviewers][value='owner,operators']")
        .await
        .click()
        .await
        .unwrap();
    type_into(&c, "#reason", "Q4 SOC 2 access review").await;
    screenshot(&c, "review-new").await;
    css(&c, "#review-start").await.click().await.unwrap();
    let flash = wait_flash(&c, "started").await;
    let url = c.current_url().await.unwrap();
    let id: i64 = url
        .path()
        .strip_prefix("/reviews/")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a review page: {url}"));
    assert!(flash.contains(&format!("Review #{id} started")), "{flash}");
    let review_url = format!("{operator}/reviews/{id}");
    wait_review_state(&c, &review_url, "open").await;
    let started = css(&c, "#review").await.text().await.unwrap();
    assert!(started.contains("Q4 SOC 2 access review"), "{started}");
    assert!(started.contains("demo@keydesk.local"), "{started}");

    // The owner: someone with two or more limited, allowlisted keys in it.
    let items = ops.reviews.items(id).await.unwrap();
    assert!(!items.is_empty(), "the snapshot has items");
    let mut owners: std::collections::BTreeMap<String, Vec<&keydesk::reviews::Item>> =
        Default::default();
    for i in items.iter().filter(|i| !i.needs_other) {
        if let Some(e) = i
            .user_email
            .as_deref()
            .filter(|e| e.ends_with("@example.com"))
        {
            owners.entry(e.to_string()).or_default().push(i);
        }
    }
    let (email, mut limited) = owners
        .into_iter()
        .find(|(_, keys)| keys.len() >= 2)
        .expect("an owner with two limited keys in the review");
    let user_id = limited[0].user_id.clone();
    let mine: Vec<&keydesk::reviews::Item> = items
        .iter()
        .filter(|i| i.user_email.as_deref() == Some(email.as_str()))
        .collect();
    // Keep what is recommended kept, revoke the other (an expired key, say).
    limited.sort_by_key(|i| i.recommendation != "keep");
    let (keep, revoke) = (limited[0], limited[limited.len() - 1]);
    assert_eq!(keep.level, "limited", "{email}'s {}", keep.key_id);
    assert_ne!(keep.reach, "anywhere");
    assert!(
        app.fake
            .keys_of(&user_id)
            .iter()
            .any(|k| k.id == revoke.key_id),
        "the key to revoke exists at Vultr"
    );

    // 2. The owner, with no staff role, confirms on "My keys", on another
    // host name so the identities keep their own cookies.
    let owner = serve(settings(&email))
        .await
        .0
        .replace("127.0.0.1", "localhost");
    c.goto(&format!("{owner}/me")).await.unwrap();
    let section = css(&c, "#keys-to-confirm").await;
    let listed = c
        .find_all(Locator::Css("#keys-to-confirm li[data-key-id]"))
        .await
        .unwrap();
    let mut shown = Vec::new();
    for li in &listed {
        shown.push(li.attr("data-key-id").await.unwrap().unwrap());
    }
    shown.sort();
    let mut expected: Vec<String> = mine.iter().map(|i| i.key_id.clone()).collect();
    expected.sort();
    assert_eq!(shown, expected, "{email} sees their own keys, only");
    let text = section.text().await.unwrap();
    let page = c.source().await.unwrap();
    for other in items.iter().filter(|i| i.user_id != user_id) {
        assert!(
            !page.contains(&other.key_id),
            "another's key {} on {email}'s page",
            other.key_id
        );
    }
    assert!(text.contains(&format!("review #{id}")), "{text}");
    c.execute(
        "document.getElementById('keys-to-confirm').scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    screenshot(&c, "my-keys-to-confirm").await;

    // Keep one, with a reason.
    let li = |k: &str| format!("#keys-to-confirm li[data-key-id='{k}']");
    type_into(
        &c,
        &format!("{} input[name=reason]", li(&keep.key_id)),
        "used by the nightly backup",
    )
    .await;
    css(&c, &format!("{} button.confirm-keep", li(&keep.key_id)))
        .await
        .click()
        .await
        .unwrap();
    let kept = wait_flash(&c, "You keep").await;
    assert!(kept.contains(keep.name_or_dash()), "{kept}");
    assert_eq!(
        c.current_url().await.unwrap().fragment(),
        Some("keys-to-confirm")
    );
    let decision = |k: String| {
        let c = &c;
        async move {
            css(c, &k)
                .await
                .attr("data-decision")
                .await
                .unwrap()
                .unwrap_or_default()
        }
    };
    assert_eq!(decision(li(&keep.key_id)).await, "keep");
    assert_eq!(decision(li(&revoke.key_id)).await, "");

    // Revoke the other.
    type_into(
        &c,
        &format!("{} input[name=reason]", li(&revoke.key_id)),
        "no longer used",
    )
    .await;
    css(&c, &format!("{} button.confirm-revoke", li(&revoke.key_id)))
        .await
        .click()
        .await
        .unwrap();
    let revoked = wait_flash(&c, "will be revoked when review").await;
    assert!(revoked.contains(revoke.name_or_dash()), "{revoked}");
    assert_eq!(decision(li(&keep.key_id)).await, "keep");
    assert_eq!(decision(li(&revoke.key_id)).await, "revoke");
    // Nothing happens at Vultr before the review closes.
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 0);

    // 3. The operator sees the progress, and ends the review now.
    wait_review_state(&c, &review_url, "open").await;
    let decided = css(&c, "#review-decided").await.text().await.unwrap();
    assert_eq!(decided, "2");
    let total = css(&c, "#review-total").await.text().await.unwrap();
    assert_eq!(total, items.len().to_string());
    let deciders = css(&c, "#review-deciders").await.text().await.unwrap();
    assert!(deciders.contains(&format!("{email} (2)")), "{deciders}");
    let kept_row = css(
        &c,
        &format!("#review-items tr[data-key-id='{}']", keep.key_id),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        kept_row.contains("used by the nightly backup"),
        "{kept_row}"
    );
    screenshot(&c, "review").await;
    type_into(&c, "#end-reason", "ending early for the audit").await;
    css(&c, "#review-end").await.click().await.unwrap();
    let ended = wait_flash(&c, "is closed").await;
    assert!(ended.contains(&format!("Review #{id}")), "{ended}");
    wait_review_state(&c, &review_url, "closed").await;
    let row = |k: &str| format!("#review-items tr[data-key-id='{k}']");
    let outcome = |k: String| {
        let c = &c;
        async move {
            css(c, &k)
                .await
                .attr("data-outcome")
                .await
                .unwrap()
                .unwrap_or_default()
        }
    };
    assert_eq!(outcome(row(&revoke.key_id)).await, "revoked");
    assert_eq!(outcome(row(&keep.key_id)).await, "kept");
    let applied = css(&c, "#review-outcomes").await.text().await.unwrap();
    assert!(applied.contains("revoked 1"), "{applied}");
    assert!(
        c.find(Locator::Css("#review-end-form")).await.is_err(),
        "a closed review cannot be ended again"
    );
    let state = css(&c, "#review-state").await.text().await.unwrap();
    assert!(state.contains("ended by demo@keydesk.local"), "{state}");
    // The picture: the outcomes, and that owner's items as applied.
    c.goto(&format!("{review_url}?q={}", email.replace('@', "%40")))
        .await
        .unwrap();
    assert_eq!(outcome(row(&revoke.key_id)).await, "revoked");
    c.execute(
        "document.getElementById('review-outcomes').scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    screenshot(&c, "review-closed").await;

    // At Vultr: exactly one DELETE, of that key; the kept key is still there.
    let deletes: Vec<String> = app
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path)
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(
        app.fake.count("DELETE", &format!("/v2/users/{user_id}/")),
        1
    );
    assert!(deletes[0].ends_with(&revoke.key_id), "{deletes:?}");
    let left = app.fake.keys_of(&user_id);
    assert!(
        left.iter().all(|k| k.id != revoke.key_id),
        "revoked key gone"
    );
    assert!(left.iter().any(|k| k.id == keep.key_id), "kept key kept");
    c.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
