//! Access reviews (issue 35): started from the form, decided by owners on
//! "My keys" and by operators in bulk, ended now or at the deadline, applied
//! through the one audited write (counted at the fake), and the evidence.
//! Then the crossings: offboarding, keys changed outside keydesk, holds,
//! approvals, two replicas, reminders once, the schedule, 1,200 users.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use keydesk::fake_vultr::{FakeVultr, Fault};
use keydesk::reviews::{Decided, Decision, Item, Review};
use keydesk::state::AppState;

/// The hidden form token of the first form posting to `action` on `page`.
fn token_for(page: &str, action: &str) -> String {
    let at = page
        .find(&format!("action=\"{action}\""))
        .unwrap_or_else(|| panic!("no form to {action}: {page}"));
    hidden_token(&page[at..])
}

/// Waits until review `id` is in `state` (the snapshot or the apply job).
async fn wait_state(state: &AppState, id: i64, want: &str) -> Review {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r = state.reviews.get(id).await.unwrap().unwrap();
        if r.state == want {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "review #{id} stayed {} (wanted {want}): {r:?}",
            r.state
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Starts a review from the form as the operator; returns its id, once open.
async fn start_review(app: &TestApp, fields: &[(&str, &str)]) -> i64 {
    let deadline = date_in(7);
    let mut form: Vec<(&str, &str)> = vec![
        ("scope", "all"),
        ("deadline", deadline.as_str()),
        ("default", "keep"),
        ("reviewers", "owner,operators"),
        ("reason", "Q4 access review"),
    ];
    for (k, v) in fields {
        form.retain(|(f, _)| f != k);
        form.push((k, v));
    }
    let r = app.through_form("/reviews/new", &form).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let to = r.headers()["location"].to_str().unwrap().to_string();
    let id: i64 = to.trim_start_matches("/reviews/").parse().unwrap();
    wait_state(&app.state, id, "open").await;
    id
}

/// The owner (an email) with at least `n` keys their own word may keep.
fn limited_owner(items: &[Item], n: usize) -> (String, Vec<Item>) {
    let mut by: std::collections::BTreeMap<String, Vec<Item>> = Default::default();
    for i in items.iter().filter(|i| !i.needs_other) {
        if let Some(e) = &i.user_email {
            by.entry(e.clone()).or_default().push(i.clone());
        }
    }
    by.into_iter()
        .find(|(e, v)| v.len() >= n && e.ends_with("@example.com"))
        .expect("an owner with limited keys")
}

/// Every DELETE the fake received, as `user/key`.
fn deletes(fake: &FakeVultr) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| {
            r.path
                .trim_start_matches("/v2/users/")
                .replace("/apikeys/", "/")
        })
        .collect()
}

/// Presses End review now on the review page (its own form and token).
async fn press_end(app: &TestApp, id: i64) -> reqwest::Response {
    let (_, page) = app.get(&format!("/reviews/{id}")).await;
    let token = token_for(&page, &format!("/reviews/{id}/end"));
    app.post_form(
        &format!("/reviews/{id}/end"),
        &[("form_token", &token), ("reason", "audit week")],
    )
    .await
}

/// Decides `keys` (or the filter's matches) on the review page as the operator.
async fn operator_decides(
    app: &TestApp,
    id: i64,
    decision: &str,
    fields: &[(&str, &str)],
) -> String {
    let (_, page) = app.get(&format!("/reviews/{id}")).await;
    let token = token_for(&page, &format!("/reviews/{id}/decide"));
    let mut form: Vec<(&str, &str)> = vec![
        ("form_token", &token),
        ("decision", decision),
        ("reason", "checked with the team"),
    ];
    form.extend_from_slice(fields);
    let r = app.post_form(&format!("/reviews/{id}/decide"), &form).await;
    assert_eq!(r.status(), 303);
    let (_, after) = app.get(&format!("/reviews/{id}")).await;
    after
}

/// An owner's decision from "My keys".
async fn owner_decides(
    app: &TestApp,
    owner: &reqwest::Client,
    id: i64,
    key: &str,
    decision: &str,
    why: &str,
) -> reqwest::Response {
    let page = get_text(owner, app.url("/me")).await;
    let token = token_for(&page, &format!("/me/reviews/{id}/decide"));
    owner
        .post(app.url(&format!("/me/reviews/{id}/decide")))
        .form(&[
            ("form_token", token.as_str()),
            ("key_id", key),
            ("decision", decision),
            ("reason", why),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn owners_confirm_from_my_keys_and_end_now_revokes_exactly_what_should_go() {
    let app = TestApp::spawn().await;
    let id = start_review(&app, &[("default", "recommended")]).await;
    let review = app.state.reviews.get(id).await.unwrap().unwrap();
    let items = app.state.reviews.items(id).await.unwrap();
    // Every key of every user is in it, each with its facts.
    let all_keys: usize = app
        .fake
        .users()
        .iter()
        .map(|u| app.fake.keys_of(&u.id).len())
        .sum();
    assert_eq!(items.len(), all_keys);
    assert!(
        items
            .iter()
            .all(|i| i.key_tail.as_deref().is_some_and(|t| t.len() == 5))
    );
    assert!(items.iter().any(|i| i.recommendation == "revoke"
        && i.recommendation_reason.starts_with("the key expired on")));
    assert!(items.iter().any(|i| i.recommendation == "keep"));

    // The owner sees their keys, and nobody else's.
    let (owner, mine) = limited_owner(&items, 2);
    let browser = client(Some(&owner));
    let me = get_text(&browser, app.url("/me")).await;
    assert!(me.contains("id=\"keys-to-confirm\""), "{me}");
    for i in &items {
        let shown = me.contains(&format!("data-key-id=\"{}\" data-review", i.key_id));
        assert_eq!(
            shown,
            i.user_email.as_deref() == Some(owner.as_str()),
            "{}",
            i.key_id
        );
    }
    // Keep one, revoke the other (changing their mind once on the way).
    let (keep, drop_) = (&mine[0], &mine[1]);
    assert_eq!(
        owner_decides(
            &app,
            &browser,
            id,
            &keep.key_id,
            "keep",
            "the nightly backup"
        )
        .await
        .status(),
        303
    );
    assert_eq!(
        owner_decides(&app, &browser, id, &drop_.key_id, "keep", "hm")
            .await
            .status(),
        303
    );
    assert_eq!(
        owner_decides(
            &app,
            &browser,
            id,
            &drop_.key_id,
            "revoke",
            "laptop is gone"
        )
        .await
        .status(),
        303
    );
    let me = get_text(&browser, app.url("/me")).await;
    assert!(me.contains("will be revoked when review"), "{me}");
    let kept = app
        .state
        .reviews
        .item(id, &keep.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (kept.decision.as_deref(), kept.decided_role.as_deref()),
        (Some("keep"), Some("owner"))
    );
    let history = app.state.reviews.decisions(id).await.unwrap();
    let of_drop: Vec<&str> = history
        .iter()
        .filter(|d| d.key_id == drop_.key_id)
        .map(|d| d.decision.as_str())
        .collect();
    assert_eq!(
        of_drop,
        ["keep", "revoke"],
        "every decision kept; the last counts"
    );

    // Someone else's key: refused in words, audited, nothing changed.
    let theirs = items
        .iter()
        .find(|i| i.user_email.as_deref() != Some(owner.as_str()))
        .unwrap();
    let r = owner_decides(&app, &browser, id, &theirs.key_id, "revoke", "x").await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("not one of your keys"));
    assert!(
        app.state
            .reviews
            .item(id, &theirs.key_id)
            .await
            .unwrap()
            .unwrap()
            .decision
            .is_none()
    );

    // An operator keeps one key in bulk by ticking it.
    let other = items
        .iter()
        .find(|i| i.user_email.as_deref() != Some(owner.as_str()) && i.recommendation == "revoke")
        .unwrap();
    let page = operator_decides(
        &app,
        id,
        "keep",
        &[("select", "ticked"), ("key", &other.key_id)],
    )
    .await;
    assert!(page.contains("1 item(s) decided: keep"), "{page}");

    // What should go: each item's decision, or the default (recommended).
    let items = app.state.reviews.items(id).await.unwrap();
    let expected: BTreeSet<String> = items
        .iter()
        .filter(|i| {
            i.decided()
                .unwrap_or_else(|| review.fallback().apply(i.recommended()))
                == Decision::Revoke
        })
        .map(|i| format!("{}/{}", i.user_id, i.key_id))
        .collect();
    assert!(expected.contains(&format!("{}/{}", drop_.user_id, drop_.key_id)));
    assert!(!expected.contains(&format!("{}/{}", other.user_id, other.key_id)));
    app.fake.clear_log();

    assert_eq!(press_end(&app, id).await.status(), 303);
    let closed = wait_state(&app.state, id, "closed").await;
    assert_eq!(closed.closed_by.as_deref(), Some(STAFF));
    let sent: BTreeSet<String> = deletes(&app.fake).into_iter().collect();
    assert_eq!(
        sent, expected,
        "End review now revoked exactly the keys that should go"
    );
    assert_eq!(deletes(&app.fake).len(), expected.len(), "one DELETE each");
    for k in &expected {
        let (u, key) = k.split_once('/').unwrap();
        assert!(!app.fake.keys_of(u).iter().any(|x| x.id == key), "{k} gone");
    }
    let items = app.state.reviews.items(id).await.unwrap();
    for i in &items {
        let want = if expected.contains(&format!("{}/{}", i.user_id, i.key_id)) {
            "revoked"
        } else {
            "kept"
        };
        assert_eq!(i.outcome.as_deref(), Some(want), "{i:?}");
        let by_default = i.decision.is_none();
        assert_eq!(
            i.applied_by.as_deref() == Some("default"),
            by_default,
            "{i:?}"
        );
    }
    // Nothing more can be decided: the section is gone, the store refuses.
    let me = get_text(&browser, app.url("/me")).await;
    assert!(!me.contains("id=\"keys-to-confirm\""));
    assert_eq!(
        app.state
            .reviews
            .decide(id, &keep.key_id, Decision::Revoke, &owner, "owner", None)
            .await
            .unwrap(),
        Decided::NotOpen
    );

    // The audit names the review: start, decisions, close, each DELETE
    // (approved_by: who decided, or "default"), and the summary.
    let f = keydesk::audit::Filter {
        review: Some(id.to_string()),
        ..Default::default()
    };
    let entries = app.state.audit.list(&f, 1000, 0).await.unwrap();
    let count = |a: &str| entries.iter().filter(|e| e.action == a).count();
    assert_eq!(count("review.start"), 1);
    assert_eq!(count("review.decide"), 4);
    assert_eq!(count("review.close"), 1);
    assert_eq!(count("review.apply"), 1);
    assert_eq!(count("key.revoke"), expected.len());
    let revoke_of_drop = entries
        .iter()
        .find(|e| e.action == "key.revoke" && e.key_id.as_deref() == Some(drop_.key_id.as_str()))
        .unwrap();
    assert_eq!(revoke_of_drop.approved_by.as_deref(), Some(owner.as_str()));
    assert!(
        entries
            .iter()
            .filter(|e| e.action == "key.revoke")
            .all(|e| e.outcome == "ok")
    );
    // The owner's try at someone else's key is part of the review's trail.
    assert_eq!(count("access.denied"), 1);
    for other in ["999", "abc"] {
        let f = keydesk::audit::Filter {
            review: Some(other.into()),
            ..Default::default()
        };
        let none = app.state.audit.list(&f, 10, 0).await.unwrap();
        assert!(none.is_empty(), "review={other} shows no entries: {none:?}");
    }
    let (status, page) = app.get(&format!("/audit?review={id}")).await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"audit-review-shown\""), "{page}");

    // The evidence: every item, its snapshot, recommendation, decisions and outcome.
    let (status, csv) = app.get(&format!("/reviews/{id}.csv")).await;
    assert_eq!(status, 200);
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let heads = rdr.headers().unwrap().clone();
    let col = |n: &str| {
        heads
            .iter()
            .position(|h| h == n)
            .unwrap_or_else(|| panic!("column {n}"))
    };
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), items.len());
    let row = rows
        .iter()
        .find(|r| &r[col("key_id")] == drop_.key_id.as_str())
        .unwrap();
    assert_eq!(&row[col("user_email")], owner.as_str());
    assert_eq!(&row[col("outcome")], "revoked");
    assert_eq!(&row[col("applied_by")], owner.as_str());
    assert!(
        row[col("decisions")].contains("keep by") && row[col("decisions")].contains("revoke by")
    );
    assert!(row[col("decisions")].contains("laptop is gone"));
    assert_eq!(row[col("key_last5")].len(), 5);
    for c in [
        "level",
        "acls",
        "reach",
        "expires",
        "last_activity",
        "recommendation",
        "recommendation_reason",
        "upstream_status",
    ] {
        col(c);
    }
    let (status, jsonl) = app.get(&format!("/reviews/{id}.jsonl")).await;
    assert_eq!(status, 200);
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), items.len());
    let j = lines
        .iter()
        .find(|l| l["key_id"] == drop_.key_id.as_str())
        .unwrap();
    assert_eq!(j["decision_history"].as_array().unwrap().len(), 2);
    assert_eq!(j["upstream_status"], 204);
}

#[tokio::test]
async fn a_root_or_anywhere_key_is_not_kept_on_its_owners_word_and_the_database_refuses_it_too() {
    let app = TestApp::spawn().await;
    let id = start_review(&app, &[]).await;
    let items = app.state.reviews.items(id).await.unwrap();
    // Ada is root-equivalent and usable from any address.
    let ada: Vec<&Item> = items
        .iter()
        .filter(|i| i.user_email.as_deref() == Some("ada@example.com"))
        .collect();
    assert!(!ada.is_empty() && ada.iter().all(|i| i.needs_other && i.level == "root"));
    let key = &ada[0].key_id;
    let browser = client(Some("ada@example.com"));
    let me = get_text(&browser, app.url("/me")).await;
    assert!(me.contains("an operator must confirm it"), "{me}");
    let r = owner_decides(&app, &browser, id, key, "keep", "mine").await;
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("your word alone does not keep it")
    );
    assert!(
        app.state
            .reviews
            .item(id, key)
            .await
            .unwrap()
            .unwrap()
            .decision
            .is_none()
    );
    // The store, and a hand-written UPDATE, are refused by the database.
    let got = app
        .state
        .reviews
        .decide(id, key, Decision::Keep, "ADA@example.com", "operator", None)
        .await
        .unwrap();
    assert_eq!(got, Decided::OwnerMayNotKeep);
    let raw = sqlx::query(
        "UPDATE review_items SET decision = 'keep', decided_by = 'Ada@Example.com' WHERE review_id = $1 AND key_id = $2",
    );
    let refused = match app.state.db.clone() {
        keydesk::db::Db::Sqlite(p) => raw.bind(id).bind(key).execute(&p).await.is_err(),
        keydesk::db::Db::Postgres(_) => unreachable!(),
    };
    assert!(refused, "the CHECK refuses the owner's own keep");
    // The owner may revoke it; another person may keep it.
    assert_eq!(
        owner_decides(&app, &browser, id, key, "revoke", "unused")
            .await
            .status(),
        303
    );
    let page = operator_decides(&app, id, "keep", &[("select", "ticked"), ("key", key)]).await;
    assert!(page.contains("1 item(s) decided: keep"), "{page}");
    let item = app.state.reviews.item(id, key).await.unwrap().unwrap();
    assert_eq!(
        (item.decision.as_deref(), item.decided_by.as_deref()),
        (Some("keep"), Some(STAFF))
    );
}

#[tokio::test]
async fn the_crossings_offboarded_held_changed_outside_and_approvals() {
    // Approval rules on every key: a review's keep needs none, and its
    // revoke never waits.
    let opts = approval_options(&["all-keys"], Duration::from_secs(3600));
    let app = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts).await;
    let held = app.user_id("grace@example.com");
    app.state
        .holds
        .place(&held, Some("grace@example.com"), STAFF, Some("left"), None)
        .await
        .unwrap();
    let id = start_review(&app, &[("default", "revoke")]).await;
    let items = app.state.reviews.items(id).await.unwrap();
    // A held user's keys are recommended for revocation, with the reason.
    let of = |u: &str| {
        items
            .iter()
            .filter(|i| i.user_id == u.to_ascii_lowercase())
            .cloned()
            .collect::<Vec<_>>()
    };
    let graces = of(&held);
    assert!(!graces.is_empty());
    assert!(graces.iter().all(
        |i| i.recommendation == "revoke" && i.recommendation_reason == "the user is offboarded"
    ));
    // During the review: someone is offboarded, and a key is revoked
    // outside keydesk's review.
    let leaver = app.user_id("alan@example.com");
    let leavers = of(&leaver);
    assert!(!leavers.is_empty());
    app.state
        .holds
        .place(
            &leaver,
            Some("alan@example.com"),
            STAFF,
            Some("left mid-review"),
            None,
        )
        .await
        .unwrap();
    let changed = items
        .iter()
        .find(|i| {
            i.user_id != held.to_ascii_lowercase() && i.user_id != leaver.to_ascii_lowercase()
        })
        .unwrap()
        .clone();
    let cuid = keydesk::ids::VultrId::parse(&changed.user_id).unwrap();
    let ckey = keydesk::ids::VultrId::parse(&changed.key_id).unwrap();
    app.state.vultr.delete_key(&cuid, &ckey).await.unwrap();
    // Keep one key (needs no approval).
    let kept = items
        .iter()
        .find(|i| {
            ![
                held.to_ascii_lowercase(),
                leaver.to_ascii_lowercase(),
                changed.user_id.clone(),
            ]
            .contains(&i.user_id)
        })
        .unwrap()
        .clone();
    operator_decides(
        &app,
        id,
        "keep",
        &[("select", "ticked"), ("key", &kept.key_id)],
    )
    .await;
    app.fake.clear_log();
    assert_eq!(press_end(&app, id).await.status(), 303);
    wait_state(&app.state, id, "closed").await;
    let after = app.state.reviews.items(id).await.unwrap();
    let outcome = |k: &str| {
        after
            .iter()
            .find(|i| i.key_id == k)
            .unwrap()
            .outcome
            .clone()
            .unwrap()
    };
    for i in graces.iter().chain(leavers.iter()) {
        assert_eq!(outcome(&i.key_id), "offboarded", "{i:?}");
    }
    assert_eq!(outcome(&changed.key_id), "gone");
    assert_eq!(outcome(&kept.key_id), "kept");
    let sent = deletes(&app.fake);
    assert!(
        !sent
            .iter()
            .any(|d| d.starts_with(&held.to_ascii_lowercase())
                || d.starts_with(&leaver.to_ascii_lowercase())),
        "no DELETE for offboarded users: {sent:?}"
    );
    assert!(
        !sent.iter().any(|d| d.ends_with(&changed.key_id)),
        "no DELETE for a key already gone"
    );
    assert!(!sent.iter().any(|d| d.ends_with(&kept.key_id)));
    let revoked = after
        .iter()
        .filter(|i| i.outcome.as_deref() == Some("revoked"))
        .count();
    assert_eq!(
        sent.len(),
        revoked,
        "every other key revoked by default, once"
    );
    assert!(revoked > 0);
    // Nothing waited for an approval.
    let (_, approvals) = app.get("/approvals").await;
    assert!(approvals.contains("No requests match"), "{approvals}");
}

#[tokio::test]
async fn an_unknown_outcome_is_reconciled_and_a_failure_retried_then_recorded() {
    let app = TestApp::spawn().await;
    let id = start_review(&app, &[("scope", "root")]).await;
    let items = app.state.reviews.items(id).await.unwrap();
    assert!(items.iter().all(|i| i.level == "root"), "the scope held");
    let (first, rest) = items.split_first().unwrap();
    operator_decides(
        &app,
        id,
        "revoke",
        &[("select", "ticked"), ("key", &first.key_id)],
    )
    .await;
    // Vultr carries the DELETE out but the answer is lost.
    app.fake
        .set_fault_after("DELETE", &first.key_id, Some(Fault::Reset));
    assert_eq!(press_end(&app, id).await.status(), 303);
    wait_state(&app.state, id, "closed").await;
    let item = app
        .state
        .reviews
        .item(id, &first.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.outcome.as_deref(), Some("unknown"), "{item:?}");
    app.fake.set_fault_after("DELETE", &first.key_id, None);
    keydesk::pages::reviews::reconcile::reconcile_unknown(&app.state).await;
    let item = app
        .state
        .reviews
        .item(id, &first.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.outcome.as_deref(), Some("revoked"), "{item:?}");
    assert_eq!(
        app.fake.count("DELETE", "/v2/users"),
        1,
        "the gone key is not deleted again"
    );
    // One whose DELETE never reached Vultr (the answer lost before it
    // acted): still listed, so the sweep revokes it again, once.
    let second = &rest[0];
    let review2 = start_review(&app, &[("scope", "root")]).await;
    operator_decides(
        &app,
        review2,
        "revoke",
        &[("select", "ticked"), ("key", &second.key_id)],
    )
    .await;
    app.fake.set_fault_on("DELETE", Fault::Reset);
    assert_eq!(press_end(&app, review2).await.status(), 303);
    wait_state(&app.state, review2, "closed").await;
    app.fake.set_fault(None);
    let item = app
        .state
        .reviews
        .item(review2, &second.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.outcome.as_deref(), Some("unknown"), "{item:?}");
    assert!(
        app.fake
            .keys_of(&second.user_id)
            .iter()
            .any(|k| k.id == second.key_id),
        "not carried out"
    );
    keydesk::pages::reviews::reconcile::reconcile_unknown(&app.state).await;
    let item = app
        .state
        .reviews
        .item(review2, &second.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.outcome.as_deref(), Some("revoked"), "{item:?}");
    assert_eq!(
        item.outcome_detail.as_deref(),
        Some("reconciled: revoked again")
    );
    assert!(
        !app.fake
            .keys_of(&second.user_id)
            .iter()
            .any(|k| k.id == second.key_id)
    );

    // Vultr down at the close: the item waits (attempts counted), the review
    // stays closing; once the backoff passed and Vultr is back, it is applied.
    let third = &rest[1];
    let review3 = start_review(&app, &[("scope", "root")]).await;
    operator_decides(
        &app,
        review3,
        "revoke",
        &[("select", "ticked"), ("key", &third.key_id)],
    )
    .await;
    app.fake.set_fault_on("DELETE", Fault::Status(503));
    assert_eq!(press_end(&app, review3).await.status(), 303);
    let deadline = Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let i = app
            .state
            .reviews
            .item(review3, &third.key_id)
            .await
            .unwrap()
            .unwrap();
        if i.attempts >= 1 {
            break i;
        }
        assert!(Instant::now() < deadline, "no attempt recorded");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(waiting.outcome.is_none(), "{waiting:?}");
    assert!(
        waiting
            .outcome_detail
            .as_deref()
            .unwrap_or("")
            .contains("503"),
        "{waiting:?}"
    );
    keydesk::pages::reviews::close::resume_stalled(&app.state).await;
    assert_eq!(
        app.state.reviews.get(review3).await.unwrap().unwrap().state,
        "closing",
        "it waits its backoff"
    );
    app.fake.set_fault(None);
    if let keydesk::db::Db::Sqlite(p) = app.state.db.clone() {
        sqlx::query("UPDATE review_items SET applied_ms = 0 WHERE review_id = $1")
            .bind(review3)
            .execute(&p)
            .await
            .unwrap();
    }
    // The lease of the first try lapses; the next look takes it over.
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.state.reviews.get(review3).await.unwrap().unwrap().state != "closed" {
        keydesk::pages::reviews::close::resume_stalled(&app.state).await;
        assert!(Instant::now() < deadline, "the retry never applied it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let item = app
        .state
        .reviews
        .item(review3, &third.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.outcome.as_deref(), Some("revoked"), "{item:?}");
    assert_eq!(item.attempts, 2, "{item:?}");
}

#[tokio::test]
async fn the_csv_is_inert_to_formulas_and_the_deadline_closes_a_review() {
    let fake = FakeVultr::seeded(ROOT_KEY);
    let ada = user_id_in(&fake, "ada@example.com");
    fake.add_key(&ada, "=HYPERLINK(\"http://evil\",\"x\")", None);
    let app = TestApp::spawn_with(fake, Options::default()).await;
    let id = start_review(&app, &[("reason", "+SUM(A1)")]).await;
    let (_, csv) = app.get(&format!("/reviews/{id}.csv")).await;
    assert!(csv.contains("'=HYPERLINK"), "{csv}");
    assert!(
        csv.contains("'+SUM(A1)"),
        "the review's reason, neutralised: {csv}"
    );
    assert!(!csv.contains(",=HYPERLINK") && !csv.contains("\"=HYPERLINK"));
    // A deadline reached: the job loop's look ends it, as keydesk.
    let past = app.state.db.now_ms().await.unwrap() - 1;
    if let keydesk::db::Db::Sqlite(p) = app.state.db.clone() {
        sqlx::query("UPDATE reviews SET deadline_ms = $1 WHERE id = $2")
            .bind(past)
            .bind(id)
            .execute(&p)
            .await
            .unwrap();
    }
    keydesk::pages::reviews::close::resume_stalled(&app.state).await;
    let closed = wait_state(&app.state, id, "closed").await;
    assert_eq!(closed.closed_by.as_deref(), Some("deadline"));
    assert_eq!(
        app.fake.count("DELETE", "/v2/users"),
        0,
        "the default was keep"
    );
    let f = keydesk::audit::Filter {
        review: Some(id.to_string()),
        action: Some("review.close".into()),
        ..Default::default()
    };
    let close = app.state.audit.list(&f, 10, 0).await.unwrap();
    assert_eq!(close.len(), 1);
    assert_eq!(close[0].actor, "keydesk");
}

#[tokio::test]
async fn bad_input_changes_nothing_and_one_review_is_open_per_scope() {
    let app = TestApp::spawn().await;
    let id = start_review(&app, &[("scope", "anywhere, root")]).await;
    // The same scope, spelled differently: refused while one is open.
    for (field, value, words) in [
        ("scope", "root,anywhere", "already open"),
        ("scope", "roots", "is not a review scope"),
        ("deadline", "2020-01-01", "today or later"),
        ("deadline", "soon", "not a date"),
        ("default", "maybe", "not a default decision"),
        ("reviewers", "everyone", "not a set of reviewers"),
        ("inactive_days", "0", "Inactivity days"),
    ] {
        let deadline = date_in(7);
        let mut form = vec![
            ("scope", "all"),
            ("deadline", deadline.as_str()),
            ("default", "keep"),
            ("reviewers", "owner"),
        ];
        form.retain(|(f, _)| *f != field);
        form.push((field, value));
        let r = app.through_form("/reviews/new", &form).await;
        assert!(
            r.status().is_client_error(),
            "{field}={value}: {}",
            r.status()
        );
        let body = r.text().await.unwrap();
        assert!(body.contains(words), "{field}={value}: {body}");
    }
    let reviews = app.state.reviews.list(10).await.unwrap();
    assert_eq!(reviews.len(), 1, "nothing else was started");
    assert_eq!(reviews[0].id, id);
    // A viewer sees the reviews and the evidence, and starts or decides nothing.
    let viewer = client(Some(VIEWER));
    assert_eq!(status_as(&viewer, app.url("/reviews")).await, 200);
    assert_eq!(
        status_as(&viewer, app.url(&format!("/reviews/{id}.csv"))).await,
        200
    );
    assert_eq!(status_as(&viewer, app.url("/reviews/new")).await, 403);
    let page = get_text(&viewer, app.url(&format!("/reviews/{id}"))).await;
    assert!(
        !page.contains("id=\"review-end-form\"") && !page.contains("name=\"form_token\""),
        "{page}"
    );
    assert_eq!(app.get("/reviews/nope").await.0, 400);
    assert_eq!(app.get("/reviews/999").await.0, 404);
}

#[tokio::test]
async fn two_replicas_deciding_one_item_at_once_record_both_and_one_counts() {
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    let opts = Options::on(&url);
    let a = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts.clone()).await;
    let b = a.replica(opts).await;
    let id = start_review(&a, &[]).await;
    let item = a
        .state
        .reviews
        .items(id)
        .await
        .unwrap()
        .into_iter()
        .find(|i| !i.needs_other)
        .unwrap();
    let (ta, tb) = {
        let (_, pa) = a.get(&format!("/reviews/{id}")).await;
        let (_, pb) = b.get(&format!("/reviews/{id}")).await;
        (
            token_for(&pa, &format!("/reviews/{id}/decide")),
            token_for(&pb, &format!("/reviews/{id}/decide")),
        )
    };
    let post = |app: &TestApp, token: String, decision: &'static str| {
        let key = item.key_id.clone();
        let (c, u) = (
            app.client.clone(),
            app.url(&format!("/reviews/{id}/decide")),
        );
        async move {
            c.post(u)
                .form(&[
                    ("form_token", token.as_str()),
                    ("decision", decision),
                    ("select", "ticked"),
                    ("key", key.as_str()),
                ])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let (ra, rb) = tokio::join!(post(&a, ta, "keep"), post(&b, tb, "revoke"));
    assert_eq!((ra.as_u16(), rb.as_u16()), (303, 303));
    // The owner's own keep of a root key: refused by PostgreSQL's CHECK too.
    let root = a
        .state
        .reviews
        .items(id)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.needs_other && i.user_email.is_some())
        .unwrap();
    let owner = root.user_email.clone().unwrap().to_uppercase();
    let got = a
        .state
        .reviews
        .decide(id, &root.key_id, Decision::Keep, &owner, "owner", None)
        .await
        .unwrap();
    assert_eq!(got, Decided::OwnerMayNotKeep);
    let history: Vec<_> = a
        .state
        .reviews
        .decisions(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.key_id == item.key_id)
        .collect();
    assert_eq!(history.len(), 2, "both decisions recorded");
    let now = a
        .state
        .reviews
        .item(id, &item.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        now.decision.as_deref(),
        Some(history[1].decision.as_str()),
        "the last one counts"
    );
    let f = keydesk::audit::Filter {
        review: Some(id.to_string()),
        action: Some("review.decide".into()),
        ..Default::default()
    };
    let audited = a.state.audit.list(&f, 10, 0).await.unwrap();
    assert_eq!(
        audited.iter().filter(|e| e.outcome == "ok").count(),
        2,
        "both audited"
    );
}

#[tokio::test]
async fn reminders_go_out_once_across_replicas_and_are_inert_in_chat() {
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    let hook = sinks::WebhookSink::start().await;
    let smtp = sinks::SmtpSink::start().await;
    let mut opts = Options::on(&url);
    opts.notify = keydesk::notify::NotifyConfig {
        webhook: Some(secrecy::SecretString::from(hook.url.clone())),
        smtp: Some(secrecy::SecretString::from(smtp.url.clone())),
        from: "keydesk <keydesk@example.com>".into(),
        ..Default::default()
    };
    let a = TestApp::spawn_with(FakeVultr::seeded(ROOT_KEY), opts.clone()).await;
    let b = a.replica(opts).await;
    let id = start_review(&a, &[("reviewers", "owner")]).await;
    wait_until("the start notices", || !hook.posts().is_empty()).await;
    let texts = || {
        hook.posts()
            .iter()
            .map(|p| p["text"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let start = texts();
    assert_eq!(start.len(), 1, "{start:?}");
    assert!(
        start[0].contains(&format!("Access review ＃{id}")),
        "{start:?}"
    );
    // The hostile owner email reaches chat inert.
    assert!(
        !start[0].contains("<img") && start[0].contains("&lt;img"),
        "{start:?}"
    );
    // Owners with items (self-review): each mailed their count.
    let owners: BTreeSet<String> = a
        .state
        .reviews
        .items(id)
        .await
        .unwrap()
        .iter()
        .filter(|i| !i.needs_other)
        .filter_map(|i| i.user_email.clone())
        .filter(|e| e.ends_with("@example.com"))
        .collect();
    wait_until("the owners' mails", || smtp.mails().len() >= owners.len()).await;
    let mails_at_start = smtp.mails().len();
    assert_eq!(mails_at_start, owners.len(), "each owner mailed once");
    // Within the reminder days: both replicas look at once; one reminder each.
    let soon = a.state.db.now_ms().await.unwrap() + 86_400_000;
    if let keydesk::db::Db::Postgres(p) = a.state.db.clone() {
        sqlx::query("UPDATE reviews SET deadline_ms = $1 WHERE id = $2")
            .bind(soon)
            .bind(id)
            .execute(&p)
            .await
            .unwrap();
    }
    tokio::join!(
        keydesk::pages::reviews::notices::remind_due(&a.state),
        keydesk::pages::reviews::notices::remind_due(&b.state)
    );
    keydesk::pages::reviews::notices::remind_due(&b.state).await;
    let reminders: Vec<String> = texts()
        .into_iter()
        .filter(|t| t.starts_with("Reminder:"))
        .collect();
    assert_eq!(reminders.len(), 1, "{reminders:?}");
    let mails = smtp.mails();
    let reminder_mails = mails
        .iter()
        .filter(|m| m.subject().starts_with("Reminder:"))
        .count();
    assert_eq!(
        reminder_mails, mails_at_start,
        "one reminder per owner, as at the start"
    );
    // The close: a summary, once.
    assert_eq!(press_end(&a, id).await.status(), 303);
    wait_state(&a.state, id, "closed").await;
    wait_until("the close notice", || {
        texts().iter().any(|t| t.starts_with("Closed:"))
    })
    .await;
    keydesk::pages::reviews::notices::closed(
        &b.state,
        &a.state.reviews.get(id).await.unwrap().unwrap(),
        &[],
    )
    .await;
    assert_eq!(
        texts().iter().filter(|t| t.starts_with("Closed:")).count(),
        1
    );
}

#[tokio::test]
async fn a_review_of_1200_users_reads_vultr_within_the_shared_budget() {
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    let fake = FakeVultr::with_users(ROOT_KEY, 1200);
    fake.set_rate_limit(Some(30));
    let mut opts = Options::on(&url);
    opts.upstream.rps = 25;
    let a = TestApp::spawn_with(fake, opts.clone()).await;
    let b = a.replica(opts).await;
    let rss = |_: ()| {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = rss(());
    let started = Instant::now();
    let ids: Vec<String> = a
        .fake
        .users()
        .iter()
        .take(40)
        .map(|u| u.id.clone())
        .collect();
    let browse = async {
        for id in &ids {
            assert_eq!(b.get(&format!("/users/{id}")).await.0, 200);
        }
    };
    let (id, ()) = within_secs(400, "the snapshot and the browsing", async {
        tokio::join!(start_review(&a, &[]), browse)
    })
    .await;
    let took = started.elapsed().as_secs_f64();
    let calls = a.fake.requests().len();
    let review = a.state.reviews.get(id).await.unwrap().unwrap();
    let items = a.state.reviews.items(id).await.unwrap().len();
    println!(
        "review of {} users: {items} items, {calls} upstream calls (with 40 user pages beside it) in {took:.1} s; floor {:.1} s; test-process RSS {} → {} KiB",
        review.users_total,
        calls as f64 / 25.0,
        before,
        rss(())
    );
    assert_eq!(review.users_total, 1200);
    assert_eq!(a.fake.rate_limited_count(), 0, "Vultr never answered 429");
}

#[tokio::test]
async fn the_schedule_starts_one_review_across_replicas() {
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    let fake = FakeVultr::seeded(ROOT_KEY);
    let upstream = fake.spawn().await.unwrap();
    let settings = || keydesk::state::Settings {
        review_schedule: keydesk::reviews::Schedule {
            every: Some(Duration::from_secs(90 * 86_400)),
            scope: "no-expiry".parse().unwrap(),
            ..Default::default()
        },
        ..Options::on(&url).settings(&upstream)
    };
    let a = Stoppable::start(settings()).await;
    let b = Stoppable::start(settings()).await;
    tokio::join!(
        keydesk::pages::reviews::schedule::start_if_due(&a.state),
        keydesk::pages::reviews::schedule::start_if_due(&b.state)
    );
    keydesk::pages::reviews::schedule::start_if_due(&a.state).await;
    let all = a.state.reviews.list(10).await.unwrap();
    let live: Vec<_> = all.iter().filter(|r| r.state != "failed").collect();
    assert_eq!(live.len(), 1, "{all:?}");
    assert_eq!(live[0].scope, "no-expiry");
    assert_eq!(live[0].started_by, "keydesk");
    let open = wait_state(&a.state, live[0].id, "open").await;
    let items = a.state.reviews.items(open.id).await.unwrap();
    assert!(!items.is_empty() && items.iter().all(|i| i.expires.is_none()));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn keydesk_review_start_runs_once_for_cron_and_mistakes_name_the_variable() {
    let dir = std::env::temp_dir().join(format!("kd-review-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("k.db").display());
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keydesk"));
        without_inherited_keydesk_variables(&mut cmd);
        cmd.args(args)
            .env("KEYDESK_DATABASE_URL", &db)
            .env("KEYDESK_REVIEW_SCOPE", "root");
        cmd.output().unwrap()
    };
    let out = run(&["review", "--start", "--demo"]);
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("review #1 of root started:"), "{said}");
    let again = run(&["review", "--start", "--demo"]);
    let said = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(
        again.status.success() && said.contains("already open"),
        "{said}"
    );
    let no_flag = run(&["review", "--demo"]);
    assert!(!no_flag.status.success());
    let _ = std::fs::remove_dir_all(&dir);
    let base = |extra: &[(&'static str, &'static str)]| {
        let mut v = vec![
            ("VULTR_API_KEY", ROOT_KEY),
            ("KEYDESK_OPERATORS", "ops@example.com"),
            ("KEYDESK_DATABASE_URL", "sqlite::memory:"),
        ];
        v.extend_from_slice(extra);
        v
    };
    let said = serve_refuses(
        &base(&[
            ("KEYDESK_REVIEW_EVERY", "7d"),
            ("KEYDESK_REVIEW_DAYS", "14"),
        ]),
        &[],
    );
    assert!(said.contains("KEYDESK_REVIEW_EVERY"), "{said}");
    let said = serve_refuses(&base(&[("KEYDESK_REVIEW_SCOPE", "everything")]), &[]);
    assert!(said.contains("KEYDESK_REVIEW_SCOPE"), "{said}");
    let said = serve_refuses(&base(&[("KEYDESK_REVIEW_DEFAULT", "maybe")]), &[]);
    assert!(said.contains("KEYDESK_REVIEW_DEFAULT"), "{said}");
}
