//! `$sht(table=>key)` of a table kept in Redis (`backend = "redis"`), read
//! by every module that reads pseudo-variables, against a redis-server
//! started here: `KSR.pv.get`, xlog's format strings and acc's extra
//! columns all see what another node wrote into Redis, the key's own
//! pseudo-variables expanded (`$sht(ipban=>$si)`).

// The store tests' private servers (this test uses only Redis).
#[path = "../../store/tests/common/mod.rs"]
#[allow(dead_code, reason = "this test uses only some of the store servers")]
mod db;

use std::sync::Arc;

use kemibox_kemi::bindings::kemibox::ksr::types::Xval;
use kemibox_kemi::bindings::kemibox::ksr::{htable, pv, xlog};
use kemibox_kemi::htable::{Htables, TableBackend, TableSpec};
use kemibox_kemi::{
    Acc, AccSettings, Ctx, Event, Message, Myself, Services, TenantState, Transport, parse_extra,
};
use kemibox_sip::SipMessage;
use kemibox_store::RedisHtables;

use db::servers::{redis, redis_url};

const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-1\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: call-1@192.0.2.7\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";

/// The acc flag of the test's settings.
const ACC_FLAG: u8 = 1;

/// A node of tenant `t1` whose `ipban` table lives in `redis`, with an
/// acc database column taken from that table.
async fn node(redis: &str) -> Ctx {
    let redis = Arc::new(RedisHtables::connect(redis).await.expect("redis answers"));
    let mut spec = TableSpec::new("ipban");
    spec.backend = TableBackend::Redis;
    let state = TenantState {
        htable: Htables::with_redis(vec![spec], "t1", None, redis),
        acc: Acc {
            settings: AccSettings {
                db_flag: Some(ACC_FLAG),
                db_extra: parse_extra("ban=$sht(ipban=>$si);hits=$sht(ipban=>hits)").unwrap(),
                ..AccSettings::default()
            },
            writer: None,
        },
        ..TenantState::default()
    };
    let mut ctx = Ctx::new(
        "t1".parse().unwrap(),
        Arc::new(Myself::default()),
        Services::in_memory(),
    );
    ctx.state = Arc::new(state);
    ctx.record_logs = true;
    ctx.begin(Some(Message::new(
        SipMessage::parse(INVITE.as_bytes().to_vec()).unwrap(),
        "192.0.2.7:5070".parse().unwrap(),
        "192.0.2.1:5060".parse().unwrap(),
        Transport::Udp,
    )));
    ctx
}

fn logged(ctx: &Ctx) -> Vec<String> {
    ctx.events
        .iter()
        .filter_map(|e| match e {
            Event::Log { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn every_reader_of_sht_sees_the_redis_table() {
    let server = redis();
    let url = redis_url(&server);
    // Node B bans the source; node A reads the ban.
    let mut b = node(&url).await;
    assert_eq!(
        htable::Host::sht_seti(&mut b, "ipban".into(), "192.0.2.7".into(), 3).await,
        1
    );
    pv::Host::sets(&mut b, "$sht(ipban=>hits)".into(), "many".into()).await;
    assert!(logged(&b).is_empty(), "{:?}", logged(&b));

    let mut a = node(&url).await;
    assert!(matches!(
        pv::Host::get(&mut a, "$sht(ipban=>$si)".into()).await,
        Xval::Int(3)
    ));
    xlog::Host::xinfo(
        &mut a,
        "ban=$sht(ipban=>$si) hits=$sht(ipban=>hits) none=$sht(ipban=>nobody) \
         n=$shtcn(ipban=>**) len=$(sht(ipban=>hits){s.len})"
            .into(),
    )
    .await;
    assert_eq!(
        logged(&a),
        ["ban=3 hits=many none=<null> n=2 len=4"],
        "xlog reads Redis"
    );

    // The acc extras, captured as the route ends with the acc flag set.
    a.message.as_mut().unwrap().flags = 1 << ACC_FLAG;
    let routed = a.take_message().await.unwrap();
    assert_eq!(
        routed.acc.unwrap().db,
        [
            ("ban".to_string(), Some("3".to_string())),
            ("hits".to_string(), Some("many".to_string())),
        ]
    );
}
