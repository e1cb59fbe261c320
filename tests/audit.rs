//! The audit trail and key lifecycle: intent + outcome for every action,
//! nothing lost on a crash, refusal when the store cannot be written,
//! filters and exports, rotate, the incident brake, the expiring-keys report.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use keydesk::audit::{AuditAction, AuditStore, Filter, Intent, Outcome, Settlement};
use keydesk::fake_vultr::{FakeVultr, Fault};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "keydesk-{tag}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn entries(app: &TestApp, action: &str) -> Vec<keydesk::audit::Entry> {
    app.state
        .audit
        .list(
            &Filter {
                action: Some(action.into()),
                ..Default::default()
            },
            1000,
            0,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn every_mutating_action_writes_one_settled_entry() {
    let (app, id) = TestApp::with_user("ada@example.com").await;
    let token = app.form_token(&id).await;
    app.create_key_with(&id, &token, &[("name", "one"), ("reason", "OPS-1")])
        .await;
    let created = entries(&app, "key.create").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].outcome, "ok");
    assert_eq!(created[0].actor, STAFF);
    assert_eq!(created[0].role, "operator");
    assert_eq!(created[0].reason.as_deref(), Some("OPS-1"));
    assert_eq!(
        created[0].target_user_email.as_deref(),
        Some("ada@example.com")
    );
    assert!(created[0].key_id.is_some());
    assert!(created[0].request_id.is_some());

    // A refused upstream call records `failed` with the status (a 5xx to
    // a create is an unknown outcome: tests/invariants.rs).
    let token = app.form_token(&id).await;
    app.fake.set_fault_on("POST", Fault::Status(400));
    let r = app.create_key_with(&id, &token, &[("name", "two")]).await;
    assert_eq!(r.status(), 502);
    app.fake.set_fault(None);
    let failed: Vec<_> = entries(&app, "key.create")
        .await
        .into_iter()
        .filter(|e| e.outcome == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].upstream_status, Some(400));
    assert!(failed[0].error.as_deref().unwrap().contains("400"));

    // The incident brake: PATCH sent, audited, reversible.
    let (_, confirm) = app.get(&format!("/users/{id}/api-access")).await;
    assert!(confirm.contains("Switch API access off"));
    let t = hidden_token(&confirm);
    let r = app
        .submit(
            &format!("/users/{id}/api-access"),
            &t,
            &[("enabled", "false"), ("reason", "leak INC-7"), CONFIRMED],
        )
        .await;
    assert_eq!(r.status(), 303);
    let patch = app.upstream_request("PATCH");
    assert_eq!(patch.body, r#"{"api_enabled":false}"#);
    assert_eq!(
        app.fake
            .users()
            .iter()
            .find(|u| u.id == id)
            .unwrap()
            .api_enabled,
        Some(false)
    );
    let (_, page) = app.get(&format!("/users/{id}")).await;
    assert!(page.contains(r#"id="api-access-off""#));
    let brake = entries(&app, "user.api_access").await;
    assert_eq!(brake.len(), 1);
    assert_eq!(brake[0].outcome, "ok");
    assert_eq!(brake[0].reason.as_deref(), Some("leak INC-7"));

    let all = app
        .state
        .audit
        .list(&Filter::default(), 1000, 0)
        .await
        .unwrap();
    assert!(
        all.iter().all(|e| e.outcome != "pending"),
        "every intent was settled"
    );
}

#[tokio::test]
async fn rotate_reveals_once_then_revokes_the_old_key_only_when_confirmed() {
    let (app, id) = TestApp::with_user("grace@example.com").await;
    let KeyForm {
        key: old,
        path,
        token,
        ..
    } = app.key_form(&id, "ci-runner", "rotate").await;
    let date = date_in(60);
    let r = app
        .submit(
            &path,
            &token,
            &[
                ("expire", "true"),
                ("date_expire", &date),
                ("reason", "rotation"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = r.text().await.unwrap();
    let secret = revealed_key(&body).unwrap();
    assert!(body.contains("revoke the old one now"));
    // Same name, new expiry; the old key is still there.
    let keys = app.fake.keys_of(&id);
    let new = keys
        .iter()
        .find(|k| k.name.as_deref() == Some("ci-runner") && k.id != old.id)
        .unwrap()
        .clone();
    assert!(new.date_expire.as_deref().unwrap().starts_with(&date));
    assert!(keys.iter().any(|k| k.id == old.id));
    // A replay neither creates nor reveals.
    let again = app
        .submit(&path, &token, &[("expire", "true"), ("date_expire", &date)])
        .await;
    assert_eq!(again.status(), 409);
    assert!(!again.text().await.unwrap().contains(&secret));
    assert_eq!(app.fake.count("POST", "/v2/users"), 1);

    // Confirming deployment revokes the old key, linked to the new one.
    assert!(body.contains(&format!(
        "/users/{id}/keys/{}/delete?replaced_by={}",
        old.id, new.id
    )));
    let (_, confirm) = app
        .get(&format!(
            "/users/{id}/keys/{}/delete?replaced_by={}",
            old.id, new.id
        ))
        .await;
    assert!(confirm.contains(&format!(r#"name="replaced_by" value="{}""#, new.id)));
    let revoke_token = hidden_token(&confirm);
    let r = app
        .submit(
            &format!("/users/{id}/keys/{}/delete", old.id),
            &revoke_token,
            &[("replaced_by", &new.id), ("understand", "true")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert!(app.fake.keys_of(&id).iter().all(|k| k.id != old.id));
    let rotate = entries(&app, "key.rotate").await;
    assert_eq!(rotate.len(), 1);
    assert_eq!(rotate[0].key_id.as_deref(), Some(new.id.as_str()));
    assert_eq!(rotate[0].related_key_id.as_deref(), Some(old.id.as_str()));
    let revoke = entries(&app, "key.revoke").await;
    assert_eq!(revoke[0].key_id.as_deref(), Some(old.id.as_str()));
    assert_eq!(revoke[0].related_key_id.as_deref(), Some(new.id.as_str()));
}

#[tokio::test]
async fn filters_and_exports_return_exactly_the_matching_entries() {
    let app = TestApp::spawn().await;
    let ada = app.user_id("ada@example.com");
    let alan = app.user_id("alan@example.com");
    let mut secrets = Vec::new();
    for (user, name) in [
        (&ada, "alpha-one"),
        (&ada, "alpha-two"),
        (&alan, "bravo-one"),
    ] {
        let token = app.form_token(user).await;
        let r = app.create_key_with(user, &token, &[("name", name)]).await;
        secrets.push(revealed_key(&r.text().await.unwrap()).unwrap());
    }
    let csv = app
        .response(&format!("/audit.csv?user={ada}&action=key.create"))
        .await;
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = csv.text().await.unwrap();
    assert_eq!(csv.lines().count(), 3, "header + 2 rows:\n{csv}");
    assert!(csv.contains("alpha-one") && csv.contains("alpha-two") && !csv.contains("bravo-one"));
    let (_, jsonl) = app.get(&format!("/audit.jsonl?user={alan}")).await;
    let rows: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["key_name"], "bravo-one");
    assert_eq!(rows[0]["actor"], STAFF);
    let (_, all) = app.get("/audit.jsonl").await;
    for s in &secrets {
        assert!(!all.contains(s) && !csv.contains(s), "no secret in exports");
    }
    let (_, page) = app.get(&format!("/audit?actor={STAFF}&outcome=ok")).await;
    assert!(page.contains("3 entries"));
}

#[tokio::test]
async fn a_thousand_concurrent_audited_actions_are_all_recorded() {
    let dir = temp_dir("audit1000");
    let url = format!("sqlite://{}", dir.join("a.db").display());
    let store = AuditStore::open(&url).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let store = store.clone();
        tasks.spawn(async move {
            let id = store
                .intent(&Intent {
                    key_name: Some(format!("k{i}")),
                    ..Intent::new(
                        &format!("staff{}@example.com", i % 7),
                        "operator",
                        AuditAction::KeyCreate,
                    )
                })
                .await
                .unwrap();
            store
                .settle(
                    id,
                    Settlement {
                        key_id: Some(&format!("key-{i}")),
                        upstream_status: Some(201),
                        ..Outcome::Ok.settled()
                    },
                )
                .await;
            id
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(id) = tasks.join_next().await {
        assert!(ids.insert(id.unwrap()), "duplicate id");
    }
    assert_eq!(ids.len(), 1000);
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 1000);
    let ok = Filter {
        outcome: Some("ok".into()),
        ..Default::default()
    };
    assert_eq!(store.count(&ok).await.unwrap(), 1000, "none left pending");
    let names: std::collections::HashSet<_> = store
        .list(&Filter::default(), 2000, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.intent.key_name.unwrap())
        .collect();
    assert_eq!(names.len(), 1000, "none lost or duplicated");
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_unwritable_audit_store_refuses_changes_and_sends_nothing() {
    let dir = temp_dir("audit-ro");
    let path = dir.join("a.db");
    let url = format!("sqlite://{}", path.display());
    // A database whose audit table refuses every new entry (a full disk, a
    // revoked grant): forms still work, intents cannot be written.
    let db = keydesk::db::Db::open(&url).await.unwrap();
    refuse_audit_inserts(&db).await;
    db.close().await;
    let app = TestApp::spawn_with(
        FakeVultr::seeded(ROOT_KEY),
        Options {
            audit_db: url.clone(),
            ..Default::default()
        },
    )
    .await;
    let id = app.user_id("ada@example.com");
    let token = app.form_token(&id).await;
    let r = app.create_key_with(&id, &token, &[("name", "x")]).await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("Audit trail unavailable"));
    let key = app.fake.keys_of(&id)[0].id.clone();
    let r = app.revoke(&id, &key, &[]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(app.fake.count("POST", "/v2/users"), 0);
    assert_eq!(app.fake.count("DELETE", "/v2/users"), 0);
    // The failed writes are counted for operators: exactly, in tests/metrics.rs.

    // A database keydesk cannot write at all: a page reads, but a new
    // browser's session cannot be stored, so it gets no form (a server
    // error, never a form it could not submit) and nothing acts.
    let ro = TestApp::spawn_with(
        FakeVultr::seeded(ROOT_KEY),
        Options {
            audit_db: format!("{url}?mode=ro"),
            ..Default::default()
        },
    )
    .await;
    let (status, body) = ro
        .get(&format!("/users/{}", ro.user_id("ada@example.com")))
        .await;
    assert_eq!(status, 500, "{body}");
    assert!(!body.contains("form_token"), "{body}");
    assert_eq!(ro.fake.count("POST", "/v2/users"), 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// Starts the real binary on the given audit DB; returns (child, base URL).
async fn spawn_keydesk(upstream: &str, db: &std::path::Path) -> (tokio::process::Child, String) {
    let (child, base, _logs) = spawn_binary(&[
        ("KEYDESK_VULTR_API_URL", upstream.to_string()),
        ("KEYDESK_AUDIT_DB", format!("sqlite://{}", db.display())),
        ("KEYDESK_UPSTREAM_TIMEOUT", "30".into()),
    ])
    .await;
    (child, base)
}

#[tokio::test]
async fn a_process_killed_mid_create_leaves_a_visible_unknown_entry() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    fake.set_create_delay(Duration::from_secs(20));
    let dir = temp_dir("kill9");
    let db = dir.join("audit.db");
    let (mut child, base) = spawn_keydesk(&upstream, &db).await;
    let c = client(Some(STAFF));
    let id = user_id_in(&fake, "ada@example.com");
    let page = get_text(&c, format!("{base}/users/{id}")).await;
    let token = hidden_token(&page);
    let post = {
        let c = c.clone();
        let url = format!("{base}/users/{id}/keys");
        tokio::spawn(async move {
            let _ = c
                .post(url)
                .form(&[("form_token", token.as_str()), ("name", "doomed")])
                .send()
                .await;
        })
    };
    // Wait until the fake holds the create request, then kill -9.
    tokio::time::timeout(Duration::from_secs(10), async {
        while fake.count("POST", "/v2/users") == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    post.abort();

    let (_child2, base2) = spawn_keydesk(&upstream, &db).await;
    let audit = get_text(&c, format!("{base2}/audit?outcome=unknown")).await;
    assert!(audit.contains("doomed"), "{audit}");
    assert!(audit.contains("outcome-row-unknown"), "highlighted");
    assert!(audit.contains("keydesk stopped before the outcome was known"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_report_buckets_keys_and_never_causes_a_429() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    fake.set_rate_limit(Some(30));
    let mut opts = Options::default();
    opts.upstream.rps = 25;
    let app = TestApp::spawn_with(fake, opts).await;
    // One key created through keydesk: not "outside".
    let ada = app.user_id("ada@example.com");
    let token = app.form_token(&ada).await;
    app.create_key_with(&ada, &token, &[("name", "ours")]).await;

    let (_, page) = app.get("/reports/keys").await;
    assert!(page.contains("No scan yet"));
    let t = hidden_token(&page);
    let r = app.submit("/reports/keys/scan", &t, &[]).await;
    assert_eq!(r.status(), 303);
    let (_, progress) = app.get("/reports/keys").await;
    assert!(progress.contains("scan-progress") || progress.contains("report-age"));
    scan_idle(&app).await;
    let (_, report) = app.get("/reports/keys?days=30").await;

    // Expected buckets from the fake's raw dates, not from keydesk's own code.
    let now = time::OffsetDateTime::now_utc();
    let rfc3339 = time::format_description::well_known::Rfc3339;
    let (mut expired, mut soon, mut never) = (0, 0, 0);
    for u in app.fake.users() {
        for k in app.fake.keys_of(&u.id) {
            let date = k.date_expire.as_deref().filter(|d| !d.is_empty());
            match (k.expire, date) {
                (Some(true), Some(d)) => {
                    let left = time::OffsetDateTime::parse(d, &rfc3339).unwrap() - now;
                    if left <= time::Duration::ZERO {
                        expired += 1;
                    } else if left <= time::Duration::days(30) {
                        soon += 1;
                    }
                }
                _ => never += 1,
            }
        }
    }
    assert!(expired > 0 && soon > 0 && never > 0);
    assert!(report.contains(&format!("Expired ({expired})")), "{report}");
    assert!(report.contains(&format!("Expiring within 30 days ({soon})")));
    assert!(report.contains(&format!("Never expire ({never})")));
    let total_keys: usize = app
        .fake
        .users()
        .iter()
        .map(|u| app.fake.keys_of(&u.id).len())
        .sum();
    assert!(report.contains(&format!("{} keys created outside keydesk", total_keys - 1)));
    assert_eq!(app.fake.rate_limited_count(), 0, "Vultr never answered 429");
}

#[tokio::test]
async fn the_csv_export_neutralises_formula_cells_and_jsonl_keeps_values() {
    let app = TestApp::spawn().await;
    let id = app.fake.add_user(keydesk::vultr::User {
        id: "f0a1b2c3d4e5f".into(),
        email: Some("@SUM(1+1)@evil.test".into()),
        ..Default::default()
    });
    let r = app
        .create_key(
            &id,
            &[
                ("name", "=HYPERLINK(\"http://evil\")"),
                ("reason", "+INC-1"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let (status, csv) = app.get("/audit.csv").await;
    assert_eq!(status, 200);
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let headers = rows.headers().unwrap().clone();
    let row = rows.records().next().unwrap().unwrap();
    let cell = |name: &str| row[headers.iter().position(|h| h == name).unwrap()].to_string();
    assert_eq!(cell("key_name"), "'=HYPERLINK(\"http://evil\")");
    assert_eq!(cell("target_user_email"), "'@SUM(1+1)@evil.test");
    assert_eq!(cell("reason"), "'+INC-1");
    assert_eq!(cell("actor"), STAFF, "ordinary cells are untouched");
    let (_, jsonl) = app.get("/audit.jsonl").await;
    let entry: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(entry["key_name"], "=HYPERLINK(\"http://evil\")");
    assert_eq!(entry["target_user_email"], "@SUM(1+1)@evil.test");
}
