//! Requests of the proxy's own ([`kemibox_kemi::uac`]): the dispatcher's
//! OPTIONS probes, the dialog module's BYEs and keep-alives. Each goes out
//! in a client transaction of the one transaction table, so it is
//! retransmitted and times out (Timer E/F) like a relayed branch; its
//! final response completes the future of whoever sent it, and neither it
//! nor any other response to it is relayed by Via or runs a script route.
//!
//! A local client transaction belongs to no server transaction
//! (`ClientId::branch_of` is `None`, as for our CANCELs); what waits for
//! it is kept in [`Local`] under its id until its final response, its
//! timeout or a transport error, and the number waiting is bounded.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use kemibox_kemi::Transport;
use kemibox_kemi::uac::{LocalReply, LocalRequest, Uac, UacError};
use kemibox_metrics::LocalRequestMetrics;
use kemibox_sip::{NameAddr, SipMessage, Uri, names_equal};
use kemibox_tm::{ClientId, TxError};
use tokio::sync::oneshot;

use super::{Stateful, reason_phrase};
use crate::egress::{Hop, our_via, resolve};
use crate::transport::SendOptions;

/// Every local request's Via branch starts with this (magic cookie
/// included), so a response to one is recognised, and dropped, even after
/// its transaction ended: it never goes on by Via.
const BRANCH_PREFIX: &str = "z9hG4bKkbxuac";

/// What the sender of a local request waits for.
type Waiter = oneshot::Sender<Result<LocalReply, UacError>>;

/// How a local request ended, for its waiter and the metrics.
enum Outcome {
    /// A final response (status, reason phrase).
    Reply(u16, String),
    /// Timer B/F fired: the 408 the transaction layer makes up.
    Timeout,
    /// Lost before any final response (transport error, shutdown).
    Failed(String),
}

/// The local requests waiting for their final response.
pub(super) struct Local {
    waiting: Mutex<HashMap<ClientId, Waiter>>,
    /// Numbers the requests, for their Via branch.
    next: AtomicU64,
    /// Set at shutdown: new requests are refused.
    stopped: AtomicBool,
    /// The most requests waiting at once.
    limit: usize,
    metrics: Arc<LocalRequestMetrics>,
}

impl Local {
    pub(super) fn new(limit: usize, metrics: Arc<LocalRequestMetrics>) -> Local {
        Local {
            waiting: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            limit,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClientId, Waiter>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// End local request `client` with `outcome`: false when it is not one
    /// (a branch, a CANCEL) or already ended.
    fn complete(&self, client: ClientId, outcome: Outcome) -> bool {
        let Some(waiter) = self.lock().remove(&client) else {
            return false;
        };
        self.metrics.pending.sub(1);
        let result = match outcome {
            Outcome::Reply(status, reason) => {
                self.metrics.reply(status);
                Ok(LocalReply { status, reason })
            }
            Outcome::Timeout => {
                self.metrics.timeouts.inc();
                Ok(LocalReply {
                    status: 408,
                    reason: reason_phrase(408).to_string(),
                })
            }
            Outcome::Failed(why) => {
                self.metrics.failed.inc();
                Err(UacError::Send(why))
            }
        };
        // The sender may have stopped waiting: nothing to tell then.
        let _ = waiter.send(result);
        true
    }

    /// A request refused before it had a transaction.
    fn refused(&self, error: UacError) -> UacError {
        self.metrics.failed.inc();
        error
    }
}

/// Where a local request goes and what it carries as Request-URI and
/// Route set once the route set is applied (RFC 3261 12.2.1.1).
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    ruri: String,
    route: Vec<String>,
    /// The URI resolved for the next hop.
    target: String,
}

/// Apply the route set: the first Route when it is a loose router (`;lr`),
/// else (a strict router) its URI becomes the Request-URI and the
/// Request-URI the last Route; `next_hop` overrides where it goes.
fn plan(request: &LocalRequest) -> Result<Plan, UacError> {
    let bad = |what: &str, value: &str| UacError::Send(format!("invalid {what} {value:?}"));
    Uri::parse(&request.ruri).map_err(|_| bad("Request-URI", &request.ruri))?;
    let mut ruri = request.ruri.clone();
    let mut route = request.route.clone();
    let target = match route.first() {
        None => ruri.clone(),
        Some(first) => {
            let addr = NameAddr::parse(first).map_err(|_| bad("Route", first))?;
            let uri = addr.parse_uri().map_err(|_| bad("Route", first))?;
            let loose = uri.param("lr").is_some() || addr.param("lr").is_some();
            let first_uri = addr.uri.to_string();
            if !loose {
                route.remove(0);
                route.push(format!("<{ruri}>"));
                ruri = first_uri.clone();
            }
            first_uri
        }
    };
    Ok(Plan {
        ruri,
        route,
        target: request.next_hop.clone().unwrap_or(target),
    })
}

/// Headers the proxy writes itself: a local request's extra headers may
/// not carry them.
const OWN_HEADERS: [&str; 9] = [
    "Via",
    "Max-Forwards",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Route",
    "Content-Length",
    "Content-Type",
];

/// The request on the wire: `via` on top, Max-Forwards 70, the rest from
/// `request` and `plan`; checked as received requests are.
fn render(request: &LocalRequest, plan: &Plan, via: &str) -> Result<SipMessage, UacError> {
    let method = &request.method;
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
    {
        return Err(UacError::Send(format!("invalid method {method:?}")));
    }
    if ["ACK", "CANCEL", "INVITE"].contains(&method.as_str()) {
        // ACK has no transaction; CANCEL and INVITE need one the proxy
        // started for someone (or a dialog of its own).
        return Err(UacError::Send(format!(
            "{method} is not a request the proxy sends on its own"
        )));
    }
    let one_line = |what: &str, value: &str| {
        if value.contains(['\r', '\n']) {
            Err(UacError::Send(format!("{what} spans lines: {value:?}")))
        } else {
            Ok(())
        }
    };
    one_line("From", &request.from)?;
    one_line("To", &request.to)?;
    one_line("Call-ID", &request.call_id)?;
    one_line("Request-URI", &plan.ruri)?;
    for r in &plan.route {
        one_line("Route", r)?;
    }
    if !request.headers.is_empty() && !request.headers.ends_with("\r\n") {
        return Err(UacError::Send("extra headers must end with CRLF".into()));
    }
    for line in request.headers.split_terminator("\r\n") {
        one_line("header", line)?;
        let name = line.split_once(':').map(|(n, _)| n.trim()).unwrap_or("");
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(UacError::Send(format!("invalid header line {line:?}")));
        }
        if OWN_HEADERS
            .iter()
            .any(|own| names_equal(own.as_bytes(), name.as_bytes()))
        {
            return Err(UacError::Send(format!(
                "header {name} is the proxy's to write"
            )));
        }
    }
    let mut text = format!("{method} {} SIP/2.0\r\nVia: {via}\r\n", plan.ruri);
    for r in &plan.route {
        text.push_str(&format!("Route: {r}\r\n"));
    }
    text.push_str(&format!(
        "Max-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\n{}",
        request.from, request.to, request.call_id, request.cseq, request.headers
    ));
    let body: &[u8] = match &request.body {
        Some((content_type, body)) => {
            one_line("Content-Type", content_type)?;
            text.push_str(&format!("Content-Type: {content_type}\r\n"));
            body
        }
        None => &[],
    };
    text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    let message = SipMessage::parse(bytes)
        .map_err(|e| UacError::Send(format!("malformed request: {}", e.reason())))?;
    message
        .validate()
        .map_err(|e| UacError::Send(format!("malformed request: {}", e.reason())))?;
    Ok(message)
}

impl Stateful {
    /// The socket a local request leaves from: the one `socket` names
    /// (Kamailio's `proto:ip:port`, as `KSR.corex.set_send_socket`) when
    /// it is ours, else our usual one for the hop.
    fn local_socket(&self, socket: Option<&str>, hop: Hop) -> Result<SocketAddr, UacError> {
        let chosen = match socket {
            None => None,
            Some(spec) => {
                let (proto, host, port) = kemibox_kemi::parse_socket(spec)
                    .ok_or_else(|| UacError::Send(format!("invalid socket {spec:?}")))?;
                let transport = match proto.as_deref() {
                    None => hop.transport,
                    Some("udp") => Transport::Udp,
                    Some("tcp") => Transport::Tcp,
                    Some(other) => {
                        return Err(UacError::Unroutable(format!(
                            "socket {spec:?}: transport {other} is not supported"
                        )));
                    }
                };
                let ip = host.parse::<IpAddr>().ok();
                let found = self
                    .egress
                    .transports()
                    .local_addrs()
                    .into_iter()
                    .find(|(t, a)| {
                        *t == transport && Some(a.ip()) == ip && port.is_none_or(|p| p == a.port())
                    });
                if found.is_none() {
                    tracing::warn!(
                        socket = spec,
                        "local request: no such socket of ours: using the usual one"
                    );
                }
                found
            }
        };
        self.egress
            .socket_for(chosen, hop.addr, hop)
            .ok_or_else(|| UacError::Unroutable(format!("no {} listener", hop.transport.as_str())))
    }

    /// Send `request` in a client transaction of its own and wait for its
    /// final response (see [`kemibox_kemi::uac::Uac::send`]).
    pub async fn send_local(&self, request: LocalRequest) -> Result<LocalReply, UacError> {
        let local = &self.local;
        if local.stopped.load(Ordering::Relaxed) {
            return Err(local.refused(UacError::Send("the proxy is stopping".into())));
        }
        let plan = plan(&request).map_err(|e| local.refused(e))?;
        let hop = resolve(&plan.target)
            .await
            .map_err(|e| local.refused(UacError::Unroutable(e)))?;
        let from = self
            .local_socket(request.socket.as_deref(), hop)
            .map_err(|e| local.refused(e))?;
        let n = local.next.fetch_add(1, Ordering::Relaxed);
        let branch = format!(
            "{BRANCH_PREFIX}{:016x}{n:x}",
            self.egress.branch_hash(&format!("uac|{n}"))
        );
        let message = render(
            &request,
            &plan,
            &our_via(hop.transport, from, &branch, true),
        )
        .map_err(|e| local.refused(e))?;
        let (tx, rx) = oneshot::channel();
        let now = self.now();
        let started = {
            let mut waiting = local.lock();
            if local.stopped.load(Ordering::Relaxed) {
                // Checked again under the lock `stop_local` empties: no
                // waiter is left behind once the timers stopped.
                return Err(local.refused(UacError::Send("the proxy is stopping".into())));
            }
            if waiting.len() >= local.limit {
                Err(TxError::Full)
            } else {
                let reliable = hop.transport == Transport::Tcp;
                let sent = self
                    .lock()
                    .send_request(message, from, hop.addr, reliable, now);
                if let Ok((client, _)) = &sent {
                    waiting.insert(*client, tx);
                    local.metrics.pending.add(1);
                    local.metrics.sent.inc();
                }
                sent
            }
        };
        let (client, effects) = started.map_err(|e| {
            let why = match e {
                TxError::Full => format!(
                    "too many requests outstanding (at most {} of the proxy's own, and the transaction table's limit)",
                    local.limit
                ),
                other => format!("no transaction: {other:?}"),
            };
            local.refused(UacError::Send(why))
        })?;
        tracing::debug!(
            method = %request.method,
            ruri = %plan.ruri,
            peer = %hop.addr,
            client = client.get(),
            "sending a request of our own"
        );
        if !self.run_with(effects, SendOptions::default()).await {
            let effects = self.lock().on_transport_error(client.into());
            self.run(effects).await;
        }
        rx.await
            .unwrap_or_else(|_| Err(UacError::Send("the proxy stopped".into())))
    }

    /// A response of client transaction `client`, which is no branch: a
    /// local request's final response completes it (provisional ones, and
    /// responses to our CANCELs, end here).
    pub(super) fn local_response(&self, client: ClientId, m: &SipMessage) {
        let Some(status) = m.status().filter(|s| *s >= 200) else {
            return;
        };
        let reason = m.reason().unwrap_or_default().to_string();
        self.local.complete(client, Outcome::Reply(status, reason));
    }

    /// Timer B/F of `client` fired without a final response.
    pub(super) fn local_timeout(&self, client: ClientId) {
        if self.local.complete(client, Outcome::Timeout) {
            tracing::info!(
                client = client.get(),
                "a request of our own timed out (408)"
            );
        }
    }

    /// `client` ended without a final response (a transport error, or it
    /// terminated otherwise).
    pub(super) fn local_failed(&self, client: ClientId, why: &str) {
        if self
            .local
            .complete(client, Outcome::Failed(why.to_string()))
        {
            tracing::info!(client = client.get(), "a request of our own failed: {why}");
        }
    }

    /// Whether `m` answers a local request (by its top Via's branch),
    /// whether or not its transaction is still alive.
    pub(super) fn answers_local(m: &SipMessage) -> bool {
        m.top_via()
            .and_then(|v| v.branch().map(|b| b.starts_with(BRANCH_PREFIX)))
            .unwrap_or(false)
    }

    /// Shutdown: refuse new local requests and end those waiting with an
    /// error (their transactions stop with the proxy's timers).
    pub fn stop_local(&self) {
        self.local.stopped.store(true, Ordering::Relaxed);
        let waiting: Vec<ClientId> = self.local.lock().keys().copied().collect();
        for client in waiting {
            self.local
                .complete(client, Outcome::Failed("the proxy stopped".into()));
        }
    }
}

/// The proxy's [`Uac`]: what `Proxy::uac` hands out. It holds the core
/// weakly, so a module keeping it does not keep a stopped proxy alive.
pub struct ProxyUac(pub(crate) Weak<Stateful>);

#[async_trait::async_trait]
impl Uac for ProxyUac {
    async fn send(&self, request: LocalRequest) -> Result<LocalReply, UacError> {
        match self.0.upgrade() {
            Some(core) => core.send_local(request).await,
            None => Err(UacError::Send("the proxy stopped".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> LocalRequest {
        LocalRequest {
            method: "OPTIONS".into(),
            ruri: "sip:gw@192.0.2.10:5080".into(),
            from: "<sip:proxy@192.0.2.1>;tag=p1".into(),
            to: "<sip:gw@192.0.2.10:5080>".into(),
            call_id: "c1@kemibox".into(),
            cseq: 10,
            ..LocalRequest::default()
        }
    }

    const VIA: &str = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkbxuac1;rport";

    #[test]
    fn a_request_without_routes_goes_to_its_ruri_or_next_hop() {
        let p = plan(&options()).unwrap();
        assert_eq!(p.target, "sip:gw@192.0.2.10:5080");
        assert_eq!(p.ruri, "sip:gw@192.0.2.10:5080");
        let mut r = options();
        r.next_hop = Some("sip:192.0.2.20:5090;transport=tcp".into());
        assert_eq!(
            plan(&r).unwrap().target,
            "sip:192.0.2.20:5090;transport=tcp"
        );
    }

    #[test]
    fn a_loose_router_is_the_next_hop_and_a_strict_one_the_request_uri() {
        let mut r = options();
        r.route = vec!["<sip:p1.example;lr>".into(), "<sip:p2.example;lr>".into()];
        let p = plan(&r).unwrap();
        assert_eq!(p.target, "sip:p1.example;lr");
        assert_eq!(p.ruri, r.ruri);
        assert_eq!(p.route, r.route);

        r.route = vec!["<sip:strict.example>".into(), "<sip:p2.example;lr>".into()];
        let p = plan(&r).unwrap();
        assert_eq!(p.target, "sip:strict.example");
        assert_eq!(p.ruri, "sip:strict.example");
        assert_eq!(
            p.route,
            vec![
                "<sip:p2.example;lr>".to_string(),
                "<sip:gw@192.0.2.10:5080>".into()
            ]
        );

        r.route = vec!["not an address <".into()];
        assert!(matches!(plan(&r), Err(UacError::Send(_))));
    }

    #[test]
    fn the_request_carries_our_via_max_forwards_and_its_length() {
        let mut r = options();
        r.method = "BYE".into();
        r.route = vec!["<sip:p1.example;lr>".into()];
        r.headers = "Reason: SIP;cause=200;text=\"timeout\"\r\n".into();
        r.body = Some(("text/plain".into(), b"bye".to_vec()));
        let m = render(&r, &plan(&r).unwrap(), VIA).unwrap();
        let text = String::from_utf8_lossy(m.raw()).into_owned();
        assert!(text.starts_with("BYE sip:gw@192.0.2.10:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkbxuac1;rport\r\nRoute: <sip:p1.example;lr>\r\nMax-Forwards: 70\r\n"), "{text}");
        assert!(text.contains("\r\nCSeq: 10 BYE\r\n"), "{text}");
        assert!(
            text.contains("\r\nReason: SIP;cause=200;text=\"timeout\"\r\n"),
            "{text}"
        );
        assert!(
            text.ends_with("Content-Type: text/plain\r\nContent-Length: 3\r\n\r\nbye"),
            "{text}"
        );
        assert!(Stateful::answers_local(&m));
    }

    #[test]
    fn malformed_requests_are_refused_not_sent() {
        let refused = |change: &dyn Fn(&mut LocalRequest)| {
            let mut r = options();
            change(&mut r);
            let p = match plan(&r) {
                Ok(p) => p,
                Err(e) => return e,
            };
            render(&r, &p, VIA).expect_err("refused")
        };
        for e in [
            refused(&|r| r.method = "OPT IONS".into()),
            refused(&|r| r.method = "ACK".into()),
            refused(&|r| r.method = "INVITE".into()),
            refused(&|r| r.ruri = "nonsense".into()),
            refused(&|r| r.from = "<sip:a@b>\r\nVia: SIP/2.0/UDP evil".into()),
            refused(&|r| r.from = String::new()),
            refused(&|r| r.call_id = "x\r\n".into()),
            refused(&|r| r.headers = "X-A: 1".into()),
            refused(&|r| r.headers = "Via: SIP/2.0/UDP 1.2.3.4\r\n".into()),
            refused(&|r| r.headers = "l: 5\r\n".into()),
            refused(&|r| r.headers = "\r\n\r\nX: 1\r\n".into()),
        ] {
            assert!(matches!(e, UacError::Send(_)), "{e:?}");
        }
    }
}
