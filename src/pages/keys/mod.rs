//! A user's API keys: create (shown once), rotate, revoke. One file per flow;
//! this one holds what create and rotate share: the reveal and the replay page.

pub mod add;
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
    /// Made on "My keys": the page links back there, never to staff pages.
    pub for_owner: bool,
    /// What the key can do and from where (none when unreadable just now).
    pub capability: Option<crate::powers::Capability>,
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
    /// or an owner's own key (who may see no staff page) where they came from.
    pub fn done_href(&self) -> String {
        match &self.claimed_from {
            Some(c) => paths::claim(&c.grant_id),
            None if self.for_owner => paths::ME.to_string(),
            None => self.user_keys_href(),
        }
    }
    /// The reveal is `Referrer-Policy: no-referrer`, so a form there would
    /// post `Origin: null`: the old key is retired through the normal
    /// confirmation, linked here.
    pub fn revoke_old_href(&self, old: &ApiKey) -> String {
        if self.for_owner {
            return paths::my_key_revoke(&old.id);
        }
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
    show_once(ctx, user, created, replaces, None, false).await
}

/// `reveal`, for an owner's own key made on "My keys".
pub async fn reveal_to_owner(
    ctx: &Ctx,
    user: User,
    created: CreatedApiKey,
    replaces: Option<ApiKey>,
) -> Response {
    show_once(ctx, user, created, replaces, None, true).await
}

/// `reveal`, naming who granted the key when its owner claimed it.
pub async fn reveal_to(
    ctx: &Ctx,
    user: User,
    created: CreatedApiKey,
    replaces: Option<ApiKey>,
    claimed_from: Option<Claimed>,
) -> Response {
    show_once(ctx, user, created, replaces, claimed_from, false).await
}

async fn show_once(
    ctx: &Ctx,
    user: User,
    created: CreatedApiKey,
    replaces: Option<ApiKey>,
    claimed_from: Option<Claimed>,
    for_owner: bool,
) -> Response {
    tracing::info!(key.id = %created.id, rotation = replaces.is_some(), "key created");
    metrics::counter!("keydesk_keys_created_total").increment(1);
    let capability = super::capability::of(&ctx.state, &user).await.ok();
    let view = KeyCreateView {
        capability,
        layout: ctx.layout().await,
        user,
        key: created.summary(),
        secret: created.api_key,
        replaces,
        claimed_from,
        for_owner,
    };
    let mut resp = render(StatusCode::OK, &view);
    no_store(&mut resp);
    resp
}

#[derive(Template)]
#[template(path = "keys/replay.html")]
pub struct KeyReplayView {
    pub layout: Layout,
    /// Back to the user's keys, or to "My keys" for an owner.
    pub back_href: String,
    pub key_id: Option<String>,
}

/// "Already created, cannot be shown again": the answer to any replayed
/// create or rotate form. Never holds the secret.
pub async fn replay(ctx: &Ctx, user_id: &VultrId, key_id: Option<String>) -> Response {
    replay_to(ctx, paths::user_keys_list(user_id.as_str()), key_id).await
}

/// `replay`, linking back to `back_href`.
pub async fn replay_to(ctx: &Ctx, back_href: String, key_id: Option<String>) -> Response {
    let view = KeyReplayView {
        layout: ctx.layout().await,
        back_href,
        key_id,
    };
    let mut resp = render(StatusCode::CONFLICT, &view);
    no_store(&mut resp);
    resp
}
