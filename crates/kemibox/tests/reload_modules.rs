//! `auto_reload` of a script split over files: editing one of the
//! tenant's Lua modules (`lua_path`) reloads the tenant as editing the
//! script does, over real sockets with `kemibox run`. A module that does
//! not compile is refused (the version before it keeps serving), and the
//! next good edit serves; a module added under lua_path is picked up.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::probe::free_udp_port;
use common::sipp::{count, kemibox_run};

const SCRIPT: &str = r#"
local utils = require "utils"
function ksr_request_route()
    KSR.sl.sl_send_reply(200, utils.answer())
end
"#;

/// `lib/utils.lua` answering `text`.
fn utils(text: &str) -> String {
    format!("local M = {{}}\nfunction M.answer() return \"{text}\" end\nreturn M\n")
}

/// Replace `path` the way an editor or a deploy does: write aside, rename
/// over.
fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// The status line of the answer to an OPTIONS.
fn options(ua: &UdpSocket, proxy: SocketAddr, n: u32) -> String {
    let me = ua.local_addr().unwrap();
    let text = format!(
        "OPTIONS sip:x@{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-mod-{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@x>;tag={n}\r\nTo: <sip:x@{proxy}>\r\n\
         Call-ID: reload-modules-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    ua.send_to(text.as_bytes(), proxy).unwrap();
    let mut buf = [0u8; 4096];
    match ua.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        Err(e) => format!("no answer: {e}"),
    }
}

/// Wait until OPTIONS are answered `200 {expected}` (the watcher looks
/// once a second).
fn serving(ua: &UdpSocket, proxy: SocketAddr, n: &mut u32, expected: &str) {
    let started = Instant::now();
    loop {
        *n += 1;
        let status = options(ua, proxy, *n);
        if status == format!("SIP/2.0 200 {expected}") {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still {status:?}, expected 200 {expected}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn editing_a_lua_path_module_reloads_the_tenant() {
    let dir = common::temp_dir("reload-modules");
    let port = free_udp_port();
    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(dir.join("route.lua"), SCRIPT).unwrap();
    let module = dir.join("lib/utils.lua");
    std::fs::write(&module, utils("v1")).unwrap();
    std::fs::write(
        dir.join("proxy.toml"),
        format!(
            "script = \"route.lua\"\nlisten = [\"udp:127.0.0.1:{port}\"]\nauto_reload = true\nlua_path = [\"lib\"]\n"
        ),
    )
    .unwrap();
    let log = dir.join("kemibox.log");
    let config = dir.join("proxy.toml").display().to_string();
    let _proxy = kemibox_run(&dir, &["--config", &config], &log);
    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    ua.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut n = 0;
    serving(&ua, proxy, &mut n, "v1");

    // The module changes, the script does not.
    std::thread::sleep(Duration::from_millis(1100));
    replace(&module, &utils("v2"));
    serving(&ua, proxy, &mut n, "v2");

    // A module that does not compile is refused: v2 keeps serving.
    replace(&module, "local M = {\nreturn M\n");
    let started = Instant::now();
    while count(&log, "reload refused") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no refusal: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("utils"),
        "the refusal names the module: {text}"
    );
    assert_eq!(count(&log, "script reloaded"), 1, "{text}");
    for _ in 0..5 {
        n += 1;
        assert_eq!(options(&ua, proxy, n), "SIP/2.0 200 v2");
    }

    // A new module, and the module fixed to use it: served.
    std::fs::create_dir_all(dir.join("lib/callng")).unwrap();
    std::fs::write(
        dir.join("lib/callng/sigfunc.lua"),
        "return { name = function() return \"v3\" end }\n",
    )
    .unwrap();
    replace(
        &module,
        "local sig = require \"callng.sigfunc\"\nreturn { answer = sig.name }\n",
    );
    serving(&ua, proxy, &mut n, "v3");
    let _ = std::fs::remove_dir_all(&dir);
}
