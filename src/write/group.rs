//! Batches under one audited group entry (an offboarding, a clean-up): the
//! group's own entry first, then one linked, settled entry per part.

use std::future::Future;

use super::Claimed;
use crate::audit::{AuditAction, Intent, Outcome, Settlement};
use crate::error::AppError;
use crate::state::AppState;
use crate::vultr::VultrError;

impl Claimed<'_> {
    /// Step 3 for a batch (an offboarding, a clean-up): commits the group's
    /// own entry, or refuses to act when it cannot be written. Each part is
    /// then one linked, audited write through `Group::step`.
    pub async fn group(self, intent: Intent) -> Result<Group, AppError> {
        let state = self.ctx.state.clone();
        let id = self.prepare(state.audit.intent(&intent).await).await?;
        Ok(Group {
            state,
            token: self.token,
            id,
            intent,
        })
    }
}

/// A batch of writes under one audited group entry; owns what it needs, so
/// it can run on after the request that started it has been answered.
pub struct Group {
    state: AppState,
    token: String,
    id: i64,
    /// The group's own intent: actor, role, request id and reason of every part.
    intent: Intent,
}

/// How one part of a group ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Done,
    /// Vultr had no such key any more (404): nothing to do, not a failure.
    AlreadyGone,
    /// Left alone on purpose, with why (e.g. no longer expired).
    Skipped(String),
    Failed(String),
    /// Sent, but the answer was lost: it may or may not have happened.
    Unknown(String),
}

impl StepOutcome {
    /// Whether the key (or the switch) may still be live after this.
    pub fn still_live(&self) -> bool {
        matches!(self, StepOutcome::Failed(_) | StepOutcome::Unknown(_))
    }
    /// The machine-readable form (`data-outcome` on pages).
    pub fn code(&self) -> &'static str {
        match self {
            StepOutcome::Done => "done",
            StepOutcome::AlreadyGone => "gone",
            StepOutcome::Skipped(_) => "skipped",
            StepOutcome::Failed(_) => "failed",
            StepOutcome::Unknown(_) => "unknown",
        }
    }
    /// The outcome in words, for a given verb ("revoked", "switched off").
    pub fn words(&self, done: &str) -> String {
        match self {
            StepOutcome::Done => done.to_string(),
            StepOutcome::AlreadyGone => "already gone".to_string(),
            StepOutcome::Skipped(why) => format!("left alone: {why}"),
            StepOutcome::Failed(e) => format!("failed: {e}"),
            StepOutcome::Unknown(e) => format!("outcome unknown: {e}"),
        }
    }
}

impl Group {
    /// A group started elsewhere (a run another replica began and stopped),
    /// taken over to be finished: its parts link to the same entry. No form
    /// of its own: the one that started it was spent there.
    pub fn resume(state: AppState, id: i64, intent: Intent) -> Self {
        Self {
            state,
            token: String::new(),
            id,
            intent,
        }
    }

    /// The group's audit entry id (the `/audit?group=` filter).
    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// An intent for one part: the group's actor, request and reason, linked.
    pub fn part(&self, action: AuditAction) -> Intent {
        let g = &self.intent;
        Intent {
            group_id: Some(self.id),
            reason: g.reason.clone(),
            request_id: g.request_id.clone(),
            ..Intent::new(&g.actor, &g.role, action)
        }
    }

    /// One linked write: commits `intent`, runs `call`, settles it. With
    /// `gone_is_done`, a 404 means the target is already gone (a delete).
    pub async fn step(
        &self,
        intent: Intent,
        call: impl Future<Output = Result<(), VultrError>>,
        gone_is_done: bool,
    ) -> StepOutcome {
        let audit = &self.state.audit;
        let id = match audit.intent(&intent).await {
            Ok(id) => id,
            // Unrecorded means not done: nothing is sent.
            Err(e) => {
                metrics::counter!("keydesk_audit_write_failures_total").increment(1);
                tracing::error!(target: "audit", error = %e, "group step refused: audit unavailable");
                return StepOutcome::Failed(
                    "the audit trail could not be written; nothing was sent".into(),
                );
            }
        };
        let (outcome, settled) = match call.await {
            Ok(()) => (StepOutcome::Done, Outcome::Ok.settled()),
            Err(VultrError::Api { status: 404, .. }) if gone_is_done => (
                StepOutcome::AlreadyGone,
                Settlement {
                    upstream_status: Some(404),
                    error: Some("already gone"),
                    ..Outcome::Ok.settled()
                },
            ),
            Err(e) => {
                let text = e.to_string();
                let (step, how) = match e {
                    VultrError::OutcomeUnknown(_) => (StepOutcome::Unknown(text), Outcome::Unknown),
                    _ => (StepOutcome::Failed(text), Outcome::Failed),
                };
                audit
                    .settle(
                        id,
                        Settlement {
                            upstream_status: e.status(),
                            error: Some(&e.to_string()),
                            ..how.settled()
                        },
                    )
                    .await;
                return step;
            }
        };
        audit.settle(id, settled).await;
        outcome
    }

    /// One linked change in keydesk's own store (a hold placed, a claim link
    /// withdrawn): `Err` is a failed part, in words.
    pub async fn local(&self, intent: Intent, done: Result<(), String>) -> StepOutcome {
        let (step, how) = match &done {
            Ok(()) => (StepOutcome::Done, Outcome::Ok),
            Err(e) => (StepOutcome::Failed(e.clone()), Outcome::Failed),
        };
        match self.state.audit.intent(&intent).await {
            Ok(id) => {
                let settled = Settlement {
                    error: done.as_ref().err().map(String::as_str),
                    ..how.settled()
                };
                self.state.audit.settle(id, settled).await;
            }
            Err(e) => {
                tracing::error!(target: "audit", error = %e, "group part could not be recorded")
            }
        }
        step
    }

    /// Records a part that needed no call (a key left alone), linked.
    pub async fn note(&self, intent: Intent, why: &str) {
        let audit = &self.state.audit;
        match audit.intent(&intent).await {
            Ok(id) => {
                audit
                    .settle(
                        id,
                        Settlement {
                            error: Some(why),
                            ..Outcome::Ok.settled()
                        },
                    )
                    .await
            }
            Err(e) => {
                tracing::error!(target: "audit", error = %e, "group note could not be written")
            }
        }
    }

    /// Ends the group as refused before any part ran (`why`, in words), and
    /// gives the form back: nothing was done.
    pub async fn refuse(self, why: &str) {
        if !self.token.is_empty() {
            self.state.tokens.release(&self.token).await;
        }
        let how = Settlement {
            error: Some(why),
            ..Outcome::Failed.settled()
        };
        self.state.audit.settle(self.id, how).await;
    }

    /// Settles the group's own entry as done, with a note (`what`), and
    /// spends the form; the group stays open for later linked parts.
    pub async fn settle_started(&self, what: &str) {
        if !self.token.is_empty() {
            self.state.tokens.complete(&self.token, None).await;
        }
        let how = Settlement {
            error: Some(what),
            ..Outcome::Ok.settled()
        };
        self.state.audit.settle(self.id, how).await;
    }

    /// Ends the group: settles its own entry from its parts and spends the
    /// form (a repeat needs the fresh form the result page offers).
    pub async fn finish<'o>(self, parts: impl IntoIterator<Item = &'o StepOutcome>) {
        let (mut failed, mut unknown) = (0, 0);
        for p in parts {
            match p {
                StepOutcome::Failed(_) => failed += 1,
                StepOutcome::Unknown(_) => unknown += 1,
                _ => {}
            }
        }
        let (outcome, error) = match (failed, unknown) {
            (0, 0) => (Outcome::Ok, None),
            (0, u) => (
                Outcome::Unknown,
                Some(format!("{u} part(s) with an unknown outcome")),
            ),
            (f, u) => (
                Outcome::Failed,
                Some(format!("{f} part(s) failed, {u} unknown")),
            ),
        };
        if !self.token.is_empty() {
            self.state.tokens.complete(&self.token, None).await;
        }
        self.state
            .audit
            .settle(
                self.id,
                Settlement {
                    error: error.as_deref(),
                    ..outcome.settled()
                },
            )
            .await;
    }
}
