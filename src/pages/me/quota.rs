//! Each person's quota of "My keys" forms (`KEYDESK_ME_POSTS_*`), as the
//! first extractor of every `POST /me/...`: over it, the answer is a 429
//! page with `Retry-After`, before the session, the form or Vultr is
//! touched. Nothing is written, nothing sent.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;
use crate::identity::Identity;
use crate::state::AppState;

/// This form is within its sender's quota.
pub struct WithinQuota;

impl FromRequestParts<AppState> for WithinQuota {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let who = Identity::from_request_parts(parts, state).await?;
        let Err(wait) = state.me_posts.take(&who.email) else {
            return Ok(WithinQuota);
        };
        metrics::counter!("keydesk_me_posts_limited_total").increment(1);
        let secs = wait.as_secs();
        Err(AppError::TooMany(
            format!(
                "You sent more forms on “My keys” in a short time than keydesk takes from one person. Nothing was done and nothing was sent to Vultr. Wait {secs} s, then open “My keys” again."
            ),
            secs,
        )
        .into_response())
    }
}
