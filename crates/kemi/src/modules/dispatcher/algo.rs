//! The selection algorithms: which destination of a set comes first, and
//! the order of the others for failover. Hashes follow Kamailio's choice
//! of key (same key, same destination; keys spread evenly), not its hash
//! function.

use std::sync::atomic::Ordering;

use super::sets::{Loads, Set};

/// What a message offers the hashing algorithms.
#[derive(Debug, Default, Clone)]
pub struct Keys {
    pub callid: String,
    /// The From, To and Request-URI keys (user and host, or the user only
    /// with `flags` 1).
    pub from: String,
    pub to: String,
    pub ruri: String,
    /// Username of the request's credentials, if any (algorithm 5).
    pub auth_user: Option<String>,
    /// `hash_pvar` expanded (algorithm 7).
    pub pvar: Option<String>,
    /// Algorithm 10 works on INVITEs only.
    pub is_invite: bool,
}

/// Why nothing was selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSelection {
    /// Every destination is inactive, disabled or full.
    NoneActive,
    /// The algorithm needs a setting that is not there.
    Misconfigured(&'static str),
}

/// FNV-1a, 64 bits.
pub fn hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Algorithm 9's 100 slots from the destinations' weights (in set
/// order): each weight is its share of slots; weights past a sum of 100
/// are dropped, and a sum under 100 is filled by the last destination.
/// The slots are interleaved (stride 37, prime to 100) so that
/// consecutive calls spread.
pub fn weight_slots(weights: &[u32]) -> Vec<usize> {
    if weights.is_empty() {
        return Vec::new();
    }
    let mut filled = Vec::with_capacity(100);
    for (i, w) in weights.iter().enumerate() {
        let w = *w as usize;
        if w == 0 || filled.len() + w > 100 {
            continue;
        }
        filled.extend(std::iter::repeat_n(i, w));
    }
    let last = weights.len() - 1;
    filled.resize(100, last);
    interleave(&filled)
}

fn interleave(slots: &[usize]) -> Vec<usize> {
    (0..slots.len())
        .map(|k| slots[(k * 37) % slots.len()])
        .collect()
}

/// The first destination at or after `start` (wrapping) that is not
/// skipped.
fn first_usable(set: &Set, start: usize) -> Option<usize> {
    let n = set.dests.len();
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| !set.dests[i].skipped())
}

/// A random number from the operating system.
pub fn random() -> u64 {
    let mut b = [0u8; 8];
    // Without a random source the first destination is chosen, as a
    // hash of 0 would.
    let _ = getrandom::fill(&mut b);
    u64::from_ne_bytes(b)
}

/// The index of the destination algorithm `alg` selects in `set`.
pub fn choose(set: &Set, alg: i32, keys: &Keys, loads: &Loads) -> Result<usize, NoSelection> {
    let n = set.dests.len();
    if n == 0 {
        return Err(NoSelection::NoneActive);
    }
    let slot = |text: &str| (hash(text) % n as u64) as usize;
    let round_robin = || set.rr.fetch_add(1, Ordering::Relaxed) % n;
    let start = match alg {
        0 => slot(&keys.callid),
        1 => slot(&keys.from),
        2 => slot(&keys.to),
        3 => slot(&keys.ruri),
        4 => round_robin(),
        5 => match &keys.auth_user {
            Some(user) => slot(user),
            None => round_robin(),
        },
        6 => (random() % n as u64) as usize,
        7 => match &keys.pvar {
            Some(text) => slot(text),
            None => return Err(NoSelection::Misconfigured("algorithm 7 needs hash_pvar")),
        },
        8 => 0,
        9 => {
            let k = set.wlast.fetch_add(1, Ordering::Relaxed) % set.weights.len().max(1);
            set.weights.get(k).copied().unwrap_or(0)
        }
        10 if keys.is_invite => return least_loaded(set, loads),
        10 => 0,
        11 => return relative_weight(set),
        12 => 0,
        13 => return latency(set),
        _ => 0,
    };
    first_usable(set, start).ok_or(NoSelection::NoneActive)
}

/// Algorithm 10: the usable destination with a `duid` and room below its
/// `maxload` carrying the fewest calls (the first of equals).
fn least_loaded(set: &Set, loads: &Loads) -> Result<usize, NoSelection> {
    set.dests
        .iter()
        .enumerate()
        .filter(|(_, d)| !d.skipped())
        .filter_map(|(i, d)| {
            let duid = d.attrs.duid.as_deref()?;
            let load = loads.load(set.id, duid);
            (d.attrs.maxload == 0 || load < d.attrs.maxload).then_some((load, i))
        })
        .min()
        .map(|(_, i)| i)
        .ok_or(NoSelection::NoneActive)
}

/// Algorithm 11: slots shared among the usable destinations by their
/// `rweight` (recomputed as states change), stepped through in turn.
fn relative_weight(set: &Set) -> Result<usize, NoSelection> {
    let usable: Vec<(usize, u32)> = (set.dests.iter().enumerate())
        .filter(|(_, d)| !d.skipped() && d.attrs.rweight > 0)
        .map(|(i, d)| (i, d.attrs.rweight))
        .collect();
    let total: u32 = usable.iter().map(|(_, w)| w).sum();
    let Some(&(last, _)) = usable.last() else {
        return Err(NoSelection::NoneActive);
    };
    let mut slots = Vec::with_capacity(100);
    for (i, w) in &usable {
        slots.extend(std::iter::repeat_n(*i, (w * 100 / total) as usize));
    }
    slots.resize(100, last);
    let slots = interleave(&slots);
    let k = set.rwlast.fetch_add(1, Ordering::Relaxed) % slots.len();
    Ok(slots[k])
}

/// Algorithm 13: round robin over the usable destinations of the highest
/// priority once lowered by their probes' latency (priority - latency /
/// priority).
fn latency(set: &Set) -> Result<usize, NoSelection> {
    let adjusted: Vec<(usize, i64)> = (set.dests.iter().enumerate())
        .filter(|(_, d)| !d.skipped())
        .map(|(i, d)| {
            let p = i64::from(d.priority);
            let est = d.latency().estimate as i64;
            (i, if p > 0 { p - est / p } else { p })
        })
        .collect();
    let best = adjusted
        .iter()
        .map(|(_, p)| *p)
        .max()
        .ok_or(NoSelection::NoneActive)?;
    let top: Vec<usize> = (adjusted.iter())
        .filter(|(_, p)| *p == best)
        .map(|(i, _)| *i)
        .collect();
    Ok(top[set.rr.fetch_add(1, Ordering::Relaxed) % top.len()])
}

/// The selection's order: `first`, then the other usable destinations
/// after it, wrapping (Kamailio's failover order), at most `limit` in
/// all.
pub fn failover_order(set: &Set, first: usize, limit: usize) -> Vec<usize> {
    let n = set.dests.len();
    let mut out = vec![first];
    out.extend(
        (1..n)
            .map(|k| (first + k) % n)
            .filter(|&i| !set.dests[i].skipped()),
    );
    out.truncate(limit.max(1));
    out
}

#[cfg(test)]
mod tests {
    use super::super::list::{self, flags};
    use super::super::sets::{Dispatcher, Sets, Settings};
    use super::*;

    fn dispatcher(text: &str) -> Dispatcher {
        let specs = list::parse(text).unwrap();
        let sets = crate::testing::ready(Sets::build("t1", specs));
        let settings = Settings {
            hash_size: 4,
            ..Settings::default()
        };
        Dispatcher::new(settings, sets)
    }

    const THREE: &str = "1 sip:10.0.0.1:5060\n1 sip:10.0.0.2:5060\n1 sip:10.0.0.3:5060\n";

    fn counts(d: &Dispatcher, alg: i32, calls: usize, keys: impl Fn(usize) -> Keys) -> Vec<usize> {
        let sets = d.sets();
        let set = &sets.sets[&1];
        let mut c = vec![0; set.dests.len()];
        for k in 0..calls {
            c[choose(set, alg, &keys(k), &Loads::default()).unwrap()] += 1;
        }
        c
    }

    fn callid(k: usize) -> Keys {
        Keys {
            callid: format!("{k}-abc@192.0.2.7"),
            ..Keys::default()
        }
    }

    #[test]
    fn round_robin_is_exact_and_skips_inactive() {
        let d = dispatcher(THREE);
        assert_eq!(counts(&d, 4, 300, |_| Keys::default()), vec![100, 100, 100]);
        d.set_state(1, Some("sip:10.0.0.2:5060"), flags::INACTIVE)
            .unwrap();
        let c = counts(&d, 4, 300, |_| Keys::default());
        assert_eq!(c[1], 0);
        assert_eq!(c[0] + c[2], 300);
    }

    #[test]
    fn hashes_are_stable_and_spread() {
        let d = dispatcher(THREE);
        let sets = d.sets();
        let set = &sets.sets[&1];
        let loads = Loads::default();
        for alg in [0, 1, 2, 3, 5, 7] {
            let keys = Keys {
                callid: "c1".into(),
                from: "alice@example.com".into(),
                to: "bob@example.com".into(),
                ruri: "bob@example.com".into(),
                auth_user: Some("alice".into()),
                pvar: Some("x".into()),
                is_invite: true,
            };
            let first = choose(set, alg, &keys, &loads).unwrap();
            for _ in 0..5 {
                assert_eq!(choose(set, alg, &keys, &loads).unwrap(), first, "alg {alg}");
            }
        }
        let c = counts(&d, 0, 3000, callid);
        assert!(c.iter().all(|n| (800..1200).contains(n)), "{c:?}");
        // Algorithm 7 without hash_pvar is refused.
        assert!(matches!(
            choose(set, 7, &Keys::default(), &loads),
            Err(NoSelection::Misconfigured(_))
        ));
    }

    #[test]
    fn random_spreads() {
        let d = dispatcher(THREE);
        let c = counts(&d, 6, 3000, |_| Keys::default());
        assert!(c.iter().all(|n| (800..1200).contains(n)), "{c:?}");
    }

    #[test]
    fn priority_takes_the_highest_usable() {
        let d = dispatcher("1 sip:10.0.0.1 0 1\n1 sip:10.0.0.2 0 10\n1 sip:10.0.0.3 0 5\n");
        let sets = d.sets();
        let set = &sets.sets[&1];
        let uri = |i: usize| set.dests[i].uri.clone();
        let i = choose(set, 8, &Keys::default(), &Loads::default()).unwrap();
        assert_eq!(uri(i), "sip:10.0.0.2");
        d.set_state(1, Some("sip:10.0.0.2"), flags::DISABLED)
            .unwrap();
        let i = choose(set, 8, &Keys::default(), &Loads::default()).unwrap();
        assert_eq!(uri(i), "sip:10.0.0.3");
        // Failover order: after the selected, wrapping, skipping the
        // disabled one.
        let order: Vec<String> = failover_order(set, i, 10).into_iter().map(uri).collect();
        assert_eq!(order, vec!["sip:10.0.0.3", "sip:10.0.0.1"]);
        assert_eq!(failover_order(set, i, 1).len(), 1);
    }

    #[test]
    fn weights_spread_exactly_over_100_calls() {
        let d = dispatcher(
            "1 sip:10.0.0.1 0 0 weight=50\n1 sip:10.0.0.2 0 0 weight=30\n1 sip:10.0.0.3 0 0 weight=20\n",
        );
        assert_eq!(counts(&d, 9, 300, |_| Keys::default()), vec![150, 90, 60]);
        // Consecutive calls do not all go to one destination.
        let sets = d.sets();
        let first10: Vec<usize> = (0..10)
            .map(|_| choose(&sets.sets[&1], 9, &Keys::default(), &Loads::default()).unwrap())
            .collect();
        assert!(first10.iter().any(|i| *i != first10[0]), "{first10:?}");
    }

    #[test]
    fn weight_slots_fill_and_cap() {
        let s = weight_slots(&[30, 20]);
        assert_eq!(s.iter().filter(|i| **i == 0).count(), 30);
        assert_eq!(s.iter().filter(|i| **i == 1).count(), 70, "the last fills");
        let s = weight_slots(&[80, 30, 10]);
        assert_eq!(
            s.iter().filter(|i| **i == 1).count(),
            0,
            "over 100: dropped"
        );
        assert_eq!(s.iter().filter(|i| **i == 2).count(), 20);
    }

    #[test]
    fn relative_weight_follows_active_destinations() {
        let d = dispatcher(
            "1 sip:10.0.0.1 0 0 rweight=1\n1 sip:10.0.0.2 0 0 rweight=2\n1 sip:10.0.0.3 0 0 rweight=1\n",
        );
        assert_eq!(counts(&d, 11, 100, |_| Keys::default()), vec![25, 50, 25]);
        d.set_state(1, Some("sip:10.0.0.3"), flags::INACTIVE)
            .unwrap();
        assert_eq!(counts(&d, 11, 100, |_| Keys::default()), vec![33, 67, 0]);
    }

    #[test]
    fn call_load_picks_the_least_loaded_below_maxload() {
        let d = dispatcher(
            "1 sip:10.0.0.1 0 0 duid=a;maxload=2\n1 sip:10.0.0.2 0 0 duid=b;maxload=1\n1 sip:10.0.0.3\n",
        );
        let now = std::time::Instant::now();
        let sets = d.sets();
        let set = &sets.sets[&1];
        let invite = Keys {
            is_invite: true,
            ..Keys::default()
        };
        let mut picked = Vec::new();
        for k in 0..3 {
            let i = d
                .choose_by_load(set, &invite, &format!("call{k}"), now)
                .unwrap();
            picked.push(set.dests[i].attrs.duid.clone().unwrap());
        }
        assert_eq!(picked, vec!["a", "b", "a"]);
        assert_eq!(
            d.with_loads(|l| choose(set, 10, &invite, l)),
            Err(NoSelection::NoneActive),
            "both full; the third has no duid"
        );
        assert!(d.load_remove("call1"));
        assert_eq!(d.with_loads(|l| choose(set, 10, &invite, l)), Ok(1));
        assert!(!d.load_remove("call1"), "already removed");
    }

    #[test]
    fn latency_prefers_the_fastest_of_equal_priority() {
        let d = dispatcher("1 sip:10.0.0.1 0 30\n1 sip:10.0.0.2 0 30\n1 sip:10.0.0.3 0 30\n");
        let sets = d.sets();
        let set = &sets.sets[&1];
        set.dests[1].observe_latency(Some(91));
        set.dests[2].observe_latency(Some(21));
        let c = counts(&d, 13, 100, |_| Keys::default());
        assert_eq!(c[1], 0, "91 ms lowers priority 30 to 27");
        assert_eq!(c[0] + c[2], 100);
        assert!(c[0] >= 49 && c[2] >= 49, "{c:?}");
    }

    #[test]
    fn nothing_usable_and_unknown_algorithms() {
        let d = dispatcher(THREE);
        let sets = d.sets();
        let set = &sets.sets[&1];
        assert_eq!(choose(set, 99, &Keys::default(), &Loads::default()), Ok(0));
        d.set_state(1, None, flags::INACTIVE).unwrap();
        for alg in [0, 4, 8, 9, 11, 12, 13] {
            assert_eq!(
                choose(set, alg, &Keys::default(), &Loads::default()),
                Err(NoSelection::NoneActive),
                "alg {alg}"
            );
        }
    }
}
