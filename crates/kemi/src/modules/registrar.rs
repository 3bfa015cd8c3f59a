//! `KSR.registrar`: REGISTER handling and location lookups (Kamailio's
//! registrar module on top of its usrloc), per RFC 3261 section 10.3 where
//! Kamailio's documentation is silent.
//!
//! - [`save`]: a REGISTER's Contacts become bindings of its To AOR in the
//!   tenant's location store, answered with 200 OK listing them.
//! - [`lookup`]: an AOR's bindings become the R-URI, `$du`, Path and
//!   appended branches of the request being routed.
//! - [`serial`]: `KSR.tm.t_load_contacts` / `t_next_contacts`, serial
//!   forking over the contacts a lookup produced (grouped by q).
//!
//! Every store call is scoped by the tenant (`Ctx::tenant`) and names the
//! script's table, so tenants and tables never see each other's bindings.

mod lookup;
mod save;
pub(crate) mod serial;

use kemibox_sip::{Scheme, Uri};
use kemibox_store::unix_now;

use crate::Ctx;
use crate::bindings::kemibox::ksr::registrar::Host;

/// Save flag 1: keep the bindings in memory only (not in the database).
const SAVE_MEMORY_ONLY: i32 = 1;
/// Save flag 2: send no reply (the script answers itself).
const SAVE_NO_REPLY: i32 = 2;
/// Save flag 4: the REGISTER's contacts replace all bindings of the AOR.
const SAVE_REPLACE_ALL: i32 = 4;

/// The address-of-record of a SIP URI as the location store keys it:
/// `user@host` (host lower-cased, port and parameters dropped), or the
/// host alone when the URI has no user. `None` for URIs that cannot name
/// an AOR (not SIP/SIPS, unparsable).
fn aor_of(uri: &Uri<'_>) -> Option<String> {
    if !matches!(uri.scheme_kind(), Scheme::Sip | Scheme::Sips) || uri.host.is_empty() {
        return None;
    }
    let host = uri.host.to_ascii_lowercase();
    Some(match uri.user {
        Some(user) => format!("{user}@{host}"),
        None => host,
    })
}

/// A q-value as SIP writes it (`1`, `0.5`, `0.125`) from its value times
/// 1000, as bindings and branches carry it.
fn q_text(q: u16) -> String {
    match q {
        0 => "0".into(),
        1000.. => "1".into(),
        _ => {
            let frac = format!("{q:03}");
            format!("0.{}", frac.trim_end_matches('0'))
        }
    }
}

/// A q-value (RFC 3261 `qvalue`: `0`..`1` with at most three decimals)
/// times 1000; `None` when it is not one.
fn parse_q(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let milli = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(milli),
        "1" if milli == 0 => Some(1000),
        _ => None,
    }
}

/// The URN inside a `+sip.instance` value (`"<urn:uuid:...>"` as
/// received, quotes and angle brackets removed): what a public GRUU's `gr`
/// parameter carries (RFC 5627).
fn instance_urn(instance: &str) -> &str {
    instance
        .trim_matches('"')
        .trim_start_matches('<')
        .trim_end_matches('>')
}

impl Host for Ctx {
    async fn save(&mut self, table: String, flags: i32) -> i32 {
        self.registrar_save("KSR.registrar.save", table, flags, None)
            .await
    }
    async fn save_uri(&mut self, table: String, flags: i32, uri: String) -> i32 {
        self.registrar_save("KSR.registrar.save_uri", table, flags, Some(uri))
            .await
    }
    async fn lookup(&mut self, table: String) -> i32 {
        self.registrar_lookup("KSR.registrar.lookup", table, None)
            .await
    }
    async fn lookup_uri(&mut self, table: String, uri: String) -> i32 {
        self.registrar_lookup("KSR.registrar.lookup_uri", table, Some(uri))
            .await
    }
    async fn lookup_branches(&mut self, table: String) -> i32 {
        self.registrar_lookup_branches(table).await
    }
    async fn registered(&mut self, table: String) -> i32 {
        self.registrar_registered("KSR.registrar.registered", table, None)
            .await
    }
    async fn registered_uri(&mut self, table: String, uri: String) -> i32 {
        self.registrar_registered("KSR.registrar.registered_uri", table, Some(uri))
            .await
    }
    async fn unregister(&mut self, table: String, uri: String) -> i32 {
        self.registrar_unregister(table, uri).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kemibox_sip::SipMessage;

    use super::*;
    use crate::services::unreachable::Unreachable;
    use crate::testing::ready;
    use crate::{Event, Level, Message, Myself, Nonces, Services, Transport};

    /// A store that cannot be reached: save answers 500, logs the AOR and
    /// returns -1; lookup returns -3 (an internal error, not "not found").
    #[test]
    fn store_failures_answer_500_and_are_logged() {
        let services = Arc::new(Services {
            location: Arc::new(Unreachable),
            subscribers: Arc::new(Unreachable),
            registrar: Default::default(),
            nonces: Nonces::new(Nonces::random_secret(), Nonces::DEFAULT_EXPIRY),
        });
        let mut ctx = Ctx::new("t9".parse().unwrap(), Arc::new(Myself::default()), services);
        ctx.record_logs = true;
        let register = "REGISTER sip:example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK1\r\n\
             From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n\
             Call-ID: c1\r\nCSeq: 1 REGISTER\r\n\
             Contact: <sip:alice@192.0.2.7:5070>\r\nContent-Length: 0\r\n\r\n";
        let sip = SipMessage::parse(register.as_bytes().to_vec()).unwrap();
        let source = "192.0.2.7:5070".parse().unwrap();
        let local = "192.0.2.1:5060".parse().unwrap();
        ctx.begin(Some(Message::new(sip, source, local, Transport::Udp)));
        assert_eq!(ready(Host::save(&mut ctx, "location".into(), 0)), -1);
        let logged = ctx.events.iter().any(|e| {
            matches!(e, Event::Log { level: Level::Err, message }
                if message.contains("location store failed for alice@example.com"))
        });
        assert!(logged, "{:?}", ctx.events);
        assert!(ctx.events.iter().any(|e| matches!(
            e,
            Event::Reply { code: 500, headers, .. } if headers.is_empty()
        )));
        assert_eq!(ready(Host::lookup(&mut ctx, "location".into())), -3);
    }

    #[test]
    fn q_values_round_trip() {
        for (text, milli) in [
            ("0", 0),
            ("1", 1000),
            ("1.0", 1000),
            ("1.000", 1000),
            ("0.5", 500),
            ("0.05", 50),
            ("0.125", 125),
            ("0.", 0),
        ] {
            assert_eq!(parse_q(text), Some(milli), "{text}");
        }
        for bad in ["", "2", "1.5", "0.1234", "-0.5", "0.x", ".5", "01"] {
            assert_eq!(parse_q(bad), None, "{bad}");
        }
        assert_eq!(q_text(1000), "1");
        assert_eq!(q_text(0), "0");
        assert_eq!(q_text(500), "0.5");
        assert_eq!(q_text(50), "0.05");
        assert_eq!(q_text(125), "0.125");
    }

    #[test]
    fn aor_is_user_at_lowercase_host() {
        let aor = |s: &str| aor_of(&Uri::parse(s).unwrap());
        assert_eq!(
            aor("sip:Alice@Example.COM:5080;transport=tcp").as_deref(),
            Some("Alice@example.com")
        );
        assert_eq!(aor("sips:example.com").as_deref(), Some("example.com"));
        assert_eq!(aor("tel:+15551234"), None);
        assert_eq!(
            instance_urn("\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\""),
            "urn:uuid:00000000-0000-1000-8000-000A95A0E128"
        );
    }
}
