//! scripts/reference.lua, kemibox's script in the layout of Kamailio's
//! basic KEMI example (its htable and pike checks unguarded), run by
//! `kemibox run` on SQLite over real sockets with SIPp:
//!
//! - REGISTER challenged with 401, then accepted;
//! - a call between two registered users, record-routed, ACK and BYE,
//!   accounted: an `acc` row for its INVITE and one for its BYE;
//! - a trusted peer (permissions address table, group 1) calls a busy user
//!   without being challenged: a `missed_calls` row;
//! - a scanner's User-Agent bans its source into `ipban`, and every later
//!   request from it is dropped, while other sources are served;
//! - a flood from one address is refused by pike (and banned), while
//!   another address is served;
//! - the bans survive a restart through the table's `dbtable`.
//!
//! Sources other than the proxy's own address (127.0.0.1 is "myself" and
//! skips the ban and flood checks, as in the example) are other loopback
//! addresses.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::probe::{ignored, options, options_from, served};
use common::sipp::{Running, answer_one_call, finished, kemibox_cli, kemibox_run, sipp, uac};

const PROXY: &str = "127.0.0.1:28060";
/// bob's registered contact, which answers.
const BOB_PORT: &str = "28090";
/// dave's registered contact, which is busy.
const DAVE_PORT: &str = "28091";
/// The peer the address table trusts.
const TRUSTED: &str = "127.0.0.4";
/// A scanner, an address that floods, and one that behaves.
const SCANNER: &str = "127.0.0.5";
const FLOODER: &str = "127.0.0.7";
const CLIENT: &str = "127.0.0.6";

fn proxy_addr() -> SocketAddr {
    PROXY.parse().unwrap()
}

/// The configuration the script's header asks for.
fn config(dir: &Path) -> String {
    let script = common::root().join("scripts/reference.lua");
    let file = dir.join("kemibox.toml");
    std::fs::write(
        &file,
        format!(
            "script = {script:?}\n\
             listen = [\"udp:{PROXY}\"]\n\
             log = \"info\"\n\
             defines = [\"WITH_AUTH\", \"WITH_NAT\"]\n\
             [database]\n\
             sqlite = \"kemibox.sqlite\"\n\
             [[htable]]\n\
             name = \"ipban\"\n\
             size = 8\n\
             autoexpire = 300\n\
             dbtable = \"htable\"\n\
             dbmode = 1\n\
             [pike]\n\
             sampling_time_unit = 2\n\
             reqs_density_per_unit = 16\n\
             remove_latency = 4\n\
             [acc]\n\
             log_flag = 1\n\
             db_flag = 1\n\
             log_missed_flag = 2\n\
             db_missed_flag = 2\n\
             failed_transaction_flag = 3\n"
        ),
    )
    .unwrap();
    file.display().to_string()
}

/// Whether requests from `from` go unanswered.
fn dropped(from: &str) -> bool {
    ignored(proxy_addr(), from, "phone/1.0")
}

/// The answer to a keepalive from `from`, which must come.
fn keepalive(from: &str) -> String {
    served(proxy_addr(), from)
}

fn start(dir: &Path, config: &str, log: &str) -> Running {
    let proxy = kemibox_run(dir, &["--config", config], &dir.join(log));
    // Started once it answers a keepalive from its own address.
    let started = Instant::now();
    while options(
        proxy_addr(),
        "127.0.0.1",
        "probe",
        Duration::from_millis(200),
    )
    .is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "proxy did not start"
        );
    }
    proxy
}

/// The rows of `table` (method, callid, sip_code), once there are `n`
/// (records are written in the background), within 10 s.
fn accounted(db: &Path, table: &str, n: usize) -> Vec<(String, String, String)> {
    let started = Instant::now();
    loop {
        let rows: Vec<(String, String, String)> = rusqlite::Connection::open(db)
            .ok()
            .and_then(|c| {
                let mut s = c
                    .prepare(&format!(
                        "SELECT method, callid, sip_code FROM {table} ORDER BY id"
                    ))
                    .ok()?;
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .ok()?
                    .collect::<Result<Vec<_>, _>>()
                    .ok()
            })
            .unwrap_or_default();
        if rows.len() >= n || started.elapsed() > Duration::from_secs(10) {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_reference_script_registers_calls_accounts_bans_and_refuses_floods() {
    let dir = common::temp_dir("reference");
    let db = dir.join("kemibox.sqlite");
    let db_arg = db.display().to_string();
    for (aor, password) in [
        ("alice@127.0.0.1", "alice-secret"),
        ("bob@127.0.0.1", "bob-secret"),
        ("dave@127.0.0.1", "dave-secret"),
    ] {
        assert!(kemibox_cli(&["user", "add", aor, password, "--db", &db_arg]).0);
    }
    let (added, out) = kemibox_cli(&["address", "add", "1", TRUSTED, "--db", &db_arg]);
    assert!(added, "kemibox address add: {out}");
    let config = config(&dir);
    let proxy = start(&dir, &config, "first.log");

    // REGISTER: 401, then 200 with the credentials.
    for (user, password, port) in [
        ("bob", "bob-secret", BOB_PORT),
        ("dave", "dave-secret", DAVE_PORT),
    ] {
        assert!(
            common::sipp::register(&dir, PROXY, user, password, port, "3600"),
            "{user} registers; see {}",
            dir.display()
        );
    }

    // alice calls bob: 407, then routed (record-routed) to his contact,
    // answered, ACKed, hung up.
    let bob = answer_one_call(&dir, BOB_PORT);
    assert!(
        uac(
            &dir,
            "uac_auth.xml",
            PROXY,
            "28072",
            &[("user", "alice"), ("callee", "bob")],
            ("alice", "alice-secret"),
        ),
        "alice reaches bob; see {}",
        dir.display()
    );
    assert!(finished(bob), "bob's phone got the call and the BYE");
    let acc = accounted(&db, "acc", 2);
    let methods: Vec<&str> = acc.iter().map(|(m, _, _)| m.as_str()).collect();
    assert_eq!(methods, ["INVITE", "BYE"], "{acc:?}");
    assert_eq!(acc[0].1, acc[1].1, "one call: {acc:?}");
    assert!(acc.iter().all(|(_, _, code)| code == "200"), "{acc:?}");

    // The trusted peer calls dave, who is busy: no challenge, a missed
    // call.
    let dave = Running(
        sipp(
            &dir,
            &[
                "-sf",
                &common::sipp::scenario("uas_486.xml"),
                "-p",
                DAVE_PORT,
                "-m",
                "1",
            ],
        )
        .spawn()
        .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let trusted_call = sipp(
        &dir,
        &[
            "-sf",
            &common::sipp::scenario("uac_486_local.xml"),
            PROXY,
            "-i",
            TRUSTED,
            "-p",
            "28073",
            "-s",
            "dave",
            "-key",
            "user",
            "alice",
            "-m",
            "1",
            "-timeout",
            "20s",
            "-timeout_error",
            "-trace_err",
        ],
    )
    .status()
    .unwrap();
    assert!(
        trusted_call.success(),
        "the trusted peer's call is relayed unchallenged and fails busy; see {}",
        dir.display()
    );
    assert!(finished(dave), "dave's phone got the call");
    let missed = accounted(&db, "missed_calls", 1);
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert_eq!(
        (missed[0].0.as_str(), missed[0].2.as_str()),
        ("INVITE", "486")
    );
    assert_eq!(
        accounted(&db, "acc", 2).len(),
        2,
        "a missed call is no acc row"
    );

    // A scanner is banned at its first request; the ban holds for every
    // later request from its address, whatever its User-Agent.
    assert_eq!(keepalive(CLIENT), "SIP/2.0 200 Keepalive");
    assert!(
        options(
            proxy_addr(),
            SCANNER,
            "friendly-scanner",
            Duration::from_millis(1500)
        )
        .is_none()
    );
    assert!(dropped(SCANNER), "a banned source is dropped");
    assert_eq!(keepalive(CLIENT), "SIP/2.0 200 Keepalive");

    // A flood from one address: pike refuses it (and the script bans it)
    // while another address is served.
    let flood = UdpSocket::bind((FLOODER, 0)).unwrap();
    let answered = (0..60)
        .filter(|_| {
            options_from(
                &flood,
                proxy_addr(),
                "phone/1.0",
                Duration::from_millis(300),
            )
            .is_some()
        })
        .count();
    assert!(
        (16..60).contains(&answered),
        "pike lets about reqs_density_per_unit requests through, then refuses: {answered} of 60 answered"
    );
    assert!(dropped(FLOODER), "the flooding source is banned");
    assert_eq!(keepalive(CLIENT), "SIP/2.0 200 Keepalive");

    // The bans survive a restart through the ipban dbtable.
    proxy.stop();
    let _proxy = start(&dir, &config, "second.log");
    assert!(dropped(SCANNER), "the scanner's ban survives the restart");
    assert!(dropped(FLOODER), "the flooder's ban survives the restart");
    assert_eq!(keepalive(CLIENT), "SIP/2.0 200 Keepalive");
    let _ = std::fs::remove_dir_all(&dir);
}
