//! The deployment examples stay consistent with the configuration: every
//! variable they set exists in `keydesk serve --help`, and the Dockerfile
//! keeps its promises.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

fn variables(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    for start in text
        .match_indices("KEYDESK_")
        .map(|(i, _)| i)
        .chain(text.match_indices("VULTR_API").map(|(i, _)| i))
    {
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |e| start + e);
        out.insert(text[start..end].to_string());
    }
    out
}

#[test]
fn every_variable_in_deploy_and_dockerfile_is_documented_in_help() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_keydesk"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for file in [
        "deploy/docker-compose.yml",
        "deploy/kubernetes.yaml",
        "deploy/keydesk.service",
        "Dockerfile",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for var in variables(&text) {
            // KEYDESK_HEALTHCHECK_URL belongs to `keydesk healthcheck`.
            if var == "KEYDESK_HEALTHCHECK_URL" {
                continue;
            }
            assert!(
                help.contains(&var),
                "{file} uses {var}, which `keydesk serve --help` does not know"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} variables found");
}

#[test]
fn the_dockerfile_runs_as_non_root_with_a_healthcheck() {
    let d = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"),
    )
    .unwrap();
    assert!(d.contains("USER 10001"));
    assert!(d.contains("HEALTHCHECK"));
    assert!(d.contains("EXPOSE 8080"));
    assert!(d.contains("KEYDESK_LISTEN=0.0.0.0:8080"));
    assert!(d.contains("cargo build --release --locked"));
}

#[test]
fn the_dockerfile_copies_everything_the_manifest_names() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for dir in ["src", "templates", "static"] {
        assert!(
            d.contains(&format!("COPY {dir} ./{dir}")),
            "Dockerfile must COPY {dir}"
        );
    }
    // Cargo refuses a manifest whose declared targets are missing, even for
    // `cargo build`: the stub layer and the real build both need them.
    if manifest.contains("[[bench]]") {
        assert!(d.contains("COPY benches ./benches"));
        assert!(d.contains("benches/keydesk.rs"));
    }
}
