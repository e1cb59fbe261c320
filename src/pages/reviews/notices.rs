//! Telling reviewers: at the start (each one's count and a link), once
//! more `KEYDESK_REVIEW_REMIND_DAYS` before the deadline (those with items
//! left), and everyone at the close with a summary. Owners are mailed (with
//! SMTP); the webhook gets one message for the operators' channel. Each
//! notice's row is written before it is sent (`review_notices`), so it goes
//! out once across replicas. Webhook text is made inert by `send_text`;
//! mail is plain text and escaped HTML.

use std::collections::BTreeMap;

use crate::reviews::{Item, Review};
use crate::state::AppState;

const WEBHOOK: &str = "webhook";

/// Per reviewer (an owner's email, or "operators"): how many items await them.
fn awaiting(review: &Review, items: &[Item], undecided_only: bool) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for i in items {
        if undecided_only && i.decision.is_some() {
            continue;
        }
        *out.entry(i.awaits(review.who_reviews())).or_insert(0) += 1;
    }
    out
}

/// Sends one notice unless any replica sent (or is sending) it already.
async fn once(
    state: &AppState,
    review: &Review,
    kind: &str,
    recipient: &str,
    subject: &str,
    text: &str,
) {
    match state.reviews.claim_notice(review.id, kind, recipient).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(error = %e, "a review notice could not be claimed; not sent");
            return;
        }
    }
    let sent = if recipient == WEBHOOK {
        state.notifier.post_text(text).await
    } else {
        state
            .notifier
            .mail_text(&[recipient.to_string()], subject, text)
            .await
    };
    if let Err(e) = &sent {
        tracing::warn!(review = review.id, kind, error = %e, "a review notice was not delivered");
    }
    metrics::counter!("keydesk_review_notices_total", "kind" => kind.to_string(), "outcome" => if sent.is_ok() { "sent" } else { "failed" }).increment(1);
    if let Err(e) = state
        .reviews
        .notice_done(review.id, kind, recipient, sent.err().as_deref())
        .await
    {
        tracing::warn!(error = %e, "a review notice's outcome was not recorded");
    }
}

/// Tells each reviewer of `items` (grouped by who they await) with `lead`.
async fn tell(
    state: &AppState,
    review: &Review,
    kind: &str,
    counts: &BTreeMap<String, usize>,
    lead: &str,
) {
    if counts.is_empty() {
        return;
    }
    let deadline = review.deadline_display();
    let review_link = state.link(&crate::pages::paths::review(review.id));
    if state.notifier.has_webhook() {
        let who: Vec<String> = counts.iter().map(|(r, n)| format!("{r}: {n}")).collect();
        let text = format!(
            "{lead} Access review #{} ({}): keys to confirm by {deadline}. {}. {review_link}",
            review.id,
            review.scope_words(),
            who.join(", ")
        );
        once(state, review, kind, WEBHOOK, "", &text).await;
    }
    if state.notifier.can_mail() {
        let me = state.link(crate::pages::paths::ME);
        for (owner, n) in counts {
            if owner == "operators" || !crate::notify::send::is_address(Some(owner)) {
                continue;
            }
            let subject = format!("{lead} {n} Vultr API key(s) of yours to confirm by {deadline}");
            let text = format!(
                "{lead} keydesk's access review #{} asks you to confirm {n} of your Vultr API keys: keep each one you still need, revoke the rest. Open {me} (\"Keys to confirm\") before {deadline}. Undecided keys get the review's default: {}.",
                review.id,
                review.fallback().words()
            );
            once(state, review, kind, owner, &subject, &text).await;
        }
    }
}

/// At the start: every reviewer's count and a link.
pub async fn started(state: &AppState, review: &Review) {
    if state.notifier.channels().is_empty() {
        return;
    }
    let items = state.reviews.items(review.id).await.unwrap_or_default();
    let counts = awaiting(review, &items, false);
    tell(state, review, "start", &counts, "New:").await;
}

/// Once, `remind_days` before the deadline: reviewers with items undecided.
pub async fn remind_due(state: &AppState) {
    if state.notifier.channels().is_empty() {
        return;
    }
    let Ok(reviews) = state.reviews.list(50).await else {
        return;
    };
    let Ok(now) = state.db.now_ms().await else {
        return;
    };
    let before = i64::from(state.review_schedule.remind_days) * 86_400_000;
    for review in reviews.iter().filter(|r| r.is_open()) {
        if now < review.deadline_ms - before {
            continue;
        }
        let items = state.reviews.items(review.id).await.unwrap_or_default();
        let counts = awaiting(review, &items, true);
        tell(state, review, "reminder", &counts, "Reminder:").await;
    }
}

/// At the close: everyone who reviewed or owns an item gets the summary.
pub async fn closed(state: &AppState, review: &Review, items: &[Item]) {
    if state.notifier.channels().is_empty() {
        return;
    }
    let count = |o: &str| {
        items
            .iter()
            .filter(|i| i.outcome.as_deref() == Some(o))
            .count()
    };
    let summary = format!(
        "{} keys: {} revoked, {} kept, {} already gone, {} offboarded, {} unknown, {} failed",
        items.len(),
        count("revoked"),
        count("kept"),
        count("gone"),
        count("offboarded"),
        count("unknown"),
        count("failed")
    );
    let link = state.link(&crate::pages::paths::review(review.id));
    if state.notifier.has_webhook() {
        let text = format!(
            "Closed: access review #{} ({}) is applied: {summary}. Evidence: {link}",
            review.id,
            review.scope_words()
        );
        once(state, review, "close", WEBHOOK, "", &text).await;
    }
    if state.notifier.can_mail() && review.who_reviews().owners() {
        let mut owners: BTreeMap<String, Vec<&Item>> = BTreeMap::new();
        for i in items {
            if let Some(e) = &i.user_email
                && crate::notify::send::is_address(Some(e))
            {
                owners.entry(e.clone()).or_default().push(i);
            }
        }
        for (owner, mine) in owners {
            let lines: Vec<String> = mine
                .iter()
                .map(|i| {
                    format!(
                        "- {} (…{}): {}",
                        i.name_or_dash(),
                        i.key_tail.as_deref().unwrap_or("?"),
                        crate::reviews::outcome_words(i.outcome.as_deref().unwrap_or(""))
                    )
                })
                .collect();
            let subject = format!("Access review #{} closed: your keys", review.id);
            let text = format!(
                "keydesk's access review #{} is closed and applied ({summary}). Your keys:\n{}\n",
                review.id,
                lines.join("\n")
            );
            once(state, review, "close", &owner, &subject, &text).await;
        }
    }
}
