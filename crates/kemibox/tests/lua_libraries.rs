//! The Lua libraries through the command line and a running proxy:
//! `kemibox check` and `kemibox route` of a script that requires cjson and
//! one of its own modules and reads `os.getenv` and `KSR.kx.ifdef`, given
//! them by options or by a config file's tenant; the config keys refused
//! with the file, line and fix; and a reload re-reading a changed module.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::sipp::kemibox_run;
use common::*;

/// The script: its log line is `["eu-1",true,42]` given REGION=eu-1,
/// the define WITH_AUTH and the module `utils` answering 42.
const SCRIPT: &str = r#"
local cjson = require "cjson"
local utils = require "utils"
unpack = _G.unpack or table.unpack
function ksr_request_route()
    local region = os.getenv("REGION") or cjson.null
    KSR.info(cjson.encode({ region, KSR.kx.ifdef("WITH_AUTH"), utils.answer }) .. "\n")
    return 1
end
"#;

/// The log line SCRIPT writes, as it appears JSON-escaped in route output.
const LOGGED: &str = r#"[\"eu-1\",true,42]"#;

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kemibox-lualib-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(dir.join("lib/utils.lua"), "return { answer = 42 }\n").unwrap();
    std::fs::write(dir.join("script.lua"), SCRIPT).unwrap();
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn check_and_route_get_env_defines_and_modules_from_options() {
    let d = dir("options");
    let script = d.join("script.lua");
    let lib = d.join("lib");

    let out = kemibox(&["check", path(&script)]);
    assert_eq!(status(&out), 1);
    assert!(
        stdout(&out).contains("module 'utils' is not available in the sandbox"),
        "{}",
        stdout(&out)
    );
    let out = kemibox(&["check", path(&script), "--lua-path", path(&lib)]);
    assert_eq!((status(&out), stdout(&out)), (0, String::new()));

    let message = "tests/fixtures/messages/invite.sip";
    let out = kemibox(&[
        "route",
        path(&script),
        "--message",
        message,
        "--lua-path",
        path(&lib),
        "--env",
        "REGION=eu-1",
        "--define",
        "WITH_AUTH",
    ]);
    assert_eq!(status(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains(LOGGED), "{}", stdout(&out));

    // Without them: no variable, no define.
    let out = kemibox(&[
        "route",
        path(&script),
        "--message",
        message,
        "--lua-path",
        path(&lib),
    ]);
    assert!(
        stdout(&out).contains(r#"[null,false,42]"#),
        "{}",
        stdout(&out)
    );
}

#[test]
fn check_and_route_take_them_from_a_config_tenant() {
    let d = dir("config");
    let config = d.join("kemibox.toml");
    std::fs::write(
        &config,
        r#"
listen = ["udp:127.0.0.1:0"]
defines = ["WITH_NAT"]

[env]
REGION = "us-1"

[[tenant]]
id = "a"
script = "script.lua"
defines = ["WITH_AUTH", "MAX=3"]
lua_path = ["lib"]
[tenant.env]
REGION = "eu-1"

[[tenant]]
id = "b"
script = "script.lua"
domains = ["b.example"]
lua_path = ["lib"]
"#,
    )
    .unwrap();
    let out = kemibox(&[
        "check",
        path(&d.join("script.lua")),
        "--config",
        path(&config),
    ]);
    assert_eq!(status(&out), 2);
    assert!(
        stderr(&out).contains("has several tenants: say which with --tenant ID"),
        "{}",
        stderr(&out)
    );
    let route = |tenant: &str| {
        kemibox(&[
            "route",
            path(&d.join("script.lua")),
            "--message",
            "tests/fixtures/messages/invite.sip",
            "--config",
            path(&config),
            "--tenant",
            tenant,
        ])
    };
    let a = route("a");
    assert_eq!(status(&a), 0, "{}{}", stdout(&a), stderr(&a));
    assert!(stdout(&a).contains(LOGGED), "{}", stdout(&a));
    // b inherits the top level's REGION and defines.
    let b = route("b");
    assert!(
        stdout(&b).contains(r#"[\"us-1\",false,42]"#),
        "{}",
        stdout(&b)
    );
}

#[test]
fn bad_lua_settings_are_refused_with_line_and_fix() {
    let d = dir("refused");
    for (config, want) in [
        (
            "script = \"script.lua\"\nlua_path = [\"lib\", \"missing\"]\n",
            "line 2: lua_path[1] = \"missing\"",
        ),
        (
            "script = \"script.lua\"\ndefines = [\"WITH AUTH\"]\n",
            "line 2: defines[0] = \"WITH AUTH\" is not NAME or NAME=VALUE",
        ),
        (
            "listen = [\"udp:127.0.0.1:0\"]\n[[tenant]]\nid = \"a\"\nscript = \"script.lua\"\n[tenant.env]\nREGION = 5\n",
            "line 6",
        ),
    ] {
        let (file, err) = refused_config(&d, config);
        assert!(err.contains(&file) && err.contains(want), "{config}: {err}");
    }
}

/// The reason phrase of the answer to an OPTIONS sent to `proxy`.
fn options(ua: &UdpSocket, proxy: &str, n: u32) -> String {
    let me = ua.local_addr().unwrap();
    let text = format!(
        "OPTIONS sip:x@{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-lualib-{n}\r\nMax-Forwards: 70\r\nFrom: <sip:a@x>;tag={n}\r\nTo: <sip:x@{proxy}>\r\nCall-ID: lualib-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
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

#[test]
fn a_reload_rereads_the_tenants_modules() {
    let d = dir("reload");
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = format!("127.0.0.1:{port}");
    let script = "local v = require 'version'\nfunction ksr_request_route() KSR.sl.sl_send_reply(200, v.name) return 1 end\n";
    std::fs::write(d.join("script.lua"), script).unwrap();
    std::fs::write(d.join("lib/version.lua"), "return { name = \"one\" }\n").unwrap();
    let config = d.join("kemibox.toml");
    std::fs::write(
        &config,
        format!(
            "script = \"script.lua\"\nlisten = [\"udp:{proxy}\"]\nlua_path = [\"lib\"]\nauto_reload = true\n"
        ),
    )
    .unwrap();
    let _running = kemibox_run(&d, &["--config", path(&config)], &d.join("log"));
    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    ua.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(options(&ua, &proxy, 1), "SIP/2.0 200 one");

    // A new module, then the script rewritten (the watcher looks at it).
    std::fs::write(d.join("lib/version.lua"), "return { name = \"two\" }\n").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(d.join("script.lua"), format!("{script}-- v2\n")).unwrap();
    let started = Instant::now();
    let mut n = 1;
    loop {
        n += 1;
        let got = options(&ua, &proxy, n);
        if got == "SIP/2.0 200 two" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {got:?}: {}",
            std::fs::read_to_string(d.join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
