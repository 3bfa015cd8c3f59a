//! The dialog state machine driven as the proxy drives it, the functions
//! and pseudo-variables a script sees, lifetimes and the BYEs they send
//! through a recording [`Uac`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kemibox_sip::SipMessage;

use super::table::{Change, DialogSettings, Dialogs, Purpose, Refusal, Side, State};
use super::*;
use crate::bindings::kemibox::ksr::pv::Host as _;
use crate::dialog_profiles::{DEFAULT_MAX_MEMBERSHIPS, ProfileSpecs};
use crate::testing::{INVITE, ctx, invite_with, logs, ready, s, value};
use crate::uac::{LocalReply, Uac, UacError};
use backup::Backup;

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

/// Dialogs tracked and not ended (early or confirmed).
fn live(table: &Dialogs) -> usize {
    let (early, active) = table.counts();
    early + active
}

/// A tenant with the profiles the tests use declared: `caller` with
/// values, `calls` without.
fn declared() -> Profiles {
    let specs = ProfileSpecs {
        with_value: vec!["caller".into()],
        no_value: vec!["calls".into()],
    };
    Profiles::new("t", &specs, DEFAULT_MAX_MEMBERSHIPS, None)
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
        Some(Change::Ended(id))
    );
    assert_eq!(table.with(id, |d| d.state), Some(State::Deleted));
    assert_eq!(live(&table), 0);
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
    assert_eq!(live(&table), 1);
    assert!(
        table
            .reply_out(&sip(&reply(486, "Busy Here")), now)
            .is_some()
    );
    assert_eq!(live(&table), 0);

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
    let dialog = DialogState::new(
        DialogSettings {
            max_calls: Some(1),
            ..DialogSettings::default()
        },
        None,
    );
    let profiles = declared();
    let first = invite();
    let second = invite_with(&[("Call-ID:", "Call-ID: call-2@192.0.2.7")], &[]);
    ready(dialog.admit(&profiles, &sip(&first))).unwrap();
    // The same INVITE again (a new attempt after a challenge) is admitted.
    ready(dialog.admit(&profiles, &sip(&first))).unwrap();
    assert_eq!(
        ready(dialog.admit(&profiles, &sip(&second))),
        Err((503, "Too Many Calls".into(), Refusal::MaxCalls(1)))
    );
    assert_eq!(dialog.table.metrics().refused.get(), 1);
    assert_eq!(live(&dialog.table), 1, "the refused one is not tracked");
    assert_eq!(ready(profiles.calls()), 1);
    // The route answered the first itself (e.g. 407): its slot is free.
    ready(dialog.routed(&profiles, &sip(&first)));
    assert_eq!(ready(profiles.calls()), 0);
    ready(dialog.admit(&profiles, &sip(&second))).unwrap();
    assert_eq!(live(&dialog.table), 1);
    assert_eq!(ready(profiles.calls()), 1);
    // Its failure (a negative final reply) frees it too.
    let failed = reply(486, "Busy Here").replace("call-1@", "call-2@");
    ready(dialog.reply_out(&profiles, failed.as_bytes()));
    assert_eq!(ready(profiles.calls()), 0);
    assert_eq!(
        (
            dialog.table.metrics().early.get(),
            dialog.table.metrics().active.get()
        ),
        (0, 0)
    );
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
    assert_eq!(live(&table), 0);
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
    c.state = Arc::new(TenantState {
        profiles: declared(),
        ..TenantState::default()
    });
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
    let state = c.state.clone();
    ready(
        state
            .dialog
            .reply_out(&state.profiles, reply(480, "Unavailable").as_bytes()),
    );
    assert_eq!(
        ready(c.get_profile_size_static("calls".into(), "$var(n)".into())),
        1
    );
    assert_eq!(value(ready(c.get("$var(n)".into()))), Some(PvValue::Int(0)));
}

#[test]
fn an_undeclared_profile_is_refused_as_kamailio_does() {
    let mut c = ctx(INVITE);
    c.state = Arc::new(TenantState {
        profiles: declared(),
        ..TenantState::default()
    });
    assert_eq!(ready(c.dlg_manage()), 1);
    assert_eq!(ready(c.set_dlg_profile_static("nope".into())), -1);
    assert!(logs(&c).last().unwrap().contains("set_dlg_profile_static"));
    assert!(logs(&c).last().unwrap().contains("profiles_no_value"));
    assert_eq!(ready(c.is_in_profile_static("nope".into())), -1);
    assert!(logs(&c).last().unwrap().contains("is_in_profile_static"));
    assert_eq!(
        ready(c.get_profile_size_static("nope".into(), "$var(n)".into())),
        -1
    );
    assert_eq!(
        ready(c.set_dlg_profile_static("caller".into())),
        -1,
        "caller is declared with values"
    );
    assert!(logs(&c).last().unwrap().contains("give one"));
    // Declared ones work, and the dialog's id is their member.
    assert_eq!(ready(c.set_dlg_profile("caller".into(), "bob".into())), 1);
    let id = c.dlg_current().unwrap();
    assert_eq!(
        c.state.profiles.memberships_of(&id.to_string()),
        [("caller".to_string(), Some("bob".to_string()))]
    );
}

/// A [`DialogBackup`] in memory: what a node saved, and whether it
/// answers.
#[derive(Default)]
struct MemoryBackup {
    records: Mutex<std::collections::BTreeMap<String, String>>,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl kemibox_store::DialogBackup for MemoryBackup {
    async fn save(
        &self,
        _tenant: &str,
        _node: &str,
        dialog: &str,
        record: &str,
    ) -> Result<(), kemibox_store::StoreError> {
        self.up()?;
        let mut records = self.records.lock().unwrap();
        records.insert(dialog.into(), record.into());
        Ok(())
    }
    async fn delete(
        &self,
        _tenant: &str,
        _node: &str,
        dialog: &str,
    ) -> Result<bool, kemibox_store::StoreError> {
        self.up()?;
        Ok(self.records.lock().unwrap().remove(dialog).is_some())
    }
    async fn load_all(
        &self,
        _tenant: &str,
        _node: &str,
    ) -> Result<Vec<(String, String)>, kemibox_store::StoreError> {
        self.up()?;
        let records = self.records.lock().unwrap();
        Ok(records.clone().into_iter().collect())
    }
}

impl MemoryBackup {
    fn up(&self) -> Result<(), kemibox_store::StoreError> {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(kemibox_store::StoreError::Unavailable {
                backend: "redis",
                detail: "down".into(),
            });
        }
        Ok(())
    }
}

#[test]
fn a_confirmed_dialog_is_saved_and_a_restarted_node_restores_it() {
    let store = Arc::new(MemoryBackup::default());
    let node = |store: &Arc<MemoryBackup>| {
        let backup = Backup::new(store.clone(), "n1", 100);
        (
            DialogState::new(DialogSettings::default(), Some(backup)),
            declared(),
        )
    };
    let (dialog, profiles) = node(&store);
    let now = Instant::now();
    ready(dialog.admit(&profiles, &sip(&invite()))).unwrap();
    let id = dialog.table.manage(&sip(&invite()), now).unwrap();
    ready(profiles.add("caller", Some("alice"), &id.to_string())).unwrap();
    relayed(&dialog.table, now);
    let flush = |dialog: &DialogState, profiles: &Profiles| {
        ready(dialog.backup().unwrap().flush("t", &dialog.table, profiles));
    };
    flush(&dialog, &profiles);
    assert!(
        store.records.lock().unwrap().is_empty(),
        "not confirmed yet"
    );
    ready(dialog.reply_out(&profiles, reply(200, "OK").as_bytes()));
    ready(dialog.in_dialog(&profiles, &sip(&in_dialog("ACK", 1, true))));
    dialog.table.update(id, |d| d.flags = 5);
    dialog.table.set_timeout(id, 3600, now);
    dialog.touch(id);
    // Redis down: nothing is lost, the record is written once it answers.
    store.down.store(true, std::sync::atomic::Ordering::Relaxed);
    flush(&dialog, &profiles);
    assert_eq!(profiles.metrics().failures.get(), 1);
    store
        .down
        .store(false, std::sync::atomic::Ordering::Relaxed);
    flush(&dialog, &profiles);
    let key = id.to_string();
    let saved = store.records.lock().unwrap().get(&key).cloned().unwrap();
    assert!(saved.contains("\"flags\":5"), "{saved}");

    // The node restarts: a new table and profiles find the call.
    let (restarted, profiles2) = node(&store);
    assert_eq!(ready(restarted.restore("t", &profiles2)), 1);
    assert_eq!(restarted.table.counts(), (0, 1));
    assert_eq!(ready(profiles2.calls()), 1);
    assert_eq!(ready(profiles2.size("caller", Some("alice"))), Ok(1));
    let d = restarted.table.with(id, |d| d.clone()).unwrap();
    assert_eq!((d.state, d.flags, d.timeout), (State::Confirmed, 5, 3600));
    assert_eq!(d.callee.contact, "sip:bob@198.51.100.9:5062");
    assert!((3590..=3600).contains(&d.remaining(Instant::now())));
    // Its BYE finds it; it ends, and its record goes.
    ready(restarted.in_dialog(&profiles2, &sip(&in_dialog("BYE", 2, false))));
    assert_eq!(ready(profiles2.calls()), 0);
    assert_eq!(ready(profiles2.size("caller", None)), Ok(0));
    flush(&restarted, &profiles2);
    assert!(store.records.lock().unwrap().is_empty());
    // A new call after the restart gets a new id.
    ready(restarted.admit(
        &profiles2,
        &sip(&invite_with(&[("Call-ID:", "Call-ID: call-9@x")], &[])),
    ))
    .unwrap();
    assert!(restarted.table.list().iter().any(|d| d.id.h_id > id.h_id));
}

#[test]
fn a_lifetime_over_while_the_node_was_down_ends_with_byes_after_the_restart() {
    let store = Arc::new(MemoryBackup::default());
    let dialog = DialogState::new(
        DialogSettings::default(),
        Some(Backup::new(store.clone(), "n1", 100)),
    );
    let profiles = declared();
    let now = Instant::now();
    ready(dialog.admit(&profiles, &sip(&invite()))).unwrap();
    relayed(&dialog.table, now);
    ready(dialog.reply_out(&profiles, reply(200, "OK").as_bytes()));
    ready(
        dialog
            .backup()
            .unwrap()
            .flush("t", &dialog.table, &profiles),
    );
    // Saved with a lifetime that is over by the time it is read back.
    let key = store
        .records
        .lock()
        .unwrap()
        .keys()
        .next()
        .cloned()
        .unwrap();
    let text = store.records.lock().unwrap()[&key].clone();
    let mut record: backup::Record = serde_json::from_str(&text).unwrap();
    record.expires = kemibox_store::unix_now() - 10;
    store
        .records
        .lock()
        .unwrap()
        .insert(key, serde_json::to_string(&record).unwrap());
    let restarted = DialogState::new(
        DialogSettings::default(),
        Some(Backup::new(store.clone(), "n1", 100)),
    );
    let profiles = declared();
    assert_eq!(ready(restarted.restore("t", &profiles)), 1);
    let due = restarted.table.tick(Instant::now());
    assert_eq!(due.ended.len(), 1);
    let byes: Vec<&str> = due
        .requests
        .iter()
        .map(|(_, _, r)| r.ruri.as_str())
        .collect();
    assert_eq!(
        byes,
        ["sip:alice@192.0.2.7:5070", "sip:bob@198.51.100.9:5062"]
    );
}
