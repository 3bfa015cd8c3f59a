//! A table kept in Redis (`backend = "redis"`): the same rules as a table
//! in memory (limits on keys and values, `max_items`, autoexpire,
//! updateexpire, initval), applied by [`RedisHtables`] under the tenant's
//! and the table's keys, so that several nodes share the table and
//! tenants never see each other's items.
//!
//! Matching a name with `eq` (the reference script's
//! `sht_match_name("ipban", "eq", srcip)`) is one `EXISTS`; other matches,
//! counts, removals by expression, dumps and iterators read the whole
//! table (at most `max_items` items, in batches of 500 per round trip).
//!
//! A Redis failure is [`HtError::Unavailable`]; only the first failure of
//! each ten seconds is marked for the log, so an outage costs one log
//! line per table per ten seconds, not one per message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kemibox_store::{
    AddOutcome, HtableValue, RedisHtables, RedisItem, RedisTableRules, StoreError, unix_now,
};

use super::engine::{
    HtError, Listed, MAX_KEY_BYTES, MAX_VALUE_BYTES, Matcher, TableCounters, TableSpec, Target,
};
use crate::PvValue;

/// Seconds between two logged Redis failures of one table.
const LOG_EVERY: u64 = 10;

/// One tenant's table in Redis.
pub struct SharedTable {
    spec: TableSpec,
    tenant: String,
    redis: Arc<RedisHtables>,
    /// When (Unix seconds) a failure was last marked for the log.
    logged_at: AtomicU64,
    /// What this node removed or was refused (Redis expires items
    /// unseen: `expired` stays 0).
    counters: TableCounters,
}

impl std::fmt::Debug for SharedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTable")
            .field("spec", &self.spec)
            .field("redis", &self.redis.address())
            .finish()
    }
}

fn to_pv(value: HtableValue) -> PvValue {
    match value {
        HtableValue::Int(i) => PvValue::Int(i),
        HtableValue::Str(s) => PvValue::Str(s),
    }
}

fn check_key(key: &str) -> Result<(), HtError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(HtError::KeyTooLong(key.len()));
    }
    Ok(())
}

impl SharedTable {
    pub fn new(spec: TableSpec, tenant: &str, redis: Arc<RedisHtables>) -> SharedTable {
        SharedTable {
            spec,
            tenant: tenant.to_string(),
            redis,
            logged_at: AtomicU64::new(0),
            counters: TableCounters::default(),
        }
    }

    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }

    /// Its metrics' counters (this node's operations).
    pub fn counters(&self) -> &TableCounters {
        &self.counters
    }

    fn rules(&self) -> RedisTableRules {
        RedisTableRules {
            max_items: self.spec.max_items,
            autoexpire: self.spec.autoexpire,
            updateexpire: self.spec.updateexpire,
            initval: self.spec.initval,
        }
    }

    /// A store failure as the table's error, marked for the log when no
    /// failure was in the last [`LOG_EVERY`] seconds.
    fn failed(&self, e: StoreError) -> HtError {
        let now = unix_now();
        let last = self.logged_at.load(Ordering::Relaxed);
        let log = now >= last.saturating_add(LOG_EVERY)
            && self
                .logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        HtError::Unavailable {
            detail: format!("tenant {}: {e}", self.tenant),
            log,
        }
    }

    fn name(&self) -> &str {
        &self.spec.name
    }

    pub async fn get(&self, key: &str) -> Result<Option<PvValue>, HtError> {
        let found =
            (self.redis.get(&self.tenant, self.name(), key).await).map_err(|e| self.failed(e))?;
        Ok(found.map(to_pv))
    }

    pub async fn set(
        &self,
        key: &str,
        value: PvValue,
        expires_in: Option<u64>,
    ) -> Result<(), HtError> {
        check_key(key)?;
        let value = match value {
            PvValue::Int(i) => HtableValue::Int(i),
            PvValue::Str(s) if s.len() > MAX_VALUE_BYTES => {
                return Err(HtError::ValueTooLong(s.len()));
            }
            PvValue::Str(s) => HtableValue::Str(s),
        };
        let stored = self
            .redis
            .set(
                &self.tenant,
                self.name(),
                self.rules(),
                key,
                &value,
                expires_in.unwrap_or(0),
            )
            .await
            .map_err(|e| self.failed(e))?;
        if stored {
            Ok(())
        } else {
            self.counters.full(Err(HtError::Full(self.spec.max_items)))
        }
    }

    /// Nothing in a table without autoexpire (its items never expire).
    pub async fn set_expire(&self, key: &str, secs: u64) -> Result<(), HtError> {
        if self.spec.autoexpire == 0 {
            return Ok(());
        }
        (self
            .redis
            .set_expire(&self.tenant, self.name(), key, secs)
            .await)
            .map_err(|e| self.failed(e))
    }

    pub async fn expires_in(&self, key: &str) -> Result<u64, HtError> {
        (self.redis.expires_in(&self.tenant, self.name(), key).await).map_err(|e| self.failed(e))
    }

    pub async fn remove(&self, key: &str) -> Result<bool, HtError> {
        let removed = (self.redis)
            .remove(&self.tenant, self.name(), &[key.to_string()])
            .await
            .map_err(|e| self.failed(e))?;
        self.counters.removed(removed);
        Ok(removed > 0)
    }

    pub async fn add(&self, key: &str, delta: i32) -> Result<i32, HtError> {
        check_key(key)?;
        let outcome = (self.redis)
            .add(&self.tenant, self.name(), self.rules(), key, delta)
            .await
            .map_err(|e| self.failed(e))?;
        match outcome {
            AddOutcome::Value(n) => Ok(n),
            AddOutcome::Full => self.counters.full(Err(HtError::Full(self.spec.max_items))),
            AddOutcome::NotInteger => Err(HtError::NotInteger),
        }
    }

    async fn all(&self) -> Result<Vec<RedisItem>, HtError> {
        (self.redis.items(&self.tenant, self.name()).await).map_err(|e| self.failed(e))
    }

    /// The names of the items that match: one `EXISTS` for a name equal
    /// to a text, else a read of the whole table.
    async fn matching(&self, target: Target, matcher: &Matcher) -> Result<Vec<String>, HtError> {
        if let (Target::Name, Matcher::Eq(name)) = (target, matcher) {
            let found = (self.redis.exists(&self.tenant, self.name(), name).await)
                .map_err(|e| self.failed(e))?;
            return Ok(if found { vec![name.clone()] } else { vec![] });
        }
        Ok(self
            .all()
            .await?
            .into_iter()
            .filter(|i| matcher.matches_value(target, &i.key, &to_pv(i.value.clone())))
            .map(|i| i.key)
            .collect())
    }

    /// How many items match.
    pub async fn count_matching(
        &self,
        target: Target,
        matcher: &Matcher,
    ) -> Result<usize, HtError> {
        Ok(self.matching(target, matcher).await?.len())
    }

    /// Remove the items that match; how many. An item set by another node
    /// between the read and the removal may stay.
    pub async fn remove_matching(
        &self,
        target: Target,
        matcher: &Matcher,
    ) -> Result<usize, HtError> {
        let names = self.matching(target, matcher).await?;
        if names.is_empty() {
            return Ok(0);
        }
        let removed = (self.redis.remove(&self.tenant, self.name(), &names).await)
            .map_err(|e| self.failed(e))?;
        self.counters.removed(removed);
        Ok(removed)
    }

    pub async fn reset(&self) -> Result<usize, HtError> {
        let removed =
            (self.redis.clear(&self.tenant, self.name()).await).map_err(|e| self.failed(e))?;
        self.counters.removed(removed);
        Ok(removed)
    }

    pub async fn items(&self) -> Result<Vec<Listed>, HtError> {
        Ok(self
            .all()
            .await?
            .into_iter()
            .map(|i| Listed {
                key: i.key,
                value: to_pv(i.value),
                expires: i.expires,
            })
            .collect())
    }

    /// How many live items the table has.
    pub async fn item_count(&self) -> Result<usize, HtError> {
        (self.redis.len(&self.tenant, self.name()).await).map_err(|e| self.failed(e))
    }
}
