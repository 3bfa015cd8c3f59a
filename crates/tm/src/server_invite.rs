//! The INVITE server transaction (RFC 3261 17.2.1, figure 7).

use std::time::Duration;

use bytes::Bytes;
use kemibox_sip::{Received as ViaReceived, SipMessage, build_reply};

use crate::effects::{Effect, ServerId, TuEvent, TxId};
use crate::error::TxError;
use crate::machine::{ServerState, Step};
use crate::peer::Peer;
use crate::timers::{Deadlines, Millis, TimerId, TimerKind, Timers};

/// Whether the INVITE server transaction sends `100 Trying` itself.
///
/// RFC 3261 17.2.1 wants a 100 unless the TU answers within 200 ms;
/// Kamailio's `t_relay` sends it at once. Both, and leaving it to the TU,
/// are possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoTrying {
    /// Never: the TU sends its own provisional responses.
    Off,
    /// As soon as the transaction is created.
    Immediate,
    /// After this delay, unless the TU has sent a response by then
    /// (RFC 3261's 200 ms is the default).
    After(Duration),
}

impl Default for AutoTrying {
    fn default() -> AutoTrying {
        AutoTrying::After(Duration::from_millis(200))
    }
}

/// One INVITE received by the proxy.
///
/// Proceeding: INVITE retransmissions re-send the last provisional
/// response. A 2xx from the TU terminates the transaction at once (the
/// proxy passes 2xx retransmissions and the ACK on without a
/// transaction). A 3xx-6xx moves to Completed: the response is re-sent on
/// Timer G (unreliable only, doubling up to T2) and on every INVITE
/// retransmission until the ACK (Confirmed) or Timer H (ACK timeout).
/// Confirmed absorbs ACK retransmissions until Timer I.
#[derive(Debug)]
pub(crate) struct InviteServer {
    id: ServerId,
    state: ServerState,
    request: SipMessage,
    peer: Peer,
    last_provisional: Option<Bytes>,
    final_response: Option<Bytes>,
    final_to_tag: Option<Box<str>>,
    responded: bool,
    g_interval: Duration,
    deadlines: Deadlines,
}

impl InviteServer {
    /// Enters Proceeding, sending or scheduling the automatic 100.
    pub(crate) fn start(
        id: ServerId,
        request: SipMessage,
        peer: Peer,
        auto_trying: AutoTrying,
        timers: &Timers,
        now: Millis,
    ) -> (InviteServer, Step) {
        let mut tx = InviteServer {
            id,
            state: ServerState::Proceeding,
            request,
            peer,
            last_provisional: None,
            final_response: None,
            final_to_tag: None,
            responded: false,
            g_interval: timers.g(),
            deadlines: Deadlines::default(),
        };
        let mut step = Step::new();
        match auto_trying {
            AutoTrying::Off => {}
            AutoTrying::Immediate => step.effects.extend(tx.send_trying()),
            AutoTrying::After(d) => step.push(tx.arm(TimerKind::Trying, now, d)),
        }
        (tx, step)
    }

    pub(crate) fn state(&self) -> ServerState {
        self.state
    }

    pub(crate) fn request(&self) -> &SipMessage {
        &self.request
    }

    /// The To tag of the final non-2xx response, which the ACK must carry
    /// (checked for legacy, non-RFC 3261 matching).
    pub(crate) fn final_to_tag(&self) -> Option<&str> {
        self.final_to_tag.as_deref()
    }

    fn send(&self, bytes: Bytes) -> Effect {
        Effect::Send {
            from: self.peer.local,
            to: self.peer.reply_to,
            bytes,
            reliable: self.peer.reliable,
        }
    }

    fn arm(&mut self, kind: TimerKind, now: Millis, after: Duration) -> Effect {
        self.deadlines.arm(TxId::Server(self.id), kind, now, after)
    }

    /// Builds, records and sends the `100 Trying` (nothing if it cannot be
    /// built from the request, which the proxy validated anyway).
    fn send_trying(&mut self) -> Option<Effect> {
        let ip = self.peer.source.ip().to_string();
        let received = ViaReceived {
            ip: &ip,
            port: self.peer.source.port(),
            force_rport: false,
        };
        let bytes =
            Bytes::from(build_reply(&self.request, 100, "Trying", None, Some(received), &[]).ok()?);
        self.responded = true;
        self.last_provisional = Some(bytes.clone());
        Some(self.send(bytes))
    }

    /// A retransmission of the INVITE arrived.
    pub(crate) fn on_retransmission(&mut self) -> Step {
        let mut step = Step::new();
        let again = match self.state {
            ServerState::Proceeding => self.last_provisional.clone(),
            ServerState::Completed => self.final_response.clone(),
            ServerState::Trying | ServerState::Confirmed => None,
        };
        if let Some(bytes) = again {
            step.push(self.send(bytes));
        }
        step
    }

    /// The ACK of the final response arrived (or a retransmission of it).
    pub(crate) fn on_ack(&mut self, timers: &Timers, now: Millis) -> Step {
        let mut step = Step::new();
        if self.state == ServerState::Completed {
            self.state = ServerState::Confirmed;
            self.deadlines = Deadlines::default();
            let i = timers.i(self.peer.reliable);
            if i.is_zero() {
                return step.terminate();
            }
            step.push(self.arm(TimerKind::I, now, i));
        }
        step
    }

    /// The TU sends a response.
    pub(crate) fn send_response(
        &mut self,
        status: u16,
        bytes: Bytes,
        timers: &Timers,
        now: Millis,
    ) -> Result<Step, TxError> {
        if self.state != ServerState::Proceeding {
            return Err(TxError::FinalSent);
        }
        self.responded = true;
        let mut step = Step::new();
        step.push(self.send(bytes.clone()));
        match status {
            100..=199 => {
                self.last_provisional = Some(bytes);
                Ok(step)
            }
            200..=299 => Ok(step.terminate()),
            _ => {
                self.state = ServerState::Completed;
                self.deadlines = Deadlines::default();
                self.final_to_tag = SipMessage::parse(bytes.clone())
                    .ok()
                    .and_then(|m| m.to().and_then(|t| t.tag().map(Box::from)));
                self.final_response = Some(bytes);
                if !self.peer.reliable {
                    self.g_interval = timers.g();
                    step.push(self.arm(TimerKind::G, now, self.g_interval));
                }
                step.push(self.arm(TimerKind::H, now, timers.h()));
                Ok(step)
            }
        }
    }

    /// One of this transaction's timers fired.
    pub(crate) fn on_timer(&mut self, timer: &TimerId, timers: &Timers, now: Millis) -> Step {
        let mut step = Step::new();
        if !self.deadlines.fire(timer) {
            return step;
        }
        match (timer.kind(), self.state) {
            (TimerKind::Trying, ServerState::Proceeding) if !self.responded => {
                step.effects.extend(self.send_trying());
                step
            }
            (TimerKind::G, ServerState::Completed) => {
                if let Some(bytes) = self.final_response.clone() {
                    step.push(self.send(bytes));
                }
                self.g_interval = self.g_interval.saturating_mul(2).min(timers.t2);
                step.push(self.arm(TimerKind::G, now, self.g_interval));
                step
            }
            (TimerKind::H, ServerState::Completed) => {
                step.push(Effect::Tu(TuEvent::AckTimeout { server: self.id }));
                step.terminate()
            }
            (TimerKind::I, ServerState::Confirmed) => step.terminate(),
            _ => step,
        }
    }

    /// The transport failed to send a response (17.2.4).
    pub(crate) fn on_transport_error(&mut self) -> Step {
        let mut step = Step::new();
        step.push(Effect::Tu(TuEvent::TransportError {
            id: TxId::Server(self.id),
        }));
        step.terminate()
    }
}
