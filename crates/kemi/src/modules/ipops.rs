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
