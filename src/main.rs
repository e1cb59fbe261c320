//! `keydesk serve` and `keydesk demo`: parse, configure, run. No logic here.

use std::process::ExitCode;

use clap::Parser;
use http::HeaderName;
use keydesk::app::{self, AppState, Settings};
use keydesk::config::{Cli, Command};
use keydesk::fake_vultr::{FakeVultr, random_key};
use keydesk::identity::{Access, AuthMode};
use keydesk::jwt::{JwtSettings, JwtVerifier, parse_algorithms};
use keydesk::telemetry;
use secrecy::SecretString;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keydesk: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Healthcheck { url } => {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .build()
                .map_err(|e| e.to_string())?;
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{url} answered {}", r.status())),
                Err(e) => Err(format!("{url}: {e}")),
            }
        }
        Command::Serve(args) => {
            telemetry::init(&args.common.log_format);
            let root_key = args.root_key().map_err(|e| e.to_string())?;
            let access = Access::new(&args.viewers, &args.operators);
            if access.is_empty() {
                return Err("neither KEYDESK_VIEWERS nor KEYDESK_OPERATORS is set: keydesk denies by default and would admit nobody".into());
            }
            let auth = auth_mode(&args)?;
            let policy = args.common.key_policy()?;
            let settings = Settings {
                vultr_url: args.vultr_api_url.clone(),
                root_key,
                auth,
                access,
                policy,
                audit_db: args.audit_db.clone(),
                cookie_secure: args.cookie_secure,
                upstream: args.common.client_options(),
                page_size: args.common.page_size,
            };
            let state = AppState::new(settings).await?;
            let listener = tokio::net::TcpListener::bind(args.common.listen)
                .await
                .map_err(|e| format!("KEYDESK_LISTEN {}: {e}", args.common.listen))?;
            let bound = listener
                .local_addr()
                .map_err(|e| format!("cannot read the listening address: {e}"))?;
            tracing::info!(
                listen = %bound,
                vultr = %args.vultr_api_url,
                auth_mode = %args.auth_mode,
                auth_header = %args.auth_header,
                trusted_proxies = ?args.trusted_proxies,
                "keydesk serving"
            );
            // Check the root key once at start; /readyz keeps reporting it.
            let probe = state.clone();
            tokio::spawn(async move {
                match keydesk::pages::ops::check_upstream(&probe).await {
                    Ok(()) => tracing::info!("root key accepted by Vultr"),
                    Err(reason) => {
                        tracing::error!(reason = %reason, "upstream check failed at start")
                    }
                }
            });
            run_until_shutdown(listener, state).await
        }
        Command::Demo(args) => {
            telemetry::init(&args.common.log_format);
            // A fresh random root key that only the in-process fake accepts.
            let token = random_key();
            let fake = FakeVultr::seeded(&token);
            let url = fake
                .spawn()
                .await
                .map_err(|e| format!("cannot start the demo upstream: {e}"))?;
            let settings = Settings {
                vultr_url: url,
                root_key: SecretString::from(token),
                auth: AuthMode::Demo(args.identity.clone()),
                access: Access::everyone_operates(),
                policy: args.common.key_policy()?,
                audit_db: args.audit_db.clone(),
                cookie_secure: false,
                upstream: args.common.client_options(),
                page_size: args.common.page_size,
            };
            let state = AppState::new(settings).await?;
            let listener = tokio::net::TcpListener::bind(args.common.listen)
                .await
                .map_err(|e| {
                    format!(
                        "KEYDESK_LISTEN {}: {e} (pick another with --listen 127.0.0.1:PORT)",
                        args.common.listen
                    )
                })?;
            let addr = listener
                .local_addr()
                .map_err(|e| format!("cannot read the listening address: {e}"))?;
            println!(
                "keydesk demo: open http://{addr}/ in your browser (signed in as {}; fake Vultr API with seeded users; Ctrl-C to stop)",
                args.identity
            );
            run_until_shutdown(listener, state).await
        }
    }
}

fn header_name(var: &str, value: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(value.trim().as_bytes())
        .map_err(|_| format!("{var} {value:?} is not a header name"))
}

fn auth_mode(args: &keydesk::config::ServeArgs) -> Result<AuthMode, String> {
    if args.auth_mode == "jwt" {
        let jwks_url = args
            .jwt_jwks_url
            .clone()
            .ok_or("KEYDESK_AUTH_MODE=jwt needs KEYDESK_JWT_JWKS_URL")?;
        let issuer = args
            .jwt_issuer
            .clone()
            .ok_or("KEYDESK_AUTH_MODE=jwt needs KEYDESK_JWT_ISSUER")?;
        let audience: Vec<String> = args
            .jwt_audience
            .iter()
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        if audience.is_empty() {
            return Err("KEYDESK_AUTH_MODE=jwt needs KEYDESK_JWT_AUDIENCE".into());
        }
        let verifier = JwtVerifier::new(JwtSettings {
            header: header_name("KEYDESK_JWT_HEADER", &args.jwt_header)?,
            jwks_url,
            issuer,
            audience,
            email_claim: args.jwt_email_claim.clone(),
            groups_claim: args.jwt_groups_claim.clone(),
            algorithms: parse_algorithms(&args.jwt_algorithms)?,
        })?;
        return Ok(AuthMode::Jwt(std::sync::Arc::new(verifier)));
    }
    Ok(AuthMode::Header {
        header: header_name("KEYDESK_AUTH_HEADER", &args.auth_header)?,
        groups_header: match args
            .groups_header
            .as_deref()
            .filter(|g| !g.trim().is_empty())
        {
            Some(g) => Some(header_name("KEYDESK_GROUPS_HEADER", g)?),
            None => None,
        },
        trusted: args.trusted_proxies.clone(),
    })
}

/// How long in-flight requests may take to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

async fn run_until_shutdown(
    listener: tokio::net::TcpListener,
    state: AppState,
) -> Result<(), String> {
    let audit = state.audit.clone();
    let router = app::build_router(state);
    let stopping = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = {
        let stopping = stopping.clone();
        async move {
            app::shutdown_signal().await;
            stopping.notify_one();
        }
    };
    let res = tokio::select! {
        r = app::serve(listener, router, signal) => r.map_err(|e| format!("server error: {e}")),
        _ = async {
            stopping.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "in-flight requests did not finish in time; stopping anyway");
            Ok(())
        }
    };
    // Flush and close the audit store after the last request finished.
    audit.close().await;
    tracing::info!("keydesk stopped");
    res
}
