//! Mistakes explained in the operator's terms: a bad value names the
//! environment variable that carries it; an unknown `KEYDESK_*` variable is
//! named with the closest known one.

use clap::Parser;

use super::Cli;

impl Cli {
    /// Parses the command line and environment. A bad value is explained
    /// with the environment variable that carries it (operators set
    /// variables, not flags), what was given and what a good value is.
    pub fn parse_or_explain() -> Self {
        use clap::CommandFactory;
        use clap::error::{ContextKind, ContextValue, ErrorKind};
        let e = match Self::try_parse() {
            Ok(cli) => return cli,
            Err(e) => e,
        };
        if matches!(
            e.kind(),
            ErrorKind::InvalidValue | ErrorKind::ValueValidation
        ) && let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg)
        {
            let long = arg
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_start_matches("--")
                .to_string();
            if let Some(var) = env_of(&Self::command(), &long) {
                let value = match e.get(ContextKind::InvalidValue) {
                    Some(ContextValue::String(v)) => v.clone(),
                    _ => String::new(),
                };
                let why = match (
                    std::error::Error::source(&e),
                    e.get(ContextKind::ValidValue),
                ) {
                    (Some(s), _) => s.to_string(),
                    (None, Some(ContextValue::Strings(ok))) => {
                        format!("expected one of {}", ok.join(", "))
                    }
                    _ => e.kind().to_string(),
                };
                eprintln!("keydesk: error: {var} (--{long}): invalid value {value:?}: {why}");
                std::process::exit(2);
            }
        }
        e.exit()
    }

    /// Every environment variable keydesk reads.
    pub fn variables() -> Vec<String> {
        use clap::CommandFactory;
        declared_variables(&Self::command())
    }
}

/// Every variable `cli` declares (its arguments' `env`).
pub(super) fn declared_variables(cli: &clap::Command) -> Vec<String> {
    let mut out: Vec<String> = cli
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    for sub in cli.get_subcommands() {
        out.extend(declared_variables(sub));
    }
    out.sort();
    out.dedup();
    out
}

/// `KEYDESK_*` variables set in `env` that keydesk does not know, each with
/// the closest known name (a typo such as KEYDESK_DATABASE_URI).
pub fn unknown_variables(
    env: impl IntoIterator<Item = String>,
    known: &[String],
) -> Vec<(String, Option<String>)> {
    env.into_iter()
        .filter(|k| k.starts_with("KEYDESK_") && !known.contains(k))
        // The test suite's own variables are not keydesk's.
        .filter(|k| !k.starts_with("KEYDESK_TEST_"))
        .map(|k| {
            let closest = known
                .iter()
                .map(|n| (strsim::damerau_levenshtein(&k, n), n))
                .min()
                .filter(|(d, _)| *d <= 4)
                .map(|(_, n)| n.clone());
            (k, closest)
        })
        .collect()
}

/// The environment variable of the argument whose long flag is `long`.
pub(super) fn env_of(cli: &clap::Command, long: &str) -> Option<String> {
    cli.get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .or_else(|| cli.get_subcommands().find_map(|s| env_of(s, long)))
}
