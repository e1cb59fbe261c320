//! The ID token's checks: the crate's verifier (signature by the provider's
//! keys, `iss`, `aud`, `exp`, the nonce) with the algorithms and the `iat`
//! window keydesk allows, then `azp`, which the crate leaves to its caller.

use openidconnect::core::{
    CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
};
use openidconnect::{ClaimsVerificationError, IdTokenClaims, Nonce};

use super::claims::{ExtraClaims, OidcClient};

/// An ID token issued further in the future than this is refused (clock skew).
const IAT_LEEWAY_SECS: i64 = 60;
/// An ID token issued longer ago than this is refused: the token endpoint
/// just minted it, so an old one is a replay.
const IAT_MAX_AGE_SECS: i64 = 600;

pub type IdToken = openidconnect::IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
pub type Claims = IdTokenClaims<ExtraClaims, CoreGenderClaim>;

/// The token's claims once every check passed.
pub fn verify(
    client: &OidcClient,
    id_token: &IdToken,
    nonce: &Nonce,
) -> Result<Claims, ClaimsVerificationError> {
    let verifier = client
        .id_token_verifier()
        // Asymmetric algorithms only: never `none`, never the client secret as a key.
        .set_allowed_algs([
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
            CoreJwsSigningAlgorithm::RsaSsaPssSha256,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            CoreJwsSigningAlgorithm::EcdsaP384Sha384,
            CoreJwsSigningAlgorithm::EdDsa,
        ])
        .set_issue_time_verifier_fn(|iat| {
            issued_recently(time::OffsetDateTime::now_utc().unix_timestamp() - iat.timestamp())
        });
    let claims = id_token.claims(&verifier, nonce)?.clone();
    authorized_party(&claims, client.client_id().as_str())
        .map_err(ClaimsVerificationError::InvalidAudience)?;
    Ok(claims)
}

/// `iat` was `age` seconds ago: within the clock-skew leeway and not old.
fn issued_recently(age: i64) -> Result<(), String> {
    if age < -IAT_LEEWAY_SECS {
        Err(format!("iat is {}s in the future", -age))
    } else if age > IAT_MAX_AGE_SECS {
        Err(format!("iat is {age}s old"))
    } else {
        Ok(())
    }
}

/// OpenID Connect Core 3.1.3.7, steps 4 and 5: an `azp` must be keydesk,
/// and a token for several audiences must name keydesk as its `azp`.
fn authorized_party(claims: &Claims, client_id: &str) -> Result<(), String> {
    match claims.authorized_party() {
        Some(azp) if azp.as_str() != client_id => Err(format!(
            "azp `{}` is another client, not `{client_id}`",
            azp.as_str()
        )),
        None if claims.audiences().len() > 1 => {
            Err("aud has several entries but there is no azp naming keydesk".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(aud: &[&str], azp: Option<&str>) -> Claims {
        let mut c = serde_json::json!({
            "iss": "https://idp.example.com", "sub": "s", "aud": aud,
            "iat": 1_700_000_000, "exp": 1_700_000_300,
        });
        if let Some(azp) = azp {
            c["azp"] = azp.into();
        }
        serde_json::from_value(c).unwrap()
    }

    #[test]
    fn azp_must_be_keydesk_and_is_required_with_several_audiences() {
        assert_eq!(
            authorized_party(&claims(&["keydesk"], None), "keydesk"),
            Ok(())
        );
        let ours = claims(&["keydesk", "other"], Some("keydesk"));
        assert_eq!(authorized_party(&ours, "keydesk"), Ok(()));
        for (aud, azp) in [
            (&["keydesk"][..], Some("other")),
            (&["keydesk", "other"][..], None),
            (&["keydesk", "other"][..], Some("other")),
        ] {
            let err = authorized_party(&claims(aud, azp), "keydesk").unwrap_err();
            assert!(err.contains("azp"), "{aud:?} {azp:?}: {err}");
        }
    }

    #[test]
    fn iat_must_be_recent_and_not_in_the_future() {
        assert!(issued_recently(0).is_ok());
        assert!(issued_recently(-IAT_LEEWAY_SECS).is_ok());
        assert!(issued_recently(IAT_MAX_AGE_SECS).is_ok());
        assert!(issued_recently(-IAT_LEEWAY_SECS - 1).is_err());
        assert!(issued_recently(IAT_MAX_AGE_SECS + 1).is_err());
        assert!(
            issued_recently(3 * 3600)
                .unwrap_err()
                .contains("10800s old")
        );
    }
}
