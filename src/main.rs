//! `keydesk serve` and `keydesk demo`: parse, configure, run. No logic here.

use std::process::ExitCode;

use clap::Parser;
use http::HeaderName;
use keydesk::app::{self, AppState, Settings};
use keydesk::config::{Cli, Command};
use keydesk::fake_vultr::{FakeVultr, random_key};
use keydesk::identity::AuthMode;
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
            let header =
                HeaderName::from_bytes(args.auth_header.trim().as_bytes()).map_err(|_| {
                    format!(
                        "KEYDESK_AUTH_HEADER {:?} is not a header name",
                        args.auth_header
                    )
                })?;
            let settings = Settings {
                vultr_url: args.vultr_api_url.clone(),
                root_key,
                auth: AuthMode::Header {
                    header,
                    trusted: args.trusted_proxies.clone(),
                },
                audit_db: args.audit_db.clone(),
                cookie_secure: args.cookie_secure,
                upstream_timeout: args.common.upstream_timeout,
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
                auth_header = %args.auth_header,
                trusted_proxies = ?args.trusted_proxies,
                "keydesk serving"
            );
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
                audit_db: args.audit_db.clone(),
                cookie_secure: false,
                upstream_timeout: args.common.upstream_timeout,
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

async fn run_until_shutdown(
    listener: tokio::net::TcpListener,
    state: AppState,
) -> Result<(), String> {
    let audit = state.audit.clone();
    let router = app::build_router(state);
    let res = app::serve(listener, router, app::shutdown_signal()).await;
    // Flush and close the audit store after the last request finished.
    audit.close().await;
    res.map_err(|e| format!("server error: {e}"))
}
