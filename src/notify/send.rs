//! The channels a notice goes out on: a webhook (one JSON POST per pass) and
//! SMTP (a digest to the platform team, and each owner's own keys to them).
//! The webhook and SMTP URLs are secrets: never logged, never in an error.

use std::time::Duration;

use askama::Template;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

/// One key's notice, as every channel shows it. Never a secret.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub user_id: String,
    pub user_email: Option<String>,
    pub key_id: String,
    pub key_name: Option<String>,
    pub date_expire: String,
    pub days_left: i64,
    pub threshold_days: i64,
    pub expired: bool,
    /// The key's rotate page (absolute with `KEYDESK_PUBLIC_URL`).
    pub rotate_url: String,
    /// What the key can do: root, sensitive or limited (its user's ACLs).
    pub level: String,
    /// Whether it works from any address (`null`: the allowlist was unreadable).
    pub anywhere: Option<bool>,
}

impl Notice {
    pub fn name(&self) -> &str {
        self.key_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or("(unnamed)")
    }
    pub fn owner(&self) -> &str {
        self.user_email.as_deref().unwrap_or(&self.user_id)
    }
    pub fn date(&self) -> &str {
        self.date_expire.get(..10).unwrap_or(&self.date_expire)
    }
    /// "root-equivalent, usable from any address": what a leak would mean.
    pub fn reach(&self) -> String {
        let level = crate::powers::Level::parse(&self.level)
            .map(|l| l.words())
            .unwrap_or("unknown level");
        match self.anywhere {
            Some(true) => format!("{level}, usable from any address"),
            Some(false) => format!("{level}, allowlisted addresses only"),
            None => format!("{level}, allowlist unknown"),
        }
    }

    /// "expires in 7 days", "expires tomorrow", "expired 2 days ago".
    pub fn when(&self) -> String {
        match self.days_left {
            d if self.expired && d >= -1 => "expired today or yesterday".to_string(),
            d if self.expired => format!("expired {} days ago", -d),
            0 => "expires within a day".to_string(),
            1 => "expires in 1 day".to_string(),
            d => format!("expires in {d} days"),
        }
    }
}

/// Whether `email` is an address mail can be sent to.
pub fn is_address(email: Option<&str>) -> bool {
    email.is_some_and(|e| e.parse::<Mailbox>().is_ok())
}

/// Subject of a message about `notices`.
pub fn subject(notices: &[Notice], own: bool) -> String {
    let your = if own { "Your " } else { "" };
    match notices {
        [one] => format!("{your}Vultr API key “{}” {}", one.name(), one.when()),
        many => format!(
            "{your}{} Vultr API keys expire soon or have expired",
            many.len()
        ),
    }
}

/// The digest in words (the webhook's `text`), no markup of its own:
/// `chat_inert` turns what would be markup into look-alikes.
#[derive(Template)]
#[template(path = "notices/digest.txt", escape = "none")]
pub struct Digest<'a> {
    pub notices: &'a [Notice],
}

#[derive(Template)]
#[template(path = "notices/email.txt", escape = "none")]
pub struct EmailText<'a> {
    pub notices: &'a [Notice],
    /// Mail to the key's owner about their own keys (else the team digest).
    pub own: bool,
}

#[derive(Template)]
#[template(path = "notices/email.html")]
pub struct EmailHtml<'a> {
    pub notices: &'a [Notice],
    pub own: bool,
}

/// The webhook's JSON body.
#[derive(Serialize)]
struct WebhookBody<'a> {
    text: String,
    keys: &'a [Notice],
    /// Slack previews no link a key name or reason carries (a stranger's
    /// image in the channel); Mattermost ignores the fields.
    unfurl_links: bool,
    unfurl_media: bool,
}

/// POSTs one digest to a webhook.
pub struct Webhook {
    url: SecretString,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(url: SecretString) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url.expose_secret())
            .map_err(|_| "KEYDESK_NOTIFY_WEBHOOK_URL is not a URL".to_string())?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("KEYDESK_NOTIFY_WEBHOOK_URL must be http(s)".into());
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the webhook client: {}", e.without_url()))?;
        Ok(Self { url, http })
    }

    /// One POST; a non-2xx answer is a failure. Errors never hold the URL.
    pub async fn send(&self, notices: &[Notice]) -> Result<(), String> {
        let text = Digest { notices }
            .render()
            .map_err(|e| format!("digest: {e}"))?;
        self.post(&WebhookBody {
            text: chat_inert(&text),
            keys: notices,
            unfurl_links: false,
            unfurl_media: false,
        })
        .await
    }

    /// A message in words only (`{"text": …}`), e.g. an approval request.
    pub async fn send_text(&self, text: &str) -> Result<(), String> {
        self.post(&serde_json::json!({
            "text": chat_inert(text),
            "unfurl_links": false,
            "unfurl_media": false,
        }))
        .await
    }

    async fn post(&self, body: &impl Serialize) -> Result<(), String> {
        let resp = self
            .http
            .post(self.url.expose_secret())
            .json(body)
            .send()
            .await
            .map_err(|e| format!("webhook unreachable: {}", e.without_url()))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered {}", status.as_u16()))
        }
    }
}

/// Chat `text` made inert in both renderers keydesk posts to, whatever a
/// key, a reason or an email holds:
/// - Slack reads `<!channel>`, `<@U123>` and `<url|label>` as mentions and
///   disguised links: `&`, `<` and `>` are escaped as it requires (Mattermost
///   shows the entities as the characters, and `&gt;` opens no quote);
/// - Mattermost renders Markdown (`[t](u)`, `![x](u)`, `*`, `_`, `~`,
///   backticks, `#` headings, `|` tables) and Slack its own `*`, `_`, `~`
///   and backticks. Slack has no escape character, so each of these becomes
///   a look-alike that is no markup in either (`∗`, `ˍ`, `∼`, `ˋ`, `［`,
///   `］`, `＃`, `ǀ`). An `_` between letters stays: neither renderer
///   reads emphasis there, and names like `ci_deploy` read as they are;
/// - Mattermost pings `@channel`, `@all`, `@here` and `@name`: an `@` that
///   does not follow a letter or digit (as in an email) gets a word joiner
///   (U+2060) after it, invisible, and no mention.
pub fn chat_inert(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut prev: Option<char> = None;
    let mut chars = text.chars().peekable();
    let wordy = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    while let Some(c) = chars.next() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '*' => out.push('\u{2217}'),
            '_' if wordy(prev) && wordy(chars.peek().copied()) => out.push('_'),
            '_' => out.push('\u{02CD}'),
            '~' => out.push('\u{223C}'),
            '`' => out.push('\u{02CB}'),
            '[' => out.push('\u{FF3B}'),
            ']' => out.push('\u{FF3D}'),
            '#' => out.push('\u{FF03}'),
            '|' => out.push('\u{01C0}'),
            '@' if wordy(prev) => out.push('@'),
            '@' => out.push_str("@\u{2060}"),
            c => out.push(c),
        }
        prev = Some(c);
    }
    out
}

/// Sends mail over SMTP (lettre), from one sender.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// `url` in lettre's form: `smtp://host:port` (plain, a local relay),
    /// `smtp://…?tls=required` (STARTTLS), `smtps://…` (implicit TLS),
    /// credentials in the URL.
    pub fn new(url: &SecretString, from: &str) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            // lettre's message names the problem, not the URL's contents.
            .map_err(|e| format!("KEYDESK_SMTP_URL is not usable: {e}"))?
            .timeout(Some(Duration::from_secs(20)))
            .build();
        let from = from
            .parse()
            .map_err(|e| format!("KEYDESK_NOTIFY_FROM {from:?} is not an address: {e}"))?;
        Ok(Self { transport, from })
    }

    /// One message to `to` about `notices`, with text and HTML parts.
    pub async fn send(&self, to: &[String], notices: &[Notice], own: bool) -> Result<(), String> {
        let text = EmailText { notices, own }
            .render()
            .map_err(|e| format!("mail text: {e}"))?;
        let html = EmailHtml { notices, own }
            .render()
            .map_err(|e| format!("mail html: {e}"))?;
        self.send_parts(to, &subject(notices, own), text, html)
            .await
    }

    /// One message with a text and an HTML part.
    pub async fn send_parts(
        &self,
        to: &[String],
        subject: &str,
        text: String,
        html: String,
    ) -> Result<(), String> {
        let mut msg = Message::builder().from(self.from.clone()).subject(subject);
        for rcpt in to {
            let mbox: Mailbox = rcpt
                .parse()
                .map_err(|e| format!("recipient {rcpt:?} is not an address: {e}"))?;
            msg = msg.to(mbox);
        }
        let msg = msg
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| format!("mail: {e}"))?;
        self.transport
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}

/// The HTML part of an announcement (an approval request or decision):
/// its plain text, escaped, line by line.
#[derive(Template)]
#[template(path = "notices/announce.html")]
pub struct AnnounceHtml<'a> {
    pub text: &'a str,
}

/// The mail that hands a claim link to its owner: who granted what, and the
/// link. Never a key: the key does not exist until the owner claims it.
#[derive(Template)]
#[template(path = "notices/claim.txt", escape = "none")]
pub struct ClaimMail<'a> {
    pub granted_by: &'a str,
    pub key_name: &'a str,
    pub expiry: &'a str,
    pub link: &'a str,
    pub until: &'a str,
}

/// The same mail's HTML part (escaped).
#[derive(Template)]
#[template(path = "notices/claim.html")]
pub struct ClaimMailHtml<'a, 'b> {
    pub m: &'b ClaimMail<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(days: i64, expired: bool) -> Notice {
        Notice {
            user_id: "u1".into(),
            user_email: Some("ada@example.com".into()),
            key_id: "k1".into(),
            key_name: Some("ci <deploy>".into()),
            date_expire: "2026-12-03T00:00:00Z".into(),
            days_left: days,
            threshold_days: if expired { 0 } else { 7 },
            expired,
            rotate_url: "https://kd.example/users/u1/keys/k1/rotate".into(),
            level: "root".into(),
            anywhere: Some(true),
        }
    }

    #[test]
    fn a_notice_says_what_a_leak_would_mean() {
        assert_eq!(
            notice(7, false).reach(),
            "root-equivalent, usable from any address"
        );
        let narrow = Notice {
            level: "limited".into(),
            anywhere: Some(false),
            ..notice(7, false)
        };
        assert_eq!(narrow.reach(), "limited, allowlisted addresses only");
        let json = serde_json::to_value(notice(7, false)).unwrap();
        assert_eq!(
            (json["level"].as_str(), json["anywhere"].as_bool()),
            (Some("root"), Some(true))
        );
    }

    #[test]
    fn chat_text_cannot_mention_or_disguise_a_link_in_slack() {
        let evil = "<!channel> <https://evil.example|rotate now> & <@U1>";
        let safe = chat_inert(evil);
        assert_eq!(
            safe,
            "&lt;!channel&gt; &lt;https://evil.example\u{01C0}rotate now&gt; &amp; &lt;@\u{2060}U1&gt;"
        );
        assert!(!safe.contains('<') && !safe.contains('>'));
        // Slack's own emphasis, strike and code need their characters.
        let marked = chat_inert("*bold* _it_ ~gone~ `code` ```block```");
        assert!(!marked.contains(['*', '~', '`']), "{marked}");
        assert!(!marked.contains(" _") && !marked.contains("_ "), "{marked}");
    }

    /// What Mattermost's Markdown (CommonMark and GitHub's tables,
    /// strike-through and autolinks) would turn into markup or a ping.
    fn mattermost_markup(text: &str) -> Vec<&'static str> {
        let mut found = vec![];
        if text.contains("](") || text.contains("][") || text.contains('[') {
            found.push("link or image");
        }
        if text.contains(['*', '~', '`', '|']) {
            found.push("emphasis, strike, code or table");
        }
        if text
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|w| w.starts_with('_') || w.ends_with('_'))
        {
            found.push("underscore emphasis");
        }
        if text.lines().any(|l| l.trim_start().starts_with(['#', '>'])) {
            found.push("heading or quote");
        }
        for (i, _) in text.match_indices('@') {
            let before = text[..i].chars().next_back();
            let after = text[i + 1..].chars().next();
            if !before.is_some_and(|c| c.is_ascii_alphanumeric())
                && after.is_some_and(|c| c.is_ascii_alphanumeric())
            {
                found.push("mention");
            }
        }
        found
    }

    #[test]
    fn chat_text_renders_no_markdown_and_pings_nobody_in_mattermost() {
        let evil = "[rotate now](https://evil.example) ![x](https://evil.example/p.png) \
                    **bold** _it_ ~~gone~~ `code` @channel @all @here (@here) x.@all\n\
                    # Heading\n> quote\n| a | b |\n|---|---|";
        let safe = chat_inert(evil);
        let mut kinds = mattermost_markup(evil);
        kinds.dedup();
        assert_eq!(kinds.len(), 5, "the checker sees each kind: {kinds:?}");
        assert_eq!(mattermost_markup(&safe), Vec::<&str>::new(), "{safe}");
        // Still readable: the words are there, look-alikes stand in.
        assert!(
            safe.contains("［rotate now］(https://evil.example)"),
            "{safe}"
        );
        assert!(
            safe.contains("@\u{2060}channel @\u{2060}all @\u{2060}here"),
            "{safe}"
        );
        // Emails and snake_case names keep their characters.
        assert_eq!(
            chat_inert("ada@example.com ci_deploy_2"),
            "ada@example.com ci_deploy_2"
        );
        assert_eq!(chat_inert("ops.team@corp.example"), "ops.team@corp.example");
    }

    #[test]
    fn subjects_and_words() {
        assert_eq!(
            subject(&[notice(7, false)], true),
            "Your Vultr API key “ci <deploy>” expires in 7 days"
        );
        assert_eq!(
            subject(&[notice(7, false), notice(1, false)], false),
            "2 Vultr API keys expire soon or have expired"
        );
        assert_eq!(notice(-3, true).when(), "expired 3 days ago");
    }

    #[test]
    fn the_html_part_escapes_names_and_the_text_part_keeps_them() {
        let n = [notice(7, false)];
        let html = EmailHtml {
            notices: &n,
            own: false,
        }
        .render()
        .unwrap();
        assert!(
            html.contains("ci &#60;deploy&#62;") || html.contains("ci &lt;deploy&gt;"),
            "{html}"
        );
        let text = EmailText {
            notices: &n,
            own: false,
        }
        .render()
        .unwrap();
        assert!(text.contains("ci <deploy>"));
        assert!(text.contains("https://kd.example/users/u1/keys/k1/rotate"));
    }
}
