//! A per-client-address quota for requests nobody is signed in on (and the
//! `/auth/*` sign-in steps): governor's keyed limiter, in memory, so a
//! refusal reads and writes nothing. The client address is the TCP peer, or
//! what a trusted proxy says in `X-Forwarded-For`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::keyed_quota::KeyedQuota;

/// `KEYDESK_ANON_PER_MINUTE` and `KEYDESK_ANON_BURST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRate {
    /// Requests one address may send per minute, steadily.
    pub per_minute: u32,
    /// Requests one address may send at once before the steady rate applies.
    pub burst: u32,
}

impl Default for ClientRate {
    /// Thirty at once (a few people signing in behind one NAT), then one a second.
    fn default() -> Self {
        Self {
            per_minute: 60,
            burst: 30,
        }
    }
}

/// The client address of a request, and whether the limiter already took
/// it from the quota (a request extension, for the gate's second look).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr {
    pub ip: IpAddr,
    pub counted: bool,
}

/// The buckets, one per client address (an IPv6 client per /64: one host
/// holds a whole /64 and could otherwise walk through it).
pub struct ClientQuota {
    quota: KeyedQuota<IpAddr>,
}

impl std::fmt::Debug for ClientQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientQuota")
            .field("addresses", &self.quota.len())
            .finish()
    }
}

impl ClientQuota {
    pub fn new(rate: ClientRate) -> Self {
        Self {
            quota: KeyedQuota::new(rate.per_minute, rate.burst),
        }
    }

    /// Takes one request from `client`'s bucket, or says how long until one
    /// is there again (whole seconds, at least one, as `Retry-After` counts).
    pub fn take(&self, client: IpAddr) -> Result<(), Duration> {
        self.quota.take(&bucket_of(client))
    }
}

/// The key of `client`'s bucket: an IPv4 address itself, an IPv6 its /64.
fn bucket_of(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn trusted_peer(addr: IpAddr, trusted: &[IpNet]) -> bool {
    let addr = addr.to_canonical();
    trusted.iter().any(|net| net.contains(&addr))
}

/// One `X-Forwarded-For` entry: an address, maybe with a port or brackets.
fn forwarded_addr(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
}

/// The client a request is from: the TCP `peer`; when the peer is a trusted
/// proxy, the right-most address in `X-Forwarded-For` that is not a trusted
/// proxy (each proxy appends the address it saw, so entries to the left of
/// it are the client's to invent). An entry that is not an address stops
/// the walk at the last proxy that was believed.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted_peer(client, trusted) {
        return client;
    }
    let chain: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    // What the nearest proxy saw: the client when every entry is a proxy
    // (the left-most entries could be the client's own invention).
    let mut nearest = None;
    for entry in chain.into_iter().rev() {
        match forwarded_addr(entry) {
            Some(addr) => client = addr.to_canonical(),
            None => break,
        }
        nearest.get_or_insert(client);
        if !trusted_peer(client, trusted) {
            return client;
        }
    }
    nearest.unwrap_or(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_peer() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = xff(&["203.0.113.9"]);
        assert_eq!(client_addr(ip("10.1.1.1"), &h, &trusted), ip("203.0.113.9"));
        assert_eq!(
            client_addr(ip("198.51.100.7"), &h, &trusted),
            ip("198.51.100.7")
        );
        // Mapped IPv4 of a dual-stack socket is the same proxy.
        assert_eq!(
            client_addr(ip("::ffff:10.1.1.1"), &h, &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn the_right_most_untrusted_entry_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client invented 1.1.1.1; the edge proxy appended what it saw,
        // then an inner proxy appended the edge's address.
        let h = xff(&["1.1.1.1, 203.0.113.9", "10.2.2.2"]);
        assert_eq!(client_addr(ip("10.1.1.1"), &h, &trusted), ip("203.0.113.9"));
        // Ports and brackets are tolerated; junk stops the walk at the proxy.
        assert_eq!(
            client_addr(ip("10.1.1.1"), &xff(&["[2001:db8::1]:443"]), &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_addr(ip("10.1.1.1"), &xff(&["1.1.1.1, junk"]), &trusted),
            ip("10.1.1.1")
        );
        assert_eq!(
            client_addr(ip("10.1.1.1"), &HeaderMap::new(), &trusted),
            ip("10.1.1.1")
        );
        // A client inside the trusted range: every entry is "a proxy", and
        // the ones it wrote itself (left) must not pick its bucket.
        for invented in ["10.9.9.1", "10.9.9.2"] {
            let h = xff(&[&format!("{invented}, 10.3.3.3")]);
            assert_eq!(client_addr(ip("10.1.1.1"), &h, &trusted), ip("10.3.3.3"));
        }
    }

    #[test]
    fn a_burst_then_a_wait_per_address_and_per_ipv6_64() {
        let q = ClientQuota::new(ClientRate {
            per_minute: 6,
            burst: 2,
        });
        for _ in 0..2 {
            assert_eq!(q.take(ip("203.0.113.9")), Ok(()));
        }
        let wait = q.take(ip("203.0.113.9")).unwrap_err();
        assert!(
            (Duration::from_secs(1)..=Duration::from_secs(10)).contains(&wait),
            "{wait:?}"
        );
        assert_eq!(q.take(ip("203.0.113.10")), Ok(()));
        assert_eq!(q.take(ip("2001:db8::1")), Ok(()));
        assert_eq!(q.take(ip("2001:db8::2")), Ok(()));
        assert!(q.take(ip("2001:db8::ffff")).is_err(), "one /64, one bucket");
    }
}
