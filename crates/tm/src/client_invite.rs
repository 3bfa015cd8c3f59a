//! The INVITE client transaction (RFC 3261 17.1.1, figure 5).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use kemibox_sip::SipMessage;

use crate::effects::{ClientId, Effect, TuEvent, TxId};
use crate::generate;
use crate::machine::{ClientState, ResponseStep, Step};
use crate::timers::{Deadlines, Millis, TimerId, TimerKind, Timers};

/// One INVITE sent on by the proxy.
///
/// Calling: the request is retransmitted on Timer A (unreliable transports
/// only, doubling without cap) until a response or Timer B. Proceeding: no
/// retransmissions and no Timer B (the proxy's Timer C limits the wait).
/// Completed (after a 3xx-6xx): the ACK is sent and re-sent for every
/// retransmission of the final response until Timer D. A 2xx terminates
/// the transaction at once: its retransmissions and the ACK are end to end
/// and pass through the proxy without a transaction (17.1.1.2, 16.7).
#[derive(Debug)]
pub(crate) struct InviteClient {
    id: ClientId,
    state: ClientState,
    request: SipMessage,
    /// Our address the request (and its retransmissions, and the ACK of a
    /// non-2xx) is sent from.
    from: SocketAddr,
    to: SocketAddr,
    reliable: bool,
    a_interval: Duration,
    ack: Option<Bytes>,
    deadlines: Deadlines,
}

impl InviteClient {
    /// Sends the request and arms A (unreliable), B and C.
    pub(crate) fn start(
        id: ClientId,
        request: SipMessage,
        from: SocketAddr,
        to: SocketAddr,
        reliable: bool,
        timers: &Timers,
        now: Millis,
    ) -> (InviteClient, Step) {
        let mut tx = InviteClient {
            id,
            state: ClientState::Calling,
            request,
            from,
            to,
            reliable,
            a_interval: timers.a(),
            ack: None,
            deadlines: Deadlines::default(),
        };
        let mut step = Step::new();
        step.push(tx.send(tx.request.raw_bytes().clone()));
        if !reliable {
            step.push(tx.arm(TimerKind::A, now, timers.a()));
        }
        step.push(tx.arm(TimerKind::B, now, timers.b()));
        if let Some(c) = timers.c {
            step.push(tx.arm(TimerKind::C, now, c));
        }
        (tx, step)
    }

    pub(crate) fn state(&self) -> ClientState {
        self.state
    }

    pub(crate) fn request(&self) -> &SipMessage {
        &self.request
    }

    fn send(&self, bytes: Bytes) -> Effect {
        Effect::Send {
            from: self.from,
            to: self.to,
            bytes,
            reliable: self.reliable,
        }
    }

    fn arm(&mut self, kind: TimerKind, now: Millis, after: Duration) -> Effect {
        self.deadlines.arm(TxId::Client(self.id), kind, now, after)
    }

    /// A response matched this transaction.
    pub(crate) fn on_response(
        &mut self,
        response: &SipMessage,
        status: u16,
        timers: &Timers,
        now: Millis,
    ) -> ResponseStep {
        let mut step = Step::new();
        match (self.state, status) {
            (ClientState::Completed, 300..) => {
                // A retransmission of the final response: ACK it again.
                if let Some(ack) = &self.ack {
                    step.push(self.send(ack.clone()));
                }
                ResponseStep { to_tu: false, step }
            }
            (ClientState::Completed, _) => ResponseStep { to_tu: false, step },
            (_, 100..=199) => {
                if self.state == ClientState::Calling {
                    self.state = ClientState::Proceeding;
                    self.deadlines.disarm(TimerKind::A);
                    self.deadlines.disarm(TimerKind::B);
                }
                // RFC 3261 16.7 step 2: any provisional but 100 restarts C.
                if let (Some(c), 101..) = (timers.c, status) {
                    step.push(self.arm(TimerKind::C, now, c));
                }
                ResponseStep { to_tu: true, step }
            }
            (_, 200..=299) => ResponseStep {
                to_tu: true,
                step: step.terminate(),
            },
            (_, _) => {
                self.state = ClientState::Completed;
                self.deadlines = Deadlines::default();
                let ack = generate::ack(&self.request, response);
                step.push(self.send(ack.clone()));
                self.ack = Some(ack);
                let d = timers.d(self.reliable);
                if d.is_zero() {
                    step = step.terminate();
                } else {
                    step.push(self.arm(TimerKind::D, now, d));
                }
                ResponseStep { to_tu: true, step }
            }
        }
    }

    /// One of this transaction's timers fired.
    pub(crate) fn on_timer(&mut self, timer: &TimerId, now: Millis) -> Step {
        let mut step = Step::new();
        if !self.deadlines.fire(timer) {
            return step;
        }
        match timer.kind() {
            TimerKind::A if self.state == ClientState::Calling => {
                step.push(self.send(self.request.raw_bytes().clone()));
                self.a_interval = self.a_interval.saturating_mul(2);
                step.push(self.arm(TimerKind::A, now, self.a_interval));
                step
            }
            TimerKind::B if self.state == ClientState::Calling => {
                step.push(Effect::Tu(TuEvent::Timeout { client: self.id }));
                step.terminate()
            }
            TimerKind::C if self.state != ClientState::Completed => {
                step.push(Effect::Tu(TuEvent::TimerC { client: self.id }));
                step
            }
            TimerKind::D if self.state == ClientState::Completed => step.terminate(),
            _ => step,
        }
    }

    /// The transport failed to send the request or the ACK (17.1.4).
    pub(crate) fn on_transport_error(&mut self) -> Step {
        Step::client_transport_error(self.id, self.state)
    }
}
