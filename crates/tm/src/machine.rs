//! What the four state machines have in common.

use crate::effects::{ClientId, Effect, TuEvent, TxId};

/// The state of a live client transaction (RFC 3261 figures 5 and 6).
/// Terminated transactions are removed from the table, so there is no
/// Terminated variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, no response yet (Timers A, B).
    Calling,
    /// Non-INVITE sent, no response yet (Timers E, F).
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived (non-2xx for INVITE); absorbing its
    /// retransmissions (Timers D, K).
    Completed,
}

/// The state of a live server transaction (RFC 3261 figures 7 and 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE received, nothing sent yet.
    Trying,
    /// A provisional response was sent (or, for INVITE, the initial state).
    Proceeding,
    /// A final response was sent (non-2xx for INVITE): re-sending it on
    /// retransmissions (Timers G, H, J).
    Completed,
    /// INVITE only: the ACK arrived; absorbing ACK retransmissions (Timer I).
    Confirmed,
}

/// The outcome of one input to a state machine.
#[derive(Debug, Default)]
pub(crate) struct Step {
    /// Effects in order.
    pub effects: Vec<Effect>,
    /// The machine reached Terminated; the table removes it and reports it.
    pub terminated: bool,
}

impl Step {
    pub(crate) fn new() -> Step {
        Step::default()
    }

    pub(crate) fn terminate(mut self) -> Step {
        self.terminated = true;
        self
    }

    pub(crate) fn push(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    /// A client transaction's send failed (RFC 3261 17.1.4): it ends, and
    /// the TU hears of it unless a final response already arrived.
    pub(crate) fn client_transport_error(client: ClientId, state: ClientState) -> Step {
        let mut step = Step::new();
        if state != ClientState::Completed {
            step.push(Effect::Tu(TuEvent::TransportError {
                id: TxId::Client(client),
            }));
        }
        step.terminate()
    }
}

/// What a client machine decided about a received response.
#[derive(Debug)]
pub(crate) struct ResponseStep {
    /// Whether the TU gets the response (false: a retransmission absorbed).
    pub to_tu: bool,
    /// Effects and termination.
    pub step: Step,
}
