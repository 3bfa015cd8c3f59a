//! kemibox's metrics: per-tenant counters and histograms ([`TenantMetrics`],
//! one per tenant, held by its pool so recording needs no lookup), the
//! process-wide ones ([`ProcessMetrics`]), their exposition in the
//! Prometheus text format 0.0.4 ([`Registry::render`], through
//! `prometheus-client`'s encoder) and the HTTP endpoint serving it
//! ([`http`]).
//!
//! Counters and gauges are `prometheus-client` handles (an `Arc`'d atomic,
//! relaxed ordering), created once per tenant and kept in its
//! [`TenantMetrics`], so recording is an atomic add: no label lookup, no
//! lock. Histograms are this crate's own fixed-bucket atomics
//! ([`Histogram`]): `prometheus-client`'s takes a mutex per observation,
//! and they are observed on every route invocation. The only lock on the
//! recording path is the short read lock that finds a route's counters by
//! its function name (see [`TenantMetrics::route`]).
//!
//! A scrape walks every metric once ([`Registry::families`]); the same
//! walk feeds the text exposition and the admin API's structured view, so
//! the two cannot disagree.

pub mod http;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// The `Content-Type` of [`Registry::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A monotonic counter: a `prometheus-client` counter whose increment
/// answers the new total (for log lines that quote it).
#[derive(Debug, Default)]
pub struct Counter(prometheus_client::metrics::counter::Counter<u64, AtomicU64>);

impl Counter {
    /// Count one; the new total.
    pub fn inc(&self) -> u64 {
        self.0.inc() + 1
    }

    /// Count `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }

    /// The total so far.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A value that is set (a script version): a `prometheus-client` gauge
/// over `u64`.
#[derive(Debug, Default)]
pub struct Gauge(prometheus_client::metrics::gauge::Gauge<u64, AtomicU64>);

impl Gauge {
    /// Set the value (the previous one is gone).
    pub fn set(&self, value: u64) {
        self.0.set(value);
    }

    /// The value set last (0 before any).
    pub fn get(&self) -> u64 {
        self.0.get()
    }

    /// Raise the value by `n` (a queue grew).
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }

    /// Lower the value by `n` (a queue shrank).
    pub fn sub(&self, n: u64) {
        self.0.dec_by(n);
    }
}

/// A histogram over integer observations (fuel units, nanoseconds) with
/// fixed upper bounds, lock-free (an atomic add per bucket, sum and
/// count); exposed with the bounds and the sum divided by `scale` (1e9
/// turns nanoseconds into seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    scale: f64,
    /// One per bound, then +Inf; not cumulative (summed when read).
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// `bounds` ascending, in the observations' unit.
    pub fn new(bounds: &'static [u64], scale: f64) -> Histogram {
        Histogram {
            bounds,
            scale,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The buckets as `(upper bound, observations)`, not cumulative, +Inf
    /// last, and the scaled sum.
    fn read(&self) -> HistogramReading {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let bound = self
                    .bounds
                    .get(i)
                    .map_or(f64::INFINITY, |b| *b as f64 / self.scale);
                (bound, b.load(Ordering::Relaxed))
            })
            .collect();
        HistogramReading {
            buckets,
            sum: self.sum.load(Ordering::Relaxed) as f64 / self.scale,
        }
    }
}

/// A histogram's buckets and sum read at one scrape.
#[derive(Debug, Clone)]
struct HistogramReading {
    /// `(upper bound, observations)`, not cumulative, +Inf last.
    buckets: Vec<(f64, u64)>,
    sum: f64,
}

impl HistogramReading {
    /// The observations counted: the buckets, read once, so the count and
    /// the +Inf bucket agree.
    fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }
}

/// Fuel buckets: a typical route uses 10-60 k; the default budget is 10 M.
const FUEL_BOUNDS: &[u64] = &[
    1_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000, 50_000_000,
];

/// Invocation time buckets, in nanoseconds: 50 µs to 1 s.
const SECONDS_BOUNDS: &[u64] = &[
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// How a route invocation ended: the sandbox's `Outcome`s, plus
/// `LoadFailure` when no instance could be made to run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationOutcome {
    Ok,
    LuaError,
    OutOfFuel,
    Deadline,
    OutOfMemory,
    NotFound,
    Trap,
    LoadFailure,
    /// Not run: the tenant trapped faster than its instance re-creation
    /// budget allows.
    Throttled,
}

impl InvocationOutcome {
    pub const ALL: [InvocationOutcome; 9] = [
        InvocationOutcome::Ok,
        InvocationOutcome::LuaError,
        InvocationOutcome::OutOfFuel,
        InvocationOutcome::Deadline,
        InvocationOutcome::OutOfMemory,
        InvocationOutcome::NotFound,
        InvocationOutcome::Trap,
        InvocationOutcome::LoadFailure,
        InvocationOutcome::Throttled,
    ];

    /// The `outcome` label value.
    pub fn name(self) -> &'static str {
        match self {
            InvocationOutcome::Ok => "ok",
            InvocationOutcome::LuaError => "lua_error",
            InvocationOutcome::OutOfFuel => "out_of_fuel",
            InvocationOutcome::Deadline => "deadline",
            InvocationOutcome::OutOfMemory => "out_of_memory",
            InvocationOutcome::NotFound => "not_found",
            InvocationOutcome::Trap => "trap",
            InvocationOutcome::LoadFailure => "load_failure",
            InvocationOutcome::Throttled => "throttled",
        }
    }
}

/// The counters of one route (script function) of a tenant.
#[derive(Debug)]
pub struct RouteMetrics {
    /// Indexed like [`InvocationOutcome::ALL`].
    outcomes: [Counter; 9],
    seconds: Histogram,
}

impl RouteMetrics {
    fn new() -> RouteMetrics {
        RouteMetrics {
            outcomes: Default::default(),
            seconds: Histogram::new(SECONDS_BOUNDS, 1e9),
        }
    }

    /// Invocations that ended with `outcome`.
    pub fn invocations(&self, outcome: InvocationOutcome) -> u64 {
        self.outcomes[outcome as usize].get()
    }

    /// Ever invoked (the overflow route is exported only once used).
    fn used(&self) -> bool {
        self.outcomes.iter().any(|c| c.get() > 0)
    }
}

/// Routes beyond this many distinct names share the route label `other`
/// (script function names are the script's choice).
pub const MAX_ROUTES: usize = 32;

/// Whether a module's series counts up (a counter) or is a level (a
/// gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    Counter,
    Gauge,
}

/// One series a KEMI module reports about one tenant's things (a
/// dispatcher destination's state, its selections), read at each scrape;
/// the `tenant` label is added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSeries {
    /// The family's name (a counter's ending in `_total`).
    pub name: &'static str,
    pub kind: ModuleKind,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: u64,
}

impl ModuleSeries {
    /// Series of the tenant as a whole (no label but the tenant's), from
    /// `(name, kind, help, value)` rows.
    pub fn of_tenant<const N: usize>(
        rows: [(&'static str, ModuleKind, &'static str, u64); N],
        out: &mut Vec<ModuleSeries>,
    ) {
        out.extend(rows.map(|(name, kind, help, value)| ModuleSeries {
            name,
            kind,
            help,
            labels: Vec::new(),
            value,
        }));
    }
}

/// What a tenant's module state reports at a scrape (its series in a
/// stable order, each family's series together). Modules keep their own
/// numbers; this is how they reach the registry without the registry
/// knowing the modules.
pub trait ModuleMetrics: Send + Sync + std::fmt::Debug {
    fn series(&self, out: &mut Vec<ModuleSeries>);
}

/// Everything counted for one tenant. Its pool owns it; the proxy records
/// through the pool, so nothing is looked up per message.
#[derive(Debug)]
pub struct TenantMetrics {
    /// The `tenant` label of its series: the id its pool was given by the
    /// tenant's spec. A label, written out as is, not a source of the
    /// tenant's identity: the spec (`TenantSpec::id`) is that.
    tenant: String,
    routes: RwLock<Vec<(String, Arc<RouteMetrics>)>>,
    other_route: RouteMetrics,
    fuel: Histogram,
    pub instances_created: Counter,
    pub transactions: Counter,
    /// Requests refused by the tenant's rate limit.
    pub rate_limited: Counter,
    /// The script version serving (1 at start, one more per reload).
    pub script_version: Gauge,
    /// Reloads that replaced the script.
    pub reloads: Counter,
    /// Reloads refused (the new script did not load); the old one serves.
    pub reloads_refused: Counter,
    /// Index 0 is 1xx, 5 is 6xx.
    replies: [Counter; 6],
    /// The tenant's module state, read at each scrape
    /// ([`TenantMetrics::set_modules`]); weak, so the metrics (kept by
    /// the registry) do not keep the state alive.
    modules: std::sync::OnceLock<std::sync::Weak<dyn ModuleMetrics>>,
}

impl TenantMetrics {
    /// The metrics of the tenant whose series carry the label `tenant`
    /// (its id).
    pub fn new(tenant: impl Into<String>) -> TenantMetrics {
        TenantMetrics {
            tenant: tenant.into(),
            routes: RwLock::new(Vec::new()),
            other_route: RouteMetrics::new(),
            fuel: Histogram::new(FUEL_BOUNDS, 1.0),
            instances_created: Counter::default(),
            transactions: Counter::default(),
            rate_limited: Counter::default(),
            script_version: Gauge::default(),
            reloads: Counter::default(),
            reloads_refused: Counter::default(),
            replies: Default::default(),
            modules: std::sync::OnceLock::new(),
        }
    }

    /// Export what the tenant's modules report (set once; the state
    /// outlives reloads, and its series go when it does).
    pub fn set_modules(&self, modules: std::sync::Weak<dyn ModuleMetrics>) {
        let _ = self.modules.set(modules);
    }

    /// The `tenant` label its series carry.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Count an invocation of `route`. `ran`: the fuel it used and how long
    /// it took, when an instance ran it (not for a load failure).
    pub fn invocation(
        &self,
        route: &str,
        outcome: InvocationOutcome,
        ran: Option<(u64, Duration)>,
    ) {
        self.with_route(route, |r| {
            r.outcomes[outcome as usize].inc();
            if let Some((_, elapsed)) = ran {
                r.seconds
                    .observe(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
            }
        });
        if let Some((fuel, _)) = ran {
            self.fuel.observe(fuel);
        }
    }

    fn with_route<T>(&self, route: &str, f: impl FnOnce(&RouteMetrics) -> T) -> T {
        {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, r)) = routes.iter().find(|(n, _)| n == route) {
                return f(r);
            }
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, r)) = routes.iter().find(|(n, _)| n == route) {
            return f(r);
        }
        if routes.len() >= MAX_ROUTES {
            return f(&self.other_route);
        }
        let r = Arc::new(RouteMetrics::new());
        routes.push((route.to_string(), r.clone()));
        drop(routes);
        f(&r)
    }

    /// The counters of `route`, if it was invoked.
    pub fn route(&self, route: &str) -> Option<Arc<RouteMetrics>> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        routes
            .iter()
            .find(|(n, _)| n == route)
            .map(|(_, r)| r.clone())
    }

    /// Count a reply with status `code` sent or forwarded for the tenant
    /// (codes outside 100-699 are not counted).
    pub fn reply(&self, code: u16) {
        if let Some(c) = (code / 100)
            .checked_sub(1)
            .and_then(|i| self.replies.get(usize::from(i)))
        {
            c.inc();
        }
    }

    /// Replies counted in class `class` (1 for 1xx .. 6 for 6xx).
    pub fn replies(&self, class: u16) -> u64 {
        class
            .checked_sub(1)
            .and_then(|i| self.replies.get(usize::from(i)))
            .map_or(0, Counter::get)
    }

    pub fn fuel_observations(&self) -> u64 {
        self.fuel.count()
    }

    /// The tenant's routes as `(label, counters)`: each named one, then
    /// the overflow route `other` once it was used.
    fn routes_read(&self, mut f: impl FnMut(&str, &RouteMetrics)) {
        let routes = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (name, r) in &routes {
            f(name, r);
        }
        if self.other_route.used() {
            f("other", &self.other_route);
        }
    }
}

/// The accounting writer's numbers (acc module): one writer serves every
/// tenant, so they are process-wide (each dropped or failed record is
/// also logged with its tenant).
#[derive(Debug, Default)]
pub struct AccMetrics {
    /// Records stored in the database.
    pub written: Counter,
    /// Records whose write failed and was tried again (one per attempt).
    pub retried: Counter,
    /// Records lost because the queue was full (a long outage).
    pub dropped: Counter,
    /// Records given up after the database kept refusing them.
    pub failed: Counter,
    /// Records waiting to be written.
    pub queued: Gauge,
}

/// Counters that belong to no tenant.
#[derive(Debug, Default)]
pub struct ProcessMetrics {
    /// `[udp, tcp][request, reply]`.
    received: [[Counter; 2]; 2],
    pub malformed: Counter,
    pub unmatched: Counter,
    /// The accounting writer's, once one runs ([`ProcessMetrics::set_acc`]).
    acc: std::sync::OnceLock<Arc<AccMetrics>>,
    /// The proxy's own requests', once a proxy runs
    /// ([`ProcessMetrics::set_local_requests`]).
    local_requests: std::sync::OnceLock<Arc<LocalRequestMetrics>>,
}

/// Requests the proxy sends on its own (dispatcher probes, dialog BYEs and
/// keep-alives): whether peers answer them is how operators see probing
/// and call teardown work.
#[derive(Debug, Default)]
pub struct LocalRequestMetrics {
    /// Sent in a client transaction.
    pub sent: Counter,
    /// Final replies received, by class: index 0 is 2xx ... 4 is 6xx.
    replies: [Counter; 5],
    /// Ended by Timer B/F without a final reply (the made-up 408).
    pub timeouts: Counter,
    /// Not sent, or lost to a transport error: unroutable, malformed,
    /// over the limit of outstanding requests, no connection.
    pub failed: Counter,
    /// Waiting for their final reply now.
    pub pending: Gauge,
}

impl LocalRequestMetrics {
    /// Count a final reply received (statuses outside 200..=699 are not).
    pub fn reply(&self, status: u16) {
        if let Some(c) = (status / 100)
            .checked_sub(2)
            .and_then(|i| self.replies.get(usize::from(i)))
        {
            c.inc();
        }
    }

    /// Final replies of `class` (2 to 6) received so far.
    pub fn replies(&self, class: u16) -> u64 {
        class
            .checked_sub(2)
            .and_then(|i| self.replies.get(usize::from(i)))
            .map_or(0, Counter::get)
    }
}

impl ProcessMetrics {
    /// Count a SIP message parsed off `tcp` or UDP.
    pub fn received(&self, tcp: bool, request: bool) {
        self.received[usize::from(tcp)][usize::from(!request)].inc();
    }

    pub fn received_count(&self, tcp: bool, request: bool) -> u64 {
        self.received[usize::from(tcp)][usize::from(!request)].get()
    }

    /// Export the accounting writer's metrics (the writer is started
    /// before the proxy that owns this registry; the first call wins).
    pub fn set_acc(&self, acc: Arc<AccMetrics>) {
        let _ = self.acc.set(acc);
    }

    /// Export the counters of the requests the proxy sends on its own
    /// (the proxy calls it as it is built; the first call wins).
    pub fn set_local_requests(&self, local: Arc<LocalRequestMetrics>) {
        let _ = self.local_requests.set(local);
    }
}

/// The process's metrics: the process-wide ones and every registered
/// tenant's, and the `prometheus-client` registry that exposes them.
#[derive(Debug)]
pub struct Registry {
    pub process: Arc<ProcessMetrics>,
    tenants: Arc<RwLock<Vec<Arc<TenantMetrics>>>>,
    /// Holds one collector, [`Metrics`], over the two above.
    exposition: prometheus_client::registry::Registry,
}

impl Default for Registry {
    fn default() -> Registry {
        let process = Arc::new(ProcessMetrics::default());
        let tenants = Arc::new(RwLock::new(Vec::new()));
        let mut exposition = prometheus_client::registry::Registry::default();
        exposition.register_collector(Box::new(Metrics {
            process: process.clone(),
            tenants: tenants.clone(),
        }));
        Registry {
            process,
            tenants,
            exposition,
        }
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Export `tenant`'s metrics (once, however often it is registered).
    pub fn register(&self, tenant: Arc<TenantMetrics>) {
        let mut tenants = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        if !tenants.iter().any(|t| Arc::ptr_eq(t, &tenant)) {
            tenants.push(tenant);
        }
    }

    /// Everything in the Prometheus text exposition format 0.0.4
    /// ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail, and the collector does not
        // either.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.exposition)
        {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }

    /// Every metric with its samples, in rendering order: what
    /// [`Registry::render`] prints, as data (the admin API's `stats.get`).
    pub fn families(&self) -> Vec<Family> {
        self.metrics()
            .read()
            .into_iter()
            .map(|(desc, series)| {
                let mut family = Family {
                    name: desc.name,
                    kind: desc.kind.name(),
                    help: desc.help,
                    samples: Vec::new(),
                };
                for (labels, reading) in series {
                    reading.samples(&mut family.samples, desc.name, labels);
                }
                family
            })
            .collect()
    }

    fn metrics(&self) -> Metrics {
        Metrics {
            process: self.process.clone(),
            tenants: self.tenants.clone(),
        }
    }
}

/// The one collector: reads every metric at each scrape.
#[derive(Debug)]
struct Metrics {
    process: Arc<ProcessMetrics>,
    tenants: Arc<RwLock<Vec<Arc<TenantMetrics>>>>,
}

/// A metric family's name (as exposed: with `_total` for a counter),
/// type and help.
#[derive(Debug, Clone, Copy)]
struct Desc {
    name: &'static str,
    kind: Kind,
    help: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }

    fn metric_type(self) -> MetricType {
        match self {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        }
    }
}

type Labels = Vec<(&'static str, String)>;

/// One series' value at a scrape.
#[derive(Debug, Clone)]
enum Reading {
    Count(u64),
    Histogram(HistogramReading),
}

impl Reading {
    /// The samples the series renders as: one, or a histogram's
    /// `_bucket` (cumulative, label `le`), `_sum` and `_count`.
    fn samples(self, out: &mut Vec<Sample>, name: &str, labels: Labels) {
        match self {
            Reading::Count(n) => out.push(Sample::new(name.to_string(), labels, Value::Int(n))),
            Reading::Histogram(h) => {
                let mut cumulative = 0;
                for (bound, n) in &h.buckets {
                    cumulative += n;
                    let le = if bound.is_finite() {
                        format!("{bound}")
                    } else {
                        "+Inf".to_string()
                    };
                    let mut l = labels.clone();
                    l.push(("le", le));
                    out.push(Sample::new(
                        format!("{name}_bucket"),
                        l,
                        Value::Int(cumulative),
                    ));
                }
                out.push(Sample::new(
                    format!("{name}_sum"),
                    labels.clone(),
                    Value::Float(h.sum),
                ));
                out.push(Sample::new(
                    format!("{name}_count"),
                    labels,
                    Value::Int(cumulative),
                ));
            }
        }
    }
}

impl Metrics {
    /// Every family and its series, in exposition order.
    fn read(&self) -> Vec<(Desc, Vec<(Labels, Reading)>)> {
        let tenants = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let p = &self.process;
        let tenant = |t: &TenantMetrics| vec![("tenant", t.tenant.clone())];
        let mut families = Vec::new();
        let desc = |name, kind, help| Desc { name, kind, help };

        let mut series = Vec::new();
        for t in &tenants {
            t.routes_read(|route, r| {
                for o in InvocationOutcome::ALL {
                    let mut labels = tenant(t);
                    labels.push(("route", route.to_string()));
                    labels.push(("outcome", o.name().to_string()));
                    series.push((labels, Reading::Count(r.invocations(o))));
                }
            });
        }
        families.push((
            desc(
                "kemibox_invocations_total",
                Kind::Counter,
                "Route invocations by tenant, route (script function) and outcome.",
            ),
            series,
        ));

        let mut series = Vec::new();
        for t in &tenants {
            t.routes_read(|route, r| {
                let mut labels = tenant(t);
                labels.push(("route", route.to_string()));
                series.push((labels, Reading::Histogram(r.seconds.read())));
            });
        }
        families.push((
            desc(
                "kemibox_invocation_seconds",
                Kind::Histogram,
                "Wall-clock time of route invocations that ran in an instance.",
            ),
            series,
        ));

        families.push((
            desc(
                "kemibox_fuel_used",
                Kind::Histogram,
                "Wasm fuel used per route invocation.",
            ),
            tenants
                .iter()
                .map(|t| (tenant(t), Reading::Histogram(t.fuel.read())))
                .collect(),
        ));

        let per_tenant: [(Desc, TenantValue); 4] = [
            (
                desc(
                    "kemibox_script_version",
                    Kind::Gauge,
                    "The tenant's script version serving: 1 at start, one more per reload.",
                ),
                |t| t.script_version.get(),
            ),
            (
                desc(
                    "kemibox_instances_created_total",
                    Kind::Counter,
                    "Sandbox instances created (script loaded) for the tenant.",
                ),
                |t| t.instances_created.get(),
            ),
            (
                desc(
                    "kemibox_transactions_total",
                    Kind::Counter,
                    "Server transactions created for the tenant's requests.",
                ),
                |t| t.transactions.get(),
            ),
            (
                desc(
                    "kemibox_rate_limited_total",
                    Kind::Counter,
                    "Requests refused by the tenant's invocations_per_second.",
                ),
                |t| t.rate_limited.get(),
            ),
        ];
        for (d, value) in per_tenant {
            families.push((
                d,
                tenants
                    .iter()
                    .map(|t| (tenant(t), Reading::Count(value(t))))
                    .collect(),
            ));
        }

        let mut series = Vec::new();
        for t in &tenants {
            for (result, n) in [
                ("ok", t.reloads.get()),
                ("refused", t.reloads_refused.get()),
            ] {
                let mut labels = tenant(t);
                labels.push(("result", result.to_string()));
                series.push((labels, Reading::Count(n)));
            }
        }
        families.push((
            desc(
                "kemibox_reloads_total",
                Kind::Counter,
                "Script reloads by result: ok (the new version serves) or refused (the old one still does).",
            ),
            series,
        ));

        let mut series = Vec::new();
        for t in &tenants {
            for class in 1..=6 {
                let mut labels = tenant(t);
                labels.push(("class", format!("{class}xx")));
                series.push((labels, Reading::Count(t.replies(class))));
            }
        }
        families.push((
            desc(
                "kemibox_replies_total",
                Kind::Counter,
                "Replies the proxy sent or forwarded for the tenant, by status class.",
            ),
            series,
        ));

        // The modules' families, tenant by tenant, in first-seen order.
        let mut modules: Vec<(Desc, Vec<(Labels, Reading)>)> = Vec::new();
        for t in &tenants {
            let Some(m) = t.modules.get().and_then(std::sync::Weak::upgrade) else {
                continue;
            };
            let mut out = Vec::new();
            m.series(&mut out);
            for s in out {
                let mut labels = tenant(t);
                labels.extend(s.labels);
                let kind = match s.kind {
                    ModuleKind::Counter => Kind::Counter,
                    ModuleKind::Gauge => Kind::Gauge,
                };
                let at = match modules.iter().position(|(d, _)| d.name == s.name) {
                    Some(at) => at,
                    None => {
                        modules.push((desc(s.name, kind, s.help), Vec::new()));
                        modules.len() - 1
                    }
                };
                modules[at].1.push((labels, Reading::Count(s.value)));
            }
        }
        families.extend(modules);

        let mut series = Vec::new();
        for (tcp, transport) in [(false, "udp"), (true, "tcp")] {
            for (request, kind) in [(true, "request"), (false, "reply")] {
                series.push((
                    vec![
                        ("transport", transport.to_string()),
                        ("kind", kind.to_string()),
                    ],
                    Reading::Count(p.received_count(tcp, request)),
                ));
            }
        }
        families.push((
            desc(
                "kemibox_sip_messages_received_total",
                Kind::Counter,
                "SIP messages received and parsed, by transport and kind.",
            ),
            series,
        ));
        families.push((
            desc(
                "kemibox_sip_malformed_total",
                Kind::Counter,
                "Received messages that could not be parsed or lacked a mandatory header.",
            ),
            vec![(Vec::new(), Reading::Count(p.malformed.get()))],
        ));
        families.push((
            desc(
                "kemibox_unmatched_requests_total",
                Kind::Counter,
                "Requests no tenant took (answered with unmatched_reply, or dropped if ACK).",
            ),
            vec![(Vec::new(), Reading::Count(p.unmatched.get()))],
        ));
        if let Some(local) = p.local_requests.get() {
            families.push((
                desc(
                    "kemibox_local_requests_total",
                    Kind::Counter,
                    "Requests the proxy sent on its own (dispatcher probes, dialog BYEs and keep-alives).",
                ),
                vec![(Vec::new(), Reading::Count(local.sent.get()))],
            ));
            let mut series: Vec<(Labels, Reading)> = (2..=6)
                .map(|class| {
                    (
                        vec![("outcome", format!("{class}xx"))],
                        Reading::Count(local.replies(class)),
                    )
                })
                .collect();
            series.push((
                vec![("outcome", "timeout".to_string())],
                Reading::Count(local.timeouts.get()),
            ));
            series.push((
                vec![("outcome", "failed".to_string())],
                Reading::Count(local.failed.get()),
            ));
            families.push((
                desc(
                    "kemibox_local_request_outcomes_total",
                    Kind::Counter,
                    "How the proxy's own requests ended: final reply class, timeout, or failed (not sent).",
                ),
                series,
            ));
            families.push((
                desc(
                    "kemibox_local_requests_pending",
                    Kind::Gauge,
                    "The proxy's own requests waiting for their final reply.",
                ),
                vec![(Vec::new(), Reading::Count(local.pending.get()))],
            ));
        }
        if let Some(acc) = p.acc.get() {
            let acc_families: [(&'static str, Kind, &'static str, u64); 5] = [
                (
                    "kemibox_acc_records_written_total",
                    Kind::Counter,
                    "Accounting records (acc module) stored in the database.",
                    acc.written.get(),
                ),
                (
                    "kemibox_acc_records_retried_total",
                    Kind::Counter,
                    "Accounting records whose database write failed and was tried again, per attempt.",
                    acc.retried.get(),
                ),
                (
                    "kemibox_acc_records_dropped_total",
                    Kind::Counter,
                    "Accounting records lost because the write queue was full (logged).",
                    acc.dropped.get(),
                ),
                (
                    "kemibox_acc_records_failed_total",
                    Kind::Counter,
                    "Accounting records given up after the database kept refusing them (logged).",
                    acc.failed.get(),
                ),
                (
                    "kemibox_acc_records_queued",
                    Kind::Gauge,
                    "Accounting records waiting to be written.",
                    acc.queued.get(),
                ),
            ];
            for (name, kind, help, n) in acc_families {
                families.push((
                    desc(name, kind, help),
                    vec![(Vec::new(), Reading::Count(n))],
                ));
            }
        }
        families
    }
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (desc, series) in self.read() {
            // The encoder adds `_total` to a counter's name itself.
            let name = match desc.kind {
                Kind::Counter => desc.name.strip_suffix("_total").unwrap_or(desc.name),
                Kind::Gauge | Kind::Histogram => desc.name,
            };
            let mut family =
                encoder.encode_descriptor(name, desc.help, None, desc.kind.metric_type())?;
            for (labels, reading) in &series {
                let mut metric = family.encode_family(labels)?;
                match (desc.kind, reading) {
                    (Kind::Counter, Reading::Count(n)) => {
                        metric.encode_counter::<NoLabelSet, u64, u64>(n, None)?
                    }
                    (Kind::Gauge, Reading::Count(n)) => metric.encode_gauge(n)?,
                    (_, Reading::Histogram(h)) => {
                        metric.encode_histogram::<NoLabelSet>(h.sum, h.count(), &h.buckets, None)?
                    }
                    (Kind::Histogram, Reading::Count(_)) => return Err(std::fmt::Error),
                }
            }
        }
        Ok(())
    }
}

/// One metric: its name, Prometheus type, help text and samples.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: &'static str,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    pub help: &'static str,
    pub samples: Vec<Sample>,
}

/// One time series' value: `name{labels} value`. A histogram's samples
/// are named `_bucket` (with label `le`), `_sum` and `_count`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Unescaped values.
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

impl Sample {
    fn new(name: String, labels: Vec<(&'static str, String)>, value: Value) -> Sample {
        Sample {
            name,
            labels,
            value,
        }
    }
}

/// A counter or gauge reading, or a histogram sum (in its scaled unit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

/// Reads one counter of a tenant.
type TenantValue = fn(&TenantMetrics) -> u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_escaped_labels() {
        let registry = Registry::new();
        let a = Arc::new(TenantMetrics::new("acme"));
        let b = Arc::new(TenantMetrics::new("we\"ird\\"));
        registry.register(a.clone());
        registry.register(a.clone());
        registry.register(b.clone());
        a.invocation(
            "ksr_request_route",
            InvocationOutcome::Ok,
            Some((20_000, Duration::from_micros(300))),
        );
        a.invocation(
            "ksr_request_route",
            InvocationOutcome::Ok,
            Some((2_000_000, Duration::from_millis(20))),
        );
        a.invocation(
            "ksr_request_route",
            InvocationOutcome::LuaError,
            Some((500, Duration::from_micros(40))),
        );
        a.invocation("ksr_reply_route", InvocationOutcome::LoadFailure, None);
        a.instances_created.inc();
        a.transactions.add(2);
        a.rate_limited.inc();
        a.reply(200);
        a.reply(404);
        a.reply(486);
        a.reply(99);
        a.reply(700);
        b.reply(100);
        registry.process.received(false, true);
        registry.process.received(true, false);
        registry.process.received(true, false);
        registry.process.malformed.inc();
        let text = registry.render();

        let has = |line: &str| {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            )
        };
        has("# TYPE kemibox_invocations_total counter");
        has(r#"kemibox_invocations_total{tenant="acme",route="ksr_request_route",outcome="ok"} 2"#);
        has(
            r#"kemibox_invocations_total{tenant="acme",route="ksr_request_route",outcome="lua_error"} 1"#,
        );
        has(
            r#"kemibox_invocations_total{tenant="acme",route="ksr_request_route",outcome="out_of_fuel"} 0"#,
        );
        has(
            r#"kemibox_invocations_total{tenant="acme",route="ksr_reply_route",outcome="load_failure"} 1"#,
        );
        has("# TYPE kemibox_invocation_seconds histogram");
        // Bucket bounds and sums are written as Go's client writes them
        // (prometheus-client's encoder): 5e-05, 3e+06, 2020500.0.
        has(
            r#"kemibox_invocation_seconds_bucket{tenant="acme",route="ksr_request_route",le="5e-05"} 1"#,
        );
        has(
            r#"kemibox_invocation_seconds_bucket{tenant="acme",route="ksr_request_route",le="0.0005"} 2"#,
        );
        has(
            r#"kemibox_invocation_seconds_bucket{tenant="acme",route="ksr_request_route",le="+Inf"} 3"#,
        );
        has(r#"kemibox_invocation_seconds_count{tenant="acme",route="ksr_request_route"} 3"#);
        has(r#"kemibox_invocation_seconds_sum{tenant="acme",route="ksr_request_route"} 0.02034"#);
        // A load failure ran nothing: no time observed for that route.
        has(r#"kemibox_invocation_seconds_count{tenant="acme",route="ksr_reply_route"} 0"#);
        has(r#"kemibox_fuel_used_bucket{tenant="acme",le="1000"} 1"#);
        has(r#"kemibox_fuel_used_bucket{tenant="acme",le="30000"} 2"#);
        has(r#"kemibox_fuel_used_bucket{tenant="acme",le="3e+06"} 3"#);
        has(r#"kemibox_fuel_used_sum{tenant="acme"} 2020500.0"#);
        has(r#"kemibox_fuel_used_count{tenant="acme"} 3"#);
        has(r#"kemibox_instances_created_total{tenant="acme"} 1"#);
        has(r#"kemibox_transactions_total{tenant="acme"} 2"#);
        has(r#"kemibox_rate_limited_total{tenant="acme"} 1"#);
        has(r#"kemibox_replies_total{tenant="acme",class="2xx"} 1"#);
        has(r#"kemibox_replies_total{tenant="acme",class="4xx"} 2"#);
        has(r#"kemibox_replies_total{tenant="acme",class="1xx"} 0"#);
        has(r#"kemibox_replies_total{tenant="we\"ird\\",class="1xx"} 1"#);
        has(r#"kemibox_fuel_used_count{tenant="we\"ird\\"} 0"#);
        has(r#"kemibox_sip_messages_received_total{transport="udp",kind="request"} 1"#);
        has(r#"kemibox_sip_messages_received_total{transport="tcp",kind="reply"} 2"#);
        has(r#"kemibox_sip_messages_received_total{transport="udp",kind="reply"} 0"#);
        has("kemibox_sip_malformed_total 1");
        has("kemibox_unmatched_requests_total 0");
        // Registered twice, exported once.
        assert_eq!(
            text.matches(r#"kemibox_transactions_total{tenant="acme"}"#)
                .count(),
            1
        );
        // Every sample line is `name{labels} value` or `name value`, and
        // every metric has its HELP and TYPE before its samples.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect(line);
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        has(r#"kemibox_script_version{tenant="acme"} 0"#);
        has(r#"kemibox_reloads_total{tenant="acme",result="refused"} 0"#);
        assert_eq!(text.matches("# TYPE ").count(), 12);
    }

    #[test]
    fn families_hold_what_render_prints_as_data() {
        let registry = Registry::new();
        let a = Arc::new(TenantMetrics::new("acme"));
        registry.register(a.clone());
        a.transactions.add(3);
        a.invocation(
            "ksr_request_route",
            InvocationOutcome::Ok,
            Some((20_000, Duration::from_micros(300))),
        );
        let families = registry.families();
        let find = |name: &str, labels: &[(&str, &str)]| {
            families
                .iter()
                .flat_map(|f| &f.samples)
                .find(|s| {
                    s.name == name
                        && s.labels.len() == labels.len()
                        && labels
                            .iter()
                            .all(|(k, v)| s.labels.iter().any(|(n, x)| n == k && x == v))
                })
                .map(|s| s.value)
        };
        assert_eq!(
            find("kemibox_transactions_total", &[("tenant", "acme")]),
            Some(Value::Int(3))
        );
        assert_eq!(
            find(
                "kemibox_invocation_seconds_sum",
                &[("tenant", "acme"), ("route", "ksr_request_route")]
            ),
            Some(Value::Float(0.0003))
        );
        assert_eq!(
            find("kemibox_sip_malformed_total", &[]),
            Some(Value::Int(0))
        );
        // Every sample rendered is one of them, and nothing else is.
        let rendered = registry.render();
        let samples: usize = families.iter().map(|f| f.samples.len()).sum();
        assert_eq!(
            rendered.lines().filter(|l| !l.starts_with('#')).count(),
            samples
        );
        assert_eq!(families.len(), rendered.matches("# TYPE ").count());
    }

    #[test]
    fn routes_beyond_the_cap_share_the_route_label_other() {
        let t = TenantMetrics::new("t");
        for i in 0..MAX_ROUTES + 3 {
            t.invocation(&format!("f{i}"), InvocationOutcome::Ok, None);
        }
        let registry = Registry::new();
        let t = Arc::new(t);
        registry.register(t.clone());
        let text = registry.render();
        assert!(text.contains(r#"route="f0",outcome="ok"} 1"#));
        assert!(!text.contains(&format!("route=\"f{}\"", MAX_ROUTES)));
        assert!(text.contains(r#"route="other",outcome="ok"} 3"#), "{text}");
    }

    #[test]
    fn acc_metrics_render_once_a_writer_runs() {
        let registry = Registry::new();
        assert!(!registry.render().contains("kemibox_acc_"));
        let acc = Arc::new(AccMetrics::default());
        registry.process.set_acc(acc.clone());
        acc.written.add(3);
        acc.retried.inc();
        acc.dropped.add(2);
        acc.queued.add(5);
        acc.queued.sub(4);
        let text = registry.render();
        for line in [
            "kemibox_acc_records_written_total 3",
            "kemibox_acc_records_retried_total 1",
            "kemibox_acc_records_dropped_total 2",
            "kemibox_acc_records_failed_total 0",
            "kemibox_acc_records_queued 1",
            "# TYPE kemibox_acc_records_queued gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn local_requests_render_by_outcome() {
        let registry = Registry::new();
        assert!(!registry.render().contains("kemibox_local_"));
        let local = Arc::new(LocalRequestMetrics::default());
        registry.process.set_local_requests(local.clone());
        local.sent.add(5);
        for status in [200, 202, 404, 503, 603, 180, 99, 700] {
            local.reply(status);
        }
        local.timeouts.inc();
        local.pending.add(2);
        let text = registry.render();
        for line in [
            "kemibox_local_requests_total 5",
            r#"kemibox_local_request_outcomes_total{outcome="2xx"} 2"#,
            r#"kemibox_local_request_outcomes_total{outcome="3xx"} 0"#,
            r#"kemibox_local_request_outcomes_total{outcome="4xx"} 1"#,
            r#"kemibox_local_request_outcomes_total{outcome="5xx"} 1"#,
            r#"kemibox_local_request_outcomes_total{outcome="6xx"} 1"#,
            r#"kemibox_local_request_outcomes_total{outcome="timeout"} 1"#,
            r#"kemibox_local_request_outcomes_total{outcome="failed"} 0"#,
            "kemibox_local_requests_pending 2",
            "# TYPE kemibox_local_requests_pending gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
