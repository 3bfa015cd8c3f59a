//! `KSR.permissions`: the address table (Kamailio's permissions module,
//! `allow_address` and friends).
//!
//! A tenant's rows are read from its database when the proxy starts and
//! on `permissions.addressReload`, and matched in memory: rows for one
//! address (mask /32 or /128) in a map by address, subnets in a list, as
//! Kamailio splits them into its address and subnet tables. A lookup tries
//! the exact addresses first, then the subnets, each in the order of group
//! id; a row's port 0 matches any port. A reload builds the new table
//! aside and swaps it in whole, so a lookup sees the old rows or the new,
//! never a mix; a reload that fails keeps the old rows.
//!
//! When the tenant configures `peer_tag_avp` (`"$avp(peer)"`), the tag of
//! the row that matched (when it has one) is pushed onto that AVP, for the
//! first match only (Kamailio's `peer_tag_mode` 0).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use kemibox_store::{AddressRow, AddressStore, StoreError};

use super::ipops::{Subnet, parse_ip};
use crate::bindings::kemibox::ksr::permissions::Host;
use crate::modules::kemi;
use crate::{Ctx, PvValue};

/// One row, as matched.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    group: u32,
    port: u16,
    tag: Option<String>,
}

impl Entry {
    fn matches(&self, group: Option<u32>, port: u16) -> bool {
        group.is_none_or(|g| g == self.group) && (self.port == 0 || self.port == port)
    }
}

/// A tenant's address rows, ready for matching.
#[derive(Debug, Default)]
struct AddressTable {
    exact: HashMap<IpAddr, Vec<Entry>>,
    subnets: Vec<(Subnet, Entry)>,
}

impl AddressTable {
    /// The table of `rows`; a row whose address does not parse (written
    /// to the database by hand) is skipped with a warning naming it.
    fn build(tenant: &str, rows: Vec<AddressRow>) -> AddressTable {
        let mut table = AddressTable::default();
        for row in rows {
            let Some(subnet) = Subnet::parse(&format!("{}/{}", row.ip, row.mask)) else {
                tracing::warn!(
                    tenant,
                    "permissions: address row {}/{} (group {}) is not an address or subnet; skipped",
                    row.ip,
                    row.mask,
                    row.group
                );
                continue;
            };
            let entry = Entry {
                group: row.group,
                port: row.port,
                tag: row.tag.filter(|t| !t.is_empty()),
            };
            if subnet.is_host() {
                table
                    .exact
                    .entry(subnet.ip.to_canonical())
                    .or_default()
                    .push(entry);
            } else {
                table.subnets.push((subnet, entry));
            }
        }
        for entries in table.exact.values_mut() {
            entries.sort_by_key(|e| e.group);
        }
        table.subnets.sort_by_key(|(_, e)| e.group);
        table
    }

    /// The first row matching `ip` and `port` in `group` (any group for
    /// `None`).
    fn find(&self, group: Option<u32>, ip: IpAddr, port: u16) -> Option<&Entry> {
        let ip = ip.to_canonical();
        self.exact
            .get(&ip)
            .and_then(|entries| entries.iter().find(|e| e.matches(group, port)))
            .or_else(|| {
                self.subnets
                    .iter()
                    .find(|(net, e)| net.contains(ip) && e.matches(group, port))
                    .map(|(_, e)| e)
            })
    }
}

/// A tenant's address permissions (part of its [`crate::TenantState`]):
/// where its rows are stored, the cached table, and the peer tag AVP.
#[derive(Default)]
pub struct Permissions {
    tenant: String,
    store: Option<Arc<dyn AddressStore>>,
    /// The AVP name (`peer` for `$avp(peer)`) tags go to, if any.
    peer_tag_avp: Option<String>,
    table: RwLock<Arc<AddressTable>>,
}

impl std::fmt::Debug for Permissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permissions")
            .field("tenant", &self.tenant)
            .field("peer_tag_avp", &self.peer_tag_avp)
            .finish_non_exhaustive()
    }
}

/// The rows of a table, as the dump RPCs show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressDump {
    /// Rows for one address (`permissions.addressDump`).
    pub addresses: Vec<AddressRow>,
    /// Subnets (`permissions.subnetDump`).
    pub subnets: Vec<AddressRow>,
}

impl Permissions {
    /// `tenant`'s rows from `store`, loaded now. `peer_tag_avp` is the AVP
    /// name tags go to (`peer` for `$avp(peer)`).
    pub async fn open(
        tenant: &str,
        store: Arc<dyn AddressStore>,
        peer_tag_avp: Option<String>,
    ) -> Result<Permissions, StoreError> {
        let permissions = Permissions {
            tenant: tenant.to_string(),
            store: Some(store),
            peer_tag_avp,
            table: RwLock::default(),
        };
        permissions.reload().await?;
        Ok(permissions)
    }

    /// Read the rows again and swap them in; how many rows the table now
    /// has. On error the old rows stay.
    pub async fn reload(&self) -> Result<usize, StoreError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let rows = store.addresses(&self.tenant).await?;
        let table = AddressTable::build(&self.tenant, rows);
        let count = table.exact.values().map(Vec::len).sum::<usize>() + table.subnets.len();
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        Ok(count)
    }

    fn current(&self) -> Arc<AddressTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The cached rows, addresses and subnets apart, by group.
    pub fn dump(&self) -> AddressDump {
        let table = self.current();
        let row = |ip: IpAddr, mask: u8, e: &Entry| AddressRow {
            group: e.group,
            ip: ip.to_string(),
            mask,
            port: e.port,
            tag: e.tag.clone(),
        };
        let mut addresses: Vec<AddressRow> = table
            .exact
            .iter()
            .flat_map(|(ip, entries)| {
                let mask = if ip.is_ipv4() { 32 } else { 128 };
                entries.iter().map(move |e| row(*ip, mask, e))
            })
            .collect();
        addresses.sort_by(|a, b| (a.group, &a.ip, a.port).cmp(&(b.group, &b.ip, b.port)));
        let subnets = table
            .subnets
            .iter()
            .map(|(net, e)| row(net.ip, net.mask, e))
            .collect();
        AddressDump { addresses, subnets }
    }

    /// The first row matching, its group and tag.
    fn find(&self, group: Option<u32>, ip: IpAddr, port: u16) -> Option<(u32, Option<String>)> {
        self.current()
            .find(group, ip, port)
            .map(|e| (e.group, e.tag.clone()))
    }
}

impl Ctx {
    /// Match and, on a match, set the peer tag AVP; the group matched.
    fn permissions_match(&mut self, group: Option<u32>, ip: IpAddr, port: u16) -> Option<u32> {
        let (found, tag) = self.state.permissions.find(group, ip, port)?;
        if let (Some(avp), Some(tag), Some(m)) = (
            &self.state.permissions.peer_tag_avp,
            tag,
            self.message.as_mut(),
        ) {
            m.avps
                .entry(avp.clone())
                .or_default()
                .insert(0, PvValue::Str(tag));
        }
        Some(found)
    }

    /// The request's source, or the error logged.
    fn permissions_source(&mut self, function: &str) -> Option<(IpAddr, u16)> {
        let source = self.message.as_ref().map(|m| m.source);
        if source.is_none() {
            self.script_error(function, "no message is being routed");
        }
        source.map(|s| (s.ip(), s.port()))
    }

    /// `ips` and `port` as a script gave them, or the error logged.
    fn permissions_address(
        &mut self,
        function: &str,
        ips: &str,
        port: i32,
    ) -> Option<(IpAddr, u16)> {
        let Some((_, ip)) = parse_ip(ips) else {
            self.script_error(function, format_args!("{ips:?} is not an IP address"));
            return None;
        };
        let Ok(port) = u16::try_from(port) else {
            self.script_error(function, format_args!("port {port} is out of range"));
            return None;
        };
        Some((ip, port))
    }
}

/// A script's group id as stored (a negative one matches nothing).
fn group(igroup: i32) -> Option<u32> {
    u32::try_from(igroup).ok()
}

impl Host for Ctx {
    async fn allow_source_address(&mut self, igroup: i32) -> i32 {
        let Some((ip, port)) = self.permissions_source("KSR.permissions.allow_source_address")
        else {
            return -1;
        };
        let Some(g) = group(igroup) else {
            return -1;
        };
        kemi(self.permissions_match(Some(g), ip, port).is_some())
    }
    async fn allow_source_address_group(&mut self) -> i32 {
        let Some((ip, port)) =
            self.permissions_source("KSR.permissions.allow_source_address_group")
        else {
            return -1;
        };
        self.permissions_match(None, ip, port)
            .and_then(|g| i32::try_from(g).ok())
            .unwrap_or(-1)
    }
    async fn allow_address(&mut self, igroup: i32, ips: String, port: i32) -> i32 {
        let Some((ip, port)) =
            self.permissions_address("KSR.permissions.allow_address", &ips, port)
        else {
            return -1;
        };
        let Some(g) = group(igroup) else {
            return -1;
        };
        kemi(self.permissions_match(Some(g), ip, port).is_some())
    }
    async fn allow_address_group(&mut self, ips: String, port: i32) -> i32 {
        let Some((ip, port)) =
            self.permissions_address("KSR.permissions.allow_address_group", &ips, port)
        else {
            return -1;
        };
        self.permissions_match(None, ip, port)
            .and_then(|g| i32::try_from(g).ok())
            .unwrap_or(-1)
    }
}

#[cfg(test)]
mod tests {
    use kemibox_store::SqliteStore;

    use super::*;
    use crate::testing::{INVITE, ctx, logs};

    fn row(group: u32, ip: &str, mask: u8, port: u16, tag: Option<&str>) -> AddressRow {
        AddressRow {
            group,
            ip: ip.into(),
            mask,
            port,
            tag: tag.map(Into::into),
        }
    }

    async fn state(tenant: &str, rows: &[AddressRow]) -> (Arc<SqliteStore>, crate::TenantState) {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        for r in rows {
            store.add_address(tenant, r).await.unwrap();
        }
        let permissions = Permissions::open(tenant, store.clone(), Some("peer".into()))
            .await
            .unwrap();
        (
            store,
            crate::TenantState {
                permissions,
                ..Default::default()
            },
        )
    }

    /// The test message comes from 192.0.2.7:5070.
    #[tokio::test]
    async fn source_and_given_addresses_match_rows_by_group_and_port() {
        let (_, st) = state(
            "t1",
            &[
                row(1, "192.0.2.7", 32, 5070, Some("pbx")),
                row(2, "192.0.2.0", 24, 0, None),
                row(3, "2001:db8::", 32, 5060, Some("v6")),
                row(4, "192.0.2.7", 32, 9999, None),
            ],
        )
        .await;
        let mut c = ctx(INVITE);
        c.state = Arc::new(st);
        assert_eq!(Host::allow_source_address(&mut c, 1).await, 1);
        assert_eq!(
            c.message.as_ref().unwrap().avps.get("peer"),
            Some(&vec![PvValue::Str("pbx".into())])
        );
        assert_eq!(Host::allow_source_address(&mut c, 2).await, 1, "subnet");
        assert_eq!(Host::allow_source_address(&mut c, 3).await, -1);
        assert_eq!(Host::allow_source_address(&mut c, 4).await, -1, "port");
        assert_eq!(Host::allow_source_address(&mut c, -5).await, -1);
        assert_eq!(Host::allow_source_address_group(&mut c).await, 1);
        assert_eq!(
            Host::allow_address(&mut c, 3, "2001:DB8:0::1".into(), 5060).await,
            1
        );
        assert_eq!(
            Host::allow_address(&mut c, 3, "[2001:db8::1]".into(), 5061).await,
            -1
        );
        assert_eq!(
            Host::allow_address_group(&mut c, "192.0.2.200".into(), 1).await,
            2
        );
        assert_eq!(
            Host::allow_address_group(&mut c, "198.51.100.1".into(), 5060).await,
            -1
        );
        // Exact rows before subnets, whatever their groups.
        assert_eq!(
            Host::allow_address_group(&mut c, "192.0.2.7".into(), 9999).await,
            4
        );
        assert!(logs(&c).is_empty(), "{:?}", logs(&c));
        // Bad input: -1 and a log line, no panic.
        assert_eq!(
            Host::allow_address(&mut c, 1, "not-an-ip".into(), 5060).await,
            -1
        );
        assert_eq!(
            Host::allow_address_group(&mut c, "192.0.2.7".into(), 70000).await,
            -1
        );
        let logged = logs(&c);
        assert!(
            logged[0].contains("\"not-an-ip\" is not an IP address"),
            "{logged:?}"
        );
        assert!(
            logged[1].contains("port 70000 is out of range"),
            "{logged:?}"
        );
    }

    #[tokio::test]
    async fn reload_swaps_the_rows_and_tenants_never_see_each_other() {
        let (store, st) = state("t1", &[row(1, "10.0.0.0", 8, 0, None)]).await;
        store
            .add_address("t2", &row(1, "192.0.2.7", 32, 0, None))
            .await
            .unwrap();
        let mut c = ctx(INVITE);
        c.state = Arc::new(st);
        assert_eq!(Host::allow_source_address(&mut c, 1).await, -1);
        store
            .add_address("t1", &row(1, "192.0.2.0", 28, 0, None))
            .await
            .unwrap();
        assert_eq!(Host::allow_source_address(&mut c, 1).await, -1, "cached");
        assert_eq!(c.state.permissions.reload().await.unwrap(), 2);
        assert_eq!(Host::allow_source_address(&mut c, 1).await, 1);
        let dump = c.state.permissions.dump();
        assert!(dump.addresses.is_empty());
        assert_eq!(
            dump.subnets,
            vec![
                row(1, "10.0.0.0", 8, 0, None),
                row(1, "192.0.2.0", 28, 0, None)
            ]
        );
    }
}
