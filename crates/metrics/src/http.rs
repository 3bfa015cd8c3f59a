//! The HTTP side of the metrics endpoint (`GET /metrics` here) and of the
//! admin API (kemibox-admin, through [`serve_with`]): hyper's HTTP/1.1
//! server, one request per connection, with the limits a listener open
//! to a network needs. A request head may take [`Limits::max_head`] bytes
//! (else `431`) and must arrive within [`Limits::timeout`] (else the
//! connection is dropped); a body is taken only by `Content-Length`, up to
//! [`Limits::max_body`] (else `413`, chunked bodies `411`), within the same
//! time; the answer must be taken within the timeout again; at most
//! [`Limits::max_connections`] connections are served at once. A malformed
//! request gets hyper's `400`, never a panic.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::Registry;

/// The most a request line and its headers may take.
pub const MAX_REQUEST: usize = 8192;
/// The time a client has to send its request, and again to take the
/// answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;
/// After answering, what a client still sends (a refused body) is read
/// and dropped, this much for this long, so that closing with unread data
/// does not reset the connection before the client has read the answer.
const DRAIN: (usize, Duration) = (1 << 20, Duration::from_secs(1));

/// What a server accepts: bounded so a client cannot hold memory or
/// connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line and headers (at least 8192: hyper's smallest buffer).
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

/// A request read whole (its body within [`Limits::max_body`]); the
/// client's address is in its extensions as a [`Peer`].
pub type Request = hyper::Request<Bytes>;

/// A response with its whole body; hyper adds `Content-Length` and
/// `Connection: close`.
pub type Response = hyper::Response<Full<Bytes>>;

/// The address a request came from (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// A response with `status`, `content_type` and `body`.
pub fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response {
    let mut r = hyper::Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response {
    response(status, "text/plain; charset=utf-8", body)
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
        std::future::ready(route(&request, &registry))
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
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.timeout)
        .max_buf_size(limits.max_head.max(MAX_REQUEST))
        .max_header_size(limits.max_head)
        .keep_alive(false)
        // A client may shut its sending side once the request is out.
        .half_close(true)
        .title_case_headers(true);
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
        let (http, handler) = (http.clone(), handler.clone());
        tokio::spawn(async move {
            connection(stream, peer, limits, &http, handler, what).await;
            drop(permit);
        });
    }
}

/// The request was not served: the client was too slow, or went away.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request dropped: not read whole in time")
    }
}

impl std::error::Error for Dropped {}

/// Serve the one request of a connection, then close it.
async fn connection<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    http: &http1::Builder,
    handler: Arc<H>,
    what: &'static str,
) where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let deadline = Instant::now() + limits.timeout;
    let answered = Arc::new(Notify::new());
    let service = {
        let answered = answered.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let (handler, answered) = (handler.clone(), answered.clone());
            async move {
                let response = match read_whole(request, peer, limits, deadline).await {
                    Ok(request) => handler(request).await,
                    Err(Some(refusal)) => refusal,
                    Err(None) => return Err(Dropped),
                };
                answered.notify_one();
                Ok(response)
            }
        })
    };
    let served = http
        .serve_connection(TokioIo::new(stream), service)
        .without_shutdown();
    let taking = async {
        answered.notified().await;
        tokio::time::sleep(limits.timeout).await;
    };
    let parts = tokio::select! {
        parts = served => parts,
        () = taking => {
            tracing::debug!(%peer, "{what}: the answer was not taken in time");
            return;
        }
    };
    // An error is a request hyper refused (answered 400 or 431), one
    // dropped, or a client that went away: the connection just closes.
    let mut stream = match parts {
        Ok(parts) => parts.io.into_inner(),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "{what}: connection ended");
            return;
        }
    };
    let _ = tokio::time::timeout(limits.timeout, stream.shutdown()).await;
    let _ = tokio::time::timeout(DRAIN.1, async {
        let mut sink = [0u8; 4096];
        let mut left = DRAIN.0;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n.min(left),
            }
        }
    })
    .await;
}

/// The request with its whole body, by `deadline`; else the answer that
/// refuses it, or `None` to drop it unanswered (too slow, or gone).
async fn read_whole(
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
    limits: Limits,
    deadline: Instant,
) -> Result<Request, Option<Response>> {
    let (mut head, body) = request.into_parts();
    if head.headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Some(text(
            StatusCode::LENGTH_REQUIRED,
            "send the body with Content-Length\n",
        )));
    }
    // hyper has checked Content-Length: the hint is exact.
    let length = body.size_hint().upper().unwrap_or(u64::MAX);
    if length > limits.max_body as u64 {
        return Err(Some(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body may take at most {} bytes\n", limits.max_body),
        )));
    }
    let body = match tokio::time::timeout_at(
        deadline,
        Limited::new(body, limits.max_body).collect(),
    )
    .await
    {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(_)) | Err(_) => return Err(None),
    };
    head.extensions.insert(Peer(peer));
    Ok(Request::from_parts(head, body))
}

/// The metrics endpoint's answer to `request` (hyper leaves out the body
/// of a `HEAD` answer).
fn route(request: &Request, registry: &Registry) -> Response {
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            response(StatusCode::OK, crate::CONTENT_TYPE, registry.render())
        }
        (&Method::GET | &Method::HEAD, _) => {
            text(StatusCode::NOT_FOUND, "not found: try /metrics\n")
        }
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
    }
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

        // hyper answers an HTTP/1.0 request in HTTP/1.0.
        let head = exchange(addr, b"HEAD /metrics?x=1 HTTP/1.0\n\n").await;
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
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
    async fn the_metrics_endpoint_takes_no_body() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Registry::new())));
        let r = exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
        server.abort();
    }

    /// A server echoing the body's length, with small limits: a 16-byte
    /// body, 300 ms, one connection at a time.
    async fn small_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            max_body: 16,
            timeout: Duration::from_millis(300),
            max_connections: 1,
            ..Limits::default()
        };
        let server = tokio::spawn(serve_with(listener, limits, "test", |r: Request| {
            let peer = r.extensions().get::<Peer>().copied();
            std::future::ready(text(
                StatusCode::OK,
                format!("{} bytes from {}\n", r.body().len(), peer.is_some()),
            ))
        }));
        (addr, server)
    }

    #[tokio::test]
    async fn bodies_are_bounded_by_length_and_slow_clients_dropped() {
        let (addr, server) = small_server().await;
        let post = |body: &str| {
            format!(
                "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let ok = exchange(addr, post(&"x".repeat(16)).as_bytes()).await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\n16 bytes from true\n"), "{ok}");
        // One byte over: refused before the body is read, and the answer
        // still arrives whole although the body is never read.
        let big = exchange(addr, post(&"x".repeat(17)).as_bytes()).await;
        assert!(big.starts_with("HTTP/1.1 413 "), "{big}");
        assert!(big.contains("at most 16 bytes"), "{big}");
        let chunked = exchange(
            addr,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        )
        .await;
        assert!(chunked.starts_with("HTTP/1.1 411 "), "{chunked}");
        let bad_length = exchange(addr, b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n").await;
        assert!(bad_length.starts_with("HTTP/1.1 400 "), "{bad_length}");

        // A head or a body that does not arrive in time: no answer, the
        // connection closed.
        for partial in [
            &b"POST / HTTP/1.1\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc",
        ] {
            let started = Instant::now();
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(partial).await.unwrap();
            let mut out = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
            assert!(read.is_ok(), "not closed: {partial:?}");
            assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
            assert!(started.elapsed() >= Duration::from_millis(250));
        }
        server.abort();
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_to_be_served() {
        let (addr, server) = small_server().await;
        // The one slot, held by a client that sends nothing until the
        // timeout drops it.
        let started = Instant::now();
        let _idle = TcpStream::connect(addr).await.unwrap();
        let r = exchange(addr, b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "served before the slot was free: {:?}",
            started.elapsed()
        );
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
