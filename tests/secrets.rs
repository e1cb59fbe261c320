//! The real binary, as an operator runs it: configuration errors, and the
//! root key and a new key never reaching logs, cookies, headers, later pages
//! or the audit database.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use keydesk::fake_vultr::FakeVultr;

const BIN: &str = env!("CARGO_BIN_EXE_keydesk");

#[test]
fn serve_without_a_root_key_names_the_missing_variable() {
    let err = serve_refuses(&[], &["VULTR_API_KEY", "VULTR_API_KEY_FILE"]);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("VULTR_API_KEY"));
}

#[test]
fn serve_refuses_to_start_without_a_role_list() {
    let err = serve_refuses(
        &[("VULTR_API_KEY", ROOT_KEY)],
        &["KEYDESK_VIEWERS", "KEYDESK_OPERATORS"],
    );
    assert!(err.contains("KEYDESK_OPERATORS"), "{err}");
}

#[test]
fn serve_refuses_a_role_list_that_would_admit_everyone() {
    for var in ["KEYDESK_OPERATORS", "KEYDESK_VIEWERS", "KEYDESK_APPROVERS"] {
        let err = serve_refuses(
            &[
                ("VULTR_API_KEY", ROOT_KEY),
                ("KEYDESK_OPERATORS", "ops@example.com"),
                (var, "ops@example.com, group: * "),
            ],
            &[],
        );
        assert!(err.contains(var) && err.contains("group:*"), "{var}: {err}");
    }
}

#[test]
fn serve_refuses_a_variable_set_twice_with_its_file() {
    let file = std::env::temp_dir().join(format!("keydesk-pair-{}", std::process::id()));
    std::fs::write(&file, "value-from-file").unwrap();
    let path = file.display().to_string();
    for var in [
        "VULTR_API_KEY",
        "KEYDESK_DATABASE_URL",
        "KEYDESK_NOTIFY_WEBHOOK_URL",
        "KEYDESK_SMTP_URL",
    ] {
        let file_var = format!("{var}_FILE");
        let value = if var == "KEYDESK_DATABASE_URL" {
            "sqlite::memory:"
        } else {
            "https://x.example/"
        };
        let err = serve_refuses(
            &[
                ("VULTR_API_KEY", ROOT_KEY),
                ("KEYDESK_OPERATORS", "ops@example.com"),
                (var, value),
                (file_var.as_str(), path.as_str()),
            ],
            &[],
        );
        assert!(
            err.contains(var) && err.contains(&file_var) && err.contains("both set"),
            "{var}: {err}"
        );
    }
    std::fs::remove_file(file).ok();
}

/// Every `env = "…"` the configuration declares, read from its sources.
fn declared_variables() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut src = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        src.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert!(src.contains("KEYDESK_NOTIFY_DAYS") && src.contains("VULTR_API_KEY"));
    src.split("env = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn help_and_the_configuration_page_document_every_variable() {
    let help: String = ["serve", "demo", "healthcheck"]
        .iter()
        .map(|cmd| {
            let out = std::process::Command::new(BIN)
                .args([cmd, "--help"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect();
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let vars = declared_variables();
    assert!(
        vars.len() >= 28,
        "only {} variables found in config.rs",
        vars.len()
    );
    for var in &vars {
        assert!(
            help.contains(&format!("[env: {var}")),
            "{var} missing from --help"
        );
        assert!(
            page.contains(&format!("`{var}`")),
            "{var} missing from docs/configuration.md"
        );
    }
}

#[tokio::test]
async fn secrets_appear_only_in_the_reveal_body() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let dir = std::env::temp_dir().join(format!("keydesk-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("audit.db");
    let (child, base, rx) = spawn_binary(&[
        ("KEYDESK_VULTR_API_URL", upstream.clone()),
        ("KEYDESK_AUDIT_DB", format!("sqlite://{}", db.display())),
        // Everything keydesk and its libraries can say.
        ("RUST_LOG", "trace".into()),
    ])
    .await;
    let c = client(Some(STAFF));
    let id = user_id_in(&fake, "ada@example.com");
    let page = c.get(format!("{base}/users/{id}")).send().await.unwrap();
    let token = hidden_token(&page.text().await.unwrap());
    let create = || {
        c.post(format!("{base}/users/{id}/keys"))
            .form(&[("form_token", token.as_str()), ("name", "leak-check")])
            .send()
    };
    let resp = create().await.unwrap();
    let mut captured = format!("{:?}", resp.headers());
    let reveal = resp.text().await.unwrap();
    let secret = revealed_key(&reveal).expect("revealed");
    assert_eq!(reveal.matches(&secret).count(), 1);

    // Everything after the reveal: replays, later pages, the audit, the probes.
    let replay = create().await.unwrap();
    captured.push_str(&format!("{:?}", replay.headers()));
    captured.push_str(&replay.text().await.unwrap());
    // Revoke the new key: more upstream traffic that must not carry it.
    let key_id = fake
        .keys_of(&id)
        .into_iter()
        .find(|k| k.name.as_deref() == Some("leak-check"))
        .unwrap()
        .id;
    let confirm = format!("{base}/users/{id}/keys/{key_id}/delete");
    let revoke_token = hidden_token(&get_text(&c, &confirm).await);
    let revoked = c
        .post(&confirm)
        .form(&[("form_token", revoke_token.as_str()), CONFIRMED])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 303);
    for path in [
        "/users",
        &format!("/users/{id}"),
        "/audit",
        "/audit.csv",
        "/audit.jsonl",
        "/readyz",
        "/nope",
    ] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        captured.push_str(&format!("{:?}", r.headers()));
        captured.push_str(&r.text().await.unwrap());
    }

    // Stop keydesk gracefully and drain its logs.
    let (status, logs) = stop_and_drain(child, rx).await;
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    assert!(logs.contains("key created"), "trace logs were captured");
    assert!(logs.contains("keydesk stopped"), "shut down gracefully");

    let files = files_text(&dir);
    assert!(
        files.contains("leak-check"),
        "the audit database was written"
    );

    for (what, text) in [("logs", &logs), ("responses", &captured), ("files", &files)] {
        assert!(!text.contains(&secret), "new key found in {what}");
        assert!(!text.contains(ROOT_KEY), "root key found in {what}");
    }
    // Vultr saw the root key only as the bearer, and none of the requests
    // keydesk sent after the key existed (pages, the revoke) carried it.
    let requests = fake.requests();
    let after = requests
        .iter()
        .skip_while(|r| r.method != "POST")
        .skip(1)
        .collect::<Vec<_>>();
    assert!(
        after.iter().any(|r| r.method == "DELETE"),
        "the revoke went upstream"
    );
    for r in &requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {ROOT_KEY}").as_str())
        );
        for part in [&r.path, &r.body, r.query.as_ref().unwrap_or(&String::new())] {
            assert!(
                !part.contains(&secret),
                "secret sent upstream: {} {}",
                r.method,
                r.path
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn text_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(BIN)
        .arg("serve")
        .env("VULTR_API_KEY", ROOT_KEY)
        .env("KEYDESK_VULTR_API_URL", "http://127.0.0.1:9")
        .env("KEYDESK_LISTEN", "127.0.0.1:0")
        .env("KEYDESK_OPERATORS", STAFF)
        .env("KEYDESK_LOG_FORMAT", "text")
        .env("KEYDESK_DATABASE_URL", "sqlite::memory:")
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let serving = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("keydesk logged");
            if line.contains("keydesk serving") {
                return line;
            }
        }
    })
    .await
    .unwrap();
    assert!(!serving.contains('\u{1b}'), "escape codes in {serving:?}");
    assert!(serving.contains("INFO"), "a plain text line: {serving:?}");
}

#[tokio::test]
async fn the_demo_never_touches_a_production_database() {
    let dir = std::env::temp_dir().join(format!("keydesk-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (prod_a, prod_b) = (dir.join("prod-a.db"), dir.join("prod-b.db"));
    let (child, base, _logs) = common::spawn_command(
        "demo",
        &[
            ("KEYDESK_AUDIT_DB", format!("sqlite://{}", prod_a.display())),
            (
                "KEYDESK_DATABASE_URL",
                format!("sqlite://{}", prod_b.display()),
            ),
        ],
    )
    .await;
    // The demo works (and writes its own audit) without either file.
    let c = common::client(None);
    let page = common::get_text(&c, format!("{base}/users")).await;
    assert!(page.contains("id=\"signed-in-as\""), "{page}");
    assert!(
        !prod_a.exists() && !prod_b.exists(),
        "the demo opened a production database"
    );
    drop(child);
    std::fs::remove_dir_all(dir).ok();
}

/// A PostgreSQL password given in the URL's query (`?password=`) is masked
/// wherever the binary prints the URL: the refusal of `serve`, `migrate`
/// and `rotate-form-key` when the database cannot be reached. An
/// `sslpassword=` is refused before the driver could log it.
#[tokio::test]
async fn a_database_password_in_the_query_never_reaches_the_output() {
    let (_reserved, port) = refusing_port();
    let url =
        format!("postgres://kd@127.0.0.1:{port}/kd?sslmode=disable&password=SECRET-DB-PW-7731");
    let ssl = format!("postgres://kd@127.0.0.1:{port}/kd?sslpassword=SECRET-SSL-PW-7732");
    for (command, url, said) in [
        ("serve", &url, "password=***"),
        ("migrate", &url, "password=***"),
        ("rotate-form-key", &url, "password=***"),
        ("serve", &ssl, "sslpassword"),
        ("rotate-form-key", &ssl, "sslpassword"),
    ] {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg(command)
            .env("KEYDESK_LISTEN", "127.0.0.1:0")
            .env("VULTR_API_KEY", ROOT_KEY)
            .env("KEYDESK_OPERATORS", "ops@example.com")
            .env("KEYDESK_DATABASE_URL", url)
            .env("RUST_LOG", "debug")
            .env_remove("KEYDESK_AUDIT_DB")
            .env_remove("KEYDESK_DATABASE_URL_FILE");
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(!out.status.success(), "{command}: {stderr}");
        for text in [&stdout, &stderr] {
            assert!(!text.contains("SECRET-"), "{command} {url}: {text}");
        }
        assert!(stderr.contains(said), "{command} {url}: {stderr}");
    }
}
