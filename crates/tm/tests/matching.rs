//! Matching messages to transactions (RFC 3261 17.1.3, 17.2.3, 9.2) and
//! the table limit.

mod common;

use common::*;
use kemibox_tm::{
    Config, KeyError, Millis, Peer, Received, ServerState, TransactionTable, TxError, TxId,
};

#[test]
fn ack_of_a_non_2xx_matches_the_invite_server_transaction() {
    let mut sim = Sim::new(config());
    let invite = uac_request("INVITE", "INVITE", "z9hG4bKm1", None);
    let server = sim.new_server(&invite, false);
    sim.respond(
        server,
        404,
        &response_to_uac("404 Not Found", "z9hG4bKm1", "INVITE", "nf"),
    );
    let ack = uac_request("ACK", "ACK", "z9hG4bKm1", Some("nf"));
    assert!(matches!(
        sim.receive(&ack),
        Received::Absorbed { tx: TxId::Server(s), .. } if s == server
    ));
    assert_eq!(sim.table.server_state(server), Some(ServerState::Confirmed));
    // An ACK with another branch is not this transaction's.
    assert_eq!(
        sim.receive(&uac_request("ACK", "ACK", "z9hG4bKm2", Some("nf"))),
        Received::Ack
    );
    // ACK never creates a transaction.
    let peer = Peer::for_request(&msg(&ack), addr(UAC), addr(LOCAL), false);
    assert_eq!(
        sim.table.new_server(&msg(&ack), peer, Millis(0)),
        Err(TxError::Ack)
    );
}

#[test]
fn cancel_has_its_own_transaction_and_finds_the_invite() {
    let mut sim = Sim::new(config());
    let invite = uac_request("INVITE", "INVITE", "z9hG4bKc1", None);
    let server = sim.new_server(&invite, false);
    let cancel = uac_request("CANCEL", "CANCEL", "z9hG4bKc1", None);
    // Not a retransmission of the INVITE: a new CANCEL for the TU.
    assert_eq!(
        sim.receive(&cancel),
        Received::Cancel {
            invite: Some(server)
        }
    );
    assert_eq!(
        sim.table.find_invite_for_cancel(&msg(&cancel)),
        Some(server)
    );
    let cancel_tx = sim.new_server(&cancel, false);
    assert_ne!(cancel_tx, server);
    sim.respond(
        cancel_tx,
        200,
        &response_to_uac("200 OK", "z9hG4bKc1", "CANCEL", "x"),
    );
    sim.take_sent();
    // The CANCEL retransmission is absorbed by the CANCEL transaction.
    assert!(matches!(
        sim.receive(&cancel),
        Received::Absorbed { tx: TxId::Server(s), effects } if s == cancel_tx && effects.len() == 1
    ));
    // The INVITE is untouched.
    assert_eq!(
        sim.table.server_state(server),
        Some(ServerState::Proceeding)
    );
    // A CANCEL for an unknown INVITE.
    let other = uac_request("CANCEL", "CANCEL", "z9hG4bKc2", None);
    assert_eq!(sim.receive(&other), Received::Cancel { invite: None });
    assert_eq!(sim.table.find_invite_for_cancel(&msg(&invite)), None);
}

#[test]
fn responses_match_by_branch_and_cseq_method() {
    let mut sim = Sim::new(config());
    let branch = "z9hG4bKfork1";
    let invite = sim.send_request(&proxied_invite(branch), false);
    sim.receive(&downstream_response(
        branch,
        "180 Ringing",
        "INVITE",
        Some("b"),
    ));
    let cancel = sim.table.build_cancel(invite).unwrap();
    let (cancel_tx, _) = sim
        .table
        .send_request(cancel, addr(LOCAL), addr(NEXT_HOP), false, Millis(0))
        .unwrap();
    assert_ne!(cancel_tx, invite);
    // The same branch and method again is refused.
    assert_eq!(
        sim.table.send_request(
            msg(&proxied_invite(branch)),
            addr(LOCAL),
            addr(NEXT_HOP),
            false,
            Millis(0)
        ),
        Err(TxError::Exists(TxId::Client(invite)))
    );
    // The 200 for the CANCEL and the 487 for the INVITE share the branch.
    assert!(matches!(
        sim.receive(&downstream_response(branch, "200 OK", "CANCEL", Some("b"))),
        Received::Response { client, .. } if client == cancel_tx
    ));
    assert!(matches!(
        sim.receive(&downstream_response(branch, "487 Request Terminated", "INVITE", Some("b"))),
        Received::Response { client, .. } if client == invite
    ));
    // Another branch of the same request is another transaction.
    let other = sim.send_request(&proxied_invite("z9hG4bKfork2"), false);
    assert!(matches!(
        sim.receive(&downstream_response("z9hG4bKfork2", "180 Ringing", "INVITE", Some("c"))),
        Received::Response { client, .. } if client == other
    ));
    // Branches compare ignoring case.
    assert!(matches!(
        sim.receive(&downstream_response("Z9HG4BKFORK2", "180 Ringing", "INVITE", Some("c"))),
        Received::Response { client, .. } if client == other
    ));
    // Right branch, wrong method: stray.
    assert_eq!(
        sim.receive(&downstream_response(
            "z9hG4bKfork2",
            "200 OK",
            "BYE",
            Some("c")
        )),
        Received::Stray
    );
}

#[test]
fn stray_responses() {
    let mut sim = Sim::new(config());
    sim.send_request(&proxied_invite("z9hG4bKknown"), false);
    assert_eq!(
        sim.receive(&downstream_response(
            "z9hG4bKunknown",
            "200 OK",
            "INVITE",
            Some("b")
        )),
        Received::Stray
    );
    let no_via = "SIP/2.0 200 OK\nFrom: <sip:a@b>;tag=1\nTo: <sip:c@d>\nCall-ID: x\n\
        CSeq: 314 INVITE\nContent-Length: 0\n\n";
    assert_eq!(sim.receive(no_via), Received::Stray);
    let no_branch = downstream_response("z9hG4bKknown", "200 OK", "INVITE", None)
        .replace(";branch=z9hG4bKknown", "");
    assert_eq!(sim.receive(&no_branch), Received::Stray);
}

#[test]
fn requests_from_other_senders_are_different_transactions() {
    let mut sim = Sim::new(config());
    let invite = uac_request("INVITE", "INVITE", "z9hG4bKs1", None);
    let server = sim.new_server(&invite, false);
    // Same branch, another sent-by: a different transaction (17.2.3).
    let other = invite.replace("198.51.100.7:5060;branch", "198.51.100.8:5060;branch");
    assert_eq!(sim.receive(&other), Received::Request);
    // Same branch and sent-by, another method: a different transaction.
    let options = uac_request("OPTIONS", "OPTIONS", "z9hG4bKs1", None);
    assert_eq!(sim.receive(&options), Received::Request);
    assert!(
        matches!(sim.receive(&invite), Received::Absorbed { tx: TxId::Server(s), .. } if s == server)
    );
    let peer = Peer::for_request(&msg(&invite), addr(UAC), addr(LOCAL), false);
    assert_eq!(
        sim.table.new_server(&msg(&invite), peer, Millis(0)),
        Err(TxError::Exists(TxId::Server(server)))
    );
}

#[test]
fn legacy_clients_without_magic_cookie() {
    let mut sim = Sim::new(config());
    let invite = uac_request("INVITE", "INVITE", "7c3f9a", None);
    let server = sim.new_server(&invite, false);
    // A retransmission is absorbed.
    assert!(
        matches!(sim.receive(&invite), Received::Absorbed { tx: TxId::Server(s), .. } if s == server)
    );
    // The same request with another CSeq is new.
    assert_eq!(
        sim.receive(&invite.replace("1 INVITE", "2 INVITE")),
        Received::Request
    );
    sim.respond(
        server,
        486,
        &response_to_uac("486 Busy Here", "7c3f9a", "INVITE", "busy"),
    );
    // An ACK carrying another To tag is not the ACK of our response.
    assert_eq!(
        sim.receive(&uac_request("ACK", "ACK", "7c3f9a", Some("other"))),
        Received::Ack
    );
    assert_eq!(sim.table.server_state(server), Some(ServerState::Completed));
    // The right one is absorbed.
    assert!(matches!(
        sim.receive(&uac_request("ACK", "ACK", "7c3f9a", Some("busy"))),
        Received::Absorbed { tx: TxId::Server(s), .. } if s == server
    ));
    assert_eq!(sim.table.server_state(server), Some(ServerState::Confirmed));
    // No branch at all works the same way.
    let bare = uac_request("OPTIONS", "OPTIONS", "x", None).replace(";branch=x", "");
    let options = sim.new_server(&bare, false);
    assert!(
        matches!(sim.receive(&bare), Received::Absorbed { tx: TxId::Server(s), .. } if s == options)
    );
}

#[test]
fn unkeyable_requests() {
    let mut table = TransactionTable::new(config());
    let no_via = msg("OPTIONS sip:a@b SIP/2.0\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n");
    assert_eq!(
        table.on_received(&no_via, Millis(0)),
        Received::Invalid(KeyError::NoVia)
    );
    let peer = Peer::for_request(&no_via, addr(UAC), addr(LOCAL), false);
    assert_eq!(
        table.new_server(&no_via, peer, Millis(0)),
        Err(TxError::Key(KeyError::NoVia))
    );
    let legacy_no_cseq = msg("OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h\nContent-Length: 0\n\n");
    assert_eq!(
        table.on_received(&legacy_no_cseq, Millis(0)),
        Received::Invalid(KeyError::NoCSeq)
    );
    // A client transaction needs a branch and a CSeq.
    let no_branch = msg(&proxied_request("OPTIONS", "x").replace(";branch=x", ""));
    assert_eq!(
        table.send_request(no_branch, addr(LOCAL), addr(NEXT_HOP), false, Millis(0)),
        Err(TxError::Key(KeyError::NoBranch))
    );
    let ack = msg(&proxied_request("ACK", "z9hG4bKa"));
    assert_eq!(
        table.send_request(ack, addr(LOCAL), addr(NEXT_HOP), false, Millis(0)),
        Err(TxError::Ack)
    );
    assert!(table.is_empty());
}

#[test]
fn the_table_is_bounded() {
    let config = Config {
        max_transactions: 3,
        ..config()
    };
    let mut sim = Sim::new(config);
    let a = sim.new_server(&uac_request("INVITE", "INVITE", "z9hG4bKl1", None), false);
    sim.new_server(&uac_request("OPTIONS", "OPTIONS", "z9hG4bKl2", None), false);
    sim.send_request(&proxied_request("OPTIONS", "z9hG4bKl3"), false);
    assert_eq!(sim.table.len(), 3);
    let fourth = msg(&uac_request("INVITE", "INVITE", "z9hG4bKl4", None));
    let peer = Peer::for_request(&fourth, addr(UAC), addr(LOCAL), false);
    // Still classified (the proxy needs to know it is new to answer 503) ...
    assert_eq!(sim.table.on_received(&fourth, Millis(0)), Received::Request);
    // ... but refused.
    assert_eq!(
        sim.table.new_server(&fourth, peer, Millis(0)),
        Err(TxError::Full)
    );
    assert_eq!(
        sim.table.send_request(
            msg(&proxied_request("OPTIONS", "z9hG4bKl5")),
            addr(LOCAL),
            addr(NEXT_HOP),
            false,
            Millis(0)
        ),
        Err(TxError::Full)
    );
    // Retransmissions of existing transactions are still absorbed.
    assert!(matches!(
        sim.receive(&uac_request("INVITE", "INVITE", "z9hG4bKl1", None)),
        Received::Absorbed { .. }
    ));
    // Room again once one ends.
    assert!(sim.table.terminate(a));
    assert!(!sim.table.terminate(a));
    assert!(sim.table.new_server(&fourth, peer, Millis(0)).is_ok());
    assert_eq!(sim.table.len(), 3);
}
