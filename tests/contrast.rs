//! WCAG AA colour contrast of the palette in static/app.css, light and dark:
//! every text colour against every background it is used on must reach 4.5:1.

// Tests fail loudly on any unexpected error: unwrap is the point.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

/// The `--name: #rrggbb` variables of the first `:root { … }` after `from`.
fn palette(css: &str, from: usize) -> HashMap<String, (f64, f64, f64)> {
    let start = css[from..].find(":root {").unwrap() + from + ":root {".len();
    let end = css[start..].find('}').unwrap() + start;
    css[start..end]
        .split(';')
        .filter_map(|decl| {
            let (name, value) = decl.split_once(':')?;
            let name = name.trim().strip_prefix("--")?;
            let hex = value.trim().strip_prefix('#')?;
            // `#fff` is `#ffffff`.
            let hex: String = if hex.len() == 3 {
                hex.chars().flat_map(|c| [c, c]).collect()
            } else {
                hex.to_string()
            };
            let c = |i: usize| f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()) / 255.0;
            Some((name.to_string(), (c(0), c(2), c(4))))
        })
        .collect()
}

fn luminance((r, g, b): (f64, f64, f64)) -> f64 {
    let lin = |c: f64| {
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
}

fn ratio(a: (f64, f64, f64), b: (f64, f64, f64)) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

#[test]
fn text_colours_meet_wcag_aa_in_light_and_dark_mode() {
    let css =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/static/app.css")).unwrap();
    let dark_at = css.find("prefers-color-scheme: dark").unwrap();
    let pairs = [
        ("fg", "bg"),
        ("fg", "card"),
        ("muted", "bg"),
        ("muted", "card"),
        ("accent", "card"),
        ("accent", "bg"),
        ("accent-fg", "accent"),
        ("ok", "card"),
        ("bad", "card"),
        ("bad", "bad-bg"),
        // Danger buttons: card-coloured text on --bad.
        ("card", "bad"),
        ("soon", "card"),
        ("warn-fg", "warn-bg"),
    ];
    for (mode, p) in [
        ("light", palette(&css, 0)),
        ("dark", palette(&css, dark_at)),
    ] {
        for (text, bg) in pairs {
            let (Some(t), Some(b)) = (p.get(text), p.get(bg)) else {
                panic!("{mode}: --{text} or --{bg} missing from {:?}", p.keys());
            };
            let r = ratio(*t, *b);
            assert!(
                r >= 4.5,
                "{mode}: --{text} on --{bg} is {r:.2}:1, below 4.5:1"
            );
        }
    }
}
