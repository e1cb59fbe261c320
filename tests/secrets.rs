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
    let out = std::process::Command::new(BIN)
        .arg("serve")
        .env_remove("VULTR_API_KEY")
        .env_remove("VULTR_API_KEY_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("VULTR_API_KEY"));
}

#[test]
fn help_documents_every_variable() {
    let out = std::process::Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "VULTR_API_KEY",
        "VULTR_API_KEY_FILE",
        "KEYDESK_VULTR_API_URL",
        "KEYDESK_LISTEN",
        "KEYDESK_AUTH_HEADER",
        "KEYDESK_TRUSTED_PROXIES",
        "KEYDESK_AUDIT_DB",
    ] {
        assert!(help.contains(var), "{var} missing from --help");
    }
}

#[tokio::test]
async fn secrets_appear_only_in_the_reveal_body() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let dir = std::env::temp_dir().join(format!("keydesk-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("audit.db");
    let (mut child, base, mut rx) = spawn_binary(&[
        ("KEYDESK_VULTR_API_URL", upstream.clone()),
        ("KEYDESK_AUDIT_DB", format!("sqlite://{}", db.display())),
        // Everything keydesk and its libraries can say.
        ("RUST_LOG", "trace".into()),
    ])
    .await;
    let mut logs = String::new();

    let c = client(Some(STAFF));
    let id = user_id_in(&fake, "ada@example.com");
    let page = c.get(format!("{base}/users/{id}")).send().await.unwrap();
    let token = hidden_token(&page.text().await.unwrap());
    let resp = c
        .post(format!("{base}/users/{id}/keys"))
        .form(&[("form_token", token.as_str()), ("name", "leak-check")])
        .send()
        .await
        .unwrap();
    let mut captured = format!("{:?}", resp.headers());
    let reveal = resp.text().await.unwrap();
    let secret = revealed_key(&reveal).expect("revealed");
    assert_eq!(reveal.matches(&secret).count(), 1);

    // Everything after the reveal: replays, later pages, the audit, the probes.
    let replay = c
        .post(format!("{base}/users/{id}/keys"))
        .form(&[("form_token", token.as_str()), ("name", "leak-check")])
        .send()
        .await
        .unwrap();
    captured.push_str(&format!("{:?}", replay.headers()));
    captured.push_str(&replay.text().await.unwrap());
    for path in [
        "/users",
        &format!("/users/{id}"),
        "/audit",
        "/readyz",
        "/nope",
    ] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        captured.push_str(&format!("{:?}", r.headers()));
        captured.push_str(&r.text().await.unwrap());
    }

    // Stop keydesk gracefully and drain its logs.
    let pid = child.id().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("keydesk stops within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    while let Some(line) = rx.recv().await {
        logs.push_str(&line);
        logs.push('\n');
    }
    assert!(logs.contains("key created"), "trace logs were captured");
    assert!(logs.contains("keydesk stopped"), "shut down gracefully");

    let mut files = String::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        files.push_str(&String::from_utf8_lossy(&bytes));
    }
    assert!(
        files.contains("leak-check"),
        "the audit database was written"
    );

    for (what, text) in [("logs", &logs), ("responses", &captured), ("files", &files)] {
        assert!(!text.contains(&secret), "new key found in {what}");
        assert!(!text.contains(ROOT_KEY), "root key found in {what}");
    }
    // The fake saw the root key only as the bearer, and the secret never came back.
    assert!(fake.requests().iter().all(|r| !r.body.contains(&secret)));
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
