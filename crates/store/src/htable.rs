//! Rows of htable tables (Kamailio's htable `dbtable`): what a table
//! declared with `dbtable` loads at start and, with `dbmode = 1`, writes
//! back, so its items survive a restart.
//!
//! The columns are Kamailio's (`key_name`, `key_type`, `value_type`,
//! `key_value`, `expires`), scoped by tenant and by the `dbtable` name, so
//! tenants sharing a database never load each other's rows.

use async_trait::async_trait;
use rusqlite::params;

use crate::StoreError;
use crate::sqlite::SqliteStore;

/// `value_type` of a string value (Kamailio's 0).
pub const VALUE_STR: i32 = 0;
/// `value_type` of an integer value (Kamailio's 1).
pub const VALUE_INT: i32 = 1;
/// `key_type` of a plain key (Kamailio's 0); 1 is an array key, loaded as
/// `name[0]`, `name[1]`, ... plus `name::size`.
pub const KEY_PLAIN: i32 = 0;
/// `key_type` of an array key (Kamailio's 1).
pub const KEY_ARRAY: i32 = 1;

/// One stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtableRow {
    pub key_name: String,
    /// [`KEY_PLAIN`] or [`KEY_ARRAY`].
    pub key_type: i32,
    /// [`VALUE_STR`] or [`VALUE_INT`].
    pub value_type: i32,
    /// The value as text (an integer in decimal).
    pub key_value: String,
    /// When the item expires, in Unix seconds; 0: never.
    pub expires: u64,
}

/// Changes to one table, written in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HtableChanges {
    /// Remove every stored row of the table first (a reset, a flush).
    pub clear: bool,
    /// Rows to insert or replace, by key name.
    pub upserts: Vec<HtableRow>,
    /// Key names to remove.
    pub deletes: Vec<String>,
}

impl HtableChanges {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        !self.clear && self.upserts.is_empty() && self.deletes.is_empty()
    }
}

/// Where htable tables with a `dbtable` keep their rows. A second backend
/// (PostgreSQL) implements the same two calls.
#[async_trait]
pub trait HtableStore: Send + Sync {
    /// Every row of `tenant`'s `table` (the `dbtable` name), in the order
    /// they were written.
    async fn load(&self, tenant: &str, table: &str) -> Result<Vec<HtableRow>, StoreError>;
    /// Apply `changes` to `tenant`'s `table`, all or nothing.
    async fn write(
        &self,
        tenant: &str,
        table: &str,
        changes: &HtableChanges,
    ) -> Result<(), StoreError>;
}

/// The table behind [`HtableStore`] in SQLite.
pub(crate) const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS htable (
    tenant TEXT NOT NULL,
    table_name TEXT NOT NULL,
    key_name TEXT NOT NULL,
    key_type INTEGER NOT NULL DEFAULT 0,
    value_type INTEGER NOT NULL DEFAULT 0,
    key_value TEXT NOT NULL,
    expires INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, table_name, key_name)
);
";

#[async_trait]
impl HtableStore for SqliteStore {
    async fn load(&self, tenant: &str, table: &str) -> Result<Vec<HtableRow>, StoreError> {
        let db = self.db();
        let mut q = db.prepare(
            "SELECT key_name, key_type, value_type, key_value, expires FROM htable
             WHERE tenant = ?1 AND table_name = ?2 ORDER BY rowid",
        )?;
        let rows = q.query_map(params![tenant, table], |r| {
            Ok(HtableRow {
                key_name: r.get(0)?,
                key_type: r.get(1)?,
                value_type: r.get(2)?,
                key_value: r.get(3)?,
                expires: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn write(
        &self,
        tenant: &str,
        table: &str,
        changes: &HtableChanges,
    ) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        if changes.clear {
            tx.execute(
                "DELETE FROM htable WHERE tenant = ?1 AND table_name = ?2",
                params![tenant, table],
            )?;
        }
        for key in &changes.deletes {
            tx.execute(
                "DELETE FROM htable WHERE tenant = ?1 AND table_name = ?2 AND key_name = ?3",
                params![tenant, table, key],
            )?;
        }
        for row in &changes.upserts {
            tx.execute(
                "INSERT OR REPLACE INTO htable
                 (tenant, table_name, key_name, key_type, value_type, key_value, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    tenant,
                    table,
                    row.key_name,
                    row.key_type,
                    row.value_type,
                    row.key_value,
                    i64::try_from(row.expires).unwrap_or(i64::MAX),
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, value: &str, value_type: i32, expires: u64) -> HtableRow {
        HtableRow {
            key_name: key.into(),
            key_type: KEY_PLAIN,
            value_type,
            key_value: value.into(),
            expires,
        }
    }

    /// Rows are scoped by tenant and table; upserts replace by key,
    /// deletes and clears remove, and the file keeps them across opens.
    #[tokio::test]
    async fn rows_are_scoped_replaced_and_kept() {
        let dir = std::env::temp_dir().join(format!("kemibox-htable-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("k.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        let changes = HtableChanges {
            clear: false,
            upserts: vec![
                row("10.0.0.1", "1", VALUE_INT, 0),
                row("10.0.0.2", "x", VALUE_STR, 99),
            ],
            deletes: vec![],
        };
        store.write("a", "ipban", &changes).await.unwrap();
        store.write("b", "ipban", &changes).await.unwrap();
        store
            .write(
                "a",
                "ipban",
                &HtableChanges {
                    clear: false,
                    upserts: vec![row("10.0.0.1", "7", VALUE_INT, 0)],
                    deletes: vec!["10.0.0.2".into()],
                },
            )
            .await
            .unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.load("a", "ipban").await.unwrap(),
            vec![row("10.0.0.1", "7", VALUE_INT, 0)]
        );
        assert_eq!(store.load("b", "ipban").await.unwrap().len(), 2);
        assert!(store.load("a", "other").await.unwrap().is_empty());
        store
            .write(
                "b",
                "ipban",
                &HtableChanges {
                    clear: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(store.load("b", "ipban").await.unwrap().is_empty());
        assert_eq!(store.load("a", "ipban").await.unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
