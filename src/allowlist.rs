//! A Vultr user's API allowlist ("API Access → Access Control List"): the
//! addresses its keys work from. The entries as Vultr reports them, the
//! rules Vultr enforces on a new entry (checked before anything is sent, and
//! by the fake), and the reach in words ("usable from any address").

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One allowlist entry as Vultr lists it. Every field but the subnet is
/// optional: an entry keydesk does not understand is shown as it is.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    #[serde(default)]
    pub subnet: String,
    #[serde(default, deserialize_with = "lenient_size")]
    pub subnet_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_added: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_type: Option<String>,
}

/// A prefix length sent as a number or a numeric string; anything else is
/// kept as unknown (the entry is then shown as it is), never a parse error.
fn lenient_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

impl Entry {
    /// The entry as a network, when it is one keydesk recognises.
    pub fn net(&self) -> Option<IpNet> {
        let addr: IpAddr = self.subnet.trim().parse().ok()?;
        let size = u8::try_from(self.subnet_size?).ok()?;
        IpNet::new(addr, size).ok()
    }

    /// Admits every address of its family (`0.0.0.0/0`, `::/0`).
    pub fn is_everything(&self) -> bool {
        self.net().is_some_and(|n| n.prefix_len() == 0)
    }

    /// `203.0.113.0/24`, or the raw fields of an entry keydesk cannot read.
    pub fn cidr(&self) -> String {
        match (self.net(), self.subnet_size) {
            (Some(n), _) => n.to_string(),
            (None, Some(s)) => format!("{}/{s}", self.subnet),
            (None, None) => self.subnet.clone(),
        }
    }

    /// The entry in words.
    pub fn words(&self) -> String {
        match self.net() {
            Some(IpNet::V4(n)) if n.prefix_len() == 0 => "any IPv4 address".into(),
            Some(IpNet::V6(n)) if n.prefix_len() == 0 => "any IPv6 address".into(),
            Some(n) if n.prefix_len() == n.max_prefix_len() => format!("only {}", n.addr()),
            Some(n) => format!(
                "the {} addresses of {n}",
                if n.max_prefix_len() == 32 {
                    (1u64 << (32 - n.prefix_len())).to_string()
                } else {
                    format!("2^{}", 128 - n.prefix_len())
                }
            ),
            None => "an entry keydesk does not recognise: check it in Vultr".into(),
        }
    }

    pub fn recognised(&self) -> bool {
        self.net().is_some()
    }
}

/// Where a user's keys work from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    pub entries: Vec<Entry>,
}

impl Reach {
    pub fn new(entries: Vec<Entry>) -> Self {
        Self { entries }
    }

    /// Some entry admits any address (of either family): a leaked key
    /// works from anywhere. An entry keydesk cannot read counts as
    /// anywhere: an unknown fact is read as the strongest.
    pub fn anywhere(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.is_everything() || !e.recognised())
    }

    /// The reach in words, for forms, notices and the audit.
    pub fn words(&self) -> String {
        if self.entries.is_empty() {
            return "Vultr reports no allowlist entry: check in Vultr where these keys work from"
                .into();
        }
        if self.entries.iter().any(Entry::is_everything) {
            return "usable from any address".into();
        }
        if self.anywhere() {
            let odd: Vec<String> = self
                .entries
                .iter()
                .filter(|e| !e.recognised())
                .map(Entry::cidr)
                .collect();
            return format!(
                "counted as usable from any address: Vultr lists {} which keydesk cannot read (check it in Vultr)",
                odd.join(", ")
            );
        }
        let list: Vec<String> = self.entries.iter().map(Entry::cidr).collect();
        format!("usable only from {}", list.join(", "))
    }

    /// The entries as one compact line (`0.0.0.0/0,203.0.113.0/24`), for the audit.
    pub fn compact(&self) -> String {
        let list: Vec<String> = self.entries.iter().map(Entry::cidr).collect();
        list.join(",")
    }
}

/// Ranges Vultr refuses: private, loopback, link-local, shared, multicast,
/// documentation, benchmarking and other reserved space.
const RESERVED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/8",
    "64:ff9b::/96",
    "100::/64",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// A new entry, checked as Vultr would check it: a public address, and a
/// prefix of /8–/32 (IPv4) or /20–/128 (IPv6) whose host bits are zero.
/// Returns the network to send, or the refusal in words.
pub fn check(address: &str, prefix: &str) -> Result<IpNet, String> {
    let address = address.trim();
    let addr: IpAddr = address.parse().map_err(|_| {
        format!("“{address}” is not an IP address: write it like 198.51.0.0 or 2a05:f480::")
    })?;
    let prefix = prefix.trim().trim_start_matches('/');
    let size: u8 = prefix
        .parse()
        .map_err(|_| format!("“{prefix}” is not a prefix length: write a number like 24"))?;
    let (lo, hi, family) = match addr {
        IpAddr::V4(_) => (8, 32, "IPv4"),
        IpAddr::V6(_) => (20, 128, "IPv6"),
    };
    if !(lo..=hi).contains(&size) {
        return Err(format!(
            "Vultr accepts {family} prefixes from /{lo} to /{hi}; /{size} is out of that range"
        ));
    }
    let net = IpNet::new(addr, size).map_err(|e| e.to_string())?;
    if net.network() != addr {
        return Err(format!(
            "{addr}/{size} has host bits set: the network is {}",
            net.trunc()
        ));
    }
    let reserved = RESERVED
        .iter()
        .filter_map(|r| r.parse::<IpNet>().ok())
        .find(|r| r.contains(&addr) || net.contains(&r.network()));
    if let Some(r) = reserved {
        return Err(format!(
            "{net} is not a public address range (it overlaps the reserved {r}): Vultr accepts public addresses only"
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(subnet: &str, size: Option<u32>) -> Entry {
        Entry {
            subnet: subnet.into(),
            subnet_size: size,
            ..Default::default()
        }
    }

    #[test]
    fn the_rules_vultr_enforces_on_a_new_entry() {
        let pass: &[(&str, &str, &str)] = &[
            ("8.8.8.0", "24", "8.8.8.0/24"),
            ("8.8.8.8", "32", "8.8.8.8/32"),
            ("8.0.0.0", "/8", "8.0.0.0/8"),
            ("2a05:f480::", "32", "2a05:f480::/32"),
            ("2a05:f480::1", "128", "2a05:f480::1/128"),
            (" 45.76.0.0 ", " 16 ", "45.76.0.0/16"),
        ];
        for (a, p, want) in pass {
            assert_eq!(
                check(a, p).map(|n| n.to_string()).as_deref(),
                Ok(*want),
                "{a}/{p}"
            );
        }
        let refuse: &[(&str, &str, &str)] = &[
            ("10.0.0.0", "8", "not a public"),
            ("192.168.1.0", "24", "not a public"),
            ("172.20.0.0", "16", "not a public"),
            ("127.0.0.1", "32", "not a public"),
            ("100.64.0.0", "10", "not a public"),
            ("169.254.1.1", "32", "not a public"),
            ("224.0.0.1", "32", "not a public"),
            ("203.0.113.0", "24", "not a public"),
            ("fd00::", "64", "not a public"),
            ("fe80::1", "128", "not a public"),
            ("::1", "128", "not a public"),
            ("2001:db8::", "32", "not a public"),
            ("0.0.0.0", "0", "/8 to /32"),
            ("8.0.0.0", "7", "/8 to /32"),
            ("8.8.8.8", "33", "/8 to /32"),
            ("2a05:f480::", "19", "/20 to /128"),
            ("::", "0", "/20 to /128"),
            ("8.8.8.1", "24", "host bits"),
            ("8.8.8", "24", "not an IP address"),
            ("example.com", "24", "not an IP address"),
            ("8.8.8.0", "x", "not a prefix"),
            ("8.8.8.0", "", "not a prefix"),
        ];
        for (a, p, why) in refuse {
            let e = check(a, p).unwrap_err();
            assert!(e.contains(why), "{a}/{p}: {e}");
        }
    }

    #[test]
    fn odd_prefix_lengths_never_break_the_list() {
        let list: Vec<Entry> = serde_json::from_str(
            r#"[{"subnet":"8.8.8.0","subnet_size":"24"},{"subnet":"x","subnet_size":"wide"},{"subnet":"9.9.9.9","subnet_size":null}]"#,
        )
        .unwrap();
        assert_eq!(list[0].cidr(), "8.8.8.0/24");
        assert_eq!(list[1].subnet_size, None);
        assert!(!list[2].recognised());
    }

    #[test]
    fn the_reach_in_words() {
        let any = Reach::new(vec![entry("0.0.0.0", Some(0)), entry("::", Some(0))]);
        assert!(any.anywhere());
        assert_eq!(any.words(), "usable from any address");
        let v6_only = Reach::new(vec![entry("::", Some(0))]);
        assert!(v6_only.anywhere(), "any IPv6 address is anywhere too");
        let narrow = Reach::new(vec![entry("8.8.8.0", Some(24))]);
        assert!(!narrow.anywhere());
        assert_eq!(narrow.words(), "usable only from 8.8.8.0/24");
        assert_eq!(narrow.entries[0].words(), "the 256 addresses of 8.8.8.0/24");
        let odd = entry("any", None);
        assert!(!odd.recognised());
        assert_eq!(odd.cidr(), "any", "shown as it is");
        let odd_reach = Reach::new(vec![odd, entry("8.8.8.0", Some(24))]);
        assert!(
            odd_reach.anywhere(),
            "an unreadable entry counts as anywhere"
        );
        assert!(
            odd_reach
                .words()
                .contains("counted as usable from any address")
        );
        assert!(Reach::default().words().contains("no allowlist entry"));
        assert!(
            !Reach::default().anywhere(),
            "nothing reported is not anywhere"
        );
        assert_eq!(any.compact(), "0.0.0.0/0,::/0");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// An address as text: real IPv4/IPv6 ones, in any spelling, and junk.
    fn address() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<Ipv4Addr>().prop_map(|a| a.to_string()),
            any::<Ipv6Addr>().prop_map(|a| a.to_string()),
            // Public-looking networks with their host bits clear.
            (1u8..=223, 0u8..=255).prop_map(|(a, b)| format!("{a}.{b}.0.0")),
            (0x2000u16..=0x3fff, any::<u16>()).prop_map(|(a, b)| format!("{a:x}:{b:X}::")),
            "[0-9a-fA-F.:/ %]{0,45}",
            any::<String>(),
        ]
    }

    fn prefix() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u32..=140).prop_map(|p| p.to_string()),
            (0u32..=140).prop_map(|p| format!(" /{p} ")),
            "[-+0-9/ ]{0,6}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// A subnet is refused in words, or accepted as a network that Vultr
        /// takes (public, host bits clear, prefix in range) and whose
        /// canonical form prints and parses back to the same network, and
        /// passes the same check again.
        #[test]
        fn a_subnet_is_refused_in_words_or_round_trips(a in address(), p in prefix()) {
            match check(&a, &p) {
                Ok(net) => {
                    prop_assert_eq!(net.trunc(), net);
                    let range = match net { IpNet::V4(_) => 8..=32, IpNet::V6(_) => 20..=128 };
                    prop_assert!(range.contains(&net.prefix_len()));
                    let printed = net.to_string();
                    prop_assert_eq!(printed.parse::<IpNet>(), Ok(net));
                    let (addr, len) = printed.split_once('/').unwrap();
                    prop_assert_eq!(check(addr, len), Ok(net));
                    let listed = Entry {
                        subnet: addr.to_string(),
                        subnet_size: Some(u32::from(net.prefix_len())),
                        ..Default::default()
                    };
                    prop_assert_eq!(listed.net(), Some(net));
                    prop_assert_eq!(listed.cidr(), printed);
                }
                Err(why) => prop_assert!(!why.is_empty()),
            }
        }

        /// An entry as Vultr lists it, whatever its fields: read as a
        /// network or shown as it is; never a panic.
        #[test]
        fn any_listed_entry_reads_or_shows_as_it_is(subnet in address(), size in proptest::option::of(0u32..300)) {
            let e = Entry { subnet, subnet_size: size, ..Default::default() };
            let _ = (e.words(), e.is_everything(), e.recognised());
            match e.net() {
                Some(n) => prop_assert_eq!(e.cidr(), n.to_string()),
                None => prop_assert!(e.cidr().starts_with(&e.subnet)),
            }
        }
    }
}
