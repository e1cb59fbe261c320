//! keydesk: a self-service portal for Vultr user API keys; staff sign in through
//! an identity proxy, a JWT-signing access proxy or OpenID Connect.
//!
//! See ARCHITECTURE.md for the layers and the map of modules.

pub mod allowlist;
pub mod app;
pub mod approvals;
pub mod audit;
pub mod causes;
pub mod cleanups;
pub mod client_quota;
pub mod config;
pub mod csrf;
pub mod db;
pub mod email;
pub mod error;
pub mod fake_vultr;
pub mod form_keys;
pub mod grants;
pub mod holds;
pub mod idempotency;
pub mod identity;
pub mod ids;
pub mod jwt;
pub mod keyed_quota;
pub mod leases;
pub mod lost_creates;
pub mod metrics;
pub mod notify;
pub mod offboardings;
pub mod oidc;
pub mod pages;
pub mod policy;
pub mod post_quota;
pub mod powers;
pub mod reconcile;
pub mod release;
pub mod report;
pub mod request_id;
pub mod reviews;
pub mod schema;
pub mod self_service;
pub mod session;
pub mod session_store;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod timefmt;
pub mod user_record;
pub mod vultr;
pub mod write;

pub use startup::Application;

/// The property tests' configuration: `PROPTEST_CASES` cases when it is
/// set (proptest reads it), else 1,000 for every parser of untrusted text.
#[cfg(test)]
pub(crate) fn proptest_config() -> proptest::test_runner::Config {
    match std::env::var_os("PROPTEST_CASES") {
        Some(_) => proptest::test_runner::Config::default(),
        None => proptest::test_runner::Config::with_cases(1000),
    }
}
