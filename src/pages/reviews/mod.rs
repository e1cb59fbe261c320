//! Access reviews, the pages: `GET /reviews` (each with its progress),
//! `GET|POST /reviews/new` (operators start one), `GET /reviews/{id}`
//! (progress by reviewer, filters, bulk decisions; `{id}.csv` and
//! `{id}.jsonl` are the evidence), `POST /reviews/{id}/decide`,
//! `POST /reviews/{id}/end` (End review now), and an owner's own decisions
//! from "My keys" (`POST /me/reviews/{id}/decide`).

pub mod apply;
pub mod close;
mod decide;
mod export;
mod mine;
mod new;
pub mod notices;
pub mod reconcile;
pub mod schedule;
mod show;
pub mod snapshot;

pub use decide::{review_decide, review_end};
pub use mine::{OWNER_ROLE, my_decide};
pub use new::{review_new_form, review_new_submit};
pub use show::{ItemFilter, review_show};

use std::collections::BTreeMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use super::me::WithinQuota;
use super::{Layout, paths, render};
use crate::audit::{AuditAction, Intent, Outcome, Settlement};
use crate::error::AppError;
use crate::idempotency::Scope as FormScope;
use crate::identity::{Operator, Staff};
use crate::policy::check_reason;
use crate::reviews::{Decided, Decision, Fallback, Item, NewReview, Review, Reviewers, Scope};
use crate::write::{Ctx, Refusal};

/// A review job this replica runs now (see `Reviews::running`).
pub(crate) struct Running;

impl Running {
    /// None when this replica already runs `job`.
    pub(crate) fn claim(
        state: &crate::state::AppState,
        job: &str,
    ) -> Option<crate::reviews::RunGuard> {
        state.reviews.running(job)
    }
}

/// A review with its counts, for the list.
pub struct Listed {
    pub review: Review,
    pub items: i64,
    pub decided: i64,
    pub applied: i64,
}

#[derive(Template)]
#[template(path = "reviews/list.html")]
pub struct ListView {
    pub layout: Layout,
    pub reviews: Vec<Listed>,
    pub can_start: bool,
}

/// `GET /reviews`: every review, newest first, with its progress.
pub async fn reviews_list(Staff(who): Staff, ctx: Ctx) -> Result<Response, AppError> {
    let (reviews, counts) = tokio::join!(ctx.state.reviews.list(200), ctx.state.reviews.counts());
    let counts: BTreeMap<i64, (i64, i64, i64)> = counts?
        .into_iter()
        .map(|(id, n, d, a)| (id, (n, d, a)))
        .collect();
    let reviews = reviews?
        .into_iter()
        .map(|review| {
            let (items, decided, applied) = counts.get(&review.id).copied().unwrap_or_default();
            Listed {
                review,
                items,
                decided,
                applied,
            }
        })
        .collect();
    let view = ListView {
        layout: ctx.layout().await,
        reviews,
        can_start: who.can_write(),
    };
    Ok(render(StatusCode::OK, &view))
}

async fn find(ctx: &Ctx, raw: &str) -> Result<Review, AppError> {
    let id: i64 = raw
        .parse()
        .map_err(|_| AppError::BadRequest(format!("{raw:?} is not a review number.")))?;
    ctx.state
        .reviews
        .get(id)
        .await?
        .ok_or(AppError::NotFound("No such access review.".into()))
}
