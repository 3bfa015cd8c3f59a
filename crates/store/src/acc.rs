//! Accounting records (Kamailio's acc module) and their writer.
//!
//! A record is one row of Kamailio's `acc` / `missed_calls` tables:
//! method, from_tag, to_tag, callid, sip_code, sip_reason and time, plus
//! the tenant's configured extra columns, plus a `tenant` column: tenants
//! share the tables and each row says whose it is.
//!
//! Records never wait for the database on the SIP path: [`AccWriter::submit`]
//! puts them on a bounded queue that one task drains into an
//! [`AccBackend`] (SQLite by default, PostgreSQL for several nodes). A
//! database that goes away keeps its records queued and retried with
//! backoff until it comes back; a queue that fills up during a long outage
//! drops new records, each counted and logged; a record the database keeps
//! refusing (a table an operator changed) is given up after
//! [`MAX_REFUSALS`] attempts, counted and logged. Nothing is lost silently.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kemibox_metrics::AccMetrics;
use rusqlite::Connection;
use tokio::sync::mpsc;
use tokio_postgres::{Client, Config, NoTls};

use crate::StoreError;

/// One accounting record, as the acc module made it when the transaction
/// completed (or the script asked): nothing here is read later.
#[derive(Debug, Clone, PartialEq)]
pub struct AccRecord {
    /// Whose record it is (the `tenant` column).
    pub tenant: String,
    /// The table it goes to (`acc`, `missed_calls`, or the script's).
    pub table: String,
    pub method: String,
    pub from_tag: String,
    pub to_tag: String,
    pub callid: String,
    /// The status code as text (`"200"`), as Kamailio stores it.
    pub sip_code: String,
    pub sip_reason: String,
    /// When it was accounted, in Unix seconds (UTC).
    pub time: u64,
    /// Extra columns (`db_extra`) and their values; `None` is SQL NULL.
    pub extra: Vec<(String, Option<String>)>,
}

/// The columns every accounting table has, in order, after `id` and
/// `tenant` (Kamailio's defaults).
const CORE_COLUMNS: [&str; 7] = [
    "method",
    "from_tag",
    "to_tag",
    "callid",
    "sip_code",
    "sip_reason",
    "time",
];

/// Whether `name` may be a table or column name: an SQL identifier that
/// needs no quoting rules beyond double quotes (letters, digits and `_`,
/// not starting with a digit, at most 63 bytes, PostgreSQL's limit).
pub fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 63
}

/// Whether `name` is a column the accounting tables have anyway (so it
/// cannot be an extra column).
pub fn is_core_column(name: &str) -> bool {
    name.eq_ignore_ascii_case("id")
        || name.eq_ignore_ascii_case("tenant")
        || CORE_COLUMNS.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// Where records are stored. Implementations create a table (and add an
/// extra column) the first time a record needs it, and write a batch all
/// or nothing, so a retried batch is never stored twice.
#[async_trait]
pub trait AccBackend: Send {
    /// Store `batch`. [`StoreError::Unavailable`] means "try again later"
    /// (the database is down); any other error is a refusal.
    async fn insert(&mut self, batch: &[AccRecord]) -> Result<(), StoreError>;

    /// The backend's name and address for log lines.
    fn describe(&self) -> String;
}

/// The names of `batch`'s tables and the extra columns each needs.
fn needed(batch: &[AccRecord]) -> HashMap<&str, Vec<&str>> {
    let mut needed: HashMap<&str, Vec<&str>> = HashMap::new();
    for r in batch {
        let columns = needed.entry(r.table.as_str()).or_default();
        for (name, _) in &r.extra {
            if !columns.contains(&name.as_str()) {
                columns.push(name);
            }
        }
    }
    needed
}

/// Refuse names that cannot be tables or columns (the acc module checks
/// them first; this keeps the SQL built here safe whoever calls).
fn check_names(batch: &[AccRecord]) -> Result<(), StoreError> {
    for r in batch {
        if !is_identifier(&r.table) {
            return Err(StoreError::Invalid(format!(
                "acc table name {:?} is not an SQL identifier",
                r.table
            )));
        }
        if let Some((bad, _)) = r
            .extra
            .iter()
            .find(|(c, _)| !is_identifier(c) || is_core_column(c))
        {
            return Err(StoreError::Invalid(format!(
                "acc extra column {bad:?} is not an SQL identifier or is a core column"
            )));
        }
    }
    Ok(())
}

/// `INSERT` of `record` into its table: tenant, the core columns, then
/// its extras, with `time` converted by `time_sql` (`?8` or `$8` in).
fn insert_sql(record: &AccRecord, placeholder: fn(usize) -> String, time_sql: &str) -> String {
    let mut columns = vec!["tenant".to_string()];
    columns.extend(CORE_COLUMNS.iter().map(|c| format!("\"{c}\"")));
    columns.extend(record.extra.iter().map(|(c, _)| format!("\"{c}\"")));
    let values: Vec<String> = (1..=columns.len())
        .map(|i| {
            if i == 8 {
                time_sql.replace("{}", &placeholder(i))
            } else {
                placeholder(i)
            }
        })
        .collect();
    format!(
        "INSERT INTO \"{}\" ({}) VALUES ({})",
        record.table,
        columns.join(", "),
        values.join(", ")
    )
}

/// Accounting tables in the proxy's SQLite file.
pub struct SqliteAcc {
    db: Arc<Mutex<Connection>>,
    path: String,
    /// Columns of the tables known to exist, by table.
    known: HashMap<String, HashSet<String>>,
}

impl SqliteAcc {
    /// Open (creating) the file at `path`; tables are created on first use.
    pub fn open(path: &Path) -> Result<SqliteAcc, StoreError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.busy_timeout(Duration::from_secs(2))?;
        Ok(SqliteAcc {
            db: Arc::new(Mutex::new(db)),
            path: path.display().to_string(),
            known: HashMap::new(),
        })
    }

    /// A private database in memory (tests).
    pub fn open_in_memory() -> Result<SqliteAcc, StoreError> {
        Ok(SqliteAcc {
            db: Arc::new(Mutex::new(Connection::open_in_memory()?)),
            path: ":memory:".into(),
            known: HashMap::new(),
        })
    }

    /// The connection, to read what was written (tests, tools).
    pub fn connection(&self) -> Arc<Mutex<Connection>> {
        self.db.clone()
    }
}

/// Create `table` when missing and add the `extra` columns it lacks;
/// `known` caches what exists.
fn sqlite_prepare(
    db: &Connection,
    known: &mut HashMap<String, HashSet<String>>,
    table: &str,
    extra: &[&str],
) -> rusqlite::Result<()> {
    if !known.contains_key(table) {
        db.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS \"{table}\" (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                tenant TEXT NOT NULL,
                method TEXT NOT NULL DEFAULT '',
                from_tag TEXT NOT NULL DEFAULT '',
                to_tag TEXT NOT NULL DEFAULT '',
                callid TEXT NOT NULL DEFAULT '',
                sip_code TEXT NOT NULL DEFAULT '',
                sip_reason TEXT NOT NULL DEFAULT '',
                time TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS \"{table}_callid\" ON \"{table}\" (tenant, callid);"
        ))?;
        let mut statement = db.prepare(&format!("PRAGMA table_info(\"{table}\")"))?;
        let columns = statement
            .query_map([], |row| row.get::<_, String>(1))?
            .collect::<rusqlite::Result<HashSet<String>>>()?;
        known.insert(table.to_string(), columns);
    }
    let columns = known.entry(table.to_string()).or_default();
    for column in extra {
        if !columns.contains(*column) {
            db.execute_batch(&format!(
                "ALTER TABLE \"{table}\" ADD COLUMN \"{column}\" TEXT"
            ))?;
            columns.insert(column.to_string());
        }
    }
    Ok(())
}

/// Errors of SQLite that pass (a locked or full database, a failing
/// disk): the writer retries them without limit.
fn sqlite_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | SystemIoFailure | DiskFull | CannotOpen) => {
            StoreError::Unavailable {
                backend: "sqlite",
                detail: e.to_string(),
            }
        }
        _ => StoreError::Database(e),
    }
}

#[async_trait]
impl AccBackend for SqliteAcc {
    async fn insert(&mut self, batch: &[AccRecord]) -> Result<(), StoreError> {
        check_names(batch)?;
        let db = self.db.clone();
        let mut known = std::mem::take(&mut self.known);
        let batch = batch.to_vec();
        let (known, result) = tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
            let result = (|| {
                let tx = db.transaction()?;
                for (table, extra) in needed(&batch) {
                    sqlite_prepare(&tx, &mut known, table, &extra)?;
                }
                for r in &batch {
                    let sql = insert_sql(r, |i| format!("?{i}"), "datetime({}, 'unixepoch')");
                    use rusqlite::types::Value;
                    let text = |s: &str| Value::Text(s.to_string());
                    let mut params = vec![
                        text(&r.tenant),
                        text(&r.method),
                        text(&r.from_tag),
                        text(&r.to_tag),
                        text(&r.callid),
                        text(&r.sip_code),
                        text(&r.sip_reason),
                        Value::Integer(i64::try_from(r.time).unwrap_or(i64::MAX)),
                    ];
                    params.extend(r.extra.iter().map(|(_, v)| match v {
                        Some(v) => text(v),
                        None => Value::Null,
                    }));
                    tx.execute(&sql, rusqlite::params_from_iter(params))?;
                }
                tx.commit()
            })();
            if result.is_err() {
                // A rolled-back CREATE or ALTER: look again next time.
                known.clear();
            }
            (known, result)
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("sqlite writer task: {e}")))?;
        self.known = known;
        result.map_err(sqlite_error)
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.path)
    }
}

/// How long one PostgreSQL batch may take, connecting included.
const PG_TIMEOUT: Duration = Duration::from_secs(5);

/// Accounting tables in PostgreSQL, shared by several nodes. The writer
/// task owns the connection; it is opened lazily and again after a loss.
pub struct PostgresAcc {
    config: Config,
    address: String,
    client: Option<Client>,
    known: HashMap<String, HashSet<String>>,
}

impl PostgresAcc {
    /// Check `url` and connect once, so a wrong address shows at start-up;
    /// later losses are survived by reconnecting.
    pub async fn connect(url: &str) -> Result<PostgresAcc, StoreError> {
        let mut config: Config = url.parse().map_err(|e: tokio_postgres::Error| {
            StoreError::Invalid(format!("PostgreSQL URL: {}", crate::postgres::describe(&e)))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(PG_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("kemibox-acc");
        }
        let mut acc = PostgresAcc {
            address: crate::postgres::address(&config),
            config,
            client: None,
            known: HashMap::new(),
        };
        if let Err(e) = acc.client().await {
            return Err(acc.unavailable(&e));
        }
        Ok(acc)
    }

    async fn client(&mut self) -> Result<&mut Client, tokio_postgres::Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = self.config.connect(NoTls).await?;
            let address = self.address.clone();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(backend = "postgresql", %address, error = %crate::postgres::describe(&e), "acc connection ended");
                }
            });
            self.known.clear();
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    fn unavailable(&self, e: &tokio_postgres::Error) -> StoreError {
        StoreError::Unavailable {
            backend: "postgresql",
            detail: format!("{}: {}", self.address, crate::postgres::describe(e)),
        }
    }

    async fn write(&mut self, batch: &[AccRecord]) -> Result<(), tokio_postgres::Error> {
        let mut known = std::mem::take(&mut self.known);
        let client = self.client().await?;
        let result = async {
            let tx = client.transaction().await?;
            for (table, extra) in needed(batch) {
                if !known.contains_key(table) {
                    tx.batch_execute(&format!(
                        "CREATE TABLE IF NOT EXISTS \"{table}\" (
                            id BIGSERIAL PRIMARY KEY,
                            tenant TEXT NOT NULL,
                            method VARCHAR(16) NOT NULL DEFAULT '',
                            from_tag VARCHAR(128) NOT NULL DEFAULT '',
                            to_tag VARCHAR(128) NOT NULL DEFAULT '',
                            callid VARCHAR(255) NOT NULL DEFAULT '',
                            sip_code VARCHAR(3) NOT NULL DEFAULT '',
                            sip_reason VARCHAR(128) NOT NULL DEFAULT '',
                            time TIMESTAMP WITHOUT TIME ZONE NOT NULL
                        );
                        CREATE INDEX IF NOT EXISTS \"{table}_callid\" ON \"{table}\" (tenant, callid);"
                    ))
                    .await?;
                    let rows = tx
                        .query(
                            "SELECT column_name::text FROM information_schema.columns
                             WHERE table_schema = current_schema() AND table_name = $1",
                            &[&table],
                        )
                        .await?;
                    known.insert(table.to_string(), rows.iter().map(|r| r.get(0)).collect());
                }
                let columns = known.entry(table.to_string()).or_default();
                for column in extra {
                    if !columns.contains(column) {
                        tx.batch_execute(&format!(
                            "ALTER TABLE \"{table}\" ADD COLUMN IF NOT EXISTS \"{column}\" TEXT"
                        ))
                        .await?;
                        columns.insert(column.to_string());
                    }
                }
            }
            for r in batch {
                let sql = insert_sql(
                    r,
                    |i| format!("${i}"),
                    "(to_timestamp({}::float8) AT TIME ZONE 'UTC')",
                );
                let time = r.time as f64;
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
                    &r.tenant,
                    &r.method,
                    &r.from_tag,
                    &r.to_tag,
                    &r.callid,
                    &r.sip_code,
                    &r.sip_reason,
                    &time,
                ];
                params.extend(
                    r.extra
                        .iter()
                        .map(|(_, v)| v as &(dyn tokio_postgres::types::ToSql + Sync)),
                );
                tx.execute(&sql, &params).await?;
            }
            tx.commit().await
        }
        .await;
        if result.is_ok() {
            self.known = known;
        }
        result
    }
}

/// Whether a PostgreSQL error is the database being away (retry without
/// limit) rather than a refusal of what was sent.
fn pg_transient(e: &tokio_postgres::Error, closed: bool) -> bool {
    let Some(db) = e.as_db_error() else {
        return true;
    };
    let class = &db.code().code()[..2];
    // 08 connection exception, 53 insufficient resources, 57 operator
    // intervention (shutdown), 40 rollback (serialization, deadlock).
    closed || matches!(class, "08" | "53" | "57" | "40")
}

#[async_trait]
impl AccBackend for PostgresAcc {
    async fn insert(&mut self, batch: &[AccRecord]) -> Result<(), StoreError> {
        check_names(batch)?;
        match tokio::time::timeout(PG_TIMEOUT, self.write(batch)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                let closed = self.client.as_ref().is_none_or(Client::is_closed);
                if pg_transient(&e, closed) {
                    self.client = None;
                    Err(self.unavailable(&e))
                } else {
                    Err(StoreError::Invalid(format!(
                        "{}: {}",
                        self.address,
                        crate::postgres::describe(&e)
                    )))
                }
            }
            Err(_) => {
                // Open but silent: a new connection next time.
                self.client = None;
                Err(StoreError::Unavailable {
                    backend: "postgresql",
                    detail: format!("{}: no answer within {PG_TIMEOUT:?}", self.address),
                })
            }
        }
    }

    fn describe(&self) -> String {
        format!("postgresql {}", self.address)
    }
}

/// Records per database transaction.
const BATCH: usize = 64;

/// Attempts at a batch the database refuses (not merely unreachable)
/// before it is given up: a refusal that does not pass within these is
/// the schema, not the moment.
pub const MAX_REFUSALS: u32 = 5;

/// The first wait before retrying, doubled per failure up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The records waiting when [`AccWriter::spawn`] is not told otherwise:
/// about 10 MB of typical records, a minute of a busy proxy's calls.
pub const DEFAULT_QUEUE: usize = 20_000;

/// The handle the acc module submits records to; cheap to clone, shared
/// by every tenant. The writing task runs as long as a handle exists.
#[derive(Clone)]
pub struct AccWriter {
    queue: mpsc::Sender<AccRecord>,
    metrics: Arc<AccMetrics>,
    /// Unix second of the last "dropped" log line, to log a long outage's
    /// drops once a second rather than once a record.
    last_drop_log: Arc<AtomicU64>,
    backend: Arc<str>,
}

impl std::fmt::Debug for AccWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccWriter")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl AccWriter {
    /// Start the task writing into `backend`, with room for `capacity`
    /// waiting records; counts go to `metrics`. Needs a Tokio runtime.
    pub fn spawn(
        backend: Box<dyn AccBackend>,
        capacity: usize,
        metrics: Arc<AccMetrics>,
    ) -> AccWriter {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let described: Arc<str> = backend.describe().into();
        tokio::spawn(drain(backend, receiver, metrics.clone()));
        AccWriter {
            queue,
            metrics,
            last_drop_log: Arc::new(AtomicU64::new(0)),
            backend: described,
        }
    }

    /// Queue `record` for writing, never waiting. False when the queue is
    /// full: the record is dropped, counted and logged.
    pub fn submit(&self, record: AccRecord) -> bool {
        match self.queue.try_send(record) {
            Ok(()) => {
                self.metrics.queued.add(1);
                true
            }
            Err(e) => {
                let total = self.metrics.dropped.inc();
                let record = match e {
                    mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
                };
                let now = crate::unix_now();
                if self.last_drop_log.swap(now, Ordering::Relaxed) != now {
                    tracing::error!(
                        tenant = %record.tenant,
                        table = %record.table,
                        callid = %record.callid,
                        method = %record.method,
                        backend = %self.backend,
                        dropped_total = total,
                        "acc record dropped: the write queue is full (database unavailable too long)"
                    );
                }
                false
            }
        }
    }

    /// The writer's counters.
    pub fn metrics(&self) -> &Arc<AccMetrics> {
        &self.metrics
    }

    /// Wait up to `limit` for the queue to empty (at shutdown); the
    /// number of records still waiting.
    pub async fn flush(&self, limit: Duration) -> u64 {
        let until = tokio::time::Instant::now() + limit;
        while self.metrics.queued.get() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.metrics.queued.get()
    }
}

/// The writing task: batches from the queue, each retried until stored
/// (or refused [`MAX_REFUSALS`] times).
async fn drain(
    mut backend: Box<dyn AccBackend>,
    mut receiver: mpsc::Receiver<AccRecord>,
    metrics: Arc<AccMetrics>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        let n = batch.len() as u64;
        let mut backoff = FIRST_BACKOFF;
        let mut refusals = 0;
        let mut failing = false;
        loop {
            match backend.insert(&batch).await {
                Ok(()) => {
                    metrics.written.add(n);
                    if failing {
                        tracing::info!(backend = %backend.describe(), "acc records written again");
                    }
                    break;
                }
                Err(e) => {
                    let transient = matches!(e, StoreError::Unavailable { .. });
                    if !transient {
                        refusals += 1;
                    }
                    if refusals >= MAX_REFUSALS {
                        metrics.failed.add(n);
                        for r in &batch {
                            tracing::error!(
                                tenant = %r.tenant,
                                table = %r.table,
                                callid = %r.callid,
                                method = %r.method,
                                sip_code = %r.sip_code,
                                error = %e,
                                "acc record given up: the database refused it {MAX_REFUSALS} times"
                            );
                        }
                        break;
                    }
                    metrics.retried.add(n);
                    if !failing {
                        tracing::warn!(
                            backend = %backend.describe(),
                            records = n,
                            error = %e,
                            "acc records not written: retrying (they stay queued)"
                        );
                        failing = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        metrics.queued.sub(n);
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tenant: &str, table: &str, callid: &str) -> AccRecord {
        AccRecord {
            tenant: tenant.into(),
            table: table.into(),
            method: "INVITE".into(),
            from_tag: "ft".into(),
            to_tag: "tt".into(),
            callid: callid.into(),
            sip_code: "200".into(),
            sip_reason: "OK".into(),
            time: 1_700_000_000,
            extra: Vec::new(),
        }
    }

    /// Fails its first `outage` attempts as unavailable (or refused),
    /// then stores into `stored`.
    struct Flaky {
        outage: u32,
        refuse: bool,
        attempts: Arc<AtomicU64>,
        stored: Arc<Mutex<Vec<AccRecord>>>,
    }

    #[async_trait]
    impl AccBackend for Flaky {
        async fn insert(&mut self, batch: &[AccRecord]) -> Result<(), StoreError> {
            let attempt = self.attempts.fetch_add(1, Ordering::Relaxed);
            if attempt < u64::from(self.outage) {
                return Err(if self.refuse {
                    StoreError::Invalid("no such column".into())
                } else {
                    StoreError::Unavailable {
                        backend: "test",
                        detail: "down".into(),
                    }
                });
            }
            self.stored.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }

        fn describe(&self) -> String {
            "test".into()
        }
    }

    fn flaky(outage: u32, refuse: bool) -> (Flaky, Arc<Mutex<Vec<AccRecord>>>, Arc<AtomicU64>) {
        let stored = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicU64::new(0));
        (
            Flaky {
                outage,
                refuse,
                attempts: attempts.clone(),
                stored: stored.clone(),
            },
            stored,
            attempts,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_keeps_records_queued_until_the_database_is_back() {
        let (backend, stored, attempts) = flaky(4, false);
        let metrics = Arc::new(AccMetrics::default());
        let writer = AccWriter::spawn(Box::new(backend), 100, metrics.clone());
        for i in 0..3 {
            assert!(writer.submit(record("t1", "acc", &format!("c{i}"))));
        }
        assert_eq!(writer.flush(Duration::from_secs(60)).await, 0);
        let stored = stored.lock().unwrap();
        let callids: Vec<&str> = stored.iter().map(|r| r.callid.as_str()).collect();
        assert_eq!(callids, ["c0", "c1", "c2"], "in order, each once");
        assert_eq!(attempts.load(Ordering::Relaxed), 5);
        assert_eq!(metrics.written.get(), 3);
        assert_eq!(metrics.retried.get(), 4 * 3);
        assert_eq!((metrics.dropped.get(), metrics.failed.get()), (0, 0));
        assert_eq!(metrics.queued.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_and_counts() {
        // Down for good: the first record is taken into the batch being
        // retried, two more fill the queue, the rest are dropped.
        let (backend, stored, _) = flaky(u32::MAX, false);
        let metrics = Arc::new(AccMetrics::default());
        let writer = AccWriter::spawn(Box::new(backend), 2, metrics.clone());
        assert!(writer.submit(record("t1", "acc", "first")));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(writer.submit(record("t1", "acc", "second")));
        assert!(writer.submit(record("t1", "acc", "third")));
        assert!(!writer.submit(record("t1", "acc", "fourth")));
        assert!(!writer.submit(record("t1", "acc", "fifth")));
        assert_eq!(metrics.dropped.get(), 2);
        assert_eq!(metrics.queued.get(), 3);
        assert!(stored.lock().unwrap().is_empty());
        assert!(metrics.retried.get() >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_batch_is_given_up_and_counted_then_writing_goes_on() {
        let (backend, stored, attempts) = flaky(MAX_REFUSALS, true);
        let metrics = Arc::new(AccMetrics::default());
        let writer = AccWriter::spawn(Box::new(backend), 10, metrics.clone());
        assert!(writer.submit(record("t1", "acc", "refused")));
        assert_eq!(writer.flush(Duration::from_secs(60)).await, 0);
        assert!(writer.submit(record("t1", "acc", "later")));
        assert_eq!(writer.flush(Duration::from_secs(60)).await, 0);
        assert_eq!(metrics.failed.get(), 1);
        assert_eq!(metrics.written.get(), 1);
        assert_eq!(
            attempts.load(Ordering::Relaxed),
            u64::from(MAX_REFUSALS) + 1
        );
        assert_eq!(stored.lock().unwrap()[0].callid, "later");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn sqlite_creates_tables_and_extra_columns_per_tenant() {
        let mut acc = SqliteAcc::open_in_memory().unwrap();
        let db = acc.connection();
        let mut a = record("t1", "acc", "c1");
        a.extra = vec![("src_ip".into(), Some("192.0.2.7".into()))];
        let mut b = record("t2", "acc", "c2");
        b.extra = vec![
            ("dst_user".into(), Some("bob".into())),
            ("src_ip".into(), None),
        ];
        let mut missed = record("t1", "missed_calls", "c3");
        missed.sip_code = "486".into();
        missed.sip_reason = "Busy Here".into();
        acc.insert(&[a, b]).await.unwrap();
        acc.insert(&[missed]).await.unwrap();
        let db = db.lock().unwrap();
        type Row = (String, String, Option<String>, Option<String>, String);
        let rows: Vec<Row> = db
            .prepare("SELECT tenant, callid, src_ip, dst_user, time FROM acc ORDER BY id")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (
                    "t1".into(),
                    "c1".into(),
                    Some("192.0.2.7".into()),
                    None,
                    "2023-11-14 22:13:20".into()
                ),
                (
                    "t2".into(),
                    "c2".into(),
                    None,
                    Some("bob".into()),
                    "2023-11-14 22:13:20".into()
                ),
            ]
        );
        let missed: (String, String, String) = db
            .query_row(
                "SELECT tenant, sip_code, sip_reason FROM missed_calls",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(missed, ("t1".into(), "486".into(), "Busy Here".into()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn bad_names_never_reach_sql() {
        let mut acc = SqliteAcc::open_in_memory().unwrap();
        let bad_table = record("t1", "acc; DROP TABLE acc", "c1");
        assert!(matches!(
            acc.insert(&[bad_table]).await,
            Err(StoreError::Invalid(_))
        ));
        let mut bad_column = record("t1", "acc", "c1");
        bad_column.extra = vec![("callid".into(), Some("x".into()))];
        assert!(matches!(
            acc.insert(&[bad_column]).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(is_identifier("missed_calls") && !is_identifier("1acc") && !is_identifier(""));
    }
}
