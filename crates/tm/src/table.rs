//! The transaction table: every live transaction, matching, and the calls
//! the proxy makes.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use kemibox_sip::{Method, SipMessage};

use crate::client_invite::InviteClient;
use crate::client_non_invite::NonInviteClient;
use crate::effects::{ClientId, Effect, ServerId, TuEvent, TxId};
use crate::error::TxError;
use crate::generate;
use crate::key::{ClientKey, KeyError, ServerKey};
use crate::machine::{ClientState, ServerState, Step};
use crate::peer::Peer;
use crate::server_invite::{AutoTrying, InviteServer};
use crate::server_non_invite::NonInviteServer;
use crate::timers::{Millis, TimerId, Timers};

/// Settings of a [`TransactionTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Timer values.
    pub timers: Timers,
    /// The most transactions (client and server together) alive at once;
    /// beyond it [`TransactionTable::new_server`] and
    /// [`TransactionTable::send_request`] fail with [`TxError::Full`].
    /// A transaction keeps its request and at most a couple of responses
    /// (each at most [`kemibox_sip::MAX_MESSAGE_SIZE`]), so this bounds the
    /// layer's memory. Default 65 536.
    pub max_transactions: usize,
    /// Whether INVITE server transactions send `100 Trying` themselves.
    pub auto_trying: AutoTrying,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            timers: Timers::default(),
            max_transactions: 65_536,
            auto_trying: AutoTrying::default(),
        }
    }
}

/// What a received message is, as far as transactions go: the answer of
/// [`TransactionTable::on_received`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A retransmission (of a request, of a final response, or an ACK of a
    /// non-2xx response) handled entirely by transaction `tx`: carry out
    /// `effects` (e.g. re-send the last response, or the ACK) and do not
    /// route the message.
    Absorbed {
        /// The transaction that absorbed it.
        tx: TxId,
        /// What to do.
        effects: Vec<Effect>,
    },
    /// A response of client transaction `client`, for the TU (the proxy
    /// runs its reply route and forwards it, RFC 3261 16.7). Carry out
    /// `effects` too (an ACK for a 3xx-6xx, Timer D, termination).
    Response {
        /// The transaction (branch) it belongs to.
        client: ClientId,
        /// What to do besides handing the response to the TU.
        effects: Vec<Effect>,
    },
    /// A new request (not ACK, not CANCEL) for the TU, which creates its
    /// server transaction with [`TransactionTable::new_server`] (or
    /// answers statelessly).
    Request,
    /// A new CANCEL for the TU: create its server transaction, answer it,
    /// and cancel the pending branches of `invite` (RFC 3261 9.2, 16.10);
    /// `None` when no INVITE server transaction matches (answer 481).
    Cancel {
        /// The INVITE server transaction it cancels (same as
        /// [`TransactionTable::find_invite_for_cancel`]).
        invite: Option<ServerId>,
    },
    /// An ACK matching no INVITE server transaction: the ACK of a 2xx,
    /// which the proxy forwards without a transaction (RFC 3261 16, 17.2.1).
    Ack,
    /// A response matching no client transaction (e.g. a 2xx
    /// retransmission after the INVITE transaction terminated): the proxy
    /// forwards it statelessly (RFC 3261 16.7, 18.1.2) or drops it.
    Stray,
    /// A request that cannot be matched at all (no usable top Via or
    /// CSeq). The proxy's validation answers such requests with 400.
    Invalid(KeyError),
}

#[derive(Debug)]
enum ClientTx {
    Invite(InviteClient),
    NonInvite(NonInviteClient),
}

#[derive(Debug)]
struct ClientEntry {
    key: ClientKey,
    tx: ClientTx,
    /// The table's timers, or the ones this transaction was started with.
    timers: Timers,
}

#[derive(Debug)]
enum ServerTx {
    Invite(InviteServer),
    NonInvite(NonInviteServer),
}

#[derive(Debug)]
struct ServerEntry<S> {
    key: ServerKey,
    tx: ServerTx,
    /// What the transaction user keeps with this transaction.
    data: S,
    /// A second key the TU finds the transaction by
    /// ([`TransactionTable::set_alias`]).
    alias: Option<u64>,
}

/// Every live transaction of the proxy, and the sans-IO interface to
/// them.
///
/// Each server transaction carries user data `S`: what the transaction
/// user (the proxy core) keeps for it lives and ends with it, so nothing
/// beside the table has to be kept in step with it. Client transactions
/// that are branches of a server transaction name it in their id
/// ([`ClientId::branch_of`]).
///
/// The proxy feeds it what happens (messages received, timers fired,
/// sends failed, requests and responses from its own logic) and carries
/// out the [`Effect`]s it returns. Terminated transactions are removed at
/// once and reported as [`TuEvent::Terminated`]. Nothing here panics on
/// any input, and the number of transactions is bounded by
/// [`Config::max_transactions`].
#[derive(Debug)]
pub struct TransactionTable<S = ()> {
    config: Config,
    next_id: u64,
    // Entries are boxed so that growing a map of hundreds of thousands of
    // transactions moves pointers, not whole transactions: the rehash
    // happens under the proxy's state lock, and moving the entries
    // themselves stalled every message for hundreds of milliseconds.
    clients: HashMap<ClientId, Box<ClientEntry>>,
    servers: HashMap<ServerId, Box<ServerEntry<S>>>,
    client_keys: HashMap<ClientKey, ClientId>,
    server_keys: HashMap<ServerKey, ServerId>,
    aliases: HashMap<u64, ServerId>,
}

impl Default for TransactionTable {
    fn default() -> TransactionTable {
        TransactionTable::new(Config::default())
    }
}

impl TransactionTable {
    /// An empty table whose transactions carry no user data.
    pub fn new(config: Config) -> TransactionTable {
        TransactionTable::with_user_data(config)
    }
}

impl<S> TransactionTable<S> {
    /// An empty table whose server transactions carry an `S` each.
    pub fn with_user_data(config: Config) -> TransactionTable<S> {
        TransactionTable {
            config,
            next_id: 0,
            clients: HashMap::new(),
            servers: HashMap::new(),
            client_keys: HashMap::new(),
            server_keys: HashMap::new(),
            aliases: HashMap::new(),
        }
    }

    /// The user data of live server transaction `server`.
    pub fn server_data(&self, server: ServerId) -> Option<&S> {
        self.servers.get(&server).map(|e| &e.data)
    }

    /// The user data of live server transaction `server`, to change.
    pub fn server_data_mut(&mut self, server: ServerId) -> Option<&mut S> {
        self.servers.get_mut(&server).map(|e| &mut e.data)
    }

    /// Every live server transaction's user data.
    pub fn servers_data(&self) -> impl Iterator<Item = (ServerId, &S)> {
        self.servers.iter().map(|(id, e)| (*id, &e.data))
    }

    /// Let `server` be found by `alias` too ([`TransactionTable::by_alias`])
    /// until it ends or gets another alias. False when `server` is gone or
    /// another transaction has that alias.
    pub fn set_alias(&mut self, server: ServerId, alias: u64) -> bool {
        if self.aliases.get(&alias).is_some_and(|s| *s != server) {
            return false;
        }
        let Some(entry) = self.servers.get_mut(&server) else {
            return false;
        };
        if let Some(old) = entry.alias.replace(alias) {
            self.aliases.remove(&old);
        }
        self.aliases.insert(alias, server);
        true
    }

    /// Forget the alias of `server`, if it has one.
    pub fn clear_alias(&mut self, server: ServerId) {
        if let Some(alias) = self.servers.get_mut(&server).and_then(|e| e.alias.take()) {
            self.aliases.remove(&alias);
        }
    }

    /// The live server transaction with `alias`.
    pub fn by_alias(&self, alias: u64) -> Option<ServerId> {
        self.aliases.get(&alias).copied()
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How many transactions are alive.
    pub fn len(&self) -> usize {
        self.clients.len().saturating_add(self.servers.len())
    }

    /// Whether no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn next_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn full(&self) -> bool {
        self.len() >= self.config.max_transactions
    }

    /// Classifies a received (parsed) message and lets the matching
    /// transaction, if any, handle it; see [`Received`] for what the
    /// caller does next. The message's source and transport do not take
    /// part in matching (RFC 3261 17.1.3, 17.2.3); the proxy checks that a
    /// response's top Via is its own before calling this.
    pub fn on_received(&mut self, msg: &SipMessage, now: Millis) -> Received {
        if msg.is_request() {
            self.on_request(msg, now)
        } else {
            self.on_response(msg, now)
        }
    }

    fn on_request(&mut self, msg: &SipMessage, now: Millis) -> Received {
        let key = match ServerKey::for_request(msg) {
            Ok(k) => k,
            Err(e) => return Received::Invalid(e),
        };
        let id = self.server_keys.get(&key).copied();
        let timers = self.config.timers;
        let is_ack = msg.method() == Some(&Method::Ack);
        let Some((id, entry)) = id.and_then(|id| Some((id, self.servers.get_mut(&id)?))) else {
            return match msg.method() {
                Some(Method::Ack) => Received::Ack,
                Some(Method::Cancel) => Received::Cancel {
                    invite: self.find_invite_for_cancel(msg),
                },
                _ => Received::Request,
            };
        };
        let step = match &mut entry.tx {
            ServerTx::Invite(tx) if is_ack => {
                // Legacy matching also needs the ACK's To tag to be the one
                // of the response it acknowledges (RFC 3261 17.2.3).
                let tag_ok = entry.key.is_rfc3261()
                    || tx.final_to_tag().is_none_or(|tag| {
                        msg.to()
                            .and_then(|t| t.tag())
                            .is_some_and(|t| t.eq_ignore_ascii_case(tag))
                    });
                if !tag_ok {
                    return Received::Ack;
                }
                tx.on_ack(&timers, now)
            }
            ServerTx::Invite(tx) => tx.on_retransmission(),
            ServerTx::NonInvite(tx) => tx.on_retransmission(),
        };
        let tx = TxId::Server(id);
        Received::Absorbed {
            tx,
            effects: self.finish(tx, step),
        }
    }

    fn on_response(&mut self, msg: &SipMessage, now: Millis) -> Received {
        let Some(status) = msg.status().filter(|s| *s >= 100) else {
            return Received::Stray;
        };
        let Ok(key) = ClientKey::for_response(msg) else {
            return Received::Stray;
        };
        let Some(id) = self.client_keys.get(&key).copied() else {
            return Received::Stray;
        };
        let Some(entry) = self.clients.get_mut(&id) else {
            return Received::Stray;
        };
        let timers = entry.timers;
        let outcome = match &mut entry.tx {
            ClientTx::Invite(tx) => tx.on_response(msg, status, &timers, now),
            ClientTx::NonInvite(tx) => tx.on_response(status, &timers, now),
        };
        let tx = TxId::Client(id);
        let effects = self.finish(tx, outcome.step);
        if outcome.to_tu {
            Received::Response {
                client: id,
                effects,
            }
        } else {
            Received::Absorbed { tx, effects }
        }
    }

    /// Removes a terminated transaction and reports it.
    fn finish(&mut self, id: TxId, step: Step) -> Vec<Effect> {
        let Step {
            mut effects,
            terminated,
        } = step;
        if terminated && self.remove(id) {
            effects.push(Effect::Tu(TuEvent::Terminated { id }));
        }
        effects
    }

    fn remove(&mut self, id: TxId) -> bool {
        match id {
            TxId::Client(c) => match self.clients.remove(&c) {
                Some(entry) => {
                    self.client_keys.remove(&entry.key);
                    true
                }
                None => false,
            },
            TxId::Server(s) => match self.servers.remove(&s) {
                Some(entry) => {
                    self.server_keys.remove(&entry.key);
                    if let Some(alias) = entry.alias {
                        self.aliases.remove(&alias);
                    }
                    true
                }
                None => false,
            },
        }
    }

    /// Creates the server transaction of a new request (after
    /// [`Received::Request`] or [`Received::Cancel`]) and returns its id
    /// with the effects to carry out (the automatic `100 Trying` or its
    /// timer, for INVITE). Responses go to `peer.reply_to`, sent from
    /// `peer.local`.
    ///
    /// Fails with [`TxError::Full`] at the table limit (answer 503), and
    /// for ACK, responses, unkeyable requests and duplicates.
    pub fn new_server(
        &mut self,
        request: &SipMessage,
        peer: Peer,
        now: Millis,
    ) -> Result<(ServerId, Vec<Effect>), TxError>
    where
        S: Default,
    {
        self.new_server_with(request, peer, now, S::default())
    }

    /// [`TransactionTable::new_server`] with the transaction's user data.
    pub fn new_server_with(
        &mut self,
        request: &SipMessage,
        peer: Peer,
        now: Millis,
        data: S,
    ) -> Result<(ServerId, Vec<Effect>), TxError> {
        let method = request.method().ok_or(TxError::NotRequest)?;
        if *method == Method::Ack {
            return Err(TxError::Ack);
        }
        let key = ServerKey::for_request(request)?;
        if let Some(existing) = self.server_keys.get(&key) {
            return Err(TxError::Exists(TxId::Server(*existing)));
        }
        if self.full() {
            return Err(TxError::Full);
        }
        let id = ServerId(self.next_id());
        let (tx, step) = if *method == Method::Invite {
            let (tx, step) = InviteServer::start(
                id,
                request.clone(),
                peer,
                self.config.auto_trying,
                &self.config.timers,
                now,
            );
            (ServerTx::Invite(tx), step)
        } else {
            let tx = NonInviteServer::start(id, request.clone(), peer);
            (ServerTx::NonInvite(tx), Step::new())
        };
        self.server_keys.insert(key.clone(), id);
        self.servers.insert(
            id,
            Box::new(ServerEntry {
                key,
                tx,
                data,
                alias: None,
            }),
        );
        Ok((id, self.finish(TxId::Server(id), step)))
    }

    /// Sends a response on server transaction `server`: `bytes` is the
    /// complete response and `status` its code. Returns the effects (the
    /// send, timers, termination after a 2xx to an INVITE or a final
    /// response over a reliable transport).
    ///
    /// Fails when the transaction is gone ([`TxError::NoSuchTransaction`]:
    /// forward a late 2xx statelessly), already sent its final response,
    /// or `status` is outside 100..=699.
    pub fn send_response(
        &mut self,
        server: ServerId,
        status: u16,
        bytes: impl Into<Bytes>,
        now: Millis,
    ) -> Result<Vec<Effect>, TxError> {
        if !(100..=699).contains(&status) {
            return Err(TxError::InvalidStatus(status));
        }
        let timers = self.config.timers;
        let entry = self
            .servers
            .get_mut(&server)
            .ok_or(TxError::NoSuchTransaction)?;
        let bytes = bytes.into();
        let step = match &mut entry.tx {
            ServerTx::Invite(tx) => tx.send_response(status, bytes, &timers, now)?,
            ServerTx::NonInvite(tx) => tx.send_response(status, bytes, &timers, now)?,
        };
        Ok(self.finish(TxId::Server(server), step))
    }

    /// Creates a client transaction for `request` (as it will go on the
    /// wire, with the proxy's Via on top, whose branch is the key) and
    /// returns its id with the effects that send it and arm its timers.
    /// Every send of the transaction (the request, its retransmissions, the
    /// ACK of a non-2xx) goes from our address `from` (the socket the Via
    /// names) to `to`.
    ///
    /// Fails with [`TxError::Full`] at the table limit, for ACK (sent
    /// without a transaction), and when the request has no branch or CSeq
    /// or its key is taken.
    pub fn send_request(
        &mut self,
        request: SipMessage,
        from: SocketAddr,
        to: SocketAddr,
        reliable: bool,
        now: Millis,
    ) -> Result<(ClientId, Vec<Effect>), TxError> {
        let timers = self.config.timers;
        self.send_request_with(request, from, to, reliable, timers, now)
    }

    /// [`TransactionTable::send_request`] with timers of its own for this
    /// transaction (a proxy's per-transaction final-response timeouts, as
    /// Kamailio's `t_set_fr`).
    pub fn send_request_with(
        &mut self,
        request: SipMessage,
        from: SocketAddr,
        to: SocketAddr,
        reliable: bool,
        timers: Timers,
        now: Millis,
    ) -> Result<(ClientId, Vec<Effect>), TxError> {
        self.start_client(None, request, (from, to, reliable), timers, now)
    }

    /// [`TransactionTable::send_request_with`] for branch `index` of server
    /// transaction `server`: the id names both ([`ClientId::branch_of`]).
    pub fn send_branch(
        &mut self,
        (server, index): (ServerId, u32),
        request: SipMessage,
        (from, to, reliable): (SocketAddr, SocketAddr, bool),
        timers: Timers,
        now: Millis,
    ) -> Result<(ClientId, Vec<Effect>), TxError> {
        self.start_client(
            Some((server, index)),
            request,
            (from, to, reliable),
            timers,
            now,
        )
    }

    fn start_client(
        &mut self,
        branch: Option<(ServerId, u32)>,
        request: SipMessage,
        (from, to, reliable): (SocketAddr, SocketAddr, bool),
        timers: Timers,
        now: Millis,
    ) -> Result<(ClientId, Vec<Effect>), TxError> {
        let method = request.method().ok_or(TxError::NotRequest)?;
        if *method == Method::Ack {
            return Err(TxError::Ack);
        }
        let is_invite = *method == Method::Invite;
        request.cseq().ok_or(TxError::Key(KeyError::NoCSeq))?;
        let key = ClientKey::for_request(&request)?;
        if let Some(existing) = self.client_keys.get(&key) {
            return Err(TxError::Exists(TxId::Client(*existing)));
        }
        if self.full() {
            return Err(TxError::Full);
        }
        let id = ClientId {
            id: self.next_id(),
            branch,
        };
        let (tx, step) = if is_invite {
            let (tx, step) = InviteClient::start(id, request, from, to, reliable, &timers, now);
            (ClientTx::Invite(tx), step)
        } else {
            let (tx, step) = NonInviteClient::start(id, request, from, to, reliable, &timers, now);
            (ClientTx::NonInvite(tx), step)
        };
        self.client_keys.insert(key.clone(), id);
        self.clients
            .insert(id, Box::new(ClientEntry { key, tx, timers }));
        Ok((id, self.finish(TxId::Client(id), step)))
    }

    /// A timer armed by an [`Effect::Arm`] fired. Stale timers (the
    /// transaction is gone, left the state that armed it, or re-armed the
    /// timer) return no effects.
    pub fn on_timer(&mut self, timer: TimerId, now: Millis) -> Vec<Effect> {
        let timers = self.config.timers;
        let step = match timer.tx() {
            TxId::Client(id) => match self.clients.get_mut(&id).map(|e| &mut **e) {
                Some(ClientEntry {
                    tx: ClientTx::Invite(tx),
                    ..
                }) => tx.on_timer(&timer, now),
                Some(ClientEntry {
                    tx: ClientTx::NonInvite(tx),
                    timers,
                    ..
                }) => tx.on_timer(&timer, timers, now),
                None => return Vec::new(),
            },
            TxId::Server(id) => match self.servers.get_mut(&id).map(|e| &mut e.tx) {
                Some(ServerTx::Invite(tx)) => tx.on_timer(&timer, &timers, now),
                Some(ServerTx::NonInvite(tx)) => tx.on_timer(&timer),
                None => return Vec::new(),
            },
        };
        self.finish(timer.tx(), step)
    }

    /// A [`Effect::Send`] of transaction `id` failed (RFC 3261 17.1.4,
    /// 17.2.4): the transaction terminates, telling the TU with
    /// [`TuEvent::TransportError`] unless it was only absorbing
    /// retransmissions.
    pub fn on_transport_error(&mut self, id: TxId) -> Vec<Effect> {
        let step = match id {
            TxId::Client(c) => match self.clients.get_mut(&c).map(|e| &mut e.tx) {
                Some(ClientTx::Invite(tx)) => tx.on_transport_error(),
                Some(ClientTx::NonInvite(tx)) => tx.on_transport_error(),
                None => return Vec::new(),
            },
            TxId::Server(s) => match self.servers.get_mut(&s).map(|e| &mut e.tx) {
                Some(ServerTx::Invite(tx)) => tx.on_transport_error(),
                Some(ServerTx::NonInvite(tx)) => tx.on_transport_error(),
                None => return Vec::new(),
            },
        };
        self.finish(id, step)
    }

    /// Removes a transaction at once, without effects (the TU gave up on
    /// it, e.g. after Timer C and a CANCEL that went unanswered). Returns
    /// whether it existed; its pending timers become stale.
    pub fn terminate(&mut self, id: impl Into<TxId>) -> bool {
        self.remove(id.into())
    }

    /// The INVITE server transaction a received CANCEL refers to (RFC 3261
    /// 9.2): the one whose key equals the CANCEL's with the method INVITE.
    pub fn find_invite_for_cancel(&self, cancel: &SipMessage) -> Option<ServerId> {
        if cancel.method() != Some(&Method::Cancel) {
            return None;
        }
        let key = ServerKey::for_cancelled_invite(cancel).ok()?;
        let id = *self.server_keys.get(&key)?;
        match self.servers.get(&id)?.tx {
            ServerTx::Invite(_) => Some(id),
            ServerTx::NonInvite(_) => None,
        }
    }

    /// A CANCEL for INVITE client transaction `client` (RFC 3261 9.1: the
    /// request's Request-URI, top Via, Route, From, To, Call-ID and CSeq
    /// number), ready for [`TransactionTable::send_request`] from the same
    /// local address to the same destination. `None` for other transactions. RFC 3261 9.1 says to
    /// send it only once a provisional response arrived
    /// ([`ClientState::Proceeding`]); that choice is the TU's.
    pub fn build_cancel(&self, client: ClientId) -> Option<SipMessage> {
        match &self.clients.get(&client)?.tx {
            ClientTx::Invite(tx) => SipMessage::parse(generate::cancel(tx.request())).ok(),
            ClientTx::NonInvite(_) => None,
        }
    }

    /// The state of a live client transaction (`None` once terminated).
    pub fn client_state(&self, client: ClientId) -> Option<ClientState> {
        Some(match &self.clients.get(&client)?.tx {
            ClientTx::Invite(tx) => tx.state(),
            ClientTx::NonInvite(tx) => tx.state(),
        })
    }

    /// The state of a live server transaction (`None` once terminated).
    pub fn server_state(&self, server: ServerId) -> Option<ServerState> {
        Some(match &self.servers.get(&server)?.tx {
            ServerTx::Invite(tx) => tx.state(),
            ServerTx::NonInvite(tx) => tx.state(),
        })
    }

    /// The request a live client transaction sends.
    pub fn client_request(&self, client: ClientId) -> Option<&SipMessage> {
        Some(match &self.clients.get(&client)?.tx {
            ClientTx::Invite(tx) => tx.request(),
            ClientTx::NonInvite(tx) => tx.request(),
        })
    }

    /// The request that created a live server transaction.
    pub fn server_request(&self, server: ServerId) -> Option<&SipMessage> {
        Some(match &self.servers.get(&server)?.tx {
            ServerTx::Invite(tx) => tx.request(),
            ServerTx::NonInvite(tx) => tx.request(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timers::TimerKind;

    const UAC: &str = "198.51.100.7:5060";
    const NEXT_HOP: &str = "192.0.2.4:5060";
    /// The proxy's two sockets: requests arrive on the second, branches
    /// leave from the first, so a mix-up shows.
    const FIRST: &str = "192.0.2.1:5060";
    const SECOND: &str = "192.0.2.1:5070";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn msg(text: &str) -> SipMessage {
        SipMessage::parse_slice(text.replace('\n', "\r\n").as_bytes()).unwrap()
    }

    fn request(method: &str, via: &str) -> SipMessage {
        msg(&format!(
            "{method} sip:bob@192.0.2.4 SIP/2.0\n\
             Via: SIP/2.0/UDP {via}\n\
             From: <sip:alice@example.com>;tag=a\n\
             To: <sip:bob@example.com>\n\
             Call-ID: c1\n\
             CSeq: 1 {method}\n\
             Content-Length: 0\n\n"
        ))
    }

    fn response(status: &str, method: &str, via: &str) -> String {
        format!(
            "SIP/2.0 {status}\n\
             Via: SIP/2.0/UDP {via}\n\
             From: <sip:alice@example.com>;tag=a\n\
             To: <sip:bob@example.com>;tag=b\n\
             Call-ID: c1\n\
             CSeq: 1 {method}\n\
             Content-Length: 0\n\n"
        )
    }

    /// The `(from, to)` of every send among `effects`.
    fn sends(effects: &[Effect]) -> Vec<(SocketAddr, SocketAddr)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    /// Fires the timer of `kind` armed among `effects`.
    fn fire(
        table: &mut TransactionTable,
        effects: &[Effect],
        kind: TimerKind,
        now: Millis,
    ) -> Vec<Effect> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Arm { timer, .. } if timer.kind() == kind => Some(*timer),
                _ => None,
            })
            .flat_map(|t| table.on_timer(t, now))
            .collect()
    }

    #[test]
    fn server_responses_leave_from_the_socket_the_request_arrived_on() {
        let mut table = TransactionTable::new(Config {
            auto_trying: AutoTrying::Immediate,
            ..Config::default()
        });
        let uac_via = format!("{UAC};branch=z9hG4bKuac");
        let invite = request("INVITE", &uac_via);
        let peer = Peer::for_request(&invite, addr(UAC), addr(SECOND), false);
        let (server, effects) = table.new_server(&invite, peer, Millis(0)).unwrap();
        let from_second = vec![(addr(SECOND), addr(UAC))];
        assert_eq!(sends(&effects), from_second, "automatic 100");
        let busy = response("486 Busy Here", "INVITE", &uac_via);
        let effects = table
            .send_response(server, 486, busy.replace('\n', "\r\n"), Millis(10))
            .unwrap();
        assert_eq!(sends(&effects), from_second, "final response");
        let effects = fire(&mut table, &effects, TimerKind::G, Millis(600));
        assert_eq!(sends(&effects), from_second, "Timer G retransmission");
        let Received::Absorbed { effects, .. } = table.on_received(&invite, Millis(700)) else {
            panic!("INVITE retransmission not absorbed");
        };
        assert_eq!(sends(&effects), from_second, "re-sent on retransmission");

        let options = request("OPTIONS", &format!("{UAC};branch=z9hG4bKopt"));
        let peer = Peer::for_request(&options, addr(UAC), addr(FIRST), false);
        let (server, _) = table.new_server(&options, peer, Millis(0)).unwrap();
        let ok = response("200 OK", "OPTIONS", &format!("{UAC};branch=z9hG4bKopt"));
        let effects = table
            .send_response(server, 200, ok.replace('\n', "\r\n"), Millis(10))
            .unwrap();
        assert_eq!(sends(&effects), vec![(addr(FIRST), addr(UAC))]);
    }

    #[test]
    fn client_requests_retransmissions_acks_and_cancels_leave_from_their_socket() {
        let mut table = TransactionTable::new(Config::default());
        let our_via = format!("{FIRST};branch=z9hG4bKbranch1");
        let (client, effects) = table
            .send_request(
                request("INVITE", &our_via),
                addr(FIRST),
                addr(NEXT_HOP),
                false,
                Millis(0),
            )
            .unwrap();
        let from_first = vec![(addr(FIRST), addr(NEXT_HOP))];
        assert_eq!(sends(&effects), from_first, "the request");
        let effects = fire(&mut table, &effects, TimerKind::A, Millis(500));
        assert_eq!(sends(&effects), from_first, "Timer A retransmission");

        let cancel = table.build_cancel(client).unwrap();
        let (_, effects) = table
            .send_request(cancel, addr(FIRST), addr(NEXT_HOP), false, Millis(600))
            .unwrap();
        assert_eq!(sends(&effects), from_first, "the CANCEL");

        let terminated = msg(&response("487 Request Terminated", "INVITE", &our_via));
        let Received::Response { effects, .. } = table.on_received(&terminated, Millis(700)) else {
            panic!("487 not matched");
        };
        assert_eq!(sends(&effects), from_first, "the ACK of the 487");
        let Received::Absorbed { effects, .. } = table.on_received(&terminated, Millis(800)) else {
            panic!("487 retransmission not absorbed");
        };
        assert_eq!(sends(&effects), from_first, "the ACK re-sent");

        let (_, effects) = table
            .send_request(
                request("OPTIONS", &format!("{SECOND};branch=z9hG4bKbranch2")),
                addr(SECOND),
                addr(NEXT_HOP),
                false,
                Millis(0),
            )
            .unwrap();
        assert_eq!(sends(&effects), vec![(addr(SECOND), addr(NEXT_HOP))]);
        let effects = fire(&mut table, &effects, TimerKind::E, Millis(500));
        assert_eq!(
            sends(&effects),
            vec![(addr(SECOND), addr(NEXT_HOP))],
            "Timer E retransmission"
        );
    }
}
