//! One identity, compared one way. Every email keydesk compares or stores
//! goes through `normalize_email`: at the gate (every signed-in identity),
//! and on the other side of each comparison (role lists, Vultr users'
//! emails, claim-link owners, approval requesters and recipients). The
//! stores keep the normalised form, so their CHECK constraints compare like
//! with like on SQLite and PostgreSQL alike.

use unicode_normalization::UnicodeNormalization;

/// Trimmed, Unicode lowercase, NFC: `Ada@Example.com`, ` ada@example.com`
/// and a decomposed `é` are one person.
pub fn normalize_email(raw: &str) -> String {
    raw.trim().to_lowercase().nfc().collect()
}

/// Whether two emails name the same person.
pub fn same_email(a: &str, b: &str) -> bool {
    normalize_email(a) == normalize_email(b)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Non-ASCII upper case, which SQL lower() on SQLite leaves alone.
        assert_eq!(normalize_email("ÅSA@EXAMPLE.COM"), "åsa@example.com");
    }
}
