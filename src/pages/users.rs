//! Users list and the user page (details, keys, add-key form, history).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{Layout, render, session_id};
use crate::app::AppState;
use crate::audit::{Entry, Filter};
use crate::audit::{Intent, Outcome};
use crate::error::AppError;
use crate::idempotency::Claim;
use crate::identity::{Identity, Operator};
use crate::pages::keys::KeyForm;
use crate::vultr::{ApiKey, User, valid_id};

#[derive(Deserialize, Default)]
pub struct UsersQuery {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    refresh: Option<String>,
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    dir: Option<String>,
    #[serde(default)]
    page: Option<String>,
}

#[derive(Template)]
#[template(path = "users/list.html")]
pub struct UsersView {
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

fn enc(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl UsersView {
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
        format!("/users?cursor={}", enc(cursor))
    }

    pub fn page_href(&self, page: usize) -> String {
        let q = self.query(&self.sort, self.desc);
        format!(
            "/users?{q}{}page={page}",
            if q.is_empty() { "" } else { "&" }
        )
    }

    /// Header link: sorts by `key`, flipping the direction when already sorted by it.
    pub fn sort_href(&self, key: &str) -> String {
        let desc = self.sort == key && !self.desc;
        format!("/users?{}", self.query(key, desc))
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

pub async fn index() -> Redirect {
    Redirect::to("/users")
}

/// `GET /users`: one upstream page per screen, or every page when searching.
#[tracing::instrument(skip_all)]
pub async fn list_users(
    State(state): State<AppState>,
    who: Identity,
    session: Session,
    Query(query): Query<UsersQuery>,
) -> Result<Response, AppError> {
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
    let layout = Layout::new(&who, &session).await;
    let mut view = UsersView {
        layout,
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
pub struct UserView {
    pub layout: Layout,
    pub user: User,
    pub keys: Vec<ApiKey>,
    pub form: KeyForm,
    pub history: Vec<Entry>,
}

impl UserView {
    pub fn delete_href(&self, k: &ApiKey) -> String {
        format!("/users/{}/keys/{}/delete", self.user.id, k.id)
    }
}

/// Rejects ids that are not plain Vultr ids before anything is sent upstream.
pub fn check_id(id: &str) -> Result<(), AppError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(AppError::BadRequest(
            "That is not a valid Vultr id. Nothing was sent to Vultr.".into(),
        ))
    }
}

/// `GET /users/{id}`.
#[tracing::instrument(skip_all, fields(vultr.user_id = %id))]
pub async fn show_user(
    State(state): State<AppState>,
    who: Identity,
    session: Session,
    Path(id): Path<String>,
    Query(query): Query<UsersQuery>,
) -> Result<Response, AppError> {
    check_id(&id)?;
    if query.refresh.is_some() {
        state.vultr.invalidate_user(&id);
    }
    let form = KeyForm::blank(
        state
            .tokens
            .issue(&who.email, &KeyForm::scope(&id), session_id(&session)),
        &state.policy,
    );
    let layout = Layout::new(&who, &session).await;
    user_page(&state, layout, &id, form, StatusCode::OK).await
}

/// Renders the user page with `form` (fresh, or re-rendered with errors).
pub async fn user_page(
    state: &AppState,
    layout: Layout,
    id: &str,
    form: KeyForm,
    status: StatusCode,
) -> Result<Response, AppError> {
    // User, keys and the local history in parallel: one upstream round trip of latency.
    let history_filter = Filter {
        user: Some(id.to_string()),
        ..Default::default()
    };
    let (user, keys, history) = tokio::join!(
        state.vultr.get_user(id),
        state.vultr.list_keys(id),
        state.audit.list(&history_filter, 10, 0)
    );
    let (user, mut keys) = (user?, keys?);
    keys.sort_by(|a, b| a.name_or_dash().cmp(b.name_or_dash()));
    let history = history.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "audit history unavailable for the user page");
        Vec::new()
    });
    Ok(render(
        status,
        &UserView {
            layout,
            user,
            keys,
            form,
            history,
        },
    ))
}

/// `GET /users/{id}/keys`: the keys live on the user page. Also where a
/// reload of the create POST as a GET lands: never a reveal.
pub async fn keys_anchor(Path(id): Path<String>) -> Result<Response, AppError> {
    check_id(&id)?;
    Ok(Redirect::to(&format!("/users/{id}#keys")).into_response())
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

/// The incident brake: switching a user's API access off (and on again).
#[derive(Template)]
#[template(path = "users/api_access.html")]
pub struct ApiAccessView {
    pub layout: Layout,
    pub user: User,
    /// The state this confirmation will set.
    pub enable: bool,
    pub token: String,
    pub notice: Option<String>,
    pub require_reason: bool,
}

fn api_access_scope(id: &str, enable: bool) -> String {
    format!("api-access:{id}:{enable}")
}

async fn api_access_page(
    state: &AppState,
    who: &Identity,
    session: &Session,
    id: &str,
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let user = state.vultr.get_user(id).await?;
    let enable = !user.api_access();
    let token = state.tokens.issue(
        &who.email,
        &api_access_scope(id, enable),
        session_id(session),
    );
    let layout = Layout::new(who, session).await;
    Ok(render(
        status,
        &ApiAccessView {
            layout,
            user,
            enable,
            token,
            notice,
            require_reason: state.policy.require_reason,
        },
    ))
}

/// `GET /users/{id}/api-access`: confirm switching API access off (or on).
pub async fn confirm_api_access(
    State(state): State<AppState>,
    Operator(who): Operator,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    check_id(&id)?;
    api_access_page(&state, &who, &session, &id, None, StatusCode::OK).await
}

#[derive(Deserialize, Default)]
pub struct ApiAccessInput {
    #[serde(default)]
    enabled: Option<String>,
    #[serde(default)]
    form_token: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /users/{id}/api-access`: `PATCH /v2/users/{id}` with `api_enabled`, audited.
pub async fn set_api_access(
    State(state): State<AppState>,
    Operator(who): Operator,
    session: Session,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    axum::Form(input): axum::Form<ApiAccessInput>,
) -> Result<Response, AppError> {
    check_id(&id)?;
    let enable = match input.enabled.as_deref() {
        Some("true") => true,
        Some("false") => false,
        _ => {
            return Err(AppError::BadRequest(
                "Say whether API access should be on or off.".into(),
            ));
        }
    };
    let reason = match crate::pages::keys::check_reason(input.reason.as_deref(), &state.policy) {
        Ok(r) => r,
        Err(e) => {
            return api_access_page(
                &state,
                &who,
                &session,
                &id,
                Some(e),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let token = input.form_token.unwrap_or_default();
    match state.tokens.claim(
        &token,
        &who.email,
        &api_access_scope(&id, enable),
        session_id(&session).as_deref(),
    ) {
        Claim::Claimed => {}
        Claim::Replay { .. } => {
            return Ok(Redirect::to(&super::user_href(&id)).into_response());
        }
        Claim::Invalid => {
            super::record_forgery(&state, &who, &headers, &id, None).await;
            return api_access_page(
                &state,
                &who,
                &session,
                &id,
                Some(
                    "That confirmation has expired or was not issued to you. Confirm again.".into(),
                ),
                StatusCode::FORBIDDEN,
            )
            .await;
        }
    }
    let user = state
        .tokens
        .release_on_err(&token, state.vultr.get_user(&id).await)?;
    let intent = Intent {
        target_user_id: Some(id.clone()),
        target_user_email: user.email.clone(),
        key_name: Some(format!("api_enabled={enable}")),
        reason,
        ..who.intent("user.api_access", &headers)
    };
    let audit_id = state
        .tokens
        .release_on_err(&token, state.audit.intent(&intent).await)?;
    match state.vultr.set_api_enabled(&id, enable).await {
        Ok(()) => {
            state.tokens.complete(&token, None);
            state
                .audit
                .settle(audit_id, Outcome::Ok, None, None, None)
                .await;
            super::flash(
                &session,
                &who,
                "ok",
                if enable {
                    "API access switched on: the user's keys work again.".into()
                } else {
                    "API access switched off: Vultr now refuses all of this user's keys.".into()
                },
            )
            .await;
            Ok(Redirect::to(&super::user_href(&id)).into_response())
        }
        Err(e) => Err(super::upstream_failed(&state, audit_id, &token, &id, e).await),
    }
}
