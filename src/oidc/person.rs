//! Who signed in, as the provider describes them: the verified ID token's
//! email, `email_verified` and groups, completed from the userinfo endpoint
//! when the ID token leaves them out (providers that keep scope claims out
//! of it). Userinfo is asked with the access token and must be about the ID
//! token's subject (`sub`), or it is refused.

use openidconnect::core::CoreGenderClaim;
use openidconnect::{IdTokenClaims, OAuth2TokenResponse, UserInfoClaims};

use super::Denied;
use super::claims::{ExtraClaims, OidcClient, Tokens, describe, groups_of};
use super::http::Http;

/// Who signed in, as the provider describes them.
pub struct Person {
    pub email: String,
    pub email_verified: Option<bool>,
    pub groups: Vec<String>,
}

/// The person's email in its one compared form (see `email`), or why it is
/// unusable: empty, over 320 bytes, or holding a control character.
pub fn usable_email(raw: &str) -> Result<String, String> {
    // Checked again once normalised: NFC may lengthen it.
    crate::email::usable(raw)
        .map(crate::email::normalize_email)
        .and_then(|e| crate::email::usable(&e).map(str::to_string))
        .map_err(|why| format!("the provider gave no usable email: {why}"))
}

/// The person's email, `email_verified` and groups: from the verified ID
/// token, or, for what it lacks, from the userinfo endpoint (some
/// providers keep scope claims out of the ID token), asked with the
/// access token and checked to be about the ID token's subject.
pub async fn of(
    http: &Http,
    client: &OidcClient,
    tokens: &Tokens,
    id: &IdTokenClaims<ExtraClaims, CoreGenderClaim>,
    claim: &str,
) -> Result<Person, Denied> {
    let from_token = Person {
        email: id.email().map(|e| e.to_string()).unwrap_or_default(),
        email_verified: id.email_verified(),
        groups: groups_of(&id.additional_claims().0, claim),
    };
    let has_groups = id.additional_claims().0.contains_key(claim);
    if !from_token.email.is_empty() && has_groups {
        return Ok(from_token);
    }
    let request = match client.user_info(tokens.access_token().clone(), Some(id.subject().clone()))
    {
        Ok(r) => r,
        // No userinfo endpoint: the ID token is all there is.
        Err(_) if !from_token.email.is_empty() => return Ok(from_token),
        Err(_) => {
            return Err(Denied::new(
                "the ID token carries no email and the provider has no userinfo endpoint",
            ));
        }
    };
    let info: UserInfoClaims<ExtraClaims, CoreGenderClaim> = match request.request_async(http).await
    {
        Ok(info) => info,
        Err(e) if !from_token.email.is_empty() => {
            tracing::warn!(error = %describe(&e), "userinfo failed: signing in with the ID token's claims (no groups)");
            return Ok(from_token);
        }
        Err(e) => {
            return Err(Denied::new(format!(
                "the ID token carries no email and userinfo failed: {}",
                describe(&e)
            )));
        }
    };
    // The ID token's own claims win; userinfo fills in what it lacks.
    if from_token.email.is_empty() {
        return Ok(Person {
            email: info.email().map(|e| e.to_string()).unwrap_or_default(),
            email_verified: info.email_verified(),
            groups: match has_groups {
                true => from_token.groups,
                false => groups_of(&info.additional_claims().0, claim),
            },
        });
    }
    Ok(Person {
        groups: groups_of(&info.additional_claims().0, claim),
        ..from_token
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_kelvin_sign_in_the_id_token_is_not_a_k() {
        assert_eq!(
            usable_email(" \u{212A}im@example.com ").as_deref(),
            Ok("\u{212A}im@example.com")
        );
        assert_eq!(
            usable_email("Kim@Example.com").as_deref(),
            Ok("kim@example.com")
        );
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// The ID token's email: refused in words, or accepted in its one
        /// form, bounded and printable, which accepts itself unchanged.
        #[test]
        fn an_id_token_email_is_usable_or_refused_in_words(raw in any::<String>(), pad in "[ \t]{0,2}") {
            match usable_email(&format!("{pad}{raw}{pad}")) {
                Ok(e) => {
                    prop_assert!(!e.is_empty() && e.len() <= 320);
                    prop_assert!(!e.chars().any(char::is_control));
                    prop_assert_eq!(usable_email(&e), Ok(e.clone()));
                }
                Err(why) => prop_assert!(why.starts_with("the provider gave no usable email: ")),
            }
        }
    }
}
