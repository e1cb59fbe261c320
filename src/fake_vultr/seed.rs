//! The fake's data sets: the demo's 25 users covering every case the UI must
//! handle, and `n` plain users for benchmarks.

use serde_json::json;
use sha2::Digest;

use super::{FakeVultr, now_rfc3339};
use crate::vultr::User;

impl FakeVultr {
    /// The demo data set: 25 users covering every case the UI must handle.
    pub fn seeded(token: &str) -> Self {
        let fake = Self::new(token);
        fake.seed_demo();
        fake
    }

    /// `n` plain users with two keys each (benchmarks, pagination at scale).
    pub fn with_users(token: &str, n: usize) -> Self {
        let fake = Self::new(token);
        for i in 0..n {
            let id = fake.add_user(User {
                id: format!("{:013x}", 0x5eed_0000_0000u64 + i as u64),
                first_name: Some(format!("User{i}")),
                last_name: Some("Load".into()),
                email: Some(format!("user{i}@example.test")),
                api_enabled: Some(true),
                acls: Some(vec!["subscriptions_view".into()]),
                status: Some("active".into()),
                ..Default::default()
            });
            fake.add_key(&id, "ci", Some(time::Duration::days(10 + i as i64 % 80)));
            fake.add_key(&id, "legacy", None);
        }
        fake
    }

    /// A demo key whose id follows from its user and name, so the demo's
    /// data is the same in every process (`keydesk notify --once --demo`
    /// twice sends nothing the second time).
    fn add_demo_key(
        &self,
        user_id: &str,
        name: &str,
        expires_in: Option<time::Duration>,
    ) -> String {
        let digest = sha2::Sha256::digest(format!("{user_id}/{name}").as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        let id = uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string();
        self.add_key_with_id(id, user_id, name, expires_in)
    }

    pub(super) fn seed_demo(&self) {
        let people: [(&str, &str, &str); 25] = [
            ("Ada", "Lovelace", "ada@example.com"),
            ("Grace", "Hopper", "grace@example.com"),
            ("Alan", "Turing", "alan@example.com"),
            ("Edsger", "Dijkstra", "edsger@example.com"),
            ("Barbara", "Liskov", "barbara@example.com"),
            ("Donald", "Knuth", "don@example.com"),
            ("Margaret", "Hamilton", "margaret@example.com"),
            ("Ken", "Thompson", "ken@example.com"),
            ("Dennis", "Ritchie", "dennis@example.com"),
            ("Frances", "Allen", "frances@example.com"),
            ("John", "McCarthy", "john@example.com"),
            ("Radia", "Perlman", "radia@example.com"),
            ("Leslie", "Lamport", "leslie@example.com"),
            ("Tony", "Hoare", "tony@example.com"),
            ("Katherine", "Johnson", "katherine@example.com"),
            ("Linus", "Torvalds", "linus@example.com"),
            ("Hedy", "Lamarr", "hedy@example.com"),
            ("Niklaus", "Wirth", "niklaus@example.com"),
            ("Sophie", "Wilson", "sophie@example.com"),
            ("Guido", "van Rossum", "guido@example.com"),
            ("Joan", "Clarke", "joan@example.com"),
            ("Bjarne", "Stroustrup", "bjarne@example.com"),
            ("O'Brien & \"Sons\"", "<b>Bold</b>", "obrien@example.com"),
            (
                "<script>alert('x')</script>",
                "Mallory",
                "mallory@example.com",
            ),
            ("CI", "Deployer", "ci-bot@example.com"),
        ];
        let acl_sets: [&[&str]; 4] = [
            &["manage_users", "billing", "subscriptions"],
            &["subscriptions_view"],
            &["dns", "provisioning"],
            &[],
        ];
        for (i, (first, last, email)) in people.iter().enumerate() {
            // Vultr's ids are short hex, and UUIDs on newer accounts: both.
            let id = if i % 4 == 2 {
                let digest = sha2::Sha256::digest(email.as_bytes());
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(&digest[..16]);
                uuid::Builder::from_random_bytes(bytes)
                    .into_uuid()
                    .to_string()
            } else {
                format!("{:013x}", 0xf255_efc9_7000u64 + (i as u64) * 0x1f3)
            };
            let mut user = User {
                id,
                first_name: Some(first.to_string()),
                last_name: Some(last.to_string()),
                email: Some(email.to_string()),
                api_enabled: Some(true),
                acls: Some(acl_sets[i % 4].iter().map(|s| s.to_string()).collect()),
                service_user: Some(false),
                status: Some("active".into()),
                last_activity: Some(now_rfc3339(time::Duration::hours(-(i as i64) * 7))),
                invited_by: Some(json!("ada@example.com")),
                invited_on: Some(now_rfc3339(time::Duration::days(-200 + i as i64))),
                invite_accepted: Some(json!(true)),
                ..Default::default()
            };
            match i {
                // One with API access off.
                4 => user.api_enabled = Some(false),
                // Older data: only the deprecated `name`.
                10 => {
                    user.first_name = None;
                    user.last_name = None;
                    user.name = Some("John McCarthy (legacy name)".into());
                }
                // An invited user who never accepted.
                17 => {
                    user.status = Some("pending".into());
                    user.invite_accepted = Some(json!(false));
                    user.last_activity = None;
                }
                // A hostile email too.
                23 => user.email = Some("\"><img src=x onerror=alert(1)>@evil.test".into()),
                // The service user (API-only account).
                24 => user.service_user = Some(true),
                _ => {}
            }
            let id = self.add_user(user);
            // Every third user keeps Vultr's "any address" defaults (Ada,
            // root-equivalent, among them); the others are narrowed.
            if i % 3 != 0 {
                let subnet = format!("45.76.{}.0/24", 10 + i);
                self.set_allowlist(&id, &[subnet.as_str()]);
            }
            // Keys covering every state: expired, expiring this week, far future, never.
            match i % 5 {
                0 => {
                    self.add_demo_key(&id, "terraform", Some(time::Duration::days(400)));
                    self.add_demo_key(&id, "old-laptop", Some(time::Duration::days(-10)));
                }
                1 => {
                    self.add_demo_key(&id, "ci-runner", Some(time::Duration::days(3)));
                    self.add_demo_key(&id, "backup-script", None);
                }
                2 => {
                    self.add_demo_key(&id, "monitoring", Some(time::Duration::days(45)));
                }
                3 => {
                    self.add_demo_key(&id, "legacy-cron", None);
                    self.add_demo_key(&id, "expired-test", Some(time::Duration::days(-90)));
                    self.add_demo_key(&id, "staging", Some(time::Duration::days(6)));
                }
                _ => {}
            }
        }
    }
}
