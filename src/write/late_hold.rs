//! A hold that appeared while a write was at Vultr. The hold is checked
//! before the call, but an offboarding may begin while a create is in
//! flight: the key then exists for a leaver. Read the hold again once the
//! call is done; if one appeared, undo what the write gave (revoke the new
//! key, switch API access back off) at once, audited as part of the
//! offboarding, and never reveal it.

use crate::audit::{AuditAction, Intent, Outcome, Settlement};
use crate::error::AppError;
use crate::holds::Hold;
use crate::ids::VultrId;
use crate::state::AppState;

/// The hold on the intent's user, read again after the call; `None` when
/// there is none, or when the intent gives nothing. A hold that cannot be
/// read counts as one (an unknown fact is the strongest): what the write
/// gave is undone and never shown.
pub async fn appeared(state: &AppState, intent: &Intent) -> Option<Hold> {
    let user = intent.target_user_id.as_deref()?;
    if !intent.gives_access() {
        return None;
    }
    match state.holds.get(user).await {
        Ok(hold) => hold,
        Err(e) => {
            tracing::error!(error = %e, "hold not read again after a write: undone as if held");
            Some(Hold {
                user_id: user.to_string(),
                user_email: intent.target_user_email.clone(),
                placed_by: "(unknown: the hold could not be read)".into(),
                placed_ms: 0,
                reason: None,
                group_id: None,
            })
        }
    }
}

/// Undoes what `intent` gave (the key `made`, or API access), audited as a
/// part of the offboarding `hold` belongs to; the 409 for the page.
pub async fn undo(state: &AppState, hold: &Hold, intent: &Intent, made: Option<&str>) -> AppError {
    let Some(user) = intent.target_user_id.as_deref() else {
        return AppError::Held(String::new(), hold.refusal());
    };
    let base = Intent {
        target_user_id: Some(user.to_string()),
        target_user_email: intent.target_user_email.clone(),
        group_id: hold.group_id,
        reason: Some(format!(
            "{} by {} landed after the offboarding by {} began: undone at once",
            intent.action, intent.actor, hold.placed_by
        )),
        ..Intent::system(AuditAction::KeyRevoke)
    };
    let parsed = VultrId::parse(user);
    let undone = match (intent.action, made, parsed) {
        (
            AuditAction::KeyCreate | AuditAction::KeyRotate | AuditAction::GrantClaim,
            Some(key),
            Ok(user_id),
        ) => match VultrId::parse(key) {
            Ok(key_id) => {
                let undo = Intent {
                    key_id: Some(key.to_string()),
                    key_name: intent.key_name.clone(),
                    ..base
                };
                let call = state.vultr.delete_key(&user_id, &key_id);
                Some(record(state, &undo, call).await)
            }
            Err(_) => None,
        },
        (AuditAction::UserApiAccess, _, Ok(user_id)) => {
            let undo = Intent {
                api_enabled: Some(false),
                ..Intent {
                    action: AuditAction::UserApiAccess,
                    ..base
                }
            };
            let call = state.vultr.set_api_enabled(&user_id, false);
            Some(record(state, &undo, call).await)
        }
        _ => None,
    };
    metrics::counter!("keydesk_hold_undone_total").increment(1);
    let what = match undone {
        Some(true) => {
            "keydesk undid it at once: the key was revoked (or access switched off again) and never shown"
        }
        Some(false) => {
            "keydesk could not undo it at once: the offboarding's final pass revokes it, and it was never shown"
        }
        None => "it was never shown",
    };
    AppError::Held(
        user.to_string(),
        format!(
            "This user's offboarding by {} began while this was at Vultr; {what}. Reinstate first.",
            hold.placed_by
        ),
    )
}

/// The one audited undo: intent first, then the call, then the outcome.
async fn record(
    state: &AppState,
    intent: &Intent,
    call: impl Future<Output = Result<(), crate::vultr::VultrError>>,
) -> bool {
    let id = match state.audit.intent(intent).await {
        Ok(id) => id,
        Err(e) => {
            // Undo anyway: a leaver's key must not stay. The log says why
            // the audit lacks it.
            tracing::error!(error = %e, "undo intent not written; undoing anyway");
            return call.await.is_ok();
        }
    };
    match call.await {
        Ok(()) => {
            state.audit.settle(id, Outcome::Ok.settled()).await;
            true
        }
        Err(e) => {
            let text = e.to_string();
            let how = Settlement {
                upstream_status: e.status(),
                error: Some(&text),
                ..Outcome::Failed.settled()
            };
            state.audit.settle(id, how).await;
            false
        }
    }
}
