//! The layers of ARCHITECTURE.md, enforced: a module may use only modules of
//! lower layers (or its own), so no import circle can come back.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

use std::path::Path;

/// Top-level module → layer, as ARCHITECTURE.md draws them.
const LAYERS: &[(&str, u8)] = &[
    // Which release this is, and the schema over releases: pure, below db.
    ("release", 0),
    ("schema", 0),
    ("ids", 1),
    ("causes", 1),
    ("allowlist", 1),
    ("db", 1),
    ("email", 1),
    // The macro of `db`, named at the crate root.
    ("on_pool", 1),
    ("timefmt", 1),
    ("jwt", 1),
    ("metrics", 1),
    ("telemetry", 1),
    ("keyed_quota", 1),
    ("post_quota", 2),
    ("client_quota", 2),
    ("request_id", 1),
    ("vultr", 2),
    ("powers", 2),
    ("oidc", 3),
    ("audit", 2),
    ("form_keys", 2),
    ("idempotency", 3),
    ("holds", 2),
    ("offboardings", 2),
    ("leases", 2),
    ("cleanups", 2),
    ("grants", 3),
    ("lost_creates", 3),
    ("approvals", 3),
    ("reviews", 3),
    ("error", 3),
    ("policy", 3),
    ("self_service", 4),
    ("reconcile", 4),
    ("report", 3),
    ("fake_vultr", 3),
    ("session_store", 3),
    ("identity", 4),
    ("notify", 4),
    ("csrf", 4),
    ("state", 5),
    ("user_record", 5),
    ("session", 5),
    ("write", 6),
    ("config", 6),
    ("pages", 7),
    ("app", 8),
    ("startup", 9),
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
    let mut checked = 0;
    for (rel, path) in sources() {
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

/// The stores: they keep keydesk's own records and never read Vultr (the
/// reconciliation that reads Vultr and settles lives above them).
const STORES: &[&str] = &[
    "audit",
    "grants",
    "reviews",
    "approvals",
    "lost_creates.rs",
    "holds.rs",
    "offboardings.rs",
    "notify/store.rs",
    "idempotency.rs",
    "form_keys.rs",
    "session_store.rs",
    "user_record.rs",
];

#[test]
fn a_store_does_not_import_the_vultr_client() {
    let mut stores = 0;
    for (rel, path) in sources() {
        let is_store = STORES
            .iter()
            .any(|s| rel == *s || rel.starts_with(&format!("{s}/")));
        if !is_store {
            continue;
        }
        stores += 1;
        let used = uses(&std::fs::read_to_string(&path).unwrap());
        assert!(
            !used.iter().any(|m| m == "vultr"),
            "{rel} is a store and imports crate::vultr: reading Vultr and settling belongs in reconcile/"
        );
    }
    assert!(stores >= STORES.len(), "only {stores} store files found");
}

/// Every file under src/, as (path relative to src/, full path).
fn sources() -> Vec<(String, std::path::PathBuf)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    all.into_iter()
        .map(|path| {
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, path)
        })
        .collect()
}

/// A source file's module path: `src/pages/approvals/mod.rs` → `pages::approvals`.
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// Every path named after `crate::` or `super::` (braces expanded one level),
/// as module paths relative to the crate root, outside the test module.
fn named_paths(text: &str, own: &[String]) -> Vec<Vec<String>> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = Vec::new();
    for (prefix, base) in [
        ("crate::", vec![]),
        ("super::", own[..own.len().saturating_sub(1)].to_vec()),
    ] {
        for (i, _) in code.match_indices(prefix) {
            // `self::super::` or `crate::` inside a longer word is not a path start.
            if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[i + prefix.len()..];
            let end = rest
                .find(|c: char| {
                    !(c.is_alphanumeric()
                        || c == '_'
                        || c == ':'
                        || c == '{'
                        || c == '}'
                        || c == ','
                        || c == ' '
                        || c == '\n')
                })
                .unwrap_or(rest.len());
            let path = &rest[..end];
            let (head, items) = match path.find('{') {
                Some(b) => (&path[..b], path[b + 1..].split('}').next().unwrap_or("")),
                None => (path, ""),
            };
            let head: Vec<String> = head
                .split("::")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            let expand = |tail: &str| {
                let mut p = base.clone();
                p.extend(head.iter().cloned());
                p.extend(
                    tail.split("::")
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty() && s != "self"),
                );
                p
            };
            if items.is_empty() {
                out.push(expand(""));
            } else {
                out.extend(items.split(',').map(expand));
            }
        }
    }
    out
}

#[test]
fn no_import_circle_between_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let modules: Vec<(Vec<String>, std::path::PathBuf)> = all
        .iter()
        .map(|p| {
            (
                module_of(&p.strip_prefix(&src).unwrap().to_string_lossy()),
                p.clone(),
            )
        })
        .filter(|(m, _)| !m.is_empty())
        .collect();
    let known: std::collections::HashSet<Vec<String>> =
        modules.iter().map(|(m, _)| m.clone()).collect();
    let mut edges: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for (own, path) in &modules {
        for mut named in named_paths(&std::fs::read_to_string(path).unwrap(), own) {
            while !named.is_empty() && !known.contains(&named) {
                named.pop();
            }
            // A file and its own parent or child module are one unit (`mod x;`).
            let related = named.starts_with(own) || own.starts_with(&named);
            if !named.is_empty() && !related {
                edges
                    .entry(own.join("::"))
                    .or_default()
                    .insert(named.join("::"));
            }
        }
    }
    // Depth-first search for a back edge: any circle, named file by file.
    fn visit(
        n: &str,
        edges: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut std::collections::HashSet<String>,
    ) {
        if let Some(at) = stack.iter().position(|s| s == n) {
            panic!("import circle: {} -> {n}", stack[at..].join(" -> "));
        }
        if !done.insert(n.to_string()) {
            return;
        }
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            visit(m, edges, stack, done);
        }
        stack.pop();
    }
    let mut done = std::collections::HashSet::new();
    for n in edges.keys() {
        visit(n, &edges, &mut vec![], &mut done);
    }
    assert!(
        edges.contains_key("pages::grants"),
        "the parser reads pages: {edges:?}"
    );
    assert!(
        edges.values().map(|s| s.len()).sum::<usize>() > 100,
        "{edges:?}"
    );
}

#[test]
fn no_source_file_is_over_450_lines_before_its_tests() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let long: Vec<String> = all
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let n = code.lines().count();
            (n > 450).then(|| format!("{} ({n} lines)", p.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by concern: {long:?}");
}
