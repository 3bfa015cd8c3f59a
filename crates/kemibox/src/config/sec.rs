//! `[pike]`, `[permissions]` and `[ipops]`: the settings of the KEMI
//! modules that guard a tenant (flood detection, address permissions, IP
//! and DNS operations), at the top level (every tenant's defaults) and in
//! each `[[tenant]]` (its own values, key by key), checked once on the
//! merged values.
//!
//! ```toml
//! [pike]
//! sampling_time_unit = 2        # seconds per sampling unit
//! reqs_density_per_unit = 30    # requests per unit before blocking
//! remove_latency = 120          # seconds an idle source is remembered
//! max_addresses = 100000        # sources tracked at most
//!
//! [permissions]
//! peer_tag_avp = "$avp(peer)"   # the matched row's tag goes there
//!
//! [ipops]
//! dns_timeout_ms = 2000         # each DNS lookup gives up after this
//! dns_server = "127.0.0.1:53"   # SRV/NAPTR server; default: /etc/resolv.conf
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use kemibox_kemi::PikeSettings;
use kemibox_kemi::pv_name::{self, PvName};
use serde::Deserialize;
use toml::Spanned;

use super::locate::Problem;
use super::validate::{Checked, Given, Scope};

/// `[pike]` and `[tenant.pike]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PikeTable {
    pub sampling_time_unit: Option<Spanned<u32>>,
    pub reqs_density_per_unit: Option<Spanned<u32>>,
    pub remove_latency: Option<Spanned<u32>>,
    pub max_addresses: Option<Spanned<u32>>,
}

/// `[permissions]` and `[tenant.permissions]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionsTable {
    pub peer_tag_avp: Option<Spanned<String>>,
}

/// `[ipops]` and `[tenant.ipops]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpopsTable {
    pub dns_timeout_ms: Option<Spanned<u64>>,
    pub dns_server: Option<Spanned<String>>,
}

/// The three tables of one level (top or a tenant).
#[derive(Debug, Clone, Copy)]
pub struct SecTables<'a> {
    pub pike: &'a PikeTable,
    pub permissions: &'a PermissionsTable,
    pub ipops: &'a IpopsTable,
}

/// A tenant's pike, permissions and ipops settings, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecModules {
    pub pike: PikeSettings,
    /// The AVP name (`peer` for `$avp(peer)`) matched tags go to.
    pub peer_tag_avp: Option<String>,
    pub dns_timeout: Duration,
    /// The name server for SRV/NAPTR lookups; `None`: the system's.
    pub dns_server: Option<SocketAddr>,
}

impl SecModules {
    /// The built-in settings (Kamailio's defaults).
    pub fn builtin() -> SecModules {
        SecModules {
            pike: PikeSettings::default(),
            peer_tag_avp: None,
            dns_timeout: kemibox_kemi::Ipops::DEFAULT_TIMEOUT,
            dns_server: None,
        }
    }
}

/// The tenant's value of a key, else the top level's.
fn pick<'a, T: Clone, Table>(
    top: &'a Table,
    own: Option<(Scope<'a>, &'a Table)>,
    key: &str,
    get: fn(&Table) -> &Option<Spanned<T>>,
) -> Option<Given<T>> {
    own.and_then(|(scope, t)| get(t).as_ref().map(|v| scope.given(key, v)))
        .or_else(|| get(top).as_ref().map(|v| Scope::Top.given(key, v)))
}

/// What starts a message about where a value was given: "" or "tenant a: ".
fn label<T>(given: &Given<T>) -> String {
    match &given.at {
        super::locate::Origin::Key(super::locate::Key {
            tenant: Some(id), ..
        }) => format!("tenant {id}: "),
        _ => String::new(),
    }
}

/// A count that must be at least 1.
fn positive<T: Copy + Into<u64>>(
    given: Option<Given<T>>,
    key: &str,
    default: T,
    why: &str,
) -> Checked<T> {
    match given {
        Some(g) if g.value.into() == 0 => Err(Problem::new(
            g.at.clone(),
            format!("{}{key} = 0 {why}", label(&g)),
            format!(
                "give at least 1, or remove it for the default ({})",
                default.into()
            ),
        )),
        Some(g) => Ok(g.value),
        None => Ok(default),
    }
}

/// Merge `own` (a tenant's tables) over `top` and check the result.
pub fn sec_modules(
    top: SecTables<'_>,
    own: Option<(Scope<'_>, SecTables<'_>)>,
) -> Checked<SecModules> {
    let d = SecModules::builtin();
    let own_pike = own.map(|(s, t)| (s, t.pike));
    let pike = PikeSettings {
        sampling_time_unit: positive(
            pick(top.pike, own_pike, "pike.sampling_time_unit", |t| {
                &t.sampling_time_unit
            }),
            "pike.sampling_time_unit",
            d.pike.sampling_time_unit,
            "would make every sampling unit empty",
        )?,
        reqs_density_per_unit: positive(
            pick(top.pike, own_pike, "pike.reqs_density_per_unit", |t| {
                &t.reqs_density_per_unit
            }),
            "pike.reqs_density_per_unit",
            d.pike.reqs_density_per_unit,
            "would block every source at its first request",
        )?,
        remove_latency: positive(
            pick(top.pike, own_pike, "pike.remove_latency", |t| {
                &t.remove_latency
            }),
            "pike.remove_latency",
            d.pike.remove_latency,
            "would forget every source at once",
        )?,
        max_addresses: positive(
            pick(top.pike, own_pike, "pike.max_addresses", |t| {
                &t.max_addresses
            }),
            "pike.max_addresses",
            u32::try_from(d.pike.max_addresses).unwrap_or(u32::MAX),
            "would track no source",
        )? as usize,
    };
    let own_perm = own.map(|(s, t)| (s, t.permissions));
    let peer_tag_avp = match pick(top.permissions, own_perm, "permissions.peer_tag_avp", |t| {
        &t.peer_tag_avp
    }) {
        None => None,
        Some(g) => match pv_name::parse(&g.value) {
            Some(PvName::Named("avp", name)) => Some(name.to_string()),
            _ => {
                return Err(Problem::new(
                    g.at.clone(),
                    format!(
                        "{}permissions.peer_tag_avp = {:?} is not an AVP",
                        label(&g),
                        g.value
                    ),
                    "give an AVP such as \"$avp(peer)\", or remove it to set no tag",
                ));
            }
        },
    };
    let own_ipops = own.map(|(s, t)| (s, t.ipops));
    let dns_timeout = Duration::from_millis(positive(
        pick(top.ipops, own_ipops, "ipops.dns_timeout_ms", |t| {
            &t.dns_timeout_ms
        }),
        "ipops.dns_timeout_ms",
        u64::try_from(d.dns_timeout.as_millis()).unwrap_or(u64::MAX),
        "would time every DNS lookup out",
    )?);
    let dns_server = match pick(top.ipops, own_ipops, "ipops.dns_server", |t| &t.dns_server) {
        None => None,
        Some(g) => {
            let parsed = g
                .value
                .parse::<SocketAddr>()
                .ok()
                .or_else(|| g.value.parse().ok().map(|ip| SocketAddr::new(ip, 53)));
            match parsed {
                Some(addr) => Some(addr),
                None => {
                    return Err(Problem::new(
                        g.at.clone(),
                        format!(
                            "{}ipops.dns_server = {:?} is not an IP address or IP:PORT",
                            label(&g),
                            g.value
                        ),
                        "give e.g. \"127.0.0.1:53\" or \"[::1]:5353\", or remove it for /etc/resolv.conf",
                    ));
                }
            }
        }
    };
    Ok(SecModules {
        pike,
        peer_tag_avp,
        dns_timeout,
        dns_server,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(name: &str, text: &str) -> anyhow::Result<crate::config::Settings> {
        let dir = std::env::temp_dir().join(format!("kemibox-sec-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kemibox.toml");
        std::fs::write(&path, text).unwrap();
        crate::config::load(&path)
    }

    #[test]
    fn a_tenant_s_own_values_win_key_by_key_over_the_top_level() {
        let loaded = load_text(
            "merge",
            r#"
listen = ["udp:127.0.0.1:0", "udp:127.0.0.2:0"]
[pike]
sampling_time_unit = 5
reqs_density_per_unit = 10
[permissions]
peer_tag_avp = "$avp(peer)"
[ipops]
dns_server = "127.0.0.1"

[[tenant]]
id = "a"
script = "a.lua"
listen = ["udp:127.0.0.1:0"]

[[tenant]]
id = "b"
script = "b.lua"
domains = ["b.example"]
[tenant.pike]
reqs_density_per_unit = 50
[tenant.ipops]
dns_timeout_ms = 300
dns_server = "[::1]:5353"
"#,
        )
        .unwrap();
        let (a, b) = (&loaded.tenants[0].sec, &loaded.tenants[1].sec);
        assert_eq!(
            (a.pike.sampling_time_unit, a.pike.reqs_density_per_unit),
            (5, 10)
        );
        assert_eq!(a.pike.remove_latency, 120, "Kamailio's default");
        assert_eq!(
            (b.pike.sampling_time_unit, b.pike.reqs_density_per_unit),
            (5, 50)
        );
        assert_eq!(a.peer_tag_avp.as_deref(), Some("peer"));
        assert_eq!(b.peer_tag_avp.as_deref(), Some("peer"));
        assert_eq!(a.dns_server, Some("127.0.0.1:53".parse().unwrap()));
        assert_eq!(a.dns_timeout, Duration::from_secs(2));
        assert_eq!(b.dns_server, Some("[::1]:5353".parse().unwrap()));
        assert_eq!(b.dns_timeout, Duration::from_millis(300));
        let plain = load_text("plain", "").unwrap();
        assert_eq!(plain.tenants[0].sec, SecModules::builtin());
    }
}
