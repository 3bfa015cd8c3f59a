//! `KSR.rr`: Record-Route insertion and loose routing (RFC 3261 16.6 step
//! 4, 16.12).

use kemibox_sip::Uri;

use crate::bindings::kemibox::ksr::rr::Host;
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

impl Host for Ctx {
    async fn record_route(&mut self) -> i32 {
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        if !m.sip.is_request() {
            self.script_error("KSR.rr.record_route", "only requests are record-routed");
            return -1;
        }
        let value = format!("<{}>", own_uri(m));
        if m.edits.add_record_route(&m.sip, &value).is_err() {
            return -1;
        }
        self.events.push(Event::HeaderAdded {
            header: format!("Record-Route: {value}"),
            position: "record-route".into(),
        });
        1
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
}
