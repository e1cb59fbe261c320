//! A review's evidence: `GET /reviews/{id}.csv` and `.jsonl`. One record
//! per item: the snapshot (key, owner, level, ACLs, reach, expiry, last
//! activity), the recommendation and its reason, every decision (by whom,
//! when, why; the last counts), and what applying it did with Vultr's
//! answer. CSV cells a spreadsheet would run as a formula are neutralised,
//! as in `/audit.csv`; JSON Lines carry the values as stored.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::response::Response;
use serde::Serialize;

use crate::audit::neutralise;
use crate::error::AppError;
use crate::reviews::{DEFAULT_DECIDER, DecisionRow, Item, Review};
use crate::timefmt::display_ms;
use crate::write::Ctx;

/// A text cell as stored (JSON needs no neutralising).
fn as_is(v: &str) -> Cow<'_, str> {
    Cow::Borrowed(v)
}

pub enum Format {
    Csv,
    Jsonl,
}

/// One decision in the JSON evidence.
#[derive(Serialize)]
struct Decision<'a> {
    decision: &'a str,
    by: &'a str,
    role: &'a str,
    at: String,
    reason: Option<&'a str>,
}

/// One item, flat for the CSV: `cell` maps every text value.
#[derive(Serialize)]
struct Record<'a> {
    review_id: i64,
    review_scope: Cow<'a, str>,
    review_started_by: Cow<'a, str>,
    review_deadline: String,
    review_default: &'a str,
    review_reviewers: &'a str,
    review_reason: Option<Cow<'a, str>>,
    review_closed_by: Option<Cow<'a, str>>,
    key_id: Cow<'a, str>,
    key_name: Option<Cow<'a, str>>,
    key_last5: Option<Cow<'a, str>>,
    user_id: Cow<'a, str>,
    user_email: Option<Cow<'a, str>>,
    user_name: Option<Cow<'a, str>>,
    level: &'a str,
    acls: Cow<'a, str>,
    reach: &'a str,
    expires: Option<Cow<'a, str>>,
    created: Option<Cow<'a, str>>,
    last_activity: Option<Cow<'a, str>>,
    /// Root-equivalent or usable from anywhere: its owner's word alone does not keep it.
    needs_other_reviewer: bool,
    recommendation: &'a str,
    recommendation_reason: Cow<'a, str>,
    decision: Option<&'a str>,
    decided_by: Option<Cow<'a, str>>,
    decided_role: Option<&'a str>,
    decided_at: Option<String>,
    decision_reason: Option<Cow<'a, str>>,
    /// Every decision, oldest first: "time decision by who (role): reason | …".
    decisions: Cow<'a, str>,
    applied_decision: Option<&'a str>,
    applied_by: Option<Cow<'a, str>>,
    outcome: Option<&'a str>,
    outcome_detail: Option<Cow<'a, str>>,
    upstream_status: Option<i64>,
    applied_at: Option<String>,
}

fn record<'a>(
    review: &'a Review,
    i: &'a Item,
    history: &[&'a DecisionRow],
    cell: fn(&str) -> Cow<'_, str>,
) -> Record<'a> {
    let text = |v: &'a Option<String>| v.as_deref().map(cell);
    let decisions = history
        .iter()
        .map(|d| {
            format!(
                "{} {} by {} ({}){}",
                display_ms(d.decided_ms),
                d.decision,
                d.decided_by,
                d.decided_role,
                d.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(" | ");
    Record {
        review_id: review.id,
        review_scope: cell(&review.scope),
        review_started_by: cell(&review.started_by),
        review_deadline: display_ms(review.deadline_ms),
        review_default: &review.default_decision,
        review_reviewers: &review.reviewers,
        review_reason: text(&review.reason),
        review_closed_by: text(&review.closed_by),
        key_id: cell(&i.key_id),
        key_name: text(&i.key_name),
        key_last5: text(&i.key_tail),
        user_id: cell(&i.user_id),
        user_email: text(&i.user_email),
        user_name: text(&i.user_name),
        level: &i.level,
        acls: cell(&i.acls),
        reach: i.reach_words(),
        expires: text(&i.expires),
        created: text(&i.created),
        last_activity: text(&i.last_activity),
        needs_other_reviewer: i.needs_other,
        recommendation: &i.recommendation,
        recommendation_reason: cell(&i.recommendation_reason),
        decision: i.decision.as_deref(),
        decided_by: text(&i.decided_by),
        decided_role: i.decided_role.as_deref(),
        decided_at: i.decided_ms.map(display_ms),
        decision_reason: text(&i.decision_reason),
        decisions: Cow::Owned(cell(&decisions).into_owned()),
        applied_decision: i.applied_decision.as_deref(),
        applied_by: text(&i.applied_by),
        outcome: i.outcome.as_deref(),
        outcome_detail: text(&i.outcome_detail),
        upstream_status: i.upstream_status,
        applied_at: i.applied_ms.map(display_ms),
    }
}

/// The JSON record: the flat one, with the decisions as a list.
#[derive(Serialize)]
struct JsonRecord<'a> {
    #[serde(flatten)]
    flat: Record<'a>,
    decision_history: Vec<Decision<'a>>,
    /// Whether the applied decision was the review's default.
    by_default: bool,
}

pub async fn evidence(ctx: &Ctx, review: &Review, format: Format) -> Result<Response, AppError> {
    let (items, decisions) = tokio::join!(
        ctx.state.reviews.items(review.id),
        ctx.state.reviews.decisions(review.id)
    );
    let (items, decisions) = (items?, decisions?);
    let mut by_key: HashMap<&str, Vec<&DecisionRow>> = HashMap::new();
    for d in &decisions {
        by_key.entry(d.key_id.as_str()).or_default().push(d);
    }
    let none = Vec::new();
    let name = format!("keydesk-review-{}", review.id);
    match format {
        Format::Csv => {
            let failed = |e: csv::Error| AppError::Internal(format!("csv: {e}"));
            let mut w = csv::Writer::from_writer(Vec::new());
            for i in &items {
                let history = by_key.get(i.key_id.as_str()).unwrap_or(&none);
                w.serialize(record(review, i, history, neutralise))
                    .map_err(failed)?;
            }
            let body = w.into_inner().map_err(|e| failed(e.into_error().into()))?;
            Ok(crate::pages::audit::export(
                body,
                "text/csv; charset=utf-8",
                &format!("{name}.csv"),
            ))
        }
        Format::Jsonl => {
            let mut body = Vec::new();
            for i in &items {
                let history = by_key.get(i.key_id.as_str()).unwrap_or(&none);
                let rec = JsonRecord {
                    flat: record(review, i, history, as_is),
                    decision_history: history
                        .iter()
                        .map(|d| Decision {
                            decision: &d.decision,
                            by: &d.decided_by,
                            role: &d.decided_role,
                            at: display_ms(d.decided_ms),
                            reason: d.reason.as_deref(),
                        })
                        .collect(),
                    by_default: i.applied_by.as_deref() == Some(DEFAULT_DECIDER),
                };
                serde_json::to_writer(&mut body, &rec)
                    .map_err(|e| AppError::Internal(format!("jsonl: {e}")))?;
                body.push(b'\n');
            }
            Ok(crate::pages::audit::export(
                body,
                "application/jsonl; charset=utf-8",
                &format!("{name}.jsonl"),
            ))
        }
    }
}
