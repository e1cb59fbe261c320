//! Real protocol peers for the notice channels: an SMTP listener that speaks
//! enough of RFC 5321 for lettre and records each message, and an HTTP
//! receiver that records each webhook POST. Either can be told to fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One message as the SMTP listener received it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body, as sent (DATA, dot-unstuffed).
    pub data: String,
}

impl Mail {
    /// The Subject header, unfolded, RFC 2047 words decoded.
    pub fn subject(&self) -> String {
        let mut value = String::new();
        let mut inside = false;
        for l in self.data.lines() {
            if inside && (l.starts_with(' ') || l.starts_with('\t')) {
                value.push_str(l);
            } else if inside {
                break;
            } else if l.to_ascii_lowercase().starts_with("subject:") {
                value.push_str(&l[8..]);
                inside = true;
            }
        }
        decode_words(value.trim())
    }

    /// The message with quoted-printable soft breaks and escapes undone.
    pub fn text(&self) -> String {
        let joined = self.data.replace("=\r\n", "");
        let mut out = String::new();
        let b = joined.as_bytes();
        let mut i = 0;
        let mut bytes = vec![];
        while i < b.len() {
            if b[i] == b'='
                && i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit()
            {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                bytes.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                bytes.push(b[i]);
                i += 1;
            }
        }
        out.push_str(&String::from_utf8_lossy(&bytes));
        out
    }
}

/// `=?utf-8?b?…?=` words of a header, decoded.
fn decode_words(v: &str) -> String {
    use base64::Engine;
    // Space between two encoded words is dropped (RFC 2047 §6.2); any other kept.
    let mut out = String::new();
    let mut prev_encoded = false;
    for w in v.split_whitespace() {
        let lower = w.to_ascii_lowercase();
        let encoded = lower.starts_with("=?utf-8?b?") && w.ends_with("?=");
        let joined = encoded && prev_encoded;
        if !out.is_empty() && !joined {
            out.push(' ');
        }
        if encoded {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&w[10..w.len() - 2])
                .unwrap_or_default();
            out.push_str(&String::from_utf8_lossy(&bytes));
        } else {
            out.push_str(w);
        }
        prev_encoded = encoded;
    }
    out
}

#[derive(Clone)]
pub struct SmtpSink {
    /// `smtp://127.0.0.1:PORT`, lettre's plain form.
    pub url: String,
    mails: Arc<Mutex<Vec<Mail>>>,
    fail: Arc<AtomicBool>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sink = Self {
            url: format!("smtp://127.0.0.1:{port}"),
            mails: Arc::default(),
            fail: Arc::default(),
        };
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = s.session(conn).await;
                });
            }
        });
        sink
    }

    /// From now on, refuse every message (451) until told otherwise.
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    async fn session(&self, conn: tokio::net::TcpStream) -> std::io::Result<()> {
        let (r, mut w) = conn.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"220 sink.test ESMTP\r\n").await?;
        let (mut from, mut to) = (String::new(), vec![]);
        while let Some(line) = lines.next_line().await? {
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                b"250-sink.test\r\n250 8BITMIME\r\n"
            } else if upper.starts_with("MAIL FROM:") {
                if self.fail.load(Ordering::SeqCst) {
                    b"451 4.3.0 try again later\r\n"
                } else {
                    from = addr(&line[10..]);
                    to.clear();
                    b"250 OK\r\n"
                }
            } else if upper.starts_with("RCPT TO:") {
                to.push(addr(&line[8..]));
                b"250 OK\r\n"
            } else if upper == "DATA" {
                w.write_all(b"354 end with .\r\n").await?;
                let mut data = String::new();
                while let Some(l) = lines.next_line().await? {
                    if l == "." {
                        break;
                    }
                    data.push_str(
                        l.strip_prefix('.')
                            .filter(|_| l.starts_with(".."))
                            .unwrap_or(&l),
                    );
                    data.push_str("\r\n");
                }
                self.mails.lock().unwrap().push(Mail {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data,
                });
                b"250 queued\r\n"
            } else if upper == "QUIT" {
                w.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else {
                b"250 OK\r\n"
            };
            w.write_all(reply).await?;
        }
        Ok(())
    }
}

/// `<a@b>` (and any parameters after it) → `a@b`.
fn addr(v: &str) -> String {
    let v = v.trim();
    let start = v.find('<').map(|i| i + 1).unwrap_or(0);
    let end = v[start..].find('>').map(|i| i + start).unwrap_or(v.len());
    v[start..end].to_string()
}

/// A webhook receiver: records each POST body (JSON), answers 200 or 500.
#[derive(Clone)]
pub struct WebhookSink {
    pub url: String,
    posts: Arc<Mutex<Vec<serde_json::Value>>>,
    fail: Arc<AtomicBool>,
}

impl WebhookSink {
    pub async fn start() -> Self {
        use axum::routing::post;
        let posts: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let fail: Arc<AtomicBool> = Arc::default();
        let (p, f) = (posts.clone(), fail.clone());
        let app = axum::Router::new().route(
            "/hooks/T000/B000/secret-token",
            post(move |body: axum::body::Bytes| {
                let (p, f) = (p.clone(), f.clone());
                async move {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    p.lock().unwrap().push(v);
                    if f.load(Ordering::SeqCst) {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hooks/T000/B000/secret-token"),
            posts,
            fail,
        }
    }

    /// Answer 500 to every POST (it is still recorded) until told otherwise.
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    pub fn posts(&self) -> Vec<serde_json::Value> {
        self.posts.lock().unwrap().clone()
    }
}
