//! "My keys": `GET /me`, a key owner's own Vultr user and keys. An owner is
//! anyone signed in whose identity is the email of a Vultr user of the
//! account (compared normalised), with or without a staff role. The user
//! always comes from the signed-in identity, never from the URL or the form:
//! an owner can act on their own keys only. Revoking (`revoke`) never waits
//! for approval and is allowed under a hold; new keys (`keys`) follow
//! `KEYDESK_SELF_SERVICE`.

mod keys;
mod quota;
mod revoke;

pub use keys::{new_key_form, new_key_submit, rotate_form, rotate_submit};
pub use quota::WithinQuota;
pub use revoke::{revoke_confirm, revoke_submit};

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

use super::{Layout, render};
use crate::approvals::Approval;
use crate::audit::{AuditAction, Entry, Intent, Outcome};
use crate::error::AppError;
use crate::grants::Grant;
use crate::holds::Hold;
use crate::ids::VultrId;
use crate::notify::NoticeRow;
use crate::self_service::SelfService;
use crate::user_record::UserRecord;
use crate::vultr::{ApiKey, User};
use crate::write::{Claimed, Ctx};

/// The audit role of an owner acting on their own keys: the self-service marker.
pub const SELF_SERVICE: &str = "self-service";

#[derive(Template)]
#[template(path = "me/show.html")]
pub struct MeView {
    pub layout: Layout,
    pub user: User,
    pub keys: Vec<ApiKey>,
    pub notices: std::collections::HashMap<String, NoticeRow>,
    pub grants: Vec<Grant>,
    pub approvals: Vec<Approval>,
    pub hold: Option<Hold>,
    pub history: Vec<Entry>,
    /// `KEYDESK_SELF_SERVICE`: whether the request and rotate forms exist.
    pub self_service: SelfService,
    /// The signed-in person, to link the requests they made.
    pub me: String,
    /// "Keys to confirm": this owner's items in open self-reviews, and
    /// each review's form token.
    pub to_confirm: Vec<(crate::reviews::Review, crate::reviews::Item)>,
    /// One form token per item (each item is its own form).
    pub confirm_tokens: std::collections::HashMap<(i64, String), String>,
}

impl MeView {
    pub fn last_notice(&self, key_id: &str) -> Option<&NoticeRow> {
        self.notices.get(key_id)
    }
    /// New keys can be asked for here: self-service on, and no hold.
    pub fn can_ask(&self) -> bool {
        self.self_service.enabled() && self.hold.is_none()
    }
    pub fn asked_by_me(&self, a: &Approval) -> bool {
        a.is_requester(&self.me)
    }
    pub fn confirm_token(&self, review: &i64, key: &str) -> &str {
        self.confirm_tokens
            .get(&(*review, key.to_string()))
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// The signed-in person's Vultr user, found in the users list as cached:
/// a form from someone who is no owner costs the shared Vultr budget
/// nothing. None, or several: a 403 page in words.
pub(super) async fn owner(ctx: &Ctx) -> Result<User, AppError> {
    let users = ctx.state.vultr.list_all_users().await?;
    let mut mine = users.into_iter().filter(|u| {
        u.email
            .as_deref()
            .is_some_and(|e| crate::email::same_email(e, &ctx.who.email))
    });
    match (mine.next(), mine.next()) {
        (Some(user), None) => Ok(user),
        (Some(_), Some(_)) => Err(AppError::Forbidden(format!(
            "More than one Vultr user of this account has the email {}, so keydesk cannot tell which keys are yours. Ask the keydesk operators to sort it out in Vultr.",
            ctx.who.email
        ))),
        (None, _) => Err(no_user(ctx)),
    }
}

fn no_user(ctx: &Ctx) -> AppError {
    AppError::Forbidden(format!(
        "You are signed in as {}, and no Vultr user of this account has that email, so there are no keys of yours here. If you expected some, ask the keydesk operators (or whoever manages your company's Vultr account) to check the email of your Vultr user.",
        ctx.who.email
    ))
}

/// Once a form's token is claimed: the owner `cached` as Vultr reports them
/// now (one uncached `GET /v2/users/{id}`), since the email may have changed
/// since the list was read. Changed: the form is given back and refused.
pub(super) async fn owner_now(
    ctx: &Ctx,
    claim: &Claimed<'_>,
    cached: &User,
) -> Result<User, AppError> {
    let id = VultrId::parse(&cached.id)?;
    let user = claim
        .prepare(ctx.state.vultr.get_user_now(&id).await)
        .await?;
    let same = user
        .email
        .as_deref()
        .is_some_and(|e| crate::email::same_email(e, &ctx.who.email));
    if same {
        return Ok(user);
    }
    claim.release_ref().await;
    // The cached list is out of date: the next page reads it anew.
    ctx.state.vultr.invalidate_lists();
    Err(no_user(ctx))
}

/// `GET /me`: the owner's user, keys, claim links, requests and history.
#[tracing::instrument(skip_all)]
pub async fn me_show(ctx: Ctx) -> Result<Response, AppError> {
    let user = owner(&ctx).await?;
    let id = VultrId::parse(&user.id)?;
    let (keys, record, approvals) = tokio::join!(
        ctx.state.vultr.list_keys(&id),
        UserRecord::read(&ctx.state.db, id.as_str()),
        ctx.state.approvals.for_user(id.as_str()),
    );
    let record = record.map_err(AppError::store)?;
    let to_confirm = ctx
        .state
        .reviews
        .owner_items(&ctx.who.email)
        .await
        .map_err(AppError::store)?;
    let mut confirm_tokens = std::collections::HashMap::new();
    for (review, item) in &to_confirm {
        let scope = crate::idempotency::Scope::ReviewDecide(review.id);
        let token = ctx.issue(scope).await?;
        confirm_tokens.insert((review.id, item.key_id.clone()), token);
    }
    let mut keys = keys?;
    keys.sort_by(|a, b| a.name_or_dash().cmp(b.name_or_dash()));
    let view = MeView {
        layout: ctx.layout().await,
        user,
        keys,
        notices: record.notices,
        grants: record.grants,
        approvals: approvals.map_err(AppError::store)?,
        hold: record.hold,
        history: record.history,
        self_service: ctx.state.self_service,
        me: ctx.who.email.clone(),
        to_confirm,
        confirm_tokens,
    };
    Ok(render(StatusCode::OK, &view))
}

/// The owner's key `key_id`, read now: refused (403, audited) when it is not
/// one of theirs, whoever's it is.
pub(super) async fn own_key(ctx: &Ctx, user: &User, key_id: &VultrId) -> Result<ApiKey, AppError> {
    let id = VultrId::parse(&user.id)?;
    let keys = ctx.state.vultr.list_keys(&id).await?;
    if let Some(key) = keys.into_iter().find(|k| k.id == key_id.as_str()) {
        return Ok(key);
    }
    let intent = Intent {
        key_id: Some(key_id.to_string()),
        reason: Some("self-service: not one of the owner's keys".into()),
        ..ctx.intent(AuditAction::AccessDenied)
    };
    ctx.state.audit.record(&intent, Outcome::Failed).await;
    Err(AppError::Forbidden(
        "That is not one of your keys. Here you can act on your own keys only.".into(),
    ))
}
