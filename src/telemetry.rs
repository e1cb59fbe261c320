//! Logging: text by default, JSON for log pipelines; level from RUST_LOG.
//! Text is coloured only on a terminal, and never when `NO_COLOR` is set, so
//! journald and `docker logs` show no escape sequences.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Whether text logs may carry ANSI colours.
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let res = if format == "json" {
        builder.json().with_current_span(true).try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = res {
        eprintln!("keydesk: logging already initialised: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(!use_colour(false, None));
        assert!(!use_colour(true, Some(std::ffi::OsStr::new("1"))));
        // NO_COLOR set but empty does not count (no-color.org).
        assert!(use_colour(true, Some(std::ffi::OsStr::new(""))));
    }
}
