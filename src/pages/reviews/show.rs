//! `GET /reviews/{id}`: progress by reviewer and by decider, the filters,
//! the items (and, by extension, the evidence).

use super::*;

/// Items shown on one review page (the filters narrow; bulk decisions
/// apply to every match, shown or not).
const SHOWN: usize = 500;

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
    pub(super) fn matches(&self, review: &Review, i: &Item) -> bool {
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
        crate::reviews::outcome_words(o.as_deref().unwrap_or(""))
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
