//! Digest authentication from Lua (`KSR.auth`, `KSR.auth_db`), end to end:
//! a script challenges, the test answers the challenge as a user agent
//! would (with its own small MD5 and the sha2 crate, not the code under
//! test), and the script's next check sees Kamailio's return codes: 1 ok,
//! -1 error or a nonce not issued here, -2 wrong password, -3 unknown
//! user, -4 stale nonce, -5 no credentials, -6 nonce reused, -8 user
//! mismatch.
//!
//! Each test builds its own `Services` (subscribers in memory, nonces with
//! the expiry it needs) and keeps one instance across requests, as the
//! proxy keeps a tenant's instances across messages.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::ksr::*;
use common::*;
use kemibox_kemi::{Event, Nonces, Services};
use kemibox_sandbox::{Instance, Invocation, Tenant};
use sha2::{Digest, Sha256};

const TENANT: &str = "auth-a";
const REALM: &str = "example.com";

// ------------------------------------------------------------- set-up

/// Subscribers in memory and nonces that expire after `expiry`; alice
/// (password "secret") in [`TENANT`], bob (password "hunter2") in tenant
/// "auth-b".
async fn services(expiry: Duration) -> Arc<Services> {
    let base = Services::in_memory();
    let services = Arc::new(Services {
        location: base.location.clone(),
        subscribers: base.subscribers.clone(),
        registrar: base.registrar,
        nonces: Nonces::new(Nonces::random_secret(), expiry),
    });
    let subscribers = &services.subscribers;
    subscribers
        .add(TENANT, "alice", REALM, "secret")
        .await
        .unwrap();
    subscribers
        .add("auth-b", "bob", REALM, "hunter2")
        .await
        .unwrap();
    services
}

/// An instance of tenant `tenant` running `body` with `services`.
async fn instance_of(tenant: &str, services: &Arc<Services>, body: &str) -> Instance {
    let mut spec = spec(tenant, &format!("{SAY}{body}"));
    spec.services = services.clone();
    let (_, mut instance) = Tenant::load(&runtime(), spec).await.expect("script loads");
    instance.ctx().record_logs = true;
    instance
}

async fn run(instance: &mut Instance, text: &str) -> Invocation {
    instance
        .invoke("ksr_request_route", Some(message(text)))
        .await
}

/// The usual script: `auth_check` with `flags`, then a challenge
/// (qop=auth) when it failed.
fn check_script(flags: i32) -> String {
    format!(
        r#"
function ksr_request_route()
    local rc = KSR.auth_db.auth_check("{REALM}", "subscriber", {flags})
    say("rc", rc)
    if rc < 0 then
        KSR.auth.auth_challenge("{REALM}", 1)
    end
end
"#
    )
}

/// The `rc` the script logged.
fn rc(inv: &Invocation) -> i32 {
    let line = logs(inv)
        .into_iter()
        .find_map(|l| l.strip_prefix("rc number ").map(str::to_string))
        .unwrap_or_else(|| panic!("no rc in {:?} / {:?}", logs(inv), inv.outcome));
    line.parse().unwrap()
}

/// A request from alice@example.com (To: `to_user`) with `extra` header
/// lines; `call` and `cseq` tell requests apart.
fn request(method: &str, from_user: &str, to_user: &str, cseq: u32, extra: &[String]) -> String {
    let ruri = if method == "REGISTER" {
        "sip:example.com".to_string()
    } else {
        format!("sip:{to_user}@example.com")
    };
    let mut lines = vec![
        format!("{method} {ruri} SIP/2.0"),
        format!("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-auth-{cseq}"),
        "Max-Forwards: 70".into(),
        format!("From: <sip:{from_user}@example.com>;tag=f1"),
        format!("To: <sip:{to_user}@example.com>"),
        "Call-ID: auth-call-1@127.0.0.1".into(),
        format!("CSeq: {cseq} {method}"),
        "Contact: <sip:alice@127.0.0.1:5070>".into(),
    ];
    lines.extend(extra.iter().cloned());
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    sip(&refs, "")
}

fn register(cseq: u32, extra: &[String]) -> String {
    request("REGISTER", "alice", "alice", cseq, extra)
}

fn invite(cseq: u32, extra: &[String]) -> String {
    request("INVITE", "alice", "bob", cseq, extra)
}

// ------------------------------------------------ the user agent's side

/// One challenge, as a user agent reads it.
#[derive(Debug, Clone)]
struct Challenge {
    header: String,
    realm: String,
    nonce: String,
    qop: Option<String>,
    algorithm: String,
    stale: bool,
}

/// The reply the route sent, and its challenges in order.
fn challenges(inv: &Invocation) -> (i32, Vec<Challenge>) {
    let (code, headers) = inv
        .events
        .iter()
        .find_map(|e| match e {
            Event::Reply { code, headers, .. } => Some((*code, headers.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no reply in {:?}", actions(inv)));
    (
        code,
        headers.iter().filter_map(|h| parse_challenge(h)).collect(),
    )
}

fn parse_challenge(line: &str) -> Option<Challenge> {
    let (name, value) = line.split_once(':')?;
    let params = value.trim().strip_prefix("Digest ")?;
    let mut ch = Challenge {
        header: name.to_string(),
        realm: String::new(),
        nonce: String::new(),
        qop: None,
        algorithm: String::new(),
        stale: false,
    };
    for part in params.split(", ") {
        let (k, v) = part.split_once('=')?;
        let v = v.trim_matches('"').to_string();
        match k {
            "realm" => ch.realm = v,
            "nonce" => ch.nonce = v,
            "qop" => ch.qop = Some(v),
            "algorithm" => ch.algorithm = v,
            "stale" => ch.stale = v == "true",
            other => panic!("unexpected directive {other} in {line}"),
        }
    }
    Some(ch)
}

/// The only challenge of a reply.
fn challenge(inv: &Invocation) -> Challenge {
    let (_, mut all) = challenges(inv);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// MD5 (RFC 1321), small and slow: the user agent's own, so the test does
/// not check the proxy's hashing with the proxy's hashing.
fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 4 * 4] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
    let k: [u32; 64] =
        std::array::from_fn(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32);
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_le_bytes());
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
            .collect();
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[(i / 16) * 4 + i % 4]));
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
    let mut out = [0u8; 16];
    for (o, s) in out.chunks_mut(4).zip(state) {
        o.copy_from_slice(&s.to_le_bytes());
    }
    out
}

/// `H(text)` for the challenge's algorithm, in hex.
fn h(algorithm: &str, text: &str) -> String {
    match algorithm {
        "MD5" => hex(&md5(text.as_bytes())),
        "SHA-256" => hex(&Sha256::digest(text.as_bytes())),
        other => panic!("no {other} here"),
    }
}

/// What a user agent answers `ch` with: the credentials header line for
/// `method` on `uri`, as `user` with `password`; `nc` with qop=auth.
fn answer(
    ch: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: Option<u32>,
) -> String {
    let alg = ch.algorithm.as_str();
    let ha1 = h(alg, &format!("{user}:{}:{password}", ch.realm));
    let ha2 = h(alg, &format!("{method}:{uri}"));
    let credentials = match nc {
        Some(nc) => {
            let nc = format!("{nc:08x}");
            let cnonce = "0a4f113b";
            let response = h(alg, &format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", ch.nonce));
            format!(
                "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", \
                 response=\"{response}\", algorithm={alg}, cnonce=\"{cnonce}\", qop=auth, nc={nc}",
                ch.realm, ch.nonce
            )
        }
        None => {
            let response = h(alg, &format!("{ha1}:{}:{ha2}", ch.nonce));
            format!(
                "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", \
                 response=\"{response}\", algorithm={alg}",
                ch.realm, ch.nonce
            )
        }
    };
    let name = if ch.header == "WWW-Authenticate" {
        "Authorization"
    } else {
        "Proxy-Authorization"
    };
    format!("{name}: {credentials}")
}

/// Challenge an INVITE from alice through `instance` (script of
/// [`check_script`]) and return the challenge.
async fn challenged_invite(instance: &mut Instance) -> Challenge {
    let inv = run(instance, &invite(1, &[])).await;
    assert_eq!(rc(&inv), -5);
    challenge(&inv)
}

// ---------------------------------------------------------------- tests

#[test]
fn the_test_md5_is_md5() {
    // RFC 1321 appendix A.5.
    assert_eq!(hex(&md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(hex(&md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(
        hex(&md5(
            b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
        )),
        "57edf4a22be3c955ac49da2e2107b67a"
    );
}

/// Without credentials `auth_check` is -5 and `auth_challenge` answers a
/// REGISTER with 401 and WWW-Authenticate, anything else with 407 and
/// Proxy-Authenticate: realm, a fresh nonce, qop="auth" (flag 1) and
/// algorithm=MD5, as Kamailio writes them.
#[tokio::test]
async fn challenges_are_401_for_register_and_407_otherwise() {
    let services = services(Nonces::DEFAULT_EXPIRY).await;
    let mut instance = instance_of(TENANT, &services, &check_script(0)).await;

    let inv = run(&mut instance, &register(1, &[])).await;
    assert_eq!(rc(&inv), -5);
    let (code, all) = challenges(&inv);
    assert_eq!(code, 401);
    assert!(
        matches!(&inv.events.iter().find(|e| matches!(e, Event::Reply { .. })),
        Some(Event::Reply { reason, stateful: false, .. }) if reason == "Unauthorized")
    );
    assert_eq!(all.len(), 1);
    let first = &all[0];
    assert_eq!(first.header, "WWW-Authenticate");
    assert_eq!(first.realm, REALM);
    assert_eq!(first.qop.as_deref(), Some("auth"));
    assert_eq!(first.algorithm, "MD5");
    assert!(!first.stale);
    assert!(
        first.nonce.len() >= 32 && first.nonce.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        first.nonce
    );

    let inv = run(&mut instance, &invite(1, &[])).await;
    let (code, all) = challenges(&inv);
    assert_eq!(code, 407);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].header, "Proxy-Authenticate");
    assert_ne!(
        all[0].nonce, first.nonce,
        "every challenge has its own nonce"
    );
}

/// Flag 32 offers SHA-256 before MD5 (RFC 8760: most preferred first),
/// flag 2 offers auth-int, 16 says stale; flag 64 only adds the header to
/// the reply the script sends itself; an empty realm is the From host
/// (To host for REGISTER); `www_challenge`/`proxy_challenge` pick the
/// reply whatever the method.
#[tokio::test]
async fn challenge_flags() {
    let services = services(Nonces::DEFAULT_EXPIRY).await;
    let script = r#"
function ksr_request_route()
    local flags = tonumber(KSR.pv.get("$hdr(X-Flags)"))
    local kind = KSR.pv.get("$hdr(X-Kind)")
    if kind == "www" then
        say("ret", KSR.auth.www_challenge("", flags))
    elseif kind == "proxy" then
        say("ret", KSR.auth.proxy_challenge("", flags))
    else
        say("ret", KSR.auth.auth_challenge("", flags))
    end
    if KSR.pv.get("$hdr(X-Reply)") then
        KSR.sl.send_reply(401, "Try Again")
    end
end
"#;
    let mut instance = instance_of(TENANT, &services, script).await;
    let with =
        |flags: i32, kind: &str| vec![format!("X-Flags: {flags}"), format!("X-Kind: {kind}")];

    let inv = run(&mut instance, &invite(1, &with(32 | 1 | 2 | 16, ""))).await;
    assert_eq!(logs(&inv), ["ret number 1"]);
    let (code, all) = challenges(&inv);
    assert_eq!(code, 407);
    let algorithms: Vec<&str> = all.iter().map(|c| c.algorithm.as_str()).collect();
    assert_eq!(algorithms, ["SHA-256", "MD5"]);
    for c in &all {
        assert_eq!(c.realm, REALM, "the From host");
        assert_eq!(c.qop.as_deref(), Some("auth,auth-int"));
        assert!(c.stale);
    }

    // Header only: no reply of its own; the script's reply carries it.
    let mut extra = with(64, "");
    extra.push("X-Reply: yes".into());
    let inv = run(&mut instance, &register(1, &extra)).await;
    let replies: Vec<&Event> = inv
        .events
        .iter()
        .filter(|e| matches!(e, Event::Reply { .. }))
        .collect();
    assert_eq!(replies.len(), 1, "{replies:?}");
    let (code, all) = challenges(&inv);
    assert_eq!(code, 401);
    assert_eq!(all[0].header, "WWW-Authenticate");
    assert_eq!(all[0].qop, None);

    let inv = run(&mut instance, &register(1, &with(0, "proxy"))).await;
    assert_eq!(challenges(&inv).0, 407);
    let inv = run(&mut instance, &invite(1, &with(0, "www"))).await;
    assert_eq!(challenges(&inv).0, 401);

    // ACK is never challenged: auth_challenge says yes and sends nothing.
    let ack = request("ACK", "alice", "bob", 1, &with(0, ""));
    let inv = run(&mut instance, &ack).await;
    assert_eq!(logs(&inv), ["ret number 1"]);
    assert!(actions(&inv).is_empty());
}

/// The answer to a challenge authenticates: REGISTER (Authorization) and
/// INVITE (Proxy-Authorization), with qop=auth and without; `$au`, `$aU`,
/// `$ad`, `$ar` read the credentials.
#[tokio::test]
async fn a_correct_response_is_accepted() {
    let services = services(Nonces::DEFAULT_EXPIRY).await;
    let script = format!(
        r#"
function ksr_request_route()
    local rc = KSR.auth_db.auth_check("", "subscriber", 1)
    say("rc", rc)
    if rc < 0 then
        KSR.auth.auth_challenge("", 1)
        return
    end
    say("au", KSR.pv.get("$au"))
    say("aU", KSR.pv.get("$aU"))
    say("ad", KSR.pv.get("$ad"))
    say("ar", KSR.pv.get("$ar"))
    say("has", KSR.auth.has_credentials("{REALM}"))
    say("has other", KSR.auth.has_credentials("other.example.com"))
end
"#
    );
    let mut instance = instance_of(TENANT, &services, &script).await;

    let inv = run(&mut instance, &register(1, &[])).await;
    let ch = challenge(&inv);
    let auth = answer(
        &ch,
        "alice",
        "secret",
        "REGISTER",
        "sip:example.com",
        Some(1),
    );
    let inv = run(&mut instance, &register(2, &[auth])).await;
    assert_eq!(
        logs(&inv),
        [
            "rc number 1",
            "au string alice",
            "aU string alice",
            "ad nil nil",
            "ar string example.com",
            "has number 1",
            "has other number -1",
        ]
    );
    assert!(actions(&inv).is_empty(), "no reply: {:?}", actions(&inv));

    let ch = challenged_invite(&mut instance).await;
    let auth = answer(
        &ch,
        "alice",
        "secret",
        "INVITE",
        "sip:bob@example.com",
        None,
    );
    let inv = run(&mut instance, &invite(2, &[auth])).await;
    assert_eq!(rc(&inv), 1);
}

/// A wrong password is -2, a user the tenant does not have -3, credentials
/// for another realm count as none (-5).
#[tokio::test]
async fn wrong_password_unknown_user_and_other_realms() {
    let services = services(Nonces::DEFAULT_EXPIRY).await;
    let mut instance = instance_of(TENANT, &services, &check_script(0)).await;
    let ch = challenged_invite(&mut instance).await;
    let uri = "sip:bob@example.com";

    let auth = answer(&ch, "alice", "guess", "INVITE", uri, Some(1));
    assert_eq!(rc(&run(&mut instance, &invite(2, &[auth])).await), -2);

    let auth = answer(&ch, "mallory", "secret", "INVITE", uri, Some(2));
    let inv = run(&mut instance, &invite(3, &[auth])).await;
    assert_eq!(rc(&inv), -3);
    // A failed check is answered with a new challenge, not stale.
    assert!(!challenge(&inv).stale);

    let mut other = ch.clone();
    other.realm = "other.example.com".into();
    let auth = answer(&other, "alice", "secret", "INVITE", uri, Some(3));
    assert_eq!(rc(&run(&mut instance, &invite(4, &[auth])).await), -5);

    // Failed attempts did not use up the nonce.
    let auth = answer(&ch, "alice", "secret", "INVITE", uri, Some(1));
    assert_eq!(rc(&run(&mut instance, &invite(5, &[auth])).await), 1);
}

/// With qop, each response must count nc up: the same nc again is -6, a
/// higher one is accepted (RFC 7616 section 3.4).
#[tokio::test]
async fn a_replayed_nonce_count_is_refused() {
    let services = services(Nonces::DEFAULT_EXPIRY).await;
    let mut instance = instance_of(TENANT, &services, &check_script(0)).await;
    let ch = challenged_invite(&mut instance).await;
    let uri = "sip:bob@example.com";
    let first = answer(&ch, "alice", "secret", "INVITE", uri, Some(1));
    assert_eq!(
        rc(&run(&mut instance, &invite(2, std::slice::from_ref(&first))).await),
        1
    );
    let inv = run(&mut instance, &invite(3, &[first])).await;
    assert_eq!(rc(&inv), -6);
    // The user agent knew the password: it may retry at once.
    assert!(challenge(&inv).stale);
    let next = answer(&ch, "alice", "secret", "INVITE", uri, Some(2));
    assert_eq!(rc(&run(&mut instance, &invite(4, &[next])).await), 1);
    let old = answer(&ch, "alice", "secret", "INVITE", uri, Some(1));
    assert_eq!(rc(&run(&mut instance, &invite(5, &[old])).await), -6);
}

/// Without qop a nonce authenticates one request: a retransmission of it
/// (same Call-ID and CSeq) is accepted again, the next request is -6.
#[tokio::test]
async fn a_nonce_without_qop_is_good_for_one_request() {
    let services = services(Nonces::DEFAULT_EXPIRY).await;
    let mut instance = instance_of(TENANT, &services, &check_script(0)).await;
    let ch = challenged_invite(&mut instance).await;
    let auth = answer(
        &ch,
        "alice",
        "secret",
        "INVITE",
        "sip:bob@example.com",
        None,
    );
    assert_eq!(
        rc(&run(&mut instance, &invite(2, std::slice::from_ref(&auth))).await),
        1
    );
    assert_eq!(
        rc(&run(&mut instance, &invite(2, std::slice::from_ref(&auth))).await),
        1,
        "retransmission"
    );
    assert_eq!(rc(&run(&mut instance, &invite(3, &[auth])).await), -6);
}

/// Past its expiry a nonce is stale: -4 when the password is right, and
/// the challenge that follows says stale=true so the phone retries
/// without asking its user; with a wrong password it is just -2.
#[tokio::test]
async fn an_expired_nonce_is_stale() {
    let services = services(Duration::from_millis(50)).await;
    let mut instance = instance_of(TENANT, &services, &check_script(0)).await;
    let ch = challenged_invite(&mut instance).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let uri = "sip:bob@example.com";

    let auth = answer(&ch, "alice", "guess", "INVITE", uri, Some(1));
    let inv = run(&mut instance, &invite(2, &[auth])).await;
    assert_eq!(rc(&inv), -2);
    assert!(!challenge(&inv).stale);

    let auth = answer(&ch, "alice", "secret", "INVITE", uri, Some(1));
    let inv = run(&mut instance, &invite(3, &[auth])).await;
    assert_eq!(rc(&inv), -4);
    let fresh = challenge(&inv);
    assert!(fresh.stale, "{fresh:?}");
    assert_ne!(fresh.nonce, ch.nonce);
    let auth = answer(&fresh, "alice", "secret", "INVITE", uri, Some(1));
    assert_eq!(rc(&run(&mut instance, &invite(4, &[auth])).await), 1);
}

/// SHA-256 credentials (RFC 7616, RFC 8760) are checked against the
/// SHA-256 HA1 of the store.
#[tokio::test]
async fn sha256_responses_are_checked() {
    let services = services(Nonces::DEFAULT_EXPIRY).await;
    let script = format!(
        r#"
function ksr_request_route()
    local rc = KSR.auth_db.auth_check("{REALM}", "subscriber", 0)
    say("rc", rc)
    if rc < 0 then
        KSR.auth.auth_challenge("{REALM}", 1 + 32)
    end
end
"#
    );
    let mut instance = instance_of(TENANT, &services, &script).await;
    let inv = run(&mut instance, &register(1, &[])).await;
    let (_, all) = challenges(&inv);
    let sha = all
        .iter()
        .find(|c| c.algorithm == "SHA-256")
        .expect("SHA-256 offered");
    let uri = "sip:example.com";
    let auth = answer(sha, "alice", "secret", "REGISTER", uri, Some(1));
    assert!(auth.contains("algorithm=SHA-256"));
    assert_eq!(rc(&run(&mut instance, &register(2, &[auth])).await), 1);
    let auth = answer(sha, "alice", "wrong", "REGISTER", uri, Some(2));
    assert_eq!(rc(&run(&mut instance, &register(3, &[auth])).await), -2);
}

/// Flag 1: the auth user must be the From user (To for REGISTER, with From
/// and To the same) or the check is -8; flag 2 with it lets INVITE through
/// with another caller id.
#[tokio::test]
async fn the_auth_user_must_match_from_or_to() {
    let services = services(Nonces::DEFAULT_EXPIRY).await;
    let uri = "sip:bob@example.com";
    for (flags, expected) in [(1, -8), (3, 1), (0, 1)] {
        let mut instance = instance_of(TENANT, &services, &check_script(flags)).await;
        let ch = challenged_invite(&mut instance).await;
        let auth = answer(&ch, "alice", "secret", "INVITE", uri, Some(1));
        let as_carol = request("INVITE", "carol", "bob", 2, &[auth]);
        assert_eq!(
            rc(&run(&mut instance, &as_carol).await),
            expected,
            "flags {flags}"
        );
    }

    let mut instance = instance_of(TENANT, &services, &check_script(1)).await;
    let inv = run(&mut instance, &register(1, &[])).await;
    let ch = challenge(&inv);
    let auth = answer(
        &ch,
        "alice",
        "secret",
        "REGISTER",
        "sip:example.com",
        Some(1),
    );
    let for_bob = request("REGISTER", "alice", "bob", 2, &[auth]);
    assert_eq!(
        rc(&run(&mut instance, &for_bob).await),
        -8,
        "To is not the auth user"
    );
    // The password was right, so that used nc 1 up.
    let auth = answer(
        &ch,
        "alice",
        "secret",
        "REGISTER",
        "sip:example.com",
        Some(2),
    );
    let from_bob = request("REGISTER", "bob", "alice", 3, &[auth]);
    assert_eq!(
        rc(&run(&mut instance, &from_bob).await),
        -8,
        "From is not To"
    );
}

/// `consume_credentials` removes the header the check used from the
/// forwarded request, and nothing else.
#[tokio::test]
async fn consume_credentials_removes_the_checked_header() {
    let services = services(Nonces::DEFAULT_EXPIRY).await;
    let script = format!(
        r#"
function ksr_request_route()
    say("consume first", KSR.auth.consume_credentials())
    local rc = KSR.auth_db.auth_check("{REALM}", "subscriber", 1)
    say("rc", rc)
    if rc < 0 then
        KSR.auth.auth_challenge("{REALM}", 1)
        return
    end
    say("consume", KSR.auth.consume_credentials())
    say("consume again", KSR.auth.consume_credentials())
end
"#
    );
    let mut instance = instance_of(TENANT, &services, &script).await;
    let inv = run(&mut instance, &invite(1, &[])).await;
    let ch = challenge(&inv);
    let auth = answer(
        &ch,
        "alice",
        "secret",
        "INVITE",
        "sip:bob@example.com",
        Some(1),
    );
    let text = invite(2, &[auth.clone(), "X-Keep: yes".into()]);
    let inv = run(&mut instance, &text).await;
    let said: Vec<String> = logs(&inv)
        .into_iter()
        .filter(|l| !l.contains(": KSR.auth."))
        .collect();
    assert_eq!(
        said,
        [
            "consume first number -1",
            "rc number 1",
            "consume number 1",
            "consume again number -1",
        ]
    );
    // Consuming without (or twice after) a check is a script error.
    assert_eq!(errors(&inv).len(), 2, "{:?}", errors(&inv));
    assert!(actions(&inv).contains(&Event::HeaderRemoved {
        name: "Proxy-Authorization".into(),
        count: 1
    }));
    let out = forwarded(&inv);
    assert!(!out.contains("Proxy-Authorization"), "{out}");
    assert!(out.contains("X-Keep: yes\r\n"), "{out}");
    assert_eq!(out, text.replace(&format!("{auth}\r\n"), ""));
}

/// Tenants share nothing: tenant B's subscriber is unknown in tenant A
/// (-3), and a nonce tenant B issued is not one tenant A accepts (-1),
/// even with the same store and nonce secret behind both.
#[tokio::test]
async fn tenants_cannot_use_each_others_subscribers_or_nonces() {
    let services = services(Nonces::DEFAULT_EXPIRY).await;
    let mut a = instance_of(TENANT, &services, &check_script(0)).await;
    let mut b = instance_of("auth-b", &services, &check_script(0)).await;
    let uri = "sip:bob@example.com";

    // bob answers tenant A's challenge correctly: A has no bob.
    let ch = challenged_invite(&mut a).await;
    let auth = answer(&ch, "bob", "hunter2", "INVITE", uri, Some(1));
    assert_eq!(
        rc(&run(&mut a, &request("INVITE", "bob", "bob", 2, &[auth])).await),
        -3
    );

    // In tenant B he authenticates...
    let ch_b = challenged_invite(&mut b).await;
    let auth = answer(&ch_b, "bob", "hunter2", "INVITE", uri, Some(1));
    assert_eq!(
        rc(&run(&mut b, &request("INVITE", "bob", "bob", 2, &[auth])).await),
        1
    );

    // ...and a nonce B issued does not work in A, even for A's alice.
    let auth = answer(&ch_b, "alice", "secret", "INVITE", uri, Some(1));
    assert_eq!(rc(&run(&mut a, &invite(3, &[auth])).await), -1);
}

/// Credentials the proxy cannot use are -1: a nonce it never issued, an
/// unknown algorithm, a Digest header that does not parse, missing
/// directives.
#[tokio::test]
async fn forged_nonces_and_malformed_credentials_are_errors() {
    let services = services(Nonces::DEFAULT_EXPIRY).await;
    let mut instance = instance_of(TENANT, &services, &check_script(0)).await;
    let ch = challenged_invite(&mut instance).await;
    let uri = "sip:bob@example.com";

    let mut forged = ch.clone();
    forged.nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093".into();
    let auth = answer(&forged, "alice", "secret", "INVITE", uri, Some(1));
    assert_eq!(rc(&run(&mut instance, &invite(2, &[auth])).await), -1);

    let auth = answer(&ch, "alice", "secret", "INVITE", uri, Some(1));
    let odd = auth.replace("algorithm=MD5", "algorithm=SHA-512-256");
    assert_eq!(rc(&run(&mut instance, &invite(3, &[odd])).await), -1);
    let broken = format!("Proxy-Authorization: Digest username=\"alice, realm=\"{REALM}\"");
    assert_eq!(rc(&run(&mut instance, &invite(4, &[broken])).await), -1);
    let partial = format!(
        "Proxy-Authorization: Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{}\"",
        ch.nonce
    );
    assert_eq!(rc(&run(&mut instance, &invite(5, &[partial])).await), -1);

    // None of that used the nonce up.
    let auth = answer(&ch, "alice", "secret", "INVITE", uri, Some(1));
    assert_eq!(rc(&run(&mut instance, &invite(6, &[auth])).await), 1);
}

/// `KSR.auth` checks against a password the script has: plain, or as an
/// HA1 (flag 1); `pv_auth_check` flags 4 leave a challenge with qop=auth
/// in `$avp(digest_challenge)` when the check fails, for the script's own
/// reply.
#[tokio::test]
async fn pv_checks_use_the_scripts_password() {
    let services = services(Nonces::DEFAULT_EXPIRY).await;
    let ha1 = hex(&md5(format!("alice:{REALM}:letmein").as_bytes()));
    let script = format!(
        r#"
function ksr_request_route()
    local mode = KSR.pv.get("$hdr(X-Mode)")
    local rc
    if mode == "ha1" then
        rc = KSR.auth.pv_auth_check("{REALM}", "{ha1}", 1, 1)
    elseif mode == "www" then
        rc = KSR.auth.pv_www_authenticate("{REALM}", "letmein", 0)
    elseif mode == "proxy" then
        rc = KSR.auth.pv_proxy_authenticate("{REALM}", "letmein", 0)
    else
        rc = KSR.auth.pv_auth_check("{REALM}", "letmein", 4, 1)
    end
    say("rc", rc)
    local challenge = KSR.pv.get("$avp(digest_challenge)")
    if challenge then
        KSR.hdr.append_to_reply(challenge)
        KSR.sl.send_reply(407, "Proxy Authentication Required")
    end
end
"#
    );
    let mut instance = instance_of(TENANT, &services, &script).await;
    let inv = run(&mut instance, &invite(1, &[])).await;
    assert_eq!(rc(&inv), -5);
    let ch = challenge(&inv);
    assert_eq!(ch.header, "Proxy-Authenticate");
    assert_eq!(ch.qop.as_deref(), Some("auth"));
    let uri = "sip:bob@example.com";

    let auth = answer(&ch, "alice", "letmein", "INVITE", uri, Some(1));
    let inv = run(&mut instance, &invite(2, &[auth])).await;
    assert_eq!(rc(&inv), 1);
    assert!(actions(&inv).is_empty());

    let mode = |m: &str| format!("X-Mode: {m}");
    let auth = answer(&ch, "alice", "letmein", "INVITE", uri, Some(2));
    assert_eq!(
        rc(&run(&mut instance, &invite(3, &[auth, mode("ha1")])).await),
        1
    );
    let auth = answer(&ch, "alice", "letmein", "INVITE", uri, Some(3));
    assert_eq!(
        rc(&run(&mut instance, &invite(4, &[auth, mode("proxy")])).await),
        1
    );
    // pv_www_authenticate reads Authorization, which this INVITE lacks.
    let auth = answer(&ch, "alice", "letmein", "INVITE", uri, Some(4));
    assert_eq!(
        rc(&run(&mut instance, &invite(5, &[auth, mode("www")])).await),
        -5
    );

    let auth = answer(&ch, "alice", "nope", "INVITE", uri, Some(5));
    let inv = run(&mut instance, &invite(6, &[auth])).await;
    assert_eq!(rc(&inv), -2);
    assert_eq!(challenges(&inv).0, 407);
}

/// `is_subscriber`: 1 for a subscriber of this tenant, -2 otherwise.
#[tokio::test]
async fn is_subscriber_looks_in_the_tenants_store() {
    let services = services(Nonces::DEFAULT_EXPIRY).await;
    let script = r#"
function ksr_request_route()
    say("alice", KSR.auth_db.is_subscriber("sip:alice@example.com", "subscriber", 1))
    say("bob", KSR.auth_db.is_subscriber("sip:bob@example.com", "subscriber", 1))
    say("other domain", KSR.auth_db.is_subscriber("sip:alice@example.org", "subscriber", 3))
    say("bad table", KSR.auth_db.is_subscriber("sip:alice@example.com", "users", 1))
end
"#;
    let mut instance = instance_of(TENANT, &services, script).await;
    let inv = run(&mut instance, &invite(1, &[])).await;
    let said: Vec<String> = logs(&inv)
        .into_iter()
        .filter(|l| !l.contains("unknown table"))
        .collect();
    assert_eq!(
        said,
        [
            "alice number 1",
            "bob number -2",
            "other domain number -2",
            "bad table number -1",
        ]
    );
    assert!(errors(&inv).iter().any(|e| e.contains("unknown table")));
}
