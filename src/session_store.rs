//! tower-sessions' `SessionStore` on keydesk's database (SQLite or
//! PostgreSQL), so a session survives restarts and is seen by every replica.
//! A record holds only what `session.rs` puts there (an identity binding, a
//! one-off notice); expired records are deleted periodically. Nobody
//! anonymous has a record: a started OpenID sign-in lives in a cookie.

use async_trait::async_trait;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};

use crate::db::Db;
use crate::on_pool;

/// The session cookie's name. With `Secure` it takes the `__Host-` prefix,
/// which browsers accept only from HTTPS, with `Path=/` and no `Domain`: a
/// sibling host or a plain-http page cannot set or shadow it.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-keydesk_session"
    } else {
        "keydesk_session"
    }
}

#[derive(Clone, Debug)]
pub struct DbSessionStore {
    db: Db,
}

impl DbSessionStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

fn backend(e: sqlx::Error) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

fn expires_ms(r: &Record) -> i64 {
    (r.expiry_date.unix_timestamp_nanos() / 1_000_000) as i64
}

fn encode(r: &Record) -> session_store::Result<String> {
    serde_json::to_string(&r.data).map_err(|e| session_store::Error::Encode(e.to_string()))
}

#[async_trait]
impl SessionStore for DbSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let data = encode(record)?;
        // A fresh random id collides only by astronomical chance; retry then.
        for _ in 0..3 {
            let inserted = on_pool!(write, &self.db, |p| {
                sqlx::query(
                "INSERT INTO sessions (id, data, expires_ms) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
            )
            .bind(record.id.to_string())
            .bind(&data)
            .bind(expires_ms(record))
            .execute(p)
            .await
            .map_err(backend)?
            .rows_affected()
            });
            if inserted == 1 {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(session_store::Error::Backend("session id collision".into()))
    }

    /// Updates a session that still exists, and never inserts one: a
    /// request in flight across a sign-out (or an expiry) must not write the
    /// deleted session back. New sessions come only from `create`, at
    /// sign-in or when a signed-in person first stores something.
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let data = encode(record)?;
        on_pool!(write, &self.db, |p| sqlx::query(
            "UPDATE sessions SET data = $2, expires_ms = $3 WHERE id = $1",
        )
        .bind(record.id.to_string())
        .bind(data)
        .bind(expires_ms(record))
        .execute(p)
        .await
        .map(|_| ())
        .map_err(backend)?);
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let row: Option<(String, i64)> = on_pool!(read, &self.db, |p| sqlx::query_as(
            "SELECT data, expires_ms FROM sessions WHERE id = $1 AND expires_ms > $2",
        )
        .bind(id.to_string())
        .bind(now_ms())
        .fetch_optional(p)
        .await
        .map_err(backend)?);
        let Some((data, expires)) = row else {
            return Ok(None);
        };
        let data =
            serde_json::from_str(&data).map_err(|e| session_store::Error::Decode(e.to_string()))?;
        let expiry_date =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(expires) * 1_000_000)
                .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        on_pool!(write, &self.db, |p| sqlx::query(
            "DELETE FROM sessions WHERE id = $1"
        )
        .bind(id.to_string())
        .execute(p)
        .await
        .map(|_| ())
        .map_err(backend)?);
        Ok(())
    }
}

#[async_trait]
impl ExpiredDeletion for DbSessionStore {
    async fn delete_expired(&self) -> session_store::Result<()> {
        on_pool!(write, &self.db, |p| sqlx::query(
            "DELETE FROM sessions WHERE expires_ms <= $1"
        )
        .bind(now_ms())
        .execute(p)
        .await
        .map(|_| ())
        .map_err(backend)?);
        Ok(())
    }
}

impl DbSessionStore {
    /// How many sessions are stored now (tests, benchmarks).
    pub async fn count(&self) -> Result<i64, sqlx::Error> {
        on_pool!(read, &self.db, |p| sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions"
        )
        .fetch_one(p)
        .await)
    }
}
