//! `KSR.siputils`: tests on the SIP message.

use crate::Ctx;
use crate::bindings::kemibox::ksr::siputils::Host;

fn kemi(test: bool) -> i32 {
    if test { 1 } else { -1 }
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
                .is_some_and(|m| m.sip.via_count() == 1),
        )
    }
}
