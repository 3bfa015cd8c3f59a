//! A tenant's outbound allowlist (`relay_to` in the config): where its
//! `t_relay` and `forward` may send requests.
//!
//! An entry is a network (`10.0.0.0/8`, `fd00::/8`), an address (`10.1.2.3`,
//! `::1`: any port), an address with a port (`127.0.0.1:5080`,
//! `[::1]:5080`), or a host name (`sip.example.com`: compared without case
//! with the host of the target URI before it is resolved, any port).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// One `relay_to` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayRule {
    /// Addresses whose first `prefix` bits are those of `network`.
    Net { network: IpAddr, prefix: u8 },
    /// One address and port.
    Addr(SocketAddr),
    /// A host name, lower case.
    Host(String),
}

impl FromStr for RelayRule {
    type Err = String;

    fn from_str(s: &str) -> Result<RelayRule, String> {
        let s = s.trim();
        if let Some((ip, prefix)) = s.split_once('/') {
            let network = ip
                .parse::<IpAddr>()
                .map_err(|_| format!("{s:?}: {ip:?} is not an IP address"))?;
            let max = if network.is_ipv4() { 32 } else { 128 };
            let prefix = prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0-{max}"))?;
            return Ok(RelayRule::Net { network, prefix });
        }
        if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse() {
            let prefix = if matches!(ip, IpAddr::V4(_)) { 32 } else { 128 };
            return Ok(RelayRule::Net {
                network: ip,
                prefix,
            });
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(RelayRule::Addr(addr));
        }
        let valid = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !s.starts_with(['.', '-'])
            && !s.chars().all(|c| c.is_ascii_digit() || c == '.');
        if valid {
            Ok(RelayRule::Host(s.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{s:?} is not a network, address or host name: give e.g. \"10.0.0.0/8\", \"10.1.2.3\", \"127.0.0.1:5080\" or \"sip.example.com\""
            ))
        }
    }
}

/// Whether `ip` is in `network/prefix` (never across address families).
fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    let (ip, network, bits) = match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u32::from(a) as u128, u32::from(n) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        _ => return false,
    };
    let prefix = u32::from(prefix).min(bits);
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (ip >> shift) == (network >> shift)
}

/// The entries of a tenant's `relay_to`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayTo {
    pub rules: Vec<RelayRule>,
}

impl RelayTo {
    /// Parse every entry; the error names the bad one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<RelayTo, String> {
        let rules = entries
            .iter()
            .map(|e| e.as_ref().parse())
            .collect::<Result<_, _>>()?;
        Ok(RelayTo { rules })
    }

    /// Whether a host name entry names `host` (a URI's host, brackets
    /// allowed).
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.rules
            .iter()
            .any(|r| matches!(r, RelayRule::Host(h) if h.eq_ignore_ascii_case(host)))
    }

    /// Whether a network or address entry takes `addr`.
    pub fn allows_addr(&self, addr: SocketAddr) -> bool {
        self.rules.iter().any(|r| match r {
            RelayRule::Net { network, prefix } => in_network(addr.ip(), *network, *prefix),
            RelayRule::Addr(a) => *a == addr,
            RelayRule::Host(_) => false,
        })
    }

    /// Whether a request for `host` (the target URI's host) resolved to
    /// `addr` may be sent.
    pub fn allows(&self, host: &str, addr: SocketAddr) -> bool {
        self.allows_host(host) || self.allows_addr(addr)
    }

    /// Whether a request may go to the target `uri` (`$du` or the R-URI),
    /// resolving its host when no host name entry names it: `Err` says
    /// where it would have gone.
    pub async fn check_uri(&self, uri: &str) -> Result<(), String> {
        let parsed = kemibox_sip::Uri::parse(uri).map_err(|_| uri.to_string())?;
        if self.allows_host(parsed.host) {
            return Ok(());
        }
        let port = parsed.port.unwrap_or(5060);
        let host = parsed.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::net::lookup_host((host, port)).await {
                Ok(found) => found.take(1).collect(),
                Err(_) => Vec::new(),
            },
        };
        match addrs.first() {
            Some(a) if self.allows_addr(*a) => Ok(()),
            Some(a) => Err(format!("{uri} ({a})")),
            None => Err(uri.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_parse_into_networks_addresses_and_hosts() {
        let r = RelayTo::parse(&[
            "10.0.0.0/8",
            "192.0.2.7",
            "127.0.0.1:5080",
            "[::1]:5070",
            "fd00::/8",
            "SIP.Example.com",
        ])
        .unwrap();
        assert!(r.allows_addr(sa("10.200.3.4:5060")));
        assert!(!r.allows_addr(sa("11.0.0.1:5060")));
        assert!(r.allows_addr(sa("192.0.2.7:9")));
        assert!(!r.allows_addr(sa("192.0.2.8:9")));
        assert!(r.allows_addr(sa("127.0.0.1:5080")));
        assert!(!r.allows_addr(sa("127.0.0.1:5081")));
        assert!(r.allows_addr(sa("[::1]:5070")));
        assert!(r.allows_addr(sa("[fd12::1]:5060")));
        assert!(!r.allows_addr(sa("[fe80::1]:5060")));
        assert!(r.allows_host("sip.example.COM"));
        assert!(!r.allows_host("example.com"));
        assert!(r.allows("sip.example.com", sa("203.0.113.1:5060")));
        assert!(!r.allows("other.example.com", sa("203.0.113.1:5060")));
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "::/129",
            "",
            "1.2.3.4.5",
            "a b",
            "10.0.0.0/x",
        ] {
            assert!(RelayTo::parse(&[bad]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn prefix_zero_takes_its_family_only() {
        let r = RelayTo::parse(&["0.0.0.0/0"]).unwrap();
        assert!(r.allows_addr(sa("8.8.8.8:53")));
        assert!(!r.allows_addr(sa("[::1]:53")));
    }

    #[tokio::test]
    async fn uris_are_checked_by_host_name_then_by_address() {
        let r = RelayTo::parse(&["sip.example.com", "127.0.0.1:5080"]).unwrap();
        assert!(r.check_uri("sip:bob@sip.example.com:7000").await.is_ok());
        assert!(r.check_uri("sip:bob@127.0.0.1:5080").await.is_ok());
        let refused = r.check_uri("sip:bob@127.0.0.1:5090").await.unwrap_err();
        assert!(refused.contains("127.0.0.1:5090"), "{refused}");
        assert!(r.check_uri("sip:bob@127.0.0.1").await.is_err());
    }
}
