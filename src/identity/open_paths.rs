//! Which paths need which identity: the public probes, and the pages an
//! identity without a staff role may still open (claim links, "My keys",
//! their own approval requests), each page checking it is theirs.

/// Paths reachable without identity: probes, metrics and static assets.
pub fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
        || path.starts_with("/static/")
        // The OpenID sign-in steps check what they need themselves.
        || path.starts_with("/auth/")
}

/// The pages an identity with no role may open: its own claim links, and
/// its own keys (`/me`, each page checking it is a key owner).
pub const CLAIM_PREFIX: &str = "/claim/";
pub fn self_service(path: &str) -> bool {
    path.starts_with(CLAIM_PREFIX)
        || path == "/"
        || path == "/me"
        || path.starts_with("/me/")
        || own_request(path)
}

/// `/approvals/{id}` and its `execute` and `withdraw` steps, which the
/// handlers open to the request's own requester (an owner); never the list,
/// and never approve or deny.
fn own_request(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/approvals/") else {
        return false;
    };
    match rest.split_once('/') {
        None => !rest.is_empty(),
        Some((id, step)) => !id.is_empty() && matches!(step, "execute" | "withdraw"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_assets_and_the_sign_in_steps_are_public() {
        for open in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/static/app.css",
            "/auth/login",
            "/auth/callback",
            "/auth/logout",
            "/auth/signed-out",
        ] {
            assert!(is_public(open), "{open}");
        }
        for closed in ["/", "/users", "/auth", "/authx", "/me", "/claim/x"] {
            assert!(!is_public(closed), "{closed}");
        }
    }

    #[test]
    fn an_owner_opens_their_pages_and_their_own_requests_only() {
        for open in [
            "/",
            "/me",
            "/me/keys/new",
            "/claim/abc",
            "/approvals/0123abcd",
            "/approvals/0123abcd/execute",
            "/approvals/0123abcd/withdraw",
        ] {
            assert!(self_service(open), "{open}");
        }
        for closed in [
            "/users",
            "/approvals",
            "/approvals/",
            "/approvals/x/approve",
            "/approvals/x/deny",
            "/approvals//execute",
            "/audit",
            "/mex",
        ] {
            assert!(!self_service(closed), "{closed}");
        }
    }
}
