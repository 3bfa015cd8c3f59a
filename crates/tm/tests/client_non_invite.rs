//! Non-INVITE client transaction (RFC 3261 17.1.2) on a virtual clock.

mod common;

use common::*;
use kemibox_tm::{ClientState, Effect, Millis, Received, TimerKind, TuEvent, TxId};

const BRANCH: &str = "z9hG4bKproxy2";

#[test]
fn timer_e_doubles_up_to_t2_and_timer_f_times_out() {
    let mut sim = Sim::new(config());
    let client = sim.send_request(&proxied_request("OPTIONS", BRANCH), false);
    sim.run_until(100_000);
    // Intervals 500, 1000, 2000, 4000, 4000, ... (capped at T2).
    assert_eq!(
        sim.send_times(),
        [
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
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
}

#[test]
fn in_proceeding_retransmissions_continue_every_t2() {
    let mut sim = Sim::new(config());
    let client = sim.send_request(&proxied_request("REGISTER", BRANCH), false);
    let r = sim.receive_at(
        600,
        &downstream_response(BRANCH, "100 Trying", "REGISTER", None),
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
    sim.run_until(40_000);
    // The pending E (at 1500) fires in Proceeding, then every T2.
    assert_eq!(
        sim.send_times(),
        [0, 500, 1500, 5500, 9500, 13500, 17500, 21500, 25500, 29500]
    );
    assert_eq!(sim.events[0], (32_000, TuEvent::Timeout { client }));
}

#[test]
fn final_response_completes_absorbs_retransmissions_until_timer_k() {
    let mut sim = Sim::new(config());
    let client = sim.send_request(&proxied_request("BYE", BRANCH), false);
    let ok = downstream_response(BRANCH, "200 OK", "BYE", Some("b"));
    let r = sim.receive_at(200, &ok);
    let Received::Response { client: c, effects } = r else {
        panic!("{r:?}")
    };
    assert_eq!(c, client);
    assert!(matches!(
        effects.as_slice(),
        [Effect::Arm { timer, at: Millis(5_200) }] if timer.kind() == TimerKind::K
    ));
    assert_eq!(sim.table.client_state(client), Some(ClientState::Completed));
    assert_eq!(
        sim.receive_at(3_000, &ok),
        Received::Absorbed {
            tx: TxId::Client(client),
            effects: vec![]
        }
    );
    sim.run_until(100_000);
    assert_eq!(sim.send_times(), [0], "E stops at the final response");
    assert_eq!(
        sim.events,
        [(
            5_200,
            TuEvent::Terminated {
                id: TxId::Client(client)
            }
        )]
    );
    assert_eq!(sim.receive(&ok), Received::Stray);
}

#[test]
fn reliable_transport_no_timer_e_and_zero_timer_k() {
    let mut sim = Sim::new(config());
    let client = sim.send_request(&proxied_request("MESSAGE", BRANCH), true);
    sim.run_until(10_000);
    assert_eq!(sim.send_times(), [0]);
    let r = sim.receive(&downstream_response(
        BRANCH,
        "404 Not Found",
        "MESSAGE",
        Some("b"),
    ));
    assert_eq!(
        r,
        Received::Response {
            client,
            effects: vec![Effect::Tu(TuEvent::Terminated {
                id: TxId::Client(client)
            })]
        }
    );
    sim.run_until(100_000);
    // Only the termination (applied from the Response effects); F is stale.
    assert_eq!(
        sim.events,
        [(
            10_000,
            TuEvent::Terminated {
                id: TxId::Client(client)
            }
        )]
    );
}
