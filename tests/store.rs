//! The storage interface against both engines, from one test source: each
//! test runs on SQLite and on a real PostgreSQL server.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use keydesk::audit::{AuditAction, AuditStore, Filter, Intent, Outcome, Settlement};
use keydesk::db::Db;

use common::pg::{databases, grant_to_app};

/// A successful settlement that names the key made.
fn ok_with(key: &str) -> Settlement<'_> {
    Settlement {
        key_id: Some(key),
        upstream_status: Some(201),
        ..Outcome::Ok.settled()
    }
}

fn intent(action: AuditAction) -> Intent {
    Intent {
        target_user_id: Some("u1".into()),
        key_name: Some("ci".into()),
        ..Intent::new("a@x", "operator", action)
    }
}

/// The newest audit entry.
async fn newest(s: &AuditStore) -> keydesk::audit::Entry {
    s.list(&Filter::default(), 1, 0).await.unwrap().remove(0)
}

/// Runs raw SQL on either engine; Err when the database refuses it.
async fn raw(db: &Db, sql: &'static str) -> Result<u64, sqlx::Error> {
    keydesk::on_pool!(write, db, |p| sqlx::query(sql)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))
}

#[tokio::test]
async fn the_audit_trail_is_append_only_on_both_engines() {
    for (engine, url) in databases().await {
        let db = Db::open(&url).await.unwrap();
        let s = AuditStore::new(db.clone(), keydesk::audit::PENDING_BOUND).await;
        let open = s.intent(&intent(AuditAction::KeyCreate)).await.unwrap();
        // An open intent: only its outcome may be set.
        for rewrite in [
            "UPDATE audit SET actor = 'mallory@x'",
            "UPDATE audit SET action = 'key.revoke'",
            "UPDATE audit SET at = '2000-01-01T00:00:00Z'",
            "UPDATE audit SET target_user_id = 'u2'",
            "UPDATE audit SET outcome = 'pending', reason = 'x'",
        ] {
            assert!(raw(&db, rewrite).await.is_err(), "{engine}: {rewrite}");
        }
        assert_eq!(s.try_settle(open, ok_with("k1")).await.unwrap(), 1);
        assert_eq!(
            s.try_settle(open, Outcome::Failed.settled()).await.unwrap(),
            0,
            "{engine}: settled once"
        );
        for refused in ["UPDATE audit SET outcome = 'failed'", "DELETE FROM audit"] {
            assert!(raw(&db, refused).await.is_err(), "{engine}: {refused}");
        }
        if engine == "postgres" {
            assert!(
                raw(&db, "TRUNCATE audit").await.is_err(),
                "TRUNCATE refused"
            );
        }
        let all = s.list(&Filter::default(), 10, 0).await.unwrap();
        assert_eq!(all.len(), 1, "{engine}");
        assert_eq!(all[0].outcome, "ok");
        assert_eq!(all[0].key_id.as_deref(), Some("k1"));
        assert_eq!(all[0].actor, "a@x");
        db.close().await;
    }
}

#[tokio::test]
async fn filters_exports_and_brake_state_read_the_same_on_both_engines() {
    for (engine, url) in databases().await {
        let s = AuditStore::open(&url).await.unwrap();
        for a in [
            AuditAction::KeyCreate,
            AuditAction::KeyRevoke,
            AuditAction::KeyCreate,
        ] {
            let id = s.intent(&intent(a)).await.unwrap();
            s.settle(id, ok_with(&format!("k-{a}"))).await;
        }
        let brake = Intent {
            api_enabled: Some(false),
            ..intent(AuditAction::UserApiAccess)
        };
        s.record(&brake, Outcome::Ok).await;
        let created = Filter {
            action: Some("key.create".into()),
            ..Default::default()
        };
        assert_eq!(s.count(&created).await.unwrap(), 2, "{engine}");
        assert_eq!(s.count(&Filter::default()).await.unwrap(), 4, "{engine}");
        let newest = s.list(&Filter::default(), 1, 0).await.unwrap();
        assert_eq!(newest[0].api_enabled, Some(false), "{engine}");
        assert_eq!(newest[0].subject(), "API access off");
        let ours = s.keys_created_here().await.unwrap();
        assert!(ours.contains("k-key.create"), "{engine}: {ours:?}");
    }
}

#[tokio::test]
async fn an_open_intent_is_marked_unknown_only_past_the_bound_on_postgres() {
    let Some(url) = common::pg::fresh_database().await else {
        return;
    };
    let db = Db::open(&url).await.unwrap();
    let a = AuditStore::new(db.clone(), std::time::Duration::from_millis(800)).await;
    let open = a.intent(&intent(AuditAction::KeyCreate)).await.unwrap();
    // A second replica starting now must not touch A's in-flight row.
    let b = AuditStore::new(db.clone(), std::time::Duration::from_millis(800)).await;
    assert_eq!(b.mark_stale(false).await.unwrap(), 0);
    let row = newest(&a).await;
    assert_eq!((row.id, row.outcome.as_str()), (open, "pending"));
    // Past the bound no request can settle it: it becomes unknown.
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    assert_eq!(b.mark_stale(false).await.unwrap(), 1);
    assert_eq!(newest(&a).await.outcome, "unknown");
}

#[tokio::test]
async fn exactly_one_of_many_concurrent_claims_wins_on_both_engines() {
    use keydesk::idempotency::{Claim, FormTokens, Scope};
    for (engine, url) in databases().await {
        // Two pools on one database: two replicas.
        let (one, two) = (Db::open(&url).await.unwrap(), Db::open(&url).await.unwrap());
        let (a, b) = (
            FormTokens::with_db_keys(one).await.unwrap(),
            FormTokens::with_db_keys(two).await.unwrap(),
        );
        let token = a.issue("a@x", Scope::ReportScan, Some("s1".into()));
        let claims = (0..16).map(|i| {
            let t = if i % 2 == 0 { a.clone() } else { b.clone() };
            let token = token.clone();
            tokio::spawn(async move { t.claim(&token, "a@x", Scope::ReportScan, Some("s1")).await })
        });
        let mut won = 0;
        for c in claims {
            match c.await.unwrap().unwrap() {
                Claim::Claimed => won += 1,
                Claim::Replay { .. } => {}
                Claim::Invalid => panic!("{engine}: a valid token was refused"),
            }
        }
        assert_eq!(won, 1, "{engine}");
        b.complete(&token, Some("k9".into())).await;
        let replay = a
            .claim(&token, "a@x", Scope::ReportScan, Some("s1"))
            .await
            .unwrap();
        assert_eq!(
            replay,
            Claim::Replay {
                result_id: Some("k9".into())
            },
            "{engine}"
        );
    }
}

#[tokio::test]
async fn sessions_are_stored_loaded_and_expire_on_both_engines() {
    use keydesk::session_store::DbSessionStore;
    use tower_sessions::session::{Id, Record};
    use tower_sessions::{ExpiredDeletion, SessionStore};
    for (engine, url) in databases().await {
        let store = DbSessionStore::new(Db::open(&url).await.unwrap());
        let mut live = Record {
            id: Id::default(),
            data: [("keydesk.identity".to_string(), serde_json::json!("a@x"))].into(),
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        };
        store.create(&mut live).await.unwrap();
        let loaded = store.load(&live.id).await.unwrap().expect("stored");
        assert_eq!(loaded.data, live.data, "{engine}");
        live.data.insert(
            "keydesk.flash".into(),
            serde_json::json!({"kind": "ok", "text": "t"}),
        );
        store.save(&live).await.unwrap();
        assert_eq!(store.load(&live.id).await.unwrap().unwrap().data.len(), 2);
        let mut old = Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: time::OffsetDateTime::now_utc() - time::Duration::seconds(1),
        };
        store.create(&mut old).await.unwrap();
        assert!(
            store.load(&old.id).await.unwrap().is_none(),
            "{engine}: expired is gone"
        );
        store.delete_expired().await.unwrap();
        assert_eq!(
            store.count().await.unwrap(),
            1,
            "{engine}: expired rows deleted"
        );
        store.delete(&live.id).await.unwrap();
        assert_eq!(store.count().await.unwrap(), 0, "{engine}");
    }
}

/// The documented grants (docs/deployment.md, deploy/postgres-grants.sql): keydesk works as the
/// application role, which cannot rewrite, delete or unprotect the audit.
#[tokio::test]
async fn the_application_role_cannot_bypass_the_append_only_audit() {
    use keydesk::idempotency::{Claim, FormTokens, Scope};
    let Some(owner_url) = common::pg::fresh_database().await else {
        return;
    };
    let owner = Db::open(&owner_url).await.unwrap(); // migrates, as the owner
    grant_to_app(&owner).await;
    let app_url = owner_url.replacen("postgres://postgres@", "postgres://keydesk_app@", 1);
    // Starts as the application role: the schema is current, nothing to create.
    let app = Db::open(&app_url).await.unwrap();
    let audit = AuditStore::new(app.clone(), keydesk::audit::PENDING_BOUND).await;
    let id = audit.intent(&intent(AuditAction::KeyCreate)).await.unwrap();
    assert_eq!(audit.try_settle(id, ok_with("k1")).await.unwrap(), 1);
    let tokens = FormTokens::with_db_keys(app.clone()).await.unwrap();
    let t = tokens.issue("a@x", Scope::ReportScan, None);
    assert_eq!(
        tokens
            .claim(&t, "a@x", Scope::ReportScan, None)
            .await
            .unwrap(),
        Claim::Claimed
    );
    for bypass in [
        "UPDATE audit SET actor = 'mallory@x'",
        "DELETE FROM audit",
        "TRUNCATE audit",
        "ALTER TABLE audit DISABLE TRIGGER ALL",
        "DROP TRIGGER audit_settle_only ON audit",
    ] {
        assert!(
            raw(&app, bypass).await.is_err(),
            "the app role could: {bypass}"
        );
    }
    assert_eq!(newest(&audit).await.actor, "a@x");
    // The tables of holds, lost creates and offboardings are granted too.
    exercise_new_tables(&app, &audit).await;
}

#[tokio::test]
async fn the_application_role_never_migrates_and_says_what_to_do() {
    let Some(owner_url) = common::pg::fresh_database().await else {
        return;
    };
    let owner = Db::open(&owner_url).await.unwrap();
    grant_to_app(&owner).await;
    let app_url = owner_url.replacen("postgres://postgres@", "postgres://keydesk_app@", 1);
    let versions = owner.applied_versions().await;
    // The one before the last (numbers may have gaps: lanes take their own).
    let (needed, previous) = (versions[versions.len() - 1], versions[versions.len() - 2]);
    // The schema one migration behind this keydesk (an upgrade not yet migrated).
    raw(
        &owner,
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .await
    .unwrap();
    let err = Db::open(&app_url).await.unwrap_err().to_string();
    let want = format!("schema at {previous}, this keydesk needs {needed}");
    assert!(err.contains(&want), "{err}");
    // The real binary, started as keydesk_app: exits non-zero with the same words.
    let url = app_url.clone();
    let stderr = tokio::task::spawn_blocking(move || {
        common::serve_refuses(
            &[
                ("VULTR_API_KEY", "ROOTKEY"),
                ("KEYDESK_OPERATORS", "ops@example.com"),
                ("KEYDESK_DATABASE_URL", url.as_str()),
            ],
            &["KEYDESK_DATABASE_URL_FILE", "KEYDESK_AUDIT_DB"],
        )
    })
    .await
    .unwrap();
    assert!(
        stderr.contains(&want) && stderr.contains("KEYDESK_DATABASE_URL"),
        "{stderr}"
    );
    assert!(
        err.contains("keydesk migrate") && err.contains("postgres-grants.sql"),
        "{err}"
    );
    assert!(!err.contains("permission denied"), "it never tried: {err}");
    // The owner migrates (re-applying the last one), then a missing grant is named.
    assert_eq!(owner.migrate(true).await.unwrap(), vec![needed]);
    raw(&owner, "REVOKE INSERT ON holds FROM keydesk_app")
        .await
        .unwrap();
    let err = Db::open(&app_url).await.unwrap_err().to_string();
    assert!(
        err.contains("INSERT on holds") && err.contains("postgres-grants.sql"),
        "{err}"
    );
    grant_to_app(&owner).await;
    Db::open(&app_url).await.unwrap();
}

#[tokio::test]
async fn keydesk_migrate_says_what_it_applied() {
    let Some(url) = common::pg::fresh_database().await else {
        return;
    };
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keydesk"))
            .arg("migrate")
            .env("KEYDESK_DATABASE_URL", &url)
            .env_remove("KEYDESK_DATABASE_URL_FILE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Every embedded PostgreSQL migration, in order, as the binary names them.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/migrations/postgres");
    let mut versions: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy()[..4].to_string())
        .collect();
    versions.sort();
    let first = run();
    assert!(
        first.contains(&format!("applied {};", versions.join(", "))),
        "{first}"
    );
    let last = versions.last().unwrap();
    let again = run();
    assert!(
        again.contains(&format!("is up to date (schema at {last})")),
        "{again}"
    );
}

/// Holds, lost creates, offboarding runs and a reinstatement request, as
/// the stores use them.
async fn exercise_new_tables(db: &Db, audit: &AuditStore) {
    use keydesk::approvals::{ApprovalAction, Approvals, NewApproval};
    let holds = keydesk::holds::Holds::new(db.clone());
    holds
        .place("u1", Some("ada@x"), "a@x", Some("left"), Some(7))
        .await
        .unwrap();
    holds
        .place("u1", Some("ada@x"), "b@x", None, Some(8))
        .await
        .unwrap();
    let h = holds.get("u1").await.unwrap().unwrap();
    assert_eq!((h.placed_by.as_str(), h.group_id), ("b@x", Some(8)));
    assert!(holds.lift("u1").await.unwrap());
    assert!(!holds.lift("u1").await.unwrap(), "lifted once");

    exercise_lost_creates(db, audit).await;
    let id = audit.intent(&intent(AuditAction::KeyCreate)).await.unwrap();

    let runs = keydesk::offboardings::Offboardings::new(db.clone());
    // What an offboarding waits for: a create of this user still at Vultr.
    assert_eq!(runs.writes_in_flight("u-flight").await.unwrap(), 0);
    let at_vultr = keydesk::audit::Intent {
        target_user_id: Some("u-flight".into()),
        key_name: Some("ci".into()),
        ..keydesk::audit::Intent::system(keydesk::audit::AuditAction::KeyCreate)
    };
    let pending = audit.intent(&at_vultr).await.unwrap();
    let brake_off = keydesk::audit::Intent {
        target_user_id: Some("u-flight".into()),
        api_enabled: Some(false),
        ..keydesk::audit::Intent::system(keydesk::audit::AuditAction::UserApiAccess)
    };
    let off = audit.intent(&brake_off).await.unwrap();
    assert_eq!(
        runs.writes_in_flight("u-flight").await.unwrap(),
        1,
        "the brake gives nothing"
    );
    audit
        .settle(pending, keydesk::audit::Outcome::Ok.settled())
        .await;
    audit
        .settle(off, keydesk::audit::Outcome::Ok.settled())
        .await;
    assert_eq!(runs.writes_in_flight("u-flight").await.unwrap(), 0);
    runs.start(id, "u1", "a@x").await.unwrap();
    runs.progress(id, Some(3), 2).await.unwrap();
    let o = runs.latest_for_user("u1").await.unwrap().unwrap();
    assert_eq!(
        (o.state.as_str(), o.keys_total, o.keys_done),
        ("running", Some(3), 2)
    );
    runs.finish(id, true, 0).await.unwrap();
    assert_eq!(
        runs.latest_for_user("u1").await.unwrap().unwrap().state,
        "done"
    );

    let approvals = Approvals::new(db.clone(), std::time::Duration::from_secs(60));
    let new = NewApproval {
        action: ApprovalAction::Reinstate,
        user_id: "u1".into(),
        user_email: Some("Ada@X".into()),
        key_id: None,
        key_name: None,
        expire: false,
        date_expire: None,
        reason: Some("rehired".into()),
        why: "rule".into(),
        requested_by: "A@x".into(),
        subnet: None,
        decided: None,
    };
    let a = approvals
        .create(&keydesk::approvals::new_id(), &new)
        .await
        .unwrap();
    assert_eq!(a.action, ApprovalAction::Reinstate);
    assert_eq!(a.user_email.as_deref(), Some("ada@x"), "stored normalised");
    // The recipient cannot decide, however they spell their address.
    assert!(!approvals.decide(&a.id, true, "ada@x", None).await.unwrap());
    assert!(approvals.decide(&a.id, true, "boss@x", None).await.unwrap());
}

/// Lost creates and lost claims: the keys before kept, settled once, an
/// ambiguous one kept open with its candidates.
async fn exercise_lost_creates(db: &Db, audit: &AuditStore) {
    use keydesk::reconcile::lost::reconcile;
    let key = |id: &str, name: &str| keydesk::vultr::ApiKey {
        id: id.into(),
        name: Some(name.into()),
        ..Default::default()
    };
    let lost = keydesk::lost_creates::LostCreates::new(db.clone());
    let id = audit.intent(&intent(AuditAction::KeyCreate)).await.unwrap();
    lost.record(id, "u1", "ci", None, Some(r#"["k-old"]"#))
        .await
        .unwrap();
    let keys = [key("k-old", "ci"), key("k-found", "ci")];
    assert_eq!(reconcile(&lost, audit, "u1", &keys).await.unwrap(), 1);
    assert_eq!(
        reconcile(&lost, audit, "u1", &keys).await.unwrap(),
        0,
        "once"
    );
    let appeared = lost.appeared("u1").await.unwrap();
    assert!(appeared.contains("k-found") && !appeared.contains("k-old"));

    let id = audit.intent(&intent(AuditAction::KeyCreate)).await.unwrap();
    lost.record(id, "u1", "two", Some(1), Some("[]"))
        .await
        .unwrap();
    let keys = [key("k-a", "two"), key("k-b", "two")];
    assert_eq!(reconcile(&lost, audit, "u1", &keys).await.unwrap(), 1);
    assert_eq!(reconcile(&lost, audit, "u1", &keys).await.unwrap(), 0);
    let open = lost.open_for_user("u1").await.unwrap();
    let c = open[0].candidates.as_deref().unwrap();
    assert!(c.contains("k-a") && c.contains("k-b"), "{c}");
    assert!(!lost.settle(id, Some("k-a")).await.unwrap(), "stays open");
    assert!(lost.unsettled_users(10).await.unwrap().is_empty());

    use keydesk::grants::{GrantState, Grants, NewGrant};
    let grants = Grants::new(db.clone(), std::time::Duration::from_secs(3600));
    let new = NewGrant {
        user_id: "u1".into(),
        user_email: "ada@x".into(),
        key_name: "ci".into(),
        date_expire: None,
        reason: None,
        created_by: "op@x".into(),
        decided: Default::default(),
    };
    let g = grants.create(&new).await.unwrap();
    assert!(
        !grants.set_keys_before(&g.id, "[]").await.unwrap(),
        "only in flight"
    );
    assert!(grants.begin_claim(&g.id, "ada@x").await.unwrap());
    assert!(grants.set_keys_before(&g.id, r#"["k-old"]"#).await.unwrap());
    assert!(grants.unknown(&g.id).await.unwrap());
    assert!(grants.ambiguous(&g.id, r#"[{"id":"k-a"}]"#).await.unwrap());
    assert!(!grants.ambiguous(&g.id, "[]").await.unwrap(), "once");
    let g = grants.get(&g.id).await.unwrap().unwrap();
    assert_eq!(g.state, GrantState::Unknown);
    assert_eq!(g.keys_before.as_deref(), Some(r#"["k-old"]"#));
    assert!(g.candidates.unwrap().contains("k-a"));
}

#[tokio::test]
async fn holds_lost_creates_runs_and_reinstatements_on_both_engines() {
    for (_engine, url) in databases().await {
        let db = Db::open(&url).await.unwrap();
        let audit = AuditStore::new(db.clone(), keydesk::audit::PENDING_BOUND).await;
        exercise_new_tables(&db, &audit).await;
    }
}

#[tokio::test]
async fn a_stopping_process_marks_only_its_own_open_intents() {
    for (engine, url) in databases().await {
        let db = Db::open(&url).await.unwrap();
        let a = AuditStore::new(db.clone(), keydesk::audit::PENDING_BOUND).await;
        let b = AuditStore::new(db.clone(), keydesk::audit::PENDING_BOUND).await;
        a.intent(&intent(AuditAction::KeyCreate)).await.unwrap();
        b.intent(&intent(AuditAction::KeyRevoke)).await.unwrap();
        assert_eq!(a.mark_own_unknown().await.unwrap(), 1, "{engine}");
        let pending = Filter {
            outcome: Some("pending".into()),
            ..Default::default()
        };
        let left = b.list(&pending, 10, 0).await.unwrap();
        assert_eq!(left.len(), 1, "{engine}: B's in-flight intent untouched");
        assert_eq!(left[0].action, AuditAction::KeyRevoke);
    }
}

#[tokio::test]
async fn claim_links_move_once_through_their_states_on_both_engines() {
    use keydesk::grants::{GrantState, Grants, NewGrant};
    use std::time::Duration;
    for (engine, url) in databases().await {
        let db = Db::open(&url).await.unwrap();
        let grants = Grants::new(db.clone(), Duration::from_secs(3600));
        let new = NewGrant {
            user_id: "u1".into(),
            user_email: "Ada@Example.com".into(),
            key_name: "ci".into(),
            date_expire: Some("2030-01-01T00:00:00Z".into()),
            reason: None,
            created_by: "op@x".into(),
            decided: keydesk::powers::Decided {
                level: keydesk::powers::Level::Sensitive,
                acls: vec!["billing".into(), "dns".into()],
                anywhere: true,
                allowlist: "0.0.0.0/0,45.76.11.0/24".into(),
            },
        };
        let g = grants.create(&new).await.unwrap();
        assert_eq!(g.state, GrantState::Pending, "{engine}");
        assert_eq!(
            g.decided(),
            Some(new.decided.clone()),
            "{engine}: what it was decided on"
        );
        assert!(g.is_owner("ada@example.com"));
        // Eight concurrent claims: exactly one moves it.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (grants, id) = (grants.clone(), g.id.clone());
            set.spawn(async move { grants.begin_claim(&id, "ada@example.com").await.unwrap() });
        }
        let mut won = 0;
        while let Some(r) = set.join_next().await {
            won += usize::from(r.unwrap());
        }
        assert_eq!(won, 1, "{engine}");
        let claiming = grants.get(&g.id).await.unwrap().unwrap();
        assert_eq!(claiming.state, GrantState::Claiming);
        assert_eq!(claiming.claimed_by.as_deref(), Some("ada@example.com"));
        assert!(claiming.claim_ms.is_some());
        assert!(
            !grants.revoke(&g.id, "op@x").await.unwrap(),
            "{engine}: only pending can be revoked"
        );
        assert!(
            grants
                .claimed(&g.id, GrantState::Claiming, "k1")
                .await
                .unwrap()
        );
        let done = grants.get(&g.id).await.unwrap().unwrap();
        assert_eq!(
            (done.state, done.key_id.as_deref()),
            (GrantState::Claimed, Some("k1")),
            "{engine}"
        );
        assert!(!grants.begin_claim(&g.id, "ada@example.com").await.unwrap());

        // A claimed row can only be the owner's: the CHECK holds in the database.
        let other = grants.create(&new).await.unwrap();
        assert!(grants.begin_claim(&other.id, "mallory@x").await.unwrap());
        assert!(
            grants
                .claimed(&other.id, GrantState::Claiming, "k2")
                .await
                .is_err(),
            "{engine}: a claim by someone else cannot be completed"
        );

        // Revoked and expired ones.
        let r = grants.create(&new).await.unwrap();
        assert!(grants.revoke(&r.id, "op@x").await.unwrap());
        assert!(!grants.begin_claim(&r.id, "ada@example.com").await.unwrap());
        let short = Grants::new(db.clone(), Duration::ZERO);
        let e = short.create(&new).await.unwrap();
        assert!(
            !short.begin_claim(&e.id, "ada@example.com").await.unwrap(),
            "{engine}: past its time"
        );
        let expired = short.expire_due().await.unwrap();
        assert_eq!(expired.len(), 1, "{engine}");
        assert_eq!(expired[0].id, e.id);
        assert!(
            short.expire_due().await.unwrap().is_empty(),
            "{engine}: once"
        );
        let listed = grants
            .list(Some(GrantState::Pending), Some("ADA@example.com"), 10)
            .await
            .unwrap();
        assert!(listed.is_empty(), "{engine}");
        let all = grants.list(None, Some("u1"), 10).await.unwrap();
        assert_eq!(all.len(), 4, "{engine}");
    }
}

#[tokio::test]
async fn approval_requests_are_decided_and_run_once_on_both_engines() {
    use keydesk::approvals::{ApprovalAction, ApprovalState, Approvals, NewApproval, new_id};
    use std::time::Duration;
    for (engine, url) in databases().await {
        let db = Db::open(&url).await.unwrap();
        let approvals = Approvals::new(db.clone(), Duration::from_secs(3600));
        let new = NewApproval {
            action: ApprovalAction::KeyCreate,
            user_id: "u1".into(),
            user_email: Some("ada@x".into()),
            key_id: None,
            key_name: Some("forever".into()),
            expire: false,
            date_expire: None,
            reason: Some("OPS-1".into()),
            why: "no expiry".into(),
            requested_by: "Req@X".into(),
            subnet: None,
            decided: None,
        };
        // An allowlist entry waiting for a second person keeps its entry.
        let widen = NewApproval {
            action: ApprovalAction::AllowlistAdd,
            key_name: None,
            subnet: Some("45.32.0.0/16".into()),
            decided: None,
            ..new.clone()
        };
        let w = approvals.create(&new_id(), &widen).await.unwrap();
        assert_eq!(
            (w.action, w.subnet.as_deref()),
            (ApprovalAction::AllowlistAdd, Some("45.32.0.0/16")),
            "{engine}"
        );
        let a = approvals.create(&new_id(), &new).await.unwrap();
        assert_eq!(a.state, ApprovalState::Pending, "{engine}");
        assert!(!a.expire);
        // Never the requester, in any case.
        assert!(
            !approvals.decide(&a.id, true, "req@x", None).await.unwrap(),
            "{engine}"
        );
        assert!(
            raw(
                &db,
                "UPDATE approvals SET state = 'approved', decided_by = 'REQ@x'"
            )
            .await
            .is_err(),
            "{engine}: the CHECK refuses a self-approval"
        );
        assert!(
            !approvals.begin_execute(&a.id, "req@x").await.unwrap(),
            "not approved yet"
        );
        assert!(
            approvals
                .decide(&a.id, true, "boss@x", Some("fine"))
                .await
                .unwrap()
        );
        assert!(
            !approvals
                .decide(&a.id, false, "boss@x", None)
                .await
                .unwrap(),
            "{engine}: final"
        );
        assert!(
            !approvals.begin_execute(&a.id, "boss@x").await.unwrap(),
            "only the requester"
        );
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (s, id) = (approvals.clone(), a.id.clone());
            set.spawn(async move { s.begin_execute(&id, "req@x").await.unwrap() });
        }
        let mut won = 0;
        while let Some(r) = set.join_next().await {
            won += usize::from(r.unwrap());
        }
        assert_eq!(won, 1, "{engine}");
        assert!(approvals.reopen(&a.id).await.unwrap());
        assert!(approvals.begin_execute(&a.id, "req@x").await.unwrap());
        assert!(approvals.done(&a.id, Some("k1")).await.unwrap());
        let done = approvals.get(&a.id).await.unwrap().unwrap();
        assert_eq!(
            (
                done.state,
                done.result_id.as_deref(),
                done.decided_by.as_deref()
            ),
            (ApprovalState::Done, Some("k1"), Some("boss@x")),
            "{engine}"
        );
        // Past its time: expired once, and nothing more can happen.
        let short = Approvals::new(db.clone(), Duration::ZERO);
        let e = short.create(&new_id(), &new).await.unwrap();
        assert!(!short.decide(&e.id, true, "boss@x", None).await.unwrap());
        assert_eq!(short.expire_due().await.unwrap().len(), 1, "{engine}");
        assert!(short.expire_due().await.unwrap().is_empty());
        assert_eq!(
            approvals
                .list(Some(ApprovalState::Expired), 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }
}

/// The migrations since release 0.1.0 (`f40a367`) are expand-only: that
/// release's own writes and reads, as its stores wrote them, still work on
/// a database this release migrated, and what it writes reads back here as
/// "nothing decided" (refused when a rule would now apply).
#[tokio::test]
async fn the_previous_release_writes_and_reads_beside_these_migrations_on_both_engines() {
    use keydesk::approvals::Approvals;
    use keydesk::grants::Grants;
    use keydesk::lost_creates::LostCreates;
    use keydesk::offboardings::Offboardings;
    // The SQL of f40a367's stores, as it was.
    const GRANT_INSERT: &str = "INSERT INTO grants (id, user_id, user_email, key_name, date_expire, reason, created_by, created_ms, expires_ms, state)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending')";
    const GRANT_SELECT: &str = "SELECT id, user_id, user_email, key_name, date_expire, reason, created_by, created_ms, expires_ms, state, claimed_by, claim_ms, key_id, ended_by, ended_ms FROM grants WHERE id = $1";
    const APPROVAL_INSERT: &str = "INSERT INTO approvals (id, action, user_id, user_email, key_id, key_name, expire, date_expire, reason, why, requested_by, requested_ms, expires_ms, state, subnet)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'pending', $14)";
    const APPROVAL_SELECT: &str = "SELECT id, action, user_id, user_email, key_id, key_name, expire, date_expire, reason, why, requested_by, requested_ms, expires_ms, state, decided_by, decided_ms, comment, executed_ms, result_id, subnet FROM approvals WHERE id = $1";
    const OFFBOARDING_INSERT: &str =
        "INSERT INTO offboardings (group_id, user_id, started_by, state, started_ms, heartbeat_ms)
                 VALUES ($1, $2, $3, 'running', $4, $4)";
    const OFFBOARDING_SELECT: &str = "SELECT group_id, user_id, started_by, state, started_ms, heartbeat_ms, keys_total, keys_done, live
     FROM offboardings WHERE user_id = $1 ORDER BY started_ms DESC, group_id DESC LIMIT 1";
    const LOST_INSERT: &str = "INSERT INTO lost_creates (audit_id, user_id, key_name, started_ms, state) VALUES ($1, $2, $3, $4, 'open')";
    for (engine, url) in databases().await {
        let db = Db::open(&url).await.unwrap();
        let audit = AuditStore::new(db.clone(), keydesk::audit::PENDING_BOUND).await;
        let intent = Intent {
            target_user_id: Some("old-user".into()),
            key_name: Some("ci".into()),
            ..Intent::system(AuditAction::KeyCreate)
        };
        let audit_id = audit.intent(&intent).await.unwrap();
        let now = db.now_ms().await.unwrap();
        let gid = "ab".repeat(20);
        let aid = "cd".repeat(16);
        let written: u64 = keydesk::on_pool!(write, &db, |p| {
            let mut n = sqlx::query(GRANT_INSERT)
                .bind(&gid)
                .bind("old-user")
                .bind("old@example.com")
                .bind("ci")
                .bind(Option::<String>::None)
                .bind(Option::<String>::None)
                .bind("op@example.com")
                .bind(now)
                .bind(now + 3_600_000)
                .execute(p)
                .await
                .unwrap()
                .rows_affected();
            n += sqlx::query(APPROVAL_INSERT)
                .bind(&aid)
                .bind("key.create")
                .bind("old-user")
                .bind("old@example.com")
                .bind(Option::<String>::None)
                .bind("forever")
                .bind(false)
                .bind(Option::<String>::None)
                .bind(Option::<String>::None)
                .bind("rule")
                .bind("op@example.com")
                .bind(now)
                .bind(now + 3_600_000)
                .bind(Option::<String>::None)
                .execute(p)
                .await
                .unwrap()
                .rows_affected();
            n += sqlx::query(OFFBOARDING_INSERT)
                .bind(audit_id)
                .bind("old-user")
                .bind("op@example.com")
                .bind(now)
                .execute(p)
                .await
                .unwrap()
                .rows_affected();
            n += sqlx::query(LOST_INSERT)
                .bind(audit_id)
                .bind("old-user")
                .bind("ci")
                .bind(now)
                .execute(p)
                .await
                .unwrap()
                .rows_affected();
            n
        });
        assert_eq!(written, 4, "{engine}: the old release's writes");
        let read: usize = keydesk::on_pool!(read, &db, |p| {
            sqlx::query(GRANT_SELECT)
                .bind(&gid)
                .fetch_all(p)
                .await
                .unwrap()
                .len()
                + sqlx::query(APPROVAL_SELECT)
                    .bind(&aid)
                    .fetch_all(p)
                    .await
                    .unwrap()
                    .len()
                + sqlx::query(OFFBOARDING_SELECT)
                    .bind("old-user")
                    .fetch_all(p)
                    .await
                    .unwrap()
                    .len()
        });
        assert_eq!(read, 3, "{engine}: the old release's reads");
        // This release reads them, as decided on nothing.
        let grants = Grants::new(db.clone(), std::time::Duration::from_secs(3600));
        assert_eq!(
            grants.get(&gid).await.unwrap().unwrap().decided(),
            None,
            "{engine}"
        );
        let approvals = Approvals::new(db.clone(), std::time::Duration::from_secs(3600));
        assert_eq!(
            approvals.get(&aid).await.unwrap().unwrap().decided(),
            None,
            "{engine}"
        );
        let runs = Offboardings::new(db.clone());
        assert!(
            runs.latest_for_user("old-user").await.unwrap().is_some(),
            "{engine}"
        );
        let lost = LostCreates::new(db.clone());
        assert_eq!(
            lost.open_for_user("old-user").await.unwrap().len(),
            1,
            "{engine}"
        );
    }
}
