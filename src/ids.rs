//! `VultrId`: a user or key id, parsed once at the edge.
//!
//! Vultr ids are short hex strings or UUIDs. Anything else (`..`, `/`, NUL,
//! 5,000 characters) is refused when the path is extracted, so no id can steer
//! keydesk to another upstream path and no later code checks again.
//!
//! Vultr spells its ids in lower case. An id is put in that one canonical
//! spelling here, once, so holds, intents, claim links, form scopes and the
//! brake all key on the same text whatever case a URL used.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A plain Vultr id: 1 to 64 of `[A-Za-z0-9_-]`, kept in lower case.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VultrId(String);

/// The error of an id that is not a plain Vultr id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid Vultr id")]
pub struct InvalidId;

impl VultrId {
    /// Parses `raw` into its canonical (lower-case) spelling, or refuses it.
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err(InvalidId)
        }
    }

    /// The id as text: safe as a URL path segment as it is (no byte needs encoding).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for VultrId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        Self::parse(&s)
    }
}

impl From<VultrId> for String {
    fn from(id: VultrId) -> String {
        id.0
    }
}

impl fmt::Display for VultrId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for VultrId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_ids_are_refused() {
        for bad in [
            "",
            "..",
            "../../account",
            "a/b",
            "%2e%2e",
            "a\0b",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(VultrId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn vultr_ids_are_accepted() {
        assert_eq!(
            VultrId::parse("f255efc9700d9").map(|i| i.to_string()),
            Ok("f255efc9700d9".to_string())
        );
        assert!(VultrId::parse("3b8f1c2e-9d4a-4f6b-8e2a-1c0d9e8f7a6b").is_ok());
        assert!(serde_json::from_str::<VultrId>("\"../x\"").is_err());
    }

    #[test]
    fn one_spelling_whatever_the_case() {
        let upper = VultrId::parse("3B8F1C2E-9D4A-4F6B-8E2A-1C0D9E8F7A6B");
        let lower = VultrId::parse("3b8f1c2e-9d4a-4f6b-8e2a-1c0d9e8f7a6b");
        assert_eq!(upper, lower);
        assert_eq!(
            serde_json::from_str::<VultrId>("\"F255EFC9700D9\"")
                .ok()
                .map(String::from),
            Some("f255efc9700d9".to_string())
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// Any text: a Vultr id exactly when it is 1–64 of `[A-Za-z0-9_-]`,
        /// then in lower case; refused with the one error otherwise.
        #[test]
        fn any_text_is_an_id_in_one_spelling_or_refused(raw in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_./%-]{0,70}",
        ]) {
            let shaped = (1..=64).contains(&raw.len())
                && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            match VultrId::parse(&raw) {
                Ok(id) => {
                    prop_assert!(shaped);
                    prop_assert_eq!(id.as_str(), raw.to_ascii_lowercase());
                }
                Err(e) => {
                    prop_assert!(!shaped);
                    prop_assert_eq!(e.to_string(), "not a valid Vultr id");
                }
            }
        }

        /// An id round-trips through text, JSON and its own parse, and any
        /// case of it is the same id.
        #[test]
        fn ids_round_trip(raw in "[A-Za-z0-9_-]{1,64}") {
            let id = VultrId::parse(&raw).unwrap();
            let shown = id.to_string();
            prop_assert_eq!(VultrId::parse(&shown), Ok(id.clone()));
            prop_assert_eq!(VultrId::parse(&raw.to_ascii_uppercase()), Ok(id.clone()));
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<VultrId>(&json).unwrap(), id);
        }
    }
}
