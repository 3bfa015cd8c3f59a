//! The acc module end to end: `kemibox run` with `[acc]` flags relays a
//! SIPp call (INVITE 200, ACK, BYE 200) and a call to a busy callee
//! (INVITE 486), and the SQLite file then holds the call's INVITE and BYE
//! in `acc` and the busy INVITE in `missed_calls`, with the extra columns
//! captured as the request was routed; bad `[acc]` values are refused with
//! the line.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::sipp::{Running, kemibox_run, scenario, sipp};

const PROXY: &str = "127.0.0.1:27060";
const CALLEE: &str = "27080";
const BUSY: &str = "27081";

const SCRIPT: &str = r#"
local FLT_ACC = 1
local FLT_ACCMISSED = 2

function ksr_request_route()
    if KSR.is_INVITE() or KSR.is_BYE() then
        KSR.setflag(FLT_ACC)
    end
    if KSR.is_INVITE() then
        KSR.setflag(FLT_ACCMISSED)
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
    if KSR.pv.get("$rU") == "busy" then
        KSR.pv.sets("$du", "sip:127.0.0.1:27081")
    else
        KSR.pv.sets("$du", "sip:127.0.0.1:27080")
    end
    KSR.tm.t_relay()
end
"#;

/// A SIPp callee running `name` on `port`.
fn callee(dir: &Path, name: &str, port: &str) -> Running {
    let child = sipp(dir, &["-sf", &scenario(name), "-p", port, "-m", "1"])
        .spawn()
        .expect("sipp installed (scripts/setup.sh)");
    std::thread::sleep(Duration::from_millis(300));
    Running(child)
}

/// One call with scenario `name` to user `service` through the proxy; true
/// when SIPp says it succeeded.
fn call(dir: &Path, name: &str, service: &str) -> bool {
    sipp(
        dir,
        &[
            "-sf",
            &scenario(name),
            PROXY,
            "-p",
            "27070",
            "-s",
            service,
            "-m",
            "1",
            "-timeout",
            "20s",
            "-timeout_error",
            "-trace_err",
        ],
    )
    .status()
    .expect("sipp runs")
    .success()
}

/// The rows of `table` as (tenant, method, from_tag, to_tag, callid,
/// sip_code, sip_reason, src_ip, dst_user), once it has `n` (the writer
/// works in the background), within 10 s.
fn rows(db: &Path, table: &str, n: usize) -> Vec<Vec<String>> {
    let started = Instant::now();
    loop {
        let found: Vec<Vec<String>> = rusqlite::Connection::open(db)
            .ok()
            .and_then(|c| {
                let mut s = c
                    .prepare(&format!(
                        "SELECT tenant, method, from_tag, to_tag, callid, sip_code, sip_reason, \
                         src_ip, dst_user FROM {table} ORDER BY id"
                    ))
                    .ok()?;
                let rows = s
                    .query_map([], |r| {
                        (0..9)
                            .map(|i| Ok(r.get::<_, Option<String>>(i)?.unwrap_or_default()))
                            .collect()
                    })
                    .ok()?
                    .collect::<Result<Vec<Vec<String>>, _>>()
                    .ok()?;
                Some(rows)
            })
            .unwrap_or_default();
        if found.len() >= n || started.elapsed() > Duration::from_secs(10) {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_call_and_a_missed_call_are_accounted_in_sqlite() {
    let dir = std::env::temp_dir().join(format!("kemibox-acc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("acc.lua"), SCRIPT).unwrap();
    let config = dir.join("kemibox.toml");
    std::fs::write(
        &config,
        format!(
            "script = \"acc.lua\"\nlisten = [\"udp:{PROXY}\"]\n\n[database]\nsqlite = \"acc.sqlite\"\n\n\
             [acc]\nlog_flag = 1\ndb_flag = 1\nlog_missed_flag = 2\ndb_missed_flag = 2\n\
             db_extra = \"src_ip=$si;dst_user=$rU\"\n"
        ),
    )
    .unwrap();
    let log = dir.join("kemibox.log");
    let _proxy = kemibox_run(&dir, &["--config", &config.display().to_string()], &log);
    let db = dir.join("acc.sqlite");

    {
        let _callee = callee(&dir, "uas_rr.xml", CALLEE);
        assert!(
            call(&dir, "uac_rr.xml", "alice"),
            "the call failed; see {}",
            dir.display()
        );
    }
    let acc = rows(&db, "acc", 2);
    assert_eq!(acc.len(), 2, "{acc:?}");
    let (invite, bye) = (&acc[0], &acc[1]);
    assert_eq!(invite[..2], ["default", "INVITE"]);
    assert_eq!(bye[..2], ["default", "BYE"]);
    for row in [invite, bye] {
        assert_eq!(row[5..7], ["200", "OK"], "{row:?}");
        assert_eq!(row[7], "127.0.0.1", "src_ip captured: {row:?}");
        assert!(row[2].contains("SIPpTag00"), "from tag: {row:?}");
        assert!(row[3].contains("SIPpTag01"), "to tag from the 200: {row:?}");
    }
    // One dialog: the same Call-ID and tags in both records.
    assert_eq!(invite[2..5], bye[2..5]);
    assert_eq!(invite[8], "alice", "dst_user: the R-URI user when routed");

    {
        let _busy = callee(&dir, "uas_486.xml", BUSY);
        assert!(
            call(&dir, "uac_486.xml", "busy"),
            "the busy call failed; see {}",
            dir.display()
        );
    }
    let missed = rows(&db, "missed_calls", 1);
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert_eq!(missed[0][..2], ["default", "INVITE"]);
    assert_eq!(missed[0][5..9], ["486", "Busy Here", "127.0.0.1", "busy"]);
    assert!(
        missed[0][3].contains("SIPpTag01"),
        "to tag of the 486: {missed:?}"
    );
    assert_ne!(missed[0][4], invite[4], "another call");
    // No failed_transaction_flag: the 486 is no acc record.
    assert_eq!(rows(&db, "acc", 3).len(), 2);

    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("ACC: transaction answered: ").count(),
        2,
        "{text}"
    );
    assert_eq!(text.matches("ACC: call missed: ").count(), 1, "{text}");
    assert!(
        text.contains("method=BYE;") && text.contains("code=486;reason=Busy Here"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_acc_settings_are_refused_with_the_line() {
    let dir = std::env::temp_dir().join(format!("kemibox-acc-refused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (config, expected) in [
        (
            "[acc]\nlog_flag = 40\n",
            "line 2: acc: log_flag = 40 is not a message flag",
        ),
        (
            "[acc]\ndb_extra = \"src_ip=si\"\n",
            "line 2: acc: db_extra: \"si\" is not a pseudo-variable",
        ),
        (
            "listen = [\"udp:127.0.0.1:0\"]\n[[tenant]]\nid = \"a\"\nscript = \"a.lua\"\n[tenant.acc]\ndb_table_acc = \"acc calls\"\n",
            "line 6: tenant a: acc: db_table_acc = \"acc calls\" cannot be a table name",
        ),
        ("[acc]\nacc_flag = 1\n", "acc_flag"),
    ] {
        let (_, err) = common::refused_config(&dir, config);
        assert!(err.contains(expected), "{config}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
