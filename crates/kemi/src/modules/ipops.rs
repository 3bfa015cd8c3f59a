//! `KSR.ipops`: IP address tests and DNS lookups (Kamailio's ipops module).
//!
//! Addresses are parsed as addresses, never compared as text, so
//! `2001:db8::1`, `2001:DB8:0::1` and `[2001:db8::1]` are one address.
//! DNS lookups are awaited (the worker serves other calls meanwhile) and
//! bounded by the tenant's DNS timeout; their results stay in per-instance
//! containers (`$dns(pvid=>key)`, `$srvquery(...)`, `$naptrquery(...)`)
//! until the same container is filled again, as Kamailio keeps them per
//! worker process.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use crate::bindings::kemibox::ksr::ipops::Host;
use crate::modules::kemi;
use crate::{Ctx, PvValue};

/// What an address string is, as ipops tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpKind {
    V4,
    V6,
    /// `[IPv6]`.
    V6Reference,
}

/// Parse `text` as IPv4, IPv6 or an IPv6 reference.
pub(crate) fn parse_ip(text: &str) -> Option<(IpKind, IpAddr)> {
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| (IpKind::V6Reference, IpAddr::V6(ip)));
    }
    match text.parse::<IpAddr>().ok()? {
        ip @ IpAddr::V4(_) => Some((IpKind::V4, ip)),
        ip @ IpAddr::V6(_) => Some((IpKind::V6, ip)),
    }
}

/// An address or subnet in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`,
/// or one address, `/32` or `/128`), as ipops and the permissions address
/// table take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address (host bits as given).
    pub ip: IpAddr,
    /// The prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub mask: u8,
}

impl Subnet {
    /// Parse `ip[/mask]`; a missing mask is the whole address. `None` for
    /// anything else (a bracketed IPv6, a mask out of range).
    pub fn parse(text: &str) -> Option<Subnet> {
        let (ip, mask) = match text.rsplit_once('/') {
            Some((ip, mask)) => (ip, Some(mask)),
            None => (text, None),
        };
        let ip: IpAddr = ip.trim().parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let mask = match mask {
            None => max,
            Some(m) => m.trim().parse::<u8>().ok().filter(|m| *m <= max)?,
        };
        Some(Subnet { ip, mask })
    }

    /// Whether `ip` is in this subnet (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.ip, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let bits = u32::MAX.checked_shl(32 - u32::from(self.mask)).unwrap_or(0);
                u32::from(net) & bits == u32::from(ip) & bits
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let bits = u128::MAX
                    .checked_shl(128 - u32::from(self.mask))
                    .unwrap_or(0);
                u128::from(net) & bits == u128::from(ip) & bits
            }
            _ => false,
        }
    }

    /// Whether this is one address (/32 or /128).
    pub fn is_host(&self) -> bool {
        self.mask == if self.ip.is_ipv4() { 32 } else { 128 }
    }
}

/// RFC 1918's private IPv4 ranges.
fn is_rfc1918(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(_) => false,
    }
}

/// Names longer than this are refused before any lookup (-2), as
/// Kamailio does.
const MAX_NAME: usize = 255;
/// Containers per kind and instance: a script names a handful; more would
/// be memory a script could grow without bound.
const MAX_CONTAINERS: usize = 32;
/// Records kept per container (Kamailio keeps 32 too).
const MAX_RECORDS: usize = 32;

/// One `$dns(pvid=>...)` container: the addresses a name resolved to.
#[derive(Debug, Clone, Default)]
struct DnsAnswer {
    addrs: Vec<IpAddr>,
}

/// One SRV record of a `$srvquery` container.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Srv {
    priority: u16,
    weight: u16,
    port: u16,
    target: String,
}

/// One NAPTR record of a `$naptrquery` container.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Naptr {
    order: u16,
    pref: u16,
    flags: String,
    services: String,
    regex: String,
    replace: String,
}

/// The DNS result containers of one instance.
#[derive(Debug, Default)]
pub(crate) struct DnsContainers {
    dns: HashMap<String, DnsAnswer>,
    srv: HashMap<String, Vec<Srv>>,
    naptr: HashMap<String, Vec<Naptr>>,
}

/// Room for container `pvid` in `map`: it exists, or there is space.
fn has_room<V>(map: &HashMap<String, V>, pvid: &str) -> bool {
    map.contains_key(pvid) || map.len() < MAX_CONTAINERS
}

/// `pvid=>key` or `pvid=>key[index]` of a container pseudo-variable;
/// a negative index counts from the end, no index is 0.
fn container_key(inner: &str) -> Option<(&str, &str, i64)> {
    let (pvid, key) = inner.split_once("=>")?;
    let (key, index) = match key.split_once('[') {
        Some((key, rest)) => (key, rest.strip_suffix(']')?.trim().parse().ok()?),
        None => (key, 0),
    };
    Some((pvid.trim(), key.trim(), index))
}

/// Element `index` of `items` (negative: from the end).
fn nth<T>(items: &[T], index: i64) -> Option<&T> {
    let i = if index < 0 {
        items.len().checked_sub(usize::try_from(-index).ok()?)?
    } else {
        usize::try_from(index).ok()?
    };
    items.get(i)
}

fn int(n: impl TryInto<i32>) -> Option<PvValue> {
    n.try_into().ok().map(PvValue::Int)
}

fn text(s: &str) -> Option<PvValue> {
    Some(PvValue::Str(s.to_string()))
}

impl DnsContainers {
    /// `$dns(pvid=>key)`: `None` is `$null` (unknown container, key or
    /// index); `Err` a malformed name.
    pub(crate) fn dns(&self, inner: &str) -> Result<Option<PvValue>, ()> {
        let (pvid, key, index) = container_key(inner).ok_or(())?;
        let Some(answer) = self.dns.get(pvid) else {
            return Ok(None);
        };
        Ok(match key {
            "count" => int(answer.addrs.len()),
            "ipv4" => int(i32::from(answer.addrs.iter().any(IpAddr::is_ipv4))),
            "ipv6" => int(i32::from(answer.addrs.iter().any(IpAddr::is_ipv6))),
            "addr" => nth(&answer.addrs, index).and_then(|a| text(&a.to_string())),
            "type" => nth(&answer.addrs, index).and_then(|a| int(if a.is_ipv4() { 4 } else { 6 })),
            _ => return Err(()),
        })
    }

    /// `$srvquery(pvid=>key)`.
    pub(crate) fn srv(&self, inner: &str) -> Result<Option<PvValue>, ()> {
        let (pvid, key, index) = container_key(inner).ok_or(())?;
        let Some(records) = self.srv.get(pvid) else {
            return Ok(None);
        };
        if key == "count" {
            return Ok(int(records.len()));
        }
        let r = nth(records, index);
        Ok(match key {
            "port" => r.and_then(|r| int(r.port)),
            "priority" => r.and_then(|r| int(r.priority)),
            "weight" => r.and_then(|r| int(r.weight)),
            "target" => r.and_then(|r| text(&r.target)),
            _ => return Err(()),
        })
    }

    /// `$naptrquery(pvid=>key)`.
    pub(crate) fn naptr(&self, inner: &str) -> Result<Option<PvValue>, ()> {
        let (pvid, key, index) = container_key(inner).ok_or(())?;
        let Some(records) = self.naptr.get(pvid) else {
            return Ok(None);
        };
        if key == "count" {
            return Ok(int(records.len()));
        }
        let r = nth(records, index);
        Ok(match key {
            "order" => r.and_then(|r| int(r.order)),
            "pref" => r.and_then(|r| int(r.pref)),
            "flags" => r.and_then(|r| text(&r.flags)),
            "services" => r.and_then(|r| text(&r.services)),
            "regex" => r.and_then(|r| text(&r.regex)),
            "replace" => r.and_then(|r| text(&r.replace)),
            _ => return Err(()),
        })
    }
}

/// A tenant's DNS settings and resolver for `KSR.ipops` (part of its
/// [`crate::TenantState`]).
pub struct Ipops {
    /// Each lookup gives up after this long.
    timeout: Duration,
    /// The name server for SRV/NAPTR lookups; `None`: the system's
    /// (/etc/resolv.conf).
    nameserver: Option<SocketAddr>,
    /// Built at the first SRV/NAPTR lookup (reading the system's
    /// configuration then, not at start); the error is kept so a broken
    /// /etc/resolv.conf is reported at every lookup, not retried.
    resolver: OnceLock<Result<TokioResolver, String>>,
}

impl std::fmt::Debug for Ipops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipops")
            .field("timeout", &self.timeout)
            .field("nameserver", &self.nameserver)
            .finish_non_exhaustive()
    }
}

impl Default for Ipops {
    fn default() -> Ipops {
        Ipops::new(Ipops::DEFAULT_TIMEOUT, None)
    }
}

impl Ipops {
    /// How long a lookup may take when the tenant does not say.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// DNS lookups bounded by `timeout`, SRV/NAPTR asked of `nameserver`
    /// (`None`: the system's name servers).
    pub fn new(timeout: Duration, nameserver: Option<SocketAddr>) -> Ipops {
        Ipops {
            timeout,
            nameserver,
            resolver: OnceLock::new(),
        }
    }

    fn resolver(&self) -> Result<&TokioResolver, String> {
        let built = self.resolver.get_or_init(|| {
            let mut builder = match self.nameserver {
                Some(addr) => {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let server = NameServerConfig::new(addr.ip(), true, vec![udp]);
                    Resolver::builder_with_config(
                        ResolverConfig::from_name_servers(vec![server]),
                        TokioRuntimeProvider::default(),
                    )
                }
                None => TokioResolver::builder_tokio()
                    .map_err(|e| format!("reading the system's DNS configuration: {e}"))?,
            };
            builder.options_mut().timeout = self.timeout;
            builder
                .build()
                .map_err(|e| format!("building the DNS resolver: {e}"))
        });
        built.as_ref().map_err(Clone::clone)
    }

    /// The records of `name` of type `rtype`, within the timeout.
    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Vec<RData>, String> {
        let resolver = self.resolver()?;
        match tokio::time::timeout(self.timeout, resolver.lookup(name, rtype)).await {
            Err(_) => Err(format!("timed out after {} ms", self.timeout.as_millis())),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(found)) => Ok(found.answers().iter().map(|r| r.data.clone()).collect()),
        }
    }

    /// The addresses of `host` from the system resolver (getaddrinfo:
    /// /etc/hosts, then DNS), as Kamailio's dns_query and dns_sys_match_ip
    /// ask it; run off the worker by tokio, within the timeout.
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let lookup = tokio::net::lookup_host((host, 0));
        match tokio::time::timeout(self.timeout, lookup).await {
            Err(_) => Err(format!("timed out after {} ms", self.timeout.as_millis())),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(found)) => {
                let mut addrs: Vec<IpAddr> = Vec::new();
                for a in found {
                    if !addrs.contains(&a.ip()) {
                        addrs.push(a.ip());
                    }
                }
                Ok(addrs)
            }
        }
    }
}

impl Ctx {
    fn ip_is_in_subnet(&mut self, function: &str, ip: &str, subnets: &str) -> i32 {
        let ip = match parse_ip(ip) {
            Some((IpKind::V4 | IpKind::V6, ip)) => ip,
            _ => return -1,
        };
        for entry in subnets.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match Subnet::parse(entry) {
                Some(net) if net.contains(ip) => return 1,
                Some(_) => {}
                None => self.script_error(function, format_args!("malformed subnet {entry:?}")),
            }
        }
        -1
    }
}

fn kind_is(ip: &str, kind: IpKind) -> i32 {
    kemi(parse_ip(ip).is_some_and(|(k, _)| k == kind))
}

fn compare(ip1: &str, ip2: &str, references: bool) -> i32 {
    match (parse_ip(ip1), parse_ip(ip2)) {
        (Some((k1, a)), Some((k2, b))) => {
            let refs = k1 == IpKind::V6Reference || k2 == IpKind::V6Reference;
            kemi((references || !refs) && a == b)
        }
        _ => -1,
    }
}

impl Host for Ctx {
    async fn is_ip(&mut self, ip: String) -> i32 {
        kemi(parse_ip(&ip).is_some())
    }
    async fn is_pure_ip(&mut self, ip: String) -> i32 {
        kemi(matches!(parse_ip(&ip), Some((IpKind::V4 | IpKind::V6, _))))
    }
    async fn is_ip4(&mut self, ip: String) -> i32 {
        kind_is(&ip, IpKind::V4)
    }
    async fn is_ip6(&mut self, ip: String) -> i32 {
        kind_is(&ip, IpKind::V6)
    }
    async fn is_ip6_reference(&mut self, ip: String) -> i32 {
        kind_is(&ip, IpKind::V6Reference)
    }
    async fn is_ipv4(&mut self, ip: String) -> i32 {
        kind_is(&ip, IpKind::V4)
    }
    async fn is_ipv6(&mut self, ip: String) -> i32 {
        kind_is(&ip, IpKind::V6)
    }
    async fn is_ipv6_reference(&mut self, ip: String) -> i32 {
        kind_is(&ip, IpKind::V6Reference)
    }
    async fn ip_type(&mut self, ip: String) -> i32 {
        match parse_ip(&ip) {
            Some((IpKind::V4, _)) => 1,
            Some((IpKind::V6, _)) => 2,
            Some((IpKind::V6Reference, _)) => 3,
            None => -1,
        }
    }
    async fn compare_ips(&mut self, ip1: String, ip2: String) -> i32 {
        compare(&ip1, &ip2, true)
    }
    async fn compare_pure_ips(&mut self, ip1: String, ip2: String) -> i32 {
        compare(&ip1, &ip2, false)
    }
    async fn is_ip_rfc1918(&mut self, ip: String) -> i32 {
        kemi(matches!(parse_ip(&ip), Some((IpKind::V4, a)) if is_rfc1918(a)))
    }
    async fn ip_is_in_subnet(&mut self, ip: String, subnet: String) -> i32 {
        Ctx::ip_is_in_subnet(self, "KSR.ipops.ip_is_in_subnet", &ip, &subnet)
    }
    async fn is_in_subnet(&mut self, ip: String, subnet: String) -> i32 {
        Ctx::ip_is_in_subnet(self, "KSR.ipops.is_in_subnet", &ip, &subnet)
    }
    async fn dns_sys_match_ip(&mut self, hostname: String, ipaddr: String) -> i32 {
        const F: &str = "KSR.ipops.dns_sys_match_ip";
        let Some((_, ip)) = parse_ip(&ipaddr) else {
            self.script_error(F, format_args!("invalid ip address {ipaddr:?}"));
            return -3;
        };
        let state = self.state.clone();
        match state.ipops.addresses(&hostname).await {
            Ok(addrs) => kemi(addrs.contains(&ip)),
            Err(e) => {
                self.script_error(F, format_args!("cannot resolve {hostname:?}: {e}"));
                -4
            }
        }
    }
    async fn dns_query(&mut self, hostname: String, pvid: String) -> i32 {
        const F: &str = "KSR.ipops.dns_query";
        if hostname.len() > MAX_NAME {
            self.script_error(F, "hostname longer than 255");
            return -2;
        }
        if !has_room(&self.dns.dns, &pvid) {
            self.script_error(
                F,
                format_args!("no room for container {pvid:?} (at most {MAX_CONTAINERS})"),
            );
            return -3;
        }
        let state = self.state.clone();
        let found = state.ipops.addresses(&hostname).await;
        let answer = self.dns.dns.entry(pvid).or_default();
        answer.addrs.clear();
        match found {
            Ok(mut addrs) => {
                addrs.truncate(MAX_RECORDS);
                answer.addrs = addrs;
                1
            }
            Err(e) => {
                self.script_error(F, format_args!("cannot resolve {hostname:?}: {e}"));
                -4
            }
        }
    }
    async fn srv_query(&mut self, srvcname: String, pvid: String) -> i32 {
        const F: &str = "KSR.ipops.srv_query";
        if srvcname.len() > MAX_NAME {
            self.script_error(F, "name longer than 255");
            return -2;
        }
        if !has_room(&self.dns.srv, &pvid) {
            self.script_error(
                F,
                format_args!("no room for container {pvid:?} (at most {MAX_CONTAINERS})"),
            );
            return -3;
        }
        let state = self.state.clone();
        let found = state.ipops.lookup(&srvcname, RecordType::SRV).await;
        let records = self.dns.srv.entry(pvid).or_default();
        records.clear();
        match found {
            Ok(data) => {
                records.extend(data.iter().filter_map(|d| match d {
                    RData::SRV(srv) => Some(Srv {
                        priority: srv.priority,
                        weight: srv.weight,
                        port: srv.port,
                        target: srv.target.to_string().trim_end_matches('.').to_string(),
                    }),
                    _ => None,
                }));
                records.sort_by(|a, b| (a.priority, b.weight).cmp(&(b.priority, a.weight)));
                records.truncate(MAX_RECORDS);
                if records.is_empty() { -1 } else { 1 }
            }
            Err(e) => {
                self.script_error(F, format_args!("{srvcname:?}: {e}"));
                -1
            }
        }
    }
    async fn naptr_query(&mut self, naptrname: String, pvid: String) -> i32 {
        const F: &str = "KSR.ipops.naptr_query";
        if naptrname.len() > MAX_NAME {
            self.script_error(F, "name longer than 255");
            return -2;
        }
        if !has_room(&self.dns.naptr, &pvid) {
            self.script_error(
                F,
                format_args!("no room for container {pvid:?} (at most {MAX_CONTAINERS})"),
            );
            return -3;
        }
        let state = self.state.clone();
        let found = state.ipops.lookup(&naptrname, RecordType::NAPTR).await;
        let records = self.dns.naptr.entry(pvid).or_default();
        records.clear();
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match found {
            Ok(data) => {
                records.extend(data.iter().filter_map(|d| match d {
                    RData::NAPTR(n) => Some(Naptr {
                        order: n.order,
                        pref: n.preference,
                        flags: lossy(&n.flags),
                        services: lossy(&n.services),
                        regex: lossy(&n.regexp),
                        replace: n.replacement.to_string().trim_end_matches('.').to_string(),
                    }),
                    _ => None,
                }));
                records.sort_by_key(|r| (r.order, r.pref));
                records.truncate(MAX_RECORDS);
                if records.is_empty() { -1 } else { 1 }
            }
            Err(e) => {
                self.script_error(F, format_args!("{naptrname:?}: {e}"));
                -1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::Arc;

    use hickory_resolver::proto::op::{Message, OpCode};
    use hickory_resolver::proto::rr::rdata::{NAPTR, SRV};
    use hickory_resolver::proto::rr::{Name, Record};
    use tokio::net::UdpSocket;

    use super::*;
    use crate::bindings::kemibox::ksr::pv::Host as Pv;
    use crate::testing::{INVITE, ctx, logs, ready, s, value};

    #[test]
    fn addresses_are_told_apart_as_kamailio_does() {
        let mut c = ctx(INVITE);
        let c = &mut c;
        for (ip, is_ip, pure, v4, v6, reference, ty) in [
            ("192.0.2.7", 1, 1, 1, -1, -1, 1),
            ("2001:db8::7", 1, 1, -1, 1, -1, 2),
            ("::ffff:192.0.2.7", 1, 1, -1, 1, -1, 2),
            ("[2001:db8::7]", 1, -1, -1, -1, 1, 3),
            ("[192.0.2.7]", -1, -1, -1, -1, -1, -1),
            ("192.0.2.256", -1, -1, -1, -1, -1, -1),
            ("example.com", -1, -1, -1, -1, -1, -1),
            ("", -1, -1, -1, -1, -1, -1),
        ] {
            assert_eq!(ready(Host::is_ip(c, ip.into())), is_ip, "is_ip {ip}");
            assert_eq!(ready(Host::is_pure_ip(c, ip.into())), pure, "pure {ip}");
            assert_eq!(ready(Host::is_ip4(c, ip.into())), v4, "ip4 {ip}");
            assert_eq!(ready(Host::is_ipv4(c, ip.into())), v4, "ipv4 {ip}");
            assert_eq!(ready(Host::is_ip6(c, ip.into())), v6, "ip6 {ip}");
            assert_eq!(ready(Host::is_ipv6(c, ip.into())), v6, "ipv6 {ip}");
            assert_eq!(ready(Host::is_ip6_reference(c, ip.into())), reference);
            assert_eq!(ready(Host::is_ipv6_reference(c, ip.into())), reference);
            assert_eq!(ready(Host::ip_type(c, ip.into())), ty, "type {ip}");
        }
    }

    #[test]
    fn comparisons_and_private_ranges() {
        let mut c = ctx(INVITE);
        let c = &mut c;
        let cmp = |c: &mut Ctx, a: &str, b: &str| ready(Host::compare_ips(c, a.into(), b.into()));
        let pure =
            |c: &mut Ctx, a: &str, b: &str| ready(Host::compare_pure_ips(c, a.into(), b.into()));
        assert_eq!(
            cmp(
                c,
                "1080:0000:0000:0000:0008:0800:200C:417A",
                "[1080::8:800:200c:417a]"
            ),
            1
        );
        assert_eq!(
            pure(c, "1080::8:800:200C:417A", "1080:0:0:0:8:800:200c:417a"),
            1
        );
        assert_eq!(
            pure(c, "1080::8:800:200C:417A", "[1080::8:800:200C:417A]"),
            -1
        );
        assert_eq!(cmp(c, "192.0.2.7", "192.0.2.7"), 1);
        assert_eq!(cmp(c, "192.0.2.7", "192.0.2.8"), -1);
        assert_eq!(cmp(c, "192.0.2.7", "::ffff:192.0.2.7"), -1);
        assert_eq!(cmp(c, "nonsense", "nonsense"), -1);
        for (ip, private) in [
            ("10.0.123.123", 1),
            ("172.16.0.1", 1),
            ("172.31.255.255", 1),
            ("172.32.0.1", -1),
            ("192.168.1.1", 1),
            ("192.169.1.1", -1),
            ("8.8.8.8", -1),
            ("fd00::1", -1),
            ("x", -1),
        ] {
            assert_eq!(ready(Host::is_ip_rfc1918(c, ip.into())), private, "{ip}");
        }
        assert!(logs(c).is_empty());
    }

    #[test]
    fn subnets_match_lists_and_malformed_entries_are_logged() {
        let mut c = ctx(INVITE);
        let c = &mut c;
        let sub = |c: &mut Ctx, ip: &str, net: &str| {
            ready(Host::ip_is_in_subnet(c, ip.into(), net.into()))
        };
        assert_eq!(sub(c, "10.0.123.123", "10.0.123.1/24"), 1);
        assert_eq!(sub(c, "10.0.123.123", "10.0.0.0/16, 192.168.0.0/24"), 1);
        assert_eq!(sub(c, "192.168.0.9", "10.0.0.0/16,192.168.0.0/24"), 1);
        assert_eq!(sub(c, "192.168.1.9", "10.0.0.0/16,192.168.0.0/24"), -1);
        assert_eq!(sub(c, "192.168.1.9", "0.0.0.0/0"), 1);
        assert_eq!(
            sub(c, "192.168.1.9", "192.168.1.9"),
            1,
            "no mask: one address"
        );
        assert_eq!(sub(c, "2001:db8::1", "2001:db8::/32"), 1);
        assert_eq!(sub(c, "2001:db9::1", "2001:db8::/32"), -1);
        assert_eq!(sub(c, "2001:db8::1", "10.0.0.0/8"), -1, "families differ");
        assert_eq!(
            sub(c, "[2001:db8::1]", "2001:db8::/32"),
            -1,
            "no references"
        );
        assert!(logs(c).is_empty());
        assert_eq!(
            ready(Host::is_in_subnet(
                c,
                "10.1.1.1".into(),
                "10.0.0.0/33,10.1.0.0/16".into()
            )),
            1,
            "a malformed entry matches nothing; the others still do"
        );
        assert_eq!(sub(c, "10.1.1.1", "banana/8"), -1);
        assert_eq!(
            logs(c),
            vec![
                "KSR.ipops.is_in_subnet: malformed subnet \"10.0.0.0/33\"",
                "KSR.ipops.ip_is_in_subnet: malformed subnet \"banana/8\""
            ]
        );
    }

    async fn pv(c: &mut Ctx, name: &str) -> Option<PvValue> {
        value(Pv::get(c, name.into()).await)
    }

    #[tokio::test]
    async fn dns_query_fills_its_container_from_the_system_resolver() {
        let mut c = ctx(INVITE);
        assert_eq!(
            Host::dns_query(&mut c, "localhost".into(), "h".into()).await,
            1
        );
        let count = match pv(&mut c, "$dns(h=>count)").await {
            Some(PvValue::Int(n)) => n,
            other => panic!("{other:?}"),
        };
        assert!(count >= 1);
        let mut addrs = Vec::new();
        for i in 0..count {
            let addr = pv(&mut c, &format!("$dns(h=>addr[{i}])")).await;
            let ty = pv(&mut c, &format!("$dns(h=>type[{i}])")).await;
            match (addr, ty) {
                (Some(PvValue::Str(a)), Some(PvValue::Int(t))) => {
                    let ip: IpAddr = a.parse().unwrap();
                    assert!(ip.is_loopback());
                    assert_eq!(t, if ip.is_ipv4() { 4 } else { 6 });
                    addrs.push(ip);
                }
                other => panic!("{other:?}"),
            }
        }
        let has_v4 = i32::from(addrs.iter().any(IpAddr::is_ipv4));
        assert_eq!(
            pv(&mut c, "$dns(h=>ipv4)").await,
            Some(PvValue::Int(has_v4))
        );
        assert_eq!(pv(&mut c, &format!("$dns(h=>addr[{count}])")).await, None);
        assert_eq!(pv(&mut c, "$dns(other=>count)").await, None);
        assert_eq!(
            Host::dns_sys_match_ip(&mut c, "localhost".into(), addrs[0].to_string()).await,
            1
        );
        assert_eq!(
            Host::dns_sys_match_ip(&mut c, "localhost".into(), "192.0.2.99".into()).await,
            -1
        );
        assert_eq!(
            Host::dns_sys_match_ip(&mut c, "localhost".into(), "nope".into()).await,
            -3
        );
        // Unresolvable: -4 and the container emptied.
        assert_eq!(
            Host::dns_query(&mut c, "no-such-host.invalid".into(), "h".into()).await,
            -4
        );
        assert_eq!(pv(&mut c, "$dns(h=>count)").await, Some(PvValue::Int(0)));
        assert_eq!(
            Host::dns_query(&mut c, "a".repeat(256), "h".into()).await,
            -2
        );
        // Containers are bounded per instance.
        for i in 0..MAX_CONTAINERS {
            c.dns.dns.entry(format!("c{i}")).or_default();
        }
        assert_eq!(
            Host::dns_query(&mut c, "localhost".into(), "new".into()).await,
            -3
        );
        assert_eq!(
            Host::dns_query(&mut c, "localhost".into(), "h".into()).await,
            1
        );
    }

    /// A DNS server on a loopback port answering SRV and NAPTR queries for
    /// `example.test` (nothing else), or never answering when `silent`.
    async fn dns_server(silent: bool) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                if silent {
                    continue;
                }
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply = Message::response(query.metadata.id, OpCode::Query);
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                for q in &query.queries {
                    reply.add_query(q.clone());
                    let name = q.name().clone();
                    let target = |t: &str| Name::from_str(t).unwrap();
                    match (q.query_type(), name.to_string().as_str()) {
                        (RecordType::SRV, "_sip._udp.example.test.") => {
                            for (prio, weight, port, host) in [
                                (20, 0, 5080, "c.example.test."),
                                (10, 5, 5060, "b.example.test."),
                                (10, 60, 5062, "a.example.test."),
                            ] {
                                let srv = SRV::new(prio, weight, port, target(host));
                                reply.add_answer(Record::from_rdata(
                                    name.clone(),
                                    60,
                                    RData::SRV(srv),
                                ));
                            }
                        }
                        (RecordType::NAPTR, "example.test.") => {
                            for (order, pref, service, repl) in [
                                (20, 10, "SIP+D2T", "_sip._tcp.example.test."),
                                (10, 10, "SIP+D2U", "_sip._udp.example.test."),
                            ] {
                                let naptr = NAPTR::new(
                                    order,
                                    pref,
                                    b"s".to_vec().into_boxed_slice(),
                                    service.as_bytes().to_vec().into_boxed_slice(),
                                    Vec::new().into_boxed_slice(),
                                    target(repl),
                                );
                                reply.add_answer(Record::from_rdata(
                                    name.clone(),
                                    60,
                                    RData::NAPTR(naptr),
                                ));
                            }
                        }
                        _ => {}
                    }
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        addr
    }

    fn with_dns(server: SocketAddr, timeout: Duration) -> Ctx {
        let mut c = ctx(INVITE);
        c.state = Arc::new(crate::TenantState {
            ipops: Ipops::new(timeout, Some(server)),
            ..Default::default()
        });
        c
    }

    #[tokio::test]
    async fn srv_and_naptr_queries_fill_sorted_containers() {
        let server = dns_server(false).await;
        let mut c = with_dns(server, Duration::from_secs(2));
        assert_eq!(
            Host::srv_query(&mut c, "_sip._udp.example.test.".into(), "udp".into()).await,
            1,
            "{:?}",
            logs(&c)
        );
        assert_eq!(
            pv(&mut c, "$srvquery(udp=>count)").await,
            Some(PvValue::Int(3))
        );
        // Priority ascending, then the heavier weight first.
        for (i, (target, port, prio, weight)) in [
            ("a.example.test", 5062, 10, 60),
            ("b.example.test", 5060, 10, 5),
            ("c.example.test", 5080, 20, 0),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(
                pv(&mut c, &format!("$srvquery(udp=>target[{i}])")).await,
                s(target)
            );
            assert_eq!(
                pv(&mut c, &format!("$srvquery(udp=>port[{i}])")).await,
                Some(PvValue::Int(port))
            );
            assert_eq!(
                pv(&mut c, &format!("$srvquery(udp=>priority[{i}])")).await,
                Some(PvValue::Int(prio))
            );
            assert_eq!(
                pv(&mut c, &format!("$srvquery(udp=>weight[{i}])")).await,
                Some(PvValue::Int(weight))
            );
        }
        assert_eq!(
            pv(&mut c, "$srvquery(udp=>target[-1])").await,
            s("c.example.test")
        );
        assert_eq!(
            Host::naptr_query(&mut c, "example.test.".into(), "n".into()).await,
            1
        );
        assert_eq!(
            pv(&mut c, "$naptrquery(n=>count)").await,
            Some(PvValue::Int(2))
        );
        assert_eq!(
            pv(&mut c, "$naptrquery(n=>order[0])").await,
            Some(PvValue::Int(10))
        );
        assert_eq!(
            pv(&mut c, "$naptrquery(n=>services[0])").await,
            s("SIP+D2U")
        );
        assert_eq!(
            pv(&mut c, "$naptrquery(n=>replace[0])").await,
            s("_sip._udp.example.test")
        );
        assert_eq!(pv(&mut c, "$naptrquery(n=>flags[1])").await, s("s"));
        assert_eq!(
            pv(&mut c, "$naptrquery(n=>pref[1])").await,
            Some(PvValue::Int(10))
        );
        assert_eq!(pv(&mut c, "$naptrquery(n=>regex[1])").await, s(""));
        // A name without records: -1, the container emptied.
        assert_eq!(
            Host::srv_query(&mut c, "_sip._tcp.nothing.test.".into(), "udp".into()).await,
            -1
        );
        assert_eq!(
            pv(&mut c, "$srvquery(udp=>count)").await,
            Some(PvValue::Int(0))
        );
        // Read-only.
        Pv::sets(&mut c, "$srvquery(udp=>count)".into(), "1".into()).await;
        assert_eq!(
            pv(&mut c, "$srvquery(udp=>count)").await,
            Some(PvValue::Int(0))
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out_without_blocking() {
        let server = dns_server(true).await;
        let mut c = with_dns(server, Duration::from_millis(300));
        let started = std::time::Instant::now();
        assert_eq!(
            Host::srv_query(&mut c, "_sip._udp.example.test.".into(), "x".into()).await,
            -1
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let logged = logs(&c);
        assert!(
            logged[0].starts_with("KSR.ipops.srv_query: \"_sip._udp.example.test.\""),
            "{logged:?}"
        );
    }
}
