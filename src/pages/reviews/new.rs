//! `GET|POST /reviews/new`: an operator starts a review.

use super::*;

/// The longest a review may stay open.
const MAX_DAYS: i64 = 366;

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
