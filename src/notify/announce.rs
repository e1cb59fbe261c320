//! Messages that are not expiry notices, on the same channels: claim links
//! mailed to their owner, and announcements of approval requests and
//! decisions (webhook text made inert, mail).

use super::{Notifier, send};

impl Notifier {
    /// Whether mail can be sent (SMTP is configured).
    pub fn can_mail(&self) -> bool {
        self.mailer.is_some()
    }

    /// Mails `to` their claim link (never a key). Errors name no secret.
    pub async fn mail_claim_link(&self, to: &str, mail: send::ClaimMail<'_>) -> Result<(), String> {
        use askama::Template;
        let Some(mailer) = &self.mailer else {
            return Err("no SMTP configured".into());
        };
        let html = send::ClaimMailHtml { m: &mail }
            .render()
            .map_err(|e| format!("mail html: {e}"))?;
        let subject = format!("{} approved a Vultr API key for you", mail.granted_by);
        let text = mail.render().map_err(|e| format!("mail text: {e}"))?;
        mailer
            .send_parts(&[to.to_string()], &subject, text, html)
            .await
    }

    /// Whether a webhook is configured.
    pub fn has_webhook(&self) -> bool {
        self.webhook.is_some()
    }

    /// Posts `text` (made inert) to the webhook; an error in words.
    pub async fn post_text(&self, text: &str) -> Result<(), String> {
        match &self.webhook {
            Some(w) => w.send_text(text).await,
            None => Err("no webhook configured".into()),
        }
    }

    /// Mails `text` to `to` (HTML escaped by the template); an error in words.
    pub async fn mail_text(&self, to: &[String], subject: &str, text: &str) -> Result<(), String> {
        use askama::Template;
        let Some(m) = &self.mailer else {
            return Err("no SMTP configured".into());
        };
        let html = send::AnnounceHtml { text }
            .render()
            .map_err(|e| format!("mail html: {e}"))?;
        m.send_parts(to, subject, text.to_string(), html).await
    }

    /// Tells people of an event (an approval request or decision) on the
    /// channels that are on: the webhook gets `{"text": …}`, `to` a mail.
    /// Best effort: failures are logged, never raised.
    pub async fn announce(&self, subject: &str, text: &str, to: &[String]) {
        if let Some(w) = &self.webhook
            && let Err(e) = w.send_text(text).await
        {
            tracing::warn!(error = %e, "announcement not delivered to the webhook");
        }
        if let Some(m) = &self.mailer
            && !to.is_empty()
        {
            use askama::Template;
            let html = send::AnnounceHtml { text }.render().unwrap_or_default();
            if let Err(e) = m.send_parts(to, subject, text.to_string(), html).await {
                tracing::warn!(error = %e, "announcement mail not sent");
            }
        }
        self.announced
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}
