//! Locations in Redis, so that several kemibox processes share their
//! registrations: a REGISTER handled by one node is found by the lookup
//! of another.
//!
//! Layout: one hash per address-of-record, key
//! `kemibox:loc:{tenant}:{table}:{aor}` (`%` and `:` in the tenant and the
//! table percent-encoded, so the key splits back), one field per binding
//! (its identity: the instance and reg-id, else the Contact URI), the
//! binding as JSON for value. The key expires with its last binding, so
//! Redis drops dead AORs by itself; [`LocationStore::expire`] removes the
//! expired bindings of AORs that still have live ones.
//!
//! Changes that read before they write (`save` replacing the binding it is
//! the same as, `remove` by Contact, `expire`) run as Lua scripts: atomic,
//! whichever node runs them at the same moment. A single Redis server is
//! supported (or anything that fails over behind one address), not Redis
//! Cluster: keys of several AORs are scanned and changed together.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, RedisResult, Script};
use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::location::{Binding, Located, LocationStore};

/// How long one round trip to Redis may take: lookups sit on the path of
/// every call routed to a registered user.
const OP_TIMEOUT: Duration = Duration::from_secs(1);

const BACKEND: &str = "redis";

const PREFIX: &str = "kemibox:loc:";

/// Keys asked for per SCAN round trip (`dump`, `expire`).
const SCAN_COUNT: usize = 500;

/// Lua helpers the scripts start with: `binding(json)` decodes a stored
/// binding (nil when it is not one), `present(v)` tells a JSON value from
/// a missing one or `null`.
const LUA_PRELUDE: &str = r#"
local function binding(json)
  local ok, b = pcall(cjson.decode, json)
  if ok and type(b) == 'table' and type(b.expires) == 'number' then return b end
  return nil
end
local function present(v) return v ~= nil and v ~= cjson.null end
"#;

/// KEYS[1]: an AOR's hash; ARGV[1], ARGV[2]: the new binding's field and
/// JSON. Deletes the bindings it is the same as (`Binding::same_as`),
/// stores it and makes the key expire with the last of its bindings.
const LUA_SAVE: &str = r#"
local new = binding(ARGV[2])
local last = new.expires
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local old = binding(fields[i + 1])
  if old then
    local same
    if present(new.instance) and present(old.instance) then
      same = new.instance == old.instance and new.reg_id == old.reg_id
    else
      same = new.contact == old.contact
    end
    if same then
      redis.call('HDEL', KEYS[1], fields[i])
    elseif old.expires > last then
      last = old.expires
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIREAT', KEYS[1], string.format('%d', last))
return 1
"#;

/// KEYS[1]: an AOR's hash; ARGV[1]: a Contact URI. Deletes the bindings
/// with that Contact; returns how many.
const LUA_REMOVE: &str = r#"
local removed = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local b = binding(fields[i + 1])
  if b and b.contact == ARGV[1] then
    removed = removed + redis.call('HDEL', KEYS[1], fields[i])
  end
end
return removed
"#;

/// KEYS: AOR hashes; ARGV[1]: now, in Unix seconds. Deletes the bindings
/// expired at now; returns how many.
const LUA_EXPIRE: &str = r#"
local now = tonumber(ARGV[1])
local removed = 0
for _, key in ipairs(KEYS) do
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local b = binding(fields[i + 1])
    if b and b.expires <= now then
      removed = removed + redis.call('HDEL', key, fields[i])
    end
  end
end
return removed
"#;

/// Bindings in Redis, shared by every kemibox node pointed at the same
/// server. The connection reconnects by itself after a loss; meanwhile
/// calls fail fast with [`StoreError::Unavailable`].
pub struct RedisLocation {
    conn: RedisConn,
    save: Script,
    remove: Script,
    expire: Script,
}

/// The JSON a binding is stored as: serde's view of [`Binding`], kept
/// here so the location module stays free of serialization.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Binding")]
struct BindingJson {
    aor: String,
    contact: String,
    expires: u64,
    q: Option<u16>,
    call_id: String,
    cseq: u32,
    path: Vec<String>,
    received: Option<String>,
    socket: Option<String>,
    instance: Option<String>,
    reg_id: Option<u32>,
    user_agent: Option<String>,
    updated: u64,
}

/// One connection to a Redis server, shared by the stores kept there
/// (locations, htable tables): bounded round trips, reconnection after a
/// loss, and one log line when Redis goes away and one when it is back.
pub(crate) struct RedisConn {
    redis: ConnectionManager,
    /// `host:port` for logs and errors: never the password.
    pub(crate) address: String,
    /// Whether the last call failed, to log losses and recoveries once.
    down: AtomicBool,
}

impl RedisConn {
    /// Connect to `url`; fails when Redis cannot be reached now.
    pub(crate) async fn connect(url: &str) -> Result<RedisConn, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Invalid(format!("Redis URL: {e}")))?;
        let address = client.get_connection_info().addr().to_string();
        // One connection attempt per reconnection: the calls that wait on
        // it are bounded by OP_TIMEOUT anyway, and the next call starts
        // another attempt.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(0);
        let redis = match tokio::time::timeout(
            OP_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        {
            Ok(Ok(redis)) => redis,
            Ok(Err(e)) => return Err(unavailable(&address, &e.to_string())),
            Err(_) => return Err(unavailable(&address, &no_answer())),
        };
        tracing::info!(backend = BACKEND, %address, "connected");
        Ok(RedisConn {
            redis,
            address,
            down: AtomicBool::new(false),
        })
    }

    /// One round trip, bounded by [`OP_TIMEOUT`], failures turned into
    /// [`StoreError::Unavailable`] and logged when Redis goes away and
    /// comes back.
    ///
    /// `op` runs again, once, when the connection was found dropped or
    /// refused: the first call after Redis came back finds the connection
    /// that died with it, or the reconnection that failed while it was
    /// down, and the second attempt takes the fresh connection this one
    /// started. Every operation here may run twice: a command lost with
    /// the connection either never ran or leaves the same state when run
    /// again (only a count or `remove`'s answer may then be low).
    pub(crate) async fn call<T, F>(
        &self,
        op: impl Fn(ConnectionManager) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = RedisResult<T>>,
    {
        self.bounded(op, true).await
    }

    /// [`RedisConn::call`] running a Lua script invocation: its answer.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.call(|mut redis| async move { invocation.invoke_async(&mut redis).await })
            .await
    }

    /// [`RedisConn::call`] for an operation that must not run twice (an
    /// increment): a dropped connection fails the call instead.
    pub(crate) async fn call_once<T, F>(
        &self,
        op: impl Fn(ConnectionManager) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = RedisResult<T>>,
    {
        self.bounded(op, false).await
    }

    async fn bounded<T, F>(
        &self,
        op: impl Fn(ConnectionManager) -> F,
        retry: bool,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let attempts = async {
            match op(self.redis.clone()).await {
                Err(e) if retry && e.is_connection_dropped() => op(self.redis.clone()).await,
                done => done,
            }
        };
        let detail = match tokio::time::timeout(OP_TIMEOUT, attempts).await {
            Ok(Ok(value)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(backend = BACKEND, address = %self.address, "available again");
                }
                return Ok(value);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => no_answer(),
        };
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(backend = BACKEND, address = %self.address, error = %detail, "unavailable");
        }
        Err(unavailable(&self.address, &detail))
    }

    /// `cmd`, as one bounded round trip.
    pub(crate) async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        self.call(|mut redis| async move { cmd.query_async(&mut redis).await })
            .await
    }
}

impl RedisLocation {
    /// Connect to `url` (`redis://[:password@]host:port[/db]`). Fails when
    /// Redis cannot be reached now, so a wrong address shows at start-up;
    /// later losses are survived by reconnecting.
    pub async fn connect(url: &str) -> Result<RedisLocation, StoreError> {
        Ok(RedisLocation {
            conn: RedisConn::connect(url).await?,
            save: Script::new(&format!("{LUA_PRELUDE}{LUA_SAVE}")),
            remove: Script::new(&format!("{LUA_PRELUDE}{LUA_REMOVE}")),
            expire: Script::new(&format!("{LUA_PRELUDE}{LUA_EXPIRE}")),
        })
    }

    /// `cmd`, as one bounded round trip.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        self.conn.query(cmd).await
    }

    /// One SCAN step over the keys matching `pattern`: the next cursor
    /// (0 when done) and the keys found.
    async fn scan(&self, cursor: u64, pattern: &str) -> Result<(u64, Vec<String>), StoreError> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        self.query(&cmd).await
    }

    /// The stored bindings of the AOR at `key`, skipping what does not
    /// decode (written by something else) with a warning.
    fn decode(&self, key: &str, fields: HashMap<String, String>) -> Vec<Binding> {
        fields
            .into_values()
            .filter_map(|json| {
                BindingJson::deserialize(&mut serde_json::Deserializer::from_str(&json))
                    .inspect_err(|e| {
                        tracing::warn!(backend = BACKEND, address = %self.conn.address, key, error = %e, "skipping a binding that does not decode")
                    })
                    .ok()
            })
            .collect()
    }
}

fn no_answer() -> String {
    format!("no answer within {OP_TIMEOUT:?}")
}

fn unavailable(address: &str, detail: &str) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        detail: format!("{address}: {detail}"),
    }
}

/// `%` and `:` percent-encoded, so that a tenant or table name splits
/// back out of the key whatever it contains.
fn escape(part: &str) -> String {
    part.replace('%', "%25").replace(':', "%3A")
}

fn unescape(part: &str) -> String {
    // Every `%` of an escaped string starts `%25` or `%3A`: decoding `%3A`
    // first cannot match across an escape.
    part.replace("%3A", ":").replace("%25", "%")
}

/// `part` matched literally in a SCAN pattern.
fn glob_escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The hash of one AOR.
fn aor_key(tenant: &str, table: &str, aor: &str) -> String {
    format!("{PREFIX}{}:{}:{aor}", escape(tenant), escape(table))
}

/// The tenant and table of an AOR's key; `None` for another kind of key.
fn split_key(key: &str) -> Option<(String, String)> {
    let (tenant, rest) = key.strip_prefix(PREFIX)?.split_once(':')?;
    let (table, _aor) = rest.split_once(':')?;
    Some((unescape(tenant), unescape(table)))
}

/// The hash field of `binding`: equal for two bindings that are the same
/// ([`Binding::same_as`]) by instance, or by Contact when neither has one.
fn field(binding: &Binding) -> String {
    match &binding.instance {
        Some(instance) => format!(
            "instance:{instance};reg-id={}",
            binding.reg_id.map(|r| r.to_string()).unwrap_or_default()
        ),
        None => format!("contact:{}", binding.contact),
    }
}

fn encode(binding: &Binding) -> Result<String, StoreError> {
    let mut json = Vec::new();
    BindingJson::serialize(binding, &mut serde_json::Serializer::new(&mut json))
        .map_err(|e| StoreError::Invalid(format!("binding of {}: {e}", binding.aor)))?;
    String::from_utf8(json)
        .map_err(|e| StoreError::Invalid(format!("binding of {}: {e}", binding.aor)))
}

#[async_trait]
impl LocationStore for RedisLocation {
    async fn lookup(
        &self,
        tenant: &str,
        table: &str,
        aor: &str,
        now: u64,
    ) -> Result<Vec<Binding>, StoreError> {
        let key = aor_key(tenant, table, aor);
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(&key);
        let fields: HashMap<String, String> = self.query(&cmd).await?;
        let mut found: Vec<Binding> = self
            .decode(&key, fields)
            .into_iter()
            .filter(|b| b.expires > now)
            .collect();
        found.sort_by(Binding::priority_cmp);
        Ok(found)
    }

    async fn save(&self, tenant: &str, table: &str, binding: &Binding) -> Result<(), StoreError> {
        let json = encode(binding)?;
        let mut script = self.save.key(aor_key(tenant, table, &binding.aor));
        script.arg(field(binding)).arg(json);
        let script = &script;
        self.conn
            .call(|mut redis| async move { script.invoke_async::<()>(&mut redis).await })
            .await
    }

    async fn remove(
        &self,
        tenant: &str,
        table: &str,
        aor: &str,
        contact: &str,
    ) -> Result<bool, StoreError> {
        let mut script = self.remove.key(aor_key(tenant, table, aor));
        script.arg(contact);
        let script = &script;
        let removed: usize = self
            .conn
            .call(|mut redis| async move { script.invoke_async(&mut redis).await })
            .await?;
        Ok(removed > 0)
    }

    async fn remove_aor(&self, tenant: &str, table: &str, aor: &str) -> Result<usize, StoreError> {
        let key = aor_key(tenant, table, aor);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HLEN")
            .arg(&key)
            .cmd("DEL")
            .arg(&key)
            .ignore();
        let pipe = &pipe;
        let (count,): (usize,) = self
            .conn
            .call(|mut redis| async move { pipe.query_async(&mut redis).await })
            .await?;
        Ok(count)
    }

    async fn dump(&self, tenant: Option<&str>, now: u64) -> Result<Vec<Located>, StoreError> {
        let pattern = match tenant {
            Some(tenant) => format!("{PREFIX}{}:*", glob_escape(&escape(tenant))),
            None => format!("{PREFIX}*"),
        };
        // SCAN may return a key twice: a set lists each AOR once, in order.
        let mut keys = BTreeSet::new();
        let mut cursor = 0;
        loop {
            let (next, found) = self.scan(cursor, &pattern).await?;
            keys.extend(found);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let keys: Vec<String> = keys.into_iter().collect();
        let mut out = Vec::new();
        for chunk in keys.chunks(SCAN_COUNT) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("HGETALL").arg(key);
            }
            let pipe = &pipe;
            let hashes: Vec<HashMap<String, String>> = self
                .conn
                .call(|mut redis| async move { pipe.query_async(&mut redis).await })
                .await?;
            for (key, fields) in chunk.iter().zip(hashes) {
                let Some((tenant, table)) = split_key(key) else {
                    continue;
                };
                let mut bindings: Vec<Binding> = self
                    .decode(key, fields)
                    .into_iter()
                    .filter(|b| b.expires > now)
                    .collect();
                bindings.sort_by(Binding::priority_cmp);
                out.extend(bindings.into_iter().map(|binding| Located {
                    tenant: tenant.clone(),
                    table: table.clone(),
                    binding,
                }));
            }
        }
        // By tenant, table and AOR as the other stores list them (key
        // order differs once names hold characters below ':'); the sort
        // is stable, keeping each AOR's bindings in priority order.
        out.sort_by(|a, b| {
            (&a.tenant, &a.table, &a.binding.aor).cmp(&(&b.tenant, &b.table, &b.binding.aor))
        });
        Ok(out)
    }

    async fn expire(&self, now: u64) -> Result<usize, StoreError> {
        let pattern = format!("{PREFIX}*");
        let mut removed = 0;
        let mut cursor = 0;
        loop {
            let (next, keys) = self.scan(cursor, &pattern).await?;
            if !keys.is_empty() {
                let mut script = self.expire.prepare_invoke();
                for key in &keys {
                    script.key(key);
                }
                script.arg(now);
                let script = &script;
                let n: usize = self
                    .conn
                    .call(|mut redis| async move { script.invoke_async(&mut redis).await })
                    .await?;
                removed += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back_whatever_the_names() {
        for (tenant, table) in [("acme", "location"), ("a:b%3A", "loc:%25x"), ("%", ":")] {
            let key = aor_key(tenant, table, "alice@example.com:5060");
            assert_eq!(
                split_key(&key),
                Some((tenant.to_string(), table.to_string()))
            );
        }
        assert_eq!(split_key("other:key"), None);
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn same_bindings_share_a_field() {
        let b = Binding {
            aor: "alice@example.com".into(),
            contact: "sip:alice@192.0.2.1".into(),
            expires: 100,
            q: None,
            call_id: "c".into(),
            cseq: 1,
            path: vec![],
            received: None,
            socket: None,
            instance: None,
            reg_id: None,
            user_agent: None,
            updated: 1,
        };
        let moved = Binding {
            contact: "sip:alice@192.0.2.2".into(),
            ..b.clone()
        };
        assert_ne!(field(&b), field(&moved));
        let with_instance = |b: &Binding| Binding {
            instance: Some("<urn:uuid:1>".into()),
            reg_id: Some(1),
            ..b.clone()
        };
        assert_eq!(field(&with_instance(&b)), field(&with_instance(&moved)));
        let json = encode(&b).unwrap();
        let back =
            BindingJson::deserialize(&mut serde_json::Deserializer::from_str(&json)).unwrap();
        assert_eq!(back, b);
    }
}
