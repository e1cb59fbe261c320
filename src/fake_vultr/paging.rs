//! Vultr's paging for lists: `per_page` (1..=500, default 100), opaque
//! cursors, and `meta.links` with `next` and `prev` (empty at the ends).

use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub(super) struct ListQuery {
    per_page: Option<String>,
    cursor: Option<String>,
}

/// Opaque cursors, like Vultr's base64 ones: here `o<offset>` in hex.
fn encode_cursor(offset: usize) -> String {
    format!("o{offset:x}")
}

fn decode_cursor(c: &str) -> Option<usize> {
    c.strip_prefix('o')
        .and_then(|h| usize::from_str_radix(h, 16).ok())
}

/// `per_page` (1..=500, default 100) and the offset a cursor names.
/// `Err` is Vultr's message for the 400.
pub(super) fn page_window(q: &ListQuery) -> Result<(usize, usize), &'static str> {
    let per_page = match q.per_page.as_deref().map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=500).contains(&n) => n,
        Some(_) => return Err("Invalid per_page."),
    };
    let offset = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => match decode_cursor(c) {
            Some(o) => o,
            None => return Err("Invalid cursor."),
        },
    };
    Ok((per_page, offset))
}

/// Vultr's `meta` for a page at `offset` of `total`.
pub(super) fn page_meta(offset: usize, per_page: usize, total: usize) -> serde_json::Value {
    let next = if offset + per_page < total {
        encode_cursor(offset + per_page)
    } else {
        String::new()
    };
    let prev = if offset > 0 {
        encode_cursor(offset.saturating_sub(per_page))
    } else {
        String::new()
    };
    json!({"total": total, "links": {"next": next, "prev": prev}})
}
