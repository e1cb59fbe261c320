//! The HTTP client `openidconnect` talks through: the `reqwest` already in
//! the tree (one TLS stack), with redirects off (a token endpoint that
//! redirects is refused, never followed), a short timeout, and answers
//! (discovery, keys, token, userinfo) read up to `MAX_BODY_BYTES`, as the
//! Vultr client reads its own: a provider cannot fill keydesk's memory.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};

/// The largest answer read from the provider. Real ones are a few KiB
/// (a JWKS with several keys included).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request to the OpenID provider failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("unreadable answer from the OpenID provider: {0}")]
    Response(#[from] http::Error),
    #[error("the OpenID provider's answer exceeds the {MAX_BODY_BYTES}-byte limit")]
    TooLarge,
}

#[derive(Clone, Debug)]
pub struct Http(reqwest::Client);

impl Http {
    pub fn new() -> Result<Self, String> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map(Self)
            .map_err(|e| format!("cannot build the OpenID HTTP client: {e}"))
    }
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)?;
            let mut response = self.0.execute(request).await?;
            let mut out = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                out = out.header(name, value);
            }
            if response
                .content_length()
                .is_some_and(|len| len > MAX_BODY_BYTES as u64)
            {
                return Err(HttpError::TooLarge);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(HttpError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(out.body(body)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider answering `body` to everything, its length declared or not.
    async fn provider(body: usize, declared: bool) -> String {
        let app = axum::Router::new().fallback(move || async move {
            let bytes = vec![b' '; body];
            match declared {
                true => axum::body::Body::from(bytes),
                // Streamed in chunks: no Content-Length to refuse up front.
                false => axum::body::Body::from_stream(futures_util::stream::iter(
                    bytes
                        .chunks(64 * 1024)
                        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                        .collect::<Vec<_>>(),
                )),
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    async fn get(url: &str) -> Result<HttpResponse, HttpError> {
        let request = http::Request::get(url).body(Vec::new()).unwrap();
        Http::new().unwrap().call(request).await
    }

    #[tokio::test]
    async fn answers_are_read_up_to_the_limit_and_no_further() {
        for declared in [true, false] {
            let ok = get(&provider(MAX_BODY_BYTES, declared).await).await;
            assert_eq!(ok.unwrap().body().len(), MAX_BODY_BYTES);
            let big = get(&provider(MAX_BODY_BYTES + 1, declared).await).await;
            assert!(
                matches!(big, Err(HttpError::TooLarge)),
                "{declared}: {big:?}"
            );
        }
    }
}
