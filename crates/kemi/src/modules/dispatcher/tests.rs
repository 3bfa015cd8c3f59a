//! The KSR functions on a routed message.

use std::sync::Arc;

use super::*;
use crate::TenantState;
use crate::testing::{INVITE, ctx, invite_with, logs, message, ready};

use super::sets::{Dispatcher, Sets, Settings};

const LIST: &str = "1 sip:10.0.0.1:5060 0 0 duid=a;weight=50\n\
1 sip:10.0.0.2:5060 0 0 duid=b;weight=30\n\
1 sip:10.0.0.3:5060 0 0 duid=c;weight=20\n\
2 sip:192.0.2.7:5070 0 0 gw=yes\n\
3 sip:192.0.2.7;transport=tcp\n";

fn settings(flags: u32) -> Settings {
    Settings {
        flags,
        hash_size: 4,
        ..Settings::default()
    }
}

fn with(raw: &str, settings: Settings, list: &str) -> Ctx {
    let mut c = ctx(raw);
    let sets = ready(Sets::build("t1", list::parse(list).unwrap()));
    c.state = Arc::new(TenantState {
        dispatcher: Dispatcher::new(settings, sets),
        ..TenantState::default()
    });
    c
}

fn du(c: &mut Ctx) -> Option<String> {
    message(c).dst_uri.clone()
}

fn uris(c: &mut Ctx) -> Vec<String> {
    entries(message(c)).into_iter().map(|e| e.uri).collect()
}

#[test]
fn round_robin_sets_du_and_keeps_the_rest_for_failover() {
    let mut c = with(INVITE, settings(FLAG_FAILOVER), LIST);
    assert_eq!(ready(c.ds_select_dst(1, 4)), 1);
    assert_eq!(du(&mut c).as_deref(), Some("sip:10.0.0.1:5060"));
    assert_eq!(
        uris(&mut c),
        vec![
            "sip:10.0.0.1:5060",
            "sip:10.0.0.2:5060",
            "sip:10.0.0.3:5060"
        ]
    );
    assert_eq!(message(&mut c).avps[AVP_CNT], vec![PvValue::Int(3)]);
    assert_eq!(message(&mut c).avps[AVP_GRP][0], PvValue::Int(1));
    assert_eq!(message(&mut c).avps[AVP_DSTID][0], PvValue::Str("a".into()));
    // The next call starts at the next destination, wrapping.
    let mut c2 = ctx(INVITE);
    c2.state = c.state.clone();
    assert_eq!(ready(c2.ds_select_dst(1, 4)), 1);
    assert_eq!(
        uris(&mut c2),
        vec![
            "sip:10.0.0.2:5060",
            "sip:10.0.0.3:5060",
            "sip:10.0.0.1:5060"
        ]
    );
    // Failover through the list, then nothing more.
    assert_eq!(ready(c.ds_next_dst()), 1);
    assert_eq!(du(&mut c).as_deref(), Some("sip:10.0.0.2:5060"));
    assert_eq!(ready(c.ds_next_dst()), 1);
    assert_eq!(du(&mut c).as_deref(), Some("sip:10.0.0.3:5060"));
    assert_eq!(ready(c.ds_next_dst()), -1);
    assert_eq!(
        du(&mut c).as_deref(),
        Some("sip:10.0.0.3:5060"),
        "unchanged"
    );
}

#[test]
fn without_the_failover_flag_only_the_selected_is_kept_and_limit_caps() {
    let mut c = with(INVITE, settings(0), LIST);
    assert_eq!(ready(c.ds_select_dst(1, 8)), 1);
    assert_eq!(uris(&mut c).len(), 1);
    assert_eq!(ready(c.ds_next_dst()), -1);
    let mut c = with(INVITE, settings(FLAG_FAILOVER), LIST);
    assert_eq!(ready(c.ds_select_dst_limit(1, 8, 2)), 1);
    assert_eq!(uris(&mut c), vec!["sip:10.0.0.1:5060", "sip:10.0.0.2:5060"]);
}

#[test]
fn domain_variants_rewrite_the_ruri_host_and_port() {
    let mut c = with(INVITE, settings(FLAG_FAILOVER), LIST);
    assert_eq!(ready(c.ds_select_domain(1, 8)), 1);
    assert_eq!(
        message(&mut c).ruri().as_deref(),
        Some("sip:bob@10.0.0.1:5060")
    );
    assert_eq!(du(&mut c), None);
    assert_eq!(ready(c.ds_next_domain()), 1);
    assert_eq!(
        message(&mut c).ruri().as_deref(),
        Some("sip:bob@10.0.0.2:5060")
    );
    // ds_select only fills the list; ds_set_dst uses its current one.
    let mut c = with(INVITE, settings(FLAG_FAILOVER), LIST);
    assert_eq!(ready(c.ds_select(1, 8)), 1);
    assert_eq!(du(&mut c), None);
    assert_eq!(ready(c.ds_set_dst()), 1);
    assert_eq!(du(&mut c).as_deref(), Some("sip:10.0.0.1:5060"));
}

#[test]
fn force_dst_off_keeps_a_du_already_set() {
    let mut c = with(
        INVITE,
        Settings {
            force_dst: false,
            ..settings(0)
        },
        LIST,
    );
    message(&mut c).dst_uri = Some("sip:10.9.9.9".into());
    assert_eq!(ready(c.ds_select_dst(1, 4)), -1);
    assert_eq!(du(&mut c).as_deref(), Some("sip:10.9.9.9"));
}

#[test]
fn unknown_sets_and_inactive_destinations() {
    let mut c = with(INVITE, settings(FLAG_FAILOVER), LIST);
    assert_eq!(ready(c.ds_select_dst(9, 4)), -1);
    assert!(
        logs(&c).iter().any(|l| l.contains("no destination set 9")),
        "{:?}",
        logs(&c)
    );
    assert_eq!(ready(c.ds_list_exists(1)), 1);
    assert_eq!(ready(c.ds_list_exists(9)), -1);
    assert_eq!(ready(c.ds_is_active(1)), 1);
    c.state.dispatcher.set_state(1, None, INACTIVE).unwrap();
    assert_eq!(ready(c.ds_is_active(1)), -1);
    assert_eq!(ready(c.ds_is_active_uri(1, "sip:10.0.0.1:5060".into())), -1);
    assert_eq!(ready(c.ds_select_dst(1, 4)), -1, "nothing active");
    c.state
        .dispatcher
        .set_state(1, Some("sip:10.0.0.2:5060"), 0)
        .unwrap();
    assert_eq!(ready(c.ds_is_active_uri(1, "sip:10.0.0.2:5060".into())), 1);
    assert_eq!(ready(c.ds_select_dst(1, 0)), 1);
    assert_eq!(
        uris(&mut c),
        vec!["sip:10.0.0.2:5060"],
        "only the active one"
    );
}

#[test]
fn mark_dst_changes_the_current_destination() {
    let mut c = with(INVITE, settings(FLAG_FAILOVER), LIST);
    assert_eq!(ready(c.ds_mark_dst()), -1, "no selection");
    assert_eq!(ready(c.ds_select_dst(1, 8)), 1);
    assert_eq!(ready(c.ds_mark_dst_state("ip".into())), 1);
    let sets = c.state.dispatcher.sets();
    assert_eq!(
        sets.find(1, "sip:10.0.0.1:5060")
            .unwrap()
            .health()
            .letters(),
        "IP"
    );
    assert_eq!(ready(c.ds_mark_dst_state("x".into())), -1);
    assert!(logs(&c).iter().any(|l| l.contains("state \"x\"")));
    assert_eq!(ready(c.ds_next_dst()), 1);
    assert_eq!(ready(c.ds_mark_dst()), 1);
    assert_eq!(
        sets.find(1, "sip:10.0.0.2:5060")
            .unwrap()
            .health()
            .letters(),
        "IX"
    );
    assert_eq!(parse_state("ap"), Some(PROBING));
    assert_eq!(parse_state("t"), Some(TRYING));
    assert_eq!(parse_state("dp"), None);
}

#[test]
fn is_from_list_matches_the_source_and_only_it() {
    // Test messages come from 192.0.2.7:5070 over UDP.
    let settings = Settings {
        setid_pvname: Some("$var(setid)".into()),
        attrs_pvname: Some("$avp(dsattrs)".into()),
        ..settings(0)
    };
    let mut c = with(INVITE, settings, LIST);
    assert_eq!(ready(c.ds_is_from_lists()), 1);
    assert_eq!(c.vars.get("setid"), Some(&PvValue::Int(2)));
    assert_eq!(
        message(&mut c).avps["dsattrs"][0],
        PvValue::Str("gw=yes".into())
    );
    assert_eq!(ready(c.ds_is_from_list(2)), 1);
    assert_eq!(ready(c.ds_is_from_list(1)), -1);
    // Set 3 has no port (any) but TCP: only when the protocol is ignored.
    assert_eq!(ready(c.ds_is_from_list_mode(3, 0)), -1);
    assert_eq!(ready(c.ds_is_from_list_mode(3, 2)), 1);
    assert_eq!(
        ready(c.ds_is_from_list_uri(1, 0, "sip:10.0.0.3:5060".into())),
        1
    );
    assert_eq!(
        ready(c.ds_is_from_list_uri(1, 0, "sip:10.0.0.3:5061".into())),
        -1
    );
    assert_eq!(
        ready(c.ds_is_from_list_uri(1, 1, "sip:10.0.0.3:5061".into())),
        1,
        "port ignored"
    );
    assert_eq!(
        ready(c.ds_is_from_list_uri(-1, 0, "sip:10.0.0.4:5060".into())),
        -1
    );
    // Mode 4: active ones only.
    c.state.dispatcher.set_state(2, None, INACTIVE).unwrap();
    assert_eq!(ready(c.ds_is_from_list_mode(2, 4)), -1);
    assert_eq!(ready(c.ds_is_from_list_mode(2, 0)), 1);
    assert_eq!(ready(c.ds_is_from_list_uri(1, 0, "bad uri".into())), -1);
}

#[test]
fn parallel_forking_appends_a_branch_per_other_destination() {
    let mut c = with(INVITE, settings(FLAG_FAILOVER), LIST);
    assert_eq!(ready(c.ds_select_dst(1, 12)), 1);
    assert_eq!(du(&mut c).as_deref(), Some("sip:10.0.0.1:5060"));
    let branches: Vec<_> = (message(&mut c).branches.iter())
        .map(|b| (b.uri.clone(), b.dst_uri.clone()))
        .collect();
    assert_eq!(
        branches,
        vec![
            (
                "sip:bob@example.com".into(),
                Some("sip:10.0.0.2:5060".into())
            ),
            (
                "sip:bob@example.com".into(),
                Some("sip:10.0.0.3:5060".into())
            ),
        ]
    );
    assert_eq!(
        uris(&mut c).len(),
        1,
        "no failover list for parallel forking"
    );
}

#[test]
fn select_routes_combines_sets() {
    let mut c = with(INVITE, settings(FLAG_FAILOVER), LIST);
    assert_eq!(ready(c.ds_select_routes("2=4;1=8".into(), "dst".into())), 1);
    assert_eq!(du(&mut c).as_deref(), Some("sip:192.0.2.7:5070"));
    assert_eq!(uris(&mut c).len(), 4);
    let mut c = with(INVITE, settings(FLAG_FAILOVER), LIST);
    assert_eq!(
        ready(c.ds_select_routes_limit("1=8".into(), "ruri".into(), 2)),
        1
    );
    assert_eq!(
        message(&mut c).ruri().as_deref(),
        Some("sip:bob@10.0.0.1:5060")
    );
    assert_eq!(uris(&mut c).len(), 2);
    assert_eq!(ready(c.ds_select_routes("1".into(), "d".into())), -1);
    assert_eq!(ready(c.ds_select_routes("1=4".into(), "q".into())), -1);
}

#[test]
fn call_load_follows_the_call() {
    let mut c = with(INVITE, settings(FLAG_FAILOVER), LIST);
    assert_eq!(ready(c.ds_select_dst(1, 10)), 1);
    let ds = &c.state.dispatcher;
    assert_eq!(ds.call_load(1, "a"), 1);
    // Failover moves the load.
    assert_eq!(ready(c.ds_next_dst()), 1);
    let ds = &c.state.dispatcher;
    assert_eq!((ds.call_load(1, "a"), ds.call_load(1, "b")), (0, 1));
    // A 200 to the INVITE confirms it; the BYE removes it.
    let reply = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-1\r\n\
        From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b1\r\n\
        Call-ID: call-1@192.0.2.7\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let mut r = ctx(reply);
    r.state = c.state.clone();
    assert_eq!(ready(r.ds_load_update()), 1);
    assert_eq!(c.state.dispatcher.tracked_calls(), (0, 1));
    let bye = invite_with(
        &[
            ("INVITE ", "BYE sip:bob@10.0.0.2 SIP/2.0"),
            ("CSeq:", "CSeq: 2 BYE"),
        ],
        &[],
    );
    let mut b = ctx(&bye);
    b.state = c.state.clone();
    assert_eq!(ready(b.ds_load_update()), 1);
    assert_eq!(c.state.dispatcher.call_load(1, "b"), 0);
    assert_eq!(ready(b.ds_load_update()), -1, "no longer tracked");
    assert_eq!(ready(b.ds_load_unset()), -1);
    // Without ds_hash_size algorithm 10 is refused.
    let mut c = with(INVITE, Settings::default(), LIST);
    assert_eq!(ready(c.ds_select_dst(1, 10)), -1);
    assert!(logs(&c).iter().any(|l| l.contains("ds_hash_size")));
}

#[test]
fn reload_swaps_the_sets_and_keeps_states_by_uri() {
    let dir = std::env::temp_dir().join(format!("kemibox-ds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dispatcher.list");
    std::fs::write(&file, "1 sip:10.0.0.1\n1 sip:10.0.0.2\n").unwrap();
    let settings = Settings {
        list_file: Some(file.clone()),
        flags: FLAG_FAILOVER,
        ..Settings::default()
    };
    let ds = ready(Dispatcher::open("t1", settings, None)).unwrap();
    let mut c = ctx(INVITE);
    c.state = Arc::new(TenantState {
        dispatcher: ds,
        ..TenantState::default()
    });
    assert_eq!(ready(c.ds_select_dst(1, 8)), 1);
    c.state
        .dispatcher
        .set_state(1, Some("sip:10.0.0.2"), INACTIVE | PROBING)
        .unwrap();
    std::fs::write(&file, "1 sip:10.0.0.2\n1 sip:10.0.0.3\n2 sip:10.0.0.9\n").unwrap();
    assert_eq!(ready(c.ds_reload()), 1);
    let sets = c.state.dispatcher.sets();
    assert_eq!(
        sets.find(1, "sip:10.0.0.2").unwrap().health().letters(),
        "IP"
    );
    assert_eq!(
        sets.find(1, "sip:10.0.0.3").unwrap().health().letters(),
        "AX"
    );
    assert!(sets.find(1, "sip:10.0.0.1").is_none());
    assert_eq!(ready(c.ds_list_exists(2)), 1);
    // The call in progress keeps its list (by URI).
    assert_eq!(ready(c.ds_next_dst()), 1);
    assert_eq!(du(&mut c).as_deref(), Some("sip:10.0.0.2"));
    // A broken file keeps the sets.
    std::fs::write(&file, "x sip:10.0.0.2\n").unwrap();
    assert_eq!(ready(c.ds_reload()), -1);
    assert!(
        logs(&c).iter().any(|l| l.contains("line 1")),
        "{:?}",
        logs(&c)
    );
    assert_eq!(c.state.dispatcher.sets().sets.len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hash_keys() {
    assert_eq!(
        uri_key(Some("sip:Bob@Example.com"), false),
        "Bob@example.com"
    );
    assert_eq!(
        uri_key(Some("sip:bob@example.com:5080"), false),
        "bob@example.com:5080"
    );
    assert_eq!(uri_key(Some("sip:bob@example.com:5060"), true), "bob");
    let c = with(
        &invite_with(
            &[],
            &["Proxy-Authorization: Digest username=\"alice\", realm=\"x\""],
        ),
        settings(0),
        LIST,
    );
    assert_eq!(
        auth_user(c.message.as_ref().unwrap()).as_deref(),
        Some("alice")
    );
}

#[test]
fn metrics_per_destination() {
    let mut c = with(INVITE, settings(FLAG_FAILOVER), LIST);
    assert_eq!(ready(c.ds_select_dst(1, 10)), 1);
    assert_eq!(ready(c.ds_select_dst(1, 8)), 1);
    c.state
        .dispatcher
        .set_state(1, Some("sip:10.0.0.3:5060"), INACTIVE | PROBING)
        .unwrap();
    let mut out = Vec::new();
    c.state.dispatcher.metric_series(&mut out);
    let find = |name: &str, uri: &str| {
        out.iter()
            .find(|s| s.name == name && s.labels.iter().any(|(k, v)| *k == "uri" && v == uri))
            .unwrap_or_else(|| panic!("{name} {uri}: {out:?}"))
    };
    let up = find("kemibox_dispatcher_destination_up", "sip:10.0.0.3:5060");
    assert_eq!(up.value, 0);
    assert!(up.labels.contains(&("state", "IP".to_string())));
    assert_eq!(
        find("kemibox_dispatcher_destination_up", "sip:10.0.0.1:5060").value,
        1
    );
    assert_eq!(
        find("kemibox_dispatcher_selections_total", "sip:10.0.0.1:5060").value,
        2
    );
    assert_eq!(
        find("kemibox_dispatcher_destination_calls", "sip:10.0.0.1:5060").value,
        1
    );
}

#[test]
fn sets_from_the_table_are_the_tenants_rows_reread_on_reload() {
    use kemibox_store::{DispatcherRow, DispatcherStore, SqliteStore};
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let row = |setid: i32, uri: &str, flags: i32, attrs: &str| DispatcherRow {
        id: 0,
        setid,
        destination: uri.into(),
        flags,
        priority: 0,
        attrs: attrs.into(),
        description: "gw".into(),
    };
    ready(store.add_destination("t1", &row(1, "sip:10.0.0.1", 0, "weight=70"))).unwrap();
    ready(store.add_destination("t2", &row(1, "sip:10.0.0.99", 0, ""))).unwrap();
    let settings = Settings {
        db: true,
        ..Settings::default()
    };
    let table = sets::Table(store.clone());
    let ds = ready(Dispatcher::open("t1", settings, Some(table))).unwrap();
    let sets = ds.sets();
    let d = sets.find(1, "sip:10.0.0.1").expect("the tenant's row");
    assert_eq!((d.attrs.weight, d.description.as_str()), (70, "gw"));
    assert!(
        sets.find(1, "sip:10.0.0.99").is_none(),
        "not another tenant's"
    );
    ready(store.add_destination("t1", &row(2, "sip:10.0.0.2", 8, ""))).unwrap();
    assert_eq!(ready(ds.reload("t1")), Ok(2));
    assert_eq!(
        ds.sets()
            .find(2, "sip:10.0.0.2")
            .unwrap()
            .health()
            .letters(),
        "AP"
    );
    // A row the module cannot take: the reload fails naming it, the sets
    // stay.
    let bad = ready(store.add_destination("t1", &row(1, "tel:+123", 0, ""))).unwrap();
    let err = ready(ds.reload("t1")).unwrap_err();
    assert!(err.contains(&format!("row {bad}")), "{err}");
    assert_eq!(ds.sets().all().count(), 2);
    // Without the table, nothing to read from.
    let lost = Settings {
        db: true,
        ..Settings::default()
    };
    assert!(ready(Dispatcher::open("t1", lost, None)).is_err());
}
