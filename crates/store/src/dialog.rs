//! Dialog state shared by several kemibox nodes through one Redis server:
//! each node's dialog-profile memberships (so a profile's size, and the
//! tenant's call count, count the calls of every node) and each node's
//! dialog records (so a restarted node finds its dialogs).
//!
//! Layout, per tenant and node (`%` and `:` percent-encoded, as for
//! locations):
//!
//! - `kemibox:dlg:nodes:{tenant}`: a sorted set of the tenant's live
//!   nodes, scored by when each stops counting (Redis's clock, in
//!   milliseconds): every write and heartbeat of a node pushes its score
//!   `ttl` ahead, so a node that crashed stops counting `ttl` after its
//!   last heartbeat.
//! - `kemibox:dlg:prof:{tenant}:{node}`: a hash of the node's
//!   memberships, one field per (profile, value, dialog), the JSON array
//!   `["profile", "value" or null, "dialog"]`.
//! - `kemibox:dlg:count:{tenant}:{node}`: a hash of the node's counts per
//!   profile (field `["profile"]`) and per profile and value (field
//!   `["profile","value"]`), kept with the memberships by the same
//!   scripts, so a size is one `HGET` per live node.
//! - `kemibox:dlg:backup:{tenant}:{node}`: a hash of the node's dialog
//!   records (dialog id to a JSON string this store does not read).
//!
//! The two profile keys expire `ttl` after the node's last write or
//! heartbeat (Redis drops a dead node's memberships by itself); the
//! backup key [`BACKUP_TTL`] after its last write or heartbeat, long
//! enough for a node to restart and find its calls.
//!
//! Every write is a Lua script on Redis's clock (`TIME`), atomic whichever
//! node runs it. A single Redis server is supported (or anything that
//! fails over behind one address), not Redis Cluster: a size reads the
//! keys of every node.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use crate::StoreError;
use crate::redis::RedisConn;

const PREFIX: &str = "kemibox:dlg:";

/// How long a node's dialog records stay after its last write or
/// heartbeat: a node that restarts within this finds its dialogs.
pub const BACKUP_TTL: Duration = Duration::from_secs(24 * 3600);

/// Entries per `HSCAN` round trip of the backup.
const SCAN_COUNT: usize = 500;

/// Lua helpers: `now()`, Redis's clock in milliseconds; `alive(ttl)`,
/// which pushes this node's memberships' expiry (KEYS[1], KEYS[2]) and
/// its score in the node set (KEYS[3], member ARGV[1]) `ttl` ms ahead.
const LUA_PRELUDE: &str = r#"
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function alive(ttl)
  local t = now()
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('ZADD', KEYS[3], string.format('%d', t + ttl), ARGV[1])
  return t
end
local function count(field, delta)
  if field == '' then return end
  if redis.call('HINCRBY', KEYS[2], field, delta) <= 0 then
    redis.call('HDEL', KEYS[2], field)
  end
end
"#;

/// KEYS: prof, count, nodes. ARGV: node, ttl ms, then triples (field,
/// profile count field, value count field or ''). Adds the memberships
/// not there yet; returns how many were new.
const LUA_ADD: &str = r#"
local added = 0
for i = 3, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], '1') == 1 then
    added = added + 1
    count(ARGV[i + 1], 1)
    count(ARGV[i + 2], 1)
  end
end
alive(tonumber(ARGV[2]))
return added
"#;

/// As [`LUA_ADD`], removing; returns how many were there.
const LUA_REMOVE: &str = r#"
local removed = 0
for i = 3, #ARGV, 3 do
  if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
    removed = removed + 1
    count(ARGV[i + 1], -1)
    count(ARGV[i + 2], -1)
  end
end
alive(tonumber(ARGV[2]))
return removed
"#;

/// As [`LUA_ADD`], replacing everything the node had with the triples.
const LUA_REPLACE: &str = r#"
redis.call('DEL', KEYS[1], KEYS[2])
for i = 3, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], '1') == 1 then
    count(ARGV[i + 1], 1)
    count(ARGV[i + 2], 1)
  end
end
alive(tonumber(ARGV[2]))
return 1
"#;

/// KEYS: prof, count, nodes, backup. ARGV: node, ttl ms, backup ttl s.
/// Keeps the node alive, drops the nodes whose time is up, and returns
/// how many memberships Redis holds for this node (0 after Redis lost
/// them: the node then writes them again).
const LUA_HEARTBEAT: &str = r#"
local t = alive(tonumber(ARGV[2]))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('%d', t))
redis.call('EXPIRE', KEYS[4], ARGV[3])
return redis.call('HLEN', KEYS[1])
"#;

/// KEYS: nodes. ARGV: this node, the count keys' prefix, the count field.
/// The sum of that count over the other live nodes.
const LUA_OTHERS_SIZE: &str = r#"
local total = 0
local live = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%d', now()), '+inf')
for _, node in ipairs(live) do
  if node ~= ARGV[1] then
    local n = redis.call('HGET', ARGV[2] .. node, ARGV[3])
    if n then total = total + tonumber(n) end
  end
end
return total
"#;

/// KEYS: nodes. ARGV: this node, the membership keys' prefix. The other
/// live nodes' memberships, flat: node, field, node, field, ...
const LUA_OTHERS_MEMBERS: &str = r#"
local out = {}
local live = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%d', now()), '+inf')
for _, node in ipairs(live) do
  if node ~= ARGV[1] then
    for _, field in ipairs(redis.call('HKEYS', ARGV[2] .. node)) do
      out[#out + 1] = node
      out[#out + 1] = field
    end
  end
end
return out
"#;

/// One dialog's place in one profile: the value is `None` for a profile
/// without values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Membership {
    pub profile: String,
    pub value: Option<String>,
    pub dialog: String,
}

/// A membership held by another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMembership {
    /// The node's name, as it writes it.
    pub node: String,
    pub membership: Membership,
}

impl Membership {
    /// The hash field it is stored under.
    fn field(&self) -> String {
        serde_json::to_string(&(&self.profile, &self.value, &self.dialog))
            .unwrap_or_else(|_| unreachable!("strings always serialize"))
    }

    fn from_field(field: &str) -> Option<Membership> {
        let (profile, value, dialog): (String, Option<String>, String) =
            serde_json::from_str(field).ok()?;
        Some(Membership {
            profile,
            value,
            dialog,
        })
    }
}

/// The count field of a profile's size (`value` `None`: every value).
fn count_field(profile: &str, value: Option<&str>) -> String {
    match value {
        None => serde_json::to_string(&[profile]),
        Some(v) => serde_json::to_string(&[profile, v]),
    }
    .unwrap_or_else(|_| unreachable!("strings always serialize"))
}

/// `%` and `:` percent-encoded, so tenants and nodes never share keys.
fn escape(part: &str) -> String {
    part.replace('%', "%25").replace(':', "%3A")
}

/// Keeps a copy of each node's dialogs so a node that restarts finds
/// them: records are JSON strings the dialog module writes and reads
/// back, opaque here.
#[async_trait]
pub trait DialogBackup: Send + Sync {
    /// Store (or replace) `dialog`'s record.
    async fn save(
        &self,
        tenant: &str,
        node: &str,
        dialog: &str,
        record: &str,
    ) -> Result<(), StoreError>;
    /// Remove `dialog`'s record; whether there was one.
    async fn delete(&self, tenant: &str, node: &str, dialog: &str) -> Result<bool, StoreError>;
    /// Every record the node keeps: (dialog id, record).
    async fn load_all(&self, tenant: &str, node: &str)
    -> Result<Vec<(String, String)>, StoreError>;
}

/// Dialog profiles and dialog records of every tenant and node in one
/// Redis server (see the module docs for the layout). Every call is one
/// or a few bounded round trips (1 s each, less where the caller bounds
/// it further); an unreachable server gives [`StoreError::Unavailable`]
/// and the connection is reopened by a later call.
pub struct RedisDialogs {
    conn: RedisConn,
    add: Script,
    remove: Script,
    replace: Script,
    heartbeat: Script,
    others_size: Script,
    others_members: Script,
}

/// The keys of one tenant's node.
struct NodeKeys {
    prof: String,
    count: String,
    nodes: String,
    node: String,
}

impl NodeKeys {
    fn new(tenant: &str, node: &str) -> NodeKeys {
        let (t, n) = (escape(tenant), escape(node));
        NodeKeys {
            prof: format!("{PREFIX}prof:{t}:{n}"),
            count: format!("{PREFIX}count:{t}:{n}"),
            nodes: nodes_key(tenant),
            node: n,
        }
    }
}

fn nodes_key(tenant: &str) -> String {
    format!("{PREFIX}nodes:{}", escape(tenant))
}

fn backup_key(tenant: &str, node: &str) -> String {
    format!("{PREFIX}backup:{}:{}", escape(tenant), escape(node))
}

fn ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisDialogs {
    /// Connect to `url` (`redis://[:password@]host:port[/db]`); fails when
    /// Redis cannot be reached now, so a wrong address shows at start-up.
    pub async fn connect(url: &str) -> Result<RedisDialogs, StoreError> {
        let script = |body: &str| Script::new(&format!("{LUA_PRELUDE}{body}"));
        Ok(RedisDialogs {
            conn: RedisConn::connect(url).await?,
            add: script(LUA_ADD),
            remove: script(LUA_REMOVE),
            replace: script(LUA_REPLACE),
            heartbeat: script(LUA_HEARTBEAT),
            others_size: script(LUA_OTHERS_SIZE),
            others_members: script(LUA_OTHERS_MEMBERS),
        })
    }

    /// `host:port` of the server, for logs.
    pub fn address(&self) -> &str {
        &self.conn.address
    }

    /// Run one of the membership scripts over `members`.
    async fn write(
        &self,
        script: &Script,
        tenant: &str,
        node: &str,
        ttl: Duration,
        members: &[Membership],
    ) -> Result<usize, StoreError> {
        let keys = NodeKeys::new(tenant, node);
        let mut invocation = script.key(&keys.prof);
        invocation
            .key(&keys.count)
            .key(&keys.nodes)
            .arg(&keys.node)
            .arg(ms(ttl));
        for m in members {
            invocation
                .arg(m.field())
                .arg(count_field(&m.profile, None))
                .arg(
                    m.value
                        .as_deref()
                        .map(|v| count_field(&m.profile, Some(v)))
                        .unwrap_or_default(),
                );
        }
        self.conn.invoke(&invocation).await
    }

    /// Add the node's `members` (those it has already are left alone) and
    /// keep the node alive for `ttl`; how many were new.
    pub async fn add_memberships(
        &self,
        tenant: &str,
        node: &str,
        ttl: Duration,
        members: &[Membership],
    ) -> Result<usize, StoreError> {
        self.write(&self.add, tenant, node, ttl, members).await
    }

    /// Remove the node's `members`; how many it had.
    pub async fn remove_memberships(
        &self,
        tenant: &str,
        node: &str,
        ttl: Duration,
        members: &[Membership],
    ) -> Result<usize, StoreError> {
        self.write(&self.remove, tenant, node, ttl, members).await
    }

    /// Make `members` all the node has (after an outage, or at start).
    pub async fn replace_memberships(
        &self,
        tenant: &str,
        node: &str,
        ttl: Duration,
        members: &[Membership],
    ) -> Result<(), StoreError> {
        self.write(&self.replace, tenant, node, ttl, members)
            .await
            .map(drop)
    }

    /// Keep the node (memberships, dialog records) alive for `ttl` and
    /// drop the nodes that stopped; how many memberships Redis holds for
    /// the node (fewer than it has when Redis lost them).
    pub async fn heartbeat(
        &self,
        tenant: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<usize, StoreError> {
        let keys = NodeKeys::new(tenant, node);
        let mut invocation = self.heartbeat.key(&keys.prof);
        invocation
            .key(&keys.count)
            .key(&keys.nodes)
            .key(backup_key(tenant, node))
            .arg(&keys.node)
            .arg(ms(ttl))
            .arg(BACKUP_TTL.as_secs());
        self.conn.invoke(&invocation).await
    }

    /// The members of `profile` (with `value`, or any value when `None`)
    /// on the tenant's other live nodes.
    pub async fn others_size(
        &self,
        tenant: &str,
        node: &str,
        profile: &str,
        value: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut invocation = self.others_size.key(nodes_key(tenant));
        invocation
            .arg(escape(node))
            .arg(format!("{PREFIX}count:{}:", escape(tenant)))
            .arg(count_field(profile, value));
        self.conn.invoke(&invocation).await
    }

    /// The memberships of `profile` (with `value`, or any when `None`) on
    /// the tenant's other live nodes, by node and membership.
    pub async fn others_members(
        &self,
        tenant: &str,
        node: &str,
        profile: &str,
        value: Option<&str>,
    ) -> Result<Vec<NodeMembership>, StoreError> {
        let mut invocation = self.others_members.key(nodes_key(tenant));
        invocation
            .arg(escape(node))
            .arg(format!("{PREFIX}prof:{}:", escape(tenant)));
        let flat: Vec<String> = self.conn.invoke(&invocation).await?;
        let mut out: Vec<NodeMembership> = flat
            .chunks_exact(2)
            .filter_map(|pair| {
                let membership = Membership::from_field(&pair[1])?;
                let wanted = membership.profile == profile
                    && value.is_none_or(|v| membership.value.as_deref() == Some(v));
                wanted.then(|| NodeMembership {
                    node: pair[0].replace("%3A", ":").replace("%25", "%"),
                    membership,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.node, &a.membership).cmp(&(&b.node, &b.membership)));
        Ok(out)
    }
}

#[async_trait]
impl DialogBackup for RedisDialogs {
    async fn save(
        &self,
        tenant: &str,
        node: &str,
        dialog: &str,
        record: &str,
    ) -> Result<(), StoreError> {
        let key = backup_key(tenant, node);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&key)
            .arg(dialog)
            .arg(record)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(BACKUP_TTL.as_secs())
            .ignore();
        let pipe = &pipe;
        self.conn
            .call(|mut redis| async move { pipe.query_async::<()>(&mut redis).await })
            .await
    }

    async fn delete(&self, tenant: &str, node: &str, dialog: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(backup_key(tenant, node)).arg(dialog);
        let n: u64 = self.conn.query(&cmd).await?;
        Ok(n > 0)
    }

    async fn load_all(
        &self,
        tenant: &str,
        node: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let key = backup_key(tenant, node);
        // HSCAN may return an entry twice: a map keeps each once.
        let mut found = HashMap::new();
        let mut cursor = 0u64;
        loop {
            let mut cmd = redis::cmd("HSCAN");
            cmd.arg(&key).arg(cursor).arg("COUNT").arg(SCAN_COUNT);
            let (next, flat): (u64, Vec<String>) = self.conn.query(&cmd).await?;
            for pair in flat.chunks_exact(2) {
                found.insert(pair[0].clone(), pair[1].clone());
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut out: Vec<(String, String)> = found.into_iter().collect();
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_keys_stay_apart() {
        for value in [None, Some("a\"b:c".to_string())] {
            let m = Membership {
                profile: "caller".into(),
                value,
                dialog: "d:1".into(),
            };
            assert_eq!(Membership::from_field(&m.field()), Some(m));
        }
        assert_eq!(Membership::from_field("not json"), None);
        assert_ne!(count_field("p", None), count_field("p", Some("")));
        assert_ne!(
            NodeKeys::new("a:b", "c").prof,
            NodeKeys::new("a", "b:c").prof
        );
        assert_eq!(
            backup_key("t", "n1"),
            "kemibox:dlg:backup:t:n1",
            "the documented layout"
        );
    }
}
