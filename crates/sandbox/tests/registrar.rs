//! `KSR.registrar` and serial forking (`KSR.tm.t_load_contacts` /
//! `t_next_contacts`) against Kamailio's documented behaviour and RFC 3261
//! section 10.3: real Lua scripts run in the sandbox on REGISTERs and
//! INVITEs, and each test checks the reply the registrar queued, what the
//! script observed, and the R-URI, `$du`, Path and branches the request
//! would be relayed with.
//!
//! REGISTERs arrive over UDP from 127.0.0.1:5070 at our 127.0.0.1:5060;
//! a Contact at that address is "not behind NAT".

mod common;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::ksr::*;
use common::*;
use kemibox_kemi::{AppendedBranch, Event, Message, Nonces, RegistrarSettings, Services};
use kemibox_sandbox::{Instance, Invocation, Tenant};

/// The registrar script the tests run: REGISTERs are saved (flags from
/// `X-Flags`, the AOR from `X-AOR` when present), other requests looked
/// up, and what the lookup left is logged.
const SCRIPT: &str = r#"
function ksr_request_route()
    local flags = tonumber(KSR.hdr.gete("X-Flags")) or 0
    if KSR.pv.get("$rm") == "REGISTER" then
        local aor = KSR.hdr.gete("X-AOR")
        if aor ~= "" then
            return KSR.registrar.save_uri("location", flags, aor)
        end
        return KSR.registrar.save("location", flags)
    end
    local rc = KSR.registrar.lookup("location")
    say("ru", KSR.pv.get("$ru"))
    say("du", KSR.pv.get("$du"))
    return rc
end

-- Kamailio's serial forking idiom.
function serial()
    say("lookup", KSR.registrar.lookup("location"))
    say("load", KSR.tm.t_load_contacts())
    say("next", KSR.tm.t_next_contacts())
    say("ru", KSR.pv.get("$ru"))
    KSR.tm.t_on_failure("next_group")
    return KSR.tm.t_relay()
end

function next_group()
    local rc = KSR.tm.t_next_contacts()
    say("next", rc)
    if rc > 0 then
        say("ru", KSR.pv.get("$ru"))
        return KSR.tm.t_relay()
    end
    return rc
end

function branches()
    KSR.corex.append_branch_uri("sip:carol@example.com")
    KSR.corex.append_branch_uri_q("sip:someone@elsewhere.example.net", "0.3")
    return KSR.registrar.lookup_branches("location")
end

function checks()
    say("registered", KSR.registrar.registered("location"))
    say("registered_uri", KSR.registrar.registered_uri("location", "sip:bob@example.com"))
    say("unregister", KSR.registrar.unregister("location", "sip:alice@example.com"))
    say("again", KSR.registrar.unregister("location", "sip:alice@example.com"))
    say("registered", KSR.registrar.registered("location"))
    return 1
end
"#;

/// Services with these registrar settings, in a fresh in-memory store.
fn services_with(settings: RegistrarSettings) -> Arc<Services> {
    let base = Services::in_memory();
    Arc::new(Services {
        location: base.location.clone(),
        subscribers: base.subscribers.clone(),
        registrar: settings,
        nonces: Nonces::new(Nonces::random_secret(), Nonces::DEFAULT_EXPIRY),
    })
}

/// An instance of [`SCRIPT`] for tenant `id`, on `services`.
async fn registrar_for(id: &str, services: Arc<Services>) -> Instance {
    let mut spec = spec(id, &format!("{SAY}{SCRIPT}"));
    spec.services = services;
    let (_, mut instance) = Tenant::load(&runtime(), spec).await.expect("script loads");
    instance.ctx().record_logs = true;
    instance
}

/// An instance of [`SCRIPT`] with default settings and its own store.
async fn registrar() -> Instance {
    registrar_for("t1", Services::in_memory()).await
}

/// A REGISTER for `user@example.com` with this Call-ID and CSeq; `extra`
/// are further header lines (Contact, Expires, Path, ...).
fn register(user: &str, call_id: &str, cseq: u32, extra: &[&str]) -> Message {
    let mut lines = vec![
        "REGISTER sip:example.com SIP/2.0".to_string(),
        format!("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{call_id}-{cseq}"),
        "Max-Forwards: 70".into(),
        format!("From: <sip:{user}@example.com>;tag=r{cseq}"),
        format!("To: <sip:{user}@Example.COM>"),
        format!("Call-ID: {call_id}"),
        format!("CSeq: {cseq} REGISTER"),
        "User-Agent: reg-test/1.0".into(),
    ];
    lines.extend(extra.iter().map(|l| l.to_string()));
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    message(&sip(&refs, ""))
}

/// An INVITE to `ruri`.
fn invite_to(ruri: &str) -> Message {
    message(&INVITE.replacen("sip:bob@example.com SIP/2.0", &format!("{ruri} SIP/2.0"), 1))
}

async fn run(i: &mut Instance, message: Message) -> Invocation {
    i.invoke("ksr_request_route", Some(message)).await
}

/// The one reply the route queued: code, reason and header lines.
fn reply(inv: &Invocation) -> (i32, String, Vec<String>) {
    let replies: Vec<_> = inv
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Reply {
                code,
                reason,
                headers,
                stateful: false,
            } => Some((*code, reason.clone(), headers.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 1, "replies: {replies:?}");
    replies.into_iter().next().unwrap()
}

/// Header lines with every `expires=N` rounded up to a multiple of ten,
/// so listings compare across a second boundary (3599 and 3600 match).
fn coarse(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|line| {
            let Some(at) = line.find("expires=") else {
                return line.clone();
            };
            let start = at + "expires=".len();
            let digits: String = line[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let n: u64 = digits.parse().unwrap();
            format!(
                "{}{}{}",
                &line[..start],
                n.div_ceil(10) * 10,
                &line[start + digits.len()..]
            )
        })
        .collect()
}

fn strings(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| s.to_string()).collect()
}

/// What the route left for `t_relay`: R-URI, `$du`, Path, branches.
fn routed(
    inv: &Invocation,
) -> (
    Option<String>,
    Option<String>,
    Vec<String>,
    Vec<AppendedBranch>,
) {
    let m = inv.message.as_ref().expect("message");
    (
        m.ruri(),
        m.dst_uri.clone(),
        m.path.clone(),
        m.branches.clone(),
    )
}

fn branch(uri: &str, dst_uri: Option<&str>, q: Option<&str>) -> AppendedBranch {
    AppendedBranch {
        uri: uri.into(),
        dst_uri: dst_uri.map(str::to_string),
        q: q.map(str::to_string),
        path: vec![],
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ------------------------------------------------------------------ save

/// A first REGISTER adds its contacts (several Contact headers and
/// comma-separated ones, expiry from the parameter, the Expires header or
/// `default_expires`) and the 200 OK lists every binding, best q first,
/// with the seconds left. save returns 1 (added).
#[tokio::test]
async fn register_adds_bindings_and_the_200_lists_them() {
    let mut r = registrar().await;
    let inv = run(
        &mut r,
        register(
            "alice",
            "reg-1",
            1,
            &[
                "Contact: <sip:alice@127.0.0.1:5070>;expires=120;q=0.5, <sip:alice@127.0.0.1:5072>",
                "Contact: \"Desk\" <sip:alice@127.0.0.1:5074;transport=udp>;q=1.0",
                "Expires: 300",
            ],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    assert_eq!(
        reply(&inv),
        (
            200,
            "OK".into(),
            strings(&[
                "Contact: <sip:alice@127.0.0.1:5074;transport=udp>;expires=300;q=1",
                "Contact: <sip:alice@127.0.0.1:5070>;expires=120;q=0.5",
                "Contact: <sip:alice@127.0.0.1:5072>;expires=300",
            ])
        )
    );
    // Without any expiry given: default_expires (3600).
    let inv = run(
        &mut r,
        register(
            "carol",
            "reg-c",
            1,
            &["Contact: <sip:carol@127.0.0.1:5070>"],
        ),
    )
    .await;
    assert_eq!(
        reply(&inv).2,
        strings(&["Contact: <sip:carol@127.0.0.1:5070>;expires=3600"])
    );
}

/// A refresh updates the binding (2) and the listing shows the new
/// expiry; the same Call-ID with a CSeq not higher than the stored one
/// (a repeat or a reordered request) changes nothing and is not an
/// error; a REGISTER without Contact only lists (4). Flag 2 sends no
/// reply; flag 4 makes the REGISTER's contacts the only bindings.
#[tokio::test]
async fn refreshes_update_and_stale_repeats_change_nothing() {
    let mut r = registrar().await;
    let contact = "Contact: <sip:alice@127.0.0.1:5070>";
    let inv = run(
        &mut r,
        register("alice", "c", 5, &[contact, "Expires: 600"]),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    let inv = run(
        &mut r,
        register("alice", "c", 6, &[contact, "Expires: 1200"]),
    )
    .await;
    assert_eq!(ret(&inv), 2);
    assert_eq!(
        reply(&inv).2,
        strings(&["Contact: <sip:alice@127.0.0.1:5070>;expires=1200"])
    );
    // CSeq 6 again, and 4: the binding keeps its 1200 s.
    for cseq in [6, 4] {
        let inv = run(
            &mut r,
            register("alice", "c", cseq, &[contact, "Expires: 60"]),
        )
        .await;
        assert_eq!(ret(&inv), 2);
        assert_eq!(
            coarse(&reply(&inv).2),
            strings(&["Contact: <sip:alice@127.0.0.1:5070>;expires=1200"])
        );
    }
    // A new Call-ID may start over at any CSeq.
    let inv = run(
        &mut r,
        register("alice", "d", 1, &[contact, "Expires: 900"]),
    )
    .await;
    assert_eq!(ret(&inv), 2);
    assert_eq!(
        reply(&inv).2,
        strings(&["Contact: <sip:alice@127.0.0.1:5070>;expires=900"])
    );
    let inv = run(&mut r, register("alice", "e", 1, &[])).await;
    assert_eq!(ret(&inv), 4);
    assert_eq!(
        coarse(&reply(&inv).2),
        strings(&["Contact: <sip:alice@127.0.0.1:5070>;expires=900"])
    );
    // Flag 2: no reply at all.
    let inv = run(
        &mut r,
        register(
            "alice",
            "f",
            1,
            &["Contact: <sip:alice@127.0.0.1:5072>", "X-Flags: 2"],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    assert!(!inv.events.iter().any(|e| matches!(e, Event::Reply { .. })));
    // Flag 4: only this REGISTER's contact stays.
    let inv = run(
        &mut r,
        register(
            "alice",
            "g",
            1,
            &["Contact: <sip:alice@127.0.0.1:5074>", "X-Flags: 4"],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    assert_eq!(
        reply(&inv).2,
        strings(&["Contact: <sip:alice@127.0.0.1:5074>;expires=3600"])
    );
    // Flag 1 (memory only) saves all the same.
    let inv = run(
        &mut r,
        register(
            "alice",
            "h",
            1,
            &["Contact: <sip:alice@127.0.0.1:5076>", "X-Flags: 1"],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    assert_eq!(reply(&inv).2.len(), 2);
}

/// `expires=0` removes one binding and `Contact: *` with `Expires: 0`
/// all of them (3); `*` with any other Expires, or beside other
/// contacts, is a 400 and changes nothing.
#[tokio::test]
async fn expires_zero_and_star_remove_bindings() {
    let mut r = registrar().await;
    let two = [
        "Contact: <sip:alice@127.0.0.1:5070>, <sip:alice@127.0.0.1:5072>",
        "Expires: 600",
    ];
    assert_eq!(ret(&run(&mut r, register("alice", "c", 1, &two)).await), 1);
    let inv = run(
        &mut r,
        register(
            "alice",
            "c",
            2,
            &["Contact: <sip:alice@127.0.0.1:5072>;expires=0"],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 3);
    assert_eq!(
        coarse(&reply(&inv).2),
        strings(&["Contact: <sip:alice@127.0.0.1:5070>;expires=600"])
    );
    for bad in [
        &["Contact: *", "Expires: 30"][..],
        &["Contact: *"][..],
        &["Contact: *, <sip:alice@127.0.0.1:5070>", "Expires: 0"][..],
    ] {
        let inv = run(&mut r, register("alice", "c", 3, bad)).await;
        assert_eq!(ret(&inv), -1, "{bad:?}");
        let (code, _, headers) = reply(&inv);
        assert_eq!((code, headers), (400, vec![]), "{bad:?}");
    }
    let inv = run(
        &mut r,
        register("alice", "c", 4, &["Contact: *", "Expires: 0"]),
    )
    .await;
    assert_eq!(ret(&inv), 3);
    assert_eq!(reply(&inv), (200, "OK".into(), vec![]));
    let inv = run(&mut r, invite_to("sip:alice@example.com")).await;
    assert_eq!(ret(&inv), -1);
}

/// A non-zero expiry below `min_expires` is refused with 423 and
/// `Min-Expires`; one above `max_expires` is cut down; past
/// `max_contacts` a new contact gets 503. Nothing is stored on refusal.
#[tokio::test]
async fn expiry_limits_and_max_contacts() {
    let services = services_with(RegistrarSettings {
        default_expires: 3600,
        min_expires: 60,
        max_expires: 1800,
        max_contacts: 2,
    });
    let mut r = registrar_for("t1", services).await;
    let inv = run(
        &mut r,
        register(
            "alice",
            "c",
            1,
            &["Contact: <sip:alice@127.0.0.1:5070>;expires=30"],
        ),
    )
    .await;
    assert_eq!(ret(&inv), -1);
    assert_eq!(
        reply(&inv),
        (
            423,
            "Interval Too Brief".into(),
            strings(&["Min-Expires: 60"])
        )
    );
    let inv = run(
        &mut r,
        register(
            "alice",
            "c",
            2,
            &[
                "Contact: <sip:alice@127.0.0.1:5070>, <sip:alice@127.0.0.1:5072>;expires=60",
                "Expires: 7200",
            ],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    assert_eq!(
        reply(&inv).2,
        strings(&[
            "Contact: <sip:alice@127.0.0.1:5070>;expires=1800",
            "Contact: <sip:alice@127.0.0.1:5072>;expires=60",
        ])
    );
    let inv = run(
        &mut r,
        register("alice", "c", 3, &["Contact: <sip:alice@127.0.0.1:5074>"]),
    )
    .await;
    assert_eq!(ret(&inv), -1);
    assert_eq!(reply(&inv).0, 503);
    // Refreshing an existing one is still fine.
    let inv = run(
        &mut r,
        register("alice", "c", 4, &["Contact: <sip:alice@127.0.0.1:5070>"]),
    )
    .await;
    assert_eq!(ret(&inv), 2);
    assert_eq!(reply(&inv).2.len(), 2);
}

// ---------------------------------------------------------------- lookup

/// lookup rewrites the R-URI to the best binding (highest q, then the
/// newest) and appends the others as branches in q order, each with its
/// q; an AOR with no binding gives -1 and leaves the request alone.
#[tokio::test]
async fn lookup_routes_to_the_best_contact_and_branches_to_the_rest() {
    let mut r = registrar().await;
    for (cseq, contact) in [
        (1, "Contact: <sip:bob@127.0.0.1:5070;line=low>;q=0.1"),
        (2, "Contact: <sip:bob@127.0.0.1:5070;line=none>"),
        (3, "Contact: <sip:bob@127.0.0.1:5070;line=high>;q=0.9"),
        (4, "Contact: <sip:bob@127.0.0.1:5070;line=mid>;q=0.5"),
    ] {
        let inv = run(&mut r, register("bob", "b", cseq, &[contact])).await;
        assert_eq!(ret(&inv), 1);
    }
    let inv = run(&mut r, invite_to("sip:bob@EXAMPLE.com:5060;transport=udp")).await;
    assert_eq!(ret(&inv), 1);
    assert_eq!(
        logs(&inv),
        strings(&["ru string sip:bob@127.0.0.1:5070;line=high", "du nil nil"])
    );
    assert_eq!(
        routed(&inv),
        (
            Some("sip:bob@127.0.0.1:5070;line=high".into()),
            None,
            vec![],
            vec![
                branch("sip:bob@127.0.0.1:5070;line=mid", None, Some("0.5")),
                branch("sip:bob@127.0.0.1:5070;line=low", None, Some("0.1")),
                branch("sip:bob@127.0.0.1:5070;line=none", None, None),
            ]
        )
    );
    let inv = run(&mut r, invite_to("sip:nobody@example.com")).await;
    assert_eq!(ret(&inv), -1);
    assert_eq!(
        routed(&inv),
        (Some("sip:nobody@example.com".into()), None, vec![], vec![])
    );
}

/// registered / registered_uri report whether an AOR has bindings;
/// unregister removes them all (1), and finds nothing the second time.
/// save_uri stores under the AOR of its argument instead of the To URI.
#[tokio::test]
async fn registered_unregister_and_save_uri() {
    let mut r = registrar().await;
    let inv = run(
        &mut r,
        register(
            "someone",
            "a",
            1,
            &[
                "Contact: <sip:alice@127.0.0.1:5070>",
                "X-AOR: sip:alice@example.com",
            ],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    let inv = r
        .invoke("checks", Some(invite_to("sip:alice@example.com")))
        .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "registered number 1",
            "registered_uri number -1",
            "unregister number 1",
            "again number -1",
            "registered number -1",
        ])
    );
}

/// lookup_branches looks up the R-URI and every appended branch: found
/// ones are replaced by their contacts, the others stay as they were;
/// -1 only when nothing at all was found.
#[tokio::test]
async fn lookup_branches_replaces_what_it_finds() {
    let mut r = registrar().await;
    for (user, contacts) in [
        ("alice", "Contact: <sip:alice@127.0.0.1:5070>"),
        (
            "carol",
            "Contact: <sip:carol@127.0.0.1:5070;n=1>;q=0.8, <sip:carol@10.0.0.3>;q=0.2",
        ),
    ] {
        let inv = run(&mut r, register(user, user, 1, &[contacts])).await;
        assert_eq!(ret(&inv), 1);
    }
    let inv = r
        .invoke("branches", Some(invite_to("sip:alice@example.com")))
        .await;
    assert_eq!(ret(&inv), 1);
    assert_eq!(
        routed(&inv),
        (
            Some("sip:alice@127.0.0.1:5070".into()),
            None,
            vec![],
            vec![
                branch("sip:carol@127.0.0.1:5070;n=1", None, Some("0.8")),
                branch(
                    "sip:carol@10.0.0.3",
                    Some("sip:127.0.0.1:5070;transport=udp"),
                    Some("0.2")
                ),
                branch("sip:someone@elsewhere.example.net", None, Some("0.3")),
            ]
        )
    );
    let inv = r
        .invoke("branches", Some(invite_to("sip:nobody@example.com")))
        .await;
    assert_eq!(ret(&inv), 1, "carol's branch was found");
    let mut lonely = registrar().await;
    let inv = lonely
        .invoke("branches", Some(invite_to("sip:nobody@example.com")))
        .await;
    assert_eq!(ret(&inv), -1);
    assert_eq!(routed(&inv).3.len(), 2);
}

/// Two tenants share one store yet never see each other's bindings, even
/// for the same AOR: tenant B's lookup finds only B's contact.
#[tokio::test]
async fn tenants_do_not_see_each_others_bindings() {
    let shared = Services::in_memory();
    let mut a = registrar_for("tenant-a", shared.clone()).await;
    let mut b = registrar_for("tenant-b", shared.clone()).await;
    let inv = run(
        &mut a,
        register(
            "alice",
            "a",
            1,
            &["Contact: <sip:alice@127.0.0.1:5070;t=a>"],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    let inv = run(&mut b, invite_to("sip:alice@example.com")).await;
    assert_eq!(ret(&inv), -1);
    let inv = run(
        &mut b,
        register(
            "alice",
            "b",
            1,
            &["Contact: <sip:alice@127.0.0.1:5070;t=b>"],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1, "a first binding for tenant B");
    assert_eq!(reply(&inv).2.len(), 1);
    let inv = run(&mut b, invite_to("sip:alice@example.com")).await;
    assert_eq!(
        routed(&inv).0.as_deref(),
        Some("sip:alice@127.0.0.1:5070;t=b")
    );
    assert!(routed(&inv).3.is_empty());
    let inv = run(&mut a, invite_to("sip:alice@example.com")).await;
    assert_eq!(
        routed(&inv).0.as_deref(),
        Some("sip:alice@127.0.0.1:5070;t=a")
    );
    let all = shared.location.dump(None, unix_now()).await.unwrap();
    let mut tenants: Vec<&str> = all.iter().map(|l| l.tenant.as_str()).collect();
    tenants.sort();
    assert_eq!(tenants, ["tenant-a", "tenant-b"]);
}

/// A binding is found until it expires; the store's `expire` then drops
/// it for good (the clock is passed explicitly, no waiting).
#[tokio::test]
async fn bindings_expire() {
    let services = Services::in_memory();
    let mut r = registrar_for("t1", services.clone()).await;
    let inv = run(
        &mut r,
        register(
            "alice",
            "a",
            1,
            &["Contact: <sip:alice@127.0.0.1:5070>;expires=60"],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    let now = unix_now();
    let store = &services.location;
    assert_eq!(store.dump(Some("t1"), now).await.unwrap().len(), 1);
    assert!(store.dump(Some("t1"), now + 61).await.unwrap().is_empty());
    assert_eq!(store.expire(now).await.unwrap(), 0);
    assert_eq!(store.expire(now + 61).await.unwrap(), 1);
    let inv = run(&mut r, invite_to("sip:alice@example.com")).await;
    assert_eq!(ret(&inv), -1);
}

/// RFC 3327: the REGISTER's Path is stored and echoed in the 200 OK;
/// lookup sends requests through it: `$du` is the first Path URI and the
/// Path entries travel with the branch (the proxy adds them as Route
/// headers, topmost first). Path wins over the received address.
#[tokio::test]
async fn path_becomes_du_and_route() {
    let mut r = registrar().await;
    let inv = run(
        &mut r,
        register(
            "alice",
            "p",
            1,
            &[
                "Path: <sip:edge1.example.net;lr>",
                "Path: <sip:edge2.example.net;lr>",
                "Contact: <sip:alice@10.0.0.2:5062>",
            ],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    assert_eq!(
        reply(&inv).2,
        strings(&[
            "Path: <sip:edge1.example.net;lr>, <sip:edge2.example.net;lr>",
            "Contact: <sip:alice@10.0.0.2:5062>;expires=3600",
        ])
    );
    let inv = run(&mut r, invite_to("sip:alice@example.com")).await;
    assert_eq!(ret(&inv), 1);
    assert_eq!(
        routed(&inv),
        (
            Some("sip:alice@10.0.0.2:5062".into()),
            Some("sip:edge1.example.net;lr".into()),
            strings(&["<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>"]),
            vec![]
        )
    );
}

/// A Contact that is not where the REGISTER came from (NAT) is reached
/// through the source address: lookup sets `$du` to it, for the R-URI
/// and for appended branches; a Contact matching the source sets none.
#[tokio::test]
async fn received_address_becomes_du() {
    let mut r = registrar().await;
    let inv = run(
        &mut r,
        register(
            "alice",
            "n",
            1,
            &["Contact: <sip:alice@10.0.0.2:5062>;q=0.9, <sip:alice@127.0.0.1:5070>;q=0.1"],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    let inv = run(&mut r, invite_to("sip:alice@example.com")).await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "ru string sip:alice@10.0.0.2:5062",
            "du string sip:127.0.0.1:5070;transport=udp",
        ])
    );
    assert_eq!(
        routed(&inv).3,
        vec![branch("sip:alice@127.0.0.1:5070", None, Some("0.1"))]
    );
}

/// RFC 5627: with `Supported: gruu`, a contact with `+sip.instance` gets
/// its public GRUU in the 200 OK; a request to that GRUU reaches only the
/// instance's contact, while the plain AOR reaches all.
#[tokio::test]
async fn gruu_in_the_reply_and_gr_lookup() {
    let mut r = registrar().await;
    let phone = "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
    let laptop = "urn:uuid:00000000-0000-1000-8000-000a95a0e128";
    let inv = run(
        &mut r,
        register(
            "alice",
            "g",
            1,
            &[
                "Supported: path, gruu",
                &format!("Contact: <sip:alice@127.0.0.1:5070>;+sip.instance=\"<{phone}>\";q=0.9"),
            ],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    assert_eq!(
        reply(&inv).2,
        vec![format!(
            "Contact: <sip:alice@127.0.0.1:5070>;expires=3600;q=0.9;+sip.instance=\"<{phone}>\";\
             pub-gruu=\"sip:alice@example.com;gr={phone}\""
        )]
    );
    // Without `Supported: gruu` the instance is kept but no GRUU given.
    let inv = run(
        &mut r,
        register(
            "alice",
            "h",
            1,
            &[&format!(
                "Contact: <sip:alice@127.0.0.1:5072>;+sip.instance=\"<{laptop}>\";reg-id=1"
            )],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    assert!(reply(&inv).2.iter().all(|l| !l.contains("gruu")));
    assert!(
        reply(&inv)
            .2
            .iter()
            .any(|l| l.ends_with(&format!("+sip.instance=\"<{laptop}>\";reg-id=1")))
    );
    let inv = run(
        &mut r,
        invite_to(&format!("sip:alice@example.com;gr={laptop}")),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    // (Registered from port 5070, as its Via says, for a public Contact at
    // 5072: not behind NAT, so the Contact itself is used.)
    assert_eq!(
        routed(&inv),
        (
            Some("sip:alice@127.0.0.1:5072".into()),
            None,
            vec![],
            vec![]
        )
    );
    let inv = run(
        &mut r,
        invite_to("sip:alice@example.com;gr=urn:uuid:unknown"),
    )
    .await;
    assert_eq!(ret(&inv), -1);
    let inv = run(&mut r, invite_to("sip:alice@example.com")).await;
    assert_eq!(routed(&inv).0.as_deref(), Some("sip:alice@127.0.0.1:5070"));
    assert_eq!(routed(&inv).3.len(), 1);
}

// --------------------------------------------------------- serial forking

/// Kamailio's serial forking: lookup, t_load_contacts, t_next_contacts
/// relays to the q=1 group in parallel (R-URI plus a branch); in the
/// failure route t_next_contacts moves on to the q=0.5 contact (with its
/// `$du`), then to the unranked one, then reports -1. The contacts ride
/// in the message's AVPs from the request route to the failure route.
#[tokio::test]
async fn serial_forking_takes_q_groups_in_turn() {
    let mut r = registrar().await;
    let inv = run(
        &mut r,
        register(
            "bob",
            "s",
            1,
            &[
                "Contact: <sip:bob@127.0.0.1:5070;n=1>;q=1, <sip:bob@127.0.0.1:5070;n=2>;q=1",
                "Contact: <sip:bob@10.0.0.9:5060;n=3>;q=0.5, <sip:bob@127.0.0.1:5070;n=4>",
            ],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    let inv = r
        .invoke("serial", Some(invite_to("sip:bob@example.com")))
        .await;
    assert_eq!(ret(&inv), 1);
    let first_two = logs(&inv);
    assert_eq!(
        first_two,
        strings(&[
            "lookup number 1",
            "load number 1",
            "next number 1",
            &format!("ru string {}", routed(&inv).0.unwrap()),
        ])
    );
    let (ruri, du, _, branches) = routed(&inv);
    let mut group = vec![ruri.unwrap(), branches[0].uri.clone()];
    group.sort();
    assert_eq!(
        group,
        ["sip:bob@127.0.0.1:5070;n=1", "sip:bob@127.0.0.1:5070;n=2"]
    );
    assert_eq!((du, branches.len()), (None, 1));

    // The failure route runs on the request as relayed, AVPs included.
    let request = inv.message.clone().unwrap();
    let inv = r.invoke("next_group", Some(request)).await;
    assert_eq!(ret(&inv), 1);
    assert_eq!(
        routed(&inv),
        (
            Some("sip:bob@10.0.0.9:5060;n=3".into()),
            Some("sip:127.0.0.1:5070;transport=udp".into()),
            vec![],
            vec![]
        )
    );
    let inv = r.invoke("next_group", inv.message.clone()).await;
    assert_eq!(ret(&inv), 1);
    assert_eq!(
        routed(&inv),
        (
            Some("sip:bob@127.0.0.1:5070;n=4".into()),
            None,
            vec![],
            vec![]
        )
    );
    let inv = r.invoke("next_group", inv.message.clone()).await;
    assert_eq!(ret(&inv), -1);
}

/// With equal q everywhere t_next_contacts takes every contact at once
/// (parallel forking); with a single contact there is nothing to load
/// (-1) and the R-URI from lookup stands.
#[tokio::test]
async fn equal_q_goes_out_at_once_and_a_single_contact_is_not_loaded() {
    let mut r = registrar().await;
    let inv = run(
        &mut r,
        register(
            "bob",
            "s",
            1,
            &["Contact: <sip:bob@127.0.0.1:5070;n=1>, <sip:bob@127.0.0.1:5070;n=2>, <sip:bob@127.0.0.1:5070;n=3>"],
        ),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    let inv = r
        .invoke("serial", Some(invite_to("sip:bob@example.com")))
        .await;
    assert_eq!(routed(&inv).3.len(), 2);
    let inv = r.invoke("next_group", inv.message.clone()).await;
    assert_eq!(ret(&inv), -1);

    let inv = run(
        &mut r,
        register("carol", "s", 1, &["Contact: <sip:carol@127.0.0.1:5070>"]),
    )
    .await;
    assert_eq!(ret(&inv), 1);
    let inv = r
        .invoke("serial", Some(invite_to("sip:carol@example.com")))
        .await;
    assert_eq!(
        logs(&inv)[..3],
        strings(&["lookup number 1", "load number -1", "next number -1"])
    );
    assert_eq!(
        routed(&inv),
        (
            Some("sip:carol@127.0.0.1:5070".into()),
            None,
            vec![],
            vec![]
        )
    );
}
