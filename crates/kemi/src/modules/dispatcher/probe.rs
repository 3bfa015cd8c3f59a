//! The probe driver: every `ds_ping_interval` an OPTIONS (or
//! `ds_ping_method`) to each destination the probing mode says, through
//! the proxy's [`Uac`], each in a task of its own, at most one
//! outstanding per destination and [`MAX_PROBES_IN_FLIGHT`] per tenant,
//! so probes never hold up calls. Replies move the destinations through
//! the state machine (health.rs); the same task drops expired call loads.
//!
//! [`MAX_PROBES_IN_FLIGHT`]: super::sets::MAX_PROBES_IN_FLIGHT

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::health::{self, Health};
use super::sets::{Destination, Dispatcher};
use crate::TenantState;
use crate::uac::{LocalRequest, Uac};

/// A random token for tags and Call-IDs.
fn token() -> String {
    format!("{:016x}", super::algo::random())
}

/// The probe for `d`.
fn request(settings: &super::sets::Settings, d: &Destination) -> LocalRequest {
    let from = d.attrs.ping_from.as_deref().unwrap_or(&settings.ping_from);
    LocalRequest {
        method: settings.ping_method.clone(),
        ruri: d.uri.clone(),
        from: format!("<{from}>;tag={}", token()),
        to: format!("<{}>", d.uri),
        call_id: format!("{}-ds", token()),
        cseq: 1,
        next_hop: d.attrs.obproxy.clone(),
        socket: d.attrs.socket.clone(),
        ..LocalRequest::default()
    }
}

/// How long a probe waits for its reply: 9/10 of `ds_ping_interval`, so
/// each round knows the previous round's results and a destination that
/// stops answering is inactive after `ds_probing_threshold` intervals
/// (the transaction's own Timer F, 32 s by default, would take that many
/// times 32 s with one probe outstanding per destination). No bound when
/// probes are not timed (tests drive rounds themselves).
fn reply_wait(settings: &super::sets::Settings) -> Option<Duration> {
    Some(settings.ping_interval.mul_f64(0.9)).filter(|w| !w.is_zero())
}

/// Probe `d` once and apply the result: a reply in `ds_ping_reply_codes`
/// (or any 2xx) is an answer; another code, no reply within
/// [`reply_wait`] (a 408, as the transaction's timeout), or a request
/// that could not be sent is a failure.
async fn probe(tenant: &str, ds: &Dispatcher, uac: &Arc<dyn Uac>, d: &Destination) {
    let started = Instant::now();
    let sent = uac.send(request(&ds.settings, d));
    let result = match reply_wait(&ds.settings) {
        None => sent.await,
        Some(wait) => tokio::time::timeout(wait, sent).await.unwrap_or_else(|_| {
            Ok(crate::uac::LocalReply {
                status: 408,
                reason: format!("no reply within {wait:?}"),
            })
        }),
    };
    let accepted = match &result {
        Ok(reply) => {
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            d.observe_latency((reply.status != 408).then_some(ms));
            ds.settings.reply_codes.accepts(reply.status)
        }
        Err(e) => {
            tracing::debug!(tenant, uri = d.uri, "dispatcher probe not sent: {e}");
            false
        }
    };
    let before = d.health();
    // Someone may have disabled it meanwhile (RPC).
    if before.flags & super::list::flags::DISABLED != 0 {
        return;
    }
    let Some(report) = health::probe_report(accepted, before.flags, ds.settings.probing_mode)
    else {
        return;
    };
    let after = d.update(report, ds.settings.thresholds);
    log_change(tenant, d, before, after, &result);
}

fn log_change(
    tenant: &str,
    d: &Destination,
    before: Health,
    after: Health,
    result: &Result<crate::uac::LocalReply, crate::uac::UacError>,
) {
    if before.skipped() == after.skipped() {
        return;
    }
    let why = match result {
        Ok(r) => format!("{} {}", r.status, r.reason),
        Err(e) => e.to_string(),
    };
    if after.skipped() {
        tracing::warn!(
            tenant,
            setid = d.setid,
            uri = d.uri,
            state = after.letters(),
            "dispatcher destination down (probe: {why})"
        );
    } else {
        tracing::info!(
            tenant,
            setid = d.setid,
            uri = d.uri,
            state = after.letters(),
            "dispatcher destination up (probe: {why})"
        );
    }
}

/// Start one round of probes on `state`'s destinations that are due and
/// have none outstanding; the tasks are returned (the driver lets them
/// run, tests await them). None when probing is switched off.
pub fn start_round(
    tenant: &str,
    state: &Arc<TenantState>,
    uac: &Arc<dyn Uac>,
) -> Vec<JoinHandle<()>> {
    let ds = &state.dispatcher;
    if !ds.ping_active() {
        return Vec::new();
    }
    let mut tasks = Vec::new();
    for d in ds.sets().all() {
        if !health::probed(d.health().flags, ds.settings.probing_mode)
            || d.probing.swap(true, Ordering::AcqRel)
        {
            continue;
        }
        let (d, state, uac, tenant) = (d.clone(), state.clone(), uac.clone(), tenant.to_string());
        tasks.push(tokio::spawn(async move {
            let slots = state.dispatcher.probe_slots.clone();
            if let Ok(_permit) = slots.acquire_owned().await {
                probe(&tenant, &state.dispatcher, &uac, &d).await;
            }
            d.probing.store(false, Ordering::Release);
        }));
    }
    tasks
}

/// Run the probe rounds and the call load expiry of `state` for as long
/// as it is held: probes every `ds_ping_interval` (none when it is 0),
/// expired loads every `ds_hash_check_interval` (with `ds_hash_size`).
/// Before the proxy runs (no [`Uac`] yet) a round is skipped and logged
/// once.
pub fn spawn(tenant: &str, state: &Arc<TenantState>) {
    let settings = &state.dispatcher.settings;
    let ping = settings.ping_interval;
    let expiry = (settings.hash_size > 0).then_some(settings.hash_check_interval);
    if ping.is_zero() && expiry.is_none() {
        return;
    }
    let tick = [Some(ping).filter(|p| !p.is_zero()), expiry]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_millis(100));
    let tenant = tenant.to_string();
    let weak: Weak<TenantState> = Arc::downgrade(state);
    tokio::spawn(async move {
        // The first round one tick after the start, as Kamailio's timer:
        // the proxy is running by then.
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        let (mut next_ping, mut next_expiry) = (Instant::now(), Instant::now());
        let mut told = false;
        loop {
            // The tick's scheduled time, not the time the task woke up:
            // with the wake-up's jitter, `now + ping` could fall after the
            // next tick and skip a round.
            let now = timer.tick().await.into_std();
            let Some(state) = weak.upgrade() else {
                return;
            };
            if !ping.is_zero() && now >= next_ping {
                next_ping = now + ping;
                match state.uac.get() {
                    Some(uac) => {
                        let uac = uac.clone();
                        drop(start_round(&tenant, &state, &uac));
                    }
                    None if !told => {
                        told = true;
                        tracing::warn!(tenant, "dispatcher: no proxy to send probes through yet");
                    }
                    None => {}
                }
            }
            if let Some(every) = expiry
                && now >= next_expiry
            {
                next_expiry = now + every;
                let removed = state.dispatcher.expire_loads(now);
                if removed > 0 {
                    tracing::debug!(tenant, removed, "dispatcher: expired call loads removed");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::super::health::{ProbingMode, Thresholds};
    use super::super::list;
    use super::super::sets::{Sets, Settings};
    use super::*;
    use crate::uac::{LocalReply, UacError};

    /// A proxy that records the probes and answers each destination with
    /// the code set for it (none: not sent).
    #[derive(Default)]
    struct FakeUac {
        sent: Mutex<Vec<LocalRequest>>,
        codes: Mutex<Vec<(String, Option<u16>)>>,
    }

    impl FakeUac {
        fn answer(&self, uri: &str, code: Option<u16>) {
            let mut codes = self.codes.lock().unwrap();
            codes.retain(|(u, _)| u != uri);
            codes.push((uri.to_string(), code));
        }
    }

    #[async_trait::async_trait]
    impl Uac for FakeUac {
        async fn send(&self, request: LocalRequest) -> Result<LocalReply, UacError> {
            self.sent.lock().unwrap().push(request.clone());
            let code = (self.codes.lock().unwrap().iter())
                .find(|(u, _)| *u == request.ruri)
                .map(|(_, c)| *c)
                .unwrap_or(Some(200));
            match code {
                Some(status) => Ok(LocalReply {
                    status,
                    reason: "R".into(),
                }),
                None => Err(UacError::Unroutable("no route".into())),
            }
        }
    }

    fn state(text: &str, mode: ProbingMode, probing: u32, inactive: u32) -> Arc<TenantState> {
        let settings = Settings {
            probing_mode: mode,
            thresholds: Thresholds { probing, inactive },
            reply_codes: health::ReplyCodes::parse("code=404").unwrap(),
            ping_from: "sip:ds@kemibox.test".into(),
            ..Settings::default()
        };
        let sets = crate::testing::ready(Sets::build("t1", list::parse(text).unwrap()));
        Arc::new(TenantState {
            dispatcher: Dispatcher::new(settings, sets),
            ..TenantState::default()
        })
    }

    async fn round(state: &Arc<TenantState>, uac: &Arc<FakeUac>) {
        let uac: Arc<dyn Uac> = uac.clone();
        for t in start_round("t1", state, &uac) {
            t.await.unwrap();
        }
    }

    fn letters(state: &TenantState, uri: &str) -> String {
        state
            .dispatcher
            .sets()
            .find(1, uri)
            .unwrap()
            .health()
            .letters()
    }

    #[tokio::test]
    async fn failing_destination_goes_inactive_after_the_threshold_and_comes_back() {
        let s = state(
            "1 sip:10.0.0.1:5060\n1 sip:10.0.0.2:5060\n",
            ProbingMode::All,
            2,
            1,
        );
        let uac = Arc::new(FakeUac::default());
        uac.answer("sip:10.0.0.2:5060", Some(408));
        round(&s, &uac).await;
        assert_eq!(letters(&s, "sip:10.0.0.1:5060"), "AP");
        assert_eq!(letters(&s, "sip:10.0.0.2:5060"), "TP");
        uac.answer("sip:10.0.0.2:5060", None);
        round(&s, &uac).await;
        assert_eq!(letters(&s, "sip:10.0.0.2:5060"), "IP");
        // 404 is in ds_ping_reply_codes: an answer.
        uac.answer("sip:10.0.0.2:5060", Some(404));
        round(&s, &uac).await;
        assert_eq!(letters(&s, "sip:10.0.0.2:5060"), "AP");
        let sent = uac.sent.lock().unwrap();
        assert_eq!(sent.len(), 6);
        let p = &sent[0];
        assert_eq!(p.method, "OPTIONS");
        assert_eq!(p.ruri, p.to.trim_matches(['<', '>']));
        assert!(
            p.from.starts_with("<sip:ds@kemibox.test>;tag="),
            "{}",
            p.from
        );
    }

    #[tokio::test]
    async fn mode_0_probes_only_flagged_destinations_once() {
        let s = state(
            "1 sip:10.0.0.1 8\n1 sip:10.0.0.2\n1 sip:10.0.0.3 12\n",
            ProbingMode::Flagged,
            1,
            1,
        );
        let uac = Arc::new(FakeUac::default());
        round(&s, &uac).await;
        let probed: Vec<String> = uac
            .sent
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.ruri.clone())
            .collect();
        assert_eq!(
            probed,
            vec!["sip:10.0.0.1"],
            "not the unflagged, not the disabled"
        );
        assert_eq!(letters(&s, "sip:10.0.0.1"), "AX");
        round(&s, &uac).await;
        assert_eq!(uac.sent.lock().unwrap().len(), 1, "the flag was cleared");
    }

    #[tokio::test]
    async fn switched_off_and_per_destination_attributes() {
        let s = state(
            "1 sip:10.0.0.1 0 0 ping_from=sip:me@x;socket=udp:127.0.0.1:5060;obproxy=sip:10.9.9.9\n",
            ProbingMode::All,
            1,
            1,
        );
        let uac = Arc::new(FakeUac::default());
        s.dispatcher.set_ping_active(false);
        round(&s, &uac).await;
        assert!(uac.sent.lock().unwrap().is_empty());
        s.dispatcher.set_ping_active(true);
        round(&s, &uac).await;
        let sent = uac.sent.lock().unwrap();
        assert!(sent[0].from.starts_with("<sip:me@x>"));
        assert_eq!(sent[0].socket.as_deref(), Some("udp:127.0.0.1:5060"));
        assert_eq!(sent[0].next_hop.as_deref(), Some("sip:10.9.9.9"));
    }

    /// A proxy whose replies never come.
    struct Silent;
    #[async_trait::async_trait]
    impl Uac for Silent {
        async fn send(&self, _: LocalRequest) -> Result<LocalReply, UacError> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn an_unanswered_probe_fails_within_the_interval() {
        let text = "1 sip:10.0.0.1\n";
        let settings = Settings {
            probing_mode: ProbingMode::All,
            thresholds: Thresholds {
                probing: 2,
                inactive: 1,
            },
            ping_interval: Duration::from_millis(200),
            ..Settings::default()
        };
        let sets = crate::testing::ready(Sets::build("t1", list::parse(text).unwrap()));
        let s = Arc::new(TenantState {
            dispatcher: Dispatcher::new(settings, sets),
            ..TenantState::default()
        });
        let uac: Arc<dyn Uac> = Arc::new(Silent);
        for expected in ["TP", "IP"] {
            let started = Instant::now();
            for t in start_round("t1", &s, &uac) {
                t.await.unwrap();
            }
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(180) && waited < Duration::from_secs(1),
                "9/10 of the interval, not Timer F: {waited:?}"
            );
            assert_eq!(letters(&s, "sip:10.0.0.1"), expected);
        }
        let d = s.dispatcher.sets();
        let d = d.find(1, "sip:10.0.0.1").unwrap();
        assert_eq!(d.latency().timeouts, 2);
    }

    #[tokio::test]
    async fn one_outstanding_probe_per_destination() {
        let s = state("1 sip:10.0.0.1\n", ProbingMode::All, 1, 1);
        let uac: Arc<dyn Uac> = Arc::new(Silent);
        let first = start_round("t1", &s, &uac);
        assert_eq!(first.len(), 1);
        tokio::task::yield_now().await;
        assert!(
            start_round("t1", &s, &uac).is_empty(),
            "still waiting for the first"
        );
        for t in first {
            t.abort();
        }
    }
}
