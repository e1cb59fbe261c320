//! `keydesk serve|demo|healthcheck`: parse the command line, build, run.
//! No logic here: configuration lives in `config`, start-up in `startup`.

use std::process::ExitCode;

use clap::Parser;
use keydesk::config::{Cli, Command};
use keydesk::fake_vultr::{FakeVultr, random_key};
use keydesk::startup::{Application, shutdown_signal};
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
        Command::Healthcheck { url } => keydesk::pages::ops::probe(&url).await,
        Command::Migrate(args) => {
            let url = args.url()?;
            let shown = keydesk::db::redacted(&url);
            let db = keydesk::db::Db::open_unmigrated(&url)
                .await
                .map_err(|e| format!("KEYDESK_DATABASE_URL {shown}: {e}"))?;
            db.migrate(true)
                .await
                .map_err(|e| format!("migrating {shown}: {e}"))?;
            db.close().await;
            println!("keydesk: {shown} is up to date");
            Ok(())
        }
        Command::Serve(args) => {
            telemetry::init(&args.common.log_format);
            let app = Application::build(args.settings()?).await?;
            tracing::info!(
                listen = %app.addr(),
                vultr = %args.vultr_api_url,
                auth_mode = %args.auth_mode,
                auth_header = %args.auth_header,
                trusted_proxies = ?args.trusted_proxies,
                "keydesk serving"
            );
            // Check the root key once at start; /readyz keeps reporting it.
            let state = app.state().clone();
            tokio::spawn(async move {
                match state.check_upstream().await {
                    Ok(()) => tracing::info!("root key accepted by Vultr"),
                    Err(reason) => {
                        tracing::error!(reason = %reason, "upstream check failed at start")
                    }
                }
            });
            app.run_until(shutdown_signal()).await
        }
        Command::Demo(args) => {
            telemetry::init(&args.common.log_format);
            // A fresh random root key that only the in-process fake accepts.
            let token = random_key();
            let url = FakeVultr::seeded(&token)
                .spawn()
                .await
                .map_err(|e| format!("cannot start the demo upstream: {e}"))?;
            let settings = args.settings(&url, SecretString::from(token))?;
            let app = Application::build(settings)
                .await
                .map_err(|e| format!("{e} (pick another with --listen 127.0.0.1:PORT)"))?;
            println!(
                "keydesk demo: open {}/ in your browser (signed in as {}; fake Vultr API with seeded users; Ctrl-C to stop)",
                app.base_url(),
                args.identity
            );
            app.run_until(shutdown_signal()).await
        }
    }
}
