//! What `keydesk -h` and `keydesk --help` say keydesk is: the portal and
//! its three sign-in modes.

/// `keydesk -h`: one line.
pub(super) const ABOUT: &str = "Self-service portal for Vultr user API keys: staff sign in through an identity proxy (oauth2-proxy), a JWT-signing access proxy (Cloudflare Access, Google IAP, Pomerium) or OpenID Connect.";

/// `keydesk --help`: what keydesk is and its three sign-in modes.
pub(super) const LONG_ABOUT: &str = "\
keydesk: the portal through which staff issue, rotate and revoke the API keys
of your Vultr account's users. Only the server holds the root key, a new key
is shown once, and every action is audited under the name of who did it.

Staff sign in one of three ways (KEYDESK_AUTH_MODE):
  header  (the default) behind an identity proxy such as oauth2-proxy: the
          proxy sets X-Forwarded-Email (KEYDESK_AUTH_HEADER), believed only
          from KEYDESK_TRUSTED_PROXIES.
  jwt     behind Cloudflare Access, Google IAP or Pomerium: every request
          carries the proxy's signed assertion (KEYDESK_JWT_HEADER,
          KEYDESK_JWT_JWKS_URL, KEYDESK_JWT_ISSUER, KEYDESK_JWT_AUDIENCE).
  oidc    native OpenID Connect: keydesk signs people in itself with your
          identity provider (KEYDESK_OIDC_ISSUER, KEYDESK_OIDC_CLIENT_ID,
          KEYDESK_OIDC_CLIENT_SECRET_FILE, KEYDESK_PUBLIC_URL).

Try it with `keydesk demo` (a built-in fake Vultr API, no account needed);
`keydesk serve --help` lists every setting with its environment variable.";
