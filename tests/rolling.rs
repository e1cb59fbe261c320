//! A rolling upgrade (issue 34 §7): the previous release (the binary at
//! `KEYDESK_PREVIOUS_BIN`, built by `.ci/previous-release.sh`) and this one
//! serving side by side on one PostgreSQL database and one fake Vultr, as
//! replicas do while a deployment rolls. The database is set up and migrated
//! as a deployment of the previous release would be; then this release
//! migrates it and applies its grants as the upgrade steps say, and a
//! replica of each serves. Checked, each on its own:
//!
//! 1. forms cross both ways, once;
//! 2. a hold placed by either replica is obeyed by both;
//! 3. a user offboarded by the old replica before the upgrade is held by
//!    the new one;
//! 4. the Approvals page answers on both, with requests made by either;
//! 5. a downgrade is refused: once a later release has migrated (simulated
//!    in `keydesk_release`), this release will not start on the database,
//!    and a replica already running says on `/readyz` that it is not ready.
//!
//! Without `KEYDESK_PREVIOUS_BIN` the test is skipped, except under CI
//! (`CI=true` or `KEYDESK_TEST_REQUIRE_ALL=1`), where it fails.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use keydesk::fake_vultr::FakeVultr;

/// This release's version, as the downgrade refusal names it.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The version a later release would write into `keydesk_release`.
const LATER: &str = "99.0.0";
const OWNER_PASSWORD: &str = "rolling-owner";
const APP_PASSWORD: &str = "rolling-app";

/// The previous release's binary, or None (skip) outside CI.
fn previous_bin() -> Option<PathBuf> {
    match std::env::var_os("KEYDESK_PREVIOUS_BIN").filter(|v| !v.is_empty()) {
        Some(bin) => {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "KEYDESK_PREVIOUS_BIN={} is not a file (.ci/previous-release.sh builds it)",
                bin.display()
            );
            Some(bin)
        }
        None => {
            assert!(
                !pg::require_all(),
                "the rolling-upgrade test needs KEYDESK_PREVIOUS_BIN, the previous release's binary (.ci/previous-release.sh builds it and prints its path)"
            );
            pg::skip_line(
                "the rolling-upgrade test: KEYDESK_PREVIOUS_BIN is unset (.ci/previous-release.sh builds the previous release)",
            );
            None
        }
    }
}

/// The previous release's `deploy/postgres-grants.sql`, which
/// `.ci/previous-release.sh` copies beside its binary.
fn previous_grants(bin: &Path) -> PathBuf {
    let dir = bin.parent().unwrap();
    [
        dir.join("deploy/postgres-grants.sql"),
        dir.join("src/deploy/postgres-grants.sql"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .unwrap_or_else(|| {
        panic!(
            "the previous release's deploy/postgres-grants.sql is not beside {} (.ci/previous-release.sh copies it there)",
            bin.display()
        )
    })
}

/// This checkout's file at `rel`.
fn here(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `postgres://ROLE:PASSWORD@HOST/DB?QUERY` on the test server of `admin`.
fn role_url(admin: &str, role: &str, password: &str, db: &str) -> String {
    let (base, query) = admin.split_once('?').unwrap_or((admin, ""));
    let host = &base[base.find('@').unwrap() + 1..base.rfind('/').unwrap()];
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("postgres://{role}:{password}@{host}/{db}{q}")
}

/// `admin` (the superuser) on database `db` instead of its own.
fn admin_on(admin: &str, db: &str) -> String {
    let (base, query) = admin.split_once('?').unwrap_or((admin, ""));
    let base = &base[..base.rfind('/').unwrap()];
    if query.is_empty() {
        format!("{base}/{db}")
    } else {
        format!("{base}/{db}?{query}")
    }
}

/// Runs psql on `url` with `args` (and `stdin` as the script when given);
/// it must succeed. What it printed.
async fn psql(what: &str, url: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = std::process::Command::new("psql");
    cmd.arg(url)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let script = stdin.unwrap_or("").to_string();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = cmd
            .spawn()
            .expect("psql runs (apt-get install postgresql-client)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{what}: psql failed:\n{stdout}\n{stderr}"
    );
    format!("{stdout}{stderr}")
}

/// `keydesk migrate` of the binary `bin` as the owner at `owner_url`.
async fn migrate(what: &str, bin: &Path, owner_url: &str) -> String {
    let out = within(
        what,
        tokio::process::Command::new(bin)
            .arg("migrate")
            .env("KEYDESK_DATABASE_URL", owner_url)
            .env_remove("KEYDESK_AUDIT_DB")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}: {text}");
    println!("{what}: {}", text.trim());
    text
}

/// Both replicas, the fake and one browser (STAFF, an operator and
/// approver; cookies are per host, not per port, so it is one browser on
/// both replicas).
struct Rolling {
    fake: FakeVultr,
    old: String,
    new: String,
    browser: reqwest::Client,
    /// The environment of a replica (the same on both).
    env: Vec<(&'static str, String)>,
    owner_url: String,
    /// Offboarded by the old replica before the upgrade.
    offboarded_before: String,
    /// The approval request the old replica made before the upgrade.
    request_before: String,
}

impl Rolling {
    fn id(&self, email: &str) -> String {
        user_id_in(&self.fake, email)
    }

    async fn get(&self, base: &str, path: &str) -> (u16, String) {
        let r = self
            .browser
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The add-key form's token on `base`'s page of `user`.
    async fn add_key_token(&self, base: &str, user: &str) -> String {
        let (status, page) = self.get(base, &format!("/users/{user}")).await;
        assert_eq!(status, 200, "{base}/users/{user}: {page}");
        hidden_token(&page)
    }

    /// Posts `user`'s add-key form with `token` to `base`: a key named
    /// `name` expiring in 30 days (no approval needed), or one that never
    /// expires (an approval request) when `forever`.
    async fn post_key(
        &self,
        base: &str,
        user: &str,
        token: &str,
        name: &str,
        forever: bool,
    ) -> (u16, String) {
        let date = date_in(30);
        let mut form = vec![("form_token", token), ("name", name)];
        if forever {
            form.push(("reason", "rolling upgrade test"));
        } else {
            form.extend([("expire", "true"), ("date_expire", date.as_str())]);
        }
        let r = post_as(&self.browser, format!("{base}/users/{user}/keys"), &form).await;
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Upstream key creations for `user`.
    fn key_posts(&self, user: &str) -> usize {
        self.fake
            .count("POST", &format!("/v2/users/{user}/apikeys"))
    }

    /// Offboards `user` through `base`'s confirmation form; the result page.
    async fn offboard(&self, base: &str, user: &str) -> String {
        let path = format!("/users/{user}/offboard");
        let (status, page) = self.get(base, &path).await;
        assert_eq!(status, 200, "{base}{path}: {page}");
        let mut form = hidden_inputs(&page, &path);
        form.push(("reason".into(), "left, rolling upgrade test".into()));
        let r = self
            .browser
            .post(format!("{base}{path}"))
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let page = r.text().await.unwrap();
        assert_eq!(status, 200, "offboarding {user} through {base}: {page}");
        page
    }

    /// `base` asks for a key for `user` that never expires: a request (202).
    async fn ask(&self, base: &str, user: &str, name: &str) -> String {
        let token = self.add_key_token(base, user).await;
        let (status, page) = self.post_key(base, user, &token, name, true).await;
        assert_eq!(status, 202, "a request for {user} through {base}: {page}");
        request_of(&page)
    }

    /// `base` refuses a key for the held `user`: with a form opened before
    /// the hold (`open`) and one opened now. Nothing reaches Vultr.
    async fn refuses_key(&self, base: &str, user: &str, open: &str, who: &str) {
        let fresh = self.add_key_token(base, user).await;
        for (token, which) in [
            (open, "a form opened before the hold"),
            (&fresh, "a fresh form"),
        ] {
            let (status, page) = self.post_key(base, user, token, "after-hold", false).await;
            assert!(
                (400..500).contains(&status),
                "{who} ({base}) refuses a key for the held {user} with {which}: {status} {page}"
            );
            assert!(
                revealed_key(&page).is_none(),
                "{who} ({base}) revealed a key for the held {user}"
            );
            println!("{who}: {status} to a key for the held {user} with {which}");
        }
        assert_eq!(
            self.key_posts(user),
            0,
            "{who} ({base}) sent no key creation for the held {user} to Vultr"
        );
    }
}

/// The hidden inputs of the form posting to `action` in `page`.
fn hidden_inputs(page: &str, action: &str) -> Vec<(String, String)> {
    let at = page
        .find(&format!("action=\"{action}\""))
        .unwrap_or_else(|| panic!("no form posting to {action}: {page}"));
    let form = &page[at..at + page[at..].find("</form>").unwrap()];
    let mut out = Vec::new();
    for input in form.split("<input").skip(1) {
        let tag = &input[..input.find('>').unwrap()];
        if !tag.contains(r#"type="hidden""#) {
            continue;
        }
        let attr = |name: &str| {
            let m = format!("{name}=\"");
            tag.find(&m).map(|s| {
                let v = &tag[s + m.len()..];
                v[..v.find('"').unwrap()].to_string()
            })
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            out.push((n, v));
        }
    }
    out
}

/// 1. A form rendered by the old replica works once on the new one, and the
///    other way round; a second post of the same token makes no second key.
async fn forms_cross_both_ways(r: Arc<Rolling>) {
    for (from, to, email, way) in [
        (&r.old, &r.new, "grace@example.com", "old → new"),
        (&r.new, &r.old, "don@example.com", "new → old"),
    ] {
        let user = r.id(email);
        let token = r.add_key_token(from, &user).await;
        let (status, page) = r.post_key(to, &user, &token, "crossed", false).await;
        assert_eq!(
            status, 200,
            "forms cross ({way}): the add-key form posted to the other replica makes the key: {page}"
        );
        assert!(
            revealed_key(&page).is_some(),
            "forms cross ({way}): the key is revealed"
        );
        for (base, which) in [
            (to, "the same replica"),
            (from, "the replica that rendered it"),
        ] {
            let (status, page) = r.post_key(base, &user, &token, "crossed", false).await;
            assert_eq!(
                status, 409,
                "forms cross ({way}): the same token again, on {which}, is refused: {page}"
            );
        }
        assert_eq!(
            r.key_posts(&user),
            1,
            "forms cross ({way}): one key created at Vultr, however often the form is sent"
        );
    }
}

/// 2. A hold placed by either replica is obeyed by both.
async fn a_hold_by_either_is_obeyed_by_both(r: Arc<Rolling>) {
    for (by, other, email, way) in [
        (
            &r.new,
            &r.old,
            "frances@example.com",
            "held by new, obeyed by old",
        ),
        (
            &r.old,
            &r.new,
            "ken@example.com",
            "held by old, obeyed by new",
        ),
    ] {
        let user = r.id(email);
        // Both replicas have the add-key form open when the hold lands.
        let open_other = r.add_key_token(other, &user).await;
        let open_by = r.add_key_token(by, &user).await;
        r.offboard(by, &user).await;
        r.refuses_key(
            other,
            &user,
            &open_other,
            &format!("{way}: the other replica"),
        )
        .await;
        r.refuses_key(
            by,
            &user,
            &open_by,
            &format!("{way}: the offboarding replica"),
        )
        .await;
    }
}

/// 3. A user offboarded by the old replica before the upgrade is held by
///    the new one.
async fn offboarded_before_the_upgrade_is_held_by_new(r: Arc<Rolling>) {
    let user = &r.offboarded_before;
    let open = r.add_key_token(&r.new, user).await;
    r.refuses_key(
        &r.new,
        user,
        &open,
        "offboarded before the upgrade: the new replica",
    )
    .await;
}

/// 4. `/approvals` answers on both replicas, with requests made by each.
async fn approvals_answer_on_both(r: Arc<Rolling>) {
    let mut requests = vec![r.request_before.clone()];
    for (base, name) in [(&r.old, "old"), (&r.new, "new")] {
        let (status, page) = r.get(base, "/approvals").await;
        assert_eq!(
            status, 200,
            "Approvals answer on the {name} replica (a request the old one made before the upgrade is open): {page}"
        );
    }
    requests.push(r.ask(&r.new, &r.id("tony@example.com"), "new-asks").await);
    requests.push(r.ask(&r.old, &r.id("bjarne@example.com"), "old-asks").await);
    for (base, name) in [(&r.old, "old"), (&r.new, "new")] {
        let (status, page) = r.get(base, "/approvals").await;
        assert_eq!(
            status, 200,
            "Approvals answer on the {name} replica after both made a request: {page}"
        );
        for id in &requests {
            assert!(
                page.contains(&format!("/approvals/{id}")),
                "the {name} replica's Approvals page lists request {id}: {page}"
            );
            let (status, page) = r.get(base, &format!("/approvals/{id}")).await;
            assert_eq!(status, 200, "the {name} replica opens request {id}: {page}");
        }
    }
    for user in ["tony@example.com", "bjarne@example.com"] {
        assert_eq!(
            r.key_posts(&r.id(user)),
            0,
            "nothing reaches Vultr while a request waits ({user})"
        );
    }
}

/// 5. An access review run on the new replica (its new tables and audit
///    actions) while the old one serves: the old replica's pages answer,
///    showing the review's entries as "unknown (newer version)".
async fn a_review_on_new_leaves_old_serving(r: Arc<Rolling>) {
    let (status, page) = r.get(&r.new, "/reviews/new").await;
    assert_eq!(status, 200, "{page}");
    let deadline = date_in(7);
    let form = [
        ("form_token", hidden_token(&page)),
        ("scope", "root".to_string()),
        ("deadline", deadline),
        ("default", "keep".to_string()),
        ("reviewers", "operators".to_string()),
    ];
    let resp = r
        .browser
        .post(format!("{}/reviews/new", r.new))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
    let at = resp.headers()["location"].to_str().unwrap().to_string();
    let page = loop {
        let (status, page) = r.get(&r.new, &at).await;
        assert_eq!(status, 200, "{page}");
        if page.contains("data-state=\"open\"") {
            break page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // One root-equivalent key revoked by the operators' decision.
    let row = page.find("name=\"key\" value=\"").expect("an item to tick");
    let key = &page[row + "name=\"key\" value=\"".len()..];
    let key = key[..key.find('"').unwrap()].to_string();
    let decide = &page[page.find("/decide\"").unwrap()..];
    let form = [
        ("form_token", hidden_token(decide)),
        ("decision", "revoke".to_string()),
        ("select", "ticked".to_string()),
        ("key", key.clone()),
    ];
    let resp = r
        .browser
        .post(format!("{}{at}/decide", r.new))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let (_, page) = r.get(&r.new, &at).await;
    let end = &page[page.find("/end\"").unwrap()..];
    let form = [("form_token", hidden_token(end))];
    let resp = r
        .browser
        .post(format!("{}{at}/end", r.new))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    loop {
        let (_, page) = r.get(&r.new, &at).await;
        if page.contains("data-state=\"closed\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let deletes = r
        .fake
        .requests()
        .iter()
        .filter(|q| q.method == "DELETE" && q.path.ends_with(&key))
        .count();
    assert_eq!(deletes, 1, "the decided key revoked once");
    let (status, audit) = r.get(&r.old, "/audit").await;
    assert_eq!(status, 200, "the old replica's audit answers: {audit}");
    assert!(
        audit.contains("unknown (newer version)"),
        "the review's entries read as newer: {audit}"
    );
    let (status, page) = r
        .get(&r.old, &format!("/users/{}", r.id("ada@example.com")))
        .await;
    assert_eq!(status, 200, "{page}");
}

/// 6. After a later release migrated (simulated), this release refuses to
///    start on the database and a running replica is not ready.
async fn a_downgrade_is_refused(r: Arc<Rolling>) {
    psql(
        "a downgrade is refused: a later release's contract step (UPDATE keydesk_release, as the owner)",
        &r.owner_url,
        &[],
        Some(&format!(
            "UPDATE keydesk_release SET migrated_by = '{LATER}', oldest_writer = '{LATER}';"
        )),
    )
    .await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keydesk"));
    cmd.arg("serve")
        .env("VULTR_API_KEY", ROOT_KEY)
        .env("KEYDESK_LISTEN", "127.0.0.1:0")
        .env("KEYDESK_COOKIE_SECURE", "false")
        .env("KEYDESK_LOG_FORMAT", "json")
        .env_remove("KEYDESK_AUDIT_DB")
        .kill_on_drop(true);
    for (k, v) in &r.env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| {
            panic!("a downgrade is refused: keydesk {VERSION} kept serving on a database a {LATER} migrated")
        })
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a downgrade is refused: keydesk {VERSION} serve exits non-zero ({}): {stderr}",
        out.status
    );
    let words = format!(
        "this database was migrated by keydesk {LATER}; this is {VERSION}; restore the backup taken before the upgrade, or run {LATER} or later"
    );
    assert!(
        stderr.contains(&words),
        "a downgrade is refused: keydesk serve says `{words}`; it said: {stderr}"
    );
    // The replica already running finds out on its next readiness check.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = reqwest::get(format!("{}/readyz", r.new)).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        if status == 503 && body.contains(LATER) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a downgrade is refused: the running {VERSION} replica's /readyz answers 503 naming {LATER} within 30 s; it answers {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_release_and_this_one_serve_side_by_side() {
    let Some(old_bin) = previous_bin() else {
        return;
    };
    let Some(admin) = pg::admin_url() else {
        return;
    };
    let started = Instant::now();
    let new_bin = PathBuf::from(env!("CARGO_BIN_EXE_keydesk"));
    let db = format!("kd_rolling_{}", uuid::Uuid::new_v4().simple());
    let owner_url = role_url(admin, "keydesk_owner", OWNER_PASSWORD, &db);
    let app_url = role_url(admin, "keydesk_app", APP_PASSWORD, &db);

    // The DBA's one-time steps, as the superuser: the owner role and the
    // database (README step 1), and the application role (app-role.sql).
    psql(
        "the owner role and the database",
        admin,
        &[
            "-v",
            &format!("owner_password={OWNER_PASSWORD}"),
            "-v",
            &format!("db={db}"),
        ],
        Some(
            "SELECT 'CREATE ROLE keydesk_owner LOGIN CREATEROLE'\n WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keydesk_owner')\\gexec\nALTER ROLE keydesk_owner PASSWORD :'owner_password';\nSELECT format('CREATE DATABASE %I OWNER keydesk_owner', :'db')\n WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\\gexec\n",
        ),
    )
    .await;
    let app_role = here("deploy/app-role.sql");
    psql(
        "deploy/app-role.sql (as the superuser)",
        &admin_on(admin, &db),
        &[
            "-v",
            &format!("app_password={APP_PASSWORD}"),
            "-f",
            app_role.to_str().unwrap(),
        ],
        None,
    )
    .await;

    // The previous release deployed: its migrations and grants, as the owner.
    migrate(
        "the previous release's keydesk migrate",
        &old_bin,
        &owner_url,
    )
    .await;
    let old_grants = previous_grants(&old_bin);
    psql(
        "the previous release's postgres-grants.sql (as the owner)",
        &owner_url,
        &["-f", old_grants.to_str().unwrap()],
        None,
    )
    .await;

    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let env: Vec<(&'static str, String)> = vec![
        ("KEYDESK_VULTR_API_URL", upstream),
        ("KEYDESK_DATABASE_URL", app_url.clone()),
        ("KEYDESK_OPERATORS", format!("{STAFF},{BOSS}")),
        ("KEYDESK_APPROVERS", format!("{STAFF},{BOSS}")),
        ("KEYDESK_APPROVAL_FOR", "no-expiry".into()),
    ];
    let (old_child, old, _old_logs) = spawn_program(&old_bin, &["serve"], &env).await;
    println!("the previous release serves at {old}");
    let browser = client(Some(STAFF));

    // State made by the previous release before the upgrade: a key, an
    // approval request and an offboarded user.
    let mut before = Rolling {
        fake: fake.clone(),
        old: old.clone(),
        new: String::new(),
        browser: browser.clone(),
        env: env.clone(),
        owner_url: owner_url.clone(),
        offboarded_before: String::new(),
        request_before: String::new(),
    };
    let guido = before.id("guido@example.com");
    let token = before.add_key_token(&old, &guido).await;
    let (status, page) = before
        .post_key(&old, &guido, &token, "before-upgrade", false)
        .await;
    assert_eq!(status, 200, "the previous release makes a key: {page}");
    before.request_before = before
        .ask(&old, &before.id("linus@example.com"), "old-asks-first")
        .await;
    let edsger = before.id("edsger@example.com");
    before.offboard(&old, &edsger).await;
    before.offboarded_before = edsger;

    // The upgrade, with the old replica serving: this release's migrations
    // as the owner, then its grants as the owner.
    migrate("this release's keydesk migrate", &new_bin, &owner_url).await;
    let grants = here("deploy/postgres-grants.sql");
    psql(
        "this release's postgres-grants.sql (as the owner)",
        &owner_url,
        &["-f", grants.to_str().unwrap()],
        None,
    )
    .await;
    let (new_child, new, _new_logs) = spawn_program(&new_bin, &["serve"], &env).await;
    println!("this release ({VERSION}) serves at {new}");
    let (status, page) = before.get(&new, &format!("/users/{guido}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("before-upgrade"),
        "the new replica lists the key the old one made"
    );
    let rolling = Arc::new(Rolling { new, ..before });

    type Check = fn(Arc<Rolling>) -> futures_util::future::BoxFuture<'static, ()>;
    let checks: [(&str, Check); 6] = [
        ("1. forms cross both ways", |r| {
            Box::pin(forms_cross_both_ways(r))
        }),
        (
            "2. a hold placed by either replica is obeyed by both",
            |r| Box::pin(a_hold_by_either_is_obeyed_by_both(r)),
        ),
        (
            "3. a user offboarded by the old replica before the upgrade is held by the new",
            |r| Box::pin(offboarded_before_the_upgrade_is_held_by_new(r)),
        ),
        ("4. Approvals answer on both replicas", |r| {
            Box::pin(approvals_answer_on_both(r))
        }),
        (
            "5. an access review on the new replica leaves the old one serving",
            |r| Box::pin(a_review_on_new_leaves_old_serving(r)),
        ),
        // Last: it leaves the database refusing this release.
        ("6. a downgrade is refused", |r| {
            Box::pin(a_downgrade_is_refused(r))
        }),
    ];
    let mut failed = Vec::new();
    for (name, check) in checks {
        let run = tokio::spawn(within_secs(120, name, check(rolling.clone())));
        match run.await {
            Ok(()) => println!("rolling upgrade: {name}: ok"),
            Err(e) => {
                let why = e
                    .try_into_panic()
                    .ok()
                    .and_then(|p| {
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    })
                    .unwrap_or_default();
                println!("rolling upgrade: {name}: FAILED: {why}");
                failed.push(format!("{name}: {why}"));
            }
        }
    }
    drop((old_child, new_child));
    println!(
        "rolling upgrade: {} of 6 checks passed in {:.1} s",
        6 - failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "rolling upgrade checks failed:\n{}",
        failed.join("\n")
    );
}
