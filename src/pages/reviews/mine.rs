//! `POST /me/reviews/{id}/decide`: an owner's decision on their own key.

use super::decide::{Tally, decide_one};
use super::*;

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
