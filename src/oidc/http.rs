//! The HTTP client `openidconnect` talks through: the `reqwest` already in
//! the tree (one TLS stack), with redirects off (a token endpoint that
//! redirects is refused, never followed) and a short timeout.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request to the OpenID provider failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("unreadable answer from the OpenID provider: {0}")]
    Response(#[from] http::Error),
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
            let response = self.0.execute(request).await?;
            let mut out = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                out = out.header(name, value);
            }
            let body = response.bytes().await?;
            Ok(out.body(body.to_vec())?)
        })
    }
}
