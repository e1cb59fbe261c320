//! A rogue OpenID provider, for the attacks a certified provider never makes:
//! it discovers and signs like a real one, then hands keydesk an ID token
//! forged as the test asks (another audience, expired, unsigned, signed with
//! a key that is not in its JWKS). `Forge::Honest` is the control: the same
//! provider signing correctly, which keydesk accepts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forge {
    Honest,
    OtherAudience,
    Expired,
    Unsigned,
    WrongKey,
    /// Signed with a second key (`rogue-2`) that the JWKS now also lists.
    Rotated,
    /// Signed with the second key under a `kid` no JWKS ever lists.
    UnknownKid,
    /// For keydesk, but authorized for (`azp`) another client.
    OtherAzp,
    /// For keydesk and another audience, with no `azp`.
    SeveralAudiences,
    /// Issued hours ago, though `exp` is still ahead: a replay.
    OldIat,
}

struct Inner {
    base: String,
    client_id: String,
    key_pem: String,
    other_pem: String,
    jwk: serde_json::Value,
    other_jwk: serde_json::Value,
    jwks_hits: std::sync::atomic::AtomicUsize,
    forge: Mutex<Forge>,
    email: Mutex<String>,
    nonces: Mutex<HashMap<String, String>>,
}

#[derive(Clone)]
pub struct Rogue(Arc<Inner>);

impl Rogue {
    /// Serves the rogue provider on an ephemeral port for `client_id`.
    pub async fn start(client_id: &str) -> Rogue {
        let mut rng = rand_core::OsRng;
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let other = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let pem = |k: &rsa::RsaPrivateKey| {
            k.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
                .unwrap()
                .to_string()
        };
        let jwk = json!({
            "kty": "RSA", "kid": "rogue-1", "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        });
        let other_jwk = json!({
            "kty": "RSA", "kid": "rogue-2", "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(other.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(other.e().to_bytes_be()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let rogue = Rogue(Arc::new(Inner {
            base,
            client_id: client_id.to_string(),
            key_pem: pem(&key),
            other_pem: pem(&other),
            jwk,
            other_jwk,
            jwks_hits: Default::default(),
            forge: Mutex::new(Forge::Honest),
            email: Mutex::new(super::oidc::OPS.to_string()),
            nonces: Mutex::new(HashMap::new()),
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(rogue.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        rogue
    }

    pub fn issuer(&self) -> &str {
        &self.0.base
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.0.jwks_hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What the next token will be.
    pub fn forge(&self, f: Forge) {
        *self.0.forge.lock().unwrap() = f;
    }

    /// The email the next tokens carry (verified); `OPS` until changed.
    pub fn email(&self, email: &str) {
        *self.0.email.lock().unwrap() = email.to_string();
    }
}

async fn discovery(State(r): State<Rogue>) -> impl IntoResponse {
    let b = &r.0.base;
    Json(json!({
        "issuer": b,
        "authorization_endpoint": format!("{b}/authorize"),
        "token_endpoint": format!("{b}/token"),
        "jwks_uri": format!("{b}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

/// The first key, and once a rotated token was asked for, the second too.
async fn jwks(State(r): State<Rogue>) -> impl IntoResponse {
    r.0.jwks_hits
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let rotated = *r.0.forge.lock().unwrap() == Forge::Rotated;
    let mut keys = vec![r.0.jwk.clone()];
    if rotated {
        keys.push(r.0.other_jwk.clone());
    }
    Json(json!({ "keys": keys }))
}

/// Signs anyone in at once: straight back to keydesk with a code.
async fn authorize(
    State(r): State<Rogue>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let code = uuid::Uuid::new_v4().simple().to_string();
    r.0.nonces
        .lock()
        .unwrap()
        .insert(code.clone(), q.get("nonce").cloned().unwrap_or_default());
    let state: String = form_urlencoded::byte_serialize(q["state"].as_bytes()).collect();
    Redirect::to(&format!("{}?code={code}&state={state}", q["redirect_uri"]))
}

async fn token(
    State(r): State<Rogue>,
    Form(f): Form<HashMap<String, String>>,
) -> axum::response::Response {
    // A code it never issued, or one already redeemed, is refused, as any
    // provider does: only its forgeries are rogue.
    let issued = r.0.nonces.lock().unwrap().remove(&f["code"]);
    let Some(nonce) = issued else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_grant" })),
        )
            .into_response();
    };
    let forge = *r.0.forge.lock().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (iat, exp) = match forge {
        Forge::Expired => (now - 300, now - 120),
        Forge::OldIat => (now - 3 * 3600, now + 300),
        _ => (now, now + 300),
    };
    let aud = match forge {
        Forge::OtherAudience => json!("another-app"),
        Forge::SeveralAudiences => json!([r.0.client_id, "another-app"]),
        _ => json!(r.0.client_id),
    };
    let email = r.0.email.lock().unwrap().clone();
    let mut claims = json!({
        "iss": r.0.base, "sub": "ops", "aud": aud, "iat": iat, "exp": exp,
        "nonce": nonce, "email": email, "email_verified": true,
    });
    if forge == Forge::OtherAzp {
        claims["azp"] = json!("another-app");
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(
        match forge {
            Forge::Rotated => "rogue-2",
            Forge::UnknownKid => "rogue-x",
            _ => "rogue-1",
        }
        .into(),
    );
    let id_token = match forge {
        Forge::Unsigned => format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        ),
        Forge::WrongKey | Forge::Rotated | Forge::UnknownKid => encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(r.0.other_pem.as_bytes()).unwrap(),
        )
        .unwrap(),
        _ => encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(r.0.key_pem.as_bytes()).unwrap(),
        )
        .unwrap(),
    };
    Json(json!({
        "access_token": "rogue-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}
