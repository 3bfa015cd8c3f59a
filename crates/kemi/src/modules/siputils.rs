//! `KSR.siputils`: tests on the SIP message.

use std::net::IpAddr;

use kemibox_sip::Uri;

use crate::bindings::kemibox::ksr::siputils::Host;
use crate::{Ctx, Message, Myself};

fn kemi(test: bool) -> i32 {
    if test { 1 } else { -1 }
}

/// Kamailio's `is_first_hop()`: a request with a single Via; a reply
/// without Record-Route, or whose top Record-Route is an IP address of ours
/// that the reply did not come from (that would be a local loop).
fn first_hop(m: &Message, myself: &Myself) -> bool {
    if m.sip.is_request() {
        return m.sip.via_count() == 1;
    }
    let Ok(record_routes) = m.sip.record_routes() else {
        return false;
    };
    let Some(top) = record_routes.first() else {
        return true;
    };
    let Ok(uri) = Uri::parse(top) else {
        return false;
    };
    let Ok(ip) = uri.host.trim_matches(['[', ']']).parse::<IpAddr>() else {
        return false;
    };
    let from_itself = ip == m.source.ip() && uri.port.unwrap_or(5060) == m.source.port();
    myself.matches(uri.host, uri.port) && !from_itself
}

impl Host for Ctx {
    async fn has_totag(&mut self) -> i32 {
        kemi(
            self.message
                .as_ref()
                .is_some_and(|m| m.sip.to().is_some_and(|t| t.tag().is_some())),
        )
    }
    async fn is_request(&mut self) -> i32 {
        kemi(self.message.as_ref().is_some_and(|m| m.sip.is_request()))
    }
    async fn is_reply(&mut self) -> i32 {
        kemi(self.message.as_ref().is_some_and(|m| !m.sip.is_request()))
    }
    async fn is_first_hop(&mut self) -> i32 {
        kemi(
            self.message
                .as_ref()
                .is_some_and(|m| first_hop(m, &self.myself)),
        )
    }
}
