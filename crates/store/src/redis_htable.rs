//! htable tables kept in Redis (`backend = "redis"`), so that every
//! kemibox node pointed at the same server shares them: a ban set through
//! one node holds on all.
//!
//! Layout, per tenant and table (`%` and `:` in both percent-encoded, as
//! for locations):
//!
//! - one string per item, key `kemibox:ht:{tenant}:{table}:{key}`, value
//!   `i:<decimal>` (an integer) or `s:<text>` (a string), with Redis's own
//!   per-key expiry (`EXPIREAT`), so expired items vanish in Redis itself;
//! - one sorted set, key `kemibox:htidx:{tenant}:{table}`, the table's
//!   item names scored by their expiry (Unix seconds, `+inf` never): what
//!   counts the table against its `max_items` and what walks it (`ZSCAN`)
//!   for matches, dumps and iterators, without scanning the keyspace.
//!
//! Writes that read first (set with the `max_items` check and the table's
//! expiry rules, increments, expiry changes) are Lua scripts on Redis's
//! clock (`TIME`), atomic whichever node runs them. A single Redis server
//! is supported (or anything that fails over behind one address), not
//! Redis Cluster: an item and its table's index are changed together.

use std::collections::HashSet;

use redis::Script;

use crate::StoreError;
use crate::redis::RedisConn;

const ITEM_PREFIX: &str = "kemibox:ht:";
const INDEX_PREFIX: &str = "kemibox:htidx:";

/// Names asked for per `ZSCAN` round trip, and items per `MGET`/`DEL`.
const BATCH: usize = 500;

/// Lua helpers: `now()`, Redis's clock in seconds, and `put(value, secs,
/// t)`, which stores ARGV[1]'s item (KEYS[2]) in its table (index KEYS[1])
/// under the table's rules in ARGV[4] (max_items), ARGV[5] (autoexpire)
/// and ARGV[6] (updateexpire, 0 or 1); false when the table is full.
const LUA_PRELUDE: &str = r#"
local function now() return tonumber(redis.call('TIME')[1]) end
local function put(value, secs, t)
  local max = tonumber(ARGV[4])
  local autoexpire = tonumber(ARGV[5])
  local updateexpire = ARGV[6] == '1'
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
  local exists = redis.call('EXISTS', KEYS[2]) == 1
  if not exists then
    redis.call('ZREM', KEYS[1], ARGV[1])
    if redis.call('ZCARD', KEYS[1]) >= max then return false end
  end
  local at
  if secs > 0 and autoexpire > 0 then at = t + secs
  elseif exists and not updateexpire then at = nil
  elseif autoexpire > 0 then at = t + autoexpire
  else at = 0 end
  if at == nil then
    redis.call('SET', KEYS[2], value, 'KEEPTTL')
    local ttl = redis.call('TTL', KEYS[2])
    if ttl > 0 then redis.call('ZADD', KEYS[1], 'NX', t + ttl, ARGV[1])
    else redis.call('ZADD', KEYS[1], 'NX', '+inf', ARGV[1]) end
  elseif at > 0 then
    redis.call('SET', KEYS[2], value, 'EXAT', at)
    redis.call('ZADD', KEYS[1], at, ARGV[1])
  else
    redis.call('SET', KEYS[2], value)
    redis.call('ZADD', KEYS[1], '+inf', ARGV[1])
  end
  return true
end
"#;

/// ARGV[2]: the encoded value, ARGV[3]: its own expiry in seconds (0: the
/// table's rule). 1 stored, 0 the table is full.
const LUA_SET: &str = r#"
if put(ARGV[2], tonumber(ARGV[3]), now()) then return 1 end
return 0
"#;

/// ARGV[2]: the delta, ARGV[3]: initval ('' none). {1, new value}, {0}
/// the table is full, {-1} the item is a string. Wraps as a 32-bit int.
const LUA_ADD: &str = r#"
local cur = redis.call('GET', KEYS[2])
local n
if not cur then
  if ARGV[3] == '' then n = 0 else n = tonumber(ARGV[3]) end
elseif string.sub(cur, 1, 2) == 'i:' then
  n = tonumber(string.sub(cur, 3))
  if n == nil then return {-1} end
else
  return {-1}
end
n = n + tonumber(ARGV[2])
if n > 2147483647 then n = n - 4294967296 elseif n < -2147483648 then n = n + 4294967296 end
if not put('i:' .. string.format('%d', n), 0, now()) then return {0} end
return {1, n}
"#;

/// ARGV[2]: seconds from now the item expires, 0 never. 1 done, 0 the
/// item is not set.
const LUA_EXPIRE: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local secs = tonumber(ARGV[2])
if secs == 0 then
  redis.call('PERSIST', KEYS[2])
  redis.call('ZADD', KEYS[1], '+inf', ARGV[1])
else
  local at = now() + secs
  redis.call('EXPIREAT', KEYS[2], at)
  redis.call('ZADD', KEYS[1], at, ARGV[1])
end
return 1
"#;

/// The number of live items (expired names leave the index first).
const LUA_COUNT: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now())
return redis.call('ZCARD', KEYS[1])
"#;

/// An item's value as kept in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HtableValue {
    Int(i32),
    Str(String),
}

impl HtableValue {
    fn encode(&self) -> String {
        match self {
            HtableValue::Int(i) => format!("i:{i}"),
            HtableValue::Str(s) => format!("s:{s}"),
        }
    }

    /// A stored value; anything written by something else reads as the
    /// string it is.
    fn decode(stored: String) -> HtableValue {
        if let Some(i) = stored.strip_prefix("i:").and_then(|n| n.parse().ok()) {
            return HtableValue::Int(i);
        }
        match stored.strip_prefix("s:") {
            Some(s) => HtableValue::Str(s.to_string()),
            None => HtableValue::Str(stored),
        }
    }
}

/// The rules of one table that the writes in Redis apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisTableRules {
    /// A new item beyond this many live ones is refused.
    pub max_items: usize,
    /// Seconds after which an item expires; 0 never (and per-item
    /// expiries are ignored, as in Kamailio).
    pub autoexpire: u64,
    /// Whether updating an item restarts its autoexpire time.
    pub updateexpire: bool,
    /// Where an increment of a missing item starts (else 0).
    pub initval: Option<i32>,
}

/// What an increment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// The new value.
    Value(i32),
    /// The item is missing and the table holds `max_items` items.
    Full,
    /// The item is a string.
    NotInteger,
}

/// One item of a table, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisItem {
    pub key: String,
    pub value: HtableValue,
    /// Unix seconds (Redis's clock); 0 never.
    pub expires: u64,
}

/// The htable tables of every tenant in one Redis server. Every call is
/// one or a few bounded round trips (1 s each); an unreachable server
/// gives [`StoreError::Unavailable`] and the connection is reopened by a
/// later call.
pub struct RedisHtables {
    conn: RedisConn,
    set: Script,
    add: Script,
    expire: Script,
    count: Script,
}

/// `%` and `:` percent-encoded, so tenants and tables never share keys.
fn escape(part: &str) -> String {
    part.replace('%', "%25").replace(':', "%3A")
}

/// The two keys of `table`'s `key`: its table's index and the item.
fn keys(tenant: &str, table: &str, key: &str) -> (String, String) {
    (index_key(tenant, table), item_key(tenant, table, key))
}

fn index_key(tenant: &str, table: &str) -> String {
    format!("{INDEX_PREFIX}{}:{}", escape(tenant), escape(table))
}

fn item_key(tenant: &str, table: &str, key: &str) -> String {
    format!("{ITEM_PREFIX}{}:{}:{key}", escape(tenant), escape(table))
}

/// A sorted-set score as an expiry: `inf` is never (0).
fn expiry(score: &str) -> u64 {
    score
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite())
        .map_or(0, |s| s as u64)
}

impl RedisHtables {
    /// Connect to `url` (`redis://[:password@]host:port[/db]`); fails when
    /// Redis cannot be reached now, so a wrong address shows at start-up.
    pub async fn connect(url: &str) -> Result<RedisHtables, StoreError> {
        let script = |body: &str| Script::new(&format!("{LUA_PRELUDE}{body}"));
        Ok(RedisHtables {
            conn: RedisConn::connect(url).await?,
            set: script(LUA_SET),
            add: script(LUA_ADD),
            expire: script(LUA_EXPIRE),
            count: script(LUA_COUNT),
        })
    }

    /// `host:port` of the server, for logs.
    pub fn address(&self) -> &str {
        &self.conn.address
    }

    /// The item's value; `None` when not set or expired.
    pub async fn get(
        &self,
        tenant: &str,
        table: &str,
        key: &str,
    ) -> Result<Option<HtableValue>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(item_key(tenant, table, key));
        let stored: Option<String> = self.conn.query(&cmd).await?;
        Ok(stored.map(HtableValue::decode))
    }

    /// Whether the item is set.
    pub async fn exists(&self, tenant: &str, table: &str, key: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(item_key(tenant, table, key));
        let n: u64 = self.conn.query(&cmd).await?;
        Ok(n > 0)
    }

    /// Seconds until the item expires; 0 when it never does or is not set.
    pub async fn expires_in(
        &self,
        tenant: &str,
        table: &str,
        key: &str,
    ) -> Result<u64, StoreError> {
        // In milliseconds, rounded up: an item in its last second has 1
        // second left, as in memory (TTL would say 0, "never").
        let mut cmd = redis::cmd("PTTL");
        cmd.arg(item_key(tenant, table, key));
        let ttl: i64 = self.conn.query(&cmd).await?;
        Ok(u64::try_from(ttl).map_or(0, |ms| ms.div_ceil(1000)))
    }

    /// Set the item under `rules`; `expires_in`: its own expiry in seconds
    /// (0: the table's rule). `false`: the table is full.
    pub async fn set(
        &self,
        tenant: &str,
        table: &str,
        rules: RedisTableRules,
        key: &str,
        value: &HtableValue,
        expires_in: u64,
    ) -> Result<bool, StoreError> {
        let (index, item) = keys(tenant, table, key);
        let mut invocation = self.set.key(index);
        invocation
            .key(item)
            .arg(key)
            .arg(value.encode())
            .arg(expires_in);
        rule_args(&mut invocation, rules);
        let invocation = &invocation;
        let stored: i64 = self
            .conn
            .call(|mut redis| async move { invocation.invoke_async(&mut redis).await })
            .await?;
        Ok(stored == 1)
    }

    /// Add `delta` to the integer item (a missing one starts at
    /// `rules.initval`, else 0), as a 32-bit integer wraps. Never run
    /// twice: a connection lost on the way fails the call.
    pub async fn add(
        &self,
        tenant: &str,
        table: &str,
        rules: RedisTableRules,
        key: &str,
        delta: i32,
    ) -> Result<AddOutcome, StoreError> {
        let (index, item) = keys(tenant, table, key);
        let mut invocation = self.add.key(index);
        invocation
            .key(item)
            .arg(key)
            .arg(delta)
            .arg(rules.initval.map(|i| i.to_string()).unwrap_or_default());
        rule_args(&mut invocation, rules);
        let invocation = &invocation;
        let answer: Vec<i64> = self
            .conn
            .call_once(|mut redis| async move { invocation.invoke_async(&mut redis).await })
            .await?;
        Ok(match answer.as_slice() {
            [1, n] => {
                AddOutcome::Value(i32::try_from(*n).map_err(|_| {
                    StoreError::Invalid(format!("htable increment out of range: {n}"))
                })?)
            }
            [0] => AddOutcome::Full,
            _ => AddOutcome::NotInteger,
        })
    }

    /// The item expires `secs` seconds from now (0: never); nothing when
    /// it is not set.
    pub async fn set_expire(
        &self,
        tenant: &str,
        table: &str,
        key: &str,
        secs: u64,
    ) -> Result<(), StoreError> {
        let (index, item) = keys(tenant, table, key);
        let mut invocation = self.expire.key(index);
        invocation.key(item).arg(key).arg(secs);
        let invocation = &invocation;
        self.conn
            .call(|mut redis| async move { invocation.invoke_async::<i64>(&mut redis).await })
            .await?;
        Ok(())
    }

    /// Remove the items named; how many were set.
    pub async fn remove(
        &self,
        tenant: &str,
        table: &str,
        names: &[String],
    ) -> Result<usize, StoreError> {
        let index = index_key(tenant, table);
        let mut removed = 0;
        for chunk in names.chunks(BATCH) {
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("DEL");
            for name in chunk {
                pipe.arg(item_key(tenant, table, name));
            }
            pipe.cmd("ZREM").arg(&index).arg(chunk).ignore();
            let pipe = &pipe;
            let (n,): (usize,) = self
                .conn
                .call(|mut redis| async move { pipe.query_async(&mut redis).await })
                .await?;
            removed += n;
        }
        Ok(removed)
    }

    /// How many live items the table has.
    pub async fn len(&self, tenant: &str, table: &str) -> Result<usize, StoreError> {
        let invocation = self.count.key(index_key(tenant, table));
        let invocation = &invocation;
        self.conn
            .call(|mut redis| async move { invocation.invoke_async(&mut redis).await })
            .await
    }

    /// The table's live items, by name: a `ZSCAN` of its index, [`BATCH`]
    /// names per round trip, and one `MGET` per batch. The work is the
    /// table's size (at most its `max_items`), never the whole keyspace.
    pub async fn items(&self, tenant: &str, table: &str) -> Result<Vec<RedisItem>, StoreError> {
        let index = index_key(tenant, table);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut cursor = 0u64;
        loop {
            let mut cmd = redis::cmd("ZSCAN");
            cmd.arg(&index).arg(cursor).arg("COUNT").arg(BATCH);
            let (next, flat): (u64, Vec<String>) = self.conn.query(&cmd).await?;
            let batch: Vec<(String, u64)> = flat
                .chunks_exact(2)
                .filter(|pair| seen.insert(pair[0].clone()))
                .map(|pair| (pair[0].clone(), expiry(&pair[1])))
                .collect();
            if !batch.is_empty() {
                let mut mget = redis::cmd("MGET");
                for (name, _) in &batch {
                    mget.arg(item_key(tenant, table, name));
                }
                let values: Vec<Option<String>> = self.conn.query(&mget).await?;
                for ((key, expires), value) in batch.into_iter().zip(values) {
                    if let Some(value) = value {
                        out.push(RedisItem {
                            key,
                            value: HtableValue::decode(value),
                            expires,
                        });
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Remove every item of the table; how many there were.
    pub async fn clear(&self, tenant: &str, table: &str) -> Result<usize, StoreError> {
        let names: Vec<String> = self
            .items(tenant, table)
            .await?
            .into_iter()
            .map(|i| i.key)
            .collect();
        let removed = self.remove(tenant, table, &names).await?;
        let mut cmd = redis::cmd("DEL");
        cmd.arg(index_key(tenant, table));
        self.conn.query::<()>(&cmd).await?;
        Ok(removed)
    }
}

fn rule_args(invocation: &mut redis::ScriptInvocation<'_>, rules: RedisTableRules) {
    invocation
        .arg(rules.max_items)
        .arg(rules.autoexpire)
        .arg(u8::from(rules.updateexpire));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_keys() {
        for v in [HtableValue::Int(-7), HtableValue::Str("i:x".into())] {
            assert_eq!(HtableValue::decode(v.encode()), v);
        }
        assert_eq!(
            HtableValue::decode("raw".into()),
            HtableValue::Str("raw".into())
        );
        assert_ne!(keys("a:b", "c", "k"), keys("a", "b:c", "k"));
        assert_eq!(
            item_key("t", "ipban", "10.0.0.1"),
            "kemibox:ht:t:ipban:10.0.0.1"
        );
        assert_eq!(expiry("inf"), 0);
        assert_eq!(expiry("1700000000"), 1_700_000_000);
    }
}
