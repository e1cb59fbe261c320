//! `Application::build`: the one start-up, used by `main`, the tests and the
//! benches. It binds the listener (port 0 for an ephemeral port), builds the
//! state and the router, and serves until told to stop, then drains
//! in-flight requests within a bounded grace period and closes the audit store.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::state::{AppState, Settings};

/// How long in-flight requests may take to finish after SIGTERM/SIGINT.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// A built keydesk: bound, not yet serving.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    /// `KEYDESK_ADMIN_LISTEN`, bound: the probes and metrics alone.
    admin: Option<(TcpListener, SocketAddr)>,
    state: AppState,
}

impl Application {
    /// Builds the state and binds `settings.listen`; an error names what failed.
    pub async fn build(settings: Settings) -> Result<Self, String> {
        let (listen, admin_listen) = (settings.listen, settings.admin_listen);
        let scan_at_start = settings.scan_at_start;
        let review_at_start = settings.review_at_start;
        let state = AppState::new(settings).await?;
        if scan_at_start {
            first_scan(&state).await?;
        }
        if review_at_start {
            crate::pages::reviews::schedule::open_one_at_start(&state).await;
        }
        let (listener, addr) = bind("KEYDESK_LISTEN", listen).await?;
        let admin = match admin_listen {
            Some(at) => Some(bind("KEYDESK_ADMIN_LISTEN", at).await?),
            None => None,
        };
        Ok(Self {
            listener,
            addr,
            admin,
            state,
        })
    }

    /// The admin listener's bound address, when `KEYDESK_ADMIN_LISTEN` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, a)| *a)
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for clients on this machine.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then gives in-flight requests
    /// `SHUTDOWN_GRACE` to finish, and closes the audit store last.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let audit = self.state.audit.clone();
        let upkeep = tokio::spawn(upkeep(self.state.clone()));
        let notices = tokio::spawn(notice_schedule(self.state.clone()));
        let jobs = tokio::spawn(resume_jobs(self.state.clone()));
        let (probes, admin) = match self.admin {
            Some((listener, _)) => {
                let router = crate::app::admin_router(self.state.clone());
                let serve = axum::serve(listener, router);
                let admin = tokio::spawn(async move {
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "admin listener stopped");
                    }
                });
                (crate::app::Probes::Admin, Some(admin))
            }
            None => (crate::app::Probes::Public, None),
        };
        let router = crate::app::build_router(self.state, probes);
        let stopping = std::sync::Arc::new(tokio::sync::Notify::new());
        let signal = {
            let stopping = stopping.clone();
            async move {
                shutdown.await;
                stopping.notify_one();
            }
        };
        let serve = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal);
        let res = tokio::select! {
            r = serve => r.map_err(|e| format!("server error: {e}")),
            _ = async {
                stopping.notified().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "in-flight requests did not finish in time; stopping anyway");
                Ok(())
            }
        };
        upkeep.abort();
        notices.abort();
        // Probes answer while requests drain, then stop with the rest.
        if let Some(admin) = admin {
            admin.abort();
        }
        jobs.abort();
        // No request of this process can settle its open intents any more.
        match audit.mark_own_unknown().await {
            Ok(n) if n > 0 => {
                tracing::warn!(target: "audit", count = n, "open audit entries of this process marked unknown")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not mark this process's open audit entries")
            }
        }
        // Flush and close the database after the last request finished.
        audit.close().await;
        tracing::info!("keydesk stopped");
        res
    }

    /// Serves in the background until the process ends (tests and benches).
    pub fn spawn(self) -> (String, AppState) {
        let base = self.base_url();
        let state = self.state.clone();
        tokio::spawn(self.run_until(std::future::pending()));
        (base, state)
    }
}

/// How long start-up waits for the first scan (`Settings::scan_at_start`).
const FIRST_SCAN_WAIT: Duration = Duration::from_secs(60);

/// Runs one expiring-keys scan, as the system actor, and waits for it: the
/// reports then show its result from the first page. A scan that takes too
/// long goes on in the background.
async fn first_scan(state: &AppState) -> Result<(), String> {
    state
        .reports
        .start(
            state.vultr.clone(),
            state.audit.clone(),
            crate::audit::SYSTEM_ACTOR,
        )
        .await
        .map_err(|e| format!("cannot start the first scan: {e}"))?;
    if tokio::time::timeout(FIRST_SCAN_WAIT, state.reports.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!(
            wait_s = FIRST_SCAN_WAIT.as_secs(),
            "the first scan is still running; serving meanwhile"
        );
    }
    Ok(())
}

/// Binds `addr`; an error names the variable it came from.
async fn bind(var: &str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{var} {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the address bound for {var}: {e}"))?;
    Ok((listener, bound))
}

/// How often expired sessions and tokens are deleted and stale intents marked.
const UPKEEP_EVERY: Duration = Duration::from_secs(60);

/// Periodic housekeeping, on every replica (each statement is idempotent):
/// delete expired sessions and form tokens, so the database stays bounded,
/// mark open audit intents unknown once no request can settle them, and
/// expire claim links past their time.
async fn upkeep(state: AppState) {
    use tower_sessions::ExpiredDeletion;
    let sessions = crate::session_store::DbSessionStore::new(state.db.clone());
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = sessions.delete_expired().await {
            tracing::warn!(error = %e, "could not delete expired sessions");
        }
        if let Err(e) = state.tokens.purge_expired().await {
            tracing::warn!(error = %e, "could not delete expired form tokens");
        }
        // A rotation made on another replica (or by `keydesk rotate-form-key`).
        if let Err(e) = state.tokens.keys().refresh().await {
            tracing::warn!(error = %e, "could not refresh the form-token signing keys");
        }
        match state.audit.mark_stale(false).await {
            Ok(n) if n > 0 => {
                tracing::warn!(target: "audit", count = n, "open audit entries marked unknown")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not mark stale audit entries"),
        }
        // Claim links past their time: expired once, audited by the replica that wins.
        state.grants.sweep(&state.audit).await;
        state.approvals.sweep(&state.audit).await;
        crate::reconcile::lost::sweep(&state.lost, &state.audit, &state.vultr).await;
        match state
            .offboardings
            .sweep(state.audit.pending_bound_ms())
            .await
        {
            Ok(n) if n > 0 => tracing::warn!(count = n, "offboardings cut short marked unfinished"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not sweep offboardings"),
        }
        metrics::counter!("keydesk_upkeep_passes_total").increment(1);
    }
}

/// Every third of the job lease, on every replica: durable jobs whose
/// replica stopped (lease expired) are taken over and finished here, and
/// approval executions it left are settled (outcome unknown).
async fn resume_jobs(state: AppState) {
    let mut tick = tokio::time::interval(state.leases.beat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut notices: Option<tokio::task::JoinHandle<()>> = None;
    let mut beats: u64 = 0;
    loop {
        tick.tick().await;
        let n = crate::pages::offboard::resume_stalled(&state).await;
        if n > 0 {
            metrics::counter!("keydesk_jobs_resumed_total", "job" => "offboarding")
                .increment(n as u64);
        }
        state.approvals.sweep_lapsed(&state.audit).await;
        let n = crate::pages::cleanup_job::resume_stalled(&state).await;
        if n > 0 {
            metrics::counter!("keydesk_jobs_resumed_total", "job" => "cleanup").increment(n as u64);
        }
        // Access reviews: snapshots and applications whose replica stopped,
        // reviews past their deadline; every sixth beat, the schedule, the
        // reminders and the unknown outcomes.
        let n = crate::pages::reviews::snapshot::resume_stalled(&state).await
            + crate::pages::reviews::close::resume_stalled(&state).await;
        if n > 0 {
            metrics::counter!("keydesk_jobs_resumed_total", "job" => "review").increment(n as u64);
        }
        beats += 1;
        if beats % 6 == 1 {
            crate::pages::reviews::schedule::start_if_due(&state).await;
            crate::pages::reviews::notices::remind_due(&state).await;
            crate::pages::reviews::reconcile::reconcile_unknown(&state).await;
        }
        // A notice pass whose replica stopped: one look at a time, in its
        // own task (a resumed pass may take minutes).
        let idle = notices.as_ref().is_none_or(|t| t.is_finished());
        if idle
            && !state.notifier.channels().is_empty()
            && state.notifier.interrupted().await.unwrap_or(false)
        {
            let state = state.clone();
            notices = Some(tokio::spawn(async move {
                let now = time::OffsetDateTime::now_utc();
                let resume = crate::notify::Trigger::Resume;
                match state
                    .notifier
                    .run(&state.vultr, &state.audit, resume, now)
                    .await
                {
                    Ok(r) if !r.skipped => {
                        metrics::counter!("keydesk_jobs_resumed_total", "job" => "notices")
                            .increment(1)
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "interrupted notice pass not resumed"),
                }
            }));
        }
    }
}

/// The longest the scheduler waits between looks: a pass is due when the
/// last one (on any replica) started an interval ago.
const NOTICE_TICK: Duration = Duration::from_secs(60);

/// Runs expiry-notice passes every `KEYDESK_NOTIFY_INTERVAL` when a channel
/// is configured. Every replica looks; the database lets one run each pass.
async fn notice_schedule(state: AppState) {
    let notifier = state.notifier.clone();
    if !notifier.scheduled() {
        if notifier.channels().is_empty() {
            tracing::info!("expiry notices off: no channel configured");
        } else {
            tracing::info!("expiry notice scheduler off (KEYDESK_NOTIFY_INTERVAL=0)");
        }
        return;
    }
    if state.public_url.is_none() {
        tracing::warn!(
            "KEYDESK_PUBLIC_URL is not set: links in notices are paths, not full addresses"
        );
    }
    let mut tick = tokio::time::interval(notifier.interval().min(NOTICE_TICK));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = time::OffsetDateTime::now_utc();
        let run = notifier.run(
            &state.vultr,
            &state.audit,
            crate::notify::Trigger::Schedule,
            now,
        );
        if let Err(e) = run.await {
            tracing::warn!(error = %e, "scheduled notice pass could not run");
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
