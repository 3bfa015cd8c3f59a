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
