//! `KSR.rr`: Record-Route insertion and loose routing (RFC 3261 16.6 step
//! 4, 16.12).

use kemibox_sip::{Edits, Uri, render};

use super::textops::{compile_regex, regex_error};
use crate::bindings::kemibox::ksr::rr::Host;
use crate::ctx::InsertedRecordRoute;
use crate::{Ctx, Event, Message, Transport};

/// The URI this proxy puts in Record-Route for a message received on `m`.
fn own_uri(m: &Message) -> String {
    let host = match m.local.ip() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let transport = match m.transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
    };
    format!("sip:{host}:{}{transport};lr", m.local.port())
}

/// Kamailio's `E_CFG`, returned by `is_direction` for an unknown direction.
const E_CFG: i32 = -6;

/// The URI `record_route_preset*` and `record_route_advertised_address`
/// put in Record-Route for `addr` (`host[:port]`, a scheme kept if given).
fn given_uri(addr: &str) -> String {
    let lower = addr.to_ascii_lowercase();
    if lower.starts_with("sip:") || lower.starts_with("sips:") {
        format!("{addr};lr")
    } else {
        format!("sip:{addr};lr")
    }
}

/// Record-Route URI parameters given by a script: `;name[=value]...`,
/// nothing that would end the URI or the header value.
fn valid_rr_params(params: &str) -> bool {
    params.starts_with(';')
        && !params
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"<>,\"".contains(&b))
        && Uri::parse(&format!("sip:x{params}")).is_ok()
}

/// The header values for `uris` with the parameters `params`.
fn rr_values(uris: &[String], params: &str) -> Vec<String> {
    uris.iter().map(|u| format!("<{u}{params}>")).collect()
}

/// `edits` with Record-Route `values` added; `None` if one is refused.
fn with_record_routes(m: &Message, mut edits: Edits, values: &[String]) -> Option<Edits> {
    for value in values {
        edits.add_record_route(&m.sip, value).ok()?;
    }
    Some(edits)
}

/// Whether `m`'s edits are still exactly those of just after the last
/// Record-Route insertion (nothing else changed since).
fn unchanged_since(m: &Message, inserted: &InsertedRecordRoute) -> bool {
    render(&m.sip, &m.edits) == render(&m.sip, &inserted.after)
}

/// `;name=value...` of a URI (as in Kamailio's routed parameters).
fn uri_params(uri: &str) -> Option<String> {
    let parsed = Uri::parse(uri).ok()?;
    Some(
        parsed
            .params
            .iter()
            .map(|p| match p.value {
                Some(v) => format!(";{}={v}", p.name),
                None => format!(";{}", p.name),
            })
            .collect(),
    )
}

impl Ctx {
    /// Add Record-Route headers for `uris` (with the `add_rr_param`
    /// parameters when `takes_params`), once per message.
    fn insert_record_routes(
        &mut self,
        function: &str,
        uris: Vec<String>,
        takes_params: bool,
    ) -> i32 {
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        if !m.sip.is_request() {
            self.script_error(function, "only requests are record-routed");
            return -1;
        }
        if m.rr.added {
            self.script_error(function, "double attempt to record-route");
            return -1;
        }
        if let Some(bad) = uris.iter().find(|u| Uri::parse(u).is_err()) {
            self.script_error(function, format!("invalid Record-Route URI {bad:?}"));
            return -1;
        }
        let params = if takes_params {
            m.rr.params.clone()
        } else {
            String::new()
        };
        let values = rr_values(&uris, &params);
        let before = m.edits.clone();
        let Some(after) = with_record_routes(m, before.clone(), &values) else {
            self.script_error(function, "invalid Record-Route value");
            return -1;
        };
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        m.edits = after.clone();
        m.rr.added = true;
        if !takes_params {
            // The preset functions reset the buffered parameters.
            m.rr.params.clear();
        }
        m.rr.inserted = Some(InsertedRecordRoute {
            before,
            after,
            uris,
            takes_params,
        });
        for value in values {
            self.events.push(Event::HeaderAdded {
                header: format!("Record-Route: {value}"),
                position: "record-route".into(),
            });
        }
        1
    }

    /// `record_route` with explicit URI parameters.
    fn record_route_with(&mut self, function: &str, params: &str) -> i32 {
        if !params.is_empty() && !valid_rr_params(params) {
            self.script_error(function, format!("invalid URI parameters {params:?}"));
            return -1;
        }
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let uri = format!("{}{params}", own_uri(m));
        self.insert_record_routes(function, vec![uri], true)
    }
}

impl Host for Ctx {
    async fn record_route(&mut self) -> i32 {
        self.record_route_with("KSR.rr.record_route", "")
    }

    async fn loose_route(&mut self) -> i32 {
        let myself = self.myself.clone();
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        let preloaded = m.sip.to().is_none_or(|t| t.tag().is_none());
        // The URIs of the Route entries, with their parameters (`;lr`).
        let routes: Vec<String> = match m.sip.routes() {
            Ok(r) => r.iter().map(|uri| uri.to_string()).collect(),
            Err(_) => return -1,
        };
        let Some(first) = routes.first() else {
            return -1;
        };
        let is_mine = |uri: &str| {
            Uri::parse(uri).is_ok_and(|u| myself.matches(u.host, u.port))
                || Uri::parse(uri).is_ok_and(|u| {
                    u.host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() == Ok(m.local.ip())
                        && u.port.is_none_or(|p| p == m.local.port())
                })
        };
        let mut next = Some(first.as_str());
        let mut removed = 0;
        if is_mine(first) {
            m.rr.routed = Some(first.clone());
            if m.edits.remove_first_value(&m.sip, "Route") {
                removed += 1;
            }
            next = routes.get(1).map(String::as_str);
            // A proxy that double record-routed (two sockets) has two entries.
            if let Some(second) = next
                && is_mine(second)
            {
                if m.edits.remove_first_value(&m.sip, "Route") {
                    removed += 1;
                }
                next = routes.get(2).map(String::as_str);
            }
        }
        if removed > 0 {
            self.events.push(Event::HeaderRemoved {
                name: "Route".into(),
                count: removed,
            });
        }
        match next {
            Some(hop) => {
                let hop = hop.to_string();
                self.set_dst_uri("KSR.rr.loose_route", Some(hop));
                1
            }
            // Our entry was the last of a preloaded route set (a request
            // outside a dialog): not routed by Route, as in Kamailio.
            None if preloaded => -1,
            // Our entry was the last: the request goes to its R-URI.
            None => 1,
        }
    }

    async fn record_route_params(&mut self, params: String) -> i32 {
        self.record_route_with("KSR.rr.record_route_params", &params)
    }

    async fn record_route_preset_one(&mut self, addr: String) -> i32 {
        self.insert_record_routes(
            "KSR.rr.record_route_preset_one",
            vec![given_uri(&addr)],
            false,
        )
    }

    async fn record_route_preset(&mut self, addr1: String, addr2: String) -> i32 {
        let mut uris = vec![given_uri(&addr1)];
        if !addr2.is_empty() {
            uris.push(given_uri(&addr2));
        }
        self.insert_record_routes("KSR.rr.record_route_preset", uris, false)
    }

    async fn record_route_advertised_address(&mut self, addr: String) -> i32 {
        self.insert_record_routes(
            "KSR.rr.record_route_advertised_address",
            vec![given_uri(&addr)],
            true,
        )
    }

    async fn remove_record_route(&mut self) -> i32 {
        const FUNCTION: &str = "KSR.rr.remove_record_route";
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let Some(inserted) = m.rr.inserted.as_ref() else {
            return 1;
        };
        if !unchanged_since(m, inserted) {
            self.script_error(
                FUNCTION,
                "the message changed after the Record-Route was added; it cannot be removed alone",
            );
            return -1;
        }
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        let Some(inserted) = m.rr.inserted.take() else {
            return 1;
        };
        m.edits = inserted.before;
        self.events.push(Event::HeaderRemoved {
            name: "Record-Route".into(),
            count: inserted.uris.len(),
        });
        1
    }

    async fn add_rr_param(&mut self, sparam: String) -> i32 {
        const FUNCTION: &str = "KSR.rr.add_rr_param";
        if !valid_rr_params(&sparam) {
            self.script_error(FUNCTION, format!("invalid URI parameter {sparam:?}"));
            return -1;
        }
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let Some(inserted) = m.rr.inserted.as_ref().filter(|i| i.takes_params) else {
            // No Record-Route yet (or a preset one): kept for the next one.
            if let Some(m) = self.message.as_mut() {
                m.rr.params.push_str(&sparam);
            }
            return 1;
        };
        if !unchanged_since(m, inserted) {
            self.script_error(
                FUNCTION,
                "the message changed after the Record-Route was added; the parameter cannot be added to it",
            );
            return -1;
        }
        let params = format!("{}{sparam}", m.rr.params);
        let values = rr_values(&inserted.uris, &params);
        let Some(edits) = with_record_routes(m, inserted.before.clone(), &values) else {
            self.script_error(FUNCTION, "invalid Record-Route value");
            return -1;
        };
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        m.edits = edits.clone();
        m.rr.params = params;
        if let Some(inserted) = m.rr.inserted.as_mut() {
            inserted.after = edits;
        }
        for value in values {
            self.events.push(Event::HeaderAdded {
                header: format!("Record-Route: {value}"),
                position: "replace".into(),
            });
        }
        1
    }

    async fn check_route_param(&mut self, sre: String) -> i32 {
        let re = match compile_regex(&sre) {
            Ok(re) => re,
            Err(e) => {
                self.script_error("KSR.rr.check_route_param", regex_error(&sre, &e));
                return -1;
            }
        };
        let params = self
            .message
            .as_ref()
            .and_then(|m| m.rr.routed.as_deref())
            .and_then(uri_params)
            .filter(|p| !p.is_empty());
        match params {
            Some(p) if re.is_match(p.as_bytes()) => 1,
            _ => -1,
        }
    }

    async fn is_direction(&mut self, dir: String) -> i32 {
        let upstream_wanted = if dir.eq_ignore_ascii_case("upstream") {
            true
        } else if dir.eq_ignore_ascii_case("downstream") {
            false
        } else {
            self.script_error(
                "KSR.rr.is_direction",
                format!("unknown direction {dir:?} - use 'downstream' or 'upstream'"),
            );
            return E_CFG;
        };
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let ftag =
            m.rr.routed
                .as_deref()
                .and_then(|u| Uri::parse(u).ok())
                .and_then(|u| u.param("ftag").flatten().map(str::to_string))
                .filter(|t| !t.is_empty());
        let from_tag = m.sip.from().and_then(|f| f.tag().map(str::to_string));
        let upstream = match (ftag, from_tag) {
            (Some(ftag), Some(tag)) if !tag.is_empty() => ftag != tag,
            _ => false,
        };
        if upstream == upstream_wanted { 1 } else { -1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        INVITE, actions, ctx, ctx_on, invite_with, logs, message, ready, rendered,
    };

    /// The Record-Route names the socket the request came in on, with
    /// `;lr`, and `;transport=tcp` over TCP; once per message.
    #[test]
    fn record_route_names_the_receiving_socket_once() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.record_route()), 1);
        assert!(rendered(&c).contains("\r\nRecord-Route: <sip:192.0.2.1:5060;lr>\r\n"));
        assert_eq!(ready(c.record_route()), -1);
        assert_eq!(
            logs(&c),
            vec!["KSR.rr.record_route: double attempt to record-route"]
        );
        assert_eq!(
            rendered(&c).matches("Record-Route:").count(),
            1,
            "{}",
            rendered(&c)
        );

        let mut c = ctx_on(INVITE, Transport::Tcp);
        assert_eq!(ready(c.record_route()), 1);
        assert!(rendered(&c).contains("Record-Route: <sip:192.0.2.1:5060;transport=tcp;lr>\r\n"));
    }

    /// `add_rr_param` before the Record-Route is kept for it; after, the
    /// Record-Route is redone with the parameter. Parameters that would
    /// break the header are refused.
    #[test]
    fn rr_parameters_before_and_after() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.add_rr_param(";ftag=a1".into())), 1);
        assert_eq!(ready(c.record_route()), 1);
        assert_eq!(ready(c.add_rr_param(";nat=yes".into())), 1);
        let out = rendered(&c);
        assert!(
            out.contains("Record-Route: <sip:192.0.2.1:5060;lr;ftag=a1;nat=yes>\r\n"),
            "{out}"
        );
        assert_eq!(out.matches("Record-Route:").count(), 1, "{out}");
        assert_eq!(ready(c.add_rr_param("ftag=a1".into())), -1);
        assert_eq!(ready(c.add_rr_param(";a=b>, <sip:evil".into())), -1);
        assert_eq!(ready(c.record_route_params(";x=1\r\n".into())), -1);
        assert_eq!(logs(&c).len(), 3, "{:?}", logs(&c));
    }

    /// Preset Record-Routes take given addresses (both, or one).
    #[test]
    fn preset_record_routes() {
        let mut c = ctx(INVITE);
        assert_eq!(
            ready(c.record_route_preset("192.0.2.1:5060".into(), "sip:[2001:db8::1]:5060".into())),
            1
        );
        let out = rendered(&c);
        assert!(
            out.contains("Record-Route: <sip:192.0.2.1:5060;lr>"),
            "{out}"
        );
        assert!(out.contains("<sip:[2001:db8::1]:5060;lr>"), "{out}");
        // Undone while nothing else changed: the message is as received.
        assert_eq!(ready(c.remove_record_route()), 1);
        assert_eq!(rendered(&c), INVITE);
        assert_eq!(
            actions(&c).last(),
            Some(&Event::HeaderRemoved {
                name: "Record-Route".into(),
                count: 2,
            })
        );
    }

    /// Record-Route is for requests only.
    #[test]
    fn replies_are_not_record_routed() {
        let mut c = ctx(
            "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-2\r\n\
            From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b1\r\n\
            Call-ID: c2\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(ready(c.record_route()), -1);
        assert_eq!(
            logs(&c),
            vec!["KSR.rr.record_route: only requests are record-routed"]
        );
    }

    /// An in-dialog request: our Route entry is consumed, the next hop
    /// becomes `$du`, and the entry's parameters answer
    /// `check_route_param` and `is_direction`.
    #[test]
    fn loose_route_consumes_our_entry() {
        let raw = invite_with(
            &[
                ("INVITE ", "BYE sip:bob@192.0.2.20 SIP/2.0"),
                ("To:", "To: <sip:bob@example.com>;tag=b1"),
                ("CSeq:", "CSeq: 2 BYE"),
            ],
            &["Route: <sip:192.0.2.1:5060;lr;ftag=a1>, <sip:192.0.2.99;lr>"],
        );
        let mut c = ctx(&raw);
        assert_eq!(ready(c.loose_route()), 1);
        assert_eq!(
            message(&mut c).dst_uri.as_deref(),
            Some("sip:192.0.2.99;lr")
        );
        let out = rendered(&c);
        assert!(out.contains("\r\nRoute: <sip:192.0.2.99;lr>\r\n"), "{out}");
        assert!(!out.contains("ftag"), "{out}");
        assert_eq!(
            actions(&c),
            vec![
                Event::HeaderRemoved {
                    name: "Route".into(),
                    count: 1,
                },
                Event::PvSet {
                    name: "$du".into(),
                    value: Some("sip:192.0.2.99;lr".into()),
                },
            ]
        );
        assert_eq!(ready(c.check_route_param("ftag=a1".into())), 1);
        assert_eq!(ready(c.check_route_param("nat=yes".into())), -1);
        // The From tag is the one in our entry: the request goes downstream.
        assert_eq!(ready(c.is_direction("downstream".into())), 1);
        assert_eq!(ready(c.is_direction("upstream".into())), -1);
        assert_eq!(ready(c.is_direction("sideways".into())), E_CFG);
    }

    /// Our entry as the last Route: within a dialog the request goes to
    /// its R-URI (1); a preloaded route of an initial request is not
    /// routed by Route (-1). Without Route, -1.
    #[test]
    fn loose_route_last_entry_and_none() {
        let route = "Route: <sip:proxy.example.com;lr>";
        let in_dialog = invite_with(&[("To:", "To: <sip:bob@example.com>;tag=b1")], &[route]);
        let mut c = ctx(&in_dialog);
        assert_eq!(ready(c.loose_route()), 1);
        assert_eq!(message(&mut c).dst_uri, None);
        assert!(!rendered(&c).contains("Route:"));

        let mut c = ctx(&invite_with(&[], &[route]));
        assert_eq!(ready(c.loose_route()), -1);

        let mut c = ctx(INVITE);
        assert_eq!(ready(c.loose_route()), -1);
        assert!(c.events.is_empty());
        assert_eq!(rendered(&c), INVITE);
    }

    /// A Route entry that is not ours stays, and becomes `$du`.
    #[test]
    fn loose_route_to_a_foreign_entry() {
        let raw = invite_with(
            &[("To:", "To: <sip:bob@example.com>;tag=b1")],
            &["Route: <sip:198.51.100.3;lr>"],
        );
        let mut c = ctx(&raw);
        assert_eq!(ready(c.loose_route()), 1);
        assert_eq!(
            message(&mut c).dst_uri.as_deref(),
            Some("sip:198.51.100.3;lr")
        );
        assert!(rendered(&c).contains("Route: <sip:198.51.100.3;lr>\r\n"));
    }
}
