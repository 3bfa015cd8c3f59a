//! The dispatcher module's destination table (Kamailio's `dispatcher`
//! table, read when `[dispatcher] db = true`): one row a destination with
//! Kamailio's columns (`id`, `setid`, `destination`, `flags`, `priority`,
//! `attrs`, `description`), per tenant, in SQLite or (shared by several
//! nodes) in PostgreSQL beside the subscribers. The proxy reads a tenant's
//! rows at start and on `ds_reload` / `dispatcher.reload`;
//! `kemibox dispatcher add|rm|list` manages them.

use async_trait::async_trait;
use rusqlite::params;

use crate::{PostgresSubscribers, SqliteStore, StoreError};

/// One row of the dispatcher table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherRow {
    /// The row's number, given by the database; rows are read in its
    /// order (the order of a list file's lines).
    pub id: i64,
    pub setid: i32,
    /// The destination's SIP URI.
    pub destination: String,
    pub flags: i32,
    pub priority: i32,
    /// `name=value;...`, as in a list file.
    pub attrs: String,
    pub description: String,
}

/// Where a tenant's dispatcher destinations are kept.
#[async_trait]
pub trait DispatcherStore: Send + Sync {
    /// Add `row` (its `id` is ignored): the id it was given.
    async fn add_destination(&self, tenant: &str, row: &DispatcherRow) -> Result<i64, StoreError>;
    /// Remove destination `destination` of set `setid`: how many rows.
    async fn remove_destination(
        &self,
        tenant: &str,
        setid: i32,
        destination: &str,
    ) -> Result<usize, StoreError>;
    /// The tenant's rows, by id.
    async fn destinations(&self, tenant: &str) -> Result<Vec<DispatcherRow>, StoreError>;
}

/// The table's definition, `id` declared as `$id` (each database numbers
/// rows its own way; the other columns are the same in both).
macro_rules! schema {
    ($id:literal) => {
        concat!(
            "
CREATE TABLE IF NOT EXISTS dispatcher (
    id ",
            $id,
            ",
    tenant TEXT NOT NULL,
    setid INTEGER NOT NULL DEFAULT 0,
    destination TEXT NOT NULL DEFAULT '',
    flags INTEGER NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL DEFAULT 0,
    attrs TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS dispatcher_tenant ON dispatcher (tenant, setid);
"
        )
    };
}

/// The table, created with the others when the SQLite file is opened.
pub(crate) const SCHEMA: &str = schema!("INTEGER PRIMARY KEY AUTOINCREMENT");

/// The same table in PostgreSQL (created with the subscriber table).
pub(crate) const POSTGRES_SCHEMA: &str = schema!("BIGSERIAL PRIMARY KEY");

const COLUMNS: &str = "id, setid, destination, flags, priority, attrs, description";

#[async_trait]
impl DispatcherStore for PostgresSubscribers {
    async fn add_destination(&self, tenant: &str, row: &DispatcherRow) -> Result<i64, StoreError> {
        let inserted = self
            .query_one(
                "INSERT INTO dispatcher
                         (tenant, setid, destination, flags, priority, attrs, description)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &tenant,
                    &row.setid,
                    &row.destination,
                    &row.flags,
                    &row.priority,
                    &row.attrs,
                    &row.description,
                ],
            )
            .await?;
        Ok(inserted.get(0))
    }

    async fn remove_destination(
        &self,
        tenant: &str,
        setid: i32,
        destination: &str,
    ) -> Result<usize, StoreError> {
        let removed = self
            .execute(
                "DELETE FROM dispatcher
                         WHERE tenant = $1 AND setid = $2 AND destination = $3",
                &[&tenant, &setid, &destination],
            )
            .await?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    async fn destinations(&self, tenant: &str) -> Result<Vec<DispatcherRow>, StoreError> {
        let rows = self
            .query(
                &format!("SELECT {COLUMNS} FROM dispatcher WHERE tenant = $1 ORDER BY id"),
                &[&tenant],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| DispatcherRow {
                id: r.get(0),
                setid: r.get(1),
                destination: r.get(2),
                flags: r.get(3),
                priority: r.get(4),
                attrs: r.get(5),
                description: r.get(6),
            })
            .collect())
    }
}

#[async_trait]
impl DispatcherStore for SqliteStore {
    async fn add_destination(&self, tenant: &str, row: &DispatcherRow) -> Result<i64, StoreError> {
        let db = self.db();
        db.execute(
            "INSERT INTO dispatcher (tenant, setid, destination, flags, priority, attrs, description) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                tenant,
                row.setid,
                row.destination,
                row.flags,
                row.priority,
                row.attrs,
                row.description
            ],
        )?;
        Ok(db.last_insert_rowid())
    }

    async fn remove_destination(
        &self,
        tenant: &str,
        setid: i32,
        destination: &str,
    ) -> Result<usize, StoreError> {
        Ok(self.db().execute(
            "DELETE FROM dispatcher WHERE tenant = ?1 AND setid = ?2 AND destination = ?3",
            params![tenant, setid, destination],
        )?)
    }

    async fn destinations(&self, tenant: &str) -> Result<Vec<DispatcherRow>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {COLUMNS} FROM dispatcher WHERE tenant = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map(params![tenant], |r| {
            Ok(DispatcherRow {
                id: r.get(0)?,
                setid: r.get(1)?,
                destination: r.get(2)?,
                flags: r.get(3)?,
                priority: r.get(4)?,
                attrs: r.get(5)?,
                description: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(setid: i32, destination: &str, flags: i32, attrs: &str) -> DispatcherRow {
        DispatcherRow {
            id: 0,
            setid,
            destination: destination.into(),
            flags,
            priority: 0,
            attrs: attrs.into(),
            description: String::new(),
        }
    }

    /// Rows are per tenant, in the order added, kept across opens, and
    /// removed by set and destination.
    #[tokio::test]
    async fn rows_are_per_tenant_ordered_and_persist() {
        let dir = std::env::temp_dir().join(format!("kemibox-ds-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("kemibox.sqlite");
        {
            let store = SqliteStore::open(&path).unwrap();
            let first = store
                .add_destination("a", &row(2, "sip:10.0.0.2:5060", 8, "weight=50"))
                .await
                .unwrap();
            let second = store
                .add_destination("a", &row(1, "sip:10.0.0.1:5060", 0, ""))
                .await
                .unwrap();
            assert!(second > first);
            store
                .add_destination("b", &row(1, "sip:10.9.9.9", 0, ""))
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let rows = store.destinations("a").await.unwrap();
        let got: Vec<(i32, &str, i32, &str)> = (rows.iter())
            .map(|r| (r.setid, r.destination.as_str(), r.flags, r.attrs.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "sip:10.0.0.2:5060", 8, "weight=50"),
                (1, "sip:10.0.0.1:5060", 0, "")
            ],
            "in the order added, whatever the set"
        );
        assert_eq!(
            store
                .remove_destination("b", 2, "sip:10.0.0.2:5060")
                .await
                .unwrap(),
            0,
            "tenant b cannot remove tenant a's row"
        );
        assert_eq!(
            store
                .remove_destination("a", 1, "sip:10.0.0.2:5060")
                .await
                .unwrap(),
            0,
            "another set"
        );
        assert_eq!(
            store
                .remove_destination("a", 2, "sip:10.0.0.2:5060")
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.destinations("a").await.unwrap().len(), 1);
        assert_eq!(store.destinations("b").await.unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
