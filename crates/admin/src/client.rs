//! The `kemibox ctl` side: one JSON-RPC call over a plain HTTP/1.1
//! connection (blocking; a command-line tool makes one call).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{Value, json};

use crate::rpc::RpcError;

/// Why a call has no result.
#[derive(Debug)]
pub enum CallError {
    /// The server answered with a JSON-RPC error.
    Rpc(RpcError),
    /// No answer, or not a JSON-RPC one.
    Transport(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Rpc(e) => write!(f, "{}", e.message),
            CallError::Transport(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for CallError {}

/// Where to call: `http://HOST:PORT[/PATH]` or `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(url: &str) -> Result<Endpoint, String> {
        if url.starts_with("https://") {
            return Err(format!(
                "{url}: the admin API speaks plain HTTP; use http:// (through a TLS proxy if it is remote)"
            ));
        }
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| format!("{url}: expected http://HOST:PORT/"))?;
        let port = port
            .parse()
            .map_err(|_| format!("{url}: bad port {port:?}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url}: expected http://HOST:PORT/"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

impl Endpoint {
    /// The endpoint for a server listening on `addr`: an unspecified
    /// address (`0.0.0.0`, `::`) is reached on loopback.
    pub fn for_listen(addr: SocketAddr) -> Endpoint {
        let ip = match addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
            ip if ip.is_unspecified() => "::1".to_string(),
            ip => ip.to_string(),
        };
        Endpoint {
            host: ip,
            port: addr.port(),
            path: "/".into(),
        }
    }
}

/// Call `method` with `params` (an array or object); the result, or why
/// there is none. `timeout` bounds the connection, the request and the
/// answer each.
pub fn call(
    endpoint: &Endpoint,
    token: Option<&str>,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, CallError> {
    let transport = |what: &str, e: &dyn std::fmt::Display| {
        CallError::Transport(format!(
            "{what} http://{}:{}{}: {e}",
            endpoint.host, endpoint.port, endpoint.path
        ))
    };
    let addrs: Vec<SocketAddr> = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|e| transport("cannot resolve", &e))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(mut stream) = stream else {
        let why = last.map_or("no address".to_string(), |e| e.to_string());
        return Err(transport("cannot connect to", &why));
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).to_string();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
        endpoint.path,
        endpoint.host,
        endpoint.port,
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| transport("cannot send to", &e))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| transport("no answer from", &e))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| transport("not HTTP from", &"no end of headers"))?;
    let status = head.split(' ').nth(1).unwrap_or("?");
    let value: Value = serde_json::from_str(body).map_err(|_| {
        transport(
            "not a JSON-RPC answer from",
            &format!("HTTP {status}: {}", body.trim()),
        )
    })?;
    if let Some(error) = value.get("error") {
        return Err(CallError::Rpc(RpcError {
            code: error["code"].as_i64().unwrap_or(0),
            message: error["message"].as_str().unwrap_or("error").to_string(),
        }));
    }
    value
        .get("result")
        .cloned()
        .ok_or_else(|| transport("no result from", &format!("HTTP {status}")))
}

/// Command-line arguments as JSON parameters: those that parse as JSON
/// numbers stay numbers, the rest are strings.
pub fn params_from_args(args: &[String]) -> Value {
    Value::Array(
        args.iter()
            .map(|a| match serde_json::from_str::<Value>(a) {
                Ok(n @ Value::Number(_)) => n,
                _ => Value::String(a.clone()),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_args() {
        let e: Endpoint = "http://127.0.0.1:9091/rpc".parse().unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("127.0.0.1", 9091, "/rpc")
        );
        let e: Endpoint = "[::1]:80".parse().unwrap();
        assert_eq!((e.host.as_str(), e.port, e.path.as_str()), ("::1", 80, "/"));
        assert!("https://x:1/".parse::<Endpoint>().is_err());
        assert!("http://x/".parse::<Endpoint>().is_err());
        let e = Endpoint::for_listen("0.0.0.0:7".parse().unwrap());
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 7));
        let args: Vec<String> = ["a", "12", "1.5", "alice@x", "true", "-3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            params_from_args(&args),
            json!(["a", 12, 1.5, "alice@x", "true", -3])
        );
    }
}
