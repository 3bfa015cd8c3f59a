//! `GET /metrics` over a minimal HTTP/1.1 responder: one request per
//! connection, then close. Requests are read up to [`MAX_REQUEST`] bytes
//! and within [`TIMEOUT`]; anything else gets a 4xx or is dropped, never a
//! panic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::Registry;

/// The most a request line and its headers may take.
pub const MAX_REQUEST: usize = 8192;
/// The time a client has to send its request and take the answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;

/// Bind the metrics listener; the error names the address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))
}

/// Answer requests on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait, go on.
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(TIMEOUT, answer(stream, &registry)).await;
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let head_end = loop {
        if let Some(end) = find_head_end(&buf[..len]) {
            break Some(end);
        }
        if len == buf.len() {
            break None;
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(()); // closed before a whole request
        }
        len += n;
    };
    let response = match head_end {
        None => respond(431, "Request Header Fields Too Large", "", false),
        Some(end) => route(&buf[..end], registry),
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// The end of the request head (after the blank line), if it is all there.
fn find_head_end(data: &[u8]) -> Option<usize> {
    if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(i + 4);
    }
    data.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// The response to the request head `head`.
fn route(head: &[u8], registry: &Registry) -> Vec<u8> {
    let Ok(head) = std::str::from_utf8(head) else {
        return respond(400, "Bad Request", "", false);
    };
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return respond(400, "Bad Request", "", false);
    };
    if !version.starts_with("HTTP/1.") {
        return respond(400, "Bad Request", "", false);
    }
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => respond(200, "OK", &registry.render(), head_only),
        ("GET" | "HEAD", _) => respond(404, "Not Found", "not found: try /metrics\n", head_only),
        _ => respond(405, "Method Not Allowed", "", false),
    }
}

fn respond(code: u16, reason: &str, body: &str, head_only: bool) -> Vec<u8> {
    let content_type = if code == 200 {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let allow = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantMetrics;

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_everything_else() {
        let registry = Arc::new(Registry::new());
        let t = Arc::new(TenantMetrics::new("acme"));
        t.transactions.inc();
        registry.register(t);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, registry));

        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(ok.contains("kemibox_transactions_total{tenant=\"acme\"} 1\n"));
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));

        let head = exchange(addr, b"HEAD /metrics?x=1 HTTP/1.0\n\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"));

        let missing = exchange(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        for garbage in [
            &b"\xff\xfe\x00garbage\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /metrics SIP/2.0\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
        ] {
            let r = exchange(addr, garbage).await;
            assert!(r.starts_with("HTTP/1.1 400 "), "{garbage:?}: {r}");
        }
        let huge = vec![b'a'; MAX_REQUEST];
        let r = exchange(addr, &huge).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        // A client that closes half-way gets nothing and breaks nothing.
        let r = exchange(addr, b"GET /metr").await;
        assert!(r.is_empty(), "{r}");
        let again = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(again.starts_with("HTTP/1.1 200 OK\r\n"));
        server.abort();
    }

    #[tokio::test]
    async fn a_taken_address_is_refused_with_its_name() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("cannot listen for metrics on {addr}")),
            "{err}"
        );
    }
}
