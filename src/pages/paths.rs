//! keydesk's URLs both ways: typed helpers that build every link and form
//! action, and the path extractors that parse ids once (a bad id is a 400
//! page before anything else runs). The router in `app.rs` spells the same
//! paths as patterns.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::AppError;
use crate::ids::{InvalidId, VultrId};

pub const USERS: &str = "/users";
/// The signed-in person's own keys (self-service).
pub const ME: &str = "/me";
pub const MY_NEW_KEY: &str = "/me/keys/new";
pub const AUDIT: &str = "/audit";
pub const AUDIT_CSV: &str = "/audit.csv";
pub const AUDIT_JSONL: &str = "/audit.jsonl";
pub const KEYS_REPORT: &str = "/reports/keys";
pub const KEYS_REPORT_SCAN: &str = "/reports/keys/scan";
pub const PRIVILEGED: &str = "/reports/keys/privileged";
pub const PRIVILEGED_CSV: &str = "/reports/keys/privileged.csv";
pub const GRANTS: &str = "/grants";
pub const NOTICES: &str = "/notices";
pub const APPROVALS: &str = "/approvals";
pub const REVIEWS: &str = "/reviews";
pub const REVIEWS_NEW: &str = "/reviews/new";
pub const NOTICES_RUN: &str = "/notices/run";
pub const KEYS_REVOKE_EXPIRED: &str = "/reports/keys/revoke-expired";
/// OpenID mode: sign in, the provider's return, sign out, and after it.
pub const SIGN_IN: &str = "/auth/login";
pub const SIGN_IN_CALLBACK: &str = "/auth/callback";
pub const SIGN_OUT: &str = "/auth/logout";
pub const SIGNED_OUT: &str = "/auth/signed-out";

/// Everything but RFC 3986's unreserved characters is encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query value, every non-alphanumeric byte.
pub fn enc(v: &str) -> String {
    utf8_percent_encode(v, NON_ALPHANUMERIC).to_string()
}

/// Percent-encodes an id in a query: ids keep their `-` and `_` readable.
fn enc_id(v: &str) -> String {
    utf8_percent_encode(v, QUERY_VALUE).to_string()
}

/// `/users/{id}`: the user page.
pub fn user(id: &str) -> String {
    format!("/users/{id}")
}

/// `/users/{id}#keys`: the user's key list.
pub fn user_keys_list(id: &str) -> String {
    format!("/users/{id}#keys")
}

/// `/users/{id}?refresh=1`: the user page, fetched anew from Vultr.
pub fn user_refresh(id: &str) -> String {
    format!("/users/{id}?refresh=1")
}

/// `/users/{id}/keys`: where the add-key form posts.
pub fn key_create(id: &str) -> String {
    format!("/users/{id}/keys")
}

/// `/users/{id}/keys/{key}/rotate`.
pub fn key_rotate(id: &str, key: &str) -> String {
    format!("/users/{id}/keys/{key}/rotate")
}

/// `/users/{id}/keys/{key}/delete`: the revoke confirmation and its POST.
pub fn key_revoke(id: &str, key: &str) -> String {
    format!("/users/{id}/keys/{key}/delete")
}

/// The revoke confirmation of the old key of a rotation.
pub fn key_revoke_replaced(id: &str, key: &str, replaced_by: &str) -> String {
    format!(
        "/users/{id}/keys/{key}/delete?replaced_by={}",
        enc_id(replaced_by)
    )
}

/// `/users/{id}/api-access`: the brake's confirmation and its POST.
pub fn brake(id: &str) -> String {
    format!("/users/{id}/api-access")
}

/// `/users/{id}/reinstate`: lifting an offboarding hold, and its POST.
pub fn user_reinstate(id: &str) -> String {
    format!("/users/{id}/reinstate")
}

/// `/users/{id}/offboard`: the offboarding confirmation and its POST.
pub fn user_offboard(id: &str) -> String {
    format!("/users/{id}/offboard")
}

/// `/users/{id}/grants`: where the claim-link form posts.
pub fn grant_create(id: &str) -> String {
    format!("/users/{id}/grants")
}

/// `/claim/{grant}`: the owner's claim page (relative; see `AppState::link`).
pub fn my_key_revoke(key: &str) -> String {
    format!("/me/keys/{key}/revoke")
}

pub fn allowlist(user: &str) -> String {
    format!("/users/{user}/allowlist")
}

/// The confirmation of removing `subnet/size` (a GET; the POST goes to
/// `/users/{id}/allowlist/remove`).
pub fn allowlist_remove(user: &str, subnet: &str, size: &u32) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("subnet", subnet)
        .append_pair("subnet_size", &size.to_string())
        .finish();
    format!("/users/{user}/allowlist/remove?{q}")
}

pub fn allowlist_remove_post(user: &str) -> String {
    format!("/users/{user}/allowlist/remove")
}

pub fn my_key_rotate(key: &str) -> String {
    format!("/me/keys/{key}/rotate")
}

pub fn claim(grant: &str) -> String {
    format!("/claim/{grant}")
}

/// `/grants/{grant}/revoke`: the revoke confirmation and its POST.
pub fn grant_revoke(grant: &str) -> String {
    format!("/grants/{grant}/revoke")
}

/// `/approvals/{id}`: one approval request.
pub fn approval(id: &str) -> String {
    format!("/approvals/{id}")
}

/// `/approvals/{id}/{step}`: approve, deny or execute.
pub fn approval_step(id: &str, step: &str) -> String {
    format!("/approvals/{id}/{step}")
}

/// The audit trail of one group (an offboarding, a clean-up).
pub fn audit_group(group: impl std::fmt::Display) -> String {
    format!("/audit?group={group}")
}

/// `/reviews/{id}`: one access review.
pub fn review(id: impl std::fmt::Display) -> String {
    format!("/reviews/{id}")
}

/// `/reviews/{id}.csv` or `.jsonl`: a review's evidence.
pub fn review_export(id: impl std::fmt::Display, ext: &str) -> String {
    format!("/reviews/{id}.{ext}")
}

/// `/reviews/{id}/decide`: an operator's (bulk) decision.
pub fn review_decide(id: impl std::fmt::Display) -> String {
    format!("/reviews/{id}/decide")
}

/// `/reviews/{id}/end`: End review now.
pub fn review_end(id: impl std::fmt::Display) -> String {
    format!("/reviews/{id}/end")
}

/// `/me/reviews/{id}/decide`: an owner's decision on their own key.
pub fn my_review_decide(id: impl std::fmt::Display) -> String {
    format!("/me/reviews/{id}/decide")
}

/// The audit trail of one access review.
pub fn audit_of_review(id: impl std::fmt::Display) -> String {
    format!("/audit?review={id}")
}

/// The audit trail filtered to one user.
pub fn audit_of_user(id: &str) -> String {
    format!("/audit?user={}", enc_id(id))
}

fn bad_id(_: InvalidId) -> AppError {
    AppError::from(InvalidId)
}

/// `/users/{id}/…`: the user id, parsed.
pub struct UserPath(pub VultrId);

/// `/users/{id}/keys/{key_id}/…`: both ids, parsed.
pub struct KeyPath(pub VultrId, pub VultrId);

impl<S: Send + Sync> FromRequestParts<S> for UserPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| bad_id(InvalidId))?;
        Ok(UserPath(VultrId::parse(&raw).map_err(bad_id)?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path((user, key)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| bad_id(InvalidId))?;
        Ok(KeyPath(
            VultrId::parse(&user).map_err(bad_id)?,
            VultrId::parse(&key).map_err(bad_id)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_match_the_routes() {
        assert_eq!(user("u1"), "/users/u1");
        assert_eq!(key_create("u1"), "/users/u1/keys");
        assert_eq!(key_revoke("u1", "k1"), "/users/u1/keys/k1/delete");
        assert_eq!(key_rotate("u1", "k1"), "/users/u1/keys/k1/rotate");
        assert_eq!(
            key_revoke_replaced("u1", "k1", "k2"),
            "/users/u1/keys/k1/delete?replaced_by=k2"
        );
        assert_eq!(brake("u1"), "/users/u1/api-access");
        assert_eq!(audit_of_user("a b"), "/audit?user=a%20b");
    }
}
