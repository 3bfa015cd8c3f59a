//! The embedded default store: SQLite, one file, created on first use.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::subscriber::{Subscriber, SubscriberStore, subscriber};

/// Subscribers (and, with the registrar, locations) in one SQLite file.
pub struct SqliteStore {
    db: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subscriber (
    tenant TEXT NOT NULL,
    username TEXT NOT NULL,
    domain TEXT NOT NULL,
    ha1 TEXT NOT NULL,
    ha1_sha256 TEXT NOT NULL,
    PRIMARY KEY (tenant, username, domain)
);
";

impl SqliteStore {
    /// Open (creating the file, its directory and the tables when missing).
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Invalid(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let db = Connection::open(path)?;
        db.execute_batch(SCHEMA)?;
        Ok(SqliteStore { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Subscriber> {
    Ok(Subscriber {
        tenant: r.get(0)?,
        username: r.get(1)?,
        domain: r.get(2)?,
        ha1_md5: r.get(3)?,
        ha1_sha256: r.get(4)?,
    })
}

impl SubscriberStore for SqliteStore {
    fn add(
        &self,
        tenant: &str,
        username: &str,
        domain: &str,
        password: &str,
    ) -> Result<(), StoreError> {
        let s = subscriber(tenant, username, domain, password)?;
        self.db().execute(
            "INSERT OR REPLACE INTO subscriber (tenant, username, domain, ha1, ha1_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![s.tenant, s.username, s.domain, s.ha1_md5, s.ha1_sha256],
        )?;
        Ok(())
    }

    fn remove(&self, tenant: &str, username: &str, domain: &str) -> Result<bool, StoreError> {
        let n = self.db().execute(
            "DELETE FROM subscriber WHERE tenant = ?1 AND username = ?2 AND domain = ?3",
            params![tenant, username, domain],
        )?;
        Ok(n > 0)
    }

    fn get(
        &self,
        tenant: &str,
        username: &str,
        domain: &str,
    ) -> Result<Option<Subscriber>, StoreError> {
        Ok(self
            .db()
            .query_row(
                "SELECT tenant, username, domain, ha1, ha1_sha256 FROM subscriber
                 WHERE tenant = ?1 AND username = ?2 AND domain = ?3",
                params![tenant, username, domain],
                row,
            )
            .optional()?)
    }

    fn list(&self, tenant: &str) -> Result<Vec<Subscriber>, StoreError> {
        let db = self.db();
        let mut q = db.prepare(
            "SELECT tenant, username, domain, ha1, ha1_sha256 FROM subscriber
             WHERE tenant = ?1 ORDER BY domain, username",
        )?;
        let rows = q.query_map(params![tenant], row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha1_md5;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("kemibox-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("nested").join("kemibox.sqlite")
    }

    #[test]
    fn subscribers_persist_per_tenant() {
        let path = temp("persist");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.add("a", "alice", "example.com", "secret").unwrap();
            store.add("a", "bob", "example.com", "hunter2").unwrap();
            store.add("b", "alice", "example.com", "other").unwrap();
        }
        // Reopened: still there, each tenant sees its own.
        let store = SqliteStore::open(&path).unwrap();
        let a: Vec<String> = store
            .list("a")
            .unwrap()
            .into_iter()
            .map(|s| s.username)
            .collect();
        assert_eq!(a, ["alice", "bob"]);
        let alice_a = store.get("a", "alice", "example.com").unwrap().unwrap();
        let alice_b = store.get("b", "alice", "example.com").unwrap().unwrap();
        assert_eq!(alice_a.ha1_md5, ha1_md5("alice", "example.com", "secret"));
        assert_ne!(alice_a.ha1_md5, alice_b.ha1_md5);
        assert!(store.get("c", "alice", "example.com").unwrap().is_none());

        // The password itself is nowhere in the file.
        drop(store);
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"secret"));
        assert!(!bytes.windows(7).any(|w| w == b"hunter2"));

        let store = SqliteStore::open(&path).unwrap();
        assert!(store.remove("a", "alice", "example.com").unwrap());
        assert!(!store.remove("a", "alice", "example.com").unwrap());
        assert_eq!(store.list("a").unwrap().len(), 1);
        assert_eq!(store.list("b").unwrap().len(), 1);
    }

    #[test]
    fn replacing_a_password_changes_the_hashes() {
        let store = SqliteStore::open(&temp("replace")).unwrap();
        store.add("t", "carol", "example.org", "one").unwrap();
        let first = store.get("t", "carol", "example.org").unwrap().unwrap();
        store.add("t", "carol", "example.org", "two").unwrap();
        let second = store.get("t", "carol", "example.org").unwrap().unwrap();
        assert_ne!(first.ha1_md5, second.ha1_md5);
        assert_eq!(store.list("t").unwrap().len(), 1);
    }
}
