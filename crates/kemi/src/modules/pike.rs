//! `KSR.pike`: flood detection per source address (Kamailio's pike module).
//!
//! Each source IP (IPv4 or IPv6, the whole address) has a counter of its
//! requests in the current sampling unit (`sampling_time_unit` seconds,
//! units aligned on the tenant's start). The request that takes a source
//! over `reqs_density_per_unit` in one unit blocks it (`-2`, logged once);
//! it stays blocked (`-1`) for the rest of that unit and for every later
//! unit it also floods, and is unblocked in the first unit it does not
//! (Kamailio's tree reaches the same state, after between x and 3x
//! requests for IPv4 because it builds the address byte by byte; here it
//! is always x + 1).
//!
//! Memory is bounded: a source not seen for `remove_latency` seconds is
//! forgotten (swept at most once every `remove_latency` seconds, so it may
//! be kept up to twice that), and at most `max_addresses` sources are
//! tracked. A flood of distinct addresses that fills the table evicts the
//! half least recently seen (never blocking anyone wrongly: an evicted
//! source starts again from zero). The table is one map behind a mutex per
//! tenant, held for a hash lookup per request; a sweep or an eviction is
//! linear in the table, amortized over the requests that filled it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::Ctx;
use crate::bindings::kemibox::ksr::pike::Host;

/// A tenant's pike parameters (Kamailio's module parameters of the same
/// names, plus the bound on tracked addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PikeSettings {
    /// Seconds per sampling unit (Kamailio's default 2).
    pub sampling_time_unit: u32,
    /// Requests a source may send per unit (Kamailio's default 30).
    pub reqs_density_per_unit: u32,
    /// Seconds a source is remembered after its last request (Kamailio's
    /// default 120).
    pub remove_latency: u32,
    /// Sources tracked at most; more evict the least recently seen half.
    pub max_addresses: usize,
}

impl Default for PikeSettings {
    fn default() -> PikeSettings {
        PikeSettings {
            sampling_time_unit: 2,
            reqs_density_per_unit: 30,
            remove_latency: 120,
            max_addresses: 100_000,
        }
    }
}

/// What `pike_check_req` answers, as Kamailio's return codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 1: under the limit.
    Allowed = 1,
    /// -1: still flooding, detected before.
    Flooding = -1,
    /// -2: this request took the source over the limit.
    Detected = -2,
}

/// One source's counters.
#[derive(Debug, Clone, Copy)]
struct Source {
    /// The unit `hits` counts.
    unit: u32,
    hits: u32,
    /// Seconds since the table's start of the last request.
    last_seen: u32,
    blocked: bool,
}

#[derive(Debug, Default)]
struct Table {
    sources: HashMap<IpAddr, Source>,
    /// When (seconds since start) idle sources are next swept.
    next_sweep: u32,
}

/// A tenant's flood counters (part of its [`crate::TenantState`]).
#[derive(Debug)]
pub struct Pike {
    settings: PikeSettings,
    start: Instant,
    table: Mutex<Table>,
    /// Times a source was blocked (a [`Verdict::Detected`]), for the
    /// metrics.
    blocked: AtomicU64,
}

impl Default for Pike {
    fn default() -> Pike {
        Pike::new(PikeSettings::default())
    }
}

impl Pike {
    pub fn new(settings: PikeSettings) -> Pike {
        let settings = PikeSettings {
            sampling_time_unit: settings.sampling_time_unit.max(1),
            remove_latency: settings.remove_latency.max(1),
            max_addresses: settings.max_addresses.max(2),
            ..settings
        };
        Pike {
            settings,
            start: Instant::now(),
            table: Mutex::new(Table {
                sources: HashMap::new(),
                next_sweep: settings.remove_latency,
            }),
            blocked: AtomicU64::new(0),
        }
    }

    pub fn settings(&self) -> PikeSettings {
        self.settings
    }

    /// How many sources are tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().sources.len()
    }

    /// How many times a source was blocked so far.
    pub fn blocked(&self) -> u64 {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Its series: sources blocked so far and addresses tracked now.
    pub fn metric_series(&self, out: &mut Vec<kemibox_metrics::ModuleSeries>) {
        use kemibox_metrics::{ModuleKind, ModuleSeries};
        ModuleSeries::of_tenant(
            [
                (
                    "kemibox_pike_blocked_total",
                    ModuleKind::Counter,
                    "Source addresses blocked by pike for going over reqs_density_per_unit.",
                    self.blocked(),
                ),
                (
                    "kemibox_pike_tracked_addresses",
                    ModuleKind::Gauge,
                    "Source addresses pike tracks now (bounded by max_addresses).",
                    self.tracked() as u64,
                ),
            ],
            out,
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count a request from `ip` at `now`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        let s = self.settings;
        let secs =
            u32::try_from(now.saturating_duration_since(self.start).as_secs()).unwrap_or(u32::MAX);
        let unit = secs / s.sampling_time_unit;
        let mut table = self.lock();
        if secs >= table.next_sweep {
            table.sweep(secs, s.remove_latency);
            table.next_sweep = secs.saturating_add(s.remove_latency);
        }
        if table.sources.len() >= s.max_addresses && !table.sources.contains_key(&ip) {
            table.sweep(secs, s.remove_latency);
            if table.sources.len() >= s.max_addresses {
                table.evict_oldest_half(s.max_addresses);
            }
        }
        let source = table.sources.entry(ip).or_insert(Source {
            unit,
            hits: 0,
            last_seen: secs,
            blocked: false,
        });
        if source.unit != unit {
            // Still blocked only when the unit that just ended flooded too.
            source.blocked = source.blocked
                && source.unit.saturating_add(1) == unit
                && source.hits > s.reqs_density_per_unit;
            source.unit = unit;
            source.hits = 0;
        }
        source.hits = source.hits.saturating_add(1);
        source.last_seen = secs;
        if source.blocked {
            Verdict::Flooding
        } else if source.hits > s.reqs_density_per_unit {
            source.blocked = true;
            self.blocked.fetch_add(1, Ordering::Relaxed);
            Verdict::Detected
        } else {
            Verdict::Allowed
        }
    }
}

impl Table {
    /// Forget sources idle for more than `latency` seconds.
    fn sweep(&mut self, secs: u32, latency: u32) {
        self.sources
            .retain(|_, src| secs.saturating_sub(src.last_seen) <= latency);
        if self.sources.capacity() > 4 * self.sources.len().max(64) {
            self.sources.shrink_to_fit();
        }
    }

    /// Make room: drop the least recently seen sources until half of
    /// `max` remain; among those seen in the same second, sources not
    /// blocked and with fewer requests go first, so a flood of new
    /// addresses does not push a blocked one out.
    fn evict_oldest_half(&mut self, max: usize) {
        let key = |s: &Source| (s.last_seen, s.blocked, s.hits);
        let mut keys: Vec<(u32, bool, u32)> = self.sources.values().map(key).collect();
        let excess = self.sources.len().saturating_sub(max / 2);
        if excess == 0 {
            return;
        }
        // The `excess`-th smallest key: every smaller key goes, and keys
        // equal to it until `excess` went.
        let (_, threshold, _) = keys.select_nth_unstable(excess - 1);
        let threshold = *threshold;
        let below = keys.iter().filter(|k| **k < threshold).count();
        let mut equal_to_drop = excess - below;
        self.sources.retain(|_, src| {
            let k = key(src);
            let drop = k < threshold || (k == threshold && equal_to_drop > 0);
            if drop && k == threshold {
                equal_to_drop -= 1;
            }
            !drop
        });
    }
}

impl Host for Ctx {
    async fn pike_check_req(&mut self) -> i32 {
        let Some(source) = self.message.as_ref().map(|m| m.source.ip()) else {
            self.script_error("KSR.pike.pike_check_req", "no message is being routed");
            return 1;
        };
        let verdict = self.state.pike.check(source, Instant::now());
        if verdict == Verdict::Detected {
            let s = self.state.pike.settings();
            tracing::warn!(
                tenant = self.tenant.as_str(),
                source = %source,
                "pike: {source} blocked: more than {} requests in {} s",
                s.reqs_density_per_unit,
                s.sampling_time_unit
            );
        }
        verdict as i32
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Arc;

    use std::time::Duration;

    use super::*;
    use crate::testing::{INVITE, ctx, ready};

    /// How long one sampling unit lasts.
    fn unit_of(settings: PikeSettings) -> Duration {
        Duration::from_secs(u64::from(settings.sampling_time_unit))
    }

    fn settings(density: u32) -> PikeSettings {
        PikeSettings {
            sampling_time_unit: 2,
            reqs_density_per_unit: density,
            remove_latency: 10,
            max_addresses: 1000,
        }
    }

    #[test]
    fn a_source_over_the_density_is_detected_once_then_flooding_until_a_quiet_unit() {
        let pike = Pike::new(settings(5));
        let t0 = pike.start;
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "2001:db8::7".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(pike.check(a, t0), Verdict::Allowed);
        }
        assert_eq!(pike.check(a, t0), Verdict::Detected);
        assert_eq!(pike.check(a, t0), Verdict::Flooding);
        // The metrics count the block once, not each refused request.
        assert_eq!(pike.blocked(), 1);
        // Another source, IPv6, is counted on its own.
        for _ in 0..5 {
            assert_eq!(pike.check(b, t0), Verdict::Allowed);
        }
        // The next unit: the flooding one ended over the limit, so the
        // source stays blocked through this one.
        let t1 = t0 + unit_of(pike.settings);
        assert_eq!(pike.check(a, t1), Verdict::Flooding);
        // A unit with one request (not over) unblocks in the unit after it.
        let t3 = t0 + 3 * unit_of(pike.settings);
        assert_eq!(pike.check(a, t3), Verdict::Allowed);
        // And a new flood is detected again.
        for _ in 0..4 {
            assert_eq!(pike.check(a, t3), Verdict::Allowed);
        }
        assert_eq!(pike.check(a, t3), Verdict::Detected);
        assert_eq!((pike.blocked(), pike.tracked()), (2, 2));
    }

    #[test]
    fn idle_sources_are_forgotten_after_remove_latency() {
        let pike = Pike::new(settings(5));
        let t0 = pike.start;
        for i in 0..100u8 {
            pike.check(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), t0);
        }
        assert_eq!(pike.tracked(), 100);
        // Past the latency (and the next sweep), one new request sweeps.
        pike.check("192.0.2.1".parse().unwrap(), t0 + Duration::from_secs(21));
        assert_eq!(pike.tracked(), 1);
    }

    /// A million distinct sources (a spoofed flood) never grow the table
    /// past its bound, and a source that keeps flooding meanwhile stays
    /// detected.
    #[test]
    fn a_million_distinct_sources_stay_within_max_addresses() {
        let pike = Pike::new(PikeSettings {
            max_addresses: 10_000,
            ..settings(5)
        });
        let t0 = pike.start;
        let flooder: IpAddr = "198.51.100.9".parse().unwrap();
        let mut flooder_blocked = false;
        for i in 0..1_000_000u32 {
            let ip = if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
            } else {
                IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)))
            };
            assert_eq!(pike.check(ip, t0), Verdict::Allowed);
            if i % 1000 == 0 {
                flooder_blocked |= pike.check(flooder, t0) != Verdict::Allowed;
            }
            assert!(pike.tracked() <= 10_000);
        }
        assert!(flooder_blocked);
        assert_eq!(pike.check(flooder, t0), Verdict::Flooding);
        let capacity = pike.lock().sources.capacity();
        assert!(capacity < 2 * 16_384, "{capacity}");
    }

    #[test]
    fn the_ksr_function_counts_the_message_source_per_tenant() {
        let mut c = ctx(INVITE);
        c.state = Arc::new(crate::TenantState {
            pike: Pike::new(settings(2)),
            ..Default::default()
        });
        assert_eq!(ready(Host::pike_check_req(&mut c)), 1);
        assert_eq!(ready(Host::pike_check_req(&mut c)), 1);
        assert_eq!(ready(Host::pike_check_req(&mut c)), -2);
        assert_eq!(ready(Host::pike_check_req(&mut c)), -1);
        // Another tenant's state does not see these counts.
        let mut other = ctx(INVITE);
        assert_eq!(ready(Host::pike_check_req(&mut other)), 1);
    }
}
