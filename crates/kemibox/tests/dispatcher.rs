//! The dispatcher end to end with SIPp over real sockets: three SIPp
//! callees in one set behind `kemibox run`, a script selecting with
//! `KSR.dispatcher.ds_select_dst` and failing over with `ds_next_dst` in
//! its failure route. Each callee is told how many calls it must take
//! (`-m`) and must end by itself, so a wrong spread leaves one waiting.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    KSR.dispatcher.ds_mark_dst_state("ip")
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
             [env]\nDS_ALG = \"{alg}\"\n\
             [dispatcher]\nlist_file = \"dispatcher.list\"\nflags = 2\n\
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
