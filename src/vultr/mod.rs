//! Typed async client for the parts of the Vultr API v2 keydesk uses.
//!
//! One `reqwest::Client` for the whole process. The root key is a
//! `SecretString` exposed at exactly one place: the bearer header.

mod allowlist;
mod budget;
mod transport;
pub mod types;

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

pub use types::*;

use crate::ids::VultrId;

/// Largest upstream body keydesk will buffer; anything bigger is refused.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Everything that can go wrong talking to Vultr, in terms a page can explain.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VultrError {
    /// Vultr answered with an error status (its `{"error": ...}` message when it sent one).
    #[error("Vultr answered {status}: {message}")]
    Api { status: u16, message: String },
    /// The connection could not be made: nothing reached Vultr.
    #[error("Vultr is unreachable: {0}")]
    Unreachable(String),
    /// No answer in time (for reads; writes use `OutcomeUnknown`).
    #[error("Vultr did not answer in time")]
    Timeout,
    /// A write was sent but its answer was lost: it may or may not have happened.
    #[error("the request reached Vultr but its answer was lost: {0}")]
    OutcomeUnknown(String),
    /// The body was not what the API documents.
    #[error("Vultr sent a response keydesk cannot read: {0}")]
    Malformed(String),
}

impl VultrError {
    pub fn status(&self) -> Option<u16> {
        match self {
            VultrError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How the client treats the upstream: timeouts, rate, retries, cache.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Overall timeout of one call (connect is bounded by the smaller of this and 5 s).
    pub timeout: Duration,
    /// Client-side rate limit shared by all upstream traffic, requests per second.
    pub rps: u32,
    /// Calls allowed at once above the rate (GCRA's burst); 4 keeps any
    /// second at or under rate + burst (25 + 4 < Vultr's 30/s).
    pub burst: u32,
    /// Time-to-live of cached users lists and user details; zero disables caching.
    pub cache_ttl: Duration,
    /// Retries for idempotent GETs (connection errors, 429, 502, 503, 504).
    pub max_retries: u32,
    /// First backoff step; doubles per retry, with full jitter.
    pub backoff_base: Duration,
    /// When set, `rps` is a budget shared through this database by every
    /// process using it (several replicas); else it is this process's own.
    pub shared_budget: Option<crate::db::Db>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            rps: 25,
            burst: BURST,
            cache_ttl: Duration::from_secs(10),
            max_retries: 3,
            backoff_base: Duration::from_millis(200),
            shared_budget: None,
        }
    }
}

/// Longest wait keydesk accepts from a `Retry-After` header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Tokens available at once: keeps any 1 s window at or under rate + burst
/// (25 + 4 < Vultr's 30/s).
const BURST: u32 = 4;
/// Vultr's own limit, per source IP.
const VULTR_PER_SECOND: u32 = 30;

/// Vultr answers 429 above 30 calls in any second: close to that rate the
/// burst shrinks so the rate plus the burst stays within it (at least 1).
fn burst_within_vultr(rps: u32, burst: u32) -> u32 {
    if rps <= VULTR_PER_SECOND {
        burst.min(VULTR_PER_SECOND - rps).max(1)
    } else {
        burst
    }
}

/// A parsed answer: any of the typed results a GET gives.
type Parsed = Arc<dyn Any + Send + Sync>;
type ParsedCache = moka::future::Cache<String, Parsed>;

/// Most distinct GETs remembered at once (invented cursors cannot grow it).
const CACHE_CAPACITY: u64 = 10_000;

struct Inner {
    http: reqwest::Client,
    base: String,
    key: SecretString,
    budget: budget::Budget,
    opts: ClientOptions,
    /// Parsed lists and user details, for `cache_ttl`. Never an error, never bytes.
    cache: ParsedCache,
    /// Single flight for what is not cached: concurrent identical GETs share
    /// one request, and the entry is dropped as soon as it is answered.
    flights: ParsedCache,
    /// GETs inside the cache or single flight now (waiting or fetching).
    gets_in_flight: AtomicUsize,
}

/// The Vultr API client: one per process, cheap to clone.
#[derive(Clone)]
pub struct VultrClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for VultrClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VultrClient")
            .field("base", &self.inner.base)
            .field("key", &"[REDACTED]")
            .field("opts", &self.inner.opts)
            .finish()
    }
}

/// A bound on pages followed: protects against an upstream that loops its cursors.
const MAX_PAGES: usize = 1000;
/// Keys asked for per page (Vultr's maximum for paged lists).
const KEYS_PER_PAGE: u32 = 500;

/// Cache key of the users list pages.
const LIST_PREFIX: &str = "/v2/users?";

impl VultrClient {
    pub fn new(base: &str, key: SecretString, timeout: Duration) -> Result<Self, reqwest::Error> {
        Self::with_options(
            base,
            key,
            ClientOptions {
                timeout,
                ..ClientOptions::default()
            },
        )
    }

    pub fn with_options(
        base: &str,
        key: SecretString,
        opts: ClientOptions,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(opts.timeout.min(Duration::from_secs(5)))
            .timeout(opts.timeout)
            .user_agent(concat!("keydesk/", env!("CARGO_PKG_VERSION")))
            // A redirect is an answer, never followed: the root key goes to
            // the configured URL only (as the OpenID and webhook clients).
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let burst = burst_within_vultr(opts.rps, opts.burst);
        let budget = match &opts.shared_budget {
            Some(db) => budget::Budget::shared(db.clone(), opts.rps, burst),
            None => budget::Budget::local(opts.rps, burst),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base: base.trim_end_matches('/').to_string(),
                key,
                budget,
                cache: moka::future::Cache::builder()
                    .max_capacity(CACHE_CAPACITY)
                    .time_to_live(opts.cache_ttl.max(Duration::from_millis(1)))
                    .support_invalidation_closures()
                    .build(),
                flights: moka::future::Cache::builder()
                    .max_capacity(CACHE_CAPACITY)
                    .build(),
                opts,
                gets_in_flight: AtomicUsize::new(0),
            }),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// GETs waiting in single flight or fetching now: one fetches, the rest wait.
    pub fn gets_in_flight(&self) -> usize {
        self.inner.gets_in_flight.load(Ordering::SeqCst)
    }

    #[tracing::instrument(skip_all, fields(vultr.cursor_present = cursor.is_some()))]
    pub async fn list_users(
        &self,
        per_page: u32,
        cursor: Option<&str>,
    ) -> Result<UsersPage, VultrError> {
        let mut query: Vec<(&str, String)> = vec![("per_page", per_page.to_string())];
        if let Some(c) = cursor.filter(|c| !c.is_empty()) {
            query.push(("cursor", c.to_string()));
        }
        self.get_json("GET /v2/users", "/v2/users", &query, true)
            .await
    }

    /// Every user, following cursors (search across pages, reports).
    pub async fn list_all_users(&self) -> Result<Vec<User>, VultrError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self.list_users(500, cursor.as_deref()).await?;
            let next = page.next_cursor();
            out.extend(page.users);
            match next {
                Some(n) if Some(&n) != cursor.as_ref() => cursor = Some(n),
                _ => break,
            }
        }
        Ok(out)
    }

    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id))]
    pub async fn get_user(&self, user_id: &VultrId) -> Result<User, VultrError> {
        let path = format!("/v2/users/{user_id}");
        let env: UserEnvelope = self
            .get_json("GET /v2/users/{id}", &path, &[], true)
            .await?;
        Ok(env.user)
    }

    /// The user as Vultr reports them now: one GET, neither read from the
    /// cache nor dropping anything from it (the users list stays cached).
    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id))]
    pub async fn get_user_now(&self, user_id: &VultrId) -> Result<User, VultrError> {
        let path = format!("/v2/users/{user_id}");
        let env: UserEnvelope = self
            .get_json("GET /v2/users/{id}", &path, &[], false)
            .await?;
        Ok(env.user)
    }

    /// Every key of a user, following `meta.links.next` cursors as the users
    /// list does. Keys are never cached: a create or revoke must show at once.
    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id))]
    pub async fn list_keys(&self, user_id: &VultrId) -> Result<Vec<ApiKey>, VultrError> {
        let path = format!("/v2/users/{user_id}/apikeys");
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query: Vec<(&str, String)> = vec![("per_page", KEYS_PER_PAGE.to_string())];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let env: KeysEnvelope = self
                .get_json("GET /v2/users/{id}/apikeys", &path, &query, false)
                .await?;
            out.extend(env.api_keys);
            match env.meta.next_cursor() {
                Some(n) if Some(&n) != cursor.as_ref() => cursor = Some(n),
                _ => return Ok(out),
            }
        }
        // A list that never ends is not a list keydesk can act on.
        Err(VultrError::Malformed(format!(
            "the key list did not end after {MAX_PAGES} pages"
        )))
    }

    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id, key.id = %key_id))]
    pub async fn get_key(&self, user_id: &VultrId, key_id: &VultrId) -> Result<ApiKey, VultrError> {
        let path = format!("/v2/users/{user_id}/apikeys/{key_id}");
        let env: KeyEnvelope = self
            .get_json("GET /v2/users/{id}/apikeys/{key}", &path, &[], false)
            .await?;
        Ok(env.api_key)
    }

    /// A user and one of their keys, fetched concurrently (one round trip).
    pub async fn get_user_and_key(
        &self,
        user_id: &VultrId,
        key_id: &VultrId,
    ) -> Result<(User, ApiKey), VultrError> {
        let (user, key) = tokio::join!(self.get_user(user_id), self.get_key(user_id, key_id));
        Ok((user?, key?))
    }

    /// Creates a key. Never retried: a lost answer is `OutcomeUnknown`, not a second POST.
    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id))]
    pub async fn create_key(
        &self,
        user_id: &VultrId,
        body: &NewApiKey,
    ) -> Result<CreatedApiKey, VultrError> {
        let path = format!("/v2/users/{user_id}/apikeys");
        let req = self.request(Method::POST, &path).json(body);
        let sent = self
            .send_once("POST /v2/users/{id}/apikeys", req, true)
            .await;
        self.invalidate_user(user_id);
        let bytes = sent.map_err(transport::create_error)?;
        let env: CreatedEnvelope = serde_json::from_slice(&bytes)
            // Vultr said yes but the answer is unreadable: the key may exist.
            // serde's message names the field, never its value: safe to keep.
            .map_err(|e| VultrError::OutcomeUnknown(format!("unreadable create response: {e}")))?;
        Ok(env.api_key)
    }

    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id, key.id = %key_id))]
    pub async fn delete_key(&self, user_id: &VultrId, key_id: &VultrId) -> Result<(), VultrError> {
        let path = format!("/v2/users/{user_id}/apikeys/{key_id}");
        let res = self
            .send_once(
                "DELETE /v2/users/{id}/apikeys/{key}",
                self.request(Method::DELETE, &path),
                true,
            )
            .await;
        self.invalidate_user(user_id);
        res.map(|_| ())
    }

    /// Switches a user's API access (`PATCH /v2/users/{id}` with `api_enabled`).
    #[tracing::instrument(skip_all, fields(vultr.user_id = %user_id))]
    pub async fn set_api_enabled(
        &self,
        user_id: &VultrId,
        enabled: bool,
    ) -> Result<(), VultrError> {
        let path = format!("/v2/users/{user_id}");
        let req = self
            .request(Method::PATCH, &path)
            .json(&serde_json::json!({ "api_enabled": enabled }));
        let res = self.send_once("PATCH /v2/users/{id}", req, true).await;
        self.invalidate_user(user_id);
        res.map(|_| ())
    }

    /// Drops cached views of a user (after any write to them) and of the lists.
    pub fn invalidate_user(&self, user_id: &VultrId) {
        let path = format!("/v2/users/{user_id}");
        let below = format!("{path}/");
        self.invalidate_if(move |k| {
            k == &path || k.starts_with(&below) || k.starts_with(LIST_PREFIX)
        });
    }

    /// Drops every cached list page (the "refresh" control).
    pub fn invalidate_lists(&self) {
        self.invalidate_if(|k| k.starts_with(LIST_PREFIX));
    }

    fn invalidate_if(&self, pred: impl Fn(&String) -> bool + Send + Sync + 'static) {
        if let Err(e) = self.inner.cache.invalidate_entries_if(move |k, _| pred(k)) {
            // Only possible without invalidation closures: drop everything instead.
            tracing::warn!(error = %e, "cache invalidation fell back to clearing");
            self.inner.cache.invalidate_all();
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.inner
            .http
            .request(method, format!("{}{}", self.inner.base, path))
            // The one place the root key leaves its SecretString.
            .bearer_auth(self.inner.key.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
    }

    /// A GET, parsed into `T`. Cacheable answers are kept for the cache's
    /// TTL once they parsed; everything goes through single flight, so
    /// concurrent identical GETs share one upstream request. Errors are
    /// never kept: the next request asks Vultr again.
    async fn get_json<T: DeserializeOwned + Clone + Send + Sync + 'static>(
        &self,
        endpoint: &'static str,
        path: &str,
        query: &[(&str, String)],
        cacheable: bool,
    ) -> Result<T, VultrError> {
        let key = if query.is_empty() {
            path.to_string()
        } else {
            let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{path}?{}", qs.join("&"))
        };
        let use_cache = cacheable && !self.inner.opts.cache_ttl.is_zero();
        let store = if use_cache {
            if let Some(hit) = self.inner.cache.get(&key).await {
                metrics::counter!("keydesk_cache_hits_total").increment(1);
                return downcast(hit);
            }
            metrics::counter!("keydesk_cache_misses_total").increment(1);
            &self.inner.cache
        } else {
            &self.inner.flights
        };
        let fetch = async {
            let body = self.get_with_retries(endpoint, path, query).await?;
            let value: T =
                serde_json::from_slice(&body).map_err(|e| VultrError::Malformed(e.to_string()))?;
            Ok::<Parsed, VultrError>(Arc::new(value))
        };
        self.inner.gets_in_flight.fetch_add(1, Ordering::SeqCst);
        let result = store
            .try_get_with(key.clone(), fetch)
            .await
            .map_err(|e: Arc<VultrError>| (*e).clone());
        self.inner.gets_in_flight.fetch_sub(1, Ordering::SeqCst);
        if !use_cache {
            self.inner.flights.invalidate(&key).await;
        }
        downcast(result?)
    }
}

/// A cached answer as the type it was parsed into. One cache key is only
/// ever filled by one endpoint's type, so a mismatch is a bug, reported as such.
fn downcast<T: Clone + Send + Sync + 'static>(v: Parsed) -> Result<T, VultrError> {
    v.downcast::<T>()
        .map(|t| (*t).clone())
        .map_err(|_| VultrError::Malformed("cached answer of another type".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_keeps_any_second_within_vultrs_30() {
        assert_eq!(burst_within_vultr(25, BURST), 4);
        assert_eq!(burst_within_vultr(27, BURST), 3);
        assert_eq!(burst_within_vultr(30, BURST), 1);
        assert_eq!(burst_within_vultr(1, 30), 29);
        for rps in 1..=30 {
            let b = burst_within_vultr(rps, BURST);
            assert!(b >= 1 && (rps + b <= 30 || b == 1), "{rps}/s, burst {b}");
        }
        // Above Vultr's rate (benches against the fake) it is left alone.
        assert_eq!(burst_within_vultr(100_000, BURST), BURST);
    }

    #[test]
    fn client_debug_hides_the_root_key() {
        let c = VultrClient::new(
            "http://x",
            SecretString::from("ROOTKEY-DO-NOT-LEAK"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("ROOTKEY"));
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let elsewhere = axum::Router::new().fallback(move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            axum::Json(serde_json::json!({"users": [], "meta": {"total": 0, "links": {}}}))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = format!("http://{}/v2/users", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, elsewhere).await });
        let redirector = axum::Router::new()
            .fallback(move || async move { axum::response::Redirect::temporary(&target) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, redirector).await });
        let c = VultrClient::new(&base, SecretString::from("k"), Duration::from_secs(5)).unwrap();
        let err = c.list_all_users().await.unwrap_err();
        assert!(
            matches!(err, VultrError::Api { status: 307, .. }),
            "{err:?}"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
    }

    #[test]
    fn the_cache_is_bounded() {
        let c =
            VultrClient::new("http://x", SecretString::from("k"), Duration::from_secs(1)).unwrap();
        assert_eq!(c.inner.cache.policy().max_capacity(), Some(CACHE_CAPACITY));
        assert_eq!(
            c.inner.flights.policy().max_capacity(),
            Some(CACHE_CAPACITY)
        );
    }
}
