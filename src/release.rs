//! Which keydesk this is: its version (semver), the git commit it was built
//! from and the build date (stamped by `build.rs`).

/// This release's version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit this binary was built from (`unknown` without git).
pub const COMMIT: &str = env!("BUILD_KEYDESK_COMMIT");

/// The day it was built (UTC), `YYYY-MM-DD`.
pub const BUILD_DATE: &str = env!("BUILD_KEYDESK_DATE");

/// What `keydesk --version` prints after the name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILD_KEYDESK_COMMIT"),
    ", built ",
    env!("BUILD_KEYDESK_DATE"),
    ")"
);

/// `VERSION` as a semver value.
pub fn version() -> semver::Version {
    // Cargo refuses a manifest whose version is not semver.
    semver::Version::parse(VERSION).unwrap_or_else(|_| semver::Version::new(0, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_line_names_the_version_commit_and_date() {
        assert!(LONG_VERSION.starts_with(VERSION));
        assert!(LONG_VERSION.contains(COMMIT));
        assert_eq!(BUILD_DATE.len(), 10, "{BUILD_DATE}");
        assert_eq!(version().to_string(), VERSION);
        assert!(!COMMIT.is_empty());
    }
}
