//! The configured stores, opened: SQLite in the data directory unless
//! PostgreSQL (subscribers) and Redis (locations) are configured, so the
//! proxy, `kemibox user`, `kemibox ul`, `kemibox address` and
//! `kemibox dispatcher` all work on the same data. The permissions address
//! table and the dispatcher table are where the subscribers are.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kemibox_kemi::htable::TableBackend;
use kemibox_kemi::{Nonces, Services};
use kemibox_store::{
    AddressStore, DispatcherStore, HtableStore, LocationStore, PostgresHtable, PostgresSubscribers,
    RedisHtables, RedisLocation, SqliteStore, SubscriberStore,
};

use crate::config::{Auth, Database, Registrar};

/// Where kemibox keeps its data when not told otherwise:
/// `$KEMIBOX_DATA_DIR`, else `$XDG_DATA_HOME/kemibox`, else
/// `~/.local/share/kemibox`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("KEMIBOX_DATA_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("kemibox")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/kemibox")))
        .unwrap_or_else(|| PathBuf::from("kemibox-data"))
}

/// The SQLite file used when none is configured.
pub fn default_sqlite() -> PathBuf {
    data_dir().join("kemibox.sqlite")
}

/// The stores a [`Database`] section names, opened.
pub struct Stores {
    pub subscribers: Arc<dyn SubscriberStore>,
    pub location: Arc<dyn LocationStore>,
    /// The permissions address table (beside the subscribers).
    pub addresses: Arc<dyn AddressStore>,
    /// The dispatcher table (beside the subscribers).
    pub dispatcher: Arc<dyn DispatcherStore>,
    /// The SQLite file, when a kind of data is kept there.
    pub sqlite: Option<Arc<SqliteStore>>,
    /// Where each kind lives, for the start-up log line.
    pub describe: String,
}

/// The stores beside the subscribers (one database) and where that is.
type SubscriberSide = (
    Arc<dyn SubscriberStore>,
    Arc<dyn AddressStore>,
    Arc<dyn DispatcherStore>,
    String,
);

/// Open what `db` configures. SQLite is opened (and created) only when a
/// kind of data has no networked database.
pub async fn open(db: &Database) -> anyhow::Result<Stores> {
    let sqlite_path = db.sqlite.clone().unwrap_or_else(default_sqlite);
    let sqlite = if db.postgres.is_none() || db.redis.is_none() {
        Some(Arc::new(open_sqlite(&sqlite_path)?))
    } else {
        None
    };
    // Addresses live beside the subscribers.
    let (subscribers, addresses, dispatcher, subs_at): SubscriberSide = match &db.postgres {
        Some(url) => {
            let postgres = Arc::new(
                PostgresSubscribers::connect(url)
                    .await
                    .map_err(|e| anyhow::anyhow!("database.postgres: {e}"))?,
            );
            (
                postgres.clone(),
                postgres.clone(),
                postgres,
                "PostgreSQL".into(),
            )
        }
        None => {
            let sqlite = sqlite.clone().expect("opened when postgres is not set");
            (
                sqlite.clone(),
                sqlite.clone(),
                sqlite,
                sqlite_path.display().to_string(),
            )
        }
    };
    let (location, loc_at): (Arc<dyn LocationStore>, String) = match &db.redis {
        Some(url) => (
            Arc::new(
                RedisLocation::connect(url)
                    .await
                    .map_err(|e| anyhow::anyhow!("database.redis: {e}"))?,
            ),
            "Redis".into(),
        ),
        None => (
            sqlite.clone().expect("opened when redis is not set"),
            sqlite_path.display().to_string(),
        ),
    };
    Ok(Stores {
        subscribers,
        location,
        addresses,
        dispatcher,
        sqlite,
        describe: format!(
            "subscribers, addresses and dispatcher rows in {subs_at}, locations in {loc_at}"
        ),
    })
}

/// The accounting writer: into PostgreSQL when `database.postgres` is
/// given (several nodes share the tables), else into the SQLite file.
pub async fn acc_writer(db: &Database) -> anyhow::Result<kemibox_store::AccWriter> {
    let backend: Box<dyn kemibox_store::AccBackend> = match &db.postgres {
        Some(url) => Box::new(
            kemibox_store::PostgresAcc::connect(url)
                .await
                .map_err(|e| anyhow::anyhow!("database.postgres (acc): {e}"))?,
        ),
        None => {
            let path = db.sqlite.clone().unwrap_or_else(default_sqlite);
            Box::new(
                kemibox_store::SqliteAcc::open(&path)
                    .map_err(|e| anyhow::anyhow!("cannot open {} (acc): {e}", path.display()))?,
            )
        }
    };
    tracing::debug!(backend = %backend.describe(), "acc records");
    Ok(kemibox_store::AccWriter::spawn(
        backend,
        kemibox_store::DEFAULT_QUEUE,
        Arc::new(kemibox_metrics::AccMetrics::default()),
    ))
}

fn open_sqlite(path: &Path) -> anyhow::Result<SqliteStore> {
    SqliteStore::open(path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))
}

/// Where the tenants' htable tables keep what they keep.
#[derive(Default, Clone)]
pub struct HtableBackends {
    /// The rows of tables with a `dbtable`: PostgreSQL when
    /// `[database] postgres` is set (nodes sharing it load the same rows),
    /// else the SQLite file.
    pub db: Option<Arc<dyn HtableStore>>,
    /// The tables declared with `backend = "redis"`: the Redis of
    /// `[database] redis`.
    pub redis: Option<Arc<RedisHtables>>,
}

/// Open what the tenants' tables need: a `dbtable` store when some table
/// has a `dbtable`, a Redis connection when some table has
/// `backend = "redis"`; nothing otherwise.
pub async fn htable_backends(
    db: &Database,
    stores: &Stores,
    tenants: &[crate::config::Tenant],
) -> anyhow::Result<HtableBackends> {
    let specs = || tenants.iter().flat_map(|t| &t.htables);
    let rows_needed = specs().any(|h| h.dbtable.is_some());
    let redis_needed = specs().any(|h| h.backend == TableBackend::Redis);
    let db_store: Option<Arc<dyn HtableStore>> = match (&db.postgres, rows_needed) {
        (_, false) => None,
        (Some(url), true) => {
            Some(Arc::new(PostgresHtable::connect(url).await.map_err(
                |e| anyhow::anyhow!("database.postgres (htable rows): {e}"),
            )?))
        }
        (None, true) => Some(match &stores.sqlite {
            Some(sqlite) => sqlite.clone(),
            None => Arc::new(open_sqlite(
                &db.sqlite.clone().unwrap_or_else(default_sqlite),
            )?),
        }),
    };
    let redis = match (&db.redis, redis_needed) {
        (Some(url), true) => {
            Some(Arc::new(RedisHtables::connect(url).await.map_err(|e| {
                anyhow::anyhow!("database.redis (htable): {e}")
            })?))
        }
        // Refused by the configuration check: a redis table needs one.
        (None, true) => anyhow::bail!("htable: backend = \"redis\" without [database] redis"),
        (_, false) => None,
    };
    Ok(HtableBackends {
        db: db_store,
        redis,
    })
}

/// Where the tenants' dialog profiles are shared, when some tenant has
/// `[dialog] backend = "redis"`: the Redis of `[database] redis`, and
/// this process's node name and ttl there.
#[derive(Clone)]
pub struct DialogStore {
    pub redis: Arc<kemibox_store::RedisDialogs>,
    pub node: crate::config::DialogNode,
}

/// Connect to the Redis the tenants' shared dialog profiles need; `None`
/// when no tenant shares them.
pub async fn dialog_store(
    db: &Database,
    tenants: &[crate::config::Tenant],
    node: &crate::config::DialogNode,
) -> anyhow::Result<Option<DialogStore>> {
    if !tenants.iter().any(|t| t.dialog_profiles.redis) {
        return Ok(None);
    }
    // Refused by the configuration check: the backend needs a Redis.
    let Some(url) = &db.redis else {
        anyhow::bail!("dialog: backend = \"redis\" without [database] redis");
    };
    let redis = kemibox_store::RedisDialogs::connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("database.redis (dialog profiles): {e}"))?;
    tracing::info!(node = %node.name, ttl = ?node.ttl, redis = %redis.address(), "dialog profiles shared");
    Ok(Some(DialogStore {
        redis: Arc::new(redis),
        node: node.clone(),
    }))
}

/// The services the KEMI modules use, from opened stores and settings.
pub fn services(
    stores: &Stores,
    registrar: Registrar,
    auth: &Auth,
) -> anyhow::Result<Arc<Services>> {
    let secret = auth
        .secret_bytes()
        .map_err(|e| anyhow::anyhow!("auth.{e}"))?
        .unwrap_or_else(Nonces::random_secret);
    Ok(Arc::new(Services {
        location: stores.location.clone(),
        subscribers: stores.subscribers.clone(),
        registrar: registrar.into(),
        nonces: Nonces::new(secret, Duration::from_secs(auth.nonce_expire)),
    }))
}

/// How often expired bindings are removed from the location store (lookups
/// never return them in between).
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

/// Remove expired bindings in the background, for as long as the proxy
/// runs; failures are logged and retried at the next tick.
pub fn spawn_expiry(location: Arc<dyn LocationStore>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRE_EVERY);
        loop {
            tick.tick().await;
            match location.expire(kemibox_store::unix_now()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "expired bindings removed"),
                Err(e) => tracing::warn!("removing expired bindings: {e}"),
            }
        }
    });
}

/// An operator command on a tenant's data (`kemibox user`, `address`,
/// `dispatcher`, `ul`): its action and the database it works on.
#[derive(clap::Args)]
pub struct TargetArgs<A: clap::Subcommand> {
    #[command(subcommand)]
    pub action: A,
    #[command(flatten)]
    pub target: Target,
}

/// Which database an operator command works on: the one a config file
/// names, a given SQLite file, or the embedded default.
#[derive(clap::Args)]
pub struct Target {
    /// Use the `[database]` of this config file (as `kemibox run --config`).
    #[arg(long, global = true, conflicts_with = "db")]
    config: Option<PathBuf>,
    /// A SQLite file (default: kemibox.sqlite in the data directory,
    /// `$KEMIBOX_DATA_DIR`, else `$XDG_DATA_HOME/kemibox`, else
    /// `~/.local/share/kemibox`).
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// The tenant whose data this is.
    #[arg(long, global = true, default_value = kemibox_kemi::TenantId::DEFAULT)]
    pub tenant: kemibox_kemi::TenantId,
}

impl Target {
    /// Open the stores this target names.
    pub async fn open(&self) -> anyhow::Result<Stores> {
        let database = match &self.config {
            Some(path) => crate::config::load(path)?.database,
            None => Database {
                sqlite: self.db.clone(),
                ..Database::default()
            },
        };
        open(&database).await
    }
}
