//! Dialog profiles (Kamailio's dialog module: `profiles_with_value`,
//! `profiles_no_value`, `set_dlg_profile`, `unset_dlg_profile`,
//! `is_in_profile`, `get_profile_size`, and the RPCs
//! `dlg.profile_get_size` / `dlg.profile_list`), and the tenant's
//! concurrent-call count for its `max_calls` quota, which is one more
//! profile (internal, without values) so that both count calls the same
//! way on one node and across nodes.
//!
//! One [`Profiles`] per tenant, shared by its instances, surviving script
//! reloads. This node's memberships are always kept here, in memory and
//! bounded ([`DEFAULT_MAX_MEMBERSHIPS`]): they answer `is_in_profile` and
//! this node's part of every size.
//!
//! With a shared store ([`Shared`], `[dialog] backend = "redis"`), every
//! change is also written to Redis under this node's keys, which a
//! heartbeat ([`Profiles::heartbeat`], every third of the node's `ttl`)
//! keeps alive, so a crashed node's calls stop counting `ttl` after its
//! last heartbeat. A size is this node's count plus the other live nodes'
//! from Redis, that remote part cached for [`Shared::size_cache`] so a
//! busy profile costs one round trip per cache period, not one per call.
//!
//! A Redis failure never fails the caller: the change is kept here, the
//! tenant is *degraded* (one warning, the `kemibox_dialog_store_degraded`
//! gauge at 1, `kemibox_dialog_store_failures_total` counting), sizes
//! count this node's calls only, and no call waits on Redis. The
//! heartbeat keeps trying; when Redis answers it writes this node's
//! memberships again (replacing what Redis had) and the tenant is back to
//! cluster-wide counts with one info line. Each round trip on the SIP
//! path is bounded by [`SIP_PATH_TIMEOUT`].

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use kemibox_metrics::{Counter, Gauge, ModuleKind, ModuleSeries};
use kemibox_store::{Membership, RedisDialogs, StoreError};

/// Memberships one tenant keeps on one node unless configured: beyond
/// it, `set_dlg_profile` fails (and a call over it is refused by the
/// quota), so a script cannot grow the process without bound.
pub const DEFAULT_MAX_MEMBERSHIPS: usize = 100_000;

/// How long a node's memberships count after its last heartbeat, unless
/// configured (`[dialog] node_ttl`).
pub const DEFAULT_NODE_TTL: Duration = Duration::from_secs(15);

/// How long the other nodes' part of a size is reused, unless set.
pub const DEFAULT_SIZE_CACHE: Duration = Duration::from_millis(250);

/// The longest a profile function waits on Redis while handling a
/// message; past it the tenant is degraded as for any failure.
pub const SIP_PATH_TIMEOUT: Duration = Duration::from_millis(250);

/// The internal profile counting the tenant's calls: its name cannot be
/// declared (profile names are letters, digits, `_`, `-`, `.`).
const CALLS: &str = "$calls";

/// Why a profile function failed: the KSR layer returns -1 and logs it
/// as a script error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileError {
    /// No profile of that name is declared for the tenant.
    Unknown(String),
    /// A profile declared with values was given none to set.
    ValueRequired(String),
    /// The tenant holds the most memberships it may on this node.
    Full(usize),
    /// The tenant has its `max_calls` calls (on every live node when
    /// shared): a call is not counted past it.
    Quota(u64),
}

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProfileError::Unknown(p) => write!(
                f,
                "no dialog profile {p:?}: declare it in [dialog] profiles_with_value or profiles_no_value"
            ),
            ProfileError::ValueRequired(p) => {
                write!(f, "dialog profile {p:?} is declared with values: give one")
            }
            ProfileError::Full(max) => write!(
                f,
                "the tenant holds {max} dialog profile memberships on this node, the most it may"
            ),
            ProfileError::Quota(max) => write!(f, "the tenant has its {max} calls (max_calls)"),
        }
    }
}

impl std::error::Error for ProfileError {}

/// The profiles a tenant declares (Kamailio's `profiles_with_value` and
/// `profiles_no_value`), checked by the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileSpecs {
    pub with_value: Vec<String>,
    pub no_value: Vec<String>,
}

/// Where a tenant's memberships are shared with the other nodes.
#[derive(Clone)]
pub struct Shared {
    pub redis: Arc<RedisDialogs>,
    /// This node's name, the same across its restarts, unique among the
    /// nodes sharing the Redis.
    pub node: String,
    /// How long this node's memberships count after its last heartbeat.
    pub ttl: Duration,
    /// How long the other nodes' part of a size is reused (zero: asked
    /// every time).
    pub size_cache: Duration,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("redis", &self.redis.address())
            .field("node", &self.node)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// One member of a profile, for `dlg.profile_list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub dialog: String,
    pub value: Option<String>,
    /// The node holding the dialog; `None`: this one.
    pub node: Option<String>,
}

/// A size asked for: a profile, and a value or every value.
type SizeKey = (String, Option<String>);

/// This node's memberships of one tenant.
#[derive(Debug, Default)]
struct Local {
    members: BTreeSet<Membership>,
    /// Per profile (value `None`) and per profile and value.
    counts: HashMap<SizeKey, u64>,
    /// Bumped by every change, so a resync that raced one knows it.
    epoch: u64,
}

impl Local {
    fn count(&mut self, m: &Membership, up: bool) {
        let mut keys = vec![(m.profile.clone(), None)];
        if m.value.is_some() {
            keys.push((m.profile.clone(), m.value.clone()));
        }
        for key in keys {
            let n = self.counts.entry(key.clone()).or_default();
            if up {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.counts.remove(&key);
                }
            }
        }
        self.epoch += 1;
    }

    fn size(&self, profile: &str, value: Option<&str>) -> u64 {
        let key = (profile.to_string(), value.map(str::to_string));
        self.counts.get(&key).copied().unwrap_or(0)
    }
}

/// The shared part's state.
#[derive(Debug)]
struct Sharing {
    settings: Shared,
    /// Redis failed and has not been written to since: sizes are local.
    degraded: AtomicBool,
    /// Redis may not hold what this node has: the next heartbeat writes
    /// it all. Set at start, so a restarted node replaces what its
    /// previous life left.
    dirty: AtomicBool,
    /// The other nodes' part of a size, and when it was read.
    cache: Mutex<HashMap<SizeKey, (Instant, u64)>>,
}

#[derive(Debug)]
struct Inner {
    tenant: String,
    /// Declared profiles: name to whether it has values.
    declared: HashMap<String, bool>,
    max: usize,
    local: Mutex<Local>,
    shared: Option<Sharing>,
    metrics: Arc<DialogStoreMetrics>,
}

/// A tenant's dialog profiles and call count (see the module docs).
#[derive(Debug, Clone)]
pub struct Profiles {
    inner: Arc<Inner>,
}

impl Default for Profiles {
    /// No profiles, local: what a tenant without `[dialog]` settings has
    /// (it still counts its calls).
    fn default() -> Profiles {
        Profiles::new("", &ProfileSpecs::default(), DEFAULT_MAX_MEMBERSHIPS, None)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Profiles {
    /// `tenant`'s profiles as `specs` declares them, at most `max`
    /// memberships on this node, shared through `shared` when given.
    pub fn new(tenant: &str, specs: &ProfileSpecs, max: usize, shared: Option<Shared>) -> Profiles {
        let declared = (specs.with_value.iter().map(|p| (p.clone(), true)))
            .chain(specs.no_value.iter().map(|p| (p.clone(), false)))
            .collect();
        Profiles {
            inner: Arc::new(Inner {
                tenant: tenant.to_string(),
                declared,
                max,
                local: Mutex::new(Local::default()),
                shared: shared.map(|settings| Sharing {
                    settings,
                    degraded: AtomicBool::new(false),
                    dirty: AtomicBool::new(true),
                    cache: Mutex::new(HashMap::new()),
                }),
                metrics: Arc::new(DialogStoreMetrics::default()),
            }),
        }
    }

    /// Its metrics (reported through the tenant state's series while
    /// the profiles are shared).
    pub fn metrics(&self) -> Arc<DialogStoreMetrics> {
        self.inner.metrics.clone()
    }

    /// The declared profiles, by name, with whether each has values.
    pub fn declared(&self) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = (self.inner.declared.iter())
            .map(|(p, v)| (p.clone(), *v))
            .collect();
        out.sort();
        out
    }

    /// Whether `profile` has values; an error when it is not declared.
    pub fn has_value(&self, profile: &str) -> Result<bool, ProfileError> {
        self.inner
            .declared
            .get(profile)
            .copied()
            .ok_or_else(|| ProfileError::Unknown(profile.to_string()))
    }

    /// Whether memberships are shared with other nodes (through Redis).
    pub fn is_shared(&self) -> bool {
        self.inner.shared.is_some()
    }

    /// Whether sizes count only this node's calls now (Redis lost).
    pub fn is_degraded(&self) -> bool {
        (self.inner.shared.as_ref()).is_some_and(|s| s.degraded.load(Ordering::Relaxed))
    }

    /// `value` as a membership of `profile` keeps it: none for a profile
    /// without values (Kamailio ignores it there).
    fn membership(&self, profile: &str, value: Option<&str>, dialog: &str) -> Membership {
        let has_value = self.inner.declared.get(profile).copied().unwrap_or(false);
        Membership {
            profile: profile.to_string(),
            value: value.filter(|_| has_value).map(str::to_string),
            dialog: dialog.to_string(),
        }
    }

    /// `set_dlg_profile(profile [, value])` for `dialog`: true when it
    /// was not a member yet (a dialog is in a profile with a value once).
    pub async fn add(
        &self,
        profile: &str,
        value: Option<&str>,
        dialog: &str,
    ) -> Result<bool, ProfileError> {
        if self.has_value(profile)? && value.is_none() {
            return Err(ProfileError::ValueRequired(profile.to_string()));
        }
        self.insert(self.membership(profile, value, dialog), None)
            .await
    }

    /// Add `m` (false when it is there already), refused when the tenant
    /// holds its `max` memberships or, with `quota` `(max, others)`, when
    /// `m`'s profile has `max` members here and on the `others` nodes.
    /// The check and the count are under one lock.
    async fn insert(&self, m: Membership, quota: Option<(u64, u64)>) -> Result<bool, ProfileError> {
        {
            let mut local = lock(&self.inner.local);
            if local.members.contains(&m) {
                return Ok(false);
            }
            if let Some((max, others)) = quota
                && local.size(&m.profile, None) + others >= max
            {
                return Err(ProfileError::Quota(max));
            }
            if local.members.len() >= self.inner.max {
                return Err(ProfileError::Full(self.inner.max));
            }
            local.count(&m, true);
            local.members.insert(m.clone());
        }
        self.write(true, std::slice::from_ref(&m)).await;
        Ok(true)
    }

    /// `unset_dlg_profile(profile [, value])` for `dialog`: whether it was
    /// a member. A profile with values is left only with the value it was
    /// set with.
    pub async fn remove(
        &self,
        profile: &str,
        value: Option<&str>,
        dialog: &str,
    ) -> Result<bool, ProfileError> {
        let has_value = self.has_value(profile)?;
        let gone: Vec<Membership> = {
            let mut local = lock(&self.inner.local);
            let found = if has_value {
                value.map(|_| self.membership(profile, value, dialog))
            } else {
                Some(self.membership(profile, None, dialog))
            };
            match found.filter(|m| local.members.remove(m)) {
                Some(m) => {
                    local.count(&m, false);
                    vec![m]
                }
                None => vec![],
            }
        };
        self.write(false, &gone).await;
        Ok(!gone.is_empty())
    }

    /// `is_in_profile(profile [, value])` for `dialog` (a dialog of this
    /// node): with a value, whether it is in the profile with that value;
    /// without, whether it is in the profile at all.
    pub fn is_in(
        &self,
        profile: &str,
        value: Option<&str>,
        dialog: &str,
    ) -> Result<bool, ProfileError> {
        let has_value = self.has_value(profile)?;
        let local = lock(&self.inner.local);
        Ok(match value.filter(|_| has_value) {
            Some(_) => local
                .members
                .contains(&self.membership(profile, value, dialog)),
            None => local
                .members
                .iter()
                .any(|m| m.profile == profile && m.dialog == dialog),
        })
    }

    /// `get_profile_size(profile [, value])`: the dialogs in the profile
    /// (with `value`, or with any value when `None`; a value is ignored
    /// for a profile without values), on every live node when shared.
    pub async fn size(&self, profile: &str, value: Option<&str>) -> Result<u64, ProfileError> {
        let has_value = self.has_value(profile)?;
        Ok(self.count(profile, value.filter(|_| has_value)).await)
    }

    async fn count(&self, profile: &str, value: Option<&str>) -> u64 {
        let own = lock(&self.inner.local).size(profile, value);
        own + self.others(profile, value).await
    }

    /// The other nodes' part of a size: 0 when not shared or degraded.
    async fn others(&self, profile: &str, value: Option<&str>) -> u64 {
        let Some(sharing) = self.live_sharing() else {
            return 0;
        };
        let key = (profile.to_string(), value.map(str::to_string));
        let fresh = sharing.settings.size_cache;
        if !fresh.is_zero()
            && let Some((at, n)) = lock(&sharing.cache).get(&key)
            && at.elapsed() < fresh
        {
            return *n;
        }
        let s = &sharing.settings;
        let asked = s
            .redis
            .others_size(&self.inner.tenant, &s.node, profile, value);
        match bounded(asked).await {
            Ok(n) => {
                if !fresh.is_zero() {
                    lock(&sharing.cache).insert(key, (Instant::now(), n));
                }
                n
            }
            Err(e) => {
                self.degrade(sharing, &e);
                0
            }
        }
    }

    /// The shared part, unless degraded.
    fn live_sharing(&self) -> Option<&Sharing> {
        (self.inner.shared.as_ref()).filter(|s| !s.degraded.load(Ordering::Relaxed))
    }

    /// `dlg.profile_list`: the members of `profile` (with `value`, or
    /// any), this node's first, then the other live nodes' when shared
    /// and Redis answers (else this node's only).
    pub async fn list(
        &self,
        profile: &str,
        value: Option<&str>,
    ) -> Result<Vec<Member>, ProfileError> {
        let has_value = self.has_value(profile)?;
        let value = value.filter(|_| has_value);
        let mut out: Vec<Member> = lock(&self.inner.local)
            .members
            .iter()
            .filter(|m| m.profile == profile && value.is_none_or(|v| m.value.as_deref() == Some(v)))
            .map(|m| Member {
                dialog: m.dialog.clone(),
                value: m.value.clone(),
                node: None,
            })
            .collect();
        if let Some(sharing) = self.live_sharing() {
            let s = &sharing.settings;
            let asked = s
                .redis
                .others_members(&self.inner.tenant, &s.node, profile, value);
            match bounded(asked).await {
                Ok(found) => out.extend(found.into_iter().map(|n| Member {
                    dialog: n.membership.dialog,
                    value: n.membership.value,
                    node: Some(n.node),
                })),
                Err(e) => self.degrade(sharing, &e),
            }
        }
        Ok(out)
    }

    /// The profiles `dialog` is in, with their values: what a dialog's
    /// record keeps, so a restarted node sets them again ([`Profiles::add`]).
    pub fn memberships_of(&self, dialog: &str) -> Vec<(String, Option<String>)> {
        lock(&self.inner.local)
            .members
            .iter()
            .filter(|m| m.dialog == dialog && m.profile != CALLS)
            .map(|m| (m.profile.clone(), m.value.clone()))
            .collect()
    }

    /// An ended dialog leaves every profile, and the call count; how many
    /// memberships it had.
    pub async fn forget(&self, dialog: &str) -> usize {
        let gone: Vec<Membership> = {
            let mut local = lock(&self.inner.local);
            let gone: Vec<Membership> = (local.members.iter())
                .filter(|m| m.dialog == dialog)
                .cloned()
                .collect();
            for m in &gone {
                local.members.remove(m);
                local.count(m, false);
            }
            gone
        };
        self.write(false, &gone).await;
        gone.len()
    }

    /// A call of the tenant started (counted by [`Profiles::calls`] until
    /// [`Profiles::call_ended`] or [`Profiles::forget`]); false when it
    /// was counted already.
    pub async fn call_started(&self, dialog: &str) -> Result<bool, ProfileError> {
        self.call_admitted(dialog, None).await
    }

    /// A call of the tenant starts if the tenant has fewer than `max`
    /// calls ([`ProfileError::Quota`] otherwise), counted as
    /// [`Profiles::call_started`]. This node's count is checked and raised
    /// under one lock, so a burst of calls cannot slip past `max`; the
    /// other nodes' part is the cached one ([`Shared::size_cache`]).
    pub async fn call_admitted(
        &self,
        dialog: &str,
        max: Option<u64>,
    ) -> Result<bool, ProfileError> {
        let quota = match max {
            Some(max) => Some((max, self.others(CALLS, None).await)),
            None => None,
        };
        let m = Membership {
            profile: CALLS.into(),
            value: None,
            dialog: dialog.into(),
        };
        self.insert(m, quota).await
    }

    /// A call of the tenant ended; whether it was counted.
    pub async fn call_ended(&self, dialog: &str) -> bool {
        let m = Membership {
            profile: CALLS.into(),
            value: None,
            dialog: dialog.into(),
        };
        let removed = {
            let mut local = lock(&self.inner.local);
            let removed = local.members.remove(&m);
            if removed {
                local.count(&m, false);
            }
            removed
        };
        if removed {
            self.write(false, std::slice::from_ref(&m)).await;
        }
        removed
    }

    /// The tenant's calls in progress, on every live node when shared:
    /// what its `max_calls` quota is checked against.
    pub async fn calls(&self) -> u64 {
        self.count(CALLS, None).await
    }

    /// Write a change to Redis unless not shared or degraded; a failure
    /// degrades the tenant and never reaches the caller.
    async fn write(&self, add: bool, members: &[Membership]) {
        if members.is_empty() {
            return;
        }
        let Some(sharing) = self.inner.shared.as_ref() else {
            return;
        };
        if sharing.degraded.load(Ordering::Relaxed) {
            // The heartbeat writes everything once Redis is back.
            sharing.dirty.store(true, Ordering::Relaxed);
            return;
        }
        let s = &sharing.settings;
        let t = &self.inner.tenant;
        let done = if add {
            bounded(s.redis.add_memberships(t, &s.node, s.ttl, members)).await
        } else {
            bounded(s.redis.remove_memberships(t, &s.node, s.ttl, members)).await
        };
        if let Err(e) = done {
            self.degrade(sharing, &e);
        }
    }

    /// Redis failed: count it; the first failure of an outage logs and
    /// switches to local counts until a heartbeat resyncs.
    fn degrade(&self, sharing: &Sharing, e: &StoreError) {
        self.inner.metrics.failures.inc();
        sharing.dirty.store(true, Ordering::Relaxed);
        if !sharing.degraded.swap(true, Ordering::Relaxed) {
            self.inner.metrics.degraded.set(1);
            tracing::warn!(
                tenant = %self.inner.tenant,
                node = %sharing.settings.node,
                error = %e,
                "dialog profiles: Redis failed; counting this node's calls only until it answers again"
            );
        }
    }

    /// Keep this node's memberships alive in Redis, and write them all
    /// again when Redis may have lost them (an outage, a Redis restarted
    /// empty, this node's start). Nothing when not shared. Run by
    /// [`Profiles::spawn_heartbeat`]; public so tests drive it.
    pub async fn heartbeat(&self) {
        let Some(sharing) = self.inner.shared.as_ref() else {
            return;
        };
        let s = &sharing.settings;
        let t = &self.inner.tenant;
        if !sharing.dirty.load(Ordering::Relaxed) {
            match s.redis.heartbeat(t, &s.node, s.ttl).await {
                Ok(held) if held == lock(&self.inner.local).members.len() => return,
                // Redis lost some (restarted, or they expired): write all.
                Ok(_) => sharing.dirty.store(true, Ordering::Relaxed),
                Err(e) => return self.degrade(sharing, &e),
            }
        }
        let (members, epoch) = {
            let local = lock(&self.inner.local);
            (
                local.members.iter().cloned().collect::<Vec<_>>(),
                local.epoch,
            )
        };
        // Cleared first: a change that fails meanwhile sets it again.
        sharing.dirty.store(false, Ordering::Relaxed);
        match s
            .redis
            .replace_memberships(t, &s.node, s.ttl, &members)
            .await
        {
            Ok(()) => {
                if lock(&self.inner.local).epoch != epoch {
                    // A change raced the snapshot: write again next time.
                    sharing.dirty.store(true, Ordering::Relaxed);
                }
                self.inner.metrics.resyncs.inc();
                lock(&sharing.cache).clear();
                if sharing.degraded.swap(false, Ordering::Relaxed) {
                    self.inner.metrics.degraded.set(0);
                    tracing::info!(
                        tenant = %t,
                        node = %s.node,
                        memberships = members.len(),
                        "dialog profiles: Redis answers again; this node's memberships written back, counting every node's calls"
                    );
                }
            }
            Err(e) => self.degrade(sharing, &e),
        }
    }

    /// Run [`Profiles::heartbeat`] every third of the node's `ttl` for as
    /// long as the profiles are held (the tenant's state). Nothing when
    /// not shared. Needs a Tokio runtime.
    pub fn spawn_heartbeat(&self) {
        let Some(sharing) = self.inner.shared.as_ref() else {
            return;
        };
        let every = (sharing.settings.ttl / 3).max(Duration::from_millis(100));
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                Profiles { inner }.heartbeat().await;
            }
        });
    }
}

/// A Redis round trip on the SIP path, bounded by [`SIP_PATH_TIMEOUT`].
async fn bounded<T>(op: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(SIP_PATH_TIMEOUT, op)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable {
                backend: "redis",
                detail: format!("no answer within {SIP_PATH_TIMEOUT:?}"),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles(max: usize) -> Profiles {
        Profiles::new(
            "t",
            &ProfileSpecs {
                with_value: vec!["caller".into()],
                no_value: vec!["inbound".into()],
            },
            max,
            None,
        )
    }

    #[tokio::test]
    async fn memberships_are_set_counted_and_left() {
        let p = profiles(100);
        assert_eq!(p.add("caller", Some("alice"), "d1").await, Ok(true));
        assert_eq!(p.add("caller", Some("alice"), "d1").await, Ok(false));
        assert_eq!(p.add("caller", Some("bob"), "d1").await, Ok(true));
        assert_eq!(p.add("caller", Some("alice"), "d2").await, Ok(true));
        assert_eq!(
            p.add("inbound", Some("ignored"), "d1").await,
            Ok(true),
            "a value is ignored for a profile without values"
        );
        assert_eq!(p.add("inbound", None, "d1").await, Ok(false));
        assert_eq!(p.add("inbound", None, "d3").await, Ok(true));

        assert_eq!(p.size("caller", None).await, Ok(3));
        assert_eq!(p.size("caller", Some("alice")).await, Ok(2));
        assert_eq!(p.size("caller", Some("carol")).await, Ok(0));
        assert_eq!(p.size("inbound", Some("whatever")).await, Ok(2));

        assert_eq!(p.is_in("caller", Some("bob"), "d1"), Ok(true));
        assert_eq!(p.is_in("caller", Some("bob"), "d2"), Ok(false));
        assert_eq!(p.is_in("caller", None, "d2"), Ok(true), "any value");
        assert_eq!(p.is_in("inbound", None, "d2"), Ok(false));

        assert_eq!(
            p.remove("caller", None, "d1").await,
            Ok(false),
            "a profile with values is left with its value"
        );
        assert_eq!(p.remove("caller", Some("bob"), "d1").await, Ok(true));
        assert_eq!(p.remove("caller", Some("bob"), "d1").await, Ok(false));
        assert_eq!(p.remove("inbound", None, "d3").await, Ok(true));
        assert_eq!(p.size("caller", None).await, Ok(2));
        assert_eq!(p.size("inbound", None).await, Ok(1));

        let mut of = p.memberships_of("d1");
        of.sort();
        assert_eq!(
            of,
            [
                ("caller".to_string(), Some("alice".to_string())),
                ("inbound".to_string(), None)
            ]
        );
        let listed = p.list("caller", Some("alice")).await.unwrap();
        let dialogs: Vec<&str> = listed.iter().map(|m| m.dialog.as_str()).collect();
        assert_eq!(dialogs, ["d1", "d2"]);
        assert!(listed.iter().all(|m| m.node.is_none()));

        assert_eq!(p.forget("d1").await, 2);
        assert_eq!(p.forget("d1").await, 0);
        assert_eq!(p.size("caller", None).await, Ok(1));
        assert_eq!(p.size("inbound", None).await, Ok(0));
        assert!(!p.is_degraded());
    }

    #[tokio::test]
    async fn misuse_is_an_error_not_a_panic() {
        let p = profiles(100);
        let unknown = Err(ProfileError::Unknown("nope".into()));
        assert_eq!(p.add("nope", None, "d").await, unknown);
        assert_eq!(p.remove("nope", None, "d").await, unknown);
        assert_eq!(p.is_in("nope", None, "d"), unknown);
        assert_eq!(p.size("nope", None).await, unknown.clone().map(|_: bool| 0));
        assert!(p.list("nope", None).await.is_err());
        assert_eq!(
            p.add("caller", None, "d").await,
            Err(ProfileError::ValueRequired("caller".into()))
        );
        assert_eq!(
            p.size(CALLS, None).await,
            Err(ProfileError::Unknown(CALLS.into())),
            "the call count is not a script's profile"
        );
        assert!(
            ProfileError::Unknown("x".into())
                .to_string()
                .contains("profiles_with_value")
        );
    }

    #[tokio::test]
    async fn memberships_are_bounded() {
        let p = profiles(2);
        assert_eq!(p.add("inbound", None, "d1").await, Ok(true));
        assert_eq!(p.call_started("d1").await, Ok(true));
        assert_eq!(
            p.add("inbound", None, "d2").await,
            Err(ProfileError::Full(2))
        );
        assert_eq!(p.call_started("d2").await, Err(ProfileError::Full(2)));
        assert_eq!(p.add("inbound", None, "d1").await, Ok(false), "no new one");
        p.forget("d1").await;
        assert_eq!(p.add("inbound", None, "d2").await, Ok(true));
    }

    #[tokio::test]
    async fn a_call_past_the_quota_is_not_counted() {
        let p = profiles(100);
        assert_eq!(p.call_admitted("d1", Some(2)).await, Ok(true));
        assert_eq!(p.call_admitted("d1", Some(2)).await, Ok(false), "once");
        assert_eq!(p.call_admitted("d2", Some(2)).await, Ok(true));
        assert_eq!(
            p.call_admitted("d3", Some(2)).await,
            Err(ProfileError::Quota(2))
        );
        assert_eq!(p.calls().await, 2);
        p.forget("d1").await;
        assert_eq!(p.call_admitted("d3", Some(2)).await, Ok(true));
        assert_eq!(p.call_admitted("d4", None).await, Ok(true), "no quota");
        assert_eq!(p.calls().await, 3);
    }

    #[tokio::test]
    async fn calls_are_counted_apart_from_the_scripts_profiles() {
        let p = profiles(100);
        assert_eq!(p.calls().await, 0);
        assert_eq!(p.call_started("d1").await, Ok(true));
        assert_eq!(p.call_started("d1").await, Ok(false));
        assert_eq!(p.call_started("d2").await, Ok(true));
        p.add("inbound", None, "d1").await.unwrap();
        assert_eq!(p.calls().await, 2);
        assert!(p.memberships_of("d1").iter().all(|(n, _)| n == "inbound"));
        assert!(p.call_ended("d2").await);
        assert!(!p.call_ended("d2").await);
        assert_eq!(p.forget("d1").await, 2, "its call and its profile");
        assert_eq!(p.calls().await, 0);
        assert_eq!(p.size("inbound", None).await, Ok(0));
        // Clones share the state (the tenant's instances).
        let q = p.clone();
        q.call_started("d3").await.unwrap();
        assert_eq!(p.calls().await, 1);
    }
}

/// One tenant's shared dialog store (dialog profiles and the call count
/// in Redis): how often Redis failed it and whether it runs on local
/// state only until Redis answers again.
#[derive(Debug, Default)]
pub struct DialogStoreMetrics {
    /// Redis operations that failed (each outage starts with one).
    pub failures: Counter,
    /// 1 while the tenant counts only this node's calls (Redis lost).
    pub degraded: Gauge,
    /// Times this node wrote its memberships to Redis again after an
    /// outage or a Redis that lost them.
    pub resyncs: Counter,
}

impl DialogStoreMetrics {
    /// Its series (the registry adds the tenant label).
    pub fn metric_series(&self, out: &mut Vec<ModuleSeries>) {
        ModuleSeries::of_tenant(
            [
                (
                    "kemibox_dialog_store_failures_total",
                    ModuleKind::Counter,
                    "Redis operations of the tenant's shared dialog store (profiles, call count) that failed.",
                    self.failures.get(),
                ),
                (
                    "kemibox_dialog_store_degraded",
                    ModuleKind::Gauge,
                    "1 while the tenant's profiles and call count use this node's calls only (Redis lost).",
                    self.degraded.get(),
                ),
                (
                    "kemibox_dialog_store_resyncs_total",
                    ModuleKind::Counter,
                    "Times this node wrote the tenant's profile memberships to Redis again after an outage.",
                    self.resyncs.get(),
                ),
            ],
            out,
        );
    }
}
