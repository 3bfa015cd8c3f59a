//! The non-INVITE server transaction (RFC 3261 17.2.2, figure 8).

use bytes::Bytes;
use kemibox_sip::SipMessage;

use crate::effects::{Effect, ServerId, TuEvent, TxId};
use crate::error::TxError;
use crate::machine::{ServerState, Step};
use crate::peer::Peer;
use crate::timers::{Deadlines, Millis, TimerId, TimerKind, Timers};

/// One non-INVITE request (including a CANCEL) received by the proxy.
///
/// Trying: retransmissions are discarded (the TU is still working).
/// Proceeding: they re-send the last provisional response. Completed: they
/// re-send the final response, until Timer J (0 over reliable transports).
#[derive(Debug)]
pub(crate) struct NonInviteServer {
    id: ServerId,
    state: ServerState,
    request: SipMessage,
    peer: Peer,
    last_response: Option<Bytes>,
    deadlines: Deadlines,
}

impl NonInviteServer {
    /// Enters Trying; nothing is sent.
    pub(crate) fn start(id: ServerId, request: SipMessage, peer: Peer) -> NonInviteServer {
        NonInviteServer {
            id,
            state: ServerState::Trying,
            request,
            peer,
            last_response: None,
            deadlines: Deadlines::default(),
        }
    }

    pub(crate) fn state(&self) -> ServerState {
        self.state
    }

    pub(crate) fn request(&self) -> &SipMessage {
        &self.request
    }

    fn send(&self, bytes: Bytes) -> Effect {
        Effect::Send {
            from: self.peer.local,
            to: self.peer.reply_to,
            bytes,
            reliable: self.peer.reliable,
        }
    }

    /// A retransmission of the request arrived.
    pub(crate) fn on_retransmission(&mut self) -> Step {
        let mut step = Step::new();
        if let Some(bytes) = self.last_response.clone() {
            step.push(self.send(bytes));
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
        if self.state == ServerState::Completed {
            return Err(TxError::FinalSent);
        }
        let mut step = Step::new();
        step.push(self.send(bytes.clone()));
        self.last_response = Some(bytes);
        if status < 200 {
            self.state = ServerState::Proceeding;
            return Ok(step);
        }
        self.state = ServerState::Completed;
        let j = timers.j(self.peer.reliable);
        if j.is_zero() {
            return Ok(step.terminate());
        }
        step.push(
            self.deadlines
                .arm(TxId::Server(self.id), TimerKind::J, now, j),
        );
        Ok(step)
    }

    /// One of this transaction's timers fired.
    pub(crate) fn on_timer(&mut self, timer: &TimerId) -> Step {
        let step = Step::new();
        if self.deadlines.fire(timer)
            && timer.kind() == TimerKind::J
            && self.state == ServerState::Completed
        {
            return step.terminate();
        }
        step
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
