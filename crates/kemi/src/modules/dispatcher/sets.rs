//! A tenant's destination sets and everything the dispatcher keeps
//! across messages: the sets (swapped whole on reload), each
//! destination's state, the call load table (algorithm 10) and the
//! probing switch.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kemibox_sip::Uri;

use super::health::{Health, ProbingMode, ReplyCodes, Thresholds};
use super::list::{self, Attrs, DestSpec};

/// The module's settings (Kamailio's parameters of the same names).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the sets come from (`list_file`); `None`: no sets, unless
    /// `db`.
    pub list_file: Option<PathBuf>,
    /// `db`: the sets come from the tenant's rows of the dispatcher table
    /// (the proxy's database) instead of a list file.
    pub db: bool,
    /// `flags`: 1 hash URIs on the user only, 2 keep the other
    /// destinations for failover.
    pub flags: u32,
    /// `force_dst`: selecting overwrites a `$du` already set.
    pub force_dst: bool,
    /// `hash_pvar`: what algorithm 7 hashes (pseudo-variables expanded).
    pub hash_pvar: Option<String>,
    /// `setid_pvname` / `attrs_pvname`: where `ds_is_from_list` puts the
    /// matching set id and attributes.
    pub setid_pvname: Option<String>,
    pub attrs_pvname: Option<String>,
    pub ping_method: String,
    pub ping_from: String,
    /// `ds_ping_interval`; zero: no probes.
    pub ping_interval: Duration,
    pub probing_mode: ProbingMode,
    pub thresholds: Thresholds,
    pub reply_codes: ReplyCodes,
    /// `ds_hash_size`: call load dispatching (algorithm 10) needs it above
    /// zero; the table holds at most 2^size calls.
    pub hash_size: u32,
    /// `ds_hash_expire`: a confirmed call's load is dropped after this.
    pub hash_expire: Duration,
    /// `ds_hash_initexpire`: an unconfirmed call's load after this.
    pub hash_initexpire: Duration,
    /// `ds_hash_check_interval`: how often expired loads are removed.
    pub hash_check_interval: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            list_file: None,
            db: false,
            flags: 0,
            force_dst: true,
            hash_pvar: None,
            setid_pvname: None,
            attrs_pvname: None,
            ping_method: "OPTIONS".into(),
            ping_from: "sip:dispatcher@localhost".into(),
            ping_interval: Duration::ZERO,
            probing_mode: ProbingMode::default(),
            thresholds: Thresholds::default(),
            reply_codes: ReplyCodes::default(),
            hash_size: 0,
            hash_expire: Duration::from_secs(7200),
            hash_initexpire: Duration::from_secs(7200),
            hash_check_interval: Duration::from_secs(30),
        }
    }
}

/// `flags` bit: hash URIs on their user part only.
pub const FLAG_HASH_USER: u32 = 1;
/// `flags` bit: keep the other destinations for `ds_next_dst`.
pub const FLAG_FAILOVER: u32 = 2;

/// Latency of a destination's probes (algorithm 13).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Moving estimate in ms (weight 0.9 to the past, as Kamailio's
    /// default `ds_latency_estimator_alpha`).
    pub estimate: f64,
    pub max: u64,
    /// Probes that timed out.
    pub timeouts: u64,
}

/// One destination of a set.
#[derive(Debug)]
pub struct Destination {
    pub setid: i32,
    pub uri: String,
    /// Host of the URI, brackets kept for IPv6.
    pub host: String,
    /// Port of the URI; 0 when not given (matches any port).
    pub port: u16,
    /// "udp", "tcp", "tls", ... from the URI (`transport=`, `sips:`).
    pub proto: String,
    /// The host's addresses (an IP literal's own, or looked up at load).
    pub addrs: Vec<IpAddr>,
    pub priority: i32,
    pub attrs: Attrs,
    pub description: String,
    health: Mutex<Health>,
    latency: Mutex<Latency>,
    /// A probe of it is waiting for its reply.
    pub(crate) probing: AtomicBool,
    /// Times it was selected (the first of a selection).
    pub selected: AtomicU64,
}

impl Destination {
    fn new(spec: DestSpec, addrs: Vec<IpAddr>) -> Destination {
        let (host, port, proto) = match Uri::parse(&spec.uri) {
            Ok(u) => {
                let proto = match u.param("transport") {
                    Some(Some(t)) => t.to_ascii_lowercase(),
                    _ if u.scheme.eq_ignore_ascii_case("sips") => "tls".into(),
                    _ => "udp".into(),
                };
                (u.host.to_string(), u.port.unwrap_or(0), proto)
            }
            // Checked when the list was read.
            Err(_) => (String::new(), 0, "udp".into()),
        };
        Destination {
            setid: spec.setid,
            uri: spec.uri,
            host,
            port,
            proto,
            addrs,
            priority: spec.priority,
            latency: Mutex::new(Latency {
                estimate: f64::from(spec.attrs.latency),
                ..Latency::default()
            }),
            attrs: spec.attrs,
            description: spec.description,
            health: Mutex::new(Health::from_flags(spec.flags)),
            probing: AtomicBool::new(false),
            selected: AtomicU64::new(0),
        }
    }

    pub fn health(&self) -> Health {
        *self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the state through Kamailio's state machine.
    pub fn update(&self, state: u32, t: Thresholds) -> Health {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.update(state, t);
        *h
    }

    fn set_health(&self, h: Health) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = h;
    }

    pub fn skipped(&self) -> bool {
        self.health().skipped()
    }

    pub fn latency(&self) -> Latency {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a probe's round trip (`None`: it timed out).
    pub fn observe_latency(&self, ms: Option<u64>) {
        let mut l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        match ms {
            Some(ms) => {
                l.estimate = if l.estimate == 0.0 {
                    ms as f64
                } else {
                    0.9 * l.estimate + 0.1 * ms as f64
                };
                l.max = l.max.max(ms);
            }
            None => l.timeouts += 1,
        }
    }

    /// The URI's `host[:port]`, what the domain variants put in the
    /// R-URI.
    pub fn hostport(&self) -> (String, Option<u16>) {
        (self.host.clone(), Some(self.port).filter(|p| *p != 0))
    }
}

/// One set: its destinations by priority (highest first, then file
/// order) and the counters its algorithms step through.
#[derive(Debug)]
pub struct Set {
    pub id: i32,
    pub dests: Vec<Arc<Destination>>,
    /// Round robin position (algorithms 4, 5 without a user, 13).
    pub(crate) rr: AtomicUsize,
    /// Algorithm 9's 100 slots, each a destination index.
    pub(crate) weights: Vec<usize>,
    pub(crate) wlast: AtomicUsize,
    pub(crate) rwlast: AtomicUsize,
}

impl Set {
    fn new(id: i32, mut dests: Vec<Arc<Destination>>) -> Set {
        // Stable: equal priorities keep the file's order.
        dests.sort_by_key(|d| std::cmp::Reverse(d.priority));
        let weights =
            super::algo::weight_slots(&dests.iter().map(|d| d.attrs.weight).collect::<Vec<_>>());
        Set {
            id,
            dests,
            rr: AtomicUsize::new(0),
            weights,
            wlast: AtomicUsize::new(0),
            rwlast: AtomicUsize::new(0),
        }
    }

    pub fn find(&self, uri: &str) -> Option<&Arc<Destination>> {
        self.dests.iter().find(|d| d.uri.eq_ignore_ascii_case(uri))
    }
}

/// Every set of a tenant, as loaded at one time.
#[derive(Debug, Default)]
pub struct Sets {
    pub sets: BTreeMap<i32, Set>,
}

impl Sets {
    /// The destination `uri` of set `setid`.
    pub fn find(&self, setid: i32, uri: &str) -> Option<&Arc<Destination>> {
        self.sets.get(&setid)?.find(uri)
    }

    /// Build the sets of `specs`, their hosts looked up (not those with
    /// flag 16); a host that does not resolve is kept, matching nothing
    /// in `ds_is_from_list`, and logged.
    pub async fn build(tenant: &str, specs: Vec<DestSpec>) -> Sets {
        let mut by_set: BTreeMap<i32, Vec<Arc<Destination>>> = BTreeMap::new();
        for spec in specs {
            let addrs = if spec.flags & list::flags::NODNSARES != 0 {
                Vec::new()
            } else {
                resolve(tenant, &spec.uri).await
            };
            by_set
                .entry(spec.setid)
                .or_default()
                .push(Arc::new(Destination::new(spec, addrs)));
        }
        Sets {
            sets: by_set
                .into_iter()
                .map(|(id, dests)| (id, Set::new(id, dests)))
                .collect(),
        }
    }

    /// Every destination, set by set.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Destination>> {
        self.sets.values().flat_map(|s| s.dests.iter())
    }
}

/// The addresses of `uri`'s host.
async fn resolve(tenant: &str, uri: &str) -> Vec<IpAddr> {
    let Ok(u) = Uri::parse(uri) else {
        return Vec::new();
    };
    let host = u.host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![ip];
    }
    match tokio::net::lookup_host((host, u.port.unwrap_or(5060))).await {
        Ok(found) => found.map(|a| a.ip()).collect(),
        Err(e) => {
            tracing::warn!(
                tenant,
                uri,
                "dispatcher: cannot resolve the destination's host: {e}"
            );
            Vec::new()
        }
    }
}

/// One call's load (algorithm 10), by Call-ID.
#[derive(Debug, Clone)]
struct LoadCell {
    setid: i32,
    duid: String,
    confirmed: bool,
    expires: Instant,
}

/// The call load table: calls by Call-ID and the count per destination.
#[derive(Debug, Default)]
pub struct Loads {
    calls: HashMap<String, LoadCell>,
    counts: HashMap<(i32, String), u32>,
}

impl Loads {
    /// The calls destination `duid` of set `setid` carries.
    pub fn load(&self, setid: i32, duid: &str) -> u32 {
        self.counts
            .get(&(setid, duid.to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn add(&mut self, callid: &str, setid: i32, duid: &str, expires: Instant) {
        self.remove(callid);
        *self.counts.entry((setid, duid.to_string())).or_default() += 1;
        self.calls.insert(
            callid.to_string(),
            LoadCell {
                setid,
                duid: duid.to_string(),
                confirmed: false,
                expires,
            },
        );
    }

    fn remove(&mut self, callid: &str) -> bool {
        let Some(cell) = self.calls.remove(callid) else {
            return false;
        };
        let key = (cell.setid, cell.duid);
        if let Some(n) = self.counts.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.counts.remove(&key);
            }
        }
        true
    }

    fn len(&self) -> usize {
        self.calls.len()
    }
}

/// The dispatcher table a tenant reads its destinations from.
#[derive(Clone)]
pub struct Table(pub Arc<dyn kemibox_store::DispatcherStore>);

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dispatcher table")
    }
}

/// A tenant's dispatcher: settings, sets, load table, probing switch.
#[derive(Debug)]
pub struct Dispatcher {
    pub settings: Settings,
    /// Where the destinations come from with `db` (else the list file).
    table: Option<Table>,
    sets: RwLock<Arc<Sets>>,
    loads: Mutex<Loads>,
    ping_active: AtomicBool,
    /// Bounds the probes waiting for replies at once.
    pub(crate) probe_slots: Arc<tokio::sync::Semaphore>,
}

/// Probes of one tenant waiting for replies at once, at most.
pub const MAX_PROBES_IN_FLIGHT: usize = 64;

impl Default for Dispatcher {
    fn default() -> Dispatcher {
        Dispatcher::new(Settings::default(), Sets::default())
    }
}

impl Dispatcher {
    pub fn new(settings: Settings, sets: Sets) -> Dispatcher {
        Dispatcher {
            settings,
            table: None,
            sets: RwLock::new(Arc::new(sets)),
            loads: Mutex::new(Loads::default()),
            ping_active: AtomicBool::new(true),
            probe_slots: Arc::new(tokio::sync::Semaphore::new(MAX_PROBES_IN_FLIGHT)),
        }
    }

    /// The settings' sets, read from `list_file`, or with `db` from
    /// `table` (none without either).
    pub async fn open(
        tenant: &str,
        settings: Settings,
        table: Option<Table>,
    ) -> Result<Dispatcher, String> {
        let mut ds = Dispatcher::new(settings, Sets::default());
        ds.table = table;
        let specs = ds.read(tenant).await?;
        *ds.sets.get_mut().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Sets::build(tenant, specs).await);
        Ok(ds)
    }

    /// The destinations the settings name: the list file's, or the
    /// tenant's rows of the table with `db`.
    async fn read(&self, tenant: &str) -> Result<Vec<DestSpec>, String> {
        if !self.settings.db {
            return read_list(&self.settings);
        }
        let Some(Table(table)) = &self.table else {
            return Err("dispatcher db = true but no database was opened".into());
        };
        let rows =
            (table.destinations(tenant).await).map_err(|e| format!("dispatcher table: {e}"))?;
        rows.into_iter()
            .map(|r| {
                let flags =
                    u32::try_from(r.flags).map_err(|_| format!("flags {} is negative", r.flags));
                flags
                    .and_then(|flags| {
                        DestSpec::new(
                            r.setid,
                            &r.destination,
                            flags,
                            r.priority,
                            &r.attrs,
                            &r.description,
                        )
                    })
                    .map_err(|e| format!("dispatcher table row {}: {e}", r.id))
            })
            .collect()
    }

    /// The sets as they are now (a reload does not change this snapshot).
    pub fn sets(&self) -> Arc<Sets> {
        self.sets.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Read the list (or the table) again and swap it in at once; destinations keep
    /// their state, counters and latency by set and URI. The number of
    /// destinations; on an error the old sets stay.
    pub async fn reload(&self, tenant: &str) -> Result<usize, String> {
        let specs = self.read(tenant).await?;
        let new = Sets::build(tenant, specs).await;
        let mut current = self.sets.write().unwrap_or_else(|e| e.into_inner());
        for d in new.all() {
            if let Some(old) = current.find(d.setid, &d.uri) {
                d.set_health(old.health());
                *d.latency.lock().unwrap_or_else(|e| e.into_inner()) = old.latency();
                d.selected
                    .store(old.selected.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        let n = new.all().count();
        *current = Arc::new(new);
        Ok(n)
    }

    /// Whether the probe timer sends probes (`dispatcher.ping_active`).
    pub fn ping_active(&self) -> bool {
        self.ping_active.load(Ordering::Relaxed)
    }

    pub fn set_ping_active(&self, on: bool) -> bool {
        self.ping_active.swap(on, Ordering::Relaxed)
    }

    /// Set the state of destination `address` of set `group` (`None`:
    /// all of the set) as `dispatcher.set_state` does: the state
    /// replaces the old one. The number changed; an error names what is
    /// missing.
    pub fn set_state(
        &self,
        group: i32,
        address: Option<&str>,
        state: u32,
    ) -> Result<usize, String> {
        let sets = self.sets();
        let set = sets
            .sets
            .get(&group)
            .ok_or_else(|| format!("no destination set {group}"))?;
        let mut n = 0;
        for d in &set.dests {
            if address.is_none_or(|a| d.uri.eq_ignore_ascii_case(a)) {
                d.update(state, self.settings.thresholds);
                n += 1;
            }
        }
        if n == 0 {
            return Err(format!(
                "no destination {} in set {group}",
                address.unwrap_or_default()
            ));
        }
        Ok(n)
    }

    pub fn call_load(&self, setid: i32, duid: &str) -> u32 {
        self.loads().load(setid, duid)
    }

    /// Run `f` on the load table, locked (a selection by load and the
    /// load it adds stay consistent).
    pub fn with_loads<T>(&self, f: impl FnOnce(&Loads) -> T) -> T {
        f(&self.loads())
    }

    fn loads(&self) -> std::sync::MutexGuard<'_, Loads> {
        self.loads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Algorithm 10 on an INVITE: select by load and count call `callid`
    /// on the destination chosen, under one lock (two calls cannot both
    /// take a destination's last free place).
    pub fn choose_by_load(
        &self,
        set: &Set,
        keys: &super::algo::Keys,
        callid: &str,
        now: Instant,
    ) -> Result<usize, super::algo::NoSelection> {
        let mut loads = self.loads();
        let max = 1usize << self.settings.hash_size.min(24);
        if loads.len() >= max && !loads.calls.contains_key(callid) {
            return Err(super::algo::NoSelection::NoneActive);
        }
        let i = super::algo::choose(set, 10, keys, &loads)?;
        if let Some(duid) = set.dests[i].attrs.duid.as_deref() {
            loads.add(callid, set.id, duid, now + self.settings.hash_initexpire);
        }
        Ok(i)
    }

    /// Move call `callid`'s load to `duid` (failover to the next
    /// destination). False when the call is not tracked.
    pub fn load_replace(&self, callid: &str, setid: i32, duid: &str, now: Instant) -> bool {
        let mut loads = self.loads();
        if !loads.calls.contains_key(callid) {
            return false;
        }
        loads.add(callid, setid, duid, now + self.settings.hash_initexpire);
        true
    }

    /// Remove call `callid`'s load. False when it is not tracked.
    pub fn load_remove(&self, callid: &str) -> bool {
        self.loads().remove(callid)
    }

    /// Confirm call `callid` (its INVITE got a 2xx): it now expires after
    /// `ds_hash_expire`. False when it is not tracked.
    pub fn load_confirm(&self, callid: &str, now: Instant) -> bool {
        let expire = self.settings.hash_expire;
        match self.loads().calls.get_mut(callid) {
            Some(cell) => {
                cell.confirmed = true;
                cell.expires = now + expire;
                true
            }
            None => false,
        }
    }

    /// Remove the loads of calls past their expiry; how many.
    pub fn expire_loads(&self, now: Instant) -> usize {
        let mut loads = self.loads();
        let expired: Vec<String> = (loads.calls.iter())
            .filter(|(_, c)| c.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            loads.remove(k);
        }
        expired.len()
    }

    /// Per destination: its state (`kemibox_dispatcher_destination_up`,
    /// 1 when it can be selected, with Kamailio's letters as `state`),
    /// its selections and, with call load dispatching, its calls.
    pub fn metric_series(&self, out: &mut Vec<kemibox_metrics::ModuleSeries>) {
        use kemibox_metrics::{ModuleKind, ModuleSeries};
        let sets = self.sets();
        let labels = |d: &Destination| vec![("setid", d.setid.to_string()), ("uri", d.uri.clone())];
        for d in sets.all() {
            let h = d.health();
            let mut l = labels(d);
            l.push(("state", h.letters()));
            out.push(ModuleSeries {
                name: "kemibox_dispatcher_destination_up",
                kind: ModuleKind::Gauge,
                help: "Dispatcher destinations: 1 when selectable (active or trying), 0 when inactive or disabled; state is Kamailio's flags (AP, IX, ...).",
                labels: l,
                value: u64::from(!h.skipped()),
            });
        }
        for d in sets.all() {
            out.push(ModuleSeries {
                name: "kemibox_dispatcher_selections_total",
                kind: ModuleKind::Counter,
                help: "Times a dispatcher destination was selected first by ds_select_* (failovers not counted).",
                labels: labels(d),
                value: d.selected.load(Ordering::Relaxed),
            });
        }
        if self.settings.hash_size > 0 {
            for d in sets.all() {
                let Some(duid) = d.attrs.duid.as_deref() else {
                    continue;
                };
                out.push(ModuleSeries {
                    name: "kemibox_dispatcher_destination_calls",
                    kind: ModuleKind::Gauge,
                    help: "Calls a dispatcher destination carries (call load dispatching, algorithm 10).",
                    labels: labels(d),
                    value: u64::from(self.call_load(d.setid, duid)),
                });
            }
        }
    }

    /// Calls tracked for algorithm 10, confirmed or not.
    pub fn tracked_calls(&self) -> (usize, usize) {
        let loads = self.loads();
        let confirmed = loads.calls.values().filter(|c| c.confirmed).count();
        (loads.calls.len() - confirmed, confirmed)
    }
}

/// The destinations `settings` name (none without a list file).
fn read_list(settings: &Settings) -> Result<Vec<DestSpec>, String> {
    let Some(path) = &settings.list_file else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("dispatcher list_file {}: {e}", path.display()))?;
    list::parse(&text).map_err(|e| format!("dispatcher list_file {}: {e}", path.display()))
}
