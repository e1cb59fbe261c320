//! An error with its causes, on one line: what a log line or an audit
//! reason needs to say why (DNS, refused, TLS, `invalid_grant`…), each cause
//! once.

/// `e` followed by each of its sources not already in the text.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_are_joined_once() {
        let inner = std::io::Error::other("connection refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(super::chain(&outer), "connection refused");
        let fmt = std::fmt::Error;
        assert_eq!(
            super::chain(&fmt),
            "an error occurred when formatting an argument"
        );
    }
}
