//! `KSR.sl`: replies the proxy sends itself, without a transaction.

use crate::bindings::kemibox::ksr::sl::Host;
use crate::{Ctx, Event};

impl Ctx {
    /// Queue a reply to the current request. 1 on success, -1 when there is
    /// no request to answer or the status code is not 100..699.
    pub(crate) fn reply(
        &mut self,
        function: &str,
        code: i32,
        reason: String,
        stateful: bool,
    ) -> i32 {
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
