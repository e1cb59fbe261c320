//! The storage interface against both engines, from one test source: each
//! test runs on SQLite and on a real PostgreSQL server.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use keydesk::audit::{AuditAction, AuditStore, Filter, Intent, Outcome};
use keydesk::db::Db;

/// A fresh database of each engine: a SQLite file, and PostgreSQL when a
/// server is available (always in CI).
async fn databases() -> Vec<(&'static str, String)> {
    let dir = std::env::temp_dir().join(format!("keydesk-store-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut out = vec![("sqlite", format!("sqlite://{}", dir.join("k.db").display()))];
    if let Some(url) = common::pg::fresh_database().await {
        out.push(("postgres", url));
    }
    out
}

fn intent(action: AuditAction) -> Intent {
    Intent {
        target_user_id: Some("u1".into()),
        key_name: Some("ci".into()),
        ..Intent::new("a@x", "operator", action)
    }
}

/// Runs raw SQL on either engine; Err when the database refuses it.
async fn raw(db: &Db, sql: &'static str) -> Result<u64, sqlx::Error> {
    keydesk::on_pool!(db, |p| sqlx::query(sql)
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
        ] {
            assert!(raw(&db, rewrite).await.is_err(), "{engine}: {rewrite}");
        }
        assert_eq!(
            s.try_settle(open, Outcome::Ok, Some("k1"), Some(201), None)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            s.try_settle(open, Outcome::Failed, None, None, None)
                .await
                .unwrap(),
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
            s.settle(id, Outcome::Ok, Some(&format!("k-{a}")), None, None)
                .await;
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
    let row = a.list(&Filter::default(), 1, 0).await.unwrap();
    assert_eq!(row[0].id, open);
    assert_eq!(row[0].outcome, "pending");
    // Past the bound no request can settle it: it becomes unknown.
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    assert_eq!(b.mark_stale(false).await.unwrap(), 1);
    assert_eq!(
        a.list(&Filter::default(), 1, 0).await.unwrap()[0].outcome,
        "unknown"
    );
}
