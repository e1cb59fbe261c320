//! What a key can do, and from where: the user's ACLs (level) and API
//! allowlist, shown before a key is made, read by the approval rules at the
//! time of the write, recorded in the audit; and the allowlist edited as in
//! Vultr's console. Every cell checks what reached the fake Vultr.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use keydesk::audit::Filter;
use keydesk::fake_vultr::FakeVultr;

const ADA: &str = "ada@example.com";
const GRACE: &str = "grace@example.com";

fn whitelist(id: &str) -> String {
    format!("/v2/users/{id}/ip-whitelist")
}

async fn entries(app: &TestApp, action: &str) -> Vec<keydesk::audit::Entry> {
    let f = Filter {
        action: Some(action.into()),
        ..Default::default()
    };
    app.state.audit.list(&f, 100, 0).await.unwrap()
}

/// A user with exactly these ACLs (and Vultr's default "any" allowlist).
fn user_with(fake: &FakeVultr, id: &str, email: &str, acls: &[&str]) -> String {
    fake.add_user(keydesk::vultr::User {
        id: id.into(),
        email: Some(email.into()),
        api_enabled: Some(true),
        acls: Some(acls.iter().map(|a| a.to_string()).collect()),
        ..Default::default()
    })
}

fn short() -> Vec<(&'static str, String)> {
    vec![
        ("name", "ci".to_string()),
        ("expire", "true".to_string()),
        ("date_expire", date_in(30)),
    ]
}

async fn create(app: &TestApp, user: &str) -> reqwest::Response {
    let fields = short();
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    app.create_key(user, &fields).await
}

#[tokio::test]
async fn the_user_page_says_what_keys_can_do_and_from_where() {
    let app = TestApp::spawn().await;
    let ada = app.user_id(ADA);
    let (status, page) = app.get(&format!("/users/{ada}")).await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"user-level\"") && page.contains("root-equivalent"));
    assert!(page.contains("id=\"warn-root\"") && page.contains("id=\"warn-anywhere\""));
    assert!(page.contains("id=\"allowlist-anywhere\""), "{page}");
    assert!(page.contains("data-entry=\"0.0.0.0/0\"") && page.contains("any IPv4 address"));
    assert!(page.contains("id=\"add-warn-root\"") && page.contains("id=\"add-warn-anywhere\""));
    // Grace: limited, narrowed to one /24; an unknown ACL and entry shown as they are.
    let grace = app.user_id(GRACE);
    app.fake
        .set_user_acls(&grace, &["subscriptions_view", "teleport"]);
    app.fake.set_allowlist(&grace, &["45.76.11.0/24"]);
    let (_, page) = app.get(&format!("/users/{grace}")).await;
    assert!(page.contains("usable only from 45.76.11.0/24"), "{page}");
    assert!(!page.contains("id=\"warn-root\"") && !page.contains("id=\"warn-anywhere\""));
    assert!(
        page.contains("<code>teleport</code> <span class=\"state state-expired\">unknown</span>")
    );
    assert!(page.contains("the 256 addresses of 45.76.11.0/24"));
}

/// Vultr's rules, checked before anything is sent: each refused entry is a
/// 422 in words with nothing upstream; each accepted one is one POST whose
/// JSON body names the network.
#[tokio::test]
async fn allowlist_entries_are_checked_as_vultr_checks_them() {
    let app = TestApp::spawn().await;
    let grace = app.user_id(GRACE);
    let path = format!("/users/{grace}/allowlist");
    let refused: &[(&str, &str, &str)] = &[
        ("10.0.0.0", "8", "not a public address"),
        ("192.168.10.0", "24", "not a public address"),
        ("fd12::", "64", "not a public address"),
        ("8.8.8.0", "7", "from /8 to /32"),
        ("8.8.8.8", "33", "from /8 to /32"),
        ("2a05:f480::", "16", "from /20 to /128"),
        ("8.8.8.1", "24", "host bits"),
        ("8.8.8.x", "24", "not an IP address"),
        ("8.8.8.0", "", "not a prefix"),
    ];
    for (address, prefix, words) in refused {
        let fields = [("address", *address), ("prefix", *prefix), ("reason", "t")];
        let r = app.through_form(&path, &fields).await;
        assert_eq!(r.status(), 422, "{address}/{prefix}");
        let body = r.text().await.unwrap();
        assert!(body.contains(words), "{address}/{prefix}: {body}");
        assert!(body.contains("Nothing was sent to Vultr"));
    }
    assert_eq!(app.fake.count("POST", &whitelist(&grace)), 0);
    let accepted: &[(&str, &str, &str, u32)] = &[
        ("8.8.8.0", "24", "8.8.8.0", 24),
        ("2a05:f480::", "32", "2a05:f480::", 32),
        ("45.77.1.1", "32", "45.77.1.1", 32),
    ];
    for (address, prefix, subnet, size) in accepted {
        app.fake.clear_log();
        let fields = [
            ("address", *address),
            ("prefix", *prefix),
            ("reason", "CI runners"),
        ];
        let r = app.through_form(&path, &fields).await;
        assert_eq!(r.status(), 303, "{address}/{prefix}");
        let sent = app.upstream_request("POST");
        assert_eq!(sent.path, whitelist(&grace));
        let body: serde_json::Value = serde_json::from_str(&sent.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"subnet": subnet, "subnet_size": size})
        );
    }
    let listed: Vec<String> = app
        .fake
        .allowlist_of(&grace)
        .iter()
        .map(|e| e.cidr())
        .collect();
    assert!(listed.contains(&"2a05:f480::/32".to_string()), "{listed:?}");
    let added = entries(&app, "user.allowlist.add").await;
    assert_eq!(added.len(), 3);
    assert!(added.iter().all(|e| e.outcome == "ok" && e.actor == STAFF));
    assert_eq!(
        added[2].key_name.as_deref(),
        Some("8.8.8.0/24"),
        "the oldest last"
    );
    assert_eq!(
        added[2].allowlist.as_deref(),
        Some("45.76.11.0/24"),
        "the allowlist before"
    );
    // A viewer cannot.
    let viewer = client(Some(VIEWER));
    assert_eq!(status_as(&viewer, app.url(&path)).await, 403);
}

/// `allowlist-widen`: adding waits for a second person; removing runs at
/// once, one DELETE whose JSON body names the entry.
#[tokio::test]
async fn widening_waits_and_narrowing_runs_at_once() {
    let opts = approval_options(&["allowlist-widen"], Duration::from_secs(3600));
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let ada = app.user_id(ADA);
    let path = format!("/users/{ada}/allowlist");
    let fields = [
        ("address", "45.32.0.0"),
        ("prefix", "16"),
        ("reason", "office"),
    ];
    let r = app.through_form(&path, &fields).await;
    assert_eq!(r.status(), 202);
    let request = request_of(&r.text().await.unwrap());
    assert_eq!(app.fake.count("POST", &whitelist(&ada)), 0);

    // Narrowing: the "Any IPv4" entry goes, at once.
    let (_, page) = app.get(&format!("/users/{ada}")).await;
    let at = page.find("/allowlist/remove?subnet=0.0.0.0").unwrap();
    let href = page[at..].split('"').next().unwrap().replace("&#38;", "&");
    let confirm = format!("/users/{ada}{href}");
    let token = app.token_of(&confirm).await;
    let post = format!("/users/{ada}/allowlist/remove");
    let fields = [
        ("subnet", "0.0.0.0"),
        ("subnet_size", "0"),
        ("reason", "narrow"),
        CONFIRMED,
    ];
    let r = app.submit(&post, &token, &fields).await;
    assert_eq!(r.status(), 303);
    let sent = app.upstream_request("DELETE");
    assert_eq!(sent.path, whitelist(&ada));
    let body: serde_json::Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"subnet": "0.0.0.0", "subnet_size": 0})
    );
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 1);
    assert!(
        app.fake
            .allowlist_of(&ada)
            .iter()
            .all(|e| e.subnet != "0.0.0.0")
    );
    let removed = entries(&app, "user.allowlist.remove").await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].level.as_deref(), Some("root"));

    // The wait: BOSS approves, STAFF carries it out, one POST.
    assert_eq!(
        press(&app, &client(Some(BOSS)), &request, "approve")
            .await
            .status(),
        303
    );
    assert_eq!(
        press(&app, &app.client, &request, "execute").await.status(),
        303
    );
    assert_eq!(app.fake.count("POST", &whitelist(&ada)), 1);
    assert!(
        app.fake
            .allowlist_of(&ada)
            .iter()
            .any(|e| e.cidr() == "45.32.0.0/16")
    );
    let added = entries(&app, "user.allowlist.add").await;
    assert_eq!(added[0].approved_by.as_deref(), Some(BOSS));
}

/// `level:root`: a key for a `manage_users` user waits (202, 0 POSTs); a
/// key for a `dns` user goes straight through; and the audit records each
/// write's level, ACLs and allowlist, filterable by level.
#[tokio::test]
async fn level_root_makes_root_equivalent_keys_wait() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let dns = user_with(&fake, "00000000000d1", "dns@example.com", &["dns"]);
    fake.set_allowlist(&dns, &["45.76.99.0/24"]);
    let opts = approval_options(&["level:root"], Duration::from_secs(3600));
    let app = TestApp::spawn_with(fake, opts).await;
    let ada = app.user_id(ADA);
    let r = create(&app, &ada).await;
    assert_eq!(r.status(), 202);
    let body = r.text().await.unwrap();
    assert!(body.contains("root-equivalent"), "{body}");
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);

    let r = create(&app, &dns).await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(revealed_key(&body).is_some());
    assert!(
        body.contains("id=\"key-capability\""),
        "the reveal says what it can do"
    );
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);
    let made = entries(&app, "key.create").await;
    assert_eq!(made.len(), 1);
    let e = &made[0];
    assert_eq!(
        (
            e.level.as_deref(),
            e.acls.as_deref(),
            e.allowlist.as_deref()
        ),
        (Some("limited"), Some("dns"), Some("45.76.99.0/24"))
    );
    let (status, page) = app.get("/audit?level=limited").await;
    assert_eq!(status, 200);
    assert!(page.contains("key.create"));
    let (_, page) = app.get("/audit?level=root&action=key.create").await;
    assert!(!page.contains("data-entry-id"), "no root key was made");
    let csv = app.get("/audit.csv?level=limited").await.1;
    assert!(csv.lines().next().unwrap().contains("level,acls,allowlist"));
}

/// The rules follow what Vultr reports at the write, not what the form saw.
#[tokio::test]
async fn the_rules_read_vultr_at_the_time_of_the_write() {
    let mut opts = approval_options(&["anywhere", "level:root"], Duration::from_secs(3600));
    // The cache on: the form's reads are cached, the write must not use them.
    opts.upstream.cache_ttl = Duration::from_secs(300);
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let grace = app.user_id(GRACE);
    let fields = short();
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // The form saw a narrow, limited user; Vultr now says anywhere.
    let token = app.form_token(&grace).await;
    app.fake.set_allowlist(&grace, &["0.0.0.0/0"]);
    let r = app.create_key_with(&grace, &token, &fields).await;
    assert_eq!(r.status(), 202);
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);

    // A rotation too: its form saw Alan narrowed (and cached it).
    let alan = app.user_id("alan@example.com");
    let key = app.fake.keys_of(&alan)[0].id.clone();
    let rotate = format!("/users/{alan}/keys/{key}/rotate");
    let token = app.token_of(&rotate).await;
    assert!(!app.get(&rotate).await.1.contains("id=\"warn-anywhere\""));
    app.fake.set_allowlist(&alan, &["::/0"]);
    let r = app
        .submit(
            &rotate,
            &token,
            &[("expire", "true"), ("date_expire", &date_in(30))],
        )
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);

    // The form saw a root-equivalent user; Vultr now says dns only, narrow.
    let ada = app.user_id(ADA);
    let token = app.form_token(&ada).await;
    app.fake.set_user_acls(&ada, &["dns"]);
    app.fake.set_allowlist(&ada, &["45.76.50.0/24"]);
    let r = app.create_key_with(&ada, &token, &fields).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);
    let e = &entries(&app, "key.create").await[0];
    assert_eq!(e.level.as_deref(), Some("limited"));
}

/// A hold from an offboarding: the allowlist stays as it was.
#[tokio::test]
async fn a_held_users_allowlist_is_not_edited() {
    let app = TestApp::spawn().await;
    let grace = app.user_id(GRACE);
    let add = format!("/users/{grace}/allowlist");
    let token = app.token_of(&add).await;
    app.state
        .holds
        .place(&grace, Some(GRACE), STAFF, Some("left"), None)
        .await
        .unwrap();
    let fields = [("address", "8.8.8.0"), ("prefix", "24")];
    let r = app.submit(&add, &token, &fields).await;
    assert_eq!(r.status(), 409);
    let (_, page) = app.get(&format!("/users/{grace}")).await;
    assert!(page.contains("/allowlist/remove?subnet=45.76.11.0"));
    let confirm = format!("/users/{grace}/allowlist/remove?subnet=45.76.11.0&subnet_size=24");
    let token = app.token_of(&confirm).await;
    let post = format!("/users/{grace}/allowlist/remove");
    let fields = [("subnet", "45.76.11.0"), ("subnet_size", "24"), CONFIRMED];
    assert_eq!(app.submit(&post, &token, &fields).await.status(), 409);
    assert_eq!(app.fake.count("POST", &whitelist(&grace)), 0);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 0);
}

/// The report's privileged view on the demo data: a root-equivalent user's
/// key first (never-expiring first, strongest first), level and reach on
/// each row, a level filter, and a CSV that lists the same keys in order.
#[tokio::test]
async fn the_privileged_view_lists_root_equivalent_keys_first_and_exports_them() {
    let app = TestApp::spawn().await;
    assert_eq!(app.start_scan().await.status(), 303);
    scan_idle(&app).await;
    let (status, page) = app.get("/reports/keys/privileged").await;
    assert_eq!(status, 200);
    let ids = |page: &str| -> Vec<(String, String)> {
        page.split("<tr data-key-id=\"")
            .skip(1)
            .map(|s| {
                let id = s.split('"').next().unwrap().to_string();
                let level = s.split("data-level=\"").nth(1).unwrap();
                (id, level.split('"').next().unwrap().to_string())
            })
            .collect()
    };
    let rows = ids(&page);
    assert!(rows.len() > 3, "{page}");
    assert_eq!(rows[0].1, "root", "{rows:?}");
    let root_users: Vec<String> = app
        .fake
        .users()
        .iter()
        .filter(|u| {
            u.acls
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|a| a == "manage_users")
        })
        .map(|u| u.id.clone())
        .collect();
    assert!(
        page.contains("any address"),
        "Ada's keys work from anywhere"
    );
    // Grace (subscriptions_view, narrowed) is not privileged.
    let grace = app.user_id(GRACE);
    for k in app.fake.keys_of(&grace) {
        assert!(rows.iter().all(|(id, _)| *id != k.id));
    }
    let csv = app.get("/reports/keys/privileged.csv").await.1;
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "user_id,user_email,key_id,key_name,expires,level,acls,reach,origin"
    );
    let from_csv: Vec<(String, String)> = lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            (cells[2].to_string(), cells[5].to_string())
        })
        .collect();
    assert_eq!(from_csv, rows, "the CSV matches the page");
    let first_user = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    assert!(root_users.contains(&first_user));
    // Filtered by level: sensitive only.
    let (_, page) = app.get("/reports/keys/privileged?level=sensitive").await;
    let rows = ids(&page);
    assert!(!rows.is_empty() && rows.iter().all(|(_, l)| l == "sensitive"));
    assert_eq!(app.get("/reports/keys/privileged?level=huge").await.0, 400);
}

/// Every key write records what the key could do: an owner's own revoke and
/// an offboarding's revocations too.
#[tokio::test]
async fn revocations_record_the_level_and_reach_at_the_time() {
    let app = TestApp::spawn().await;
    let ada = app.user_id(ADA);
    let keys = app.fake.keys_of(&ada);
    assert_eq!(app.revoke(&ada, &keys[0].id, &[]).await.status(), 303);
    let path = format!("/users/{ada}/offboard");
    let token = app.token_of(&path).await;
    let listed = keys[1].id.clone();
    let r = app
        .submit(&path, &token, &[("reason", "left"), ("listed", &listed)])
        .await;
    assert_eq!(r.status(), 200);
    let revoked = entries(&app, "key.revoke").await;
    assert_eq!(revoked.len(), 2);
    for e in &revoked {
        assert_eq!(e.level.as_deref(), Some("root"), "{e:?}");
        assert_eq!(
            e.acls.as_deref(),
            Some("manage_users,billing,subscriptions")
        );
        assert_eq!(e.allowlist.as_deref(), Some("0.0.0.0/0,::/0"));
    }
}
