//! The `kemibox ctl` side: one JSON-RPC call over HTTP/1.1 with hyper's
//! client, one connection per call.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::rpc::{self, Id, Outcome, RpcError};

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
pub async fn call(
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
    let timed_out = |what: &str| transport(what, &format!("no answer in {timeout:?}"));
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| transport("cannot resolve", &e))?
        .collect();
    let connect = tokio::time::timeout(timeout, TcpStream::connect(&addrs[..]))
        .await
        .map_err(|_| timed_out("cannot connect to"))?;
    let stream = connect.map_err(|e| transport("cannot connect to", &e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| transport("cannot talk to", &e))?;
    // The connection is driven beside the request, and dropped with it.
    let driver = tokio::spawn(connection);
    let body = serde_json::to_vec(&rpc::Request::new(method, params, Id::from(1)))
        .map_err(|e| transport("cannot encode a request for", &e))?;
    let authority = match endpoint.host.contains(':') {
        true => format!("[{}]:{}", endpoint.host, endpoint.port),
        false => format!("{}:{}", endpoint.host, endpoint.port),
    };
    let mut request = hyper::Request::post(endpoint.path.as_str())
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONNECTION, "close");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| transport("cannot make a request for", &e))?;
    let answered = tokio::time::timeout(timeout, async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    })
    .await;
    driver.abort();
    let (status, body) = answered
        .map_err(|_| timed_out("no answer from"))?
        .map_err(|e| transport("no answer from", &e))?;
    let answer: rpc::Response = serde_json::from_slice(&body).map_err(|_| {
        transport(
            "not a JSON-RPC answer from",
            &format!(
                "HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body).trim()
            ),
        )
    })?;
    match answer.outcome {
        Outcome::Result(value) => Ok(value),
        Outcome::Error(e) => Err(CallError::Rpc(e)),
    }
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
    use serde_json::json;

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
