//! The keys that sign form tokens (see `idempotency`): HMAC-SHA-256 keys that
//! every replica shares and a restart keeps. Either the operator sets them
//! (`KEYDESK_SECRET_KEY`, first key signs, the others still verify), or
//! keydesk generates one in the database the first time it starts, and
//! `keydesk rotate-form-key` replaces it there. A retired key keeps verifying
//! until every token it signed has expired, so a rotation spends no open form.

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::{Digest, Sha256};

use crate::db::Db;
use crate::on_pool;

type HmacSha256 = Hmac<Sha256>;

/// The shortest key an operator may set: 32 characters (`openssl rand -hex 32`
/// gives 64).
pub const MIN_KEY_CHARS: usize = 32;

/// How long a form token is good for (the form must then be reloaded).
pub const TOKEN_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// How often a replica re-reads the keys from the database (in the upkeep).
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// An unknown key id re-reads the keys at most this often (a forged id cannot
/// turn every request into a query).
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(5);

/// One signing key. Its secret never reaches Debug output.
struct Key {
    kid: String,
    secret: SecretSlice<u8>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.kid)
    }
}

impl Key {
    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length: this cannot fail.
        HmacSha256::new_from_slice(self.secret.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }
}

#[derive(Debug)]
struct Ring {
    signer: Arc<Key>,
    /// Every key that still verifies, the signer included.
    verifiers: Vec<Arc<Key>>,
}

/// The keys in use. Cheap to clone; every clone sees a refresh.
#[derive(Clone, Debug)]
pub struct FormKeys {
    ring: Arc<RwLock<Ring>>,
    /// Where the keys live when keydesk manages them; `None` when configured.
    db: Option<Db>,
    last_reload: Arc<Mutex<Option<Instant>>>,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long a retired key still verifies: the life of the tokens it signed,
/// plus the time replicas take to notice the rotation.
fn retired_life_ms() -> i64 {
    (TOKEN_TTL + REFRESH_EVERY * 2).as_millis() as i64
}

impl FormKeys {
    /// The operator's keys: the first signs, the others only verify (the
    /// previous key during a rotation). Each must be `MIN_KEY_CHARS` long.
    pub fn configured(value: &SecretString) -> Result<Self, String> {
        let keys: Vec<Arc<Key>> = value
            .expose_secret()
            .split([',', ' ', '\n', '\t', '\r'])
            .filter(|k| !k.is_empty())
            .map(|k| {
                if k.chars().count() < MIN_KEY_CHARS {
                    return Err(format!(
                        "KEYDESK_SECRET_KEY: each key must be at least {MIN_KEY_CHARS} characters (e.g. `openssl rand -hex 32`)"
                    ));
                }
                let id = Sha256::digest([b"keydesk form key id:", k.as_bytes()].concat());
                Ok(Arc::new(Key {
                    kid: format!("env-{}", &hex(&id)[..10]),
                    secret: SecretSlice::from(k.as_bytes().to_vec()),
                }))
            })
            .collect::<Result<_, _>>()?;
        let Some(signer) = keys.first().cloned() else {
            return Err("KEYDESK_SECRET_KEY is empty".into());
        };
        Ok(Self {
            ring: Arc::new(RwLock::new(Ring {
                signer,
                verifiers: keys,
            })),
            db: None,
            last_reload: Arc::new(Mutex::new(None)),
        })
    }

    /// The keys keydesk manages in the database, generating the first one
    /// (one wins when replicas start together).
    pub async fn from_db(db: Db) -> Result<Self, sqlx::Error> {
        let ring = match load(&db).await? {
            Some(ring) => ring,
            None => {
                insert_current(&db).await?;
                load(&db).await?.ok_or(sqlx::Error::RowNotFound)?
            }
        };
        Ok(Self {
            ring: Arc::new(RwLock::new(ring)),
            db: Some(db),
            last_reload: Arc::new(Mutex::new(None)),
        })
    }

    /// Builds a message that names the signing key's id (`build` gets it),
    /// and signs it: the message and its MAC.
    pub fn sign(&self, build: impl FnOnce(&str) -> String) -> (String, Vec<u8>) {
        let signer = self
            .ring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .signer
            .clone();
        let message = build(&signer.kid);
        let mut mac = signer.mac();
        mac.update(message.as_bytes());
        (message, mac.finalize().into_bytes().to_vec())
    }

    /// True when `tag` is `message`'s MAC under key `kid`, compared in
    /// constant time. An unknown id re-reads the keys once (another replica
    /// may have rotated them).
    pub async fn verify(&self, kid: &str, message: &[u8], tag: &[u8]) -> bool {
        if let Some(ok) = self.verify_known(kid, message, tag) {
            return ok;
        }
        if self.may_reload() && self.refresh().await.is_ok() {
            return self.verify_known(kid, message, tag).unwrap_or(false);
        }
        false
    }

    fn verify_known(&self, kid: &str, message: &[u8], tag: &[u8]) -> Option<bool> {
        let key = {
            let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
            ring.verifiers.iter().find(|k| k.kid == kid).cloned()
        }?;
        let mut mac = key.mac();
        mac.update(message);
        Some(mac.verify_slice(tag).is_ok())
    }

    /// Keys for another purpose (`label`), derived from these with HMAC so
    /// that no form-token key is ever used as is elsewhere: the signer's
    /// first, then every other key that still verifies.
    pub fn derived(&self, label: &str) -> Vec<SecretSlice<u8>> {
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        std::iter::once(&ring.signer)
            .chain(ring.verifiers.iter().filter(|k| k.kid != ring.signer.kid))
            .map(|k| {
                let mut mac = k.mac();
                mac.update(b"keydesk derived key:");
                mac.update(label.as_bytes());
                SecretSlice::from(mac.finalize().into_bytes().to_vec())
            })
            .collect()
    }

    /// Re-reads the keys from the database when that was not done in the
    /// last few seconds: true when it did (something signed with a key this
    /// replica does not know yet may verify now).
    /// Read only (a stranger's cookie can ask for it): retired keys are
    /// forgotten by the upkeep's `refresh`, never here.
    pub async fn reload_now(&self) -> bool {
        let Some(db) = self.db.as_ref().filter(|_| self.may_reload()) else {
            return false;
        };
        match load(db).await {
            Ok(Some(ring)) => {
                *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
                true
            }
            _ => false,
        }
    }

    fn may_reload(&self) -> bool {
        if self.db.is_none() {
            return false;
        }
        let mut last = self.last_reload.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(at) if at.elapsed() < RELOAD_AT_MOST_EVERY => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }

    /// Re-reads the keys from the database (a rotation on another replica)
    /// and forgets retired keys whose tokens have all expired.
    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        let Some(db) = &self.db else { return Ok(()) };
        let cutoff = now_ms() - retired_life_ms();
        on_pool!(write, db, |p| sqlx::query(
            "DELETE FROM form_keys WHERE slot IS NULL AND retired_ms < $1"
        )
        .bind(cutoff)
        .execute(p)
        .await
        .map(|_| ())?);
        if let Some(ring) = load(db).await? {
            *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
        }
        Ok(())
    }

    /// Retires the current database key and makes a new one; returns the new
    /// key's id. Replicas sign with it from their next refresh; tokens signed
    /// with the old one keep working until they expire.
    pub async fn rotate(db: &Db) -> Result<String, sqlx::Error> {
        on_pool!(write, db, |p| sqlx::query(
            "UPDATE form_keys SET slot = NULL, retired_ms = $1 WHERE slot = 'current'"
        )
        .bind(now_ms())
        .execute(p)
        .await
        .map(|_| ())?);
        insert_current(db).await?;
        let ring = load(db).await?.ok_or(sqlx::Error::RowNotFound)?;
        Ok(ring.signer.kid.clone())
    }
}

/// The current key and the retired ones that still verify; `None` when there
/// is no current key yet.
async fn load(db: &Db) -> Result<Option<Ring>, sqlx::Error> {
    let cutoff = now_ms() - retired_life_ms();
    let rows: Vec<(String, String, Option<String>)> = on_pool!(read, db, |p| {
        sqlx::query_as(
            "SELECT kid, secret, slot FROM form_keys WHERE slot = 'current' OR retired_ms >= $1",
        )
        .bind(cutoff)
        .fetch_all(p)
        .await?
    });
    let mut signer = None;
    let mut verifiers = Vec::with_capacity(rows.len());
    for (kid, secret, slot) in rows {
        let key = Arc::new(Key {
            kid,
            secret: SecretSlice::from(secret.into_bytes()),
        });
        if slot.is_some() {
            signer = Some(key.clone());
        }
        verifiers.push(key);
    }
    Ok(signer.map(|signer| Ring { signer, verifiers }))
}

/// Adds a fresh random key as the current one, unless another replica just
/// did (the `slot` column is unique).
async fn insert_current(db: &Db) -> Result<(), sqlx::Error> {
    let kid = hex(&rand::random::<[u8; 6]>());
    let secret = hex(&rand::random::<[u8; 32]>());
    on_pool!(write, db, |p| {
        sqlx::query(
        "INSERT INTO form_keys (kid, secret, slot, created_ms) VALUES ($1, $2, 'current', $3) ON CONFLICT DO NOTHING"
    )
    .bind(kid)
    .bind(secret)
    .bind(now_ms())
    .execute(p)
    .await
    .map(|_| ())?
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rotation_keeps_the_previous_key_verifying() {
        let db = Db::open("sqlite::memory:").await.unwrap();
        let keys = FormKeys::from_db(db.clone()).await.unwrap();
        let (old_kid, old_tag) = keys.sign(str::to_string);
        assert!(keys.verify(&old_kid, old_kid.as_bytes(), &old_tag).await);
        assert!(!keys.verify(&old_kid, b"other", &old_tag).await);
        // Another replica, on the same database, uses the same key.
        let other = FormKeys::from_db(db.clone()).await.unwrap();
        assert!(other.verify(&old_kid, old_kid.as_bytes(), &old_tag).await);

        let new_kid = FormKeys::rotate(&db).await.unwrap();
        assert_ne!(new_kid, old_kid);
        keys.refresh().await.unwrap();
        let (kid, tag) = keys.sign(str::to_string);
        assert_eq!(kid, new_kid);
        assert!(keys.verify(&kid, kid.as_bytes(), &tag).await);
        let retired = keys.verify(&old_kid, old_kid.as_bytes(), &old_tag);
        assert!(retired.await, "a retired key still verifies");
        // The replica that has not refreshed yet learns the new id on first sight.
        assert!(other.verify(&kid, kid.as_bytes(), &tag).await);
        assert!(!other.verify("nope", kid.as_bytes(), &tag).await);
    }

    #[test]
    fn configured_keys_sign_with_the_first_and_refuse_short_ones() {
        let one = "a".repeat(MIN_KEY_CHARS);
        let two = "b".repeat(MIN_KEY_CHARS);
        let old = FormKeys::configured(&SecretString::from(two.clone())).unwrap();
        let both = FormKeys::configured(&SecretString::from(format!("{one},{two}"))).unwrap();
        let (kid, tag) = old.sign(str::to_string);
        assert!(both.verify_known(&kid, kid.as_bytes(), &tag).unwrap());
        assert_ne!(both.sign(str::to_string).0, kid, "the first key signs");
        let short = FormKeys::configured(&SecretString::from("short".to_string()));
        assert!(short.unwrap_err().contains("KEYDESK_SECRET_KEY"));
        assert!(!format!("{both:?}").contains(&one), "no secret in Debug");
    }
}
