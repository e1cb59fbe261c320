//! Test machinery of the fake, compiled only with the `test-support`
//! feature (the tests and benches turn it on): the request log, fault modes,
//! latency and Vultr's own rate limit.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{FakeVultr, lock, vultr_error};

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub body: String,
}

/// How the fake misbehaves, for failure tests.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer every request with this status and a Vultr error body.
    Status(u16),
    /// Answer 200 with JSON that breaks off (`{"users": [oops`).
    Malformed,
    /// Answer 200 with a valid-looking body cut off mid-object, as a proxy might.
    Truncated,
    /// Answer 200 with an HTML page instead of JSON.
    NotJson,
    /// Send 200 headers, then drop the connection mid-body.
    Reset,
    /// Hold every request this long before answering normally.
    Stall(Duration),
    /// Answer 429 with `Retry-After: N` seconds.
    RateLimited(u64),
    /// Answer 200 with a body of this many bytes.
    Huge(usize),
    /// Answer 200 with exactly this body (e.g. JSON without its envelope).
    Body(String),
    /// Answer as Vultr does when the root key's IP allow-list does not admit
    /// the caller: 401 "Unauthorized IP address: …".
    UnauthorizedIp,
}

/// Vultr answers 429 above this many requests in any second (per IP).
pub const VULTR_RPS: u32 = 30;

/// The knobs' state, inside the fake.
pub(super) struct Knobs {
    log: Mutex<Vec<Recorded>>,
    fault: Mutex<Option<Fault>>,
    /// Only requests with this method suffer the fault (all when None).
    fault_method: Mutex<Option<String>>,
    /// (method, requests of that method still to pass, status): the next
    /// one after those fails with the status, once.
    nth_fault: Mutex<Option<(String, usize, u16)>>,
    /// (method, path suffix, fault): the request is carried out, then its
    /// answer is replaced by the fault, as a gateway that loses Vultr's
    /// answer does.
    after: Mutex<Option<(String, String, Fault)>>,
    /// Vultr's own limit: more than this many requests in any second → 429.
    rate_limit: Mutex<Option<u32>>,
    recent: Mutex<VecDeque<Instant>>,
    too_many: AtomicUsize,
    latency: Mutex<Duration>,
    create_delay: Mutex<Duration>,
    /// Requests with this method and path prefix wait at the gate.
    hold: Mutex<Option<(String, String)>>,
    /// Requests waiting at the gate now.
    held: AtomicUsize,
    /// Open (`true`) lets held requests go on.
    gate: tokio::sync::watch::Sender<bool>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            log: Mutex::default(),
            fault: Mutex::default(),
            fault_method: Mutex::default(),
            nth_fault: Mutex::default(),
            after: Mutex::default(),
            // Vultr's own limit, on unless a test or bench turns it off.
            rate_limit: Mutex::new(Some(VULTR_RPS)),
            recent: Mutex::default(),
            too_many: AtomicUsize::default(),
            latency: Mutex::default(),
            create_delay: Mutex::default(),
            hold: Mutex::default(),
            held: AtomicUsize::default(),
            gate: tokio::sync::watch::Sender::new(true),
        }
    }
}

impl Knobs {
    /// Waits at the gate while it is closed, when the request matches the hold.
    async fn gate(&self, method: &str, path: &str) {
        let matches = lock(&self.hold)
            .as_ref()
            .is_some_and(|(m, p)| m == method && path.starts_with(p.as_str()));
        if !matches {
            return;
        }
        let mut open = self.gate.subscribe();
        self.held.fetch_add(1, Ordering::SeqCst);
        // An error means the fake is gone: nothing to wait for.
        let _ = open.wait_for(|o| *o).await;
        self.held.fetch_sub(1, Ordering::SeqCst);
    }

    /// Records the request, then applies the rate limit, latency and faults:
    /// the request to pass on, or the answer that replaces it.
    pub(super) async fn before(
        &self,
        req: axum::extract::Request,
    ) -> Result<axum::extract::Request, Response> {
        let (parts, body) = req.into_parts();
        let Ok(body) = axum::body::to_bytes(body, 1024 * 1024).await else {
            return Err(vultr_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request too large.",
            ));
        };
        lock(&self.log).push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            authorization: parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        self.gate(parts.method.as_str(), parts.uri.path()).await;
        if let Some(limit) = *lock(&self.rate_limit) {
            let now = Instant::now();
            let mut recent = lock(&self.recent);
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                recent.pop_front();
            }
            if recent.len() >= limit as usize {
                self.too_many.fetch_add(1, Ordering::SeqCst);
                return Err(vultr_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Rate limit exceeded.",
                ));
            }
            recent.push_back(now);
        }
        let latency = *lock(&self.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        {
            let mut nth = lock(&self.nth_fault);
            if let Some((m, left, code)) = nth.as_mut()
                && m == parts.method.as_str()
            {
                if *left == 0 {
                    let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY);
                    *nth = None;
                    return Err(vultr_error(status, "Injected failure."));
                }
                *left -= 1;
            }
        }
        let applies = lock(&self.fault_method)
            .as_deref()
            .is_none_or(|m| m == parts.method.as_str());
        let fault = if applies {
            lock(&self.fault).clone()
        } else {
            None
        };
        match fault.map(|f| f.answer()) {
            Some(Ok(answer)) => return Err(answer),
            Some(Err(stall)) => tokio::time::sleep(stall).await,
            None => {}
        }
        Ok(axum::extract::Request::from_parts(
            parts,
            axum::body::Body::from(body),
        ))
    }

    /// The real answer, or, when an after-fault matches `method`, the
    /// fault's answer once the real work is done (a stall delays it).
    pub(super) async fn after(&self, method: &str, path: &str, real: Response) -> Response {
        let fault = lock(&self.after)
            .as_ref()
            .filter(|(m, suffix, _)| m == method && path.ends_with(suffix.as_str()))
            .map(|(_, _, f)| f.clone());
        match fault.map(|f| f.answer()) {
            Some(Ok(answer)) => answer,
            Some(Err(stall)) => {
                tokio::time::sleep(stall).await;
                real
            }
            None => real,
        }
    }

    /// Holds a create as long as the test asked.
    pub(super) async fn before_create(&self) {
        let delay = *lock(&self.create_delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

impl Fault {
    /// The answer this fault gives, or how long it stalls before the real one.
    fn answer(self) -> Result<Response, Duration> {
        let json = [("content-type", "application/json")];
        Ok(match self {
            Fault::Status(code) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                vultr_error(status, "Injected failure.")
            }
            Fault::Malformed => (StatusCode::OK, "{\"users\": [oops").into_response(),
            Fault::Truncated => {
                let cut = r#"{"user": {"id": "cut-off", "email": "ada@exam"#;
                (StatusCode::OK, json, cut).into_response()
            }
            Fault::NotJson => {
                let page = "<html><body>Down for maintenance</body></html>";
                (StatusCode::OK, [("content-type", "text/html")], page).into_response()
            }
            Fault::Reset => {
                let broken = futures_util::stream::once(async {
                    Err::<axum::body::Bytes, _>(std::io::Error::other("connection reset"))
                });
                (StatusCode::OK, axum::body::Body::from_stream(broken)).into_response()
            }
            Fault::Stall(d) => return Err(d),
            Fault::RateLimited(secs) => {
                let mut r = vultr_error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded.");
                if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert("retry-after", v);
                }
                r
            }
            Fault::Huge(n) => (StatusCode::OK, vec![b' '; n]).into_response(),
            Fault::Body(b) => (StatusCode::OK, json, b).into_response(),
            Fault::UnauthorizedIp => vultr_error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized IP address: 127.0.0.1",
            ),
        })
    }
}

impl FakeVultr {
    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner.knobs.log).clone()
    }

    /// How many requests matched `method` and a path starting with `prefix`.
    pub fn count(&self, method: &str, prefix: &str) -> usize {
        lock(&self.inner.knobs.log)
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(prefix))
            .count()
    }

    pub fn clear_log(&self) {
        lock(&self.inner.knobs.log).clear();
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        *lock(&self.inner.knobs.fault_method) = None;
        *lock(&self.inner.knobs.fault) = fault;
    }

    /// Requests with `method` whose path ends with `suffix` ("" for all) are
    /// carried out, then their answer is replaced by `fault` (None clears
    /// it): the change happened, the answer is lost.
    pub fn set_fault_after(&self, method: &str, suffix: &str, fault: Option<Fault>) {
        *lock(&self.inner.knobs.after) = fault.map(|f| (method.to_string(), suffix.to_string(), f));
    }

    /// A fault that only requests with `method` suffer (e.g. only the create POST).
    pub fn set_fault_on(&self, method: &str, fault: Fault) {
        *lock(&self.inner.knobs.fault_method) = Some(method.to_string());
        *lock(&self.inner.knobs.fault) = Some(fault);
    }

    /// Every key's secret (tests look for leaks).
    pub fn secrets(&self) -> Vec<String> {
        lock(&self.inner.data)
            .keys
            .values()
            .flatten()
            .map(|k| k.secret.clone())
            .collect()
    }

    /// Changes a user's ACLs, as the console would.
    pub fn set_user_acls(&self, user_id: &str, acls: &[&str]) {
        for u in lock(&self.inner.data).users.iter_mut() {
            if u.id == user_id {
                u.acls = Some(acls.iter().map(|a| a.to_string()).collect());
            }
        }
    }

    /// Leaves a user's ACLs out of every answer, as a changed API might.
    pub fn set_user_acls_missing(&self, user_id: &str) {
        for u in lock(&self.inner.data).users.iter_mut() {
            if u.id == user_id {
                u.acls = None;
            }
        }
    }

    /// Replaces a user's allowlist with these entries as they are, readable
    /// or not.
    pub fn set_allowlist_entries(&self, user_id: &str, entries: Vec<crate::allowlist::Entry>) {
        lock(&self.inner.data)
            .allowlists
            .insert(user_id.to_string(), entries);
    }

    /// Changes a user's email, as the console would.
    pub fn set_user_email(&self, user_id: &str, email: &str) {
        for u in lock(&self.inner.data).users.iter_mut() {
            if u.id == user_id {
                u.email = Some(email.to_string());
            }
        }
    }

    /// The `n`th request (1-based) with `method` from now fails once with `status`.
    pub fn fail_nth(&self, method: &str, n: usize, status: u16) {
        *lock(&self.inner.knobs.nth_fault) =
            Some((method.to_string(), n.saturating_sub(1), status));
    }

    /// Vultr's rate limit: more than `per_second` requests in any sliding
    /// second are answered 429. On at Vultr's 30 by default; `None` turns it
    /// off (benches that measure keydesk's own cost above that rate).
    pub fn set_rate_limit(&self, per_second: Option<u32>) {
        *lock(&self.inner.knobs.rate_limit) = per_second;
    }

    /// How many 429s the rate limit has answered.
    pub fn rate_limited_count(&self) -> usize {
        self.inner
            .knobs
            .too_many
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Latency added to every request (benchmarks).
    pub fn set_latency(&self, d: Duration) {
        *lock(&self.inner.knobs.latency) = d;
    }

    /// Extra time a create takes, so tests can race concurrent submissions.
    pub fn set_create_delay(&self, d: Duration) {
        *lock(&self.inner.knobs.create_delay) = d;
    }

    /// Holds every request with `method` whose path starts with `prefix`
    /// until `release`: lets a test see what keydesk does meanwhile.
    pub fn hold(&self, method: &str, prefix: &str) {
        self.inner.knobs.gate.send_replace(false);
        *lock(&self.inner.knobs.hold) = Some((method.to_string(), prefix.to_string()));
    }

    /// How many requests wait at the hold now.
    pub fn held(&self) -> usize {
        self.inner.knobs.held.load(Ordering::SeqCst)
    }

    /// Lets every held request go on, and holds no more.
    pub fn release(&self) {
        *lock(&self.inner.knobs.hold) = None;
        self.inner.knobs.gate.send_replace(true);
    }
}
