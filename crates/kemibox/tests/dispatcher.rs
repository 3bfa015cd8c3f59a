//! The dispatcher end to end with SIPp over real sockets: three SIPp
//! callees in one set behind `kemibox run`, a script selecting with
//! `KSR.dispatcher.ds_select_dst` and failing over with `ds_next_dst` in
//! its failure route. Each callee is told how many calls it must take
//! (`-m`) and must end by itself, so a wrong spread leaves one waiting.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::probe::{free_tcp_port, free_udp_port, options_from};
use common::sipp::{Running, count, finished, kemibox_cli, kemibox_run, scenario, sipp};

const SCRIPT: &str = r#"
local ALG = tonumber(os.getenv("DS_ALG"))

function ksr_request_route()
    if KSR.is_OPTIONS() then
        if KSR.dispatcher.ds_is_from_list(1) > 0 then
            KSR.sl.sl_send_reply(200, "From a destination")
        else
            KSR.sl.sl_send_reply(403, "Not a destination")
        end
        return
    end
    if KSR.siputils.has_totag() > 0 then
        if KSR.rr.loose_route() > 0 then
            KSR.tm.t_relay()
        else
            KSR.sl.sl_send_reply(404, "Not here")
        end
        return
    end
    KSR.rr.record_route()
    if KSR.dispatcher.ds_select_dst(1, ALG) < 0 then
        KSR.sl.sl_send_reply(503, "No destination")
        return
    end
    KSR.tm.t_set_fr(0, 1000)
    KSR.tm.t_on_failure("ds_failure")
    KSR.tm.t_relay()
end

function ds_failure()
    if KSR.tm.t_is_canceled() > 0 then return end
    if KSR.tm.t_check_status("408|5[0-9][0-9]") < 0 then return end
    if os.getenv("DS_MARK") ~= "no" then
        KSR.dispatcher.ds_mark_dst_state("ip")
    end
    if KSR.dispatcher.ds_next_dst() > 0 then
        KSR.info("ds failover to " .. KSR.pv.get("$du"))
        KSR.tm.t_on_failure("ds_failure")
        KSR.tm.t_relay()
    end
end
"#;

struct Setup {
    dir: PathBuf,
    proxy: SocketAddr,
    config: PathBuf,
    callees: [u16; 3],
    metrics: SocketAddr,
}

/// A directory with the script, a list of three callees on free ports
/// (with `attrs` each) and a config running the script with algorithm
/// `alg`.
fn setup(name: &str, alg: i32, attrs: [&str; 3]) -> Setup {
    setup_with(name, alg, attrs, "", "")
}

/// [`setup`] with more `[env]` lines (`env`) and `[dispatcher]` lines
/// (`extra`).
fn setup_with(name: &str, alg: i32, attrs: [&str; 3], env: &str, extra: &str) -> Setup {
    let dir = common::temp_dir(&format!("dispatcher-{name}"));
    let callees = [free_udp_port(), free_udp_port(), free_udp_port()];
    let list: String = (callees.iter().zip(attrs))
        .map(|(port, a)| format!("1 sip:127.0.0.1:{port} 0 0 {a}\n"))
        .collect();
    std::fs::write(
        dir.join("dispatcher.list"),
        format!("# the callees\n{list}"),
    )
    .unwrap();
    std::fs::write(dir.join("ds.lua"), SCRIPT).unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let admin = free_tcp_port();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let config = dir.join("kemibox.toml");
    std::fs::write(
        &config,
        format!(
            "script = \"ds.lua\"\nlisten = [\"udp:{proxy}\"]\nlog = \"info\"\n\
             [env]\nDS_ALG = \"{alg}\"\n{env}\
             [dispatcher]\nlist_file = \"dispatcher.list\"\nflags = 2\n{extra}\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [metrics]\nlisten = \"{metrics}\"\n"
        ),
    )
    .unwrap();
    Setup {
        dir,
        proxy,
        config,
        callees,
        metrics,
    }
}

impl Setup {
    fn run(&self) -> Running {
        let config = self.config.display().to_string();
        kemibox_run(
            &self.dir,
            &["--config", &config],
            &self.dir.join("kemibox.log"),
        )
    }

    /// A callee on callee `i`'s port taking `calls` calls (0: no limit).
    fn callee(&self, i: usize, calls: u32) -> Running {
        let port = self.callees[i].to_string();
        let sf = scenario("uas_rr.xml");
        let mut args = vec!["-sf", sf.as_str(), "-p", port.as_str()];
        let calls = calls.to_string();
        if calls != "0" {
            args.extend(["-m", calls.as_str()]);
        }
        let child = sipp(&self.dir, &args).spawn().expect("sipp installed");
        Running(child)
    }

    /// Place `calls` calls at `rate` per second; true when none failed.
    fn call(&self, calls: u32, rate: u32) -> bool {
        let sf = scenario("uac_rr.xml");
        let port = free_udp_port().to_string();
        let proxy = self.proxy.to_string();
        let (calls, rate) = (calls.to_string(), rate.to_string());
        sipp(
            &self.dir,
            &[
                "-sf",
                &sf,
                &proxy,
                "-p",
                &port,
                "-r",
                &rate,
                "-m",
                &calls,
                "-timeout",
                "90s",
                "-timeout_error",
                "-trace_err",
            ],
        )
        .status()
        .expect("sipp runs")
        .success()
    }

    fn log(&self) -> PathBuf {
        self.dir.join("kemibox.log")
    }
}

/// Wait for each callee to have taken its calls and ended.
fn all_finished(dir: &Path, callees: Vec<Running>, what: &str) {
    for (i, c) in callees.into_iter().enumerate() {
        assert!(
            finished(c),
            "{what}: callee {i} did not take exactly its calls; see {}",
            dir.display()
        );
    }
}

#[test]
fn round_robin_spreads_300_calls_evenly() {
    let s = setup("rr", 4, ["", "", ""]);
    let callees = vec![s.callee(0, 100), s.callee(1, 100), s.callee(2, 100)];
    std::thread::sleep(Duration::from_millis(300));
    let _proxy = s.run();
    assert!(s.call(300, 100), "failed calls; see {}", s.dir.display());
    all_finished(&s.dir, callees, "round robin");
    assert_eq!(count(&s.log(), "ds failover"), 0);
}

#[test]
fn weights_spread_calls_by_weight() {
    let s = setup("weight", 9, ["weight=50", "weight=30", "weight=20"]);
    let callees = vec![s.callee(0, 150), s.callee(1, 90), s.callee(2, 60)];
    std::thread::sleep(Duration::from_millis(300));
    let _proxy = s.run();
    assert!(s.call(300, 100), "failed calls; see {}", s.dir.display());
    all_finished(&s.dir, callees, "weight");
}

#[test]
fn a_stopped_callee_fails_over_and_is_recognised_by_address() {
    let s = setup("failover", 4, ["", "", ""]);
    let a = s.callee(0, 0);
    let b = s.callee(1, 0);
    // The third stops after 30 calls, while the caller goes on.
    let c = s.callee(2, 30);
    std::thread::sleep(Duration::from_millis(300));
    let _proxy = s.run();
    assert!(
        s.call(300, 30),
        "calls failed at the caller; see {}",
        s.dir.display()
    );
    assert!(finished(c), "the third callee took its 30 calls");
    assert!(
        count(&s.log(), "ds failover to sip:127.0.0.1:") >= 1,
        "a call to the stopped callee failed over"
    );
    // The failure route marked it inactive (and probing).
    let (ok, out) = kemibox_cli(&[
        "ctl",
        "--config",
        &s.config.display().to_string(),
        "dispatcher.list",
    ]);
    assert!(ok, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let targets = &list["RECORDS"][0]["SET"]["TARGETS"];
    let flags = |i: usize| targets[i]["DEST"]["FLAGS"].as_str().unwrap().to_string();
    assert_eq!(
        (flags(0), flags(1), flags(2)),
        ("AX".into(), "AX".into(), "IP".into())
    );
    assert_eq!(list["NRSETS"], 1);
    // The same in the metrics, with the selections.
    let text = common::http_get(s.metrics, "/metrics").unwrap();
    let c_port = s.callees[2];
    let down = format!(
        "kemibox_dispatcher_destination_up{{tenant=\"default\",setid=\"1\",uri=\"sip:127.0.0.1:{c_port}\",state=\"IP\"}} 0"
    );
    assert!(text.contains(&down), "{down} not in {text}");
    let selected: u64 = (text.lines())
        .filter(|l| l.starts_with("kemibox_dispatcher_selections_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(selected, 300, "each call selected once");

    // ds_is_from_list: a destination's address and port, and only those.
    drop((a, b));
    std::thread::sleep(Duration::from_millis(200));
    let wait = Duration::from_secs(5);
    let from = |addr: &str| {
        let sock = UdpSocket::bind(addr).unwrap();
        options_from(&sock, s.proxy, "probe/1.0", wait).unwrap()
    };
    let a_addr = format!("127.0.0.1:{}", s.callees[0]);
    assert!(from(&a_addr).contains("200 From a destination"));
    assert!(from("127.0.0.1:0").contains("403"), "another port");
    assert!(
        from(&format!("127.0.0.2:{}", s.callees[0])).contains("403"),
        "another address"
    );
}

#[test]
fn bad_dispatcher_settings_are_refused_with_the_line_and_the_fix() {
    let dir = common::temp_dir("dispatcher-refused");
    let cases = [
        ("[dispatcher]\nds_probing_mode = 7\n", 2, "from 0 to 3"),
        (
            "[dispatcher]\nds_ping_reply_codes = \"class=9\"\n",
            2,
            "class=N;code=NNN",
        ),
        ("[dispatcher]\nflags = 4\n", 2, "from 0 to 3"),
        ("[dispatcher]\nds_ping_from = \"not a uri\"\n", 2, "SIP URI"),
        (
            "[dispatcher]\nsetid_pvname = \"$ru\"\n",
            2,
            "$var(name) or $avp(name)",
        ),
        ("[dispatcher]\ndb_url = \"mysql://x\"\n", 2, "list_file"),
        (
            "[[tenant]]\nid = \"a\"\nscript = \"a.lua\"\n[tenant.dispatcher]\nds_hash_size = 40\n",
            5,
            "from 0 to 24",
        ),
    ];
    for (config, line, fix) in cases {
        let (file, err) = common::refused_config(&dir, config);
        assert!(
            err.contains(&format!("{file}: line {line}:")),
            "{config}: {err}"
        );
        assert!(err.contains("dispatcher"), "{config}: {err}");
        assert!(err.contains(fix), "{config}: {err}");
    }
}

/// Probing settings of the probing tests: a probe a second, a destination
/// inactive after two failed probes, active after two answered ones.
const PROBING: &str = "ds_ping_interval = 1\nds_probing_mode = 1\nds_probing_threshold = 2\n\
     ds_inactive_threshold = 2\nds_ping_from = \"sip:prober@kemibox.test\"\n";

impl Setup {
    /// A callee on callee `i`'s port that answers probes (200) and calls,
    /// for as long as it runs.
    fn answering_callee(&self, i: usize) -> Running {
        let port = self.callees[i].to_string();
        let sf = scenario("uas_options.xml");
        let child = sipp(&self.dir, &["-sf", &sf, "-p", &port])
            .spawn()
            .expect("sipp installed");
        Running(child)
    }

    /// `kemibox ctl METHOD ARGS...` against this proxy: its JSON result.
    fn ctl(&self, method: &str, args: &[&str]) -> serde_json::Value {
        let config = self.config.display().to_string();
        let mut all = vec!["ctl", "--config", config.as_str(), method];
        all.extend(args);
        let (ok, out) = kemibox_cli(&all);
        assert!(ok, "kemibox ctl {method} {args:?}: {out}");
        serde_json::from_str(&out).unwrap()
    }

    /// The callees' states (`dispatcher.list`'s FLAGS), in list order.
    fn flags(&self) -> Vec<String> {
        let list = self.ctl("dispatcher.list", &[]);
        let targets = list["RECORDS"][0]["SET"]["TARGETS"].as_array().unwrap();
        (targets.iter())
            .map(|t| t["DEST"]["FLAGS"].as_str().unwrap().to_string())
            .collect()
    }

    /// Poll until callee `i` is in state `want`: how long that took
    /// (panics after `within`).
    fn wait_flags(&self, i: usize, want: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let flags = self.flags();
            if flags[i] == want {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "callee {i} not {want} within {within:?}: {flags:?}; see {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metrics(&self) -> String {
        common::http_get(self.metrics, "/metrics").unwrap()
    }

    /// Callee `i`'s `kemibox_dispatcher_selections_total`.
    fn selections(&self, i: usize) -> u64 {
        let prefix = format!(
            "kemibox_dispatcher_selections_total{{tenant=\"default\",setid=\"1\",uri=\"sip:127.0.0.1:{}\"}} ",
            self.callees[i]
        );
        let text = self.metrics();
        let line = text.lines().find(|l| l.starts_with(&prefix));
        line.and_then(|l| l[prefix.len()..].trim().parse().ok())
            .unwrap_or_else(|| panic!("{prefix} not in {text}"))
    }
}

/// A value of the metrics' `text` for the series starting with `series`.
fn metric(text: &str, series: &str) -> u64 {
    (text.lines())
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in {text}"))
}

/// What a [`Peer`] received.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    method: String,
    from: String,
    call_id: String,
}

/// A destination as a plain UDP socket: it records every request and
/// answers OPTIONS with `code` (`None`: a silent destination, a host that
/// went away); nothing else is answered.
struct Peer {
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peer {
    fn bind(port: u16, code: Option<u16>) -> Peer {
        let sock = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while !st.load(Ordering::Relaxed) {
                let Ok((len, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                let header = |name: &str| {
                    (text.lines())
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim().to_string())
                        .unwrap_or_default()
                };
                let method = text.split(' ').next().unwrap_or_default().to_string();
                if method == "OPTIONS"
                    && let Some(code) = code
                {
                    let mut reply = format!("SIP/2.0 {code} Probe Answer\r\n");
                    for l in text.lines().filter(|l| {
                        ["Via:", "From:", "Call-ID:", "CSeq:"]
                            .iter()
                            .any(|h| l.starts_with(h))
                    }) {
                        reply.push_str(l);
                        reply.push_str("\r\n");
                    }
                    reply.push_str(&format!("{};tag=peer\r\n", header_line(&text, "To:")));
                    reply.push_str("Content-Length: 0\r\n\r\n");
                    let _ = sock.send_to(reply.as_bytes(), from);
                }
                r.lock().unwrap().push(Received {
                    at: Instant::now(),
                    method,
                    from: header("From:"),
                    call_id: header("Call-ID:"),
                });
            }
        });
        Peer {
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The probes received (OPTIONS, retransmissions counted once).
    fn probes(&self) -> usize {
        let mut ids: Vec<String> = (self.received().into_iter())
            .filter(|r| r.method == "OPTIONS")
            .map(|r| r.call_id)
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    }
}

fn header_line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_default()
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn probing_takes_a_stopped_callee_out_and_brings_it_back() {
    // The failure route does not mark: only the probes do.
    let s = setup_with("probing", 4, ["", "", ""], "DS_MARK = \"no\"\n", PROBING);
    let a = s.answering_callee(0);
    let b = s.answering_callee(1);
    let c = s.answering_callee(2);
    std::thread::sleep(Duration::from_millis(300));
    let _proxy = s.run();
    let within = Duration::from_secs(5);
    for i in 0..3 {
        s.wait_flags(i, "AP", within);
    }
    // 150 calls over 15 s while the third callee goes away and comes back.
    let caller = {
        let (dir, proxy) = (s.dir.clone(), s.proxy);
        let setup = Setup {
            dir,
            proxy,
            config: s.config.clone(),
            callees: s.callees,
            metrics: s.metrics,
        };
        std::thread::spawn(move || setup.call(150, 10))
    };
    std::thread::sleep(Duration::from_secs(2));
    drop(c);
    // Gone: its address now takes requests and answers none.
    let stopped = Instant::now();
    let gone = Peer::bind(s.callees[2], None);
    let flags = s.wait_flags(2, "IP", Duration::from_secs(10));
    let took = stopped.elapsed();
    // ds_ping_interval * ds_probing_threshold, plus one interval for the
    // probe in flight when it stopped (and 0.5 s for the polling).
    let probed: Vec<Duration> = (gone.received().iter())
        .filter(|r| r.method == "OPTIONS")
        .map(|r| r.at - stopped)
        .collect();
    assert!(
        took <= Duration::from_millis(3500),
        "inactive after {took:?} ({flags:?} polling); probes at {probed:?}"
    );
    let down_at = Instant::now();
    let selected = s.selections(2);
    let text = s.metrics();
    let down = format!(
        "kemibox_dispatcher_destination_up{{tenant=\"default\",setid=\"1\",uri=\"sip:127.0.0.1:{}\",state=\"IP\"}} 0",
        s.callees[2]
    );
    assert!(text.contains(&down), "{down} not in {text}");
    // Three seconds of calls while it is inactive: none sent to it.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.flags()[2], "IP", "still not answering");
    assert_eq!(s.selections(2), selected, "not selected while inactive");
    // An INVITE sent before it went inactive may still be retransmitted;
    // a call first seen after that is a call sent to it.
    let seen = gone.received();
    let before = |id: &str| seen.iter().any(|e| e.call_id == id && e.at <= down_at);
    let new_calls: Vec<&Received> = (seen.iter())
        .filter(|r| r.method == "INVITE" && r.at > down_at + Duration::from_millis(200))
        .filter(|r| !before(&r.call_id))
        .collect();
    assert!(
        new_calls.is_empty(),
        "calls sent to an inactive destination: {new_calls:?}"
    );
    // Probed all along (mode 1), with ds_ping_from in the From.
    let probes: Vec<Received> = (gone.received().into_iter())
        .filter(|r| r.method == "OPTIONS")
        .collect();
    assert!(
        probes.iter().filter(|p| p.at > down_at).count() >= 2,
        "probed while inactive: {probes:?}"
    );
    assert!(
        (probes.iter()).all(|p| p.from.starts_with("<sip:prober@kemibox.test>;tag=")),
        "{probes:?}"
    );
    // The proxy's own requests are counted: the probes, their answers
    // from the two others.
    let text = s.metrics();
    assert!(
        metric(&text, "kemibox_local_requests_total ") >= 10,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "kemibox_local_request_outcomes_total{outcome=\"2xx\"} "
        ) >= 8,
        "{text}"
    );

    // Back: active again after ds_inactive_threshold answered probes.
    drop(gone);
    let restarted = Instant::now();
    let c = s.answering_callee(2);
    s.wait_flags(2, "AP", Duration::from_secs(10));
    let took = restarted.elapsed();
    assert!(
        took <= Duration::from_millis(3500),
        "active again after {took:?}"
    );
    let up = format!(
        "kemibox_dispatcher_destination_up{{tenant=\"default\",setid=\"1\",uri=\"sip:127.0.0.1:{}\",state=\"AP\"}} 1",
        s.callees[2]
    );
    let text = s.metrics();
    assert!(text.contains(&up), "{up} not in {text}");
    assert!(
        caller.join().unwrap(),
        "calls failed at the caller; see {}",
        s.dir.display()
    );
    assert!(
        s.selections(2) > selected,
        "selected again once active: {} then {}",
        selected,
        s.selections(2)
    );
    assert!(count(&s.log(), "dispatcher destination down (probe:") >= 1);
    assert!(count(&s.log(), "dispatcher destination up (probe:") >= 1);
    drop((a, b, c));
}

#[test]
fn probe_replies_count_by_ds_ping_reply_codes_and_ping_active_stops_probes() {
    let codes = format!("{PROBING}ds_ping_reply_codes = \"code=404\"\n");
    let s = setup_with("reply-codes", 4, ["", "", ""], "", &codes);
    let peers = [
        Peer::bind(s.callees[0], Some(200)),
        Peer::bind(s.callees[1], Some(404)),
        Peer::bind(s.callees[2], Some(486)),
    ];
    let _proxy = s.run();
    let within = Duration::from_secs(6);
    s.wait_flags(2, "IP", within);
    assert_eq!(s.flags(), ["AP", "AP", "IP"], "404 answers, 486 does not");
    assert!(peers[1].probes() >= 2, "the 404 one was probed");
    let from = peers[1].received()[0].from.clone();
    assert!(from.starts_with("<sip:prober@kemibox.test>;tag="), "{from}");

    // Without code=404 the same answer is a failure.
    let other = setup_with("reply-codes-off", 4, ["", "", ""], "", PROBING);
    let _others = [
        Peer::bind(other.callees[0], Some(404)),
        Peer::bind(other.callees[1], Some(200)),
        Peer::bind(other.callees[2], Some(200)),
    ];
    let _other_proxy = other.run();
    other.wait_flags(0, "IP", within);
    other.wait_flags(1, "AP", within);

    // dispatcher.ping_active 0 stops the probes, 1 starts them again.
    let answer = s.ctl("dispatcher.ping_active", &["0"]);
    assert_eq!(
        (
            answer["OldPingState"].as_i64(),
            answer["NewPingState"].as_i64()
        ),
        (Some(1), Some(0)),
        "{answer}"
    );
    // A round in flight may still arrive.
    std::thread::sleep(Duration::from_millis(1500));
    let before: Vec<usize> = peers.iter().map(Peer::probes).collect();
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<usize> = peers.iter().map(Peer::probes).collect();
    assert_eq!(before, after, "no probes while switched off");
    assert_eq!(
        s.ctl("dispatcher.ping_active", &[])["OldPingState"].as_i64(),
        Some(0)
    );
    s.ctl("dispatcher.ping_active", &["1"]);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        peers[0].probes() > after[0],
        "probing again: {} then {}",
        after[0],
        peers[0].probes()
    );
}

/// The set from the dispatcher table (`db = true`): rows added and
/// removed with `kemibox dispatcher` are routed to after
/// `dispatcher.reload`.
#[test]
fn rows_added_with_the_cli_are_routed_to_after_a_reload() {
    let dir = common::temp_dir("dispatcher-db");
    std::fs::write(dir.join("ds.lua"), SCRIPT).unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let (admin, metrics) = (free_tcp_port(), free_tcp_port());
    let config = dir.join("kemibox.toml");
    std::fs::write(
        &config,
        format!(
            "script = \"ds.lua\"\nlisten = [\"udp:{proxy}\"]\nlog = \"info\"\n\
             [env]\nDS_ALG = \"4\"\n\
             [database]\nsqlite = \"ds.sqlite\"\n\
             [dispatcher]\ndb = true\nflags = 2\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"
        ),
    )
    .unwrap();
    let s = Setup {
        dir: dir.clone(),
        proxy,
        config: config.clone(),
        callees: [free_udp_port(), free_udp_port(), 0],
        metrics: format!("127.0.0.1:{metrics}").parse().unwrap(),
    };
    let cfg = config.display().to_string();
    let cli = |args: &[&str]| {
        let mut all = vec!["dispatcher"];
        all.extend(args);
        all.extend(["--config", cfg.as_str()]);
        let (ok, out) = kemibox_cli(&all);
        assert!(ok, "kemibox {all:?}: {out}");
        out
    };
    let uri = |i: usize| format!("sip:127.0.0.1:{}", s.callees[i]);
    cli(&["add", "1", &uri(0), "0", "0", "duid=a", "first", "callee"]);
    // One call before B exists, two of four after, none after it is gone.
    let a = s.callee(0, 3);
    let b = s.callee(1, 4);
    std::thread::sleep(Duration::from_millis(300));
    let _proxy = s.run();
    assert_eq!(s.flags(), ["AX"]);
    assert!(s.call(1, 10), "failed calls; see {}", dir.display());

    cli(&["add", "1", &uri(1), "8", "5"]);
    let listed = cli(&["list"]);
    assert_eq!(
        listed,
        format!("1 {} 0 0 duid=a first callee\n1 {} 8 5\n", uri(0), uri(1))
    );
    assert_eq!(s.flags(), ["AX"], "read at the reload only");
    let reloaded = s.ctl("dispatcher.reload", &[]);
    assert_eq!(reloaded["destinations"], 2, "{reloaded}");
    // Priority 5 first, flag 8: probing.
    assert_eq!(s.flags(), ["AP", "AX"]);
    assert!(s.call(4, 10), "failed calls; see {}", dir.display());

    cli(&["rm", "1", &uri(0)]);
    let (ok, _) = kemibox_cli(&["dispatcher", "rm", "1", &uri(0), "--config", &cfg]);
    assert!(!ok, "nothing left to remove");
    s.ctl("dispatcher.reload", &[]);
    assert_eq!(s.flags(), ["AP"]);
    assert!(s.call(2, 10), "failed calls; see {}", dir.display());
    all_finished(&dir, vec![a, b], "table");
    assert_eq!(count(&s.log(), "ds failover"), 0);

    // What the CLI refuses, the module could not load.
    for (args, why) in [
        (vec!["add", "1", "tel:+123"], "sip:"),
        (vec!["add", "1", "sip:10.0.0.1", "64"], "flags"),
        (vec!["add", "1", "sip:10.0.0.1", "0", "0", "a=1 b=2"], "';'"),
    ] {
        let mut all = vec!["dispatcher"];
        all.extend(args.iter().copied());
        all.extend(["--config", cfg.as_str()]);
        let out = common::kemibox(&all);
        assert_ne!(common::status(&out), 0, "{args:?}");
        assert!(
            common::stderr(&out).contains(why),
            "{args:?}: {}",
            common::stderr(&out)
        );
    }
}

#[test]
fn a_list_file_and_the_table_together_are_refused() {
    let dir = common::temp_dir("dispatcher-db-refused");
    for (config, line) in [
        ("[dispatcher]\nlist_file = \"d.list\"\ndb = true\n", 3),
        (
            "[dispatcher]\nlist_file = \"d.list\"\n[[tenant]]\nid = \"a\"\nscript = \"a.lua\"\n[tenant.dispatcher]\nlist_file = \"a.list\"\ndb = true\n",
            8,
        ),
    ] {
        let (file, err) = common::refused_config(&dir, config);
        assert!(
            err.contains(&format!("{file}: line {line}:")),
            "{config}: {err}"
        );
        assert!(err.contains("list_file and db"), "{config}: {err}");
        assert!(err.contains("keep one"), "{config}: {err}");
    }
}
