//! A user's API keys: create (shown once), rotate, revoke. One file per flow;
//! this one holds what create and rotate share: the reveal and the replay page.

pub mod create;
pub mod revoke;
pub mod rotate;

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};

use super::{Layout, no_store, paths, render};
use crate::audit::{AuditAction, Intent};
use crate::ids::VultrId;
use crate::policy::KeyForm;
use crate::vultr::{ApiKey, CreatedApiKey, NewApiKey, User};
use crate::write::Ctx;

/// The audit intent of a new key (create or rotate) for `user`.
pub fn new_key_intent(
    ctx: &Ctx,
    action: AuditAction,
    user: &User,
    body: &NewApiKey,
    form: &KeyForm,
) -> Intent {
    Intent {
        target_user_id: Some(user.id.clone()),
        target_user_email: user.email.clone(),
        key_name: Some(body.name.clone()),
        requested_expiry: body.date_expire.clone(),
        reason: form.reason(),
        ..ctx.intent(action)
    }
}

/// The one page that ever shows a key. The secret is exposed at one place:
/// `secret()`, called by the template.
#[derive(Template)]
#[template(path = "keys/create.html")]
pub struct KeyCreateView {
    pub layout: Layout,
    pub user: User,
    pub key: ApiKey,
    secret: SecretString,
    /// When rotating: the old key, offered for revocation next.
    pub replaces: Option<ApiKey>,
}

impl KeyCreateView {
    pub fn secret(&self) -> &str {
        self.secret.expose_secret()
    }
    pub fn user_href(&self) -> String {
        paths::user(&self.user.id)
    }
    pub fn user_keys_href(&self) -> String {
        paths::user_keys_list(&self.user.id)
    }
    /// The reveal is `Referrer-Policy: no-referrer`, so a form there would
    /// post `Origin: null`: the old key is retired through the normal
    /// confirmation, linked here.
    pub fn revoke_old_href(&self, old: &ApiKey) -> String {
        paths::key_revoke_replaced(&self.user.id, &old.id, &self.key.id)
    }
}

/// Reveals a just-created key, once: `no-store`, never referred.
pub async fn reveal(
    ctx: &Ctx,
    user: User,
    created: CreatedApiKey,
    replaces: Option<ApiKey>,
) -> Response {
    tracing::info!(key.id = %created.id, rotation = replaces.is_some(), "key created");
    metrics::counter!("keydesk_keys_created_total").increment(1);
    let view = KeyCreateView {
        layout: ctx.layout().await,
        user,
        key: created.summary(),
        secret: created.api_key,
        replaces,
    };
    let mut resp = render(StatusCode::OK, &view);
    no_store(&mut resp);
    resp
}

#[derive(Template)]
#[template(path = "keys/replay.html")]
pub struct KeyReplayView {
    pub layout: Layout,
    pub user_id: VultrId,
    pub key_id: Option<String>,
}

impl KeyReplayView {
    pub fn user_keys_href(&self) -> String {
        paths::user_keys_list(self.user_id.as_str())
    }
}

/// "Already created, cannot be shown again": the answer to any replayed
/// create or rotate form. Never holds the secret.
pub async fn replay(ctx: &Ctx, user_id: &VultrId, key_id: Option<String>) -> Response {
    let view = KeyReplayView {
        layout: ctx.layout().await,
        user_id: user_id.clone(),
        key_id,
    };
    let mut resp = render(StatusCode::CONFLICT, &view);
    no_store(&mut resp);
    resp
}
