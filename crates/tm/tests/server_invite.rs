//! INVITE server transaction (RFC 3261 17.2.1) on a virtual clock.

mod common;

use common::*;
use kemibox_tm::{
    AutoTrying, Config, Effect, Millis, Received, ServerState, TimerKind, TuEvent, TxError, TxId,
};

const BRANCH: &str = "z9hG4bKuacinv1";

fn invite() -> String {
    uac_request("INVITE", "INVITE", BRANCH, None)
}

fn ack(to_tag: &str) -> String {
    uac_request("ACK", "ACK", BRANCH, Some(to_tag))
}

fn busy() -> String {
    response_to_uac("486 Busy Here", BRANCH, "INVITE", "t486")
}

fn with_auto_trying(auto_trying: AutoTrying) -> Config {
    Config {
        auto_trying,
        ..config()
    }
}

#[test]
fn retransmitted_invite_resends_the_last_provisional_response() {
    let mut sim = Sim::new(with_auto_trying(AutoTrying::Immediate));
    assert_eq!(sim.receive(&invite()), Received::Request);
    let server = sim.new_server(&invite(), false);
    let sent = sim.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].first_line(), "SIP/2.0 100 Trying");
    // Responses go to the source IP and the Via port; the 100 carries no To tag.
    assert_eq!(sent[0].to, addr(UAC));
    assert!(sent[0].text().contains("\r\nTo: <sip:bob@example.com>\r\n"));

    let r = sim.receive_at(500, &invite());
    assert_eq!(
        r,
        Received::Absorbed {
            tx: TxId::Server(server),
            effects: vec![Effect::Send {
                from: addr(LOCAL),
                to: addr(UAC),
                bytes: sent[0].bytes.clone(),
                reliable: false
            }]
        }
    );
    sim.take_sent();
    let ringing = response_to_uac("180 Ringing", BRANCH, "INVITE", "t1");
    sim.respond(server, 180, &ringing);
    sim.take_sent();
    sim.receive_at(1500, &invite());
    let sent = sim.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].text(), crlf(&ringing));
    // No timers in Proceeding: nothing happens by itself.
    sim.run_until(100_000);
    assert!(sim.sent.is_empty() && sim.events.is_empty());
    assert_eq!(
        sim.table.server_state(server),
        Some(ServerState::Proceeding)
    );
}

#[test]
fn final_response_is_retransmitted_on_timer_g_until_the_ack() {
    let mut sim = Sim::new(config());
    let server = sim.new_server(&invite(), false);
    assert!(sim.sent.is_empty(), "auto 100 is off");
    sim.run_until(1_000);
    sim.respond(server, 486, &busy());
    assert_eq!(sim.table.server_state(server), Some(ServerState::Completed));
    sim.run_until(9_000);
    // G: 500, 1000, 2000, 4000 (T2) intervals after the first send at 1000.
    assert_eq!(sim.send_times(), [1000, 1500, 2500, 4500, 8500]);
    assert!(sim.sent.iter().all(|s| s.text() == crlf(&busy())));
    // An INVITE retransmission re-sends the final response too.
    sim.receive_at(9_100, &invite());
    assert_eq!(sim.send_times().last(), Some(&9_100));
    sim.take_sent();

    // The ACK: Confirmed, Timer I (T4); absorbed, not for the TU.
    let r = sim.receive_at(10_000, &ack("t486"));
    let Received::Absorbed { tx, effects } = r else {
        panic!("{r:?}")
    };
    assert_eq!(tx, TxId::Server(server));
    assert!(matches!(
        effects.as_slice(),
        [Effect::Arm { timer, at: Millis(15_000) }] if timer.kind() == TimerKind::I
    ));
    assert_eq!(sim.table.server_state(server), Some(ServerState::Confirmed));
    // ACK retransmissions and INVITE retransmissions are absorbed silently.
    assert_eq!(
        sim.receive_at(11_000, &ack("t486")),
        Received::Absorbed {
            tx: TxId::Server(server),
            effects: vec![]
        }
    );
    assert_eq!(
        sim.receive(&invite()),
        Received::Absorbed {
            tx: TxId::Server(server),
            effects: vec![]
        }
    );
    sim.run_until(100_000);
    assert!(sim.sent.is_empty(), "G stops in Confirmed, H is stale");
    assert_eq!(
        sim.events,
        [(
            15_000,
            TuEvent::Terminated {
                id: TxId::Server(server)
            }
        )]
    );
    // After Timer I the ACK matches nothing: forwarded like a 2xx ACK.
    assert_eq!(sim.receive(&ack("t486")), Received::Ack);
}

#[test]
fn missing_ack_is_reported_on_timer_h() {
    let mut sim = Sim::new(config());
    let server = sim.new_server(&invite(), false);
    sim.respond(server, 486, &busy());
    sim.run_until(100_000);
    assert_eq!(
        sim.send_times(),
        [
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(
        sim.events,
        [
            (32_000, TuEvent::AckTimeout { server }),
            (
                32_000,
                TuEvent::Terminated {
                    id: TxId::Server(server)
                }
            )
        ]
    );
    assert!(sim.table.is_empty());
}

#[test]
fn reliable_transport_no_timer_g_and_zero_timer_i() {
    let mut sim = Sim::new(config());
    let server = sim.new_server(&invite(), true);
    sim.respond(server, 486, &busy());
    sim.run_until(10_000);
    assert_eq!(sim.send_times(), [0]);
    assert!(sim.sent[0].reliable);
    let r = sim.receive(&ack("t486"));
    assert_eq!(
        r,
        Received::Absorbed {
            tx: TxId::Server(server),
            effects: vec![Effect::Tu(TuEvent::Terminated {
                id: TxId::Server(server)
            })]
        }
    );
    // Timer H still guards a reliable transaction.
    let server = sim.new_server(&uac_request("INVITE", "INVITE", "z9hG4bKother", None), true);
    sim.respond(
        server,
        500,
        &response_to_uac("500 Oops", "z9hG4bKother", "INVITE", "x"),
    );
    sim.run_until(60_000);
    assert_eq!(
        sim.events.last(),
        Some(&(
            42_000,
            TuEvent::Terminated {
                id: TxId::Server(server)
            }
        ))
    );
}

#[test]
fn success_terminates_at_once() {
    let mut sim = Sim::new(config());
    let server = sim.new_server(&invite(), false);
    sim.respond(
        server,
        180,
        &response_to_uac("180 Ringing", BRANCH, "INVITE", "t"),
    );
    let ok = response_to_uac("200 OK", BRANCH, "INVITE", "t");
    let effects = sim
        .table
        .send_response(server, 200, crlf(&ok).into_bytes(), Millis(0))
        .unwrap();
    assert!(matches!(&effects[0], Effect::Send { .. }));
    assert_eq!(
        effects[1],
        Effect::Tu(TuEvent::Terminated {
            id: TxId::Server(server)
        })
    );
    // A second 2xx (another fork) has no transaction: the proxy forwards it itself.
    assert_eq!(
        sim.table
            .send_response(server, 200, crlf(&ok).into_bytes(), Millis(0)),
        Err(TxError::NoSuchTransaction)
    );
    // The ACK of the 2xx (new branch) is for the TU.
    assert_eq!(
        sim.receive(&uac_request("ACK", "ACK", "z9hG4bKack2xx", Some("t"))),
        Received::Ack
    );
}

#[test]
fn delayed_trying_is_sent_only_when_the_tu_is_slow() {
    let mut sim = Sim::new(with_auto_trying(AutoTrying::After(ms(200))));
    sim.new_server(&invite(), false);
    sim.run_until(199);
    assert!(sim.sent.is_empty());
    sim.run_until(200);
    assert_eq!(sim.sent.len(), 1);
    assert_eq!(sim.sent[0].first_line(), "SIP/2.0 100 Trying");

    let mut sim = Sim::new(with_auto_trying(AutoTrying::After(ms(200))));
    let server = sim.new_server(&invite(), false);
    sim.run_until(100);
    sim.respond(
        server,
        183,
        &response_to_uac("183 Session Progress", BRANCH, "INVITE", "t"),
    );
    sim.run_until(1_000);
    assert_eq!(sim.send_times(), [100]);
}

#[test]
fn responses_after_the_final_one_are_refused() {
    let mut sim = Sim::new(config());
    let server = sim.new_server(&invite(), false);
    sim.respond(server, 486, &busy());
    for status in [180, 200, 486] {
        assert_eq!(
            sim.table
                .send_response(server, status, crlf(&busy()).into_bytes(), Millis(0)),
            Err(TxError::FinalSent)
        );
    }
    assert_eq!(
        sim.table.send_response(server, 99, Vec::new(), Millis(0)),
        Err(TxError::InvalidStatus(99))
    );
    assert_eq!(
        sim.table.send_response(server, 700, Vec::new(), Millis(0)),
        Err(TxError::InvalidStatus(700))
    );
}

#[test]
fn transport_error_on_a_response() {
    let mut sim = Sim::new(config());
    let server = sim.new_server(&invite(), false);
    sim.respond(server, 486, &busy());
    let effects = sim.table.on_transport_error(TxId::Server(server));
    assert_eq!(
        effects,
        [
            Effect::Tu(TuEvent::TransportError {
                id: TxId::Server(server)
            }),
            Effect::Tu(TuEvent::Terminated {
                id: TxId::Server(server)
            })
        ]
    );
    sim.take_sent();
    sim.run_until(100_000);
    assert!(sim.sent.is_empty() && sim.events.is_empty());
}
