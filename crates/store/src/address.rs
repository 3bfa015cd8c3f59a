//! The permissions module's address table (Kamailio's `address` table):
//! rows of group id, IP address with its mask (a subnet), port (0: any)
//! and tag, per tenant, in SQLite or (shared by several nodes) in
//! PostgreSQL beside the subscribers. The proxy loads a tenant's rows into memory at
//! start and on `permissions.addressReload`; `kemibox address add|rm|list`
//! manages them.

use async_trait::async_trait;
use rusqlite::params;

use crate::{PostgresSubscribers, SqliteStore, StoreError};

/// One row of the address table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRow {
    /// The group scripts ask for (`allow_source_address(1)`).
    pub group: u32,
    /// The address (or a subnet's network address) as text.
    pub ip: String,
    /// The prefix length: 32 (IPv4) or 128 (IPv6) for one address.
    pub mask: u8,
    /// The port that must match; 0 matches any.
    pub port: u16,
    /// Given to scripts through the peer tag AVP when the row matches.
    pub tag: Option<String>,
}

/// Where a tenant's address rows are kept.
#[async_trait]
pub trait AddressStore: Send + Sync {
    /// Add `row` (an identical row is not added twice).
    async fn add_address(&self, tenant: &str, row: &AddressRow) -> Result<(), StoreError>;
    /// Remove the rows of `group` with this address and mask, and this
    /// port unless `port` is `None`. How many were removed.
    async fn remove_address(
        &self,
        tenant: &str,
        group: u32,
        ip: &str,
        mask: u8,
        port: Option<u16>,
    ) -> Result<usize, StoreError>;
    /// The tenant's rows, by group, address, mask and port.
    async fn addresses(&self, tenant: &str) -> Result<Vec<AddressRow>, StoreError>;
}

/// The table, created with the others when the SQLite file is opened.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS address (
    tenant TEXT NOT NULL,
    grp INTEGER NOT NULL,
    ip_addr TEXT NOT NULL,
    mask INTEGER NOT NULL,
    port INTEGER NOT NULL,
    tag TEXT,
    PRIMARY KEY (tenant, grp, ip_addr, mask, port)
);
";

/// The same table in PostgreSQL (created with the subscriber table), for
/// nodes that share their subscribers there.
pub(crate) const POSTGRES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS address (
    tenant TEXT NOT NULL,
    grp BIGINT NOT NULL,
    ip_addr TEXT NOT NULL,
    mask SMALLINT NOT NULL,
    port INTEGER NOT NULL,
    tag TEXT,
    PRIMARY KEY (tenant, grp, ip_addr, mask, port)
);
";

#[async_trait]
impl AddressStore for PostgresSubscribers {
    async fn add_address(&self, tenant: &str, row: &AddressRow) -> Result<(), StoreError> {
        let (group, mask, port) = (
            i64::from(row.group),
            i16::from(row.mask),
            i32::from(row.port),
        );
        self.execute(
            "INSERT INTO address (tenant, grp, ip_addr, mask, port, tag)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (tenant, grp, ip_addr, mask, port)
                     DO UPDATE SET tag = EXCLUDED.tag",
            &[&tenant, &group, &row.ip, &mask, &port, &row.tag],
        )
        .await?;
        Ok(())
    }

    async fn remove_address(
        &self,
        tenant: &str,
        group: u32,
        ip: &str,
        mask: u8,
        port: Option<u16>,
    ) -> Result<usize, StoreError> {
        let (group, mask, port) = (i64::from(group), i16::from(mask), port.map(i32::from));
        let removed = self
            .execute(
                "DELETE FROM address WHERE tenant = $1 AND grp = $2 AND ip_addr = $3
                         AND mask = $4 AND ($5::INTEGER IS NULL OR port = $5)",
                &[&tenant, &group, &ip, &mask, &port],
            )
            .await?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    async fn addresses(&self, tenant: &str) -> Result<Vec<AddressRow>, StoreError> {
        // Byte order for the address, as SQLite sorts.
        let rows = self
            .query(
                "SELECT grp, ip_addr, mask, port, tag FROM address WHERE tenant = $1
                         ORDER BY grp, ip_addr COLLATE \"C\", mask, port",
                &[&tenant],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let (group, mask, port): (i64, i16, i32) = (r.get(0), r.get(2), r.get(3));
                Ok(AddressRow {
                    group: u32::try_from(group)
                        .map_err(|_| StoreError::Invalid(format!("address group {group}")))?,
                    ip: r.get(1),
                    mask: u8::try_from(mask)
                        .map_err(|_| StoreError::Invalid(format!("address mask {mask}")))?,
                    port: u16::try_from(port)
                        .map_err(|_| StoreError::Invalid(format!("address port {port}")))?,
                    tag: r.get(4),
                })
            })
            .collect()
    }
}

#[async_trait]
impl AddressStore for SqliteStore {
    async fn add_address(&self, tenant: &str, row: &AddressRow) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT OR REPLACE INTO address (tenant, grp, ip_addr, mask, port, tag) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![tenant, row.group, row.ip, row.mask, row.port, row.tag],
        )?;
        Ok(())
    }

    async fn remove_address(
        &self,
        tenant: &str,
        group: u32,
        ip: &str,
        mask: u8,
        port: Option<u16>,
    ) -> Result<usize, StoreError> {
        Ok(self.db().execute(
            "DELETE FROM address WHERE tenant = ?1 AND grp = ?2 AND ip_addr = ?3 \
             AND mask = ?4 AND (?5 IS NULL OR port = ?5)",
            params![tenant, group, ip, mask, port],
        )?)
    }

    async fn addresses(&self, tenant: &str) -> Result<Vec<AddressRow>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT grp, ip_addr, mask, port, tag FROM address WHERE tenant = ?1 \
             ORDER BY grp, ip_addr, mask, port",
        )?;
        let rows = stmt.query_map(params![tenant], |r| {
            Ok(AddressRow {
                group: r.get(0)?,
                ip: r.get(1)?,
                mask: r.get(2)?,
                port: r.get(3)?,
                tag: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(group: u32, ip: &str, mask: u8, port: u16, tag: Option<&str>) -> AddressRow {
        AddressRow {
            group,
            ip: ip.into(),
            mask,
            port,
            tag: tag.map(Into::into),
        }
    }

    #[tokio::test]
    async fn rows_are_per_tenant_and_persist() {
        let dir = std::env::temp_dir().join(format!("kemibox-address-{}", std::process::id()));
        let path = dir.join("kemibox.sqlite");
        let _ = std::fs::remove_file(&path);
        {
            let store = SqliteStore::open(&path).unwrap();
            store
                .add_address("a", &row(1, "192.0.2.7", 32, 0, Some("pbx")))
                .await
                .unwrap();
            store
                .add_address("a", &row(2, "10.0.0.0", 8, 5060, None))
                .await
                .unwrap();
            store
                .add_address("b", &row(1, "2001:db8::", 32, 0, None))
                .await
                .unwrap();
            // The same row again replaces it (new tag), no duplicate.
            store
                .add_address("a", &row(1, "192.0.2.7", 32, 0, Some("gw")))
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.addresses("a").await.unwrap(),
            vec![
                row(1, "192.0.2.7", 32, 0, Some("gw")),
                row(2, "10.0.0.0", 8, 5060, None)
            ]
        );
        assert_eq!(
            store.addresses("b").await.unwrap(),
            vec![row(1, "2001:db8::", 32, 0, None)]
        );
        // A port that differs removes nothing; without a port, any.
        assert_eq!(
            store
                .remove_address("a", 2, "10.0.0.0", 8, Some(5061))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .remove_address("a", 2, "10.0.0.0", 8, None)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .remove_address("b", 1, "192.0.2.7", 32, None)
                .await
                .unwrap(),
            0,
            "tenant b cannot remove tenant a's row"
        );
        assert_eq!(store.addresses("a").await.unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
