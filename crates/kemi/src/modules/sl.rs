//! `KSR.sl`: replies the proxy sends itself, without a transaction.

use crate::bindings::kemibox::ksr::sl::Host;
use crate::{ActionKind, Ctx, Event, REFUSED};

impl Ctx {
    /// Queue a reply to the current request. 1 on success, -1 when there is
    /// no request to answer or the status code is not 100..699,
    /// [`REFUSED`] when the route type may not answer.
    pub(crate) fn reply(
        &mut self,
        function: &str,
        code: i32,
        reason: String,
        stateful: bool,
    ) -> i32 {
        if self.refuses(ActionKind::Reply) {
            return REFUSED;
        }
        if !(100..=699).contains(&code) {
            self.script_error(function, format!("invalid status code {code}"));
            return -1;
        }
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        if !m.sip.is_request() || m.sip.method_str() == "ACK" {
            self.script_error(function, "only requests other than ACK can be answered");
            return -1;
        }
        let headers = m.reply_headers.clone();
        self.events.push(Event::Reply {
            code,
            reason,
            stateful,
            headers,
        });
        1
    }
}

impl Ctx {
    /// A reply a module function sends on its own (`registrar.save`'s 200,
    /// an auth failure's 500): where the route type may not answer, the
    /// refusal is logged here, since the script asked for no reply itself.
    pub(crate) fn internal_reply(&mut self, function: &str, code: i32, reason: String) {
        if self.reply(function, code, reason, false) == REFUSED {
            let route = self.message.as_ref().map(|m| m.route.name()).unwrap_or("");
            self.script_error(function, format!("no reply is sent from {route}"));
        }
    }
}

impl Host for Ctx {
    async fn sl_send_reply(&mut self, code: i32, reason: String) -> i32 {
        self.reply("KSR.sl.sl_send_reply", code, reason, false)
    }
    async fn send_reply(&mut self, code: i32, reason: String) -> i32 {
        self.reply("KSR.sl.send_reply", code, reason, false)
    }
    async fn sl_reply_error(&mut self) -> i32 {
        self.reply(
            "KSR.sl.sl_reply_error",
            500,
            "Server Internal Error".into(),
            false,
        )
    }
}
