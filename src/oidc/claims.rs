//! The shapes `openidconnect` is instantiated with: the ID token's extra
//! claims (where the groups claim is read from) and the client type; and the
//! words keydesk records for a refusal.

use std::collections::HashMap;

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreRevocableToken,
    CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, Client, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IdTokenFields, StandardErrorResponse, StandardTokenResponse,
};
use serde::{Deserialize, Serialize};

/// The provider's claims beyond the standard ones: the groups claim is named
/// by `KEYDESK_OIDC_GROUPS_CLAIM`, so it is read from here.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraClaims(pub HashMap<String, serde_json::Value>);
impl AdditionalClaims for ExtraClaims {}

type IdFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
pub type Tokens = StandardTokenResponse<IdFields, CoreTokenType>;

pub type OidcClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The provider's words for a failed exchange (`invalid_grant`…), never a body dump.
pub fn describe<E: std::error::Error>(e: &E) -> String {
    crate::causes::chain(e).chars().take(300).collect()
}

/// The groups in `claim`: an array of strings, or one comma-separated string.
pub fn groups_of(extra: &HashMap<String, serde_json::Value>, claim: &str) -> Vec<String> {
    let raw: Vec<String> = match extra.get(claim) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(s)) => s.split(',').map(str::to_string).collect(),
        _ => vec![],
    };
    raw.into_iter()
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty() && g.len() <= 256)
        .take(256)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// Whatever the provider puts in the groups claim (a list, a string,
        /// anything else): at most 256 groups, each trimmed, non-empty and at
        /// most 256 bytes, each one the provider named. Never a panic.
        #[test]
        fn groups_are_bounded_whatever_the_claim_holds(
            mut items in prop::collection::vec(
                prop_oneof![4 => "[ ,a-z]{0,8}", 1 => any::<String>(), 1 => "[a-z]{250,260}"],
                0..20,
            ),
            many in prop_oneof![Just(0usize), 250usize..300],
            shape in 0u8..4,
        ) {
            items.extend((0..many).map(|i| format!("g{i}")));
            let value = match shape {
                0 => serde_json::json!(items),
                1 => serde_json::json!(items.join(",")),
                2 => serde_json::json!(items.len()),
                _ => serde_json::json!({ "groups": items }),
            };
            let extra = HashMap::from([("groups".to_string(), value)]);
            let groups = groups_of(&extra, "groups");
            prop_assert!(groups.len() <= 256);
            for g in &groups {
                prop_assert!(!g.is_empty() && g.len() <= 256 && g.trim() == g);
                prop_assert!(items.iter().any(|i| i.contains(g.as_str())));
            }
            if shape >= 2 {
                prop_assert!(groups.is_empty());
            }
        }
    }

    #[test]
    fn groups_come_from_the_named_claim_as_array_or_list() {
        let mut extra = HashMap::new();
        extra.insert(
            "groups".to_string(),
            serde_json::json!(["platform", " ops ", ""]),
        );
        extra.insert("roles".to_string(), serde_json::json!("a, b"));
        assert_eq!(groups_of(&extra, "groups"), vec!["platform", "ops"]);
        assert_eq!(groups_of(&extra, "roles"), vec!["a", "b"]);
        assert!(groups_of(&extra, "missing").is_empty());
    }
}
