//! Static assets compiled into the binary, served with a content hash in the
//! URL so browsers may cache them for a year.

use std::hash::{Hash, Hasher};
use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

pub struct Asset {
    pub name: &'static str,
    pub body: &'static str,
    pub mime: &'static str,
    hash: LazyLock<String>,
}

impl Asset {
    pub fn url(&self) -> String {
        format!("/static/{}?v={}", self.name, *self.hash)
    }
}

fn content_hash(body: &str) -> String {
    // Cache busting only, not security: a fixed-key SipHash is enough.
    let mut h = std::hash::DefaultHasher::new();
    body.hash(&mut h);
    format!("{:016x}", h.finish())
}

pub static CSS: Asset = Asset {
    name: "app.css",
    body: include_str!("../../static/app.css"),
    mime: "text/css; charset=utf-8",
    hash: LazyLock::new(|| content_hash(include_str!("../../static/app.css"))),
};

pub static JS: Asset = Asset {
    name: "app.js",
    body: include_str!("../../static/app.js"),
    mime: "text/javascript; charset=utf-8",
    hash: LazyLock::new(|| content_hash(include_str!("../../static/app.js"))),
};

/// `GET /static/{name}`.
pub async fn serve_static(Path(name): Path<String>) -> Response {
    let asset = match name.as_str() {
        "app.css" => &CSS,
        "app.js" => &JS,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, asset.mime),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        asset.body,
    )
        .into_response()
}
