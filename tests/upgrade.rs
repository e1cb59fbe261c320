//! Upgrades, on both engines: leavers from before holds are held by the
//! migration; the database refuses a held user's giving-access intents
//! whoever writes them; the release record refuses an older keydesk in
//! words; a SQLite file is copied before it is migrated; values only a
//! newer release knows show as "unknown (newer version)", never a 503.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::borrow::Cow;

use keydesk::audit::{AuditAction, AuditStore, Intent};
use keydesk::db::{Db, Engine};
use keydesk::schema;

use common::pg::{app_url, databases, grant_to_app};

/// A database migrated up to `last` only (per engine), as an older
/// release left it: the migration files are unchanged since.
async fn migrated_to(url: &str, last: fn(Engine) -> i64) -> Db {
    let db = Db::open_unmigrated(url).await.unwrap();
    let upto = last(db.engine());
    let mut m = schema::migrator(db.engine());
    m.migrations = Cow::Owned(
        m.migrations
            .iter()
            .filter(|x| x.version <= upto)
            .cloned()
            .collect(),
    );
    keydesk::on_pool!(write, &db, |p| m.run(p).await.unwrap());
    db
}

/// The release before holds (a8d6c3d): sqlite 0006, postgres 0004.
fn before_holds(e: Engine) -> i64 {
    match e {
        Engine::Sqlite => 6,
        Engine::Postgres => 4,
    }
}

/// Release 0.1.0 (f40a367): sqlite 0009, postgres 0007.
fn release_0_1_0(e: Engine) -> i64 {
    match e {
        Engine::Sqlite => 9,
        Engine::Postgres => 7,
    }
}

async fn raw(db: &Db, sql: &str) -> Result<(), sqlx::Error> {
    let sql = sql.to_string();
    keydesk::on_pool!(write, db, |p| sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(p)
        .await
        .map(|_| ()))
}

async fn strings(db: &Db, sql: &str) -> Vec<String> {
    let sql = sql.to_string();
    keydesk::on_pool!(read, db, |p| sqlx::query_scalar::<_, String>(
        sqlx::AssertSqlSafe(sql)
    )
    .fetch_all(p)
    .await
    .unwrap())
}

fn held_intent(user: &str, action: AuditAction) -> Intent {
    Intent {
        target_user_id: Some(user.into()),
        key_name: Some("ci".into()),
        ..Intent::new("ops@example.com", "operator", action)
    }
}

#[tokio::test]
async fn leavers_from_before_holds_are_held_and_their_links_and_requests_withdrawn() {
    let fixture = include_str!("fixtures/pre_holds.sql");
    for (engine, url) in databases().await {
        let db = migrated_to(&url, before_holds).await;
        raw(&db, fixture).await.unwrap();
        let applied = db.migrate(true).await.unwrap();
        assert!(!applied.is_empty(), "{engine}");
        assert_eq!(
            strings(
                &db,
                "SELECT user_id || ' by ' || placed_by FROM holds ORDER BY user_id"
            )
            .await,
            [
                "bob-id by ops@example.com",
                "dave-id by hr-ops@example.com",
                "erin-id by ops@example.com"
            ],
            "{engine}: every leaver whose latest offboarding was not undone is held"
        );
        assert_eq!(
            strings(
                &db,
                "SELECT user_id || ' ' || state FROM grants ORDER BY user_id"
            )
            .await,
            ["alice-id pending", "bob-id revoked", "bob-id revoked"],
            "{engine}"
        );
        assert_eq!(
            strings(&db, "SELECT user_id || ' ' || action || ' ' || state FROM approvals ORDER BY user_id, action").await,
            [
                "alice-id key.create pending",
                "bob-id key.create withdrawn",
                "bob-id user.api_access withdrawn"
            ],
            "{engine}"
        );
        assert_eq!(
            strings(&db, "SELECT action || ' ' || target_user_id FROM audit WHERE actor = 'keydesk' AND role = 'system' ORDER BY id").await,
            [
                "user.offboard bob-id",
                "user.offboard dave-id",
                "user.offboard erin-id",
                "grant.revoke bob-id",
                "grant.revoke bob-id",
                "approval.withdraw bob-id",
                "approval.withdraw bob-id"
            ],
            "{engine}: each is a system audit row"
        );
        let why = strings(
            &db,
            "SELECT reason FROM audit WHERE actor = 'keydesk' AND target_user_id = 'dave-id'",
        )
        .await;
        assert!(
            why[0].contains("hr-ops@example.com") && why[0].contains("2026-11-25T10:00:00Z"),
            "{engine}: {why:?}"
        );
        // The hold is the one keydesk reads; its words name who offboarded.
        let hold = keydesk::holds::Holds::new(db.clone())
            .get("bob-id")
            .await
            .unwrap()
            .unwrap();
        assert!(hold.refusal().contains("ops@example.com"), "{engine}");
        // And the database refuses a key for them, whoever asks.
        let audit = AuditStore::new(db.clone(), keydesk::audit::PENDING_BOUND).await;
        let refused = audit
            .intent(&held_intent("bob-id", AuditAction::KeyCreate))
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("keydesk hold"),
            "{engine}: {refused}"
        );
        audit
            .intent(&held_intent("carol-id", AuditAction::KeyCreate))
            .await
            .unwrap();
        // Migrating again changes nothing.
        assert!(db.migrate(true).await.unwrap().is_empty(), "{engine}");
        assert_eq!(strings(&db, "SELECT user_id FROM holds").await.len(), 3);
    }
}

/// Every action, in every shape, refused for a held user exactly when
/// `Intent::gives_access` says so; on PostgreSQL as the application role,
/// also when the row is written by hand (any replica, any release).
#[tokio::test]
async fn the_database_refuses_intents_that_give_a_held_user_access() {
    for (engine, url) in databases().await {
        let owner = Db::open(&url).await.unwrap();
        let db = if engine == "postgres" {
            grant_to_app(&owner).await;
            Db::open(&app_url(&url)).await.unwrap()
        } else {
            owner.clone()
        };
        keydesk::holds::Holds::new(db.clone())
            .place(
                "held-id",
                Some("h@example.com"),
                "ops@example.com",
                None,
                None,
            )
            .await
            .unwrap();
        let audit = AuditStore::new(db.clone(), keydesk::audit::PENDING_BOUND).await;
        let mut refused = 0;
        for action in AuditAction::ALL {
            for (name, api) in [
                (None, None),
                (Some("ci"), None),
                (None, Some(true)),
                (None, Some(false)),
            ] {
                for user in ["held-id", "HELD-ID", "free-id"] {
                    let i = Intent {
                        target_user_id: Some(user.into()),
                        key_name: name.map(str::to_string),
                        api_enabled: api,
                        ..Intent::new("ops@example.com", "operator", action)
                    };
                    let got = audit.intent(&i).await;
                    let want_refused = user != "free-id" && i.gives_access();
                    assert_eq!(
                        got.is_err(),
                        want_refused,
                        "{engine}: {action} name={name:?} api={api:?} user={user}: {got:?}"
                    );
                    refused += usize::from(want_refused);
                }
            }
        }
        assert!(refused >= 20, "{engine}: {refused}");
        let by_hand = "INSERT INTO audit (at, actor, role, action, target_user_id, key_name, outcome) VALUES ('2026-12-03T00:00:00Z', 'old-replica@example.com', 'operator', 'key.create', 'held-id', 'laptop', 'pending')";
        let e = raw(&db, by_hand).await.unwrap_err();
        assert!(e.to_string().contains("keydesk hold"), "{engine}: {e}");
        // A settled row (a lost create found later) is never refused: the
        // audit loses nothing.
        raw(&db, &by_hand.replace("'pending'", "'ok'"))
            .await
            .unwrap();
        // keydesk's own rows (a lost create found later) record what
        // already happened: never refused.
        audit
            .intent(&Intent {
                target_user_id: Some("held-id".into()),
                key_name: Some("found".into()),
                ..Intent::system(AuditAction::KeyCreate)
            })
            .await
            .unwrap();
        // Once reinstated, the same intent passes.
        keydesk::holds::Holds::new(db.clone())
            .lift("held-id")
            .await
            .unwrap();
        raw(&db, by_hand).await.unwrap();
    }
}

/// The guard added since covers the capability columns: an open entry's
/// level cannot be rewritten on the way to settling it.
#[tokio::test]
async fn the_append_only_guard_covers_level_acls_and_allowlist() {
    for (engine, url) in databases().await {
        let db = Db::open(&url).await.unwrap();
        let audit = AuditStore::new(db.clone(), keydesk::audit::PENDING_BOUND).await;
        let id = audit
            .intent(&Intent {
                level: Some("limited".into()),
                acls: Some("billing".into()),
                allowlist: Some("10.0.0.0/8".into()),
                ..held_intent("u1", AuditAction::KeyCreate)
            })
            .await
            .unwrap();
        for column in ["level", "acls", "allowlist"] {
            let sql = format!("UPDATE audit SET outcome = 'ok', {column} = 'root' WHERE id = {id}");
            let e = raw(&db, &sql).await.unwrap_err();
            assert!(
                e.to_string().contains("only the outcome"),
                "{engine}: {column}: {e}"
            );
        }
    }
}

#[tokio::test]
async fn the_release_record_refuses_an_older_keydesk_in_words() {
    let me = keydesk::release::VERSION;
    for (engine, url) in databases().await {
        // As release 0.1.0 left it: this release's steps are all expand, so
        // 0.1.0 may keep writing beside it.
        let db = migrated_to(&url, release_0_1_0).await;
        db.migrate(true).await.unwrap();
        let r = db.release_record().await.unwrap().unwrap();
        assert_eq!(
            (r.migrated_by.as_str(), r.oldest_writer.as_str()),
            (me, "0.1.0"),
            "{engine}"
        );
        assert!(db.serving_check().await.is_ok(), "{engine}");
        // A later release's contract step, then this one starts again.
        raw(
            &db,
            "UPDATE keydesk_release SET migrated_by = '99.0.0', oldest_writer = '99.0.0'",
        )
        .await
        .unwrap();
        let words = format!(
            "this database was migrated by keydesk 99.0.0; this is {me}; restore the backup taken before the upgrade, or run 99.0.0 or later"
        );
        assert_eq!(
            db.serving_check().await.unwrap_err(),
            words,
            "{engine}: /readyz"
        );
        let e = Db::open(&url).await.unwrap_err().to_string();
        assert!(e.contains(&words), "{engine}: {e}");
        // `keydesk migrate` refuses too, and changes nothing.
        let e = db.migrate(true).await.unwrap_err().to_string();
        assert!(e.contains(&words), "{engine}: {e}");
        // A newer release's expand steps leave this one serving.
        raw(
            &db,
            &format!("UPDATE keydesk_release SET migrated_by = '99.0.0', oldest_writer = '{me}'"),
        )
        .await
        .unwrap();
        let blob = if engine == "postgres" {
            "'\\x00'::bytea"
        } else {
            "X'00'"
        };
        raw(&db, &format!("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'from a newer release', TRUE, {blob}, 1)"))
            .await
            .unwrap();
        Db::open(&url).await.unwrap();
        db.migrate(true).await.unwrap();
        let r = db.release_record().await.unwrap().unwrap();
        assert_eq!(r.migrated_by, "99.0.0", "{engine}: never lowered");
    }
}

#[tokio::test]
async fn a_fresh_database_records_who_migrated_it_and_the_oldest_writer() {
    for (engine, url) in databases().await {
        let db = Db::open(&url).await.unwrap();
        let r = db.release_record().await.unwrap().unwrap();
        let me = keydesk::release::VERSION;
        // Its contract steps all shipped in 0.1.0: 0.1.0 may write beside it.
        assert_eq!(
            (r.migrated_by.as_str(), r.oldest_writer.as_str()),
            (me, "0.1.0"),
            "{engine}"
        );
    }
}

#[tokio::test]
async fn a_sqlite_file_is_copied_before_it_is_migrated_and_three_copies_are_kept() {
    let dir =
        std::env::temp_dir().join(format!("keydesk-backup-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keydesk.db");
    let url = format!("sqlite://{}", file.display());
    // A fresh database has nothing to keep.
    let fresh = dir.join("fresh.db");
    Db::open(&format!("sqlite://{}", fresh.display()))
        .await
        .unwrap();
    assert!(schema::backups_of(&fresh).is_empty());
    // One written by the release before holds.
    let db = migrated_to(&url, before_holds).await;
    raw(&db, include_str!("fixtures/pre_holds.sql"))
        .await
        .unwrap();
    db.close().await;
    let db = Db::open(&url).await.unwrap();
    let copies = schema::backups_of(&file);
    assert_eq!(copies.len(), 1, "{copies:?}");
    let name = copies[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with(&format!("keydesk.db.before-{}-", keydesk::release::VERSION))
            && name.ends_with(".bak"),
        "{name}"
    );
    // The copy is the database as it was: no holds table yet, the rows there.
    let copy = Db::open_unmigrated(&format!("sqlite://{}", copies[0].display()))
        .await
        .unwrap();
    assert_eq!(copy.applied_versions().await.last(), Some(&6));
    assert_eq!(strings(&copy, "SELECT id FROM grants").await.len(), 3);
    copy.close().await;
    // Opening again applies nothing and copies nothing.
    db.close().await;
    Db::open(&url).await.unwrap();
    assert_eq!(schema::backups_of(&file).len(), 1);
    // Only the newest three are kept.
    let keydesk::db::Db::Sqlite(pool) = Db::open_unmigrated(&url).await.unwrap() else {
        unreachable!()
    };
    let mut made = Vec::new();
    for _ in 0..4 {
        made.push(
            schema::backup_sqlite(&pool, keydesk::release::VERSION)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let kept = schema::backups_of(&file);
    assert_eq!(kept, made[1..].to_vec());
    use std::os::unix::fs::PermissionsExt;
    for k in &kept {
        let mode = std::fs::metadata(k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", k.display());
    }
}

/// During a rolling update an older replica reads what a newer one wrote:
/// an audit action, a kind of request, a request state and a claim link
/// state it does not know. Its pages show them, never a 503.
#[tokio::test]
async fn values_from_a_newer_release_show_as_unknown_never_a_503() {
    use common::{Options, TestApp};
    let Some(url) = common::pg::fresh_database().await else {
        return;
    };
    // The signed-in person may approve: only the kind stops them.
    let app = TestApp::spawn_with(
        keydesk::fake_vultr::FakeVultr::seeded(common::ROOT_KEY),
        Options {
            approvers: vec![common::STAFF.into()],
            ..Options::on(&url)
        },
    )
    .await;
    let db = &app.state.db;
    // A newer release widened these checks (an expand step).
    raw(db, "ALTER TABLE approvals DROP CONSTRAINT IF EXISTS approvals_action_check; ALTER TABLE approvals DROP CONSTRAINT IF EXISTS approvals_state_check; ALTER TABLE grants DROP CONSTRAINT IF EXISTS grants_state_check")
        .await
        .unwrap();
    raw(db, "INSERT INTO audit (at, actor, role, action, target_user_id, outcome) VALUES ('2026-12-03T00:00:00Z', 'ops@example.com', 'operator', 'vault.seal', NULL, 'ok')")
        .await
        .unwrap();
    raw(db, "INSERT INTO approvals (id, action, user_id, user_email, expire, why, requested_by, requested_ms, expires_ms, state, decided_by) VALUES ('56565656565656565656565656565656', 'key.future', 'u-new', 'new@example.com', FALSE, 'a newer rule', 'ops2@example.com', 1796000000000, 4102444800000, 'pending', NULL), ('78787878787878787878787878787878', 'key.create', 'u-new', 'new@example.com', FALSE, 'rule', 'ops2@example.com', 1796000000000, 4102444800000, 'parked', 'lead@example.com')")
        .await
        .unwrap();
    raw(db, "INSERT INTO grants (id, user_id, user_email, key_name, created_by, created_ms, expires_ms, state) VALUES ('9090909090909090909090909090909090909090', 'u-new', 'new@example.com', 'ci', 'ops@example.com', 1796000000000, 4102444800000, 'paused')")
        .await
        .unwrap();
    for path in [
        "/audit",
        "/approvals",
        "/approvals/56565656565656565656565656565656",
        "/approvals/78787878787878787878787878787878",
        "/grants",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            body.contains("unknown (newer version)"),
            "{path} does not say it: {body}"
        );
    }
    // Shown, never acted on here: no form on its page, and approving it
    // anyway is refused in words (409), before any form is claimed.
    let page = app
        .get("/approvals/56565656565656565656565656565656")
        .await
        .1;
    assert!(!page.contains("/approve"), "{page}");
    assert!(page.contains("a newer keydesk made"), "{page}");
    let r = app
        .post_form(
            "/approvals/56565656565656565656565656565656/approve",
            &[("form_token", "x")],
        )
        .await;
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("newer keydesk"));
    // A request of a known kind still offers the decision.
    raw(db, "INSERT INTO approvals (id, action, user_id, user_email, expire, why, requested_by, requested_ms, expires_ms, state) VALUES ('12121212121212121212121212121212', 'key.create', 'u-new', 'new@example.com', FALSE, 'rule', 'ops2@example.com', 1796000000000, 4102444800000, 'pending')")
        .await
        .unwrap();
    let known = app
        .get("/approvals/12121212121212121212121212121212")
        .await
        .1;
    assert!(known.contains("/approve"), "{known}");
    assert_eq!(
        strings(
            db,
            "SELECT state FROM approvals WHERE id = '56565656565656565656565656565656'"
        )
        .await,
        ["pending"]
    );
}

#[test]
fn the_binary_names_its_version_commit_and_build_date() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keydesk"))
        .arg("--version")
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let re = regex::Regex::new(
        r"^keydesk \d+\.\d+\.\d+ \(commit (?:[0-9a-f]{7,40}|unknown), built \d{4}-\d{2}-\d{2}\)$",
    )
    .unwrap();
    assert!(re.is_match(&line), "{line}");
    assert!(
        line.starts_with(&format!("keydesk {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
}

/// Staff see the version in the footer; Prometheus sees the build.
#[tokio::test]
async fn the_footer_and_the_metrics_name_the_build() {
    let app = common::TestApp::spawn().await;
    let (_, page) = app.get("/users").await;
    assert!(
        page.contains(r#"id="version""#) && page.contains(keydesk::release::VERSION),
        "{page}"
    );
    let (status, metrics) = app.get("/metrics").await;
    assert_eq!(status, 200);
    let series = format!(
        r#"keydesk_build_info{{version="{}",commit="{}"}} 1"#,
        keydesk::release::VERSION,
        keydesk::release::COMMIT
    );
    assert!(metrics.contains(&series), "{series} not in {metrics}");
}

/// `keydesk migrate --dry-run` says what it would apply and applies nothing.
#[tokio::test]
async fn the_dry_run_applies_nothing() {
    let dir = std::env::temp_dir().join(format!("keydesk-dry-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("k.db").display());
    let db = migrated_to(&url, release_0_1_0).await;
    db.close().await;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keydesk"));
    common::without_inherited_keydesk_variables(&mut cmd);
    let out = cmd
        .args(["migrate", "--dry-run"])
        .env("KEYDESK_DATABASE_URL", &url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("would apply 5 migration(s)")
            && text.contains("0013 release and held leavers: expand")
            && text.contains("0014 access reviews: expand"),
        "{text}"
    );
    let db = Db::open_unmigrated(&url).await.unwrap();
    assert_eq!(
        db.applied_versions().await.last(),
        Some(&9),
        "nothing applied"
    );
    assert!(
        schema::backups_of(&dir.join("k.db")).is_empty(),
        "nothing copied"
    );
}
