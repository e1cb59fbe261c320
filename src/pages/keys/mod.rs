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
    /// When the owner claimed it through a link: who granted it. The owner
    /// may have no role, so the page links nowhere else.
    pub claimed_from: Option<Claimed>,
}

/// A key its owner claimed through a link: who granted it, and the link.
pub struct Claimed {
    pub granted_by: String,
    pub grant_id: String,
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
    /// Where "I have copied the key" goes: the user's keys, or for a claim
    /// (whose owner may see no staff page) the top of this page's origin.
    pub fn done_href(&self) -> String {
        match &self.claimed_from {
            Some(c) => paths::claim(&c.grant_id),
            None => self.user_keys_href(),
        }
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
    reveal_to(ctx, user, created, replaces, None).await
}

/// `reveal`, naming who granted the key when its owner claimed it.
pub async fn reveal_to(
    ctx: &Ctx,
    user: User,
    created: CreatedApiKey,
    replaces: Option<ApiKey>,
    claimed_from: Option<Claimed>,
) -> Response {
    tracing::info!(key.id = %created.id, rotation = replaces.is_some(), "key created");
    metrics::counter!("keydesk_keys_created_total").increment(1);
    let view = KeyCreateView {
        layout: ctx.layout().await,
        user,
        key: created.summary(),
        secret: created.api_key,
        replaces,
        claimed_from,
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
