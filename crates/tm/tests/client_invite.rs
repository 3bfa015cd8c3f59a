//! INVITE client transaction (RFC 3261 17.1.1) on a virtual clock.

mod common;

use common::*;
use kemibox_tm::{ClientState, Config, Effect, Millis, Received, TimerKind, Timers, TuEvent, TxId};

const BRANCH: &str = "z9hG4bKproxy1";

#[test]
fn udp_retransmits_on_timer_a_and_times_out_on_timer_b() {
    let mut sim = Sim::new(config());
    let client = sim.send_request(&proxied_invite(BRANCH), false);
    sim.run_until(100_000);
    // Timer A: 500, 1000, 2000, 4000, 8000, 16000 ms intervals; B at 64*T1.
    assert_eq!(sim.send_times(), [0, 500, 1500, 3500, 7500, 15500, 31500]);
    let invite = crlf(&proxied_invite(BRANCH));
    assert!(
        sim.sent
            .iter()
            .all(|s| s.text() == invite && s.to == addr(NEXT_HOP) && !s.reliable)
    );
    assert_eq!(
        sim.events,
        [
            (32_000, TuEvent::Timeout { client }),
            (
                32_000,
                TuEvent::Terminated {
                    id: TxId::Client(client)
                }
            )
        ]
    );
    assert!(sim.table.is_empty());
    // A late response is stray now.
    assert_eq!(
        sim.receive(&downstream_response(
            BRANCH,
            "180 Ringing",
            "INVITE",
            Some("b")
        )),
        Received::Stray
    );
}

#[test]
fn provisional_response_stops_retransmissions_and_timer_b() {
    let mut sim = Sim::new(config());
    let client = sim.send_request(&proxied_invite(BRANCH), false);
    let r = sim.receive_at(
        700,
        &downstream_response(BRANCH, "100 Trying", "INVITE", None),
    );
    assert_eq!(
        r,
        Received::Response {
            client,
            effects: vec![]
        }
    );
    assert_eq!(
        sim.table.client_state(client),
        Some(ClientState::Proceeding)
    );
    sim.run_until(200_000);
    assert_eq!(sim.send_times(), [0, 500]);
    assert!(
        sim.events.is_empty(),
        "no Timer B in Proceeding: {:?}",
        sim.events
    );
    // Further provisional responses still go to the TU.
    let r = sim.receive(&downstream_response(
        BRANCH,
        "180 Ringing",
        "INVITE",
        Some("b"),
    ));
    assert!(matches!(r, Received::Response { client: c, .. } if c == client));
}

const EXPECTED_ACK: &str = "ACK sip:bob@192.0.2.4:5060 SIP/2.0\r\n\
    Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy1\r\n\
    Route: <sip:edge.example.com;lr>\r\n\
    From: \"Alice\" <sip:alice@example.com>;tag=a73kszlfl\r\n\
    To: <sip:bob@example.com>;tag=314159\r\n\
    Call-ID: 1j9FpLxk3uxtm8tn@198.51.100.7\r\n\
    CSeq: 314 ACK\r\n\
    Max-Forwards: 70\r\n\
    Content-Length: 0\r\n\r\n";

#[test]
fn busy_here_is_acked_and_its_retransmission_absorbed_until_timer_d() {
    let mut sim = Sim::new(config());
    let client = sim.send_request(&proxied_invite(BRANCH), false);
    sim.run_until(600);
    sim.take_sent();
    let busy = downstream_response(BRANCH, "486 Busy Here", "INVITE", Some("314159"));
    let r = sim.receive_at(1000, &busy);
    let Received::Response { client: c, effects } = r else {
        panic!("{r:?}")
    };
    assert_eq!(c, client);
    assert_eq!(effects.len(), 2, "{effects:?}");
    assert!(
        matches!(&effects[1], Effect::Arm { timer, at: Millis(33_000) } if timer.kind() == TimerKind::D)
    );
    let sent = sim.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].text(), EXPECTED_ACK);
    assert_eq!(sent[0].to, addr(NEXT_HOP));
    assert_eq!(sim.table.client_state(client), Some(ClientState::Completed));

    // The 486 again: absorbed, ACK re-sent, nothing for the TU.
    let r = sim.receive_at(1400, &busy);
    assert_eq!(
        r,
        Received::Absorbed {
            tx: TxId::Client(client),
            effects: vec![Effect::Send {
                from: addr(LOCAL),
                to: addr(NEXT_HOP),
                bytes: EXPECTED_ACK.as_bytes().to_vec().into(),
                reliable: false,
            }],
        }
    );
    sim.take_sent();
    // No INVITE retransmission after the final response (Timer A is stale).
    sim.run_until(32_999);
    assert!(sim.sent.is_empty());
    assert!(sim.events.is_empty());
    sim.run_until(33_000);
    assert_eq!(
        sim.events,
        [(
            33_000,
            TuEvent::Terminated {
                id: TxId::Client(client)
            }
        )]
    );
    assert_eq!(sim.receive(&busy), Received::Stray);
}

#[test]
fn reliable_transport_has_no_retransmissions_and_zero_timer_d() {
    let mut sim = Sim::new(config());
    let client = sim.send_request(&proxied_invite(BRANCH), true);
    sim.run_until(20_000);
    assert_eq!(sim.send_times(), [0]);
    assert!(sim.sent[0].reliable);
    let busy = downstream_response(BRANCH, "603 Decline", "INVITE", Some("t"));
    let r = sim.receive(&busy);
    let Received::Response { effects, .. } = r else {
        panic!("{r:?}")
    };
    // The ACK, then termination at once: no Timer D armed.
    assert!(matches!(&effects[0], Effect::Send { reliable: true, .. }));
    assert_eq!(
        effects[1],
        Effect::Tu(TuEvent::Terminated {
            id: TxId::Client(client)
        })
    );
    assert_eq!(effects.len(), 2);
    assert!(sim.table.is_empty());
}

#[test]
fn reliable_invite_still_times_out_on_timer_b() {
    let mut sim = Sim::new(config());
    let client = sim.send_request(&proxied_invite(BRANCH), true);
    sim.run_until(40_000);
    assert_eq!(sim.send_times(), [0]);
    assert_eq!(sim.events[0], (32_000, TuEvent::Timeout { client }));
}

#[test]
fn success_terminates_and_its_retransmissions_are_stray() {
    let mut sim = Sim::new(config());
    let client = sim.send_request(&proxied_invite(BRANCH), false);
    let ok = downstream_response(BRANCH, "200 OK", "INVITE", Some("b"));
    let r = sim.receive_at(100, &ok);
    assert_eq!(
        r,
        Received::Response {
            client,
            effects: vec![Effect::Tu(TuEvent::Terminated {
                id: TxId::Client(client)
            })]
        }
    );
    assert_eq!(sim.receive(&ok), Received::Stray);
    sim.run_until(100_000);
    assert_eq!(
        sim.send_times(),
        [0],
        "no ACK and no retransmission for a 2xx"
    );
}

#[test]
fn timer_c_is_restarted_by_provisional_responses_except_100() {
    let config = Config {
        timers: Timers {
            c: Some(ms(180_000)),
            ..Timers::default()
        },
        ..config()
    };
    let mut sim = Sim::new(config);
    let client = sim.send_request(&proxied_invite(BRANCH), false);
    sim.receive_at(
        100,
        &downstream_response(BRANCH, "100 Trying", "INVITE", None),
    );
    sim.receive_at(
        1_000,
        &downstream_response(BRANCH, "180 Ringing", "INVITE", Some("b")),
    );
    sim.receive_at(
        2_000,
        &downstream_response(BRANCH, "100 Trying", "INVITE", None),
    );
    sim.run_until(500_000);
    assert_eq!(sim.events, [(181_000, TuEvent::TimerC { client })]);
    // The transaction stays for the TU to CANCEL or terminate.
    assert_eq!(
        sim.table.client_state(client),
        Some(ClientState::Proceeding)
    );
    let cancel = sim.table.build_cancel(client).unwrap();
    assert_eq!(cancel.cseq(), Some((314, "CANCEL")));
    assert_eq!(cancel.top_via().unwrap().branch(), Some(BRANCH));
    assert!(sim.table.terminate(client));
    assert!(sim.table.is_empty());
}

#[test]
fn transport_error_terminates_and_tells_the_tu() {
    let mut sim = Sim::new(config());
    let client = sim.send_request(&proxied_invite(BRANCH), false);
    let effects = sim.table.on_transport_error(TxId::Client(client));
    assert_eq!(
        effects,
        [
            Effect::Tu(TuEvent::TransportError {
                id: TxId::Client(client)
            }),
            Effect::Tu(TuEvent::Terminated {
                id: TxId::Client(client)
            })
        ]
    );
    sim.run_until(100_000);
    assert_eq!(sim.send_times(), [0], "stale timers are ignored");
    assert!(
        sim.table
            .on_transport_error(TxId::Client(client))
            .is_empty()
    );
}

/// An INVITE branch started with Timer B/F set to `fr_ms`, run to 100 s.
fn run_with_fr(fr_ms: u64) -> (Sim, kemibox_tm::ClientId) {
    let mut sim = Sim::new(config());
    let timers = Timers {
        fr: Some(ms(fr_ms)),
        ..config().timers
    };
    let (client, effects) = sim
        .table
        .send_request_with(
            msg(&proxied_invite(BRANCH)),
            addr(LOCAL),
            addr(NEXT_HOP),
            false,
            timers,
            Millis(0),
        )
        .unwrap();
    sim.apply(effects);
    sim.run_until(100_000);
    (sim, client)
}

#[test]
fn per_transaction_fr_timeout_shortens_timer_b_but_never_lengthens_it() {
    let (sim, client) = run_with_fr(2_000);
    assert_eq!(
        sim.events.first(),
        Some(&(2_000, TuEvent::Timeout { client }))
    );
    // Retransmissions (Timer A) stop with it.
    assert_eq!(sim.send_times(), [0, 500, 1500]);
    // An fr over 64*T1 is capped there.
    let (sim, client) = run_with_fr(600_000);
    assert_eq!(
        sim.events.first(),
        Some(&(32_000, TuEvent::Timeout { client }))
    );
}
