//! The embedded default store: SQLite, one file, created on first use.
//!
//! Locations are served from memory: every binding is loaded into a map
//! keyed by tenant, table and AOR when the file is opened, lookups never
//! touch the database, and every change is written through to SQLite
//! before it becomes visible, so a restarted proxy finds the
//! registrations it had.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::location::{Binding, Located, LocationStore};
use crate::subscriber::{Subscriber, SubscriberStore, subscriber};

/// Subscribers and locations in one SQLite file.
///
/// Usable from many tasks at once: the connection and the location cache
/// each sit behind a mutex, taken in that order (cache, then connection)
/// and never held across an await.
pub struct SqliteStore {
    db: Mutex<Connection>,
    /// Every binding in the `location` table plus those saved in memory
    /// only, by (tenant, table, AOR).
    cache: Mutex<HashMap<AorKey, Vec<Cached>>>,
}

/// (tenant, table, AOR): the bindings one `lookup` returns.
type AorKey = (String, String, String);

/// A binding in the cache, and whether the database has it too.
#[derive(Debug, Clone)]
struct Cached {
    binding: Binding,
    /// Saved with `save_in_memory` (Kamailio's save flag 1): not in the
    /// database, gone after a restart.
    memory_only: bool,
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
CREATE TABLE IF NOT EXISTS location (
    tenant TEXT NOT NULL,
    table_name TEXT NOT NULL,
    aor TEXT NOT NULL,
    contact TEXT NOT NULL,
    expires INTEGER NOT NULL,
    q INTEGER,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    path TEXT NOT NULL,
    received TEXT,
    socket TEXT,
    instance TEXT,
    reg_id INTEGER,
    user_agent TEXT,
    updated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS location_aor ON location (tenant, table_name, aor);
CREATE INDEX IF NOT EXISTS location_expires ON location (expires);
";

/// Path entries are header values (`<sip:p1.example.com;lr>`): after
/// unfolding they never contain a line feed, which therefore separates
/// them in the `path` column.
const PATH_SEPARATOR: char = '\n';

const LOCATION_COLUMNS: &str = "tenant, table_name, aor, contact, expires, q, call_id, cseq, \
     path, received, socket, instance, reg_id, user_agent, updated";

impl SqliteStore {
    /// Open (creating the file, its directory and the tables when missing)
    /// and load the stored locations into memory.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Invalid(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let db = Connection::open(path)?;
        // Write-ahead logging: a registration's commit appends to the log
        // instead of copying pages to a rollback journal, and `kemibox ul`
        // or `kemibox user` can read while the proxy writes. NORMAL sync
        // keeps every commit through a crash of the process (not of the
        // machine's power), at a fraction of FULL's cost.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.busy_timeout(std::time::Duration::from_secs(2))?;
        SqliteStore::with(db)
    }

    /// A private database in memory (tests, `kemibox route`).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        SqliteStore::with(Connection::open_in_memory()?)
    }

    fn with(db: Connection) -> Result<SqliteStore, StoreError> {
        db.execute_batch(SCHEMA)?;
        db.execute_batch(crate::address::SCHEMA)?;
        db.execute_batch(crate::htable::SQLITE_SCHEMA)?;
        db.execute_batch(crate::dispatcher::SCHEMA)?;
        let cache = load_locations(&db)?;
        Ok(SqliteStore {
            db: Mutex::new(db),
            cache: Mutex::new(cache),
        })
    }

    pub(crate) fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<AorKey, Vec<Cached>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace `binding`'s AOR entry with `binding` added or updated, in
    /// the database too unless `memory_only`. The cache changes only once
    /// the database did, so the two never disagree.
    fn put(
        &self,
        tenant: &str,
        table: &str,
        binding: &Binding,
        memory_only: bool,
    ) -> Result<(), StoreError> {
        let key = (tenant.to_string(), table.to_string(), binding.aor.clone());
        let mut cache = self.cache();
        let mut entries = cache.get(&key).cloned().unwrap_or_default();
        let new = Cached {
            binding: binding.clone(),
            memory_only,
        };
        match entries.iter_mut().find(|c| c.binding.same_as(binding)) {
            Some(old) => *old = new,
            None => entries.push(new),
        }
        if !memory_only {
            write_aor(&mut self.db(), &key, &entries)?;
        }
        cache.insert(key, entries);
        Ok(())
    }
}

/// Every row of the `location` table, grouped as the cache keeps them.
fn load_locations(db: &Connection) -> Result<HashMap<AorKey, Vec<Cached>>, StoreError> {
    let mut q = db.prepare(&format!(
        "SELECT {LOCATION_COLUMNS} FROM location ORDER BY rowid"
    ))?;
    let mut rows = q.query([])?;
    let mut cache: HashMap<AorKey, Vec<Cached>> = HashMap::new();
    while let Some(r) = rows.next()? {
        let key: AorKey = (r.get(0)?, r.get(1)?, r.get(2)?);
        let path: String = r.get(8)?;
        let binding = Binding {
            aor: key.2.clone(),
            contact: r.get(3)?,
            expires: unsigned(r.get(4)?),
            q: r.get::<_, Option<i64>>(5)?.map(|q| q.clamp(0, 1000) as u16),
            call_id: r.get(6)?,
            cseq: u32::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
            path: if path.is_empty() {
                Vec::new()
            } else {
                path.split(PATH_SEPARATOR).map(str::to_string).collect()
            },
            received: r.get(9)?,
            socket: r.get(10)?,
            instance: r.get(11)?,
            reg_id: r
                .get::<_, Option<i64>>(12)?
                .and_then(|v| u32::try_from(v).ok()),
            user_agent: r.get(13)?,
            updated: unsigned(r.get(14)?),
        };
        cache.entry(key).or_default().push(Cached {
            binding,
            memory_only: false,
        });
    }
    Ok(cache)
}

/// A stored Unix time or count (never negative when we wrote it).
fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// For SQLite's signed integers: our times are far below `i64::MAX`.
fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Make the database's rows for `key` exactly the persisted `entries`,
/// in one transaction (an AOR has a handful of bindings: rewriting them
/// all is cheap and cannot leave stale rows behind).
fn write_aor(db: &mut Connection, key: &AorKey, entries: &[Cached]) -> Result<(), StoreError> {
    let (tenant, table, aor) = key;
    let tx = db.transaction()?;
    tx.prepare_cached("DELETE FROM location WHERE tenant = ?1 AND table_name = ?2 AND aor = ?3")?
        .execute(params![tenant, table, aor])?;
    {
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO location ({LOCATION_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
        ))?;
        for b in entries
            .iter()
            .filter(|c| !c.memory_only)
            .map(|c| &c.binding)
        {
            insert.execute(params![
                tenant,
                table,
                aor,
                b.contact,
                signed(b.expires),
                b.q,
                b.call_id,
                b.cseq,
                b.path.join(&PATH_SEPARATOR.to_string()),
                b.received,
                b.socket,
                b.instance,
                b.reg_id,
                b.user_agent,
                signed(b.updated),
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
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

#[async_trait]
impl SubscriberStore for SqliteStore {
    async fn add(
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

    async fn remove(&self, tenant: &str, username: &str, domain: &str) -> Result<bool, StoreError> {
        let n = self.db().execute(
            "DELETE FROM subscriber WHERE tenant = ?1 AND username = ?2 AND domain = ?3",
            params![tenant, username, domain],
        )?;
        Ok(n > 0)
    }

    async fn get(
        &self,
        tenant: &str,
        username: &str,
        domain: &str,
    ) -> Result<Option<Subscriber>, StoreError> {
        // Every authenticated request asks: keep the statement compiled.
        Ok(self
            .db()
            .prepare_cached(
                "SELECT tenant, username, domain, ha1, ha1_sha256 FROM subscriber
                 WHERE tenant = ?1 AND username = ?2 AND domain = ?3",
            )?
            .query_row(params![tenant, username, domain], row)
            .optional()?)
    }

    async fn list(&self, tenant: &str) -> Result<Vec<Subscriber>, StoreError> {
        let db = self.db();
        let mut q = db.prepare(
            "SELECT tenant, username, domain, ha1, ha1_sha256 FROM subscriber
             WHERE tenant = ?1 ORDER BY domain, username",
        )?;
        let rows = q.query_map(params![tenant], row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[async_trait]
impl LocationStore for SqliteStore {
    async fn lookup(
        &self,
        tenant: &str,
        table: &str,
        aor: &str,
        now: u64,
    ) -> Result<Vec<Binding>, StoreError> {
        let key = (tenant.to_string(), table.to_string(), aor.to_string());
        let mut found: Vec<Binding> = self
            .cache()
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|c| c.binding.expires > now)
            .map(|c| c.binding.clone())
            .collect();
        found.sort_by(Binding::priority_cmp);
        Ok(found)
    }

    async fn save(&self, tenant: &str, table: &str, binding: &Binding) -> Result<(), StoreError> {
        self.put(tenant, table, binding, false)
    }

    async fn save_in_memory(
        &self,
        tenant: &str,
        table: &str,
        binding: &Binding,
    ) -> Result<(), StoreError> {
        self.put(tenant, table, binding, true)
    }

    async fn remove(
        &self,
        tenant: &str,
        table: &str,
        aor: &str,
        contact: &str,
    ) -> Result<bool, StoreError> {
        let key = (tenant.to_string(), table.to_string(), aor.to_string());
        let mut cache = self.cache();
        let Some(entries) = cache.get(&key) else {
            return Ok(false);
        };
        let kept: Vec<Cached> = entries
            .iter()
            .filter(|c| c.binding.contact != contact)
            .cloned()
            .collect();
        if kept.len() == entries.len() {
            return Ok(false);
        }
        write_aor(&mut self.db(), &key, &kept)?;
        if kept.is_empty() {
            cache.remove(&key);
        } else {
            cache.insert(key, kept);
        }
        Ok(true)
    }

    async fn remove_aor(&self, tenant: &str, table: &str, aor: &str) -> Result<usize, StoreError> {
        let key = (tenant.to_string(), table.to_string(), aor.to_string());
        let mut cache = self.cache();
        let Some(count) = cache.get(&key).map(Vec::len) else {
            return Ok(0);
        };
        write_aor(&mut self.db(), &key, &[])?;
        cache.remove(&key);
        Ok(count)
    }

    async fn dump(&self, tenant: Option<&str>, now: u64) -> Result<Vec<Located>, StoreError> {
        let cache = self.cache();
        let mut keys: Vec<&AorKey> = cache
            .keys()
            .filter(|(t, _, _)| tenant.is_none_or(|want| t == want))
            .collect();
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            let mut bindings: Vec<&Binding> = cache[key]
                .iter()
                .map(|c| &c.binding)
                .filter(|b| b.expires > now)
                .collect();
            bindings.sort_by(|a, b| a.priority_cmp(b));
            out.extend(bindings.into_iter().map(|b| Located {
                tenant: key.0.clone(),
                table: key.1.clone(),
                binding: b.clone(),
            }));
        }
        Ok(out)
    }

    async fn expire(&self, now: u64) -> Result<usize, StoreError> {
        let mut cache = self.cache();
        self.db().execute(
            "DELETE FROM location WHERE expires <= ?1",
            params![signed(now)],
        )?;
        let mut removed = 0;
        cache.retain(|_, entries| {
            let before = entries.len();
            entries.retain(|c| c.binding.expires > now);
            removed += before - entries.len();
            !entries.is_empty()
        });
        Ok(removed)
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

    #[tokio::test]
    async fn subscribers_persist_per_tenant() {
        let path = temp("persist");
        {
            let store = SqliteStore::open(&path).unwrap();
            store
                .add("a", "alice", "example.com", "secret")
                .await
                .unwrap();
            store
                .add("a", "bob", "example.com", "hunter2")
                .await
                .unwrap();
            store
                .add("b", "alice", "example.com", "other")
                .await
                .unwrap();
        }
        // Reopened: still there, each tenant sees its own.
        let store = SqliteStore::open(&path).unwrap();
        let a: Vec<String> = store
            .list("a")
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.username)
            .collect();
        assert_eq!(a, ["alice", "bob"]);
        let alice_a = store
            .get("a", "alice", "example.com")
            .await
            .unwrap()
            .unwrap();
        let alice_b = store
            .get("b", "alice", "example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(alice_a.ha1_md5, ha1_md5("alice", "example.com", "secret"));
        assert_ne!(alice_a.ha1_md5, alice_b.ha1_md5);
        assert!(
            store
                .get("c", "alice", "example.com")
                .await
                .unwrap()
                .is_none()
        );

        // The password itself is nowhere in the file.
        drop(store);
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"secret"));
        assert!(!bytes.windows(7).any(|w| w == b"hunter2"));

        let store = SqliteStore::open(&path).unwrap();
        let remove = |user| SubscriberStore::remove(&store, "a", user, "example.com");
        assert!(remove("alice").await.unwrap());
        assert!(!remove("alice").await.unwrap());
        assert_eq!(store.list("a").await.unwrap().len(), 1);
        assert_eq!(store.list("b").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn replacing_a_password_changes_the_hashes() {
        let store = SqliteStore::open(&temp("replace")).unwrap();
        store.add("t", "carol", "example.org", "one").await.unwrap();
        let first = store
            .get("t", "carol", "example.org")
            .await
            .unwrap()
            .unwrap();
        store.add("t", "carol", "example.org", "two").await.unwrap();
        let second = store
            .get("t", "carol", "example.org")
            .await
            .unwrap()
            .unwrap();
        assert_ne!(first.ha1_md5, second.ha1_md5);
        assert_eq!(store.list("t").await.unwrap().len(), 1);
    }

    /// A binding of `aor` at `contact`, saved at `updated`, for 3600 s.
    fn binding(aor: &str, contact: &str, q: Option<u16>, updated: u64) -> Binding {
        Binding {
            aor: aor.into(),
            contact: contact.into(),
            expires: updated + 3600,
            q,
            call_id: format!("call-{contact}"),
            cseq: 1,
            path: vec![],
            received: None,
            socket: Some("udp:192.0.2.1:5060".into()),
            instance: None,
            reg_id: None,
            user_agent: Some("test-ua".into()),
            updated,
        }
    }

    /// Every binding of every tenant, as `kemibox ul show --all` sees it.
    async fn everything(store: &SqliteStore, now: u64) -> Vec<Located> {
        store.dump(None, now).await.unwrap()
    }

    fn contacts(bindings: &[Binding]) -> Vec<&str> {
        bindings.iter().map(|b| b.contact.as_str()).collect()
    }

    #[tokio::test]
    async fn locations_persist_across_reopen() {
        let path = temp("locations");
        let mut full = binding(
            "alice@example.com",
            "sip:alice@10.0.0.2:5062",
            Some(500),
            1000,
        );
        full.path = vec!["<sip:edge1.example.com;lr>".into(), "<sip:edge2;lr>".into()];
        full.received = Some("sip:192.0.2.7:40000;transport=udp".into());
        full.instance = Some("\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"".into());
        full.reg_id = Some(1);
        full.cseq = 42;
        let before = {
            let store = SqliteStore::open(&path).unwrap();
            store.save("t1", "location", &full).await.unwrap();
            let other = binding("alice@example.com", "sip:alice@10.0.0.3", None, 1001);
            store.save("t1", "location", &other).await.unwrap();
            let elsewhere = binding("alice@example.com", "sip:alice@10.0.0.4", None, 1002);
            store.save("t2", "location", &elsewhere).await.unwrap();
            let volatile = binding("bob@example.com", "sip:bob@10.0.0.9", None, 1003);
            store
                .save_in_memory("t1", "location", &volatile)
                .await
                .unwrap();
            assert_eq!(everything(&store, 1100).await.len(), 4);
            everything(&store, 1100).await
        };
        let store = SqliteStore::open(&path).unwrap();
        let after = everything(&store, 1100).await;
        // Everything but the memory-only binding came back, field for field.
        let persisted: Vec<Located> = before
            .into_iter()
            .filter(|l| l.binding.aor != "bob@example.com")
            .collect();
        assert_eq!(after, persisted);
        let t1 = store
            .lookup("t1", "location", "alice@example.com", 1100)
            .await
            .unwrap();
        assert_eq!(t1.first(), Some(&full));
        assert_eq!(t1.len(), 2);
        // Tenants and tables are separate.
        let t2 = store
            .lookup("t2", "location", "alice@example.com", 1100)
            .await
            .unwrap();
        assert_eq!(contacts(&t2), ["sip:alice@10.0.0.4"]);
        let other_table = store
            .lookup("t1", "other", "alice@example.com", 1100)
            .await
            .unwrap();
        assert!(other_table.is_empty());
        assert!(
            store
                .lookup("t1", "location", "bob@example.com", 1100)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn lookups_order_by_q_then_recency_and_saves_replace_the_same_binding() {
        let store = SqliteStore::open_in_memory().unwrap();
        let aor = "carol@example.com";
        for b in [
            binding(aor, "sip:old@h", None, 1000),
            binding(aor, "sip:low@h", Some(100), 1001),
            binding(aor, "sip:new@h", None, 1002),
            binding(aor, "sip:high@h", Some(900), 999),
        ] {
            store.save("t", "location", &b).await.unwrap();
        }
        let found = store.lookup("t", "location", aor, 1500).await.unwrap();
        assert_eq!(
            contacts(&found),
            ["sip:high@h", "sip:low@h", "sip:new@h", "sip:old@h"]
        );
        // Same contact: replaced, not added.
        let mut refreshed = binding(aor, "sip:old@h", Some(1000), 1400);
        refreshed.cseq = 2;
        store.save("t", "location", &refreshed).await.unwrap();
        let found = store.lookup("t", "location", aor, 1500).await.unwrap();
        assert_eq!(found.len(), 4);
        assert_eq!(found[0], refreshed);
        // Same instance and reg-id: replaced even with a new Contact URI.
        let mut a = binding(aor, "sip:ua@10.0.0.1", None, 1000);
        a.instance = Some("\"<urn:uuid:1>\"".into());
        a.reg_id = Some(1);
        let mut b = a.clone();
        b.contact = "sip:ua@10.0.0.2".into();
        store.save("t", "gruu", &a).await.unwrap();
        store.save("t", "gruu", &b).await.unwrap();
        let found = store.lookup("t", "gruu", aor, 1500).await.unwrap();
        assert_eq!(contacts(&found), ["sip:ua@10.0.0.2"]);
    }

    /// A save the database refuses is an error, and the binding is not
    /// served from memory either: what was not written would be gone
    /// after a restart.
    #[tokio::test]
    async fn a_refused_write_changes_nothing() {
        let path = temp("refused");
        let store = SqliteStore::open(&path).unwrap();
        let aor = "erin@example.com";
        store
            .save("t", "location", &binding(aor, "sip:a@h", None, 1000))
            .await
            .unwrap();
        // Another writer makes every new row fail from now on.
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON location
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        let refused = store
            .save("t", "location", &binding(aor, "sip:b@h", None, 1000))
            .await;
        assert!(
            matches!(refused, Err(StoreError::Database(_))),
            "{refused:?}"
        );
        let served = store.lookup("t", "location", aor, 1000).await.unwrap();
        assert_eq!(contacts(&served), ["sip:a@h"]);
    }

    #[tokio::test]
    async fn cache_and_database_agree_after_every_change() {
        let path = temp("consistency");
        let store = SqliteStore::open(&path).unwrap();
        let aor = "dave@example.com";
        let check = |store: &SqliteStore| {
            // What a restart would load is what the cache serves.
            let reopened = SqliteStore::open(&path).unwrap();
            let mem = store.cache().clone();
            let db = reopened.cache().clone();
            let flat = |m: &HashMap<AorKey, Vec<Cached>>| {
                let mut v: Vec<(AorKey, String, u64)> = m
                    .iter()
                    .flat_map(|(k, e)| {
                        e.iter()
                            .map(|c| (k.clone(), c.binding.contact.clone(), c.binding.expires))
                    })
                    .collect();
                v.sort();
                v
            };
            assert_eq!(flat(&mem), flat(&db));
        };
        store
            .save("t", "location", &binding(aor, "sip:a@h", None, 1000))
            .await
            .unwrap();
        store
            .save("t", "location", &binding(aor, "sip:b@h", None, 1000))
            .await
            .unwrap();
        check(&store);
        store
            .save("t", "location", &binding(aor, "sip:a@h", Some(300), 1200))
            .await
            .unwrap();
        check(&store);
        let remove = |contact| LocationStore::remove(&store, "t", "location", aor, contact);
        assert!(remove("sip:a@h").await.unwrap());
        assert!(!remove("sip:a@h").await.unwrap());
        check(&store);
        store
            .save(
                "t",
                "location",
                &binding("eve@example.com", "sip:e@h", None, 1000),
            )
            .await
            .unwrap();
        assert_eq!(store.remove_aor("t", "location", aor).await.unwrap(), 1);
        assert_eq!(store.remove_aor("t", "location", aor).await.unwrap(), 0);
        check(&store);
        let rows: i64 = store
            .db()
            .query_row("SELECT count(*) FROM location", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[tokio::test]
    async fn expire_drops_bindings_from_memory_and_file() {
        let path = temp("expire");
        let store = SqliteStore::open(&path).unwrap();
        let mut short = binding("frank@example.com", "sip:short@h", None, 1000);
        short.expires = 1060;
        let long = binding("frank@example.com", "sip:long@h", None, 1000);
        let mut volatile = binding("gina@example.com", "sip:g@h", None, 1000);
        volatile.expires = 1030;
        store.save("t", "location", &short).await.unwrap();
        store.save("t", "location", &long).await.unwrap();
        store
            .save_in_memory("t", "location", &volatile)
            .await
            .unwrap();
        // Expired bindings are never looked up, even before `expire` runs.
        let at = |now| store.lookup("t", "location", "frank@example.com", now);
        assert_eq!(at(1059).await.unwrap().len(), 2);
        assert_eq!(at(1060).await.unwrap().len(), 1);
        assert_eq!(everything(&store, 1060).await.len(), 1);
        assert_eq!(store.expire(1059).await.unwrap(), 1);
        assert_eq!(store.expire(1060).await.unwrap(), 1);
        assert_eq!(store.expire(1060).await.unwrap(), 0);
        assert_eq!(store.cache().len(), 1);
        drop(store);
        let reopened = SqliteStore::open(&path).unwrap();
        let left = everything(&reopened, 0).await;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].binding, long);
        assert_eq!(left[0].tenant, "t");
        assert_eq!(left[0].table, "location");
    }
}
