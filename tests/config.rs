//! An operator's mistakes, on the real binary: each is refused (or warned
//! about) in words that name the variable and what a good value looks like.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

/// A working base for `serve`, plus `set`.
fn base<'a>(set: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("VULTR_API_KEY", ROOT_KEY),
        ("KEYDESK_OPERATORS", "ops@example.com"),
        ("KEYDESK_DATABASE_URL", "sqlite::memory:"),
    ];
    v.extend_from_slice(set);
    v
}

/// Variables set, and the words the refusal must contain.
type Refusal<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

#[test]
fn each_refusal_names_the_variable_and_a_good_value() {
    let refusals: &[Refusal] = &[
        (
            &[("KEYDESK_TRUSTED_PROXIES", "127.0.0.1")],
            &["KEYDESK_TRUSTED_PROXIES", "write 127.0.0.1/32"],
        ),
        (
            &[("KEYDESK_VULTR_API_URL", "https://api.vultr.com/v2")],
            &["KEYDESK_VULTR_API_URL", "/v2", "https://api.vultr.com"],
        ),
        (
            &[("KEYDESK_OPERATORS", "ops@example.com, group:platform")],
            &["KEYDESK_OPERATORS", "KEYDESK_GROUPS_HEADER"],
        ),
        (
            &[("KEYDESK_APPROVERS", "boss@example.com")],
            &["KEYDESK_APPROVERS", "boss@example.com", "KEYDESK_OPERATORS"],
        ),
        (
            &[("KEYDESK_SECRET_KEY", "too-short")],
            &[
                "KEYDESK_SECRET_KEY",
                "32 characters",
                "openssl rand -hex 32",
            ],
        ),
        (
            &[("KEYDESK_SENSITIVE_ACLS", "billing,teleport")],
            &[
                "KEYDESK_SENSITIVE_ACLS",
                "teleport",
                "manage_users, subscriptions_view",
            ],
        ),
        (
            &[
                ("KEYDESK_APPROVAL_FOR", "level:huge"),
                ("KEYDESK_APPROVERS", "ops@example.com"),
            ],
            &["KEYDESK_APPROVAL_FOR", "level takes root or sensitive"],
        ),
        (
            &[("KEYDESK_NOTIFY_DAYS_ROOT", "60,0")],
            &["KEYDESK_NOTIFY_DAYS_ROOT", "from 1 to 3650"],
        ),
        (
            &[("KEYDESK_SELF_SERVICE", "yes")],
            &["KEYDESK_SELF_SERVICE", "off, request or direct"],
        ),
        (
            &[("KEYDESK_SELF_SERVICE", "direct")],
            &["KEYDESK_SELF_SERVICE=direct", "KEYDESK_APPROVERS is empty"],
        ),
        (
            &[("KEYDESK_SELF_SERVICE_MAX_DAYS", "0")],
            &["KEYDESK_SELF_SERVICE_MAX_DAYS", "1..=3650"],
        ),
        (
            &[("KEYDESK_AUTH_MODE", "oauth")],
            &["KEYDESK_AUTH_MODE", "header, jwt, oidc"],
        ),
        (
            &[("KEYDESK_AUTH_MODE", "oidc")],
            &["KEYDESK_AUTH_MODE=oidc needs KEYDESK_OIDC_ISSUER"],
        ),
        (
            &[
                ("KEYDESK_AUTH_MODE", "oidc"),
                ("KEYDESK_OIDC_ISSUER", "accounts.example.com"),
            ],
            &["KEYDESK_OIDC_ISSUER", "is not a URL"],
        ),
        (
            &[
                ("KEYDESK_AUTH_MODE", "oidc"),
                ("KEYDESK_OIDC_ISSUER", "http://idp.example.com"),
            ],
            &["KEYDESK_OIDC_ISSUER", "plain http", "use https"],
        ),
        (
            &[
                ("KEYDESK_AUTH_MODE", "oidc"),
                ("KEYDESK_OIDC_ISSUER", "https://idp.example.com"),
            ],
            &["KEYDESK_AUTH_MODE=oidc needs KEYDESK_OIDC_CLIENT_ID"],
        ),
        (
            &[
                ("KEYDESK_AUTH_MODE", "oidc"),
                ("KEYDESK_OIDC_ISSUER", "https://idp.example.com"),
                ("KEYDESK_OIDC_CLIENT_ID", "keydesk"),
            ],
            &["KEYDESK_OIDC_CLIENT_SECRET or KEYDESK_OIDC_CLIENT_SECRET_FILE"],
        ),
        (
            &[
                ("KEYDESK_AUTH_MODE", "oidc"),
                ("KEYDESK_OIDC_ISSUER", "https://idp.example.com"),
                ("KEYDESK_OIDC_CLIENT_ID", "keydesk"),
                ("KEYDESK_OIDC_CLIENT_SECRET", "s3cret"),
                ("KEYDESK_OIDC_CLIENT_SECRET_FILE", "/run/secrets/oidc"),
            ],
            &["KEYDESK_OIDC_CLIENT_SECRET and KEYDESK_OIDC_CLIENT_SECRET_FILE are both set"],
        ),
        (
            &[
                ("KEYDESK_AUTH_MODE", "oidc"),
                ("KEYDESK_OIDC_ISSUER", "https://idp.example.com"),
                ("KEYDESK_OIDC_CLIENT_ID", "keydesk"),
                ("KEYDESK_OIDC_CLIENT_SECRET", "s3cret"),
            ],
            &[
                "KEYDESK_AUTH_MODE=oidc needs KEYDESK_PUBLIC_URL",
                "/auth/callback",
            ],
        ),
        (
            &[
                ("KEYDESK_AUTH_MODE", "oidc"),
                ("KEYDESK_OIDC_ISSUER", "https://idp.example.com"),
                ("KEYDESK_OIDC_CLIENT_ID", "keydesk"),
                ("KEYDESK_OIDC_CLIENT_SECRET", "s3cret"),
                ("KEYDESK_PUBLIC_URL", "https://keydesk.example.com"),
                ("KEYDESK_OIDC_ALLOWED_DOMAINS", "example.com, @corp"),
            ],
            &["KEYDESK_OIDC_ALLOWED_DOMAINS", "\"corp\"", "example.com"],
        ),
        (
            &[
                ("KEYDESK_AUTH_MODE", "oidc"),
                ("KEYDESK_OIDC_ISSUER", "https://idp.example.com"),
                ("KEYDESK_OIDC_CLIENT_ID", "keydesk"),
                ("KEYDESK_OIDC_CLIENT_SECRET", "s3cret"),
                ("KEYDESK_PUBLIC_URL", "http://keydesk.example.com"),
            ],
            &[
                "KEYDESK_PUBLIC_URL",
                "plain http",
                "KEYDESK_COOKIE_SECURE=false",
            ],
        ),
        (
            &[
                ("KEYDESK_AUTH_MODE", "oidc"),
                ("KEYDESK_SESSION_IDLE", "5s"),
            ],
            &["KEYDESK_SESSION_IDLE", "from 1m to 720h"],
        ),
        (
            &[
                ("KEYDESK_AUTH_MODE", "oidc"),
                ("KEYDESK_OIDC_ISSUER", "https://idp.example.com"),
                ("KEYDESK_OIDC_CLIENT_ID", "keydesk"),
                ("KEYDESK_OIDC_CLIENT_SECRET", "s3cret"),
                ("KEYDESK_PUBLIC_URL", "https://keydesk.example.com"),
                ("KEYDESK_SESSION_MAX_AGE", "1h"),
                ("KEYDESK_SESSION_IDLE", "2h"),
            ],
            &[
                "KEYDESK_SESSION_IDLE",
                "longer than KEYDESK_SESSION_MAX_AGE",
            ],
        ),
        (
            &[
                ("KEYDESK_AUTH_MODE", "oidc"),
                ("KEYDESK_OIDC_GROUPS_CLAIM", " "),
                ("KEYDESK_OPERATORS", "group:platform"),
            ],
            &["KEYDESK_OPERATORS", "set KEYDESK_OIDC_GROUPS_CLAIM"],
        ),
        (
            &[(
                "KEYDESK_DATABASE_URL",
                "sqlite:///nonexistent-keydesk-dir/kd.db",
            )],
            &[
                "KEYDESK_DATABASE_URL",
                "/nonexistent-keydesk-dir",
                "does not exist",
            ],
        ),
    ];
    for (set, words) in refusals {
        let err = serve_refuses(
            &base(set),
            &["KEYDESK_AUDIT_DB", "KEYDESK_DATABASE_URL_FILE"],
        );
        for w in *words {
            assert!(err.contains(w), "{set:?}: {w:?} missing from: {err}");
        }
    }
}

#[tokio::test]
async fn a_refused_postgres_port_says_so_at_once() {
    let (_reserved, port) = refusing_port();
    let url = format!("postgres://kd@127.0.0.1:{port}/kd");
    let err = tokio::task::spawn_blocking(move || {
        serve_refuses(
            &base(&[("KEYDESK_DATABASE_URL", url.as_str())]),
            &["KEYDESK_AUDIT_DB"],
        )
    })
    .await
    .unwrap();
    assert!(err.to_lowercase().contains("refused"), "{err}");
    assert!(!err.contains("timed out"), "{err}");
}

/// Log lines until `until` appears (or the binary's output ends).
async fn lines_until(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, until: &str) -> String {
    let mut seen = String::new();
    let wait = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(l) = rx.recv().await {
            seen.push_str(&l);
            seen.push('\n');
            if l.contains(until) {
                break;
            }
        }
    });
    assert!(
        wait.await.is_ok(),
        "timed out waiting for {until:?} in: {seen}"
    );
    seen
}

#[tokio::test]
async fn a_misspelt_variable_is_named_with_the_closest_one_and_lists_take_spaces() {
    let (child, _base, mut rx) = spawn_binary(&[
        ("KEYDESK_DATABASE_URI", "postgres://x".to_string()),
        (
            "KEYDESK_TRUSTED_PROXIES",
            "127.0.0.1/32, 10.0.0.0/8".to_string(),
        ),
    ])
    .await;
    let logs = lines_until(&mut rx, "keydesk serving").await;
    assert!(
        logs.contains("KEYDESK_DATABASE_URI is not a keydesk variable"),
        "{logs}"
    );
    assert!(logs.contains("did you mean KEYDESK_DATABASE_URL"), "{logs}");
    drop(child);
}

#[tokio::test]
async fn vultr_problems_at_start_name_the_url_the_cause_and_the_allow_list() {
    let (_reserved, port) = refusing_port();
    let down = format!("http://127.0.0.1:{port}");
    let (child, _base, mut rx) = spawn_binary(&[("KEYDESK_VULTR_API_URL", down.clone())]).await;
    let logs = lines_until(&mut rx, "upstream check failed at start").await;
    assert!(
        logs.contains(&down) && logs.to_lowercase().contains("refused"),
        "{logs}"
    );
    drop(child);

    let fake = keydesk::fake_vultr::FakeVultr::seeded("ANOTHER-ROOT-KEY");
    let url = fake.spawn().await.unwrap();
    let (child, _base, mut rx) = spawn_binary(&[("KEYDESK_VULTR_API_URL", url)]).await;
    let logs = lines_until(&mut rx, "upstream check failed at start").await;
    assert!(
        logs.contains("root key rejected") && logs.contains("allow-list"),
        "{logs}"
    );
    drop(child);
}

#[tokio::test]
async fn serve_without_a_database_variable_warns_with_the_path() {
    let dir = std::env::temp_dir().join(format!("keydesk-cwd-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keydesk"));
    cmd.arg("serve")
        .current_dir(&dir)
        .env("VULTR_API_KEY", ROOT_KEY)
        .env("KEYDESK_OPERATORS", "ops@example.com")
        .env("KEYDESK_LISTEN", "127.0.0.1:0")
        .env("KEYDESK_VULTR_API_URL", "http://127.0.0.1:9")
        .env_remove("KEYDESK_DATABASE_URL")
        .env_remove("KEYDESK_DATABASE_URL_FILE")
        .env_remove("KEYDESK_AUDIT_DB");
    let (child, mut rx) = start_logged(cmd);
    let logs = lines_until(&mut rx, "keydesk serving").await;
    assert!(
        logs.contains("keydesk-audit.db") && logs.contains("KEYDESK_DATABASE_URL"),
        "{logs}"
    );
    assert!(logs.contains("several replicas"), "{logs}");
    drop(child);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn keydesk_fake_vultr_serves_seeded_users_and_fake_keys() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keydesk"))
        .args([
            "fake-vultr",
            "--listen",
            "127.0.0.1:0",
            "--root-key",
            "FAKEROOT",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("fake-vultr started")
        .unwrap()
        .unwrap();
    let url = first[first.find("http://").unwrap()..].trim().to_string();
    let hint = lines.next_line().await.unwrap().unwrap();
    assert!(
        hint.contains("KEYDESK_VULTR_API_URL=") && hint.contains("VULTR_API_KEY=FAKEROOT"),
        "{hint}"
    );
    let http = reqwest::Client::new();
    let json = |r: reqwest::RequestBuilder| async move {
        let r = r.bearer_auth("FAKEROOT").send().await.unwrap();
        r.json::<serde_json::Value>().await.unwrap()
    };
    let users = json(http.get(format!("{url}/v2/users"))).await;
    let id = users["users"][0]["id"].as_str().unwrap().to_string();
    let body = serde_json::json!({"name": "try", "expire": false});
    let made = json(
        http.post(format!("{url}/v2/users/{id}/apikeys"))
            .json(&body),
    )
    .await;
    let secret = made["api_key"]["api_key"].as_str().unwrap();
    assert!(secret.starts_with("FAKE") && secret.len() == 36, "{secret}");
    let refused = http
        .get(format!("{url}/v2/users"))
        .bearer_auth("WRONG")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    drop(child);
}

#[test]
fn notify_help_lists_only_what_a_pass_uses() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keydesk"))
        .args(["notify", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for used in [
        "KEYDESK_NOTIFY_WEBHOOK_URL",
        "KEYDESK_SMTP_URL",
        "KEYDESK_DATABASE_URL",
        "VULTR_API_KEY",
    ] {
        assert!(help.contains(used), "{used}: {help}");
    }
    for unused in [
        "KEYDESK_TRUSTED_PROXIES",
        "KEYDESK_OPERATORS",
        "KEYDESK_COOKIE_SECURE",
        "KEYDESK_JWT_ISSUER",
        "KEYDESK_NOTIFY_INTERVAL",
        "KEYDESK_LISTEN",
    ] {
        assert!(
            !help.contains(&format!("[env: {unused}")),
            "{unused}: {help}"
        );
    }
}

/// `KEYDESK_SECRET_KEY` signs the forms of every process that has it and is
/// never stored; during a rotation (`NEW,OLD`) a form signed with the old key
/// still works once, and a process with only the new key refuses it.
#[tokio::test]
async fn a_configured_secret_key_is_shared_never_stored_and_rotates_with_a_list() {
    let fake = keydesk::fake_vultr::FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let dir =
        std::env::temp_dir().join(format!("keydesk-secret-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("k.db").display());
    let (old, new) = (
        "0".repeat(32) + &"a".repeat(32),
        "1".repeat(32) + &"b".repeat(32),
    );
    let serve = |key: String| {
        let env = vec![
            ("KEYDESK_VULTR_API_URL", upstream.clone()),
            ("KEYDESK_DATABASE_URL", db.clone()),
            ("KEYDESK_SECRET_KEY", key),
        ];
        async move { spawn_binary(&env).await }
    };
    let (_a, a, _) = serve(old.clone()).await;
    let (_b, b, _) = serve(format!("{new},{old}")).await;
    let (_c, c, _) = serve(new.clone()).await;
    let ada = user_id_in(&fake, "ada@example.com");
    let browser = client(Some(STAFF));
    let token_from_a =
        || async { hidden_token(&get_text(&browser, format!("{a}/users/{ada}")).await) };
    let create = |base: &str, token: String| {
        let url = format!("{base}/users/{ada}/keys");
        let browser = browser.clone();
        async move {
            let form = [("form_token", token.as_str()), ("name", "rotated")];
            post_as(&browser, url, &form).await.status().as_u16()
        }
    };
    // Only the new key: the old key's form is refused, nothing is sent.
    assert_eq!(create(&c, token_from_a().await).await, 403);
    assert_eq!(fake.count("POST", "/v2/users"), 0);
    // The list: the old key's form works, once.
    let token = token_from_a().await;
    assert_eq!(create(&b, token.clone()).await, 200);
    assert_eq!(create(&b, token).await, 409);
    assert_eq!(fake.count("POST", "/v2/users"), 1);
    // Never stored: the database holds no form key at all.
    let store = keydesk::db::Db::open(&db).await.unwrap();
    let stored: i64 = keydesk::on_pool!(read, &store, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM form_keys"
    )
    .fetch_one(p)
    .await
    .unwrap());
    assert_eq!(stored, 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// `keydesk rotate-form-key` retires the database's key and makes a new
/// one; a form signed before still works on a keydesk started after.
#[tokio::test]
async fn rotate_form_key_keeps_open_forms_working() {
    let fake = keydesk::fake_vultr::FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let dir =
        std::env::temp_dir().join(format!("keydesk-rotate-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("k.db").display());
    let env = vec![
        ("KEYDESK_VULTR_API_URL", upstream.clone()),
        ("KEYDESK_DATABASE_URL", db.clone()),
    ];
    let (before, base, _) = spawn_binary(&env).await;
    let ada = user_id_in(&fake, "ada@example.com");
    let browser = client(Some(STAFF));
    let token = hidden_token(&get_text(&browser, format!("{base}/users/{ada}")).await);
    drop(before);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keydesk"))
        .arg("rotate-form-key")
        .env("KEYDESK_DATABASE_URL", &db)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("new form-token signing key"), "{said}");

    let (_after, base, _) = spawn_binary(&env).await;
    let url = format!("{base}/users/{ada}/keys");
    let form = [("form_token", token.as_str()), ("name", "after-rotation")];
    assert_eq!(post_as(&browser, url, &form).await.status(), 200);
    assert_eq!(fake.count("POST", "/v2/users"), 1);
    // New forms are signed with the new key.
    let fresh = hidden_token(&get_text(&browser, format!("{base}/users/{ada}")).await);
    assert_ne!(
        fresh.split('.').nth(1),
        token.split('.').nth(1),
        "another key id"
    );
    let _ = std::fs::remove_dir_all(dir);
}
