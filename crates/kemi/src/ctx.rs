//! State the KEMI modules work on: per instance (script variables, script
//! flags) and per message (the SIP message and its pending edits, flags,
//! AVPs, destination URI), plus the events a route produced.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use kemibox_sip::{Edits, SipMessage};
use serde::Serialize;

use crate::bindings::kemibox::ksr::types::Xval;

/// Log levels of `KSR.dbg` ... `KSR.crit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Dbg,
    Info,
    Notice,
    Warn,
    Err,
    Crit,
}

impl Level {
    /// Kamailio's `KSR.log` level names; anything unknown is `err`.
    pub fn from_name(name: &str) -> Level {
        match name {
            "dbg" | "debug" => Level::Dbg,
            "info" => Level::Info,
            "notice" => Level::Notice,
            "warn" | "warning" => Level::Warn,
            "crit" => Level::Crit,
            _ => Level::Err,
        }
    }
}

/// Something a route did that the caller acts on (the proxy) or shows
/// (`kemibox route`). Serialized as one JSON object per event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A log line written by the script.
    Log { level: Level, message: String },
    /// A reply the proxy sends for the request.
    Reply {
        code: i32,
        reason: String,
        stateful: bool,
        headers: Vec<String>,
    },
    /// A header line added to the forwarded message.
    HeaderAdded { header: String, position: String },
    /// Headers removed from the forwarded message.
    HeaderRemoved { name: String, count: usize },
    /// A pseudo-variable written by the script.
    PvSet { name: String, value: Option<String> },
    /// A transaction route armed for later (`KSR.tm.t_on_*`).
    Callback {
        kind: CallbackKind,
        function: String,
    },
    /// A transaction function called (`t_relay`, `t_newtran`).
    Tm {
        function: TmFunction,
        destination: Option<String>,
    },
    /// `KSR.tmx.t_suspend()`: the transaction waits under these ids.
    Suspend { index: u32, label: u32 },
    /// `KSR.tmx.t_continue()`: resume a suspended transaction with `route`.
    Continue {
        index: u32,
        label: u32,
        route: String,
    },
    /// A stateless forward (`KSR.forward`, `KSR.forward_uri`) to
    /// `destination` ($du, else the R-URI, for `KSR.forward`).
    Forward { destination: Option<String> },
    /// `KSR.x.exit()`.
    Exit,
    /// `KSR.x.drop()` or `KSR.set_drop()`.
    Drop,
}

/// The transaction routes a script arms with `KSR.tm.t_on_*`; serialized
/// as `branch`, `reply`, `failure`, `branch-failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallbackKind {
    /// `t_on_branch`: runs for each branch before it is sent.
    Branch,
    /// `t_on_reply`: runs for each reply of the transaction.
    Reply,
    /// `t_on_failure`: runs when the transaction ends with a negative reply.
    Failure,
    /// `t_on_branch_failure`: runs for each branch ending with a negative
    /// reply.
    BranchFailure,
}

impl CallbackKind {
    /// The KSR function that arms it (`t_on_branch_failure`).
    pub fn arming_function(self) -> &'static str {
        match self {
            CallbackKind::Branch => "t_on_branch",
            CallbackKind::Reply => "t_on_reply",
            CallbackKind::Failure => "t_on_failure",
            CallbackKind::BranchFailure => "t_on_branch_failure",
        }
    }
}

/// The `KSR.tm` functions that ask the proxy for a transaction; serialized
/// by their KSR names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TmFunction {
    /// `t_relay`: relay the request statefully.
    #[serde(rename = "t_relay")]
    Relay,
    /// `t_newtran`: create the server transaction.
    #[serde(rename = "t_newtran")]
    NewTran,
}

/// Transport a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// What counts as "myself" for `is_myself*`: the proxy's sockets and domains.
#[derive(Debug, Clone, Default)]
pub struct Myself {
    pub addresses: Vec<SocketAddr>,
    pub domains: Vec<String>,
}

impl Myself {
    /// True when `host[:port]` names one of our sockets or domains. A missing
    /// port matches any of our ports on that host (5060 is not assumed).
    pub fn matches(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if self.domains.iter().any(|d| d.eq_ignore_ascii_case(host)) {
            return true;
        }
        let Ok(ip) = host.parse::<IpAddr>() else {
            return false;
        };
        self.addresses
            .iter()
            .any(|a| a.ip() == ip && port.is_none_or(|p| p == a.port()))
    }

    pub fn has_ip(&self, ip: IpAddr) -> bool {
        self.addresses.iter().any(|a| a.ip() == ip)
    }
}

/// A pseudo-variable value: KEMI values are integers or strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PvValue {
    Int(i32),
    Str(String),
}

impl PvValue {
    pub fn to_xval(&self) -> Xval {
        match self {
            PvValue::Int(i) => Xval::Int(*i),
            PvValue::Str(s) => Xval::Str(s.clone()),
        }
    }

    pub fn as_text(&self) -> String {
        match self {
            PvValue::Int(i) => i.to_string(),
            PvValue::Str(s) => s.clone(),
        }
    }
}

/// Transaction facts the proxy sets before a route runs, for the tm
/// functions to read.
#[derive(Debug, Clone, Default)]
pub struct TmInfo {
    /// The status of the reply being routed, or in a failure route the
    /// winning failure (408 for a timeout).
    pub status: Option<u16>,
    /// The transaction was canceled by the caller.
    pub canceled: bool,
    /// In a failure route: the failed branch timed out.
    pub branch_timeout: bool,
    /// In a failure route: some branch timed out.
    pub any_timeout: bool,
    /// Routes armed on the transaction before this route ran.
    pub armed: Vec<CallbackKind>,
    /// The transaction outlived its maximum lifetime (`t_is_expired`).
    pub expired: bool,
    /// `$T(id_index)` / `$T(id_label)` once `t_suspend` ran.
    pub suspended: Option<(u32, u32)>,
}

/// A branch added by `KSR.corex.append_branch*`: `t_relay` sends one
/// request per branch besides the R-URI's, in parallel.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendedBranch {
    /// The branch's Request-URI.
    pub uri: String,
    /// Its destination URI ($du at the time of `append_branch`), if any.
    pub dst_uri: Option<String>,
    /// Its q-value as given (`"0.5"`), kept for `$branch(q)`-style use.
    pub q: Option<String>,
    /// Path (RFC 3327) the branch must follow: Route headers the proxy
    /// adds to this branch's request (from a registered contact's Path).
    pub path: Vec<String>,
}

/// Final-response timers the script set for this transaction's branches
/// (`KSR.tm.t_set_fr`); `None` keeps the proxy's default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrTimers {
    /// No final response after a provisional one to an INVITE (Kamailio's
    /// fr_inv_timeout, RFC 3261 Timer C).
    pub fr_inv: Option<std::time::Duration>,
    /// No response at all (Kamailio's fr_timeout, Timer B/F).
    pub fr: Option<std::time::Duration>,
}

/// The message being routed and everything the script set on it.
#[derive(Debug, Clone)]
pub struct Message {
    pub sip: SipMessage,
    pub edits: Edits,
    pub source: SocketAddr,
    pub local: SocketAddr,
    pub transport: Transport,
    /// Message/transaction flags (`KSR.setflag`).
    pub flags: u32,
    /// Branch flags by branch index (`KSR.setbflag`, `KSR.setbiflag`).
    pub branch_flags: Vec<u32>,
    /// `$avp(name)`: a stack of values per name, newest first.
    pub avps: HashMap<String, Vec<PvValue>>,
    /// `$du`.
    pub dst_uri: Option<String>,
    /// Header lines for the proxy's own reply (`KSR.hdr.append_to_reply`).
    pub reply_headers: Vec<String>,
    pub drop: bool,
    pub force_rport: bool,
    pub add_local_rport: bool,
    pub reply_no_connect: bool,
    pub reply_close: bool,
    pub forward_no_connect: bool,
    pub forward_close: bool,
    /// What the transaction layer knows (see [`TmInfo`]).
    pub tm: TmInfo,
    /// The route type the script runs in: what it may ask the proxy for.
    pub route: crate::RouteType,
    /// Extended flags 0..63 (`KSR.corex.setxflag`).
    pub xflags: u64,
    /// The local socket the proxy should send this message from
    /// (`KSR.corex.set_send_socket`): one of `Myself::addresses`, with the
    /// transport asked for. `None`: the proxy's usual choice.
    pub send_socket: Option<(Transport, SocketAddr)>,
    /// Record-Route state of `KSR.rr` for this message.
    pub rr: RecordRouteState,
    /// Extra branches for `t_relay` (`KSR.corex.append_branch*`).
    pub branches: Vec<AppendedBranch>,
    /// The Path (RFC 3327) of the R-URI's branch, from the registered
    /// contact `KSR.registrar.lookup` chose: the proxy sends that branch
    /// with these as Route headers (appended branches carry their own).
    pub path: Vec<String>,
    /// Timers set by `KSR.tm.t_set_fr`.
    pub fr_timers: FrTimers,
    /// Where the message is about to be sent, while `ksr_onsend_route`
    /// runs (`$snd(ip)`, `$snd(port)`, `$snd(proto)`).
    pub sending_to: Option<(Transport, SocketAddr)>,
    /// `KSR.nathelper.fix_nated_register` ran: `KSR.registrar.save` keeps
    /// the source as the bindings' received address even when the REGISTER
    /// does not look behind NAT (the script knows better, e.g. after its
    /// own `nat_uac_test`).
    pub force_received: bool,
    /// What `KSR.auth`/`KSR.auth_db` checks found (the credentials header
    /// for `consume_credentials`, a stale nonce for the next challenge).
    pub(crate) auth: crate::digest::AuthState,
    /// The acc module's extra values, captured as a route on the request
    /// ended with an accounting flag set (see `crate::Acc`).
    pub acc: Option<crate::AccCaptured>,
}

/// What `KSR.rr` did to a message: the Record-Route it added (Kamailio's
/// "RR added" flag: a second attempt fails), parameters buffered by
/// `add_rr_param` before it, and the Route entry of this proxy that
/// `loose_route` consumed (for `check_route_param` and `is_direction`).
#[derive(Debug, Clone, Default)]
pub struct RecordRouteState {
    /// A Record-Route was added (`record_route*`); later attempts fail.
    pub added: bool,
    /// Parameters from `add_rr_param` (`;name=value...`), waiting for a
    /// `record_route` or already in the Record-Route added.
    pub params: String,
    /// How to redo the Record-Route(s) added, for `add_rr_param` after
    /// `record_route` and for `remove_record_route`.
    pub inserted: Option<InsertedRecordRoute>,
    /// The URI of this proxy's Route entry `loose_route` removed.
    pub routed: Option<String>,
}

/// Record-Route header values a `record_route*` function inserted, with the
/// edits as they were just before and just after, so the insertion can be
/// redone (new parameters) or undone while nothing else changed since.
#[derive(Debug, Clone)]
pub struct InsertedRecordRoute {
    /// The edits before the insertion.
    pub before: Edits,
    /// The edits right after the last insertion (to detect later changes).
    pub after: Edits,
    /// The URIs inserted, without the `add_rr_param` parameters.
    pub uris: Vec<String>,
    /// Whether `add_rr_param` parameters go into these (not for the preset
    /// functions, as in Kamailio).
    pub takes_params: bool,
}

impl Message {
    pub fn new(
        sip: SipMessage,
        source: SocketAddr,
        local: SocketAddr,
        transport: Transport,
    ) -> Message {
        Message {
            sip,
            edits: Edits::new(),
            source,
            local,
            transport,
            flags: 0,
            branch_flags: vec![0],
            avps: HashMap::new(),
            dst_uri: None,
            reply_headers: Vec::new(),
            drop: false,
            force_rport: false,
            add_local_rport: false,
            reply_no_connect: false,
            reply_close: false,
            forward_no_connect: false,
            forward_close: false,
            tm: TmInfo::default(),
            route: crate::RouteType::default(),
            xflags: 0,
            send_socket: None,
            rr: RecordRouteState::default(),
            branches: Vec::new(),
            path: Vec::new(),
            fr_timers: FrTimers::default(),
            sending_to: None,
            force_received: false,
            auth: Default::default(),
            acc: None,
        }
    }

    /// The current Request-URI: rewritten by the script, or as received.
    pub fn ruri(&self) -> Option<String> {
        self.edits.ruri(&self.sip).map(str::to_string)
    }
}

/// Store data for one sandbox instance.
pub struct Ctx {
    /// The tenant the instance runs for: on every log line, and the key
    /// of its stored registrations and subscribers.
    pub tenant: crate::TenantId,
    pub myself: Arc<Myself>,
    /// `$var(name)`: per instance, kept across messages (as Kamailio keeps
    /// them per worker process).
    pub vars: HashMap<String, PvValue>,
    /// Script flags (`KSR.setsflag`), per instance.
    pub sflags: u32,
    /// The message being routed; `None` while the script's top level runs.
    pub message: Option<Message>,
    /// What the current invocation did.
    pub events: Vec<Event>,
    /// Keep log lines in `events` too (for `kemibox route`).
    pub record_logs: bool,
    /// Set by `KSR.x.exit()` / `KSR.x.drop()`.
    pub exited: bool,
    /// The tenant's stores (location, subscribers) and their settings.
    pub services: Arc<crate::Services>,
    /// Where `t_relay` may send (`None`: anywhere).
    pub relay_to: Option<Arc<crate::RelayTo>>,
    /// The tenant's module state, shared by all its instances.
    pub state: Arc<crate::TenantState>,
    /// A script error a KSR function recorded and the guest has not taken
    /// yet (see [`Ctx::script_error`]).
    script_error: Option<String>,
    /// `KSR.ipops` DNS results (`$dns(...)`, `$srvquery(...)`,
    /// `$naptrquery(...)`), per instance as Kamailio keeps them per worker.
    pub(crate) dns: crate::modules::DnsContainers,
    /// `KSR.htable.sht_iterator_*`: per instance, as Kamailio's are per
    /// process.
    pub(crate) htable_iterators: crate::modules::HtableIterators,
}

impl Ctx {
    pub fn new(
        tenant: crate::TenantId,
        myself: Arc<Myself>,
        services: Arc<crate::Services>,
    ) -> Ctx {
        Ctx {
            services,
            tenant,
            myself,
            vars: HashMap::new(),
            sflags: 0,
            message: None,
            events: Vec::new(),
            record_logs: false,
            exited: false,
            relay_to: None,
            state: Arc::default(),
            script_error: None,
            dns: Default::default(),
            htable_iterators: Default::default(),
        }
    }

    /// Start routing `message`: clears the previous invocation's state.
    pub fn begin(&mut self, message: Option<Message>) {
        self.message = message;
        self.events.clear();
        self.exited = false;
        self.script_error = None;
    }

    /// End of an invocation: a script error the guest did not take (a
    /// function whose result does not look like a failure) is logged
    /// without its script line.
    pub fn end(&mut self) {
        if let Some(error) = self.script_error.take() {
            self.log(Level::Err, &error);
        }
    }

    /// The recorded script error not taken yet.
    #[cfg(test)]
    pub(crate) fn pending_script_error(&self) -> Option<&str> {
        self.script_error.as_deref()
    }

    /// The recorded script error, for the guest to log with the script line
    /// of the call that made it.
    pub fn take_script_error(&mut self) -> Option<String> {
        self.script_error.take()
    }

    /// End routing: the message as the route left it, with what the
    /// acc module captures from it (its extra values, when an accounting
    /// flag is set).
    /// Async: an extra column may read a table kept in Redis.
    pub async fn take_message(&mut self) -> Option<Message> {
        crate::modules::acc_capture(self).await;
        self.message.take()
    }

    /// Write a script log line through `tracing`, naming the tenant.
    pub fn log(&mut self, level: Level, msg: &str) {
        let text = msg.trim_end_matches(['\r', '\n']);
        let tenant = self.tenant.as_str();
        match level {
            Level::Dbg => tracing::debug!(target: "kemibox::script", tenant, "{text}"),
            Level::Info | Level::Notice => {
                tracing::info!(target: "kemibox::script", tenant, "{text}")
            }
            Level::Warn => tracing::warn!(target: "kemibox::script", tenant, "{text}"),
            Level::Err | Level::Crit => {
                tracing::error!(target: "kemibox::script", tenant, "{text}")
            }
        }
        if self.record_logs {
            self.events.push(Event::Log {
                level,
                message: text.to_string(),
            });
        }
    }

    /// Whether the route type of the message being routed does not allow
    /// `action` (see [`crate::RouteType::allows`]); a function asking for
    /// it returns [`crate::REFUSED`].
    pub fn refuses(&self, action: crate::ActionKind) -> bool {
        self.message
            .as_ref()
            .is_some_and(|m| !m.route.allows(action))
    }

    /// A KSR function misused by the script (unknown table, bad regex,
    /// malformed address): the caller returns its negative result, and the
    /// guest, seeing that result, takes this message and logs it at error
    /// level as `script:LINE: function: what`, so the line to fix is named.
    /// A second error before the first is taken logs the first at once.
    pub fn script_error(&mut self, function: &str, what: impl std::fmt::Display) {
        if let Some(earlier) = self.script_error.replace(format!("{function}: {what}")) {
            self.log(Level::Err, &earlier);
        }
    }

    /// [`Ctx::script_error`] for a function whose result cannot show the
    /// failure (it returns nothing, or a default in place of the value):
    /// the guest would never take the message, so it is logged at once,
    /// without the script line, in the order the script caused it.
    pub fn script_error_now(&mut self, function: &str, what: impl std::fmt::Display) {
        self.log(Level::Err, &format!("{function}: {what}"));
    }
}
