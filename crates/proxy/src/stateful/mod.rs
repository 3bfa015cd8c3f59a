//! The stateful proxy core (RFC 3261 section 16) on top of the transaction
//! layer (`kemibox-tm`), split by job: server transactions and replies
//! ([`server`]), carrying out what a route asked for ([`act`]), branches
//! ([`branches`]), responses and failure routes ([`responses`]), CANCEL
//! ([`cancel`]), suspended transactions ([`suspend`]) and requests of the
//! proxy's own ([`uac`]).
//!
//! What the proxy keeps per server transaction ([`Proxied`]) is the
//! transaction's user data in the table, and a branch's client transaction
//! names its server transaction and index: nothing is kept beside the
//! table. The table is sans-IO: everything it asks for (sends, timers,
//! events for us) comes back as effects, carried out by [`Stateful::run`].
//! Every timer of the proxy (the transactions' and a suspended
//! transaction's timeout) goes into one queue driven by one task
//! ([`Stateful::drive_timers`]).

mod accounting;
mod act;
mod branches;
mod cancel;
pub(crate) mod dialog;
mod responses;
mod server;
mod suspend;
mod uac;

pub use uac::ProxyUac;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kemibox_kemi::{CallbackKind, Message, TmInfo, Transport};
use kemibox_sandbox::Script;
use kemibox_tm::{
    ClientState, Config, Effect, Millis, Received, ServerId, TimerId, TransactionTable, TuEvent,
    TxId,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::egress::{Egress, Hop};
use crate::transport::SendOptions;

/// Transaction routes armed by the script (`KSR.tm.t_on_*`).
#[derive(Debug, Clone, Default)]
pub struct Callbacks {
    branch: Option<String>,
    reply: Option<String>,
    failure: Option<String>,
    branch_failure: Option<String>,
}

impl Callbacks {
    /// The kinds armed, as `TmInfo::armed` lists them.
    fn armed(&self) -> Vec<CallbackKind> {
        [
            (CallbackKind::Branch, &self.branch),
            (CallbackKind::Reply, &self.reply),
            (CallbackKind::Failure, &self.failure),
            (CallbackKind::BranchFailure, &self.branch_failure),
        ]
        .into_iter()
        .filter(|(_, f)| f.is_some())
        .map(|(k, _)| k)
        .collect()
    }

    /// Arm `kind` with `function`.
    fn arm(&mut self, kind: CallbackKind, function: String) {
        let slot = match kind {
            CallbackKind::Branch => &mut self.branch,
            CallbackKind::Reply => &mut self.reply,
            CallbackKind::Failure => &mut self.failure,
            CallbackKind::BranchFailure => &mut self.branch_failure,
        };
        *slot = Some(function);
    }
}

/// One branch of a proxied request.
#[derive(Debug)]
struct Branch {
    hop: Hop,
    /// Our address the branch is sent from (the one its Via names), for
    /// the request, its retransmissions, its ACK and its CANCEL.
    from: std::net::SocketAddr,
    /// Its client transaction, once started.
    client: Option<kemibox_tm::ClientId>,
    /// Final status, once known (408 on timeout).
    status: Option<u16>,
    /// The final response received, our Via already removed.
    response: Option<Vec<u8>>,
    /// A CANCEL is owed once the branch gets a provisional response.
    cancel_pending: bool,
}

/// What the proxy keeps with each server transaction.
struct Proxied {
    /// The tenant that created the transaction: every later route of the
    /// transaction (branch, reply, failure, onsend, `t_continue`) runs in
    /// its script, at the version its request route ran on.
    script: Script,
    /// The request as routed: the received message with the edits the
    /// request route made (before our Via).
    request: Message,
    callbacks: Callbacks,
    branches: Vec<Branch>,
    canceled: bool,
    final_sent: bool,
    /// Its final reply was accounted (acc module): once per transaction.
    accounted: bool,
    /// When the transaction was created, for `t_is_expired`.
    created: Millis,
    /// The ids it waits under (`KSR.tmx.t_suspend`), while suspended.
    suspended: Option<(u32, u32)>,
}

/// Kamailio's `max_inv_lifetime` and `max_noninv_lifetime`: past these a
/// transaction counts as expired (`KSR.tm.t_is_expired`).
const MAX_INVITE_LIFETIME_MS: u64 = 180_000;
const MAX_NON_INVITE_LIFETIME_MS: u64 = 32_000;

fn lifetime_over(invite: bool, created: Millis, now: Millis) -> bool {
    let lifetime = if invite {
        MAX_INVITE_LIFETIME_MS
    } else {
        MAX_NON_INVITE_LIFETIME_MS
    };
    now.0.saturating_sub(created.0) > lifetime
}

impl Proxied {
    fn expired(&self, now: Millis) -> bool {
        lifetime_over(self.request.sip.method_str() == "INVITE", self.created, now)
    }

    /// The request for a failure or branch-failure route of a transaction
    /// whose (best) branch ended with `status` (`timeout`: the proxy's own
    /// 408, no final response came).
    fn request_for_failure(&self, status: u16, timeout: bool, now: Millis) -> Message {
        let mut request = self.request.clone();
        request.dst_uri = None;
        request.tm = TmInfo {
            status: Some(status),
            canceled: self.canceled,
            branch_timeout: timeout,
            any_timeout: timeout
                || self
                    .branches
                    .iter()
                    .any(|b| b.status == Some(408) && b.response.is_none()),
            armed: self.callbacks.armed(),
            expired: self.expired(now),
            suspended: self.request.tm.suspended,
        };
        request
    }
}

type Table = TransactionTable<Box<Proxied>>;

/// Timers fire in slots of this many milliseconds: up to one slot late,
/// which SIP's timers (T1 = 500 ms) do not notice, and a queue whose size
/// follows the number of slots in use rather than the number of timers
/// (most of which are stale by the time they fire, e.g. Timer C).
const TIMER_SLOT_MS: u64 = 10;

/// What a timer of the proxy is for.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// A transaction's timer, for the table.
    Tx(TimerId),
    /// A suspended transaction's wait for `t_continue` ran out.
    Suspended(ServerId, (u32, u32)),
}

/// What the core needs to know of the proxy's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Transaction timers and limits.
    pub transactions: Config,
    /// The reply sent when a route fails (`500 Server Error` by default).
    pub error_reply: (u16, String),
    /// The most requests of the proxy's own waiting for their final
    /// response at once.
    pub max_local_requests: usize,
}

/// The transaction layer and what the proxy keeps with it.
pub struct Stateful {
    table: Mutex<Table>,
    epoch: Instant,
    timers: Mutex<BTreeMap<u64, Vec<Due>>>,
    timer_added: Notify,
    egress: Egress,
    settings: Settings,
    /// Requests of the proxy's own waiting for their final response.
    local: uac::Local,
}

/// What a received request is, for the handler.
pub enum Verdict {
    /// Handled by a transaction (retransmission, non-2xx ACK).
    Done,
    /// A CANCEL of the INVITE transaction given (`None`: no such
    /// transaction), for [`Stateful::cancel`] with the request's tenant.
    Cancel(Option<ServerId>),
    /// A new request (or a 2xx ACK) for the request route.
    Route,
}

impl Stateful {
    /// The core over `egress`, counting its own requests in `local`.
    pub fn new(
        settings: Settings,
        egress: Egress,
        local: Arc<kemibox_metrics::LocalRequestMetrics>,
    ) -> Stateful {
        Stateful {
            local: uac::Local::new(settings.max_local_requests, local),
            table: Mutex::new(TransactionTable::with_user_data(settings.transactions)),
            epoch: Instant::now(),
            timers: Mutex::new(BTreeMap::new()),
            timer_added: Notify::new(),
            egress,
            settings,
        }
    }

    pub fn egress(&self) -> &Egress {
        &self.egress
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Millis {
        Millis(self.epoch.elapsed().as_millis() as u64)
    }

    /// Relayed requests still waiting for their final response.
    pub fn pending(&self) -> usize {
        self.lock()
            .servers_data()
            .filter(|(_, p)| !p.final_sent && !p.branches.is_empty())
            .count()
    }

    /// Carry out what the transaction layer asked for.
    async fn run(&self, effects: Vec<Effect>) {
        self.run_with(effects, SendOptions::default()).await;
    }

    /// [`Stateful::run`], sending over TCP as `options` say. False when a
    /// send failed.
    async fn run_with(&self, effects: Vec<Effect>, options: SendOptions) -> bool {
        let mut sent = true;
        for effect in effects {
            match effect {
                Effect::Send {
                    from,
                    to,
                    bytes,
                    reliable,
                } => {
                    let transport = if reliable {
                        Transport::Tcp
                    } else {
                        Transport::Udp
                    };
                    // `from` is the socket the transaction's request came
                    // in on (server) or its Via names (client).
                    sent &= self
                        .egress
                        .send(transport, from, to, bytes.to_vec(), options, "a message")
                        .await;
                }
                Effect::Arm { timer, at } => self.arm(Due::Tx(timer), at),
                Effect::Tu(event) => Box::pin(self.tu_event(event)).await,
            }
        }
        sent
    }

    fn arm(&self, due: Due, at: Millis) {
        let slot = at.0.div_ceil(TIMER_SLOT_MS);
        let mut timers = self.timers.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = timers.first_key_value().map(|(s, _)| *s);
        timers.entry(slot).or_default().push(due);
        if earliest.is_none_or(|e| slot < e) {
            self.timer_added.notify_one();
        }
    }

    /// The timer driver: fires due timers.
    pub async fn drive_timers(self: Arc<Self>) -> anyhow::Result<()> {
        loop {
            let next = {
                let timers = self.timers.lock().unwrap_or_else(|e| e.into_inner());
                timers.first_key_value().map(|(slot, _)| *slot)
            };
            match next {
                None => self.timer_added.notified().await,
                Some(slot) => {
                    let deadline =
                        self.epoch + std::time::Duration::from_millis(slot * TIMER_SLOT_MS);
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = self.timer_added.notified() => continue,
                    }
                }
            }
            let now = self.now();
            loop {
                let due = {
                    let mut timers = self.timers.lock().unwrap_or_else(|e| e.into_inner());
                    match timers.first_key_value() {
                        Some((slot, _)) if slot * TIMER_SLOT_MS <= now.0 => timers.pop_first(),
                        _ => None,
                    }
                };
                let Some((_, due)) = due else { break };
                let mut effects = Vec::new();
                let mut suspended = Vec::new();
                {
                    let mut table = self.lock();
                    for d in due {
                        match d {
                            Due::Tx(timer) => effects.extend(table.on_timer(timer, now)),
                            Due::Suspended(server, ids) => suspended.push((server, ids)),
                        }
                    }
                }
                self.run(effects).await;
                for (server, ids) in suspended {
                    self.suspension_timeout(server, ids).await;
                }
            }
        }
    }

    /// Events from the transaction layer that need the proxy core.
    async fn tu_event(&self, event: TuEvent) {
        match event {
            TuEvent::Timeout { client } if client.branch_of().is_none() => {
                self.local_timeout(client)
            }
            TuEvent::Timeout { client } => self.branch_final(client, 408, None).await,
            TuEvent::TimerC { client } => {
                let cancel = {
                    let mut table = self.lock();
                    let proceeding = table.client_state(client) == Some(ClientState::Proceeding);
                    if proceeding {
                        table.build_cancel(client)
                    } else {
                        table.terminate(client);
                        None
                    }
                };
                match cancel {
                    Some(cancel) => self.send_cancel(client, cancel).await,
                    None => self.branch_final(client, 408, None).await,
                }
            }
            TuEvent::TransportError {
                id: TxId::Client(client),
            } if client.branch_of().is_none() => self.local_failed(client, "transport error"),
            TuEvent::TransportError {
                id: TxId::Client(client),
            } => self.branch_final(client, 503, None).await,
            // Once a local request's transaction is gone nothing can end
            // it: its waiter learns now (a final response came first).
            TuEvent::Terminated {
                id: TxId::Client(client),
            } if client.branch_of().is_none() => {
                self.local_failed(client, "transaction ended without a final response")
            }
            TuEvent::AckTimeout { server } => {
                tracing::info!(
                    server = server.get(),
                    "no ACK for a final response (Timer H)"
                );
            }
            // The table dropped what we kept with the transaction.
            TuEvent::Terminated { .. }
            | TuEvent::TransportError {
                id: TxId::Server(_),
            } => {}
        }
    }

    /// Match a received request against the transactions.
    pub async fn on_request(&self, m: &Message) -> Verdict {
        let now = self.now();
        let received = self.lock().on_received(&m.sip, now);
        match received {
            Received::Absorbed { effects, .. } => {
                self.run(effects).await;
                Verdict::Done
            }
            Received::Cancel { invite } => Verdict::Cancel(invite),
            Received::Request | Received::Ack => Verdict::Route,
            Received::Invalid(e) => {
                tracing::info!(peer = %m.source, error = ?e, "request cannot be matched to transactions");
                Verdict::Done
            }
            // A response-only outcome cannot happen for a request.
            Received::Response { .. } | Received::Stray => Verdict::Done,
        }
    }

    /// A received response: handled when it belongs to a branch or is
    /// absorbed; given back when no transaction knows it (a 2xx
    /// retransmission, a reply to a statelessly forwarded request).
    pub async fn on_response(&self, m: Message) -> Option<Message> {
        let now = self.now();
        let received = self.lock().on_received(&m.sip, now);
        match received {
            // Ours (a local request, a CANCEL): it ends here. The waiter
            // learns before the effects may terminate the transaction.
            Received::Response { client, effects } if client.branch_of().is_none() => {
                self.local_response(client, &m.sip);
                self.run(effects).await;
                None
            }
            Received::Response { client, effects } => {
                self.run(effects).await;
                self.branch_response(client, m).await;
                None
            }
            Received::Absorbed { effects, .. } => {
                self.run(effects).await;
                None
            }
            // A late response to a local request is not relayed by Via.
            _ if Self::answers_local(&m.sip) => {
                tracing::debug!(peer = %m.source, "dropping a late response to a request of our own");
                None
            }
            _ => Some(m),
        }
    }
}

/// The reason phrase for responses the proxy makes up.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        487 => "Request Terminated",
        500 => "Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::{Millis, lifetime_over};

    #[test]
    fn transactions_expire_after_kamailios_maximum_lifetimes() {
        let created = Millis(1_000);
        assert!(!lifetime_over(true, created, Millis(181_000)));
        assert!(lifetime_over(true, created, Millis(181_001)));
        assert!(!lifetime_over(false, created, Millis(33_000)));
        assert!(lifetime_over(false, created, Millis(33_001)));
        // A clock that went backwards is not "expired".
        assert!(!lifetime_over(false, created, Millis(0)));
    }
}
