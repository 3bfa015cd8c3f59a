//! Rows of htable tables (Kamailio's htable `dbtable`): what a table
//! declared with `dbtable` loads at start and, with `dbmode = 1`, writes
//! back, so its items survive a restart.
//!
//! The columns are Kamailio's (`key_name`, `key_type`, `value_type`,
//! `key_value`, `expires`), scoped by tenant and by the `dbtable` name, so
//! tenants sharing a database never load each other's rows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::StoreError;
use crate::postgres::{address, describe};
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

/// Where htable tables with a `dbtable` keep their rows: the SQLite file
/// ([`SqliteStore`]) or PostgreSQL ([`PostgresHtable`], several nodes).
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

/// The table behind [`HtableStore`] in PostgreSQL: SQLite's, plus `id`,
/// the order rows were first written in (SQLite's rowid).
const POSTGRES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS htable (
    id BIGSERIAL,
    tenant TEXT NOT NULL,
    table_name TEXT NOT NULL,
    key_name TEXT NOT NULL,
    key_type INTEGER NOT NULL DEFAULT 0,
    value_type INTEGER NOT NULL DEFAULT 0,
    key_value TEXT NOT NULL,
    expires BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, table_name, key_name)
);
";

/// How long a load or a write may take, reconnecting included: they run
/// at start, on `htable.reload` and in the background write-back, never
/// on a message's path, and a write may carry a whole table.
const PG_TIMEOUT: Duration = Duration::from_secs(5);

const PG_BACKEND: &str = "postgresql";

/// htable rows in PostgreSQL (`[database] postgres`), so that nodes
/// sharing the database load the same tables. Its own connection (a
/// write is a transaction), opened again by the first call after a loss;
/// every call is bounded by [`PG_TIMEOUT`].
pub struct PostgresHtable {
    config: Config,
    /// `host:port/dbname` for logs and errors: never the password.
    address: String,
    client: tokio::sync::Mutex<Option<Client>>,
    /// Whether the last call failed, to log losses and recoveries once.
    down: AtomicBool,
}

impl PostgresHtable {
    /// Connect to `url` and create the `htable` table when missing; fails
    /// when the database cannot be reached now.
    pub async fn connect(url: &str) -> Result<PostgresHtable, StoreError> {
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("PostgreSQL URL: {}", describe(&e))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(PG_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("kemibox");
        }
        let store = PostgresHtable {
            address: address(&config),
            config,
            client: tokio::sync::Mutex::new(None),
            down: AtomicBool::new(false),
        };
        store.run(async |_| Ok(())).await?;
        Ok(store)
    }

    async fn open(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        let address = self.address.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(backend = PG_BACKEND, %address, error = describe(&e), "htable connection lost");
            }
        });
        // Checked first: CREATE ... IF NOT EXISTS needs the CREATE
        // privilege even when the table exists.
        let exists: bool = client
            .query_one("SELECT to_regclass('htable') IS NOT NULL", &[])
            .await?
            .get(0);
        if !exists {
            match client.batch_execute(POSTGRES_SCHEMA).await {
                // Another node created it at the same moment.
                Err(e)
                    if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                        || e.code() == Some(&SqlState::DUPLICATE_TABLE) => {}
                other => other?,
            }
        }
        Ok(client)
    }

    /// `op` on the connection (opened when there is none or it closed),
    /// bounded by [`PG_TIMEOUT`]; a failure drops the connection, is
    /// [`StoreError::Unavailable`], and is logged once until a call
    /// succeeds again.
    async fn run<T>(
        &self,
        op: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut slot = self.client.lock().await;
        // Taken out while in use: put back only after a success, so a
        // failure or a timeout leaves a new connection to open.
        let attempt = async {
            let mut client = match slot.take() {
                Some(client) if !client.is_closed() => client,
                _ => self.open().await?,
            };
            let value = op(&mut client).await?;
            *slot = Some(client);
            Ok(value)
        };
        let detail = match tokio::time::timeout(PG_TIMEOUT, attempt).await {
            Ok(Ok(value)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(backend = PG_BACKEND, address = %self.address, "htable rows available again");
                }
                return Ok(value);
            }
            Ok(Err(e)) => describe(&e),
            Err(_) => format!("no answer within {PG_TIMEOUT:?}"),
        };
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(backend = PG_BACKEND, address = %self.address, error = %detail, "htable rows unavailable");
        }
        Err(StoreError::Unavailable {
            backend: PG_BACKEND,
            detail: format!("{}: {detail}", self.address),
        })
    }
}

#[async_trait]
impl HtableStore for PostgresHtable {
    async fn load(&self, tenant: &str, table: &str) -> Result<Vec<HtableRow>, StoreError> {
        self.run(async |client| {
            let rows = client
                .query(
                    "SELECT key_name, key_type, value_type, key_value, expires FROM htable
                     WHERE tenant = $1 AND table_name = $2 ORDER BY id",
                    &[&tenant, &table],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(HtableRow {
                        key_name: r.try_get(0)?,
                        key_type: r.try_get(1)?,
                        value_type: r.try_get(2)?,
                        key_value: r.try_get(3)?,
                        expires: u64::try_from(r.try_get::<_, i64>(4)?).unwrap_or(0),
                    })
                })
                .collect()
        })
        .await
    }

    async fn write(
        &self,
        tenant: &str,
        table: &str,
        changes: &HtableChanges,
    ) -> Result<(), StoreError> {
        self.run(async |client| {
            let tx = client.transaction().await?;
            if changes.clear {
                tx.execute(
                    "DELETE FROM htable WHERE tenant = $1 AND table_name = $2",
                    &[&tenant, &table],
                )
                .await?;
            }
            if !changes.deletes.is_empty() {
                tx.execute(
                    "DELETE FROM htable WHERE tenant = $1 AND table_name = $2
                     AND key_name = ANY($3)",
                    &[&tenant, &table, &changes.deletes],
                )
                .await?;
            }
            let upsert = tx
                .prepare(
                    "INSERT INTO htable
                     (tenant, table_name, key_name, key_type, value_type, key_value, expires)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (tenant, table_name, key_name) DO UPDATE SET
                     key_type = EXCLUDED.key_type, value_type = EXCLUDED.value_type,
                     key_value = EXCLUDED.key_value, expires = EXCLUDED.expires",
                )
                .await?;
            for row in &changes.upserts {
                let expires = i64::try_from(row.expires).unwrap_or(i64::MAX);
                tx.execute(
                    &upsert,
                    &[
                        &tenant,
                        &table,
                        &row.key_name,
                        &row.key_type,
                        &row.value_type,
                        &row.key_value,
                        &expires,
                    ],
                )
                .await?;
            }
            tx.commit().await
        })
        .await
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
