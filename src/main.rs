//! `keydesk serve|demo|notify|migrate|healthcheck`: parse the command line, build, run.
//! No logic here: configuration lives in `config`, start-up in `startup`.

use std::process::ExitCode;

use keydesk::config::{Cli, Command};
use keydesk::fake_vultr::{FakeVultr, random_key};
use keydesk::startup::{Application, shutdown_signal};
use keydesk::telemetry;
use secrecy::SecretString;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse_or_explain();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keydesk: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `keydesk migrate --dry-run`: reads what is applied and the record, then
/// says what it would do (`schema::plan`). Reads only.
async fn migration_plan(db: &keydesk::db::Db) -> Result<String, String> {
    let record = db
        .release_record()
        .await
        .map_err(|e| format!("reading keydesk_release: {e}"))?;
    let applied = db.applied_versions().await;
    keydesk::schema::plan(
        keydesk::release::VERSION,
        &keydesk::schema::steps(db.engine()),
        &applied,
        record.as_ref(),
    )
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Healthcheck { url, admin_listen } => {
            let url = keydesk::config::healthcheck_url(url.as_deref(), admin_listen);
            keydesk::pages::ops::probe(&url).await
        }
        Command::FakeVultr { listen, root_key } => {
            telemetry::init("text");
            let token = root_key.unwrap_or_else(random_key);
            let url = FakeVultr::seeded(&token)
                .spawn_on(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            println!("keydesk fake-vultr: a fake Vultr API with seeded users at {url}");
            println!(
                "  try serve against it: KEYDESK_VULTR_API_URL={url} VULTR_API_KEY={token} keydesk serve"
            );
            shutdown_signal().await;
            Ok(())
        }
        Command::Migrate(args) => {
            let url = args.database.url()?;
            let shown = keydesk::db::redacted(&url);
            let db = keydesk::db::Db::open_unmigrated(&url)
                .await
                .map_err(|e| format!("KEYDESK_DATABASE_URL {shown}: {e}"))?;
            if args.dry_run {
                let plan = migration_plan(&db).await;
                db.close().await;
                println!("{}", plan?);
                return Ok(());
            }
            telemetry::init("text");
            let applied = db
                .migrate(true)
                .await
                .map_err(|e| format!("migrating {shown}: {e}"))?;
            let at = db.applied_versions().await.into_iter().max().unwrap_or(0);
            let record = db.release_record().await.ok().flatten();
            db.close().await;
            if applied.is_empty() {
                println!("keydesk: {shown} is up to date (schema at {at:04})");
            } else {
                let list: Vec<String> = applied.iter().map(|v| format!("{v:04}")).collect();
                println!(
                    "keydesk: {shown}: applied {}; schema at {at:04}",
                    list.join(", ")
                );
            }
            if let Some(r) = record {
                println!(
                    "keydesk: migrated by keydesk {}; the oldest release that may write to it: {}",
                    r.migrated_by, r.oldest_writer
                );
            }
            Ok(())
        }
        Command::RotateFormKey(args) => {
            let url = args.url()?;
            let shown = keydesk::db::redacted(&url);
            let db = keydesk::db::Db::open(&url)
                .await
                .map_err(|e| format!("KEYDESK_DATABASE_URL {shown}: {e}"))?;
            let kid = keydesk::form_keys::FormKeys::rotate(&db)
                .await
                .map_err(|e| format!("rotating the form key in {shown}: {e}"))?;
            db.close().await;
            println!(
                "keydesk: new form-token signing key {kid} in {shown}; the previous one verifies open forms until they expire"
            );
            Ok(())
        }
        Command::Serve(args) => {
            telemetry::init(&args.common.log_format);
            warn_unknown_variables();
            let settings = args.settings()?;
            let database = keydesk::db::redacted(&settings.database_url);
            if args.database.is_default() {
                tracing::warn!(
                    database = %database,
                    "no KEYDESK_DATABASE_URL: keeping keydesk's state in ./keydesk-audit.db (SQLite, in the working directory); several replicas need KEYDESK_DATABASE_URL=postgres://…"
                );
            }
            let engine = keydesk::db::Engine::of(&settings.database_url)?;
            tracing::info!(engine = ?engine, database = %database, "database");
            let app = Application::build(settings).await?;
            tracing::info!(
                listen = %app.addr(),
                admin_listen = app.admin_addr().map(tracing::field::display),
                vultr = %args.vultr_api_url,
                auth_mode = %args.auth_mode,
                auth_header = %args.auth_header,
                trusted_proxies = ?args.trusted_proxies,
                "keydesk serving"
            );
            // OpenID mode: discover the provider once at start, so a wrong
            // KEYDESK_OIDC_ISSUER shows in the log before anyone signs in.
            if let keydesk::identity::AuthMode::Oidc(oidc) = &app.state().auth {
                let oidc = oidc.clone();
                tokio::spawn(async move {
                    match oidc.check().await {
                        Ok(()) => {
                            tracing::info!(issuer = %oidc.settings.issuer, "OpenID provider discovered")
                        }
                        Err(reason) => tracing::error!(
                            reason = %reason,
                            "OpenID provider check failed at start (KEYDESK_OIDC_ISSUER)"
                        ),
                    }
                });
            }
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
        Command::Notify(cmd) => notify_once(*cmd).await,
        Command::Review(cmd) => review_start(*cmd).await,
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
            tracing::info!(listen = %app.addr(), database = %keydesk::db::redacted(&args.database), "keydesk serving");
            match &args.as_person {
                Some(person) => println!(
                    "keydesk demo: open {}/me in your browser (signed in as {person}, a key owner with no staff role; fake Vultr API with seeded users; Ctrl-C to stop)",
                    app.base_url()
                ),
                None => println!(
                    "keydesk demo: open {}/ in your browser (signed in as {}; fake Vultr API with seeded users; Ctrl-C to stop)",
                    app.base_url(),
                    args.identity
                ),
            }
            app.run_until(shutdown_signal()).await
        }
    }
}

/// Names each `KEYDESK_*` variable keydesk does not know, with the closest
/// known name: a typo must not pass for a setting.
fn warn_unknown_variables() {
    let known = Cli::variables();
    for (name, closest) in
        keydesk::config::unknown_variables(std::env::vars().map(|(k, _)| k), &known)
    {
        match closest {
            Some(c) => {
                tracing::warn!(variable = %name, "{name} is not a keydesk variable: did you mean {c}?")
            }
            None => {
                tracing::warn!(variable = %name, "{name} is not a keydesk variable; it is ignored")
            }
        }
    }
}

/// The settings of a one-shot command (`notify --once`, `review --start`):
/// serve's, against Vultr or (`--demo`) the demo's seeded fake.
async fn one_shot_settings(
    serve: &keydesk::config::ServeArgs,
    demo: bool,
) -> Result<keydesk::state::Settings, String> {
    if demo {
        let token = random_key();
        let url = FakeVultr::seeded(&token)
            .spawn()
            .await
            .map_err(|e| format!("cannot start the demo upstream: {e}"))?;
        serve.settings_with(&url, SecretString::from(token))
    } else {
        let key = serve.root_key().map_err(|e| e.to_string())?;
        serve.settings_with(&serve.vultr_api_url, key)
    }
}

/// `keydesk review --start`: one access review of KEYDESK_REVIEW_SCOPE,
/// its snapshot waited for, then exit; one already open is not an error.
async fn review_start(cmd: keydesk::config::ReviewCmd) -> Result<(), String> {
    telemetry::init(&cmd.serve.common.log_format);
    warn_unknown_variables();
    if !cmd.start {
        return Err("review starts one access review and exits: add --start (serve starts them on KEYDESK_REVIEW_EVERY)".into());
    }
    let settings = one_shot_settings(&cmd.serve, cmd.demo).await?;
    let state = keydesk::state::AppState::new(settings).await?;
    let started = keydesk::pages::reviews::schedule::start_and_wait(
        &state,
        "started by `keydesk review --start`",
    )
    .await;
    state.audit.close().await;
    println!("keydesk review: {}", started?);
    Ok(())
}

/// `keydesk notify --once`: one pass of expiry notices, then exit; an error
/// (Vultr unreadable, a channel failing) is a non-zero exit for cron.
async fn notify_once(cmd: keydesk::config::NotifyCmd) -> Result<(), String> {
    telemetry::init(&cmd.serve.common.log_format);
    warn_unknown_variables();
    if !cmd.once {
        return Err("notify runs one pass and exits: add --once (serve schedules passes itself with KEYDESK_NOTIFY_INTERVAL)".into());
    }
    let settings = one_shot_settings(&cmd.serve, cmd.demo).await?;
    if settings.notify.webhook.is_none() && settings.notify.smtp.is_none() {
        // A cron job that sends nothing must not look like one that worked.
        return Err("notify --once: no channel is configured: set KEYDESK_NOTIFY_WEBHOOK_URL or KEYDESK_SMTP_URL (or their _FILE)".into());
    }
    let state = keydesk::state::AppState::new(settings).await?;
    let notifier = state.notifier.clone();
    let now = time::OffsetDateTime::now_utc();
    let report = notifier
        .run(
            &state.vultr,
            &state.audit,
            keydesk::notify::Trigger::Command,
            now,
        )
        .await;
    state.audit.close().await;
    let report = report?;
    if report.skipped {
        println!("keydesk notify: another notice pass is running; this one did nothing");
        return Ok(());
    }
    println!(
        "keydesk notify: pass #{}: {} users, {} keys due, {} notices sent, {} failed",
        report.run_id, report.users, report.keys_due, report.sent, report.failed
    );
    match report.error {
        None => Ok(()),
        Some(e) => Err(format!("notice pass #{} failed: {e}", report.run_id)),
    }
}
