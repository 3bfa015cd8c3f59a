//! The stateful proxy core (RFC 3261 section 16) on top of the transaction
//! layer (`kemibox-tm`): server transactions for relayed requests, one
//! client transaction per branch, branch/reply/failure routes, response
//! selection, CANCEL.
//!
//! The transaction table is sans-IO: everything it asks for (sends, timers,
//! events for us) comes back as effects, carried out by [`Stateful::run`].
//! Timers go into one queue driven by one task.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use kemibox_kemi::{Event, Message, TmInfo, Transport};
use kemibox_sandbox::{Outcome, Pool, Script};
use kemibox_sip::{SipMessage, render};
use kemibox_tm::{
    ClientId, ClientState, Config, Effect, Millis, Peer, Received, ServerId, TimerId,
    TransactionTable, TuEvent, TxError, TxId,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::forward::{self, Hop};
use crate::handler::REPLY_ROUTE;
use crate::{Shared, handler, reply};

/// Transaction callbacks armed by the script (`t_on_branch` ...).
#[derive(Debug, Clone, Default)]
pub struct Callbacks {
    pub branch: Option<String>,
    pub reply: Option<String>,
    pub failure: Option<String>,
}

impl Callbacks {
    /// The kinds armed, as `TmInfo::armed` lists them.
    pub fn armed(&self) -> Vec<String> {
        [
            ("branch", &self.branch),
            ("reply", &self.reply),
            ("failure", &self.failure),
        ]
        .into_iter()
        .filter(|(_, f)| f.is_some())
        .map(|(k, _)| k.to_string())
        .collect()
    }

    /// Take note of a `callback` event.
    pub fn arm(&mut self, kind: &str, function: String) {
        match kind {
            "branch" => self.branch = Some(function),
            "reply" => self.reply = Some(function),
            "failure" => self.failure = Some(function),
            _ => {}
        }
    }
}

/// One branch of a proxied request.
#[derive(Debug)]
struct Branch {
    client: Option<ClientId>,
    hop: Hop,
    /// Our address the branch is sent from (the one its Via names), for
    /// the request, its retransmissions, its ACK and its CANCEL.
    from: SocketAddr,
    /// Final status, once known (408 on timeout).
    status: Option<u16>,
    /// The final response received, our Via already removed.
    response: Option<Vec<u8>>,
    /// A CANCEL is owed once the branch gets a provisional response.
    cancel_pending: bool,
}

/// Proxy state kept per server transaction.
struct Proxied {
    /// The tenant that created the transaction: every later route of the
    /// transaction (branch, reply, failure, onsend, `t_continue`) runs in
    /// its script.
    script: Script,
    /// The request as routed: the received message with the edits the
    /// request route made (before our Via).
    request: Message,
    callbacks: Callbacks,
    branches: Vec<Branch>,
    canceled: bool,
    final_sent: bool,
    /// When the transaction was created, for `t_is_expired`.
    created: Millis,
}

/// Kamailio's `max_inv_lifetime` and `max_noninv_lifetime`: past these a
/// transaction counts as expired (`KSR.tm.t_is_expired`).
const MAX_INVITE_LIFETIME_MS: u64 = 180_000;
const MAX_NON_INVITE_LIFETIME_MS: u64 = 32_000;

impl Proxied {
    fn expired(&self, now: Millis) -> bool {
        lifetime_over(self.request.sip.method_str() == "INVITE", self.created, now)
    }

    /// The failure route to run (taken: it runs once) and the request it
    /// runs on, for a transaction that ended with `status` (`timeout`: the
    /// proxy's own 408, no final response came).
    fn failure_route(
        &mut self,
        status: u16,
        timeout: bool,
        now: Millis,
    ) -> (Option<String>, Message) {
        let failure = self.callbacks.failure.take();
        let mut request = self.request.clone();
        request.tm = TmInfo {
            status: Some(status),
            canceled: self.canceled,
            in_failure_route: true,
            branch_timeout: timeout,
            any_timeout: timeout
                || self
                    .branches
                    .iter()
                    .any(|b| b.status == Some(408) && b.response.is_none()),
            armed: self.callbacks.armed(),
            expired: self.expired(now),
            suspended: self.request.tm.suspended,
            ..TmInfo::default()
        };
        (failure, request)
    }
}

/// `m` with a branch's Path (RFC 3327) as Route headers on top, so it
/// reaches a contact registered through other proxies; `None` when a Path
/// entry cannot be a header value.
fn with_path(mut m: Message, path: &[String]) -> Option<Message> {
    if path.is_empty() {
        return Some(m);
    }
    let route = format!("Route: {}", path.join(", "));
    match m.edits.insert_header(&m.sip, &route) {
        Ok(()) => Some(m),
        Err(e) => {
            tracing::warn!(path = ?path, "branch not sent: bad Path: {e}");
            None
        }
    }
}

fn lifetime_over(invite: bool, created: Millis, now: Millis) -> bool {
    let lifetime = if invite {
        MAX_INVITE_LIFETIME_MS
    } else {
        MAX_NON_INVITE_LIFETIME_MS
    };
    now.0.saturating_sub(created.0) > lifetime
}

struct State {
    table: TransactionTable,
    /// Boxed, so growing the map moves pointers (see kemibox-tm's table).
    proxied: HashMap<ServerId, Box<Proxied>>,
    branch_of: HashMap<ClientId, (ServerId, usize)>,
    /// Transactions waiting in `t_suspend`, by `$T(id_index)`/`$T(id_label)`.
    suspended: HashMap<(u32, u32), ServerId>,
}

/// Timers fire in slots of this many milliseconds: up to one slot late,
/// which SIP's timers (T1 = 500 ms) do not notice, and a queue whose size
/// follows the number of slots in use rather than the number of timers
/// (most of which are stale by the time they fire, e.g. Timer C).
const TIMER_SLOT_MS: u64 = 10;

/// The transaction layer and what the proxy keeps beside it.
pub struct Stateful {
    state: Mutex<State>,
    epoch: Instant,
    timers: Mutex<BTreeMap<u64, Vec<TimerId>>>,
    timer_added: Notify,
}

/// What a received request is, for the handler.
pub enum Verdict {
    /// Handled by a transaction (retransmission, non-2xx ACK, CANCEL).
    Done,
    /// A new request (or a 2xx ACK) for the script.
    Route,
}

impl Stateful {
    pub fn new(config: Config) -> Stateful {
        Stateful {
            state: Mutex::new(State {
                table: TransactionTable::new(config),
                proxied: HashMap::new(),
                branch_of: HashMap::new(),
                suspended: HashMap::new(),
            }),
            epoch: Instant::now(),
            timers: Mutex::new(BTreeMap::new()),
            timer_added: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Millis {
        Millis(self.epoch.elapsed().as_millis() as u64)
    }

    /// Relayed requests still waiting for their final response.
    pub fn pending(&self) -> usize {
        self.lock()
            .proxied
            .values()
            .filter(|p| !p.final_sent && !p.branches.is_empty())
            .count()
    }

    /// Carry out what the transaction layer asked for.
    pub async fn run(shared: &Arc<Shared>, effects: Vec<Effect>) {
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
                    // in on (server) or its Via names (client); a listener
                    // of the right transport when it is not one.
                    let local = shared
                        .transports
                        .own_address(transport, from)
                        .unwrap_or(from);
                    if let Err(e) = shared
                        .transports
                        .send(shared, transport, local, to, bytes.to_vec())
                        .await
                    {
                        tracing::info!(peer = %to, error = %e, "send failed");
                    }
                }
                Effect::Arm { timer, at } => shared.stateful.arm(timer, at),
                Effect::Tu(event) => Box::pin(Stateful::tu_event(shared, event)).await,
            }
        }
    }

    fn arm(&self, timer: TimerId, at: Millis) {
        let slot = at.0.div_ceil(TIMER_SLOT_MS);
        let mut timers = self.timers.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = timers.first_key_value().map(|(s, _)| *s);
        timers.entry(slot).or_default().push(timer);
        if earliest.is_none_or(|e| slot < e) {
            self.timer_added.notify_one();
        }
    }

    /// The timer driver: fires due timers into the table.
    pub async fn drive_timers(shared: Arc<Shared>) -> anyhow::Result<()> {
        let me = &shared.stateful;
        loop {
            let next = {
                let timers = me.timers.lock().unwrap_or_else(|e| e.into_inner());
                timers.first_key_value().map(|(slot, _)| *slot)
            };
            match next {
                None => me.timer_added.notified().await,
                Some(slot) => {
                    let deadline =
                        me.epoch + std::time::Duration::from_millis(slot * TIMER_SLOT_MS);
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = me.timer_added.notified() => continue,
                    }
                }
            }
            let now = me.now();
            loop {
                let due = {
                    let mut timers = me.timers.lock().unwrap_or_else(|e| e.into_inner());
                    match timers.first_key_value() {
                        Some((slot, _)) if slot * TIMER_SLOT_MS <= now.0 => timers.pop_first(),
                        _ => None,
                    }
                };
                let Some((_, due)) = due else { break };
                let effects: Vec<Effect> = {
                    let mut st = me.lock();
                    due.into_iter()
                        .flat_map(|timer| st.table.on_timer(timer, now))
                        .collect()
                };
                Stateful::run(&shared, effects).await;
            }
        }
    }

    /// Events from the transaction layer that need the proxy core.
    async fn tu_event(shared: &Arc<Shared>, event: TuEvent) {
        match event {
            TuEvent::Timeout { client } => branch_final(shared, client, 408, None).await,
            TuEvent::TimerC { client } => {
                let cancel = {
                    let mut st = shared.stateful.lock();
                    let proceeding = st.table.client_state(client) == Some(ClientState::Proceeding);
                    if proceeding {
                        st.table.build_cancel(client)
                    } else {
                        st.table.terminate(client);
                        None
                    }
                };
                match cancel {
                    Some(cancel) => send_cancel(shared, client, cancel).await,
                    None => branch_final(shared, client, 408, None).await,
                }
            }
            TuEvent::TransportError {
                id: TxId::Client(client),
            } => branch_final(shared, client, 503, None).await,
            TuEvent::Terminated { id } => {
                let mut st = shared.stateful.lock();
                match id {
                    TxId::Server(server) => {
                        if let Some(p) = st.proxied.remove(&server) {
                            for b in p.branches {
                                if let Some(c) = b.client {
                                    st.branch_of.remove(&c);
                                }
                            }
                        }
                    }
                    TxId::Client(client) => {
                        // Keep the mapping until the server side ends: a
                        // final response may still be owed upstream.
                        let _ = client;
                    }
                }
            }
            TuEvent::AckTimeout { server } => {
                tracing::info!(
                    server = server.get(),
                    "no ACK for a final response (Timer H)"
                );
            }
            TuEvent::TransportError {
                id: TxId::Server(_),
            } => {}
        }
    }

    /// Match a received request against the transactions.
    pub async fn on_request(shared: &Arc<Shared>, m: &Message) -> Verdict {
        let now = shared.stateful.now();
        let received = shared.stateful.lock().table.on_received(&m.sip, now);
        match received {
            Received::Absorbed { effects, .. } => {
                Stateful::run(shared, effects).await;
                Verdict::Done
            }
            Received::Cancel { invite } => {
                cancel(shared, m, invite).await;
                Verdict::Done
            }
            Received::Request | Received::Ack => Verdict::Route,
            Received::Invalid(e) => {
                tracing::info!(peer = %m.source, error = ?e, "request cannot be matched to transactions");
                Verdict::Done
            }
            // A response-only outcome cannot happen for a request.
            Received::Response { .. } | Received::Stray => Verdict::Done,
        }
    }

    /// The server transaction for the request in `m`, created when needed.
    /// `Err` after answering 503 when the table is full.
    pub async fn ensure_server(
        shared: &Arc<Shared>,
        script: &Script,
        m: &Message,
        callbacks: &Callbacks,
    ) -> Result<ServerId, ()> {
        let now = shared.stateful.now();
        let reliable = m.transport == Transport::Tcp;
        let mut peer = Peer::for_request(&m.sip, m.source, m.local, reliable);
        if m.force_rport {
            peer.reply_to = m.source;
        }
        let created = {
            let mut st = shared.stateful.lock();
            match st.table.new_server(&m.sip, peer, now) {
                Ok((server, effects)) => {
                    script.metrics().transactions.inc();
                    st.proxied.insert(
                        server,
                        Box::new(Proxied {
                            script: script.clone(),
                            request: m.clone(),
                            callbacks: callbacks.clone(),
                            branches: Vec::new(),
                            canceled: false,
                            final_sent: false,
                            created: now,
                        }),
                    );
                    Ok((server, effects))
                }
                Err(TxError::Exists(TxId::Server(server))) => Ok((server, Vec::new())),
                Err(e) => Err(e),
            }
        };
        match created {
            Ok((server, effects)) => {
                Stateful::run(shared, effects).await;
                Ok(server)
            }
            Err(TxError::Full) => {
                tracing::warn!("transaction table full: answering 503");
                reply::send(shared, m, 503, "Service Unavailable", &[]).await;
                Err(())
            }
            Err(e) => {
                tracing::info!(peer = %m.source, error = ?e, "cannot create a transaction");
                Err(())
            }
        }
    }

    /// Answer the request of `server` with `code`, through its transaction.
    pub async fn reply(
        shared: &Arc<Shared>,
        server: ServerId,
        m: &Message,
        code: u16,
        reason: &str,
        headers: &[String],
    ) {
        let Some(bytes) = reply::build(m, code, reason, headers) else {
            return;
        };
        send_upstream(shared, server, code, bytes).await;
    }

    /// Relay the request in `m` on new branches of `server`: one to $du or
    /// the R-URI, and one per branch the script appended
    /// (`KSR.corex.append_branch*`), all at once (parallel forking). False
    /// when no branch could be started.
    pub async fn relay(
        shared: &Arc<Shared>,
        server: ServerId,
        mut m: Message,
        callbacks: &Callbacks,
    ) -> bool {
        let appended = std::mem::take(&mut m.branches);
        let script = {
            let mut st = shared.stateful.lock();
            let Some(p) = st.proxied.get_mut(&server) else {
                return false;
            };
            if p.canceled {
                // No new branches once the caller canceled (as Kamailio's tm).
                tracing::debug!(server = server.get(), "not relaying: transaction canceled");
                return false;
            }
            p.callbacks = callbacks.clone();
            p.request.edits = m.edits.clone();
            p.request.flags = m.flags;
            p.request.avps = m.avps.clone();
            p.request.fr_timers = m.fr_timers;
            p.script.clone()
        };
        let path = std::mem::take(&mut m.path);
        let mut started = false;
        if let Some(main) = with_path(m.clone(), &path) {
            started |= Stateful::branch(shared, &script, server, main, callbacks).await;
        }
        for b in appended {
            let mut bm = m.clone();
            if bm.edits.set_ruri(b.uri).is_err() {
                continue;
            }
            bm.dst_uri = b.dst_uri;
            if let Some(bm) = with_path(bm, &b.path) {
                started |= Stateful::branch(shared, &script, server, bm, callbacks).await;
            }
        }
        started
    }

    /// Start one branch of `server` for the request in `m`: branch route,
    /// `ksr_onsend_route`, then the client transaction.
    async fn branch(
        shared: &Arc<Shared>,
        script: &Script,
        server: ServerId,
        m: Message,
        callbacks: &Callbacks,
    ) -> bool {
        let Some(target) = m.dst_uri.clone().or_else(|| m.ruri()) else {
            return false;
        };
        let hop = match forward::resolve(&target).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(tenant = %script.tenant().spec.id, "cannot relay: {e}");
                return false;
            }
        };
        if !forward::allowed(script, &target, hop) {
            return false;
        }
        // The branch route may change (or drop) this branch only.
        let mut m = m;
        if let Some(function) = callbacks.branch.clone() {
            m.tm.in_branch_route = true;
            match script.invoke(&function, Some(m)).await {
                Ok(inv) if inv.outcome.is_ok() => match inv.message {
                    Some(mut bm) if !bm.drop => {
                        bm.tm.in_branch_route = false;
                        m = bm;
                    }
                    _ => return true,
                },
                Ok(inv) => {
                    handler::log_failure(script, &inv, inv.message.as_ref().map(|x| x.source));
                    return false;
                }
                Err(failure) => {
                    tracing::error!(error = %failure, "branch route");
                    return false;
                }
            }
        }
        if !crate::onsend::allows(script, &m, (hop.transport, hop.addr)).await {
            return false;
        }
        // The socket the request arrived on when the hop's transport is
        // its own, as forward::branch_bytes names it in our Via.
        let from = shared
            .transports
            .own_address(hop.transport, m.local)
            .unwrap_or(m.local);
        let index = {
            let mut st = shared.stateful.lock();
            let Some(p) = st.proxied.get_mut(&server) else {
                return false;
            };
            p.branches.push(Branch {
                client: None,
                hop,
                from,
                status: None,
                response: None,
                cancel_pending: false,
            });
            p.branches.len() - 1
        };
        let Some(bytes) =
            forward::branch_bytes(shared, &mut m, hop, &format!("{}.{index}", server.get()))
        else {
            return false;
        };
        let Ok(request) = SipMessage::parse(bytes) else {
            return false;
        };
        let now = shared.stateful.now();
        let mut timers = shared.config.transactions.timers;
        if let Some(fr) = m.fr_timers.fr {
            timers.fr = Some(fr);
        }
        if let Some(fr_inv) = m.fr_timers.fr_inv {
            timers.c = Some(fr_inv);
        }
        let reliable = hop.transport == Transport::Tcp;
        let sent = {
            let mut st = shared.stateful.lock();
            match st
                .table
                .send_request_with(request, from, hop.addr, reliable, timers, now)
            {
                Ok((client, effects)) => {
                    st.branch_of.insert(client, (server, index));
                    if let Some(b) = st
                        .proxied
                        .get_mut(&server)
                        .and_then(|p| p.branches.get_mut(index))
                    {
                        b.client = Some(client);
                    }
                    Some(effects)
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "cannot create the branch transaction");
                    None
                }
            }
        };
        match sent {
            Some(effects) => {
                Stateful::run(shared, effects).await;
                true
            }
            None => false,
        }
    }

    /// Park `server` under `ids` (`KSR.tmx.t_suspend`) with the request
    /// as the route left it. When no `t_continue` comes within the
    /// transaction's final-response timeout (`t_set_fr`, else Timer B),
    /// it fails with 408 through its failure route.
    pub async fn suspend(
        shared: &Arc<Shared>,
        server: ServerId,
        ids: (u32, u32),
        m: &Message,
        callbacks: &Callbacks,
    ) {
        let wait = m
            .fr_timers
            .fr
            .unwrap_or_else(|| shared.config.transactions.timers.b());
        {
            let mut st = shared.stateful.lock();
            let Some(p) = st.proxied.get_mut(&server) else {
                return;
            };
            p.request = m.clone();
            p.callbacks = callbacks.clone();
            st.suspended.insert(ids, server);
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let now = shared.stateful.now();
            let failed = {
                let mut st = shared.stateful.lock();
                let st = &mut *st;
                match st.suspended.remove(&ids) {
                    Some(server) => st
                        .proxied
                        .get_mut(&server)
                        .map(|p| (server, p.script.clone(), p.failure_route(408, true, now))),
                    None => None,
                }
            };
            if let Some((server, script, (failure, request))) = failed {
                tracing::info!(
                    index = ids.0,
                    label = ids.1,
                    "suspended transaction timed out"
                );
                all_failed(&shared, &script, server, (408, None), failure, request).await;
            }
        });
    }

    /// Resume the transaction suspended under `ids` (`KSR.tmx.t_continue`):
    /// run `route` on its request and act on what it did, like a failure
    /// route; a route that neither relays nor replies gets the error reply.
    /// Only the tenant that suspended a transaction (`script`) can resume it.
    pub async fn resume(shared: &Arc<Shared>, script: &Script, ids: (u32, u32), route: &str) {
        let found = {
            let mut st = shared.stateful.lock();
            let st = &mut *st;
            let own = st.suspended.get(&ids).and_then(|server| {
                let p = st.proxied.get(server)?;
                Arc::ptr_eq(p.script.pool(), script.pool())
                    .then(|| (*server, p.request.clone(), p.script.clone()))
            });
            if own.is_some() {
                st.suspended.remove(&ids);
            }
            own
        };
        let Some((server, request, script)) = found else {
            tracing::info!(
                index = ids.0,
                label = ids.1,
                "t_continue: no transaction suspended with these ids"
            );
            return;
        };
        // The route runs on the version that suspended the transaction.
        match script.invoke(route, Some(request.clone())).await {
            Ok(inv) if inv.outcome.is_ok() => {
                if let Some(m) = inv.message
                    && handle_failure_events(shared, server, inv.events, m).await
                {
                    return;
                }
            }
            Ok(inv) => handler::log_failure(&script, &inv, Some(request.source)),
            Err(failure) => tracing::error!(error = %failure, "t_continue route"),
        }
        let (code, reason) = shared.config.error_reply.clone();
        Stateful::reply(shared, server, &request, code, &reason, &[]).await;
    }

    /// A received response: to a branch, absorbed, or stray.
    pub async fn on_response(shared: &Arc<Shared>, m: Message) {
        let now = shared.stateful.now();
        let received = shared.stateful.lock().table.on_received(&m.sip, now);
        match received {
            Received::Response { client, effects } => {
                Stateful::run(shared, effects).await;
                branch_response(shared, client, m).await;
            }
            Received::Absorbed { effects, .. } => Stateful::run(shared, effects).await,
            _ => handler::stateless_response(shared, m).await,
        }
    }
}

/// Answer a CANCEL and cancel the branches of the INVITE it names (RFC 3261
/// 9.2, 16.10).
async fn cancel(shared: &Arc<Shared>, m: &Message, invite: Option<ServerId>) {
    let Some(invite) = invite else {
        reply::send(shared, m, 481, "Call/Transaction Does Not Exist", &[]).await;
        return;
    };
    // The CANCEL's transaction belongs to the INVITE's tenant.
    let script = {
        let st = shared.stateful.lock();
        st.proxied.get(&invite).map(|p| p.script.clone())
    }
    .or_else(|| shared.tenants.for_request(m).map(Pool::pin));
    match script {
        Some(script) => {
            if let Ok(server) =
                Stateful::ensure_server(shared, &script, m, &Callbacks::default()).await
            {
                Stateful::reply(shared, server, m, 200, "OK", &[]).await;
            }
        }
        None => reply::send(shared, m, 200, "OK", &[]).await,
    }
    let (cancels, waiting): (Vec<(ClientId, Option<SipMessage>)>, Option<Message>) = {
        let mut st = shared.stateful.lock();
        let st = &mut *st;
        let Some(p) = st.proxied.get_mut(&invite) else {
            return;
        };
        p.canceled = true;
        // A transaction with no branch (suspended by `t_suspend`) ends here.
        let waiting = (p.branches.is_empty() && !p.final_sent).then(|| p.request.clone());
        if waiting.is_some() {
            st.suspended.retain(|_, s| *s != invite);
        }
        let mut out = Vec::new();
        for b in p.branches.iter_mut().filter(|b| b.status.is_none()) {
            let Some(client) = b.client else { continue };
            if st.table.client_state(client) == Some(ClientState::Proceeding) {
                out.push((client, st.table.build_cancel(client)));
            } else {
                b.cancel_pending = true;
            }
        }
        (out, waiting)
    };
    for (client, cancel) in cancels {
        if let Some(cancel) = cancel {
            send_cancel(shared, client, cancel).await;
        }
    }
    if let Some(request) = waiting {
        Stateful::reply(shared, invite, &request, 487, "Request Terminated", &[]).await;
    }
}

async fn send_cancel(shared: &Arc<Shared>, branch: ClientId, cancel: SipMessage) {
    let now = shared.stateful.now();
    let hop = {
        let st = shared.stateful.lock();
        st.branch_of
            .get(&branch)
            .and_then(|(s, i)| st.proxied.get(s)?.branches.get(*i))
            .map(|b| (b.hop, b.from))
    };
    let Some((hop, from)) = hop else { return };
    let sent = shared.stateful.lock().table.send_request(
        cancel,
        from,
        hop.addr,
        hop.transport == Transport::Tcp,
        now,
    );
    match sent {
        Ok((_, effects)) => Stateful::run(shared, effects).await,
        Err(e) => tracing::info!(error = ?e, "cannot send CANCEL"),
    }
}

/// A response for one of our branches (RFC 3261 16.7).
async fn branch_response(shared: &Arc<Shared>, client: ClientId, m: Message) {
    let Some(status) = m.sip.status() else { return };
    let found = {
        let st = shared.stateful.lock();
        let now = shared.stateful.now();
        st.branch_of.get(&client).and_then(|(s, _)| {
            let p = st.proxied.get(s)?;
            Some((
                *s,
                p.script.clone(),
                p.callbacks.clone(),
                p.canceled,
                p.expired(now),
            ))
        })
    };
    // Responses to our own CANCELs end here.
    let Some((server, script, callbacks, canceled, expired)) = found else {
        return;
    };

    // ksr_reply_route for every reply, then the transaction's reply route.
    let mut m = m;
    m.tm.status = Some(status);
    m.tm.canceled = canceled;
    m.tm.expired = expired;
    m.tm.armed = callbacks.armed();
    let routes = std::iter::once(REPLY_ROUTE.to_string())
        .filter(|f| script.tenant().defines(f))
        .map(|f| (f, false))
        .chain(callbacks.reply.clone().map(|f| (f, true)));
    for (function, transaction_route) in routes {
        m.tm.in_reply_route = transaction_route;
        let Ok(inv) = script.invoke(&function, Some(m.clone())).await else {
            return;
        };
        match &inv.outcome {
            Outcome::Ok { .. } => {}
            Outcome::NotFound { .. } if function == REPLY_ROUTE => {}
            _ => {
                handler::log_failure(&script, &inv, Some(m.source));
                return;
            }
        }
        match inv.message {
            Some(next) if next.drop && status < 200 => return,
            Some(next) => m = next,
            None => return,
        }
    }

    m.edits.remove_top_via(&m.sip);
    let bytes = render(&m.sip, &m.edits);
    if status < 200 {
        let owed_cancel = {
            let mut st = shared.stateful.lock();
            let st = &mut *st;
            let branch = st
                .branch_of
                .get(&client)
                .copied()
                .and_then(|(s, i)| st.proxied.get_mut(&s)?.branches.get_mut(i));
            match branch {
                Some(b) if b.cancel_pending => {
                    b.cancel_pending = false;
                    st.table.build_cancel(client)
                }
                _ => None,
            }
        };
        if let Some(cancel) = owed_cancel {
            send_cancel(shared, client, cancel).await;
        }
        if status > 100 {
            send_upstream(shared, server, status, bytes).await;
        }
        return;
    }
    branch_final(shared, client, status, Some(bytes)).await;
}

/// A branch ended with `status` (`bytes`: the response, our Via removed;
/// `None` when we made it up, e.g. 408 on timeout).
async fn branch_final(shared: &Arc<Shared>, client: ClientId, status: u16, bytes: Option<Vec<u8>>) {
    let now = shared.stateful.now();
    let decision = {
        let mut st = shared.stateful.lock();
        let Some(&(server, index)) = st.branch_of.get(&client) else {
            return;
        };
        let Some(p) = st.proxied.get_mut(&server) else {
            return;
        };
        if let Some(b) = p.branches.get_mut(index) {
            if b.status.is_some() {
                return;
            }
            b.status = Some(status);
            b.response = bytes.clone();
        }
        if (200..300).contains(&status) {
            // Forward every 2xx; cancel the other pending branches (16.7 step 10).
            let others: Vec<ClientId> = p
                .branches
                .iter()
                .filter(|b| b.status.is_none())
                .filter_map(|b| b.client)
                .collect();
            p.final_sent = true;
            Decision::Success { server, others }
        } else if p.final_sent || p.branches.iter().any(|b| b.status.is_none()) {
            Decision::Wait
        } else {
            let best = best_branch(&p.branches);
            let timeout = best.0 == 408 && best.1.is_none();
            let (failure, request) = p.failure_route(best.0, timeout, now);
            Decision::AllFailed {
                server,
                script: p.script.clone(),
                best,
                failure,
                request: Box::new(request),
            }
        }
    };
    match decision {
        Decision::Wait => {}
        Decision::Success { server, others } => {
            // Cancel the other branches first: a 2xx ends the server
            // transaction, and with it what the branches are known by.
            for other in others {
                let cancel = {
                    let st = shared.stateful.lock();
                    if st.table.client_state(other) == Some(ClientState::Proceeding) {
                        st.table.build_cancel(other)
                    } else {
                        None
                    }
                };
                if let Some(cancel) = cancel {
                    send_cancel(shared, other, cancel).await;
                }
            }
            if let Some(bytes) = bytes {
                send_upstream(shared, server, status, bytes).await;
            }
        }
        Decision::AllFailed {
            server,
            script,
            best,
            failure,
            request,
        } => all_failed(shared, &script, server, best, failure, *request).await,
    }
}

enum Decision {
    Wait,
    Success {
        server: ServerId,
        others: Vec<ClientId>,
    },
    AllFailed {
        server: ServerId,
        script: Script,
        best: (u16, Option<Vec<u8>>),
        failure: Option<String>,
        request: Box<Message>,
    },
}

/// RFC 3261 16.7 step 6: a 6xx wins, else the lowest class; 503 goes
/// upstream as 500.
fn best_branch(branches: &[Branch]) -> (u16, Option<Vec<u8>>) {
    let finals = branches
        .iter()
        .filter_map(|b| Some((b.status?, b.response.clone())));
    let best = finals.min_by_key(|(status, _)| {
        if *status >= 600 {
            0
        } else {
            *status / 100 * 1000 + status % 100
        }
    });
    match best {
        Some((503, _)) => (500, None),
        Some(best) => best,
        None => (500, None),
    }
}

/// Every branch failed: run the failure route, which may relay again
/// (serial forking) or answer; otherwise send the best response up.
async fn all_failed(
    shared: &Arc<Shared>,
    script: &Script,
    server: ServerId,
    best: (u16, Option<Vec<u8>>),
    failure: Option<String>,
    request: Message,
) {
    let (status, bytes) = best;
    if let Some(function) = failure {
        let mut m = request.clone();
        m.dst_uri = None;
        match script.invoke(&function, Some(m)).await {
            Ok(inv) if inv.outcome.is_ok() => {
                if let Some(fm) = inv.message
                    && handle_failure_events(shared, server, inv.events, fm).await
                {
                    return;
                }
            }
            Ok(inv) => handler::log_failure(script, &inv, Some(request.source)),
            Err(failure) => tracing::error!(error = %failure, "failure route"),
        }
    }
    let bytes = match bytes {
        Some(b) => b,
        None => match reply::build(&request, status, reason_phrase(status), &[]) {
            Some(b) => b,
            None => return,
        },
    };
    send_upstream(shared, server, status, bytes).await;
}

/// Act on what a failure route (or a `t_continue` route) did. True when
/// it took care of the transaction (a new branch or a reply).
async fn handle_failure_events(
    shared: &Arc<Shared>,
    server: ServerId,
    events: Vec<Event>,
    m: Message,
) -> bool {
    let mut callbacks = {
        let st = shared.stateful.lock();
        st.proxied
            .get(&server)
            .map(|p| p.callbacks.clone())
            .unwrap_or_default()
    };
    let mut handled = false;
    for event in events {
        match event {
            Event::Callback { kind, function } => callbacks.arm(&kind, function),
            Event::Tm { function, .. } if function == "t_relay" => {
                handled |= Stateful::relay(shared, server, m.clone(), &callbacks).await;
            }
            Event::Reply {
                code,
                reason,
                headers,
                ..
            } => {
                let code = u16::try_from(code).unwrap_or(500);
                Stateful::reply(shared, server, &m, code, &reason, &headers).await;
                handled = true;
            }
            _ => {}
        }
    }
    handled
}

/// Send a response for `server` upstream (through its transaction, or
/// statelessly by Via when the transaction is gone, e.g. a 2xx
/// retransmission).
async fn send_upstream(shared: &Arc<Shared>, server: ServerId, status: u16, bytes: Vec<u8>) {
    let now = shared.stateful.now();
    let (result, tenant) = {
        let mut st = shared.stateful.lock();
        let tenant = match st.proxied.get_mut(&server) {
            Some(p) => {
                if status >= 200 {
                    p.final_sent = true;
                }
                Some(p.script.metrics().clone())
            }
            None => None,
        };
        (st.table.send_response(server, status, bytes, now), tenant)
    };
    match result {
        Ok(effects) => {
            if let Some(tenant) = tenant {
                tenant.reply(status);
            }
            Stateful::run(shared, effects).await
        }
        Err(e) => tracing::debug!(error = ?e, status, "response not sent through the transaction"),
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
