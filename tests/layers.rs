//! The layers of ARCHITECTURE.md, enforced: a module may use only modules of
//! lower layers (or its own), so no import circle can come back.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

use std::path::Path;

/// Top-level module → layer, as ARCHITECTURE.md draws them.
const LAYERS: &[(&str, u8)] = &[
    ("ids", 0),
    ("db", 0),
    ("email", 0),
    // The macro of `db`, named at the crate root.
    ("on_pool", 0),
    ("timefmt", 0),
    ("jwt", 0),
    ("metrics", 0),
    ("telemetry", 0),
    ("vultr", 1),
    ("audit", 1),
    ("idempotency", 1),
    ("holds", 1),
    ("grants", 2),
    ("lost_creates", 2),
    ("approvals", 2),
    ("error", 2),
    ("policy", 2),
    ("report", 2),
    ("fake_vultr", 2),
    ("session_store", 2),
    ("identity", 3),
    ("notify", 3),
    ("csrf", 3),
    ("state", 4),
    ("session", 4),
    ("write", 5),
    ("config", 5),
    ("pages", 6),
    ("app", 7),
    ("startup", 8),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The top-level modules a source file names through `crate::` or, from
/// `pages/`, through `super::` (outside its test module).
fn uses(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if rest.starts_with('{') {
            let inner = &rest[1..rest.find('}').unwrap()];
            out.extend(
                inner
                    .split(',')
                    .map(|p| p.trim().split("::").next().unwrap().to_string()),
            );
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap();
            out.push(rest[..end].to_string());
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut checked = 0;
    for path in all {
        let rel = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let top = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        let Some(own) = layer(&top) else {
            assert!(
                ["lib", "main"].contains(&top.as_str()),
                "{rel}: no layer in LAYERS"
            );
            continue;
        };
        for used in uses(&std::fs::read_to_string(&path).unwrap()) {
            if used == top {
                continue;
            }
            let theirs = layer(&used).unwrap_or_else(|| panic!("{rel} uses unknown crate::{used}"));
            assert!(
                theirs < own,
                "{rel} (layer {own}) uses crate::{used} (layer {theirs})"
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} uses found");
}
