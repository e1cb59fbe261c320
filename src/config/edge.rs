//! `KEYDESK_ADMIN_LISTEN`: the probes and metrics on their own address;
//! `KEYDESK_ANON_*`: how much one client address may ask without a sign-in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use clap::Args;

use crate::client_quota::ClientRate;

#[derive(Args, Clone, Debug)]
pub struct EdgeArgs {
    /// Serve /metrics, /healthz and /readyz on this address only (e.g. 0.0.0.0:9090, a port the internet never reaches); the public listener then answers 404 for them. `keydesk healthcheck` probes it. Unset: they are on KEYDESK_LISTEN.
    #[arg(long, env = "KEYDESK_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Requests one client address may send per minute, steadily, to the /auth/* sign-in steps or without a sign-in (no session, no identity from the proxy); above it keydesk answers 429 with Retry-After and reads and writes nothing. The address is the TCP peer, or X-Forwarded-For from a peer in KEYDESK_TRUSTED_PROXIES.
    #[arg(long, env = "KEYDESK_ANON_PER_MINUTE", default_value_t = ClientRate::default().per_minute, value_parser = clap::value_parser!(u32).range(1..=60000))]
    pub anon_per_minute: u32,

    /// Such requests one client address may send at once before KEYDESK_ANON_PER_MINUTE applies.
    #[arg(long, env = "KEYDESK_ANON_BURST", default_value_t = ClientRate::default().burst, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub anon_burst: u32,
}

impl EdgeArgs {
    /// Each client address's quota of anonymous requests.
    pub fn anon_rate(&self) -> ClientRate {
        ClientRate {
            per_minute: self.anon_per_minute,
            burst: self.anon_burst,
        }
    }
}

/// The liveness URL `keydesk healthcheck` probes: `url` when given, else
/// `/healthz` on the admin address when there is one (an unspecified
/// address is reached on loopback), else on the default public address.
pub fn healthcheck_url(url: Option<&str>, admin: Option<SocketAddr>) -> String {
    if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
        return url.to_string();
    }
    let Some(mut at) = admin else {
        return DEFAULT_HEALTHCHECK_URL.to_string();
    };
    match at.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => at.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => at.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    format!("http://{at}/healthz")
}

/// `keydesk healthcheck`'s URL without KEYDESK_HEALTHCHECK_URL or KEYDESK_ADMIN_LISTEN.
pub const DEFAULT_HEALTHCHECK_URL: &str = "http://127.0.0.1:8080/healthz";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_healthcheck_probes_the_admin_address_unless_told_a_url() {
        assert_eq!(healthcheck_url(None, None), DEFAULT_HEALTHCHECK_URL);
        let admin = Some("0.0.0.0:9090".parse().unwrap());
        assert_eq!(
            healthcheck_url(None, admin),
            "http://127.0.0.1:9090/healthz"
        );
        assert_eq!(
            healthcheck_url(None, Some("[::]:9090".parse().unwrap())),
            "http://[::1]:9090/healthz"
        );
        assert_eq!(
            healthcheck_url(None, Some("10.0.0.5:9090".parse().unwrap())),
            "http://10.0.0.5:9090/healthz"
        );
        assert_eq!(
            healthcheck_url(Some("http://h:1/healthz"), admin),
            "http://h:1/healthz"
        );
    }
}
