//! The admin API of a running `kemibox run` with two tenants, over real
//! sockets: tokens (process and per tenant), reloads that take and one
//! refused, every method's result, the JSON-RPC errors, `kemibox ctl`,
//! the config check for an exposed API without a token, and JSON logs.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::probe::{free_tcp_port, free_udp_port};
use common::sipp::{Running, kemibox_run};
use serde_json::{Value, json};

const TOP: &str = "top-secret-token";
const TOKEN_A: &str = "token-of-a";

/// A fresh directory.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kemibox-admin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A script answering every request with `200 REASON`.
fn answering(reason: &str) -> String {
    format!("function ksr_request_route()\n  KSR.sl.sl_send_reply(200, \"{reason}\")\nend\n")
}

/// Tenant b: saves REGISTERs, answers the rest `200 B one`.
const B_SCRIPT: &str = "function ksr_request_route()\n  if KSR.is_method(\"REGISTER\") then\n    KSR.registrar.save(\"location\", 0)\n    return\n  end\n  KSR.sl.sl_send_reply(200, \"B one\")\nend\n";

/// Two tenants, a (only the `sl` module, its own admin token) and b,
/// each on its own UDP port; the admin API on `admin`.
struct Setup {
    dir: PathBuf,
    config: PathBuf,
    port_a: u16,
    port_b: u16,
    admin: SocketAddr,
}

fn setup(name: &str) -> Setup {
    let dir = temp_dir(name);
    std::fs::write(dir.join("a.lua"), answering("A one")).unwrap();
    std::fs::write(dir.join("b.lua"), B_SCRIPT).unwrap();
    let (port_a, port_b, admin_port) = (free_udp_port(), free_udp_port(), free_tcp_port());
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = ["udp:127.0.0.1:{port_a}", "udp:127.0.0.1:{port_b}"]

[[tenant]]
id = "a"
script = "a.lua"
listen = ["udp:127.0.0.1:{port_a}"]
modules = ["sl"]
admin_token = "{TOKEN_A}"

[[tenant]]
id = "b"
script = "b.lua"
listen = ["udp:127.0.0.1:{port_b}"]

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOP}"
"#
        ),
    )
    .unwrap();
    Setup {
        dir,
        config,
        port_a,
        port_b,
        admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
    }
}

fn start(s: &Setup, extra: &[&str]) -> (Running, PathBuf) {
    let log = s.dir.join("kemibox.log");
    let config = s.config.display().to_string();
    let mut args = vec!["--config", config.as_str()];
    args.extend(extra);
    (kemibox_run(&s.dir, &args, &log), log)
}

/// POST `body` with `token`: the HTTP status and the body as JSON.
fn post(admin: SocketAddr, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}")),
    )
}

/// Call `method`: the HTTP status and the JSON-RPC response.
fn call(admin: SocketAddr, token: Option<&str>, method: &str, params: Value) -> (u16, Value) {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    post(admin, token, &body.to_string())
}

/// The result of a call with the process token, which must succeed.
fn result(admin: SocketAddr, method: &str, params: Value) -> Value {
    let (status, answer) = call(admin, Some(TOP), method, params);
    assert_eq!(status, 200, "{method}: {answer}");
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

/// A request to `port` and the first line of its answer.
fn sip(port: u16, method: &str, call_id: &str, extra: &str) -> String {
    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    ua.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let me = ua.local_addr().unwrap();
    let request = format!(
        "{method} sip:alice@b.example SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@b.example>;tag=1\r\nTo: <sip:alice@b.example>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    ua.send_to(request.as_bytes(), ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 4096];
    let n = ua.recv(&mut buf).expect("an answer");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// `{tenant: version}` from app_lua.list.
fn versions(admin: SocketAddr) -> Vec<(String, u64)> {
    result(admin, "app_lua.list", json!([]))
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().unwrap().to_string(),
                t["version"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn v(a: u64, b: u64) -> Vec<(String, u64)> {
    vec![("a".into(), a), ("b".into(), b)]
}

#[test]
fn tokens_reloads_and_every_method_on_a_running_proxy() {
    let s = setup("api");
    let (_proxy, _log) = start(&s, &[]);
    let admin = s.admin;
    let version = json!([]);

    // No token, a wrong one, another scheme: 401 with a JSON-RPC error.
    for token in [None, Some("wrong"), Some("")] {
        let (status, answer) = call(admin, token, "core.version", version.clone());
        assert_eq!(status, 401, "{token:?}: {answer}");
        assert_eq!(answer["error"]["code"], -32001, "{answer}");
        assert!(answer.get("result").is_none());
    }
    assert_eq!(
        result(admin, "core.version", json!([])),
        json!({"name": "kemibox", "version": env!("CARGO_PKG_VERSION")})
    );
    let uptime = result(admin, "core.uptime", json!([]));
    assert!(uptime["uptime"].as_u64().unwrap() < 600, "{uptime}");
    assert_eq!(versions(admin), v(1, 1));
    assert_eq!(sip(s.port_a, "OPTIONS", "o1", ""), "SIP/2.0 200 A one");
    assert_eq!(sip(s.port_b, "OPTIONS", "o2", ""), "SIP/2.0 200 B one");

    // A new script: version 2, and it answers.
    std::fs::write(s.dir.join("a.lua"), answering("A two")).unwrap();
    assert_eq!(
        result(admin, "app_lua.reload", json!(["a"])),
        json!({"tenant": "a", "version": 2})
    );
    assert_eq!(versions(admin), v(2, 1));
    assert_eq!(sip(s.port_a, "OPTIONS", "o3", ""), "SIP/2.0 200 A two");

    // A broken one is refused with script:line, and version 2 serves on.
    std::fs::write(
        s.dir.join("a.lua"),
        "function ksr_request_route()\n  KSR.sl.sl_send_reply(200, \"A three\"\nend\n",
    )
    .unwrap();
    let (status, answer) = call(admin, Some(TOP), "app_lua.reload", json!({"tenant": "a"}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["error"]["code"], -32000, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        regex::Regex::new(r"a\.lua:\d+: ")
            .unwrap()
            .is_match(message),
        "{message}"
    );
    assert!(
        message.contains("the old version still serves"),
        "{message}"
    );
    assert_eq!(versions(admin), v(2, 1));
    assert_eq!(sip(s.port_a, "OPTIONS", "o4", ""), "SIP/2.0 200 A two");

    // Tenant a's token: its own tenant only, nothing process-wide.
    std::fs::write(s.dir.join("a.lua"), answering("A three")).unwrap();
    let (status, answer) = call(admin, Some(TOKEN_A), "app_lua.reload", json!(["a"]));
    assert_eq!(
        (status, &answer["result"]["version"]),
        (200, &json!(3)),
        "{answer}"
    );
    assert_eq!(sip(s.port_a, "OPTIONS", "o5", ""), "SIP/2.0 200 A three");
    // Without a tenant, a tenant token means its own.
    let (status, answer) = call(admin, Some(TOKEN_A), "tenant.stats", json!([]));
    assert_eq!(
        (status, &answer["result"]["tenant"]),
        (200, &json!("a")),
        "{answer}"
    );
    for (method, params) in [
        ("app_lua.reload", json!(["b"])),
        ("app_lua.api_list", json!({"tenant": "b"})),
        ("tenant.stats", json!(["b"])),
        ("ul.lookup", json!(["b", "alice@b.example"])),
        ("ul.dump", json!([])),
        ("core.version", json!([])),
        ("core.uptime", json!([])),
        ("stats.get", json!([])),
        ("app_lua.list", json!([])),
        ("tenant.list", json!([])),
    ] {
        let (status, answer) = call(admin, Some(TOKEN_A), method, params);
        assert_eq!(status, 403, "{method}: {answer}");
        assert_eq!(answer["error"]["code"], -32003, "{method}: {answer}");
    }
    assert_eq!(versions(admin), v(3, 1));

    // JSON-RPC errors.
    let (status, answer) = call(admin, Some(TOP), "core.nope", json!([]));
    assert_eq!((status, &answer["error"]["code"]), (200, &json!(-32601)));
    let (_, answer) = post(admin, Some(TOP), "{\"jsonrpc\": \"2.0\", \"method\"");
    assert_eq!(answer["error"]["code"], -32700, "{answer}");
    assert_eq!(answer["id"], Value::Null);
    for params in [
        json!([]),
        json!(["nope"]),
        json!([7, 8]),
        json!({"who": "a"}),
    ] {
        let (_, answer) = call(admin, Some(TOP), "app_lua.reload", params.clone());
        assert_eq!(answer["error"]["code"], -32602, "{params}: {answer}");
    }
    let (_, answer) = post(admin, Some(TOP), "[]");
    assert_eq!(answer["error"]["code"], -32600, "{answer}");

    // Registrations: b saves one; a has none.
    let registered = sip(
        s.port_b,
        "REGISTER",
        "r1",
        "Contact: <sip:alice@127.0.0.1:5999>\r\nExpires: 300\r\n",
    );
    assert_eq!(registered, "SIP/2.0 200 OK");
    let found = result(admin, "ul.lookup", json!(["b", "sip:alice@b.example"]));
    assert_eq!(found["aor"], "alice@b.example", "{found}");
    let contacts = found["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 1, "{found}");
    assert_eq!(contacts[0]["contact"], "sip:alice@127.0.0.1:5999");
    let left = contacts[0]["expires_in"].as_u64().unwrap();
    assert!((290..=300).contains(&left), "{found}");
    let none = result(admin, "ul.lookup", json!(["a", "alice@b.example"]));
    assert_eq!(none["contacts"], json!([]));
    let dump = result(admin, "ul.dump", json!([]));
    assert_eq!(dump["a"], json!([]), "{dump}");
    assert_eq!(dump["b"].as_array().unwrap().len(), 1, "{dump}");
    assert_eq!(dump["b"][0]["table"], "location");
    assert_eq!(dump["b"][0]["aor"], "alice@b.example");

    // Counters.
    let stats = result(admin, "tenant.stats", json!(["a"]));
    assert_eq!(stats["script_version"], 3, "{stats}");
    assert_eq!(stats["invocations"]["ok"], 4, "{stats}");
    assert_eq!(stats["routes"]["ksr_request_route"]["ok"], 4, "{stats}");
    assert_eq!(stats["replies"]["2xx"], 4, "{stats}");
    assert_eq!(stats["reloads"], json!({"ok": 2, "refused": 1}), "{stats}");
    assert_eq!(stats["rate_limited"], 0);
    assert!(stats["instances_created"].as_u64().unwrap() >= 3, "{stats}");
    let b = result(admin, "tenant.stats", json!(["b"]));
    assert_eq!(b["invocations"]["ok"], 2, "{b}");
    let samples = result(admin, "stats.get", json!(["kemibox_script_version"]));
    assert_eq!(
        samples,
        json!([
            {"name": "kemibox_script_version", "labels": {"tenant": "a"}, "value": 3},
            {"name": "kemibox_script_version", "labels": {"tenant": "b"}, "value": 1},
        ])
    );
    let all = result(admin, "stats.get", json!([]));
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "kemibox_sip_messages_received_total"
                && s["labels"] == json!({"transport": "udp", "kind": "request"})
                && s["value"] == 6),
        "{all}"
    );

    // What each tenant's script may call.
    let api_a = result(admin, "app_lua.api_list", json!(["a"]));
    let names = |api: &Value| -> Vec<String> {
        api["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (a_names, b_names) = (
        names(&api_a),
        names(&result(admin, "app_lua.api_list", json!(["b"]))),
    );
    assert_eq!(api_a["modules"], json!(["sl"]));
    assert!(
        a_names.contains(&"KSR.sl.sl_send_reply".to_string()),
        "{a_names:?}"
    );
    assert!(
        a_names.contains(&"KSR.is_method".to_string()),
        "{a_names:?}"
    );
    assert!(
        !a_names.iter().any(|n| n.starts_with("KSR.tm.")),
        "{a_names:?}"
    );
    assert!(
        b_names.contains(&"KSR.registrar.save".to_string()),
        "{b_names:?}"
    );
    assert!(b_names.len() > a_names.len());

    let tenants = result(admin, "tenant.list", json!([]));
    assert_eq!(tenants[0]["id"], "a");
    assert_eq!(
        tenants[0]["listen"],
        json!([format!("udp:127.0.0.1:{}", s.port_a)])
    );
    assert_eq!(tenants[1]["id"], "b");
    assert_eq!(tenants[1]["version"], 1);
}

/// `kemibox ctl ARGS...` with `env`.
fn ctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kemibox"));
    c.arg("ctl").args(args).env_remove("KEMIBOX_ADMIN_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn out(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn kemibox_ctl_calls_a_running_proxy() {
    let s = setup("ctl");
    let (_proxy, _log) = start(&s, &[]);
    let config = s.config.display().to_string();
    let url = format!("http://{}/", s.admin);

    // The address and token from the config file.
    let (code, stdout, stderr) = out(&ctl(&["--config", &config, "core.version"], &[]));
    assert_eq!(code, 0, "{stderr}");
    let version: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        stdout.contains("\n  \"version\""),
        "pretty-printed: {stdout}"
    );

    std::fs::write(s.dir.join("a.lua"), answering("A two")).unwrap();
    let (code, stdout, stderr) = out(&ctl(&["--config", &config, "app_lua.reload", "a"], &[]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"tenant": "a", "version": 2})
    );
    assert_eq!(sip(s.port_a, "OPTIONS", "c1", ""), "SIP/2.0 200 A two");

    // The URL and the token from the environment; a tenant token.
    let (code, stdout, _) = out(&ctl(
        &["--url", &url, "app_lua.list"],
        &[("KEMIBOX_ADMIN_TOKEN", TOP)],
    ));
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()[0]["version"],
        2
    );
    let (code, stdout, stderr) = out(&ctl(
        &["--url", &url, "--token", TOKEN_A, "app_lua.reload", "b"],
        &[],
    ));
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(stderr.contains("cannot act on tenant b"), "{stderr}");
    let (code, _, stderr) = out(&ctl(
        &["--url", &url, "--token", TOKEN_A, "core.version"],
        &[],
    ));
    assert_eq!(code, 1);
    assert!(stderr.contains("process-wide"), "{stderr}");
    let (code, _, stderr) = out(&ctl(&["--url", &url, "core.version"], &[]));
    assert_eq!(code, 1);
    assert!(stderr.contains("unauthorized"), "{stderr}");

    // A refused reload: the reason on stderr, exit 1.
    std::fs::write(s.dir.join("a.lua"), "function ksr_request_route(\n").unwrap();
    let (code, stdout, stderr) = out(&ctl(&["--config", &config, "app_lua.reload", "a"], &[]));
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(
        stderr.contains("a.lua:") && stderr.contains("the old version still serves"),
        "{stderr}"
    );
    let (code, _, stderr) = out(&ctl(&["--config", &config, "no.such"], &[]));
    assert_eq!(code, 1);
    assert!(stderr.contains("no method \"no.such\""), "{stderr}");
    // Numbers stay numbers: a tenant id 2 is looked up as "2".
    let (code, _, stderr) = out(&ctl(&["--config", &config, "tenant.stats", "2"], &[]));
    assert_eq!(code, 1);
    assert!(stderr.contains("no tenant \"2\""), "{stderr}");
    // Nobody listening.
    let closed = format!("http://127.0.0.1:{}/", free_tcp_port());
    let (code, _, stderr) = out(&ctl(&["--url", &closed, "core.version"], &[]));
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

fn refused(dir: &Path, config: &str) -> String {
    std::fs::write(dir.join("a.lua"), answering("A")).unwrap();
    common::refused_config(dir, config).1
}

#[test]
fn an_exposed_admin_api_without_a_token_is_refused_at_start() {
    let dir = temp_dir("exposed");
    let err = refused(
        &dir,
        "script = \"a.lua\"\nlisten = [\"udp:127.0.0.1:0\"]\n\n[admin]\nlisten = \"0.0.0.0:9091\"\n",
    );
    assert!(
        err.contains("proxy.toml: line 5: admin.listen = \"0.0.0.0:9091\" is not a loopback address and [admin] has no token"),
        "{err}"
    );
    assert!(err.contains("add token = "), "{err}");
    let err = refused(
        &dir,
        "script = \"a.lua\"\n\n[admin]\nlisten = \"127.0.0.1:9091\"\ntoken = \"\"\n",
    );
    assert!(
        err.contains("proxy.toml: line 5: admin.token is empty"),
        "{err}"
    );
    let err = refused(
        &dir,
        "listen = [\"udp:127.0.0.1:0\"]\n\n[[tenant]]\nid = \"a\"\nscript = \"a.lua\"\nadmin_token = \"x\"\n",
    );
    assert!(
        err.contains("proxy.toml: line 6: tenant a: admin_token without an admin API"),
        "{err}"
    );
}

#[test]
fn loopback_without_a_token_serves_with_a_warning() {
    let s = setup("loopback");
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, text.replace(&format!("token = \"{TOP}\"\n"), "")).unwrap();
    let (_proxy, log) = start(&s, &[]);
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("the admin API has no [admin] token"), "{log}");
    let (status, answer) = call(s.admin, None, "core.version", json!([]));
    assert_eq!(
        (status, &answer["result"]["name"]),
        (200, &json!("kemibox")),
        "{answer}"
    );
    // A tenant token still limits its bearer; a wrong one is refused.
    let (status, _) = call(s.admin, Some(TOKEN_A), "core.version", json!([]));
    assert_eq!(status, 403);
    let (status, _) = call(s.admin, Some("wrong"), "core.version", json!([]));
    assert_eq!(status, 401);
}

#[test]
fn log_format_json_writes_one_object_a_line_with_the_tenant() {
    let s = setup("json");
    let (_proxy, log) = start(&s, &["--log-format", "json"]);
    // A refused reload logs a warning naming the tenant.
    std::fs::write(s.dir.join("a.lua"), "function ksr_request_route(\n").unwrap();
    let (_, answer) = call(s.admin, Some(TOP), "app_lua.reload", json!(["a"]));
    assert_eq!(answer["error"]["code"], -32000);
    let text = std::fs::read_to_string(log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["message"].is_string()),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "tenant loaded" && l["tenant"] == "b"),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["tenant"] == "a"
            && l["message"].as_str().unwrap().contains("reload refused")),
        "{text}"
    );
}

#[test]
fn a_single_script_is_reloaded_without_naming_its_tenant() {
    let dir = temp_dir("single");
    std::fs::write(dir.join("a.lua"), answering("one")).unwrap();
    let (port, admin_port) = (free_udp_port(), free_tcp_port());
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "script = \"a.lua\"\nlisten = [\"udp:127.0.0.1:{port}\"]\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOP}\"\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let _proxy = kemibox_run(&dir, &["--config", &config], &dir.join("kemibox.log"));
    std::fs::write(dir.join("a.lua"), answering("two")).unwrap();
    let (code, stdout, stderr) = out(&ctl(&["--config", &config, "app_lua.reload"], &[]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"tenant": "default", "version": 2})
    );
    assert_eq!(sip(port, "OPTIONS", "s1", ""), "SIP/2.0 200 two");
}

/// Send `request` as is and read the whole answer.
fn raw(admin: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The server may answer before the whole of a refused body is in.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_batch_is_answered_per_request_with_each_tokens_rights() {
    let s = setup("batch");
    let (_proxy, _log) = start(&s, &[]);
    std::fs::write(s.dir.join("a.lua"), answering("A batch")).unwrap();
    let batch = json!([
        {"jsonrpc": "2.0", "method": "app_lua.reload", "params": ["a"], "id": 1},
        {"jsonrpc": "2.0", "method": "tenant.stats", "params": ["b"], "id": 2},
        {"jsonrpc": "2.0", "method": "core.version", "id": 3},
        {"jsonrpc": "2.0", "method": "tenant.stats"},
        {"jsonrpc": "1.0", "method": "tenant.stats", "id": 4},
        "junk",
        {"jsonrpc": "2.0", "method": "app_lua.api_list", "params": {"tenant": "a"}, "id": "last"},
    ])
    .to_string();
    // Tenant a's token: its own tenant's methods run, the others are
    // refused one by one, and the batch itself is 200.
    let (status, answer) = post(s.admin, Some(TOKEN_A), &batch);
    assert_eq!(status, 200, "{answer}");
    let answers = answer.as_array().expect("an array");
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    assert_eq!(
        ids,
        [
            &json!(1),
            &json!(2),
            &json!(3),
            &json!(4),
            &Value::Null,
            &json!("last")
        ],
        "the notification gets no answer: {answer}"
    );
    assert_eq!(answers[0]["result"], json!({"tenant": "a", "version": 2}));
    assert_eq!(answers[1]["error"]["code"], -32003, "{answer}");
    assert_eq!(answers[2]["error"]["code"], -32003, "{answer}");
    assert_eq!(answers[3]["error"]["code"], -32600, "{answer}");
    assert_eq!(answers[4]["error"]["code"], -32600, "{answer}");
    assert_eq!(answers[5]["result"]["tenant"], "a", "{answer}");
    assert_eq!(sip(s.port_a, "OPTIONS", "b1", ""), "SIP/2.0 200 A batch");
    // The process token may call them all.
    std::fs::write(s.dir.join("a.lua"), answering("A again")).unwrap();
    let (status, answer) = post(s.admin, Some(TOP), &batch);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer[0]["result"]["version"], 3, "{answer}");
    assert_eq!(answer[1]["result"]["tenant"], "b", "{answer}");
    assert_eq!(answer[2]["result"]["name"], "kemibox", "{answer}");
    // Only notifications: 204 and no body.
    let notes = json!([
        {"jsonrpc": "2.0", "method": "core.version"},
        {"jsonrpc": "2.0", "method": "core.uptime"},
    ])
    .to_string();
    let answer = raw(
        s.admin,
        format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\nAuthorization: Bearer {TOP}\r\n\r\n{notes}",
            notes.len()
        )
        .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 204 "), "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "{answer}");
    // The two batches reloaded a once each.
    assert_eq!(versions(s.admin), v(3, 1));
}

#[test]
fn the_admin_endpoint_refuses_bad_http_with_4xx() {
    let s = setup("http");
    let (_proxy, _log) = start(&s, &[]);
    let status = |answer: &str| answer.split(' ').nth(1).unwrap_or("").to_string();
    let get = raw(s.admin, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status(&get), "405", "{get}");
    assert!(get.contains("\r\nAllow: POST\r\n"), "{get}");
    let garbage = raw(s.admin, b"POST /\r\n\r\n");
    assert_eq!(status(&garbage), "400", "{garbage}");
    let body = format!("[{}]", "1,".repeat(40_000));
    let big = raw(
        s.admin,
        format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\nAuthorization: Bearer {TOP}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(status(&big), "413", "{big}");
    let head = format!("POST / HTTP/1.1\r\nX-Filler: {}\r\n\r\n", "x".repeat(9000));
    let too_long = raw(s.admin, head.as_bytes());
    assert_eq!(status(&too_long), "431", "{too_long}");
    let unauthorized = raw(s.admin, b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(status(&unauthorized), "401", "{unauthorized}");
    assert!(
        unauthorized.contains("\r\nWww-Authenticate: Bearer"),
        "{unauthorized}"
    );
    // Still serving.
    assert_eq!(
        result(s.admin, "core.version", json!([]))["name"],
        "kemibox"
    );
}
