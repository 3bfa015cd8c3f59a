//! A running proxy's admin API (JSON-RPC over HTTP) and metrics endpoint,
//! and waiting for a condition.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Call the admin API: the JSON-RPC response.
pub fn rpc(admin: SocketAddr, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).to_string();
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (_, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The result of a call that must succeed.
pub fn result(admin: SocketAddr, method: &str, params: Value) -> Value {
    let answer = rpc(admin, method, params);
    answer
        .get("result")
        .cloned()
        .unwrap_or_else(|| panic!("{method}: {answer}"))
}

/// The value of the metric line starting with `series` (name and labels)
/// at the metrics endpoint `metrics`.
pub fn metric(metrics: SocketAddr, series: &str) -> Option<u64> {
    let text = super::http_get(metrics, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Wait until `f` holds, or fail saying `what`.
pub fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
