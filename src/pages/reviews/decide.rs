//! Deciding: an operator's bulk decision, End review now, and an owner's
//! own decision from "My keys".

use super::show::ItemFilter;
use super::*;

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
pub(super) struct Tally {
    pub(super) recorded: usize,
    not_yours: usize,
    pub(super) owner_keep: usize,
    closed: usize,
    failed: usize,
}

impl Tally {
    pub(super) fn words(&self, decision: Decision) -> String {
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
pub(super) async fn decide_one(
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
    match close::end(&ctx.state, &review, intent).await {
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
