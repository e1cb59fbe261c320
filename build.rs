//! Stamps the binary with the git commit it was built from and the build
//! date, for `keydesk --version`, `keydesk_build_info` and the footer.
//! `BUILD_KEYDESK_COMMIT` wins (a container build has no `.git`); the date
//! is `SOURCE_DATE_EPOCH`'s when set, so a reproducible build stays so.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

// No name here starts with KEYDESK_ (keydesk's runtime variables, which it
// checks): cargo also passes the rustc-env ones to the tests it runs.
fn main() {
    println!("cargo:rerun-if-env-changed=BUILD_KEYDESK_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    for path in ["HEAD", "packed-refs", "refs/heads"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let commit = std::env::var("BUILD_KEYDESK_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let commit: String = commit
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(40)
        .collect();
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=BUILD_KEYDESK_COMMIT={commit}");
    println!("cargo:rustc-env=BUILD_KEYDESK_DATE={}", civil_date(secs));
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `YYYY-MM-DD` (UTC) of a Unix time: the civil-from-days conversion of
/// Howard Hinnant's date algorithms.
fn civil_date(secs: u64) -> String {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
