//! The route runner: the one place the proxy invokes a script route.
//!
//! Every route kind (request, reply, onreply, branch, failure, branch
//! failure, onsend, a `t_continue` route, and a suspended transaction's
//! timeout, which runs the failure route) goes through [`run`]. It applies
//! the failure policy of the kind, logs a failure once (tenant,
//! `script:line`, cause, peer), and turns what the script asked for into
//! typed [`Action`]s, which callers match exhaustively. It names the route
//! type in the message first: a KSR function asking for what the type does
//! not allow (a stateless forward in a failure route, a relay in a reply
//! route) is refused at the call, as Kamailio refuses functions outside
//! the route types they are allowed in: the script gets -1 and the log
//! names `script:line` (`kemibox_kemi::RouteType::allows`).
//!
//! # Failure policy
//!
//! A route fails when it ends in a Lua error, runs out of fuel, passes
//! its deadline, runs out of memory, traps, is throttled, its function is
//! missing, or its script version cannot be instantiated. Whatever the
//! cause, the kind decides what happens instead ([`fallback`]):
//!
//! | route kind | on failure |
//! |---|---|
//! | request, `t_continue` | the request gets the configured error reply (not an ACK) |
//! | reply, onreply | the reply goes on as received: a reply is never lost to a script |
//! | branch | that branch is not sent |
//! | failure, branch failure | as if no such route was armed (the best reply goes upstream) |
//! | onsend | the request is sent |

use std::net::SocketAddr;

pub use kemibox_kemi::RouteType;
use kemibox_kemi::{CallbackKind, Event, Message, TmFunction};
use kemibox_sandbox::{Invocation, Outcome, Script};

/// The entry route, run for every new request.
pub const REQUEST_ROUTE: &str = "ksr_request_route";

/// The route run for every reply, when the script defines it.
pub const REPLY_ROUTE: &str = "ksr_reply_route";

/// What the proxy does when a route of a kind fails (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Answer the request with the configured error reply.
    ErrorReply,
    /// Go on as if the route had not run.
    Proceed,
    /// Do not send the branch.
    DropBranch,
}

/// What a route asked the proxy to do, in the order it asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `KSR.tm.t_on_*`: arm a transaction route.
    Arm(CallbackKind, String),
    /// `KSR.tm.t_newtran`: create the server transaction.
    NewTransaction,
    /// `KSR.tm.t_relay`: relay statefully.
    Relay,
    /// `KSR.forward` / `KSR.forward_uri`: forward statelessly to
    /// `destination` ($du, else the R-URI, when `None`).
    Forward { destination: Option<String> },
    /// `KSR.sl.*` / `KSR.tm.t_reply`: answer the request.
    Reply {
        code: u16,
        reason: String,
        headers: Vec<String>,
        /// Through the transaction (created if needed), not statelessly.
        stateful: bool,
    },
    /// `KSR.tmx.t_suspend`: park the transaction under these ids.
    Suspend { index: u32, label: u32 },
    /// `KSR.tmx.t_continue`: resume the transaction suspended under these
    /// ids with `route`.
    Continue {
        index: u32,
        label: u32,
        route: String,
    },
}

impl Action {
    /// The action an event stands for; `None` for events that are not
    /// requests to the proxy (logs, header edits, `$var` writes, exit and
    /// drop, which mark the message).
    fn of(event: Event) -> Option<Action> {
        Some(match event {
            Event::Callback { kind, function } => Action::Arm(kind, function),
            Event::Tm {
                function: TmFunction::Relay,
                ..
            } => Action::Relay,
            Event::Tm {
                function: TmFunction::NewTran,
                ..
            } => Action::NewTransaction,
            Event::Forward { destination } => Action::Forward { destination },
            Event::Reply {
                code,
                reason,
                headers,
                stateful,
            } => Action::Reply {
                code: u16::try_from(code).unwrap_or(500),
                reason,
                headers,
                stateful,
            },
            Event::Suspend { index, label } => Action::Suspend { index, label },
            Event::Continue {
                index,
                label,
                route,
            } => Action::Continue {
                index,
                label,
                route,
            },
            Event::Log { .. }
            | Event::HeaderAdded { .. }
            | Event::HeaderRemoved { .. }
            | Event::PvSet { .. }
            | Event::Exit
            | Event::Drop => return None,
        })
    }
}

/// What happens instead when a route of type `kind` fails.
pub fn fallback(kind: RouteType) -> Fallback {
    match kind {
        RouteType::Request | RouteType::Continue => Fallback::ErrorReply,
        RouteType::Branch => Fallback::DropBranch,
        RouteType::Reply
        | RouteType::OnReply
        | RouteType::Failure
        | RouteType::BranchFailure
        | RouteType::OnSend => Fallback::Proceed,
    }
}

/// What a route that ran to its end left.
#[derive(Debug)]
pub struct Routed {
    /// The message as the route left it (edits, flags, `drop`).
    pub message: Message,
    /// What it asked for, in order (the KSR functions refuse what the
    /// route type does not allow: `kemibox_kemi::RouteType::allows`).
    pub actions: Vec<Action>,
}

/// How a route invocation went. Returned by value and taken apart at
/// once: boxing the large variant would cost an allocation per route.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "taken apart at once by the caller; a box would allocate per route"
)]
pub enum Ran {
    /// The route ran to its end.
    Done(Routed),
    /// It did not (logged): do what the kind's [`Fallback`] says.
    Failed(Fallback),
}

/// Run `function` of `script` as a route of `kind` on `message`.
pub async fn run(script: &Script, kind: RouteType, function: &str, mut message: Message) -> Ran {
    message.route = kind;
    let peer = match kind {
        RouteType::OnSend => message.sending_to.map(|(_, a)| a),
        _ => Some(message.source),
    };
    let mut invocation = match script.invoke(function, Some(message)).await {
        Ok(invocation) => invocation,
        Err(failure) => {
            tracing::error!(
                tenant = %failure.tenant,
                route = kind.name(),
                function,
                peer = ?peer,
                error = %failure,
                "cannot run the route: its script version cannot be instantiated"
            );
            return Ran::Failed(fallback(kind));
        }
    };
    let message = invocation
        .message
        .take()
        .filter(|_| invocation.outcome.is_ok());
    let Some(message) = message else {
        log_failure(script, kind, &invocation, peer);
        return Ran::Failed(fallback(kind));
    };
    let actions = std::mem::take(&mut invocation.events)
        .into_iter()
        .filter_map(Action::of)
        .collect();
    Ran::Done(Routed { message, actions })
}

/// Log a failed route once, with the tenant, `script:line`, the version,
/// the route kind, the cause and the peer. Throttled invocations are not
/// logged one by one: the pool logs the throttling once a second.
fn log_failure(
    script: &Script,
    kind: RouteType,
    invocation: &Invocation,
    peer: Option<SocketAddr>,
) {
    if invocation.outcome == Outcome::Throttled {
        return;
    }
    let tenant = script.tenant();
    let name = &tenant.spec.script_name;
    let location = invocation.location(name).unwrap_or_else(|| name.clone());
    let cause = match &invocation.outcome {
        Outcome::LuaError { message, .. } => message.clone(),
        Outcome::OutOfMemory { message }
        | Outcome::NotFound { message }
        | Outcome::Trap { message } => message.clone(),
        other => other.label().to_string(),
    };
    tracing::error!(
        tenant = %invocation.tenant,
        function = %invocation.function,
        route = kind.name(),
        outcome = invocation.outcome.label(),
        version = tenant.version,
        fuel_used = invocation.fuel_used,
        peer = ?peer,
        "{location}: {}",
        // Lua's message often starts with the location already.
        cause
            .strip_prefix(location.as_str())
            .and_then(|c| c.strip_prefix(": "))
            .unwrap_or(&cause)
    );
}
