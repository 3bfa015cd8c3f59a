//! kemibox's metrics: per-tenant counters and histograms ([`TenantMetrics`],
//! one per tenant, held by its pool so recording needs no lookup), the
//! process-wide ones ([`ProcessMetrics`]), their rendering in the
//! Prometheus text exposition format 0.0.4 ([`Registry::render`]) and a
//! minimal HTTP endpoint serving it ([`http`]).
//!
//! Everything is atomics with relaxed ordering: recording costs an atomic
//! add or three. The only lock is the short read lock that finds a route's
//! counters by its function name (see [`TenantMetrics::route`]).

pub mod http;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Count one; the new total (for log lines that quote it).
    pub fn inc(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (or is set).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram over integer observations (fuel units, nanoseconds) with
/// fixed upper bounds; rendered with the bounds and the sum divided by
/// `scale` (1e9 turns nanoseconds into seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    scale: f64,
    /// One per bound, then +Inf; not cumulative (summed when rendered).
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

    /// `name_bucket`, `name_sum` and `name_count` samples, each with
    /// `labels` (and `le` for the buckets).
    fn samples(&self, out: &mut Vec<Sample>, name: &str, labels: &[(&'static str, String)]) {
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(b) => format!("{}", *b as f64 / self.scale),
                None => "+Inf".to_string(),
            };
            let mut l = labels.to_vec();
            l.push(("le", le));
            out.push(Sample::new(
                format!("{name}_bucket"),
                l,
                Value::Int(cumulative),
            ));
        }
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.scale;
        out.push(Sample::new(
            format!("{name}_sum"),
            labels.to_vec(),
            Value::Float(sum),
        ));
        // The count is the +Inf bucket, read once, so the two agree.
        out.push(Sample::new(
            format!("{name}_count"),
            labels.to_vec(),
            Value::Int(cumulative),
        ));
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
}

/// Routes beyond this many distinct names share the route label `other`
/// (script function names are the script's choice).
pub const MAX_ROUTES: usize = 32;

/// Everything counted for one tenant. Its pool owns it; the proxy records
/// through the pool, so nothing is looked up per message.
#[derive(Debug)]
pub struct TenantMetrics {
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
}

impl TenantMetrics {
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
        }
    }

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
}

/// Counters that belong to no tenant.
#[derive(Debug, Default)]
pub struct ProcessMetrics {
    /// `[udp, tcp][request, reply]`.
    received: [[Counter; 2]; 2],
    pub malformed: Counter,
    pub unmatched: Counter,
}

impl ProcessMetrics {
    /// Count a SIP message parsed off `tcp` or UDP.
    pub fn received(&self, tcp: bool, request: bool) {
        self.received[usize::from(tcp)][usize::from(!request)].inc();
    }

    pub fn received_count(&self, tcp: bool, request: bool) -> u64 {
        self.received[usize::from(tcp)][usize::from(!request)].get()
    }
}

/// The process's metrics: the process-wide ones and every registered
/// tenant's.
#[derive(Debug, Default)]
pub struct Registry {
    pub process: ProcessMetrics,
    tenants: RwLock<Vec<Arc<TenantMetrics>>>,
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

    /// Everything in the text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let families = self.families();
        let mut out = String::with_capacity(4096 + families.len() * 1024);
        for f in &families {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
            for s in &f.samples {
                out.push_str(&s.name);
                if !s.labels.is_empty() {
                    out.push('{');
                    for (i, (name, value)) in s.labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{name}=\"{}\"", escape(value));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", s.value);
            }
        }
        out
    }

    /// Every metric with its samples, in rendering order: what
    /// [`Registry::render`] prints, as data (the admin API's `stats.get`).
    pub fn families(&self) -> Vec<Family> {
        let tenants = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let p = &self.process;
        let tenant = |t: &TenantMetrics| vec![("tenant", t.tenant.clone())];
        let mut families = Vec::new();

        let mut f = Family::new(
            "kemibox_invocations_total",
            "counter",
            "Route invocations by tenant, route (script function) and outcome.",
        );
        for t in &tenants {
            for (route, r) in routes_of(t) {
                for o in InvocationOutcome::ALL {
                    let mut labels = tenant(t);
                    labels.push(("route", route.clone()));
                    labels.push(("outcome", o.name().to_string()));
                    f.push(labels, r.invocations(o));
                }
            }
        }
        families.push(f);

        let mut f = Family::new(
            "kemibox_invocation_seconds",
            "histogram",
            "Wall-clock time of route invocations that ran in an instance.",
        );
        for t in &tenants {
            for (route, r) in routes_of(t) {
                let mut labels = tenant(t);
                labels.push(("route", route.clone()));
                r.seconds
                    .samples(&mut f.samples, "kemibox_invocation_seconds", &labels);
            }
        }
        families.push(f);

        let mut f = Family::new(
            "kemibox_fuel_used",
            "histogram",
            "Wasm fuel used per route invocation.",
        );
        for t in &tenants {
            t.fuel
                .samples(&mut f.samples, "kemibox_fuel_used", &tenant(t));
        }
        families.push(f);

        let per_tenant: [(&'static str, &'static str, &'static str, TenantValue); 4] = [
            (
                "kemibox_script_version",
                "gauge",
                "The tenant's script version serving: 1 at start, one more per reload.",
                |t| t.script_version.get(),
            ),
            (
                "kemibox_instances_created_total",
                "counter",
                "Sandbox instances created (script loaded) for the tenant.",
                |t| t.instances_created.get(),
            ),
            (
                "kemibox_transactions_total",
                "counter",
                "Server transactions created for the tenant's requests.",
                |t| t.transactions.get(),
            ),
            (
                "kemibox_rate_limited_total",
                "counter",
                "Requests refused by the tenant's invocations_per_second.",
                |t| t.rate_limited.get(),
            ),
        ];
        for (name, kind, help, value) in per_tenant {
            let mut f = Family::new(name, kind, help);
            for t in &tenants {
                f.push(tenant(t), value(t));
            }
            families.push(f);
        }

        let mut f = Family::new(
            "kemibox_reloads_total",
            "counter",
            "Script reloads by result: ok (the new version serves) or refused (the old one still does).",
        );
        for t in &tenants {
            for (result, n) in [
                ("ok", t.reloads.get()),
                ("refused", t.reloads_refused.get()),
            ] {
                let mut labels = tenant(t);
                labels.push(("result", result.to_string()));
                f.push(labels, n);
            }
        }
        families.push(f);

        let mut f = Family::new(
            "kemibox_replies_total",
            "counter",
            "Replies the proxy sent or forwarded for the tenant, by status class.",
        );
        for t in &tenants {
            for class in 1..=6 {
                let mut labels = tenant(t);
                labels.push(("class", format!("{class}xx")));
                f.push(labels, t.replies(class));
            }
        }
        families.push(f);

        let mut f = Family::new(
            "kemibox_sip_messages_received_total",
            "counter",
            "SIP messages received and parsed, by transport and kind.",
        );
        for (tcp, transport) in [(false, "udp"), (true, "tcp")] {
            for (request, kind) in [(true, "request"), (false, "reply")] {
                f.push(
                    vec![
                        ("transport", transport.to_string()),
                        ("kind", kind.to_string()),
                    ],
                    p.received_count(tcp, request),
                );
            }
        }
        families.push(f);
        let mut f = Family::new(
            "kemibox_sip_malformed_total",
            "counter",
            "Received messages that could not be parsed or lacked a mandatory header.",
        );
        f.push(Vec::new(), p.malformed.get());
        families.push(f);
        let mut f = Family::new(
            "kemibox_unmatched_requests_total",
            "counter",
            "Requests no tenant took (answered with unmatched_reply, or dropped if ACK).",
        );
        f.push(Vec::new(), p.unmatched.get());
        families.push(f);
        families
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

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }

    /// A sample named like the family.
    fn push(&mut self, labels: Vec<(&'static str, String)>, value: u64) {
        self.samples.push(Sample::new(
            self.name.to_string(),
            labels,
            Value::Int(value),
        ));
    }
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

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x}"),
        }
    }
}

/// Reads one counter of a tenant.
type TenantValue = fn(&TenantMetrics) -> u64;
/// A tenant's routes, the overflow route `other` last when used.
fn routes_of(t: &TenantMetrics) -> Vec<(String, Arc<RouteMetrics>)> {
    let routes = t.routes.read().unwrap_or_else(|e| e.into_inner()).clone();
    let mut routes: Vec<(String, Arc<RouteMetrics>)> = routes;
    let other = &t.other_route;
    let used = InvocationOutcome::ALL
        .iter()
        .any(|o| other.invocations(*o) > 0);
    if used {
        let copy = RouteMetrics::new();
        for o in InvocationOutcome::ALL {
            copy.outcomes[o as usize].add(other.invocations(o));
        }
        for (i, b) in other.seconds.buckets.iter().enumerate() {
            copy.seconds.buckets[i].store(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        copy.seconds
            .sum
            .store(other.seconds.sum.load(Ordering::Relaxed), Ordering::Relaxed);
        routes.push(("other".to_string(), Arc::new(copy)));
    }
    routes
}

/// A label value escaped per the exposition format.
fn escape(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

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
        has(
            r#"kemibox_invocation_seconds_bucket{tenant="acme",route="ksr_request_route",le="0.00005"} 1"#,
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
        has(r#"kemibox_fuel_used_bucket{tenant="acme",le="3000000"} 3"#);
        has(r#"kemibox_fuel_used_sum{tenant="acme"} 2020500"#);
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
}
