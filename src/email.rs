//! One identity, compared one way. Every email keydesk compares or stores
//! goes through `normalize_email`: at the gate (every signed-in identity),
//! and on the other side of each comparison (role lists, Vultr users'
//! emails, claim-link owners, approval requesters and recipients). The
//! stores keep the normalised form, so their CHECK constraints compare like
//! with like on SQLite and PostgreSQL alike. `usable` is the one check of an
//! identity that came from outside (proxy header, JWT claim, ID token).

use unicode_normalization::UnicodeNormalization;

/// Trimmed, ASCII lowercase, NFC: `Ada@Example.com`, ` ada@example.com`
/// and a decomposed `é` are one person.
///
/// Only ASCII letters are folded. An email whose Unicode lowercase differs
/// from its ASCII lowercase (the Kelvin sign `K` lowercases to `k`, `İ` to
/// `i̇`, `Å` to `å`), or that NFC turns into plain ASCII (U+037E into `;`),
/// is compared strictly, as written: `\u{212A}im@example.com` never becomes
/// `kim@example.com`, so a look-alike at the provider is never someone
/// else here.
pub fn normalize_email(raw: &str) -> String {
    let trimmed = raw.trim();
    let folded = trimmed.to_ascii_lowercase();
    if trimmed.to_lowercase() != folded {
        return trimmed.to_string();
    }
    let composed: String = folded.nfc().collect();
    if composed.is_ascii() && !trimmed.is_ascii() {
        return trimmed.to_string();
    }
    composed
}

/// Longest identity accepted (an email's longest legal form).
const MAX_IDENTITY: usize = 320;

/// An identity from outside (proxy header, JWT or ID-token claim): trimmed,
/// non-empty, at most 320 bytes, no control character. The refusal in words.
pub fn usable(raw: &str) -> Result<&str, &'static str> {
    let v = raw.trim();
    if v.is_empty() {
        Err("the identity is empty")
    } else if v.len() > MAX_IDENTITY {
        Err("the identity is longer than 320 bytes")
    } else if v.chars().any(char::is_control) {
        Err("the identity holds a control character")
    } else {
        Ok(v)
    }
}

/// Whether two emails name the same person.
pub fn same_email(a: &str, b: &str) -> bool {
    normalize_email(a) == normalize_email(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_person_one_form() {
        assert_eq!(normalize_email("  Ada@Example.COM "), "ada@example.com");
        // "é" composed (U+00E9) and decomposed (e + U+0301), and upper case.
        let composed = "ren\u{e9}@example.com";
        let decomposed = "rene\u{301}@example.com";
        let upper = "RENE\u{301}@EXAMPLE.COM";
        assert_eq!(normalize_email(decomposed), composed);
        assert!(same_email(composed, upper));
        assert!(!same_email("ada@example.com", "ada@example.co"));
        // Non-ASCII is never folded: compared as written.
        assert_eq!(normalize_email("ÅSA@EXAMPLE.COM"), "ÅSA@EXAMPLE.COM");
        assert_eq!(normalize_email("åsa@Example.com"), "åsa@example.com");
    }

    #[test]
    fn a_kelvin_sign_is_never_a_k() {
        let kelvin = "\u{212A}im@example.com";
        assert_eq!(normalize_email(kelvin), kelvin);
        assert!(!same_email(kelvin, "kim@example.com"));
        assert!(!same_email(kelvin, "Kim@example.com"));
        // Dotted capital I lowercases to `i` + a combining dot.
        assert!(!same_email("\u{130}da@example.com", "ida@example.com"));
        assert!(!same_email("i\u{307}da@example.com", "ida@example.com"));
        // Greek question mark: NFC makes it `;`.
        assert!(!same_email("a\u{37E}b@example.com", "a;b@example.com"));
    }

    /// Text, ASCII-heavy with the characters that fold or compose.
    fn emailish() -> impl Strategy<Value = String> {
        let chars = prop_oneof![
            4 => proptest::char::range('!', '~'),
            1 => prop::sample::select(vec![
                '\u{212A}', '\u{212B}', '\u{130}', '\u{131}', '\u{17F}', '\u{37E}',
                '\u{301}', '\u{307}', '\u{30A}', 'Å', 'å', 'é', 'ß', 'ẞ', 'Σ', ' ',
                '\u{2126}', '\u{FB00}', '\u{1E9E}', '\u{0}', '\n',
            ]),
            1 => any::<char>(),
        ];
        prop::collection::vec(chars, 0..40).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// One form: normalising twice changes nothing.
        #[test]
        fn normalising_is_idempotent(s in emailish()) {
            let once = normalize_email(&s);
            prop_assert_eq!(normalize_email(&once), once.clone());
        }

        /// Nothing with a non-ASCII character is ever equal to a plain
        /// ASCII email: no look-alike becomes someone else.
        #[test]
        fn no_look_alike_becomes_an_ascii_email(s in emailish()) {
            let n = normalize_email(&s);
            if n.is_ascii() {
                prop_assert!(s.trim().is_ascii(), "{:?} became {:?}", s, n);
                prop_assert_eq!(n, s.trim().to_ascii_lowercase());
            }
        }

        /// ASCII emails fold their case, and only that.
        #[test]
        fn ascii_emails_fold_their_case(s in "[ -~]{0,60}") {
            prop_assert_eq!(normalize_email(&s), s.trim().to_ascii_lowercase());
            prop_assert!(same_email(&s, &s.to_ascii_uppercase()));
        }

        /// A usable identity is trimmed, bounded and printable; a refusal
        /// says why.
        #[test]
        fn identities_are_usable_or_refused_in_words(s in emailish(), pad in " {0,3}") {
            match usable(&format!("{pad}{s}{pad}")) {
                Ok(v) => {
                    prop_assert_eq!(v, s.trim());
                    prop_assert!(!v.is_empty() && v.len() <= 320);
                    prop_assert!(!v.chars().any(char::is_control));
                }
                Err(why) => prop_assert!(why.starts_with("the identity ")),
            }
        }
    }
}
