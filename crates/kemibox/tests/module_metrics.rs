//! The htable and pike numbers on `/metrics`, per tenant, over real
//! sockets with `kemibox run`: two tenants running the same script on
//! their own ports; one is flooded from one address (pike blocks it), its
//! small table fills (sets refused) and its items are removed, while the
//! other's series stay at what it did.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::probe::{free_tcp_port, free_udp_port};
use common::sipp::kemibox_run;

/// Every request is counted by pike and stored in `seen` under its
/// Call-ID; a `X-Remove: yes` request removes its own item instead. The
/// answer says whether pike refused it and whether the set was taken.
const SCRIPT: &str = r#"
function ksr_request_route()
    if KSR.pike.pike_check_req() < 0 then
        KSR.sl.sl_send_reply(503, "Flood")
        return
    end
    local key = KSR.kx.get_callid()
    if KSR.hdr.get("X-Remove") == "yes" then
        KSR.htable.sht_rm("seen", key)
        KSR.sl.sl_send_reply(200, "Removed")
        return
    end
    if KSR.htable.sht_seti("seen", key, 1) < 0 then
        KSR.sl.sl_send_reply(500, "Full")
        return
    end
    KSR.sl.sl_send_reply(200, "Stored")
end
"#;

/// An OPTIONS with Call-ID `call_id` (and `X-Remove: yes` when `remove`)
/// from `ua` to `proxy`: the status line of the answer.
fn send(ua: &UdpSocket, proxy: SocketAddr, call_id: &str, remove: bool) -> String {
    let me = ua.local_addr().unwrap();
    let extra = if remove { "X-Remove: yes\r\n" } else { "" };
    let request = format!(
        "OPTIONS sip:x@{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}-{remove}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    ua.send_to(request.as_bytes(), proxy).unwrap();
    let mut buf = [0u8; 4096];
    let n = ua.recv(&mut buf).expect("an answer");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

/// The value of the sample line starting with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn htable_and_pike_numbers_are_exported_per_tenant() {
    let dir = common::temp_dir("module-metrics");
    let (a, b, http) = (free_udp_port(), free_udp_port(), free_tcp_port());
    std::fs::write(dir.join("count.lua"), SCRIPT).unwrap();
    std::fs::write(
        dir.join("proxy.toml"),
        format!(
            r#"listen = ["udp:127.0.0.1:{a}", "udp:127.0.0.1:{b}"]

[metrics]
listen = "127.0.0.1:{http}"

[pike]
sampling_time_unit = 600
reqs_density_per_unit = 6

[[tenant]]
id = "a"
script = "count.lua"
listen = ["udp:127.0.0.1:{a}"]
[[tenant.htable]]
name = "seen"
max_items = 3

[[tenant]]
id = "b"
script = "count.lua"
listen = ["udp:127.0.0.1:{b}"]
[[tenant.htable]]
name = "seen"
max_items = 3
"#
        ),
    )
    .unwrap();
    let log = dir.join("kemibox.log");
    let config = dir.join("proxy.toml").display().to_string();
    let _proxy = kemibox_run(&dir, &["--config", &config], &log);
    let (a, b): (SocketAddr, SocketAddr) = (([127, 0, 0, 1], a).into(), ([127, 0, 0, 1], b).into());

    let flooder = UdpSocket::bind("127.0.0.2:0").unwrap();
    let quiet = UdpSocket::bind("127.0.0.3:0").unwrap();
    for ua in [&flooder, &quiet] {
        ua.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    // Tenant a's table holds 3 items: the fourth set is refused.
    for i in 0..3 {
        assert_eq!(
            send(&quiet, a, &format!("fill-{i}"), false),
            "SIP/2.0 200 Stored"
        );
    }
    assert_eq!(send(&quiet, a, "fill-3", false), "SIP/2.0 500 Full");
    assert_eq!(send(&quiet, a, "fill-0", true), "SIP/2.0 200 Removed");
    // Tenant a's flooder: over 6 requests per unit, blocked once.
    let answers: Vec<String> = (0..9)
        .map(|i| send(&flooder, a, &format!("flood-{i}"), true))
        .collect();
    assert_eq!(
        answers.iter().filter(|s| *s == "SIP/2.0 503 Flood").count(),
        3
    );
    // Tenant b: one item, no flood.
    assert_eq!(send(&quiet, b, "b-1", false), "SIP/2.0 200 Stored");

    let http: SocketAddr = ([127, 0, 0, 1], http).into();
    let started = Instant::now();
    let text = loop {
        if let Some(text) = common::http_get(http, "/metrics") {
            break text;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no /metrics");
        std::thread::sleep(Duration::from_millis(100));
    };
    let get =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert!(text.contains("# TYPE kemibox_htable_items gauge"), "{text}");
    assert!(
        text.contains("# TYPE kemibox_pike_tracked_addresses gauge"),
        "{text}"
    );
    // a: filled to its 3 items, one removed by the script; the flooder's
    // requests removed items that were not there.
    assert_eq!(get(r#"kemibox_htable_items{tenant="a",table="seen"}"#), 2);
    assert_eq!(
        get(r#"kemibox_htable_items_removed_total{tenant="a",table="seen",reason="removed"}"#),
        1
    );
    assert_eq!(
        get(r#"kemibox_htable_items_removed_total{tenant="a",table="seen",reason="expired"}"#),
        0
    );
    assert_eq!(
        get(r#"kemibox_htable_sets_refused_total{tenant="a",table="seen"}"#),
        1
    );
    assert_eq!(get(r#"kemibox_pike_blocked_total{tenant="a"}"#), 1);
    assert_eq!(get(r#"kemibox_pike_tracked_addresses{tenant="a"}"#), 2);
    // b: its own numbers.
    assert_eq!(get(r#"kemibox_htable_items{tenant="b",table="seen"}"#), 1);
    assert_eq!(
        get(r#"kemibox_htable_sets_refused_total{tenant="b",table="seen"}"#),
        0
    );
    assert_eq!(get(r#"kemibox_pike_blocked_total{tenant="b"}"#), 0);
    assert_eq!(get(r#"kemibox_pike_tracked_addresses{tenant="b"}"#), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
