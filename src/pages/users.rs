//! Users list and the user page (details, keys, add-key form, history).

use askama::Template;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::paths::{self, UserPath, enc};
use super::{Layout, render};
use crate::audit::Entry;
use crate::error::AppError;
use crate::idempotency::Scope;
use crate::identity::Staff;
use crate::ids::VultrId;
use crate::policy::KeyForm;
use crate::user_record::UserRecord;
use crate::vultr::{ApiKey, User};
use crate::write::Ctx;

#[derive(Deserialize, Default)]
pub struct UsersQuery {
    cursor: Option<String>,
    q: Option<String>,
    refresh: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    page: Option<String>,
}

#[derive(Template)]
#[template(path = "users/list.html")]
pub struct UsersListView {
    pub layout: Layout,
    pub users: Vec<User>,
    pub q: String,
    /// `name`, `email`, `activity`, or empty for Vultr's order.
    pub sort: String,
    pub desc: bool,
    pub total: Option<u64>,
    pub shown_note: String,
    /// Links to the next and previous page, keeping search and sort.
    pub next: Option<String>,
    pub prev: Option<String>,
}

impl UsersListView {
    fn query(&self, sort: &str, desc: bool) -> String {
        let mut parts = Vec::new();
        if !self.q.is_empty() {
            parts.push(format!("q={}", enc(&self.q)));
        }
        if !sort.is_empty() {
            parts.push(format!("sort={sort}"));
            if desc {
                parts.push("dir=desc".into());
            }
        }
        parts.join("&")
    }

    pub fn cursor_href(&self, cursor: &str) -> String {
        format!("{}?cursor={}", paths::USERS, enc(cursor))
    }

    pub fn page_href(&self, page: usize) -> String {
        let q = self.query(&self.sort, self.desc);
        format!(
            "{}?{q}{}page={page}",
            paths::USERS,
            if q.is_empty() { "" } else { "&" }
        )
    }

    /// Header link: sorts by `key`, flipping the direction when already sorted by it.
    pub fn sort_href(&self, key: &str) -> String {
        let desc = self.sort == key && !self.desc;
        format!("{}?{}", paths::USERS, self.query(key, desc))
    }

    /// `aria-sort` value for a column.
    pub fn aria_sort(&self, key: &str) -> &'static str {
        match (self.sort == key, self.desc) {
            (false, _) => "none",
            (true, false) => "ascending",
            (true, true) => "descending",
        }
    }

    pub fn arrow(&self, key: &str) -> &'static str {
        match (self.sort == key, self.desc) {
            (false, _) => "",
            (true, false) => " ▲",
            (true, true) => " ▼",
        }
    }
}

/// `GET /`: staff to the users list, a key owner with no role to their keys.
pub async fn index(who: crate::identity::Identity) -> Redirect {
    match who.role {
        crate::identity::Role::Claimant => Redirect::to(paths::ME),
        _ => Redirect::to(paths::USERS),
    }
}

/// `GET /users`: one upstream page per screen, or every page when searching.
#[tracing::instrument(skip_all)]
pub async fn users_list(
    Staff(_): Staff,
    ctx: Ctx,
    Query(query): Query<UsersQuery>,
) -> Result<Response, AppError> {
    let state = &ctx.state;
    let q = query.q.as_deref().map(str::trim).unwrap_or("").to_string();
    if q.chars().count() > 200 || q.chars().any(char::is_control) {
        return Err(AppError::BadRequest(
            "The search text is too long or contains control characters.".into(),
        ));
    }
    let cursor = query.cursor.filter(|c| !c.is_empty());
    if let Some(c) = &cursor
        && (c.len() > 512 || c.chars().any(char::is_control))
    {
        return Err(AppError::BadRequest(
            "That page cursor is not valid.".into(),
        ));
    }
    let sort = match query.sort.as_deref().unwrap_or("") {
        "" => None,
        s @ ("name" | "email" | "activity") => Some(s.to_string()),
        _ => return Err(AppError::BadRequest("Unknown sort column.".into())),
    };
    let desc = query.dir.as_deref() == Some("desc");
    if query.refresh.is_some() {
        state.vultr.invalidate_lists();
    }
    let mut view = UsersListView {
        layout: ctx.layout().await,
        users: vec![],
        q: q.clone(),
        sort: sort.clone().unwrap_or_default(),
        desc,
        total: None,
        shown_note: String::new(),
        next: None,
        prev: None,
    };
    if q.is_empty() && sort.is_none() {
        // Plain browsing: one upstream page per screen, Vultr's cursor.
        let page = state
            .vultr
            .list_users(state.page_size, cursor.as_deref())
            .await?;
        let shown = page.users.len();
        view.total = page.meta.total;
        view.shown_note = match page.meta.total {
            Some(t) => format!("{} user{} in the account", fmt_count(t), plural(t)),
            None => format!("{shown} users on this page"),
        };
        view.next = page.next_cursor().map(|c| view.cursor_href(&c));
        view.prev = page.prev_cursor().map(|c| view.cursor_href(&c));
        view.users = page.users;
    } else {
        // Search and sort must see every page, not just the current one.
        let needle = q.to_lowercase();
        let mut matches: Vec<User> = state
            .vultr
            .list_all_users()
            .await?
            .into_iter()
            .filter(|u| needle.is_empty() || u.matches(&needle))
            .collect();
        match sort.as_deref() {
            Some("email") => {
                matches.sort_by_key(|u| u.email.clone().unwrap_or_default().to_lowercase())
            }
            Some("activity") => matches.sort_by_key(User::last_activity_ts),
            Some(_) => matches.sort_by_key(|u| u.display_name().to_lowercase()),
            None => {}
        }
        if desc {
            matches.reverse();
        }
        let n = matches.len();
        let per = state.page_size as usize;
        let pages = n.div_ceil(per).max(1);
        let page = query
            .page
            .as_deref()
            .and_then(|p| p.parse::<usize>().ok())
            .filter(|p| (1..=pages).contains(p))
            .unwrap_or(1);
        view.total = Some(n as u64);
        view.shown_note = if q.is_empty() {
            format!(
                "{} user{} in the account",
                fmt_count(n as u64),
                plural(n as u64)
            )
        } else {
            format!(
                "{} match{}",
                fmt_count(n as u64),
                if n == 1 { "" } else { "es" }
            )
        };
        if pages > 1 {
            view.shown_note
                .push_str(&format!(" · page {page} of {pages}"));
        }
        view.next = (page < pages).then(|| view.page_href(page + 1));
        view.prev = (page > 1).then(|| view.page_href(page - 1));
        view.users = matches
            .into_iter()
            .skip((page - 1) * per)
            .take(per)
            .collect();
    }
    Ok(render(StatusCode::OK, &view))
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `1204` → `1,204`.
pub fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Template)]
#[template(path = "users/show.html")]
pub struct UserShowView {
    pub layout: Layout,
    pub user: User,
    pub keys: Vec<ApiKey>,
    pub form: KeyForm,
    pub history: Vec<Entry>,
    /// Claim links of this user not yet used (pending, or being settled).
    pub grants: Vec<crate::grants::Grant>,
    /// The last expiry notice sent about each key, by key id.
    pub notices: std::collections::HashMap<String, crate::notify::NoticeRow>,
    /// The offboarding hold, while it stands.
    pub hold: Option<crate::holds::Hold>,
    /// The latest offboarding run, while it runs or when it did not finish.
    pub offboarding: Option<crate::offboardings::Offboarding>,
    /// Lost creates: keys that appeared while an answer was lost, and the
    /// ambiguous ones with their candidates.
    pub lost: crate::reconcile::lost::LostView,
    /// What a key of this user can do, and from where.
    pub cap: crate::powers::Capability,
    /// The allowlist could not be read just now (shown as such, never as empty).
    pub allowlist_unread: bool,
}

impl UserShowView {
    /// The keys a stored, ambiguous lost create may be.
    pub fn candidates(&self, stored: Option<&str>) -> Vec<crate::reconcile::Candidate> {
        crate::reconcile::Candidate::parse_list(stored)
    }

    /// Whether this key appeared while a create's answer was lost.
    pub fn appeared_while_lost(&self, key_id: &str) -> bool {
        self.lost.appeared.contains(key_id)
    }

    pub fn last_notice(&self, key_id: &str) -> Option<&crate::notify::NoticeRow> {
        self.notices.get(key_id)
    }
}

/// `GET /users/{id}`: details, keys, the add-key form and recent history.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id))]
pub async fn user_show(
    Staff(_): Staff,
    ctx: Ctx,
    UserPath(id): UserPath,
    Query(query): Query<UsersQuery>,
) -> Result<Response, AppError> {
    if query.refresh.is_some() {
        ctx.state.vultr.invalidate_user(&id);
    }
    let form = KeyForm::blank(ctx.issue(Scope::CreateKey(&id)).await?, &ctx.state.policy);
    user_page(&ctx, &id, form, StatusCode::OK).await
}

/// Renders the user page with `form` (fresh, or re-rendered with errors).
pub async fn user_page(
    ctx: &Ctx,
    id: &VultrId,
    mut form: KeyForm,
    status: StatusCode,
) -> Result<Response, AppError> {
    let state = &ctx.state;
    form.policy_notes.extend(state.approval.describe_keys());
    // User, keys and what keydesk knows of them (one read transaction) in
    // parallel: one upstream round trip of latency.
    let (user, keys, record, allowlist) = tokio::join!(
        state.vultr.get_user(id),
        state.vultr.list_keys(id),
        UserRecord::read(&state.db, id.as_str()),
        state.vultr.allowlist(id),
    );
    // Unreadable, the hold is still enforced by the write path; say so here.
    let record = record.map_err(AppError::store)?;
    let offboarding = record.offboarding.filter(|o| o.running() || o.unfinished());
    let (user, mut keys) = (user?, keys?);
    let allowlist_unread = allowlist.is_err();
    let acls = user.acls.as_deref();
    let cap = crate::powers::Capability::of(&state.powers, acls, allowlist.unwrap_or_default());
    let lost = lost_creates(state, id, record.lost, &keys).await;
    keys.sort_by(|a, b| a.name_or_dash().cmp(b.name_or_dash()));
    let view = UserShowView {
        layout: ctx.layout().await,
        grants: open_grants(state, record.grants, &keys).await,
        notices: record.notices,
        hold: record.hold,
        offboarding,
        lost,
        user,
        keys,
        form,
        history: record.history,
        cap,
        allowlist_unread,
    };
    Ok(render(status, &view))
}

/// Settles the user's lost creates from `keys`; what is known of each.
async fn lost_creates(
    state: &crate::state::AppState,
    id: &VultrId,
    rows: Vec<crate::lost_creates::LostRow>,
    keys: &[ApiKey],
) -> crate::reconcile::lost::LostView {
    crate::reconcile::lost::view(&state.lost, &state.audit, id.as_str(), rows, keys)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "lost creates not reconciled on the user page");
            Default::default()
        })
}

/// The user's open claim links; a claim that lost its answer is settled from
/// `keys` first. Links past their time are left out (the upkeep records
/// their expiry within a minute).
async fn open_grants(
    state: &crate::state::AppState,
    mut open: Vec<crate::grants::Grant>,
    keys: &[ApiKey],
) -> Vec<crate::grants::Grant> {
    use crate::grants::GrantState;
    let unknown: Vec<_> = open
        .iter()
        .filter(|g| g.state == GrantState::Unknown)
        .cloned()
        .collect();
    for g in &unknown {
        crate::reconcile::claims::reconcile(&state.grants, &state.audit, g, keys).await;
    }
    if !unknown.is_empty()
        && let Some(first) = unknown.first()
        && let Ok(again) = state.grants.open_for_user(&first.user_id).await
    {
        open = again;
    }
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    open.retain(|g| g.state != GrantState::Pending || g.expires_ms > now);
    open
}

/// `GET /users/{id}/keys`: the keys live on the user page. Also where a
/// reload of the create POST as a GET lands: never a reveal.
pub async fn keys_anchor(Staff(_): Staff, UserPath(id): UserPath) -> Response {
    Redirect::to(&paths::user_keys_list(id.as_str())).into_response()
}

#[cfg(test)]
mod tests {
    use super::fmt_count;

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1204), "1,204");
        assert_eq!(fmt_count(1234567), "1,234,567");
    }
}
