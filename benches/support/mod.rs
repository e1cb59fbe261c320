//! What the bench files share: fresh databases. Kept to APIs that every
//! keydesk since the store has, so `benches/compare.sh` can build the same
//! scenarios against an older commit.

#![allow(dead_code)]

/// A fresh PostgreSQL database on `KEYDESK_BENCH_DATABASE_URL` (an admin
/// URL), else on the tests' throwaway cluster; `None` when neither answers.
pub async fn postgres_database() -> Option<String> {
    let admin = std::env::var("KEYDESK_BENCH_DATABASE_URL")
        .ok()
        .unwrap_or_else(|| {
            let dir = std::env::temp_dir().join("keydesk-test-pg");
            format!(
                "postgres://postgres@localhost/postgres?host={}",
                dir.display()
            )
        });
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .ok()?;
    let name = format!("kd_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .ok()?;
    let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    Some(format!("{base}/{name}?{query}"))
}

/// A fresh SQLite file (WAL) in a new temporary directory.
pub fn sqlite_database(tag: &str) -> String {
    let dir = std::env::temp_dir().join(format!(
        "keydesk-bench-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}", dir.join("keydesk.db").display())
}
