//! `KSR.pike` over real sockets with `kemibox run`: a flood from one source
//! address is refused once it passes the tenant's `reqs_density_per_unit`
//! (-2 the first time, -1 after), while another source address is served;
//! bad `[pike]` values are refused at start.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::sipp::kemibox_run;

const SCRIPT: &str = r#"
function ksr_request_route()
    local verdict = KSR.pike.pike_check_req()
    if verdict < 0 then
        KSR.sl.sl_send_reply(503, "Flood " .. verdict)
        return
    end
    KSR.sl.sl_send_reply(200, "OK")
end
"#;

/// An OPTIONS from `ua`'s socket to the proxy on `port`: the status line
/// of its answer, which must come.
fn options(ua: &UdpSocket, port: u16) -> String {
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    common::probe::options_from(ua, proxy, "phone/1.0", Duration::from_secs(10)).expect("an answer")
}

#[test]
fn a_flooding_source_is_refused_while_another_is_served() {
    let dir = common::temp_dir("pike");
    let port = common::probe::free_udp_port();
    std::fs::write(dir.join("pike.lua"), SCRIPT).unwrap();
    // A long unit, so the burst below never straddles two.
    std::fs::write(
        dir.join("proxy.toml"),
        format!(
            "script = \"pike.lua\"\nlisten = [\"udp:127.0.0.1:{port}\"]\n[database]\nsqlite = \"kemibox.sqlite\"\n[pike]\nsampling_time_unit = 600\nreqs_density_per_unit = 5\n"
        ),
    )
    .unwrap();
    let log = dir.join("kemibox.log");
    let config = dir.join("proxy.toml").display().to_string();
    let _proxy = kemibox_run(&dir, &["--config", &config], &log);

    let flooder = UdpSocket::bind("127.0.0.2:0").unwrap();
    let other = UdpSocket::bind("127.0.0.3:0").unwrap();
    for ua in [&flooder, &other] {
        ua.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let answers: Vec<String> = (0..8).map(|_| options(&flooder, port)).collect();
    assert_eq!(
        answers,
        [
            "SIP/2.0 200 OK",
            "SIP/2.0 200 OK",
            "SIP/2.0 200 OK",
            "SIP/2.0 200 OK",
            "SIP/2.0 200 OK",
            "SIP/2.0 503 Flood -2",
            "SIP/2.0 503 Flood -1",
            "SIP/2.0 503 Flood -1",
        ]
    );
    // Another source address (a new port of the flooder's would not do:
    // pike counts addresses) is served meanwhile.
    for _ in 0..3 {
        assert_eq!(options(&other, port), "SIP/2.0 200 OK");
    }
    assert_eq!(options(&flooder, port), "SIP/2.0 503 Flood -1");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("pike: 127.0.0.2 blocked").count(),
        1,
        "one warning per detection: {text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_pike_settings_are_refused_at_start_with_the_line() {
    let dir = common::temp_dir("pike-config");
    let (path, err) = common::refused_config(
        &dir,
        "listen = [\"udp:127.0.0.1:0\"]\n\n[pike]\nreqs_density_per_unit = 0\n",
    );
    assert!(
        err.contains(&format!(
            "{path}: line 4: pike.reqs_density_per_unit = 0 would block every source"
        )),
        "{err}"
    );
    let (_, err) = common::refused_config(
        &dir,
        "listen = [\"udp:127.0.0.1:0\"]\n\n[[tenant]]\nid = \"a\"\nscript = \"a.lua\"\n[tenant.pike]\nsampling_time_unit = 0\n",
    );
    assert!(
        err.contains("line 7: tenant a: pike.sampling_time_unit = 0"),
        "{err}"
    );
    let (_, err) = common::refused_config(
        &dir,
        "listen = [\"udp:127.0.0.1:0\"]\n[permissions]\npeer_tag_avp = \"$var(x)\"\n[ipops]\ndns_server = \"nowhere\"\n",
    );
    assert!(
        err.contains("line 3: permissions.peer_tag_avp = \"$var(x)\" is not an AVP"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
