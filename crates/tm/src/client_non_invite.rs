//! The non-INVITE client transaction (RFC 3261 17.1.2, figure 6).

use std::net::SocketAddr;
use std::time::Duration;

use kemibox_sip::SipMessage;

use crate::effects::{ClientId, Effect, TuEvent, TxId};
use crate::machine::{ClientState, ResponseStep, Step};
use crate::timers::{Deadlines, Millis, TimerId, TimerKind, Timers};

/// One non-INVITE request (including a CANCEL) sent by the proxy.
///
/// Trying: retransmitted on Timer E (unreliable only), the interval
/// doubling up to T2; Proceeding: retransmitted every T2. Timer F ends
/// both with a timeout. Completed: absorbs response retransmissions until
/// Timer K.
#[derive(Debug)]
pub(crate) struct NonInviteClient {
    id: ClientId,
    state: ClientState,
    request: SipMessage,
    /// Our address the request (and its retransmissions, and the ACK of a
    /// non-2xx) is sent from.
    from: SocketAddr,
    to: SocketAddr,
    reliable: bool,
    e_interval: Duration,
    deadlines: Deadlines,
}

impl NonInviteClient {
    /// Sends the request and arms E (unreliable) and F.
    pub(crate) fn start(
        id: ClientId,
        request: SipMessage,
        from: SocketAddr,
        to: SocketAddr,
        reliable: bool,
        timers: &Timers,
        now: Millis,
    ) -> (NonInviteClient, Step) {
        let mut tx = NonInviteClient {
            id,
            state: ClientState::Trying,
            request,
            from,
            to,
            reliable,
            e_interval: timers.e(),
            deadlines: Deadlines::default(),
        };
        let mut step = Step::new();
        step.push(tx.send());
        if !reliable {
            step.push(tx.arm(TimerKind::E, now, timers.e()));
        }
        step.push(tx.arm(TimerKind::F, now, timers.f()));
        (tx, step)
    }

    pub(crate) fn state(&self) -> ClientState {
        self.state
    }

    pub(crate) fn request(&self) -> &SipMessage {
        &self.request
    }

    fn send(&self) -> Effect {
        Effect::Send {
            from: self.from,
            to: self.to,
            bytes: self.request.raw_bytes().clone(),
            reliable: self.reliable,
        }
    }

    fn arm(&mut self, kind: TimerKind, now: Millis, after: Duration) -> Effect {
        self.deadlines.arm(TxId::Client(self.id), kind, now, after)
    }

    /// A response matched this transaction.
    pub(crate) fn on_response(
        &mut self,
        status: u16,
        timers: &Timers,
        now: Millis,
    ) -> ResponseStep {
        let mut step = Step::new();
        match (self.state, status) {
            (ClientState::Completed, _) => ResponseStep { to_tu: false, step },
            (_, 100..=199) => {
                self.state = ClientState::Proceeding;
                ResponseStep { to_tu: true, step }
            }
            (_, _) => {
                self.state = ClientState::Completed;
                self.deadlines = Deadlines::default();
                let k = timers.k(self.reliable);
                if k.is_zero() {
                    step = step.terminate();
                } else {
                    step.push(self.arm(TimerKind::K, now, k));
                }
                ResponseStep { to_tu: true, step }
            }
        }
    }

    /// One of this transaction's timers fired.
    pub(crate) fn on_timer(&mut self, timer: &TimerId, timers: &Timers, now: Millis) -> Step {
        let mut step = Step::new();
        if !self.deadlines.fire(timer) {
            return step;
        }
        let live = matches!(self.state, ClientState::Trying | ClientState::Proceeding);
        match timer.kind() {
            TimerKind::E if live => {
                step.push(self.send());
                self.e_interval = if self.state == ClientState::Trying {
                    self.e_interval.saturating_mul(2).min(timers.t2)
                } else {
                    timers.t2
                };
                step.push(self.arm(TimerKind::E, now, self.e_interval));
                step
            }
            TimerKind::F if live => {
                step.push(Effect::Tu(TuEvent::Timeout { client: self.id }));
                step.terminate()
            }
            TimerKind::K if self.state == ClientState::Completed => step.terminate(),
            _ => step,
        }
    }

    /// The transport failed to send the request (17.1.4).
    pub(crate) fn on_transport_error(&mut self) -> Step {
        Step::client_transport_error(self.id, self.state)
    }
}
