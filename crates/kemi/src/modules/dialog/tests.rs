//! The dialog state machine driven as the proxy drives it, the functions
//! and pseudo-variables a script sees, lifetimes and the BYEs they send
//! through a recording [`Uac`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kemibox_sip::SipMessage;

use super::table::{DialogSettings, Dialogs, Purpose, Refusal, Side, State};
use super::*;
use crate::bindings::kemibox::ksr::pv::Host as _;
use crate::testing::{INVITE, ctx, invite_with, logs, ready, s, value};
use crate::uac::{LocalReply, Uac, UacError};

const RR_UP: &str = "Record-Route: <sip:upstream.example.com;lr>";
const OURS: &str = "<sip:192.0.2.1;lr>";

fn sip(raw: &str) -> SipMessage {
    SipMessage::parse(raw.as_bytes().to_vec()).unwrap()
}

/// The INVITE from an upstream proxy that record-routed it.
fn invite() -> String {
    invite_with(&[], &[RR_UP])
}

/// A reply to [`invite`] from the callee (To tag b1), after us: the
/// callee-side proxy's Record-Route above ours and the upstream one.
fn reply(status: u16, reason: &str) -> String {
    format!(
        "SIP/2.0 {status} {reason}\r\n\
Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-1\r\n\
Record-Route: <sip:downstream.example.com;lr>\r\n\
Record-Route: {OURS}\r\n\
{RR_UP}\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>;tag=b1\r\n\
Call-ID: call-1@192.0.2.7\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:bob@198.51.100.9:5062>\r\n\
Content-Length: 0\r\n\r\n"
    )
}

/// An in-dialog request from the caller (`from_caller`) or the callee.
fn in_dialog(method: &str, cseq: u32, from_caller: bool) -> String {
    let (from, to) = if from_caller {
        (
            "\"Alice\" <sip:alice@example.com>;tag=a1",
            "<sip:bob@example.com>;tag=b1",
        )
    } else {
        (
            "<sip:bob@example.com>;tag=b1",
            "\"Alice\" <sip:alice@example.com>;tag=a1",
        )
    };
    format!(
        "{method} sip:x@192.0.2.9 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-{method}{cseq}\r\n\
From: {from}\r\n\
To: {to}\r\n\
Call-ID: call-1@192.0.2.7\r\n\
CSeq: {cseq} {method}\r\n\
Content-Length: 0\r\n\r\n"
    )
}

/// The INVITE as the proxy relayed it: ours added on top.
fn relayed(table: &Dialogs, now: Instant) {
    let mut c = ctx(&invite());
    let m = crate::testing::message(&mut c);
    let ours = format!("Record-Route: {OURS}");
    assert!(
        m.edits
            .insert_before(&m.sip, "Record-Route", &ours)
            .unwrap()
    );
    table.relayed(m, now);
}

/// A dialog taken to confirmed (200 and ACK) through the proxy's hooks.
fn confirmed(table: &Dialogs, now: Instant) -> DialogId {
    table.admit(&sip(&invite()), now).unwrap();
    let id = table.manage(&sip(&invite()), now).unwrap();
    relayed(table, now);
    table.reply_out(&sip(&reply(180, "Ringing")), now);
    assert_eq!(table.with(id, |d| d.state), Some(State::Early));
    table.reply_out(&sip(&reply(200, "OK")), now);
    assert_eq!(table.with(id, |d| d.state), Some(State::ConfirmedNoAck));
    table.in_dialog(&sip(&in_dialog("ACK", 1, true)), now);
    assert_eq!(table.with(id, |d| d.state), Some(State::Confirmed));
    id
}

#[test]
fn a_call_goes_unconfirmed_early_confirmed_and_a_bye_deletes_it() {
    let table = Dialogs::default();
    let now = Instant::now();
    let id = confirmed(&table, now);
    assert_eq!(table.counts(), (0, 1));
    let d = table.with(id, |d| d.clone()).unwrap();
    assert_eq!(d.caller.route_set, vec!["<sip:upstream.example.com;lr>"]);
    assert_eq!(d.callee.route_set, vec!["<sip:downstream.example.com;lr>"]);
    assert_eq!(d.callee.contact, "sip:bob@198.51.100.9:5062");
    assert_eq!(d.caller.contact, "sip:alice@192.0.2.7:5070");
    assert_eq!(
        table.in_dialog(&sip(&in_dialog("BYE", 2, false)), now),
        Some(id)
    );
    assert_eq!(table.with(id, |d| d.state), Some(State::Deleted));
    assert_eq!(table.calls(), 0);
    // It lingers for the BYE's routes, then goes.
    assert!(table.with(id, |_| ()).is_some());
    table.tick(now + Duration::from_secs(6));
    assert!(table.with(id, |_| ()).is_none());
}

#[test]
fn a_negative_final_reply_deletes_an_early_dialog_but_not_a_confirmed_one() {
    let table = Dialogs::default();
    let now = Instant::now();
    table.admit(&sip(&invite()), now).unwrap();
    relayed(&table, now);
    assert_eq!(table.calls(), 1);
    assert!(
        table
            .reply_out(&sip(&reply(486, "Busy Here")), now)
            .is_some()
    );
    assert_eq!(table.calls(), 0);

    let id = confirmed(&table, now);
    // A re-INVITE's 491 changes nothing.
    assert_eq!(
        table.reply_out(&sip(&reply(491, "Request Pending")), now),
        None
    );
    assert_eq!(table.with(id, |d| d.state), Some(State::Confirmed));
}

#[test]
fn max_calls_refuses_past_the_quota_and_an_unrelayed_invite_frees_its_slot() {
    let table = Dialogs::new(DialogSettings {
        max_calls: Some(1),
        ..DialogSettings::default()
    });
    let now = Instant::now();
    let first = invite();
    let second = invite_with(&[("Call-ID:", "Call-ID: call-2@192.0.2.7")], &[]);
    table.admit(&sip(&first), now).unwrap();
    // The same INVITE again (a new attempt after a challenge) is admitted.
    table.admit(&sip(&first), now).unwrap();
    assert_eq!(table.admit(&sip(&second), now), Err(Refusal::MaxCalls(1)));
    assert_eq!(table.refused(), 1);
    // The route answered the first itself (e.g. 407): its slot is free.
    assert!(table.routed(&sip(&first)).is_some());
    table.admit(&sip(&second), now).unwrap();
    assert_eq!(table.calls(), 1);
}

/// A [`Uac`] that records what it is asked to send and answers `status`.
struct Recorder {
    sent: Mutex<Vec<LocalRequest>>,
    status: u16,
}

#[async_trait::async_trait]
impl Uac for Recorder {
    async fn send(&self, request: LocalRequest) -> Result<LocalReply, UacError> {
        self.sent.lock().unwrap().push(request);
        Ok(LocalReply {
            status: self.status,
            reason: "test".into(),
        })
    }
}

#[test]
fn a_lifetime_ends_with_in_dialog_byes_to_both_sides() {
    let table = Dialogs::default();
    let now = Instant::now();
    let id = confirmed(&table, now);
    // The callee sent a request (CSeq 7); the caller's INVITE was 1.
    table.in_dialog(&sip(&in_dialog("INFO", 7, false)), now);
    assert!(table.set_timeout(id, 2, now));
    assert!(table.tick(now + Duration::from_secs(1)).requests.is_empty());
    let due = table.tick(now + Duration::from_secs(2));
    assert_eq!(due.ended, vec![id]);
    let byes: Vec<_> = due
        .requests
        .iter()
        .map(|(_, p, r)| (*p, r.clone()))
        .collect();
    assert_eq!(byes.len(), 2);
    let to_caller = &byes[0].1;
    assert_eq!(byes[0].0, Purpose::Bye);
    assert_eq!(to_caller.method, "BYE");
    assert_eq!(to_caller.ruri, "sip:alice@192.0.2.7:5070");
    assert_eq!(to_caller.from, "<sip:bob@example.com>;tag=b1");
    assert_eq!(to_caller.to, "\"Alice\" <sip:alice@example.com>;tag=a1");
    assert_eq!(to_caller.call_id, "call-1@192.0.2.7");
    assert_eq!(to_caller.cseq, 8);
    assert_eq!(to_caller.route, vec!["<sip:upstream.example.com;lr>"]);
    assert_eq!(to_caller.socket.as_deref(), Some("udp:192.0.2.1:5060"));
    let to_callee = &byes[1].1;
    assert_eq!(to_callee.ruri, "sip:bob@198.51.100.9:5062");
    assert_eq!(to_callee.from, "\"Alice\" <sip:alice@example.com>;tag=a1");
    assert_eq!(to_callee.to, "<sip:bob@example.com>;tag=b1");
    assert_eq!(to_callee.cseq, 2);
    assert_eq!(to_callee.route, vec!["<sip:downstream.example.com;lr>"]);
    assert_eq!(table.calls(), 0);
}

#[test]
fn no_bye_on_timeout_without_send_bye_or_timeout_bye() {
    let table = Dialogs::new(DialogSettings {
        send_bye: false,
        ..DialogSettings::default()
    });
    let now = Instant::now();
    let id = confirmed(&table, now);
    table.set_timeout(id, 1, now);
    let due = table.tick(now + Duration::from_secs(1));
    assert!(due.requests.is_empty());
    assert_eq!(due.ended, vec![id]);
}

#[test]
fn keep_alives_that_fail_end_the_call_with_a_bye_to_the_other_side() {
    let table = Dialogs::new(DialogSettings {
        ka_interval: 10,
        ka_failed_limit: 2,
        ..DialogSettings::default()
    });
    let now = Instant::now();
    let id = confirmed(&table, now);
    table.update(id, |d| d.ka_dst = true);
    assert!(table.tick(now + Duration::from_secs(5)).requests.is_empty());
    let due = table.tick(now + Duration::from_secs(10));
    assert_eq!(due.requests.len(), 1);
    let (_, purpose, ka) = &due.requests[0];
    assert_eq!(*purpose, Purpose::KeepAlive(Side::Callee));
    assert_eq!((ka.method.as_str(), ka.cseq), ("OPTIONS", 2));
    let later = now + Duration::from_secs(11);
    assert!(
        table
            .keep_alive_answered(id, Side::Callee, 408, later)
            .is_none()
    );
    let bye = table
        .keep_alive_answered(id, Side::Callee, 481, later)
        .unwrap();
    assert_eq!(
        (bye.method.as_str(), bye.ruri.as_str()),
        ("BYE", "sip:alice@192.0.2.7:5070")
    );
    assert_eq!(table.with(id, |d| d.state), Some(State::Deleted));
}

#[tokio::test]
async fn dlg_bye_sends_through_the_proxy_and_ends_the_dialog() {
    let mut c = ctx(&in_dialog("INFO", 2, true));
    let state = Arc::new(TenantState::default());
    c.state = state.clone();
    let now = Instant::now();
    let id = confirmed(&state.dialog.table, now);
    // Without the proxy nothing is sent and the script gets -1.
    assert_eq!(c.dlg_bye("callee".into()).await, -1);
    let recorder = Arc::new(Recorder {
        sent: Mutex::default(),
        status: 200,
    });
    state.uac.set(recorder.clone());
    assert_eq!(c.dlg_bye("sideways".into()).await, -1);
    assert!(logs(&c).last().unwrap().contains("unknown side"));
    assert_eq!(c.dlg_bye("callee".into()).await, 1);
    for _ in 0..50 {
        if !recorder.sent.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = recorder.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].ruri, "sip:bob@198.51.100.9:5062");
    assert_eq!(
        state.dialog.table.with(id, |d| d.state),
        Some(State::Deleted)
    );
}

#[test]
fn flags_vars_properties_and_pvs_of_the_messages_dialog() {
    let mut c = ctx(INVITE);
    assert_eq!(ready(c.is_known_dlg()), -1);
    assert_eq!(ready(c.dlg_setflag(3)), -1);
    assert_eq!(ready(c.dlg_manage()), 1);
    assert_eq!(ready(c.is_known_dlg()), 1);
    assert_eq!(ready(c.dlg_setflag(3)), 1);
    assert_eq!(ready(c.dlg_isflagset(3)), 1);
    assert_eq!(ready(c.dlg_isflagset(4)), -1);
    assert_eq!(ready(c.dlg_setflag(32)), -1);
    assert_eq!(ready(c.dlg_resetflag(3)), 1);
    assert_eq!(ready(c.dlg_isflagset(3)), -1);
    assert_eq!(ready(c.var_sets("plan".into(), "gold".into())), 1);
    assert_eq!(value(ready(c.var_get("plan".into()))), s("gold"));
    assert_eq!(ready(c.var_is_null("plan".into())), -1);
    assert_eq!(value(ready(c.var_getw("none".into()))), s("<null>"));
    assert_eq!(
        value(ready(c.dlg_get_var(
            "call-1@192.0.2.7".into(),
            "a1".into(),
            "".into(),
            "plan".into()
        ))),
        s("gold")
    );
    ready(c.sets("$dlg_var(plan)".into(), "silver".into()));
    assert_eq!(value(ready(c.get("$dlg_var(plan)".into()))), s("silver"));
    assert_eq!(
        value(ready(c.get("$dlg(state)".into()))),
        Some(PvValue::Int(1))
    );
    assert_eq!(
        value(ready(c.get("$dlg(callid)".into()))),
        s("call-1@192.0.2.7")
    );
    assert_eq!(value(ready(c.get("$dlg(from_tag)".into()))), s("a1"));
    assert_eq!(
        value(ready(c.get("$dlg(lifetime)".into()))),
        Some(PvValue::Int(43200))
    );
    assert_eq!(ready(c.dlg_set_timeout(30)), 1);
    assert_eq!(
        value(ready(c.get("$dlg_ctx(timeout)".into()))),
        Some(PvValue::Int(30))
    );
    assert_eq!(ready(c.dlg_set_property("timeout-bye".into())), 1);
    assert_eq!(
        value(ready(c.get("$dlg_ctx(timeout_bye)".into()))),
        Some(PvValue::Int(1))
    );
    assert_eq!(ready(c.dlg_set_property("nope".into())), -1);
    assert_eq!(
        value(ready(c.get("$dlg_ctx(dir)".into()))),
        Some(PvValue::Int(1))
    );
    let (he, hi) = match (
        ready(c.get("$dlg(h_entry)".into())),
        ready(c.get("$dlg(h_id)".into())),
    ) {
        (Xval::Int(he), Xval::Int(hi)) => (he, hi),
        other => panic!("{other:?}"),
    };
    assert_eq!(ready(c.dlg_set_timeout_id(60, he, hi)), 1);
    assert_eq!(ready(c.dlg_set_timeout_id(60, he, hi + 1)), -1);
    assert_eq!(
        value(ready(c.get("$dlg(lifetime)".into()))),
        Some(PvValue::Int(60))
    );
}

#[test]
fn profiles_count_the_dialogs_in_them_until_they_end() {
    let mut c = ctx(INVITE);
    assert_eq!(ready(c.set_dlg_profile_static("calls".into())), -1);
    assert_eq!(ready(c.dlg_manage()), 1);
    assert_eq!(ready(c.set_dlg_profile_static("calls".into())), 1);
    assert_eq!(ready(c.set_dlg_profile("caller".into(), "alice".into())), 1);
    assert_eq!(ready(c.is_in_profile_static("caller".into())), 1);
    assert_eq!(ready(c.is_in_profile("caller".into(), "bob".into())), -1);
    assert_eq!(
        ready(c.get_profile_size("caller".into(), "alice".into(), "$var(n)".into())),
        1
    );
    assert_eq!(value(ready(c.get("$var(n)".into()))), Some(PvValue::Int(1)));
    assert_eq!(
        ready(c.get_profile_size_static("calls".into(), "$si".into())),
        -1
    );
    assert_eq!(
        ready(c.unset_dlg_profile("caller".into(), "alice".into())),
        1
    );
    assert_eq!(
        ready(c.unset_dlg_profile("caller".into(), "alice".into())),
        -1
    );
    // The call fails: it leaves its profiles.
    ready(
        c.state
            .dialog
            .reply_out(reply(480, "Unavailable").as_bytes()),
    );
    assert_eq!(
        ready(c.get_profile_size_static("calls".into(), "$var(n)".into())),
        1
    );
    assert_eq!(value(ready(c.get("$var(n)".into()))), Some(PvValue::Int(0)));
}
