//! Non-INVITE server transaction (RFC 3261 17.2.2) on a virtual clock.

mod common;

use common::*;
use kemibox_tm::{Effect, Millis, Received, ServerState, TimerKind, TuEvent, TxError, TxId};

const BRANCH: &str = "z9hG4bKuacreg1";

fn register() -> String {
    uac_request("REGISTER", "REGISTER", BRANCH, None)
}

#[test]
fn retransmissions_resend_the_last_response_until_timer_j() {
    let mut sim = Sim::new(config());
    assert_eq!(sim.receive(&register()), Received::Request);
    let server = sim.new_server(&register(), false);
    assert_eq!(sim.table.server_state(server), Some(ServerState::Trying));
    assert!(sim.sent.is_empty(), "no automatic 100 for non-INVITE");

    // Trying: a retransmission is absorbed without an answer.
    assert_eq!(
        sim.receive_at(500, &register()),
        Received::Absorbed {
            tx: TxId::Server(server),
            effects: vec![]
        }
    );
    // Proceeding: the provisional response is re-sent.
    let trying = response_to_uac("100 Trying", BRANCH, "REGISTER", "x");
    sim.respond(server, 100, &trying);
    assert_eq!(
        sim.table.server_state(server),
        Some(ServerState::Proceeding)
    );
    sim.receive_at(1_500, &register());
    assert_eq!(sim.send_times(), [500, 1_500]);
    assert_eq!(sim.sent[1].text(), crlf(&trying));
    sim.take_sent();

    // Completed: the final response is re-sent, Timer J = 64*T1.
    let ok = response_to_uac("200 OK", BRANCH, "REGISTER", "x");
    let effects = sim
        .table
        .send_response(server, 200, crlf(&ok).into_bytes(), Millis(2_000))
        .unwrap();
    assert!(matches!(
        effects.as_slice(),
        [Effect::Send { .. }, Effect::Arm { timer, at: Millis(34_000) }] if timer.kind() == TimerKind::J
    ));
    sim.now = 2_000;
    sim.apply(effects);
    sim.receive_at(3_500, &register());
    sim.receive_at(7_500, &register());
    let sent = sim.take_sent();
    assert_eq!(
        sent.iter().map(|s| s.at).collect::<Vec<_>>(),
        [2_000, 3_500, 7_500]
    );
    assert!(sent.iter().all(|s| s.text() == crlf(&ok)));
    // Any further final response is discarded.
    assert_eq!(
        sim.table
            .send_response(server, 500, crlf(&ok).into_bytes(), Millis(8_000)),
        Err(TxError::FinalSent)
    );
    // No response retransmissions by timer for non-INVITE.
    sim.run_until(33_999);
    assert!(sim.sent.is_empty() && sim.events.is_empty());
    sim.run_until(34_000);
    assert_eq!(
        sim.events,
        [(
            34_000,
            TuEvent::Terminated {
                id: TxId::Server(server)
            }
        )]
    );
    // Afterwards the request would be new again.
    assert_eq!(sim.receive(&register()), Received::Request);
}

#[test]
fn reliable_transport_zero_timer_j() {
    let mut sim = Sim::new(config());
    let server = sim.new_server(&register(), true);
    let ok = response_to_uac("200 OK", BRANCH, "REGISTER", "x");
    let effects = sim
        .table
        .send_response(server, 200, crlf(&ok).into_bytes(), Millis(0))
        .unwrap();
    assert_eq!(effects.len(), 2);
    assert!(matches!(&effects[0], Effect::Send { reliable: true, .. }));
    assert_eq!(
        effects[1],
        Effect::Tu(TuEvent::Terminated {
            id: TxId::Server(server)
        })
    );
    assert!(sim.table.is_empty());
}
