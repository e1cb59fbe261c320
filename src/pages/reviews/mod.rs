//! Access reviews, the pages: `GET /reviews` (each with its progress),
//! `GET|POST /reviews/new` (operators start one), `GET /reviews/{id}`
//! (progress by reviewer, filters, bulk decisions; `{id}.csv` and
//! `{id}.jsonl` are the evidence), `POST /reviews/{id}/decide`,
//! `POST /reviews/{id}/end` (End review now), and an owner's own decisions
//! from "My keys" (`POST /me/reviews/{id}/decide`).

pub mod apply;
mod export;
pub mod notices;
pub mod schedule;
pub mod snapshot;

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

/// The longest a review may stay open.
const MAX_DAYS: i64 = 366;
/// Items shown on one review page (the filters narrow; bulk decisions
/// apply to every match, shown or not).
const SHOWN: usize = 500;

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

#[derive(Deserialize, Default, Clone)]
pub struct NewInput {
    form_token: Option<String>,
    scope: Option<String>,
    deadline: Option<String>,
    default: Option<String>,
    reviewers: Option<String>,
    inactive_days: Option<String>,
    reason: Option<String>,
}

#[derive(Template)]
#[template(path = "reviews/new.html")]
pub struct NewView {
    pub layout: Layout,
    pub token: String,
    pub input: NewInput,
    pub notice: Option<String>,
    pub require_reason: bool,
    /// The default deadline: `KEYDESK_REVIEW_DAYS` from today.
    pub deadline: String,
}

impl NewView {
    pub fn v<'a>(&self, v: &'a Option<String>) -> &'a str {
        v.as_deref().unwrap_or("")
    }
    pub fn picked(&self, v: &Option<String>, value: &str, default: bool) -> bool {
        match v.as_deref() {
            Some(s) => s == value,
            None => default,
        }
    }
}

fn date_in(days: i64) -> String {
    let d = OffsetDateTime::now_utc() + time::Duration::days(days);
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

async fn new_page(
    ctx: &Ctx,
    input: NewInput,
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let view = NewView {
        layout: ctx.layout().await,
        token: ctx.issue(FormScope::ReviewStart).await?,
        input,
        notice,
        require_reason: ctx.state.policy.require_reason,
        deadline: date_in(i64::from(ctx.state.review_schedule.days)),
    };
    Ok(render(status, &view))
}

/// `GET /reviews/new`: the form.
pub async fn review_new_form(Operator(_): Operator, ctx: Ctx) -> Result<Response, AppError> {
    new_page(&ctx, NewInput::default(), None, StatusCode::OK).await
}

/// What the form asks for, checked.
struct Wanted {
    scope: Scope,
    deadline_ms: i64,
    fallback: Fallback,
    reviewers: Reviewers,
    inactive_days: u32,
    reason: Option<String>,
}

fn wanted(input: &NewInput, ctx: &Ctx) -> Result<Wanted, String> {
    let scope: Scope = input.scope.as_deref().unwrap_or("all").parse()?;
    let raw = input.deadline.as_deref().unwrap_or("").trim();
    let day = time::Date::parse(
        raw,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| format!("The deadline {raw:?} is not a date (YYYY-MM-DD)."))?;
    // The review ends at the end of that day, UTC.
    let end = day
        .with_hms(23, 59, 59)
        .map_err(|_| "The deadline is not a date.".to_string())?
        .assume_utc();
    let now = OffsetDateTime::now_utc();
    if end <= now {
        return Err("The deadline must be today or later.".into());
    }
    if end - now > time::Duration::days(MAX_DAYS) {
        return Err(format!("The deadline may be at most {MAX_DAYS} days away."));
    }
    let fallback: Fallback = input.default.as_deref().unwrap_or("keep").parse()?;
    let reviewers: Reviewers = input
        .reviewers
        .as_deref()
        .unwrap_or("owner,operators")
        .parse()?;
    let inactive_days = match input
        .inactive_days
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => scope
            .inactive_days()
            .unwrap_or(ctx.state.review_schedule.inactive_days),
        Some(n) => match n.parse::<u32>() {
            Ok(n) if (1..=3650).contains(&n) => n,
            _ => return Err("Inactivity days must be a whole number from 1 to 3650.".into()),
        },
    };
    let reason = check_reason(input.reason.as_deref(), &ctx.state.policy)?;
    Ok(Wanted {
        scope,
        deadline_ms: (end.unix_timestamp_nanos() / 1_000_000) as i64,
        fallback,
        reviewers,
        inactive_days,
        reason,
    })
}

/// `POST /reviews/new`: records the review and starts its snapshot.
pub async fn review_new_submit(
    Operator(_): Operator,
    ctx: Ctx,
    axum::Form(input): axum::Form<NewInput>,
) -> Result<Response, AppError> {
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let claim = match ctx
        .claim_for(token, FormScope::ReviewStart, None, None)
        .await
    {
        Ok(c) => c,
        Err(Refusal::Replay { .. }) => {
            return Err(AppError::Conflict(
                "This form was already submitted; it started nothing more. See the reviews list."
                    .into(),
            ));
        }
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => {
            let notice = crate::write::CONFIRM_AGAIN.to_string();
            return new_page(&ctx, input, Some(notice), StatusCode::FORBIDDEN).await;
        }
    };
    let w = match wanted(&input, &ctx) {
        Ok(w) => w,
        Err(e) => {
            claim.release().await;
            return new_page(&ctx, input, Some(e), StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    let new = NewReview {
        scope: &w.scope,
        deadline_ms: w.deadline_ms,
        fallback: w.fallback,
        reviewers: w.reviewers,
        inactive_days: w.inactive_days,
        reason: w.reason.as_deref(),
        started_by: &ctx.who.email,
    };
    if let Ok(Some(open)) = ctx.state.reviews.open_for_scope(&w.scope.to_string()).await {
        claim.release().await;
        let notice = snapshot::NotStarted::AlreadyOpen(open.id).to_string();
        return new_page(&ctx, input, Some(notice), StatusCode::CONFLICT).await;
    }
    let intent = snapshot::start_intent(ctx.intent(AuditAction::ReviewStart), &new, "");
    let intent = Intent {
        reason: w.reason.clone(),
        ..intent
    };
    let group = claim.group(intent).await?;
    match snapshot::begin(&ctx.state, &new, group.id()).await {
        Ok(id) => {
            group.settle_started(&format!("review #{id}")).await;
            metrics::counter!("keydesk_reviews_started_total").increment(1);
            ctx.flash(
                "ok",
                format!("Review #{id} started: its snapshot of every key in scope is being taken."),
            )
            .await;
            Ok(Redirect::to(&paths::review(id)).into_response())
        }
        Err(e) => {
            let why = e.to_string();
            group.refuse(&why).await;
            let status = match e {
                snapshot::NotStarted::AlreadyOpen(_) => StatusCode::CONFLICT,
                snapshot::NotStarted::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            new_page(
                &ctx,
                input,
                Some(format!("The review did not start: {why}.")),
                status,
            )
            .await
        }
    }
}

/// The filters of a review page; empty fields match everything.
#[derive(Deserialize, Default, Clone, Debug)]
pub struct ItemFilter {
    /// Part of the owner's email or name, or of the key's name.
    pub q: Option<String>,
    /// undecided, decided, keep or revoke.
    pub status: Option<String>,
    /// keep or revoke.
    pub recommendation: Option<String>,
    /// root, sensitive or limited.
    pub level: Option<String>,
    /// An owner's email, or "operators".
    pub awaits: Option<String>,
    /// kept, revoked, gone, offboarded, unknown, failed.
    pub outcome: Option<String>,
}

fn clean(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl ItemFilter {
    fn matches(&self, review: &Review, i: &Item) -> bool {
        if let Some(q) = clean(&self.q) {
            let q = q.to_lowercase();
            let hay = [
                i.user_email.as_deref(),
                i.user_name.as_deref(),
                i.key_name.as_deref(),
                Some(&i.key_id),
            ];
            if !hay.iter().flatten().any(|h| h.to_lowercase().contains(&q)) {
                return false;
            }
        }
        match clean(&self.status) {
            Some("undecided") if i.decision.is_some() => return false,
            Some("decided") if i.decision.is_none() => return false,
            Some(d @ ("keep" | "revoke")) if i.decision.as_deref() != Some(d) => return false,
            _ => {}
        }
        if let Some(r) = clean(&self.recommendation)
            && i.recommendation != r
        {
            return false;
        }
        if let Some(l) = clean(&self.level)
            && i.level != l
        {
            return false;
        }
        if let Some(a) = clean(&self.awaits)
            && !i.awaits(review.who_reviews()).eq_ignore_ascii_case(a)
        {
            return false;
        }
        if let Some(o) = clean(&self.outcome)
            && i.outcome.as_deref() != Some(o)
        {
            return false;
        }
        true
    }

    /// As a query string (for links back to the same view).
    pub fn query(&self) -> String {
        let pairs = [
            ("q", &self.q),
            ("status", &self.status),
            ("recommendation", &self.recommendation),
            ("level", &self.level),
            ("awaits", &self.awaits),
            ("outcome", &self.outcome),
        ];
        pairs
            .iter()
            .filter_map(|(k, v)| clean(v).map(|v| format!("{k}={}", paths::enc(v))))
            .collect::<Vec<_>>()
            .join("&")
    }

    pub fn f<'a>(&self, v: &'a Option<String>) -> &'a str {
        v.as_deref().unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.query().is_empty()
    }
}

/// One reviewer's progress.
pub struct ReviewerProgress {
    pub reviewer: String,
    pub total: usize,
    pub decided: usize,
}

#[derive(Template)]
#[template(path = "reviews/show.html")]
pub struct ShowView {
    pub layout: Layout,
    pub review: Review,
    pub total: usize,
    pub decided: usize,
    pub applied: usize,
    pub by_reviewer: Vec<ReviewerProgress>,
    pub by_decider: Vec<(String, usize)>,
    pub outcomes: Vec<(String, usize)>,
    pub items: Vec<Item>,
    pub matching: usize,
    pub filter: ItemFilter,
    pub decide_token: Option<String>,
    pub end_token: Option<String>,
    pub require_reason: bool,
    pub owners: Vec<String>,
}

impl ShowView {
    pub fn shown_words(&self) -> String {
        if self.matching > self.items.len() {
            format!(
                "Showing {} of {} matching items: narrow the filter to see the rest (a bulk decision applies to every match).",
                self.items.len(),
                self.matching
            )
        } else {
            format!("{} matching item(s).", self.matching)
        }
    }
    pub fn outcome_words(&self, o: &Option<String>) -> &'static str {
        apply::outcome_words(o.as_deref().unwrap_or(""))
    }
    pub fn awaits(&self, i: &Item) -> String {
        i.awaits(self.review.who_reviews())
    }
    pub fn is_operator(&self) -> bool {
        self.decide_token.is_some()
    }
}

/// `GET /reviews/{id}` (and `{id}.csv`, `{id}.jsonl`, the evidence).
pub async fn review_show(
    Staff(who): Staff,
    ctx: Ctx,
    Path(raw): Path<String>,
    Query(filter): Query<ItemFilter>,
) -> Result<Response, AppError> {
    let (id, format) = match raw.split_once('.') {
        Some((id, "csv")) => (id, Some(export::Format::Csv)),
        Some((id, "jsonl")) => (id, Some(export::Format::Jsonl)),
        Some(_) => return Err(AppError::NotFound("No such access review.".into())),
        None => (raw.as_str(), None),
    };
    let review = find(&ctx, id).await?;
    if let Some(format) = format {
        return export::evidence(&ctx, &review, format).await;
    }
    let all = ctx.state.reviews.items(review.id).await?;
    let mut reviewers: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut deciders: BTreeMap<String, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for i in &all {
        let e = reviewers.entry(i.awaits(review.who_reviews())).or_default();
        e.0 += 1;
        if i.decision.is_some() {
            e.1 += 1;
        }
        if let Some(by) = &i.decided_by {
            *deciders.entry(by.clone()).or_default() += 1;
        }
        if let Some(o) = &i.outcome {
            *outcomes.entry(o.clone()).or_default() += 1;
        }
    }
    let mut owners: Vec<String> = reviewers.keys().cloned().collect();
    owners.sort();
    let matching: Vec<Item> = all
        .iter()
        .filter(|i| filter.matches(&review, i))
        .cloned()
        .collect();
    let operator = who.can_write();
    let view = ShowView {
        layout: ctx.layout().await,
        total: all.len(),
        decided: all.iter().filter(|i| i.decision.is_some()).count(),
        applied: all.iter().filter(|i| i.outcome.is_some()).count(),
        by_reviewer: reviewers
            .into_iter()
            .map(|(reviewer, (total, decided))| ReviewerProgress {
                reviewer,
                total,
                decided,
            })
            .collect(),
        by_decider: deciders.into_iter().collect(),
        outcomes: outcomes.into_iter().collect(),
        matching: matching.len(),
        items: matching.into_iter().take(SHOWN).collect(),
        filter,
        decide_token: if operator && review.is_open() {
            Some(ctx.issue(FormScope::ReviewDecide(review.id)).await?)
        } else {
            None
        },
        end_token: if operator && review.is_open() {
            Some(ctx.issue(FormScope::ReviewEnd(review.id)).await?)
        } else {
            None
        },
        require_reason: ctx.state.policy.require_reason,
        owners,
        review,
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

/// An operator's bulk decision: the ticked items, or every item matching the filter.
#[derive(Default)]
struct DecideInput {
    form_token: Option<String>,
    decision: Option<String>,
    reason: Option<String>,
    keys: Vec<String>,
    /// `filter`: every item the filter below matches.
    select: Option<String>,
    filter: ItemFilter,
}

fn parse_decide(body: &[u8]) -> DecideInput {
    let mut d = DecideInput::default();
    for (k, v) in form_urlencoded::parse(body) {
        let v = v.into_owned();
        match &*k {
            "form_token" => d.form_token = Some(v),
            "decision" => d.decision = Some(v),
            "reason" => d.reason = Some(v),
            "key" => d.keys.push(v),
            "select" => d.select = Some(v),
            "q" => d.filter.q = Some(v),
            "status" => d.filter.status = Some(v),
            "recommendation" => d.filter.recommendation = Some(v),
            "level" => d.filter.level = Some(v),
            "awaits" => d.filter.awaits = Some(v),
            "outcome" => d.filter.outcome = Some(v),
            _ => {}
        }
    }
    d
}

/// How a batch of decisions went, in words for the flash.
#[derive(Default)]
struct Tally {
    recorded: usize,
    not_yours: usize,
    owner_keep: usize,
    closed: usize,
    failed: usize,
}

impl Tally {
    fn words(&self, decision: Decision) -> String {
        let mut parts = vec![format!(
            "{} item(s) decided: {}",
            self.recorded,
            decision.as_str()
        )];
        if self.not_yours > 0 {
            parts.push(format!(
                "{} left to their owners (a self-review)",
                self.not_yours
            ));
        }
        if self.owner_keep > 0 {
            parts.push(format!("{} refused: a root-equivalent key, or one usable from anywhere, is not kept on its owner's word alone", self.owner_keep));
        }
        if self.closed > 0 {
            parts.push(format!(
                "{} refused: the review is no longer open",
                self.closed
            ));
        }
        if self.failed > 0 {
            parts.push(format!(
                "{} not recorded (the database failed); try again",
                self.failed
            ));
        }
        parts.join("; ") + "."
    }
}

/// Records one decision, audited review.decide (linked to the review).
async fn decide_one(
    ctx: &Ctx,
    review: &Review,
    item: &Item,
    decision: Decision,
    role: &str,
    reason: Option<&str>,
    tally: &mut Tally,
) {
    let intent = Intent {
        group_id: Some(review.group_id),
        role: role.to_string(),
        target_user_id: Some(item.user_id.clone()),
        target_user_email: item.user_email.clone(),
        key_id: Some(item.key_id.clone()),
        key_name: item.key_name.clone(),
        reason: reason.map(str::to_string),
        level: Some(item.level.clone()),
        ..ctx.intent(AuditAction::ReviewDecide)
    };
    let audit_id = match ctx.state.audit.intent(&intent).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(target: "audit", error = %e, "a review decision was not recorded: audit unavailable");
            tally.failed += 1;
            return;
        }
    };
    let decided = ctx
        .state
        .reviews
        .decide(
            review.id,
            &item.key_id,
            decision,
            &ctx.who.email,
            role,
            reason,
        )
        .await;
    let note = format!("decided: {}", decision.as_str());
    let (outcome, error) = match decided {
        Ok(Decided::Recorded) => {
            tally.recorded += 1;
            metrics::counter!("keydesk_review_decisions_total", "decision" => decision.as_str())
                .increment(1);
            (Outcome::Ok, note)
        }
        Ok(Decided::OwnerMayNotKeep) => {
            tally.owner_keep += 1;
            (
                Outcome::Failed,
                "refused: the owner's keep alone does not keep this key".to_string(),
            )
        }
        Ok(Decided::NotOpen) | Ok(Decided::NoItem) => {
            tally.closed += 1;
            (
                Outcome::Failed,
                "refused: the review is not open".to_string(),
            )
        }
        Err(e) => {
            tally.failed += 1;
            (Outcome::Failed, format!("not recorded: {e}"))
        }
    };
    let how = Settlement {
        error: Some(&error),
        ..outcome.settled()
    };
    ctx.state.audit.settle(audit_id, how).await;
}

/// `POST /reviews/{id}/decide`: an operator decides the ticked items, or
/// every item the filter matches, keep or revoke, with a reason.
pub async fn review_decide(
    Operator(_): Operator,
    ctx: Ctx,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    let review = find(&ctx, &raw).await?;
    let input = parse_decide(&body);
    let back = |f: &ItemFilter| {
        let q = f.query();
        if q.is_empty() {
            paths::review(review.id)
        } else {
            format!("{}?{q}", paths::review(review.id))
        }
    };
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let claim = match ctx
        .claim_for(token, FormScope::ReviewDecide(review.id), None, None)
        .await
    {
        Ok(c) => c,
        Err(Refusal::Replay { .. }) => {
            ctx.flash(
                "warn",
                "That form was already submitted; it decided nothing more.".into(),
            )
            .await;
            return Ok(Redirect::to(&back(&input.filter)).into_response());
        }
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => {
            ctx.flash("error", crate::write::CONFIRM_AGAIN.into()).await;
            return Ok(Redirect::to(&back(&input.filter)).into_response());
        }
    };
    let checked = if !review.is_open() {
        Err(format!(
            "Review #{} is {}: decisions can no longer change.",
            review.id,
            review.state_words()
        ))
    } else {
        match input.decision.as_deref().and_then(Decision::parse) {
            None => Err("Choose keep or revoke.".to_string()),
            Some(d) => check_reason(input.reason.as_deref(), &ctx.state.policy).map(|r| (d, r)),
        }
    };
    let (decision, reason) = match checked {
        Ok(v) => v,
        Err(why) => {
            claim.release().await;
            ctx.flash("error", why).await;
            return Ok(Redirect::to(&back(&input.filter)).into_response());
        }
    };
    let items = match ctx.state.reviews.items(review.id).await {
        Ok(i) => i,
        Err(e) => {
            claim.release().await;
            return Err(e.into());
        }
    };
    let by_filter = input.select.as_deref() == Some("filter");
    if by_filter && input.filter.is_empty() {
        claim.release().await;
        let why = "Deciding every item needs a filter first (a search, a status, a level…): nothing was decided.";
        ctx.flash("error", why.into()).await;
        return Ok(Redirect::to(&back(&input.filter)).into_response());
    }
    let wanted: Vec<&Item> = items
        .iter()
        .filter(|i| {
            if by_filter {
                input.filter.matches(&review, i)
            } else {
                input.keys.iter().any(|k| k.eq_ignore_ascii_case(&i.key_id))
            }
        })
        .collect();
    if wanted.is_empty() {
        claim.release().await;
        let why = "Tick at least one item (or decide every item the filter matches). Nothing was decided.";
        ctx.flash("error", why.into()).await;
        return Ok(Redirect::to(&back(&input.filter)).into_response());
    }
    claim.spend().await;
    let mut tally = Tally::default();
    for item in wanted {
        // A self-review leaves the owners' items to them, except the keys
        // their owner alone may not keep.
        if !review.who_reviews().operators() && !item.needs_other {
            tally.not_yours += 1;
            continue;
        }
        decide_one(
            &ctx,
            &review,
            item,
            decision,
            "operator",
            reason.as_deref(),
            &mut tally,
        )
        .await;
    }
    let kind = if tally.recorded > 0 { "ok" } else { "error" };
    ctx.flash(kind, tally.words(decision)).await;
    Ok(Redirect::to(&back(&input.filter)).into_response())
}

#[derive(Deserialize, Default)]
pub struct EndInput {
    form_token: Option<String>,
    reason: Option<String>,
}

/// `POST /reviews/{id}/end`: End review now. The decisions (and the
/// default for undecided items) are applied by a durable job.
pub async fn review_end(
    Operator(_): Operator,
    ctx: Ctx,
    Path(raw): Path<String>,
    axum::Form(input): axum::Form<EndInput>,
) -> Result<Response, AppError> {
    let review = find(&ctx, &raw).await?;
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let back = paths::review(review.id);
    let claim = match ctx
        .claim_for(token, FormScope::ReviewEnd(review.id), None, None)
        .await
    {
        Ok(c) => c,
        Err(Refusal::Replay { .. }) => {
            ctx.flash(
                "warn",
                "That form was already submitted; the review is ending.".into(),
            )
            .await;
            return Ok(Redirect::to(&back).into_response());
        }
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => {
            ctx.flash("error", crate::write::CONFIRM_AGAIN.into()).await;
            return Ok(Redirect::to(&back).into_response());
        }
    };
    let reason = match check_reason(input.reason.as_deref(), &ctx.state.policy) {
        Ok(r) => r,
        Err(e) => {
            claim.release().await;
            ctx.flash("error", e).await;
            return Ok(Redirect::to(&back).into_response());
        }
    };
    let intent = Intent {
        reason: Some(reason.unwrap_or_else(|| "ended now by an operator".into())),
        ..ctx.intent(AuditAction::ReviewClose)
    };
    match apply::end(&ctx.state, &review, intent).await {
        Ok(true) => {
            claim.spend().await;
            ctx.flash("ok", format!("Review #{} is closed: its decisions are being applied. Undecided items get the default ({}).", review.id, review.fallback().words())).await;
        }
        Ok(false) => {
            claim.release().await;
            ctx.flash(
                "warn",
                format!(
                    "Review #{} was not open (it is {}); nothing more was done.",
                    review.id,
                    review.state_words()
                ),
            )
            .await;
        }
        Err(e) => {
            claim.release().await;
            return Err(e.into());
        }
    }
    Ok(Redirect::to(&back).into_response())
}

#[derive(Deserialize, Default)]
pub struct MyDecisionInput {
    form_token: Option<String>,
    key_id: Option<String>,
    decision: Option<String>,
    reason: Option<String>,
}

/// The audit role of an owner deciding on their own key.
pub const OWNER_ROLE: &str = "owner";

/// `POST /me/reviews/{id}/decide`: an owner keeps or revokes one of their
/// own keys in a self-review. Never another's key; never "keep" for a key
/// their word alone does not keep (refused here and by the database).
pub async fn my_decide(
    _: WithinQuota,
    ctx: Ctx,
    Path(raw): Path<String>,
    axum::Form(input): axum::Form<MyDecisionInput>,
) -> Result<Response, AppError> {
    let review = find(&ctx, &raw).await?;
    let back = format!("{}#keys-to-confirm", paths::ME);
    let key_id = input
        .key_id
        .as_deref()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let item = ctx.state.reviews.item(review.id, &key_id).await?;
    let Some(item) = item.filter(|i| i.owned_by(&ctx.who.email) && review.who_reviews().owners())
    else {
        let intent = Intent {
            key_id: Some(key_id.clone()),
            reason: Some(format!(
                "access review #{}: not one of the owner's items",
                review.id
            )),
            group_id: Some(review.group_id),
            ..ctx.intent(AuditAction::AccessDenied)
        };
        ctx.state.audit.record(&intent, Outcome::Failed).await;
        return Err(AppError::Forbidden(
            "That is not one of your keys in this review. Here you can confirm your own keys only."
                .into(),
        ));
    };
    let token = input.form_token.as_deref().filter(|t| !t.is_empty());
    let claim = match ctx
        .claim_for(token, FormScope::ReviewDecide(review.id), None, None)
        .await
    {
        Ok(c) => c,
        Err(Refusal::Replay { .. }) => {
            ctx.flash(
                "warn",
                "That form was already submitted; it decided nothing more.".into(),
            )
            .await;
            return Ok(Redirect::to(&back).into_response());
        }
        Err(Refusal::Unavailable(e)) => return Err(e),
        Err(Refusal::Refused) => {
            ctx.flash("error", crate::write::CONFIRM_AGAIN.into()).await;
            return Ok(Redirect::to(&back).into_response());
        }
    };
    if !review.is_open() {
        claim.release().await;
        ctx.flash(
            "error",
            format!(
                "Review #{} is {}: your decision can no longer change.",
                review.id,
                review.state_words()
            ),
        )
        .await;
        return Ok(Redirect::to(&back).into_response());
    }
    let Some(decision) = input.decision.as_deref().and_then(Decision::parse) else {
        claim.release().await;
        ctx.flash("error", "Choose keep or revoke.".into()).await;
        return Ok(Redirect::to(&back).into_response());
    };
    let reason = match check_reason(input.reason.as_deref(), &ctx.state.policy) {
        Ok(r) => r,
        Err(e) => {
            claim.release().await;
            ctx.flash("error", e).await;
            return Ok(Redirect::to(&back).into_response());
        }
    };
    claim.spend().await;
    let mut tally = Tally::default();
    decide_one(
        &ctx,
        &review,
        &item,
        decision,
        OWNER_ROLE,
        reason.as_deref(),
        &mut tally,
    )
    .await;
    if tally.owner_keep > 0 {
        return Err(AppError::Forbidden(format!(
            "“{}” is a root-equivalent key or one usable from any address: your word alone does not keep it. An operator confirms it; you can still revoke it.",
            item.name_or_dash()
        )));
    }
    let (kind, text) = match (tally.recorded, decision) {
        (1, Decision::Keep) => (
            "ok",
            format!(
                "You keep “{}”. You can change this until review #{} closes on {}.",
                item.name_or_dash(),
                review.id,
                review.deadline_display()
            ),
        ),
        (1, Decision::Revoke) => (
            "ok",
            format!(
                "“{}” will be revoked when review #{} closes. You can change this until then; to kill a leaked key now, use Revoke above.",
                item.name_or_dash(),
                review.id
            ),
        ),
        _ => ("error", tally.words(decision)),
    };
    ctx.flash(kind, text).await;
    Ok(Redirect::to(&back).into_response())
}
