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
        "deploy/docker-compose.oidc.yml",
        "deploy/kubernetes.yaml",
        "deploy/notices-cronjob.yaml",
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

/// The Dockerfile's instructions, stage by stage: comments dropped, line
/// continuations joined, so a comment can never satisfy a check.
fn dockerfile_stages(text: &str) -> Vec<Vec<String>> {
    let mut stages: Vec<Vec<String>> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let instruction = std::mem::take(&mut current);
                if instruction.starts_with("FROM ") {
                    stages.push(Vec::new());
                }
                if let Some(stage) = stages.last_mut() {
                    stage.push(instruction);
                }
            }
        }
    }
    stages
}

#[test]
fn the_dockerfile_runs_as_non_root_with_a_healthcheck() {
    let d = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"),
    )
    .unwrap();
    let stages = dockerfile_stages(&d);
    assert_eq!(stages.len(), 2, "a builder and a runtime stage");
    let (builder, runtime) = (&stages[0], &stages[1]);
    let has = |stage: &[String], f: &dyn Fn(&str) -> bool| stage.iter().any(|i| f(i));
    assert!(has(builder, &|i| i
        .starts_with("RUN cargo build --release --locked")));
    assert!(has(runtime, &|i| i.starts_with("USER 10001")));
    // No `--url` in the HEALTHCHECK: KEYDESK_HEALTHCHECK_URL must win.
    assert!(has(runtime, &|i| i.starts_with("HEALTHCHECK ")
        && i.contains("keydesk\", \"healthcheck")
        && !i.contains("--url")));
    // The current name of the database variable, not the old one.
    assert!(has(runtime, &|i| i.starts_with("ENV ")
        && i.contains("KEYDESK_DATABASE_URL=")
        && !i.contains("KEYDESK_AUDIT_DB")));
    assert!(has(runtime, &|i| i == "EXPOSE 8080"));
    assert!(has(runtime, &|i| i.starts_with("ENV ")
        && i.contains("KEYDESK_LISTEN=0.0.0.0:8080")));
    // The last USER wins: nothing switches back to root after it.
    let last_user = runtime
        .iter()
        .rev()
        .find(|i| i.starts_with("USER "))
        .unwrap();
    assert!(last_user.starts_with("USER 10001"));
}

#[test]
fn a_comment_does_not_count_as_an_instruction() {
    let stages = dockerfile_stages("FROM a\n# USER 10001\nRUN x \\\n  && y\n");
    assert_eq!(
        stages,
        vec![vec!["FROM a".to_string(), "RUN x  && y".to_string()]]
    );
}

#[test]
fn the_compose_example_serves_https_on_port_443() {
    let c = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/docker-compose.yml"),
    )
    .unwrap();
    let code: Vec<&str> = c
        .lines()
        .map(|l| l.split(" #").next().unwrap_or(""))
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    for line in &code {
        let Some(mapping) = line.trim().strip_prefix("- \"443:") else {
            continue;
        };
        let port = mapping.trim_end_matches('"');
        let https = format!("--https-address=0.0.0.0:{port}");
        assert!(
            code.iter().any(|l| l.contains(&https)),
            "host port 443 maps to {port}, which must be oauth2-proxy's TLS listener"
        );
        assert!(code.iter().any(|l| l.contains("--tls-cert-file=")));
        assert!(code.iter().any(|l| l.contains("--tls-key-file=")));
    }
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
    let benches: Vec<&str> = manifest
        .split("[[bench]]")
        .skip(1)
        .filter_map(|t| t.split("name = \"").nth(1)?.split('"').next())
        .collect();
    if !benches.is_empty() {
        assert!(d.contains("COPY benches ./benches"));
    }
    for name in benches {
        let stub = format!("benches/{name}.rs");
        assert!(
            d.contains(&stub),
            "the Dockerfile's stub layer needs {stub}"
        );
    }
}

#[test]
fn the_deploy_files_use_the_current_database_variable_and_docker_ignores_target() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("deploy/keydesk.service")).unwrap();
    assert!(unit.contains("KEYDESK_DATABASE_URL=") && !unit.contains("KEYDESK_AUDIT_DB"));
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "{ignore}");
}

fn deploy_file(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy")
            .join(name),
    )
    .unwrap()
}

/// The file's lines without comments.
fn code(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split(" #").next().unwrap_or("").to_string())
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect()
}

#[test]
fn kubernetes_migrates_as_the_owner_before_the_pods_and_keeps_one_image() {
    let k = deploy_file("kubernetes.yaml");
    let cron = deploy_file("notices-cronjob.yaml");
    let lines = code(&k);
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(
        has("initContainers:") && has(r#"args: ["migrate"]"#),
        "a migrate init container"
    );
    assert!(
        has("keydesk-db-owner/url"),
        "it runs with the owner's secret"
    );
    assert!(has("-f /sql/postgres-grants.sql"), "then the grants");
    // Creating the role is the DBA's one-time step: an upgrade needs no
    // CREATEROLE, so the owner's init containers never run app-role.sql.
    assert!(
        !has("-f /sql/app-role.sql") && !has("app_password"),
        "the init containers create no role"
    );
    assert!(has("kind: PodDisruptionBudget"));
    assert!(has("prometheus"), "the NetworkPolicy admits Prometheus");
    assert!(
        k.contains("CNI"),
        "TRUSTED_PROXIES is only as safe as the CNI"
    );
    let images: std::collections::BTreeSet<String> = code(&k)
        .into_iter()
        .chain(code(&cron))
        .filter_map(|l| l.trim().strip_prefix("image: ").map(str::to_string))
        .filter(|i| i.contains("keydesk"))
        .collect();
    assert_eq!(images.len(), 1, "one image name everywhere: {images:?}");
    // The app's URL is keydesk_app's; only the init containers see the owner's.
    assert!(k.contains("postgres://keydesk_app:"));
}

#[test]
fn compose_runs_keydesk_as_the_app_role_after_migrate_and_is_safe_as_shipped() {
    let c = deploy_file("docker-compose.yml");
    let lines = code(&c);
    assert!(
        !lines.iter().any(|l| l.contains("--reverse-proxy=true")),
        "the proxy faces the internet"
    );
    let secret = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("OAUTH2_PROXY_COOKIE_SECRET: "))
        .unwrap();
    // oauth2-proxy accepts 16, 24 or 32 bytes: the placeholder must not pass.
    assert!(![16, 24, 32].contains(&secret.len()), "{secret}");
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("migrate:") && has(r#"command: ["migrate"]"#));
    assert!(has(
        "KEYDESK_DATABASE_URL_FILE: /run/secrets/keydesk_owner_url"
    ));
    assert!(has("condition: service_completed_successfully"));
    assert!(has(
        "-f /deploy/app-role.sql -f /deploy/postgres-grants.sql"
    ));
}

#[test]
fn the_oidc_compose_example_has_no_proxy_identity_and_names_what_oidc_needs() {
    let c = deploy_file("docker-compose.oidc.yml");
    let code = code(&c).join("\n");
    assert!(
        !code.contains("oauth2-proxy"),
        "no oauth2-proxy in the OIDC example"
    );
    for needed in [
        "KEYDESK_AUTH_MODE: oidc",
        "KEYDESK_OIDC_ISSUER:",
        "KEYDESK_OIDC_CLIENT_ID:",
        "KEYDESK_OIDC_CLIENT_SECRET_FILE: /run/secrets/oidc_client_secret",
        "KEYDESK_PUBLIC_URL: https://",
        "KEYDESK_DATABASE_URL_FILE:",
        "keydesk-b: *keydesk",
    ] {
        assert!(code.contains(needed), "{needed} missing");
    }
    assert!(
        !code.contains("KEYDESK_OIDC_CLIENT_SECRET:"),
        "the secret comes from a file"
    );
    // No identity header is read in oidc mode; the proxy is trusted for its
    // X-Forwarded-For only, at Caddy's fixed address, so each visitor (not
    // Caddy) has the anonymous quota.
    let caddy = code
        .lines()
        .find_map(|l| l.trim().strip_prefix("ipv4_address: "))
        .expect("Caddy has a fixed address");
    assert!(
        code.contains(&format!("KEYDESK_TRUSTED_PROXIES: {caddy}/32")),
        "Caddy's address {caddy} is the trusted proxy"
    );
}

/// Every deployment serves the probes and metrics on the admin port only,
/// and points its probes (and Prometheus) there.
#[test]
fn the_deploy_files_keep_probes_and_metrics_off_the_public_port() {
    for name in ["docker-compose.yml", "docker-compose.oidc.yml"] {
        let text = code(&deploy_file(name)).join("\n");
        assert!(
            text.contains("KEYDESK_ADMIN_LISTEN: 0.0.0.0:9090"),
            "{name}: KEYDESK_ADMIN_LISTEN"
        );
        // The container's HEALTHCHECK finds the admin port by itself; a URL
        // pointing elsewhere would probe the public port (404).
        assert!(!text.contains("KEYDESK_HEALTHCHECK_URL"), "{name}");
    }
    let k = code(&deploy_file("kubernetes.yaml")).join("\n");
    for needed in [
        r#"name: KEYDESK_ADMIN_LISTEN, value: "0.0.0.0:9090""#,
        "{ name: admin, containerPort: 9090 }",
        "httpGet: { path: /readyz, port: admin }",
        "httpGet: { path: /healthz, port: admin }",
        r#"prometheus.io/port: "9090""#,
        "- { port: 9090, protocol: TCP }",
    ] {
        assert!(k.contains(needed), "kubernetes.yaml: {needed} missing");
    }
    assert!(!k.contains("port: http }"), "a probe on the public port");
    // The Service exposes the pages only; Prometheus is admitted to 9090 only.
    let service = k.split("kind: Service").nth(1).unwrap();
    let service = service.split("---").next().unwrap();
    assert!(!service.contains("9090"), "{service}");
    let prometheus = k
        .split("app.kubernetes.io/name: prometheus")
        .nth(1)
        .unwrap();
    assert!(!prometheus.contains("8080"), "{prometheus}");
}
