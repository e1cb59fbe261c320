//! The browser session, as a typed bucket: bound to one SSO identity, and
//! holding nothing but that binding and a one-off notice. Never a secret.

use tower_sessions::Session;

use crate::identity::Identity;

const FLASH_KEY: &str = "keydesk.flash";
const IDENTITY_KEY: &str = "keydesk.identity";
const BINDING_KEY: &str = "keydesk.binding";

/// A notice shown once after a redirect. Never holds a secret.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Flash {
    pub kind: String,
    pub text: String,
}

/// How often an unchanged session is saved anyway, to keep it alive.
const TOUCH_EVERY_SECS: i64 = 3600;
const TOUCHED_KEY: &str = "keydesk.touched";

/// A session belongs to one SSO identity: if the proxy now says someone else,
/// start a fresh session so nothing (a notice, a form token) crosses over.
/// A page that stores nothing creates no session (a monitor or a script
/// without cookies leaves no trace); an existing one is kept alive.
pub async fn bind(who: &Identity, session: &Session) {
    if session.id().is_some() {
        bind_or_create(who, session).await;
    }
}

async fn bind_or_create(who: &Identity, session: &Session) {
    let bound = session.get::<String>(IDENTITY_KEY).await.ok().flatten();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if bound.as_deref() != Some(who.email.as_str()) {
        if bound.is_some() {
            let _ = session.flush().await;
        }
        let _ = session.insert(IDENTITY_KEY, &who.email).await;
        let _ = session.insert(TOUCHED_KEY, now).await;
        return;
    }
    // Only a write extends the expiry: write at most once an hour.
    let touched = session.get::<i64>(TOUCHED_KEY).await.ok().flatten();
    if touched.is_none_or(|t| now - t >= TOUCH_EVERY_SECS) {
        let _ = session.insert(TOUCHED_KEY, now).await;
    }
}

/// The random value that binds this person's forms to this browser session,
/// creating it (and the session, on a first visit) when there is none. The
/// session is written once, by the session layer after the response; the
/// session id itself is never needed, nor stored with a token.
pub async fn ensure_binding(who: &Identity, session: &Session) -> Option<String> {
    bind_or_create(who, session).await;
    if let Some(b) = binding(session).await {
        return Some(b);
    }
    let fresh = uuid::Uuid::new_v4().simple().to_string();
    match session.insert(BINDING_KEY, &fresh).await {
        Ok(()) => Some(fresh),
        Err(e) => {
            tracing::warn!(error = %e, "could not bind the form to the session");
            None
        }
    }
}

/// This browser session's form binding, if it has one.
pub async fn binding(session: &Session) -> Option<String> {
    session.get::<String>(BINDING_KEY).await.ok().flatten()
}

/// Takes the pending notice, if any (a session without one is not written).
pub async fn take_flash(session: &Session) -> Option<Flash> {
    session.get::<Flash>(FLASH_KEY).await.ok().flatten()?;
    session.remove::<Flash>(FLASH_KEY).await.ok().flatten()
}

/// Queues a notice for the next page.
pub async fn put_flash(who: &Identity, session: &Session, kind: &str, text: String) {
    bind_or_create(who, session).await;
    let flash = Flash {
        kind: kind.to_string(),
        text,
    };
    if let Err(e) = session.insert(FLASH_KEY, flash).await {
        tracing::warn!(error = %e, "could not store flash notice");
    }
}
