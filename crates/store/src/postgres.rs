//! Subscribers in PostgreSQL, shared by several kemibox processes.
//!
//! One client connection per store; concurrent calls pipeline on it. The
//! connection is opened again lazily, by the first call after it closed,
//! and every call is bounded by [`OP_TIMEOUT`]: a database that is down or
//! hangs yields [`StoreError::Unavailable`] quickly, never a stuck call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use crate::StoreError;
use crate::subscriber::{Subscriber, SubscriberStore, subscriber};

/// How long one call may take, reconnecting included: authentication
/// waits on it, and a SIP transaction retransmits after 500 ms.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

const BACKEND: &str = "postgresql";

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

const COLUMNS: &str = "tenant, username, domain, ha1, ha1_sha256";

/// Subscribers in a PostgreSQL table `subscriber` (and the permissions
/// address table, `address`), created when missing, so that every kemibox
/// node authenticates against the same users and trusts the same peers.
pub struct PostgresSubscribers {
    config: Config,
    /// `host:port/dbname` for logs and errors: never the password.
    address: String,
    /// The open connection, if any; `None` or closed means reconnect.
    session: Mutex<Option<Arc<Session>>>,
    /// Held while reconnecting, so concurrent calls open one connection.
    connecting: tokio::sync::Mutex<()>,
    /// Whether the last call failed, to log losses and recoveries once.
    down: AtomicBool,
}

/// One connection with its statements prepared.
pub(crate) struct Session {
    pub(crate) client: Client,
    upsert: Statement,
    delete: Statement,
    get: Statement,
    list: Statement,
}

impl PostgresSubscribers {
    /// Connect to `url` (`postgresql://user:password@host:port/dbname` or
    /// `host=... user=...`) and create the table when missing. Fails when
    /// the database cannot be reached now, so a wrong address shows at
    /// start-up; later losses are survived by reconnecting. TLS is not
    /// supported: `sslmode=require` fails.
    pub async fn connect(url: &str) -> Result<PostgresSubscribers, StoreError> {
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("PostgreSQL URL: {}", describe(&e))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(OP_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("kemibox");
        }
        let store = PostgresSubscribers {
            address: address(&config),
            config,
            session: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            down: AtomicBool::new(false),
        };
        store.bounded(store.session()).await?;
        tracing::info!(backend = BACKEND, address = %store.address, "connected");
        Ok(store)
    }

    /// The open session, reconnecting when there is none or it closed.
    pub(crate) async fn session(&self) -> Result<Arc<Session>, tokio_postgres::Error> {
        if let Some(open) = self.open_session() {
            return Ok(open);
        }
        let _gate = self.connecting.lock().await;
        // Another call may have reconnected while this one waited.
        if let Some(open) = self.open_session() {
            return Ok(open);
        }
        let session = Arc::new(Session::open(&self.config, &self.address).await?);
        *self.slot() = Some(session.clone());
        Ok(session)
    }

    fn open_session(&self) -> Option<Arc<Session>> {
        self.slot()
            .as_ref()
            .filter(|s| !s.client.is_closed())
            .cloned()
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<Session>>> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `sql` with `params` on the open session, [`bounded`](Self::bounded):
    /// how many rows it changed.
    pub(crate) async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.bounded(async { self.session().await?.client.execute(sql, params).await })
            .await
    }

    /// [`execute`](Self::execute) for a query: its rows.
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.bounded(async { self.session().await?.client.query(sql, params).await })
            .await
    }

    /// [`execute`](Self::execute) for a query of exactly one row.
    pub(crate) async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        self.bounded(async { self.session().await?.client.query_one(sql, params).await })
            .await
    }

    /// Run `op` within [`OP_TIMEOUT`], turning failures into
    /// [`StoreError::Unavailable`] and logging when the database goes
    /// away and comes back.
    pub(crate) async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let detail = match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(Ok(value)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(backend = BACKEND, address = %self.address, "available again");
                }
                return Ok(value);
            }
            Ok(Err(e)) => describe(&e),
            Err(_) => {
                // The connection is open but nothing answers (a hung
                // server, a dropped network): open a new one next time.
                self.slot().take();
                format!("no answer within {OP_TIMEOUT:?}")
            }
        };
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(backend = BACKEND, address = %self.address, error = %detail, "unavailable");
        }
        Err(StoreError::Unavailable {
            backend: BACKEND,
            detail: format!("{}: {detail}", self.address),
        })
    }
}

impl Session {
    /// Connect, create the table when missing and prepare the statements.
    async fn open(config: &Config, address: &str) -> Result<Session, tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        let address = address.to_string();
        tokio::spawn(async move {
            match connection.await {
                Err(e) => {
                    tracing::warn!(backend = BACKEND, %address, error = describe(&e), "connection lost")
                }
                Ok(()) => tracing::debug!(backend = BACKEND, %address, "connection closed"),
            }
        });
        for (table, schema) in [
            ("subscriber", SCHEMA),
            ("address", crate::address::POSTGRES_SCHEMA),
            ("dispatcher", crate::dispatcher::POSTGRES_SCHEMA),
        ] {
            // Checked first: CREATE ... IF NOT EXISTS needs the CREATE
            // privilege even when the table exists.
            let exists: bool = client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
                .await?
                .get(0);
            if !exists {
                match client.batch_execute(schema).await {
                    // Another node created it at the same moment.
                    Err(e)
                        if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                            || e.code() == Some(&SqlState::DUPLICATE_TABLE) => {}
                    other => other?,
                }
            }
        }
        Ok(Session {
            upsert: client
                .prepare(&format!(
                    "INSERT INTO subscriber ({COLUMNS}) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (tenant, username, domain)
                     DO UPDATE SET ha1 = EXCLUDED.ha1, ha1_sha256 = EXCLUDED.ha1_sha256"
                ))
                .await?,
            delete: client
                .prepare(
                    "DELETE FROM subscriber WHERE tenant = $1 AND username = $2 AND domain = $3",
                )
                .await?,
            get: client
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM subscriber
                     WHERE tenant = $1 AND username = $2 AND domain = $3"
                ))
                .await?,
            // Byte order, as SQLite sorts, whatever the database's locale.
            list: client
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM subscriber WHERE tenant = $1
                     ORDER BY domain COLLATE \"C\", username COLLATE \"C\""
                ))
                .await?,
            client,
        })
    }
}

/// `e` with its causes: tokio-postgres shows only the outermost ("db
/// error", "error connecting to server"), not what went wrong.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `host:port/dbname` of `config`, for logs: the URL without credentials.
pub(crate) fn address(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(dir) => dir.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let ports = if ports.is_empty() {
        "5432".to_string()
    } else {
        ports.join(",")
    };
    let db = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("{}:{ports}/{db}", hosts.join(","))
}

fn row(r: &Row) -> Result<Subscriber, tokio_postgres::Error> {
    Ok(Subscriber {
        tenant: r.try_get(0)?,
        username: r.try_get(1)?,
        domain: r.try_get(2)?,
        ha1_md5: r.try_get(3)?,
        ha1_sha256: r.try_get(4)?,
    })
}

#[async_trait]
impl SubscriberStore for PostgresSubscribers {
    async fn add(
        &self,
        tenant: &str,
        username: &str,
        domain: &str,
        password: &str,
    ) -> Result<(), StoreError> {
        let s = subscriber(tenant, username, domain, password)?;
        self.bounded(async {
            let db = self.session().await?;
            db.client
                .execute(
                    &db.upsert,
                    &[&s.tenant, &s.username, &s.domain, &s.ha1_md5, &s.ha1_sha256],
                )
                .await
        })
        .await?;
        Ok(())
    }

    async fn remove(&self, tenant: &str, username: &str, domain: &str) -> Result<bool, StoreError> {
        let n = self
            .bounded(async {
                let db = self.session().await?;
                db.client
                    .execute(&db.delete, &[&tenant, &username, &domain])
                    .await
            })
            .await?;
        Ok(n > 0)
    }

    async fn get(
        &self,
        tenant: &str,
        username: &str,
        domain: &str,
    ) -> Result<Option<Subscriber>, StoreError> {
        self.bounded(async {
            let db = self.session().await?;
            db.client
                .query_opt(&db.get, &[&tenant, &username, &domain])
                .await?
                .as_ref()
                .map(row)
                .transpose()
        })
        .await
    }

    async fn list(&self, tenant: &str) -> Result<Vec<Subscriber>, StoreError> {
        self.bounded(async {
            let db = self.session().await?;
            db.client
                .query(&db.list, &[&tenant])
                .await?
                .iter()
                .map(row)
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_leaves_the_password_out() {
        let config: Config = "postgresql://kemi:s3cret@db.example:6543/kemibox"
            .parse()
            .unwrap();
        assert_eq!(address(&config), "db.example:6543/kemibox");
        let config: Config = "host=/run/postgresql user=kemi password=s3cret"
            .parse()
            .unwrap();
        assert_eq!(address(&config), "/run/postgresql:5432/kemi");
    }
}
