//! A minimal HTTP/1.1 responder, one request per connection, then close:
//! `GET /metrics` here, and the admin API's `POST` (kemibox-admin) through
//! [`serve_with`], so both endpoints share one hardened reader. A request
//! head is read up to [`Limits::max_head`] bytes and a body up to
//! [`Limits::max_body`] (by `Content-Length`), both within
//! [`Limits::timeout`]; anything else gets a 4xx or is dropped, never a
//! panic.

use std::future::Future;
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

/// What a server accepts: bounded so a client cannot hold memory or
/// connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line and headers.
    pub max_head: usize,
    /// Body, by `Content-Length`; 0 refuses any body.
    pub max_body: usize,
    /// To send the request, and again to take the answer.
    pub timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    /// The metrics endpoint's: no body.
    fn default() -> Limits {
        Limits {
            max_head: MAX_REQUEST,
            max_body: 0,
            timeout: TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// A request read whole.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The target without its query string.
    pub path: String,
    /// Names as sent; look up with [`Request::header`].
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: Option<SocketAddr>,
}

impl Request {
    /// The first header named `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response; `Content-Length` and `Connection: close` are added.
#[derive(Debug, Clone)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub content_type: String,
    /// More headers, e.g. `Allow` or `WWW-Authenticate`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the head only (a `HEAD` request).
    pub head_only: bool,
}

impl Response {
    /// A plain-text response.
    pub fn text(code: u16, reason: &str, body: &str) -> Response {
        Response {
            code,
            reason: reason.to_string(),
            content_type: "text/plain; charset=utf-8".into(),
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            head_only: false,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.code,
            self.reason,
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            out += &format!("{name}: {value}\r\n");
        }
        out += "Connection: close\r\n\r\n";
        let mut out = out.into_bytes();
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Bind the metrics listener; the error names the address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))
}

/// Answer `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    serve_with(listener, Limits::default(), "metrics", move |request| {
        let response = route(&request, &registry);
        std::future::ready(response)
    })
    .await
}

/// Answer every request on `listener` with `handler` until the task is
/// dropped; `what` names the endpoint in log lines. The handler runs
/// without the timeout (it may reload a script); reading the request and
/// writing the answer each have [`Limits::timeout`].
pub async fn serve_with<H, F>(listener: TcpListener, limits: Limits, what: &'static str, handler: H)
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, go on.
                tracing::warn!(error = %e, "{what}: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = answer(stream, peer, limits, &*handler).await;
            drop(permit);
        });
    }
}

async fn answer<H, F>(
    mut stream: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    handler: &H,
) -> std::io::Result<()>
where
    H: Fn(Request) -> F,
    F: Future<Output = Response>,
{
    let read = tokio::time::timeout(limits.timeout, read_request(&mut stream, peer, limits)).await;
    let response = match read {
        Err(_) => return Ok(()), // too slow: drop it
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => return Ok(()), // closed before a whole request
        Ok(Ok(Some(Err(refusal)))) => refusal,
        Ok(Ok(Some(Ok(request)))) => handler(request).await,
    };
    let _ = tokio::time::timeout(limits.timeout, async {
        stream.write_all(&response.bytes()).await?;
        stream.shutdown().await
    })
    .await;
    // Read what the client still sends (a refused body) for a moment, so
    // closing with unread data does not reset the connection before the
    // client has read the answer.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut sink = [0u8; 4096];
        let mut left = 1 << 20;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n.min(left),
            }
        }
    })
    .await;
    Ok(())
}

/// Read one request: `None` when the client closed first, a ready 4xx
/// response when it is unacceptable.
async fn read_request(
    stream: &mut TcpStream,
    peer: SocketAddr,
    limits: Limits,
) -> std::io::Result<Option<Result<Request, Response>>> {
    let mut buf = vec![0u8; limits.max_head];
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
            return Ok(None);
        }
        len += n;
    };
    let Some(end) = head_end else {
        return Ok(Some(Err(Response::text(
            431,
            "Request Header Fields Too Large",
            "",
        ))));
    };
    let mut request = match parse_head(&buf[..end]) {
        Ok(r) => r,
        Err(response) => return Ok(Some(Err(response))),
    };
    request.peer = Some(peer);
    if request.header("transfer-encoding").is_some() {
        return Ok(Some(Err(Response::text(
            411,
            "Length Required",
            "send the body with Content-Length\n",
        ))));
    }
    let length = match request.header("content-length") {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return Ok(Some(Err(Response::text(400, "Bad Request", "")))),
        },
    };
    if length > limits.max_body {
        return Ok(Some(Err(Response::text(
            413,
            "Content Too Large",
            &format!("the body may take at most {} bytes\n", limits.max_body),
        ))));
    }
    let mut body = buf[end..len].to_vec();
    body.truncate(length);
    if body.len() < length {
        let have = body.len();
        body.resize(length, 0);
        if stream.read_exact(&mut body[have..]).await.is_err() {
            return Ok(None);
        }
    }
    request.body = body;
    Ok(Some(Ok(request)))
}

/// The end of the request head (after the blank line), if it is all there.
fn find_head_end(data: &[u8]) -> Option<usize> {
    if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(i + 4);
    }
    data.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// The request line and headers, or a 400.
fn parse_head(head: &[u8]) -> Result<Request, Response> {
    let bad = || Response::text(400, "Bad Request", "");
    let head = std::str::from_utf8(head).map_err(|_| bad())?;
    let mut lines = head.lines();
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || target.is_empty() {
        return Err(bad());
    }
    let mut headers = Vec::new();
    for l in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = l.split_once(':').ok_or_else(bad)?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        headers,
        body: Vec::new(),
        peer: None,
    })
}

/// The metrics endpoint's answer to `request`.
fn route(request: &Request, registry: &Registry) -> Response {
    let head_only = request.method == "HEAD";
    let mut response = match (request.method.as_str(), request.path.as_str()) {
        ("GET" | "HEAD", "/metrics") => Response {
            content_type: "text/plain; version=0.0.4; charset=utf-8".into(),
            ..Response::text(200, "OK", &registry.render())
        },
        ("GET" | "HEAD", _) => Response::text(404, "Not Found", "not found: try /metrics\n"),
        _ => {
            let mut r = Response::text(405, "Method Not Allowed", "");
            r.headers.push(("Allow".into(), "GET, HEAD".into()));
            return r;
        }
    };
    response.head_only = head_only;
    response
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
