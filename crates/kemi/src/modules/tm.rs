//! `KSR.tm`: transactions. Until the transaction layer exists these record
//! what the script asked for (`kemibox route` prints it) and report success
//! the way a relay that was accepted would.

use crate::bindings::kemibox::ksr::tm::Host;
use crate::{Ctx, Event, Message};

impl Ctx {
    fn arm_callback(&mut self, kind: &str, function: String) -> i32 {
        if function.is_empty() {
            self.script_error(
                &format!("KSR.tm.t_on_{}", kind.replace('-', "_")),
                "empty function name",
            );
            return -1;
        }
        self.events.push(Event::Callback {
            kind: kind.to_string(),
            function,
        });
        1
    }

    fn tm_call(&mut self, function: &str) -> i32 {
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let destination = m.dst_uri.clone().or_else(|| Message::ruri(m));
        self.events.push(Event::Tm {
            function: function.to_string(),
            destination,
        });
        1
    }
}

impl Host for Ctx {
    async fn t_relay(&mut self) -> i32 {
        self.tm_call("t_relay")
    }
    async fn t_on_branch(&mut self, rname: String) -> i32 {
        self.arm_callback("branch", rname)
    }
    async fn t_on_reply(&mut self, rname: String) -> i32 {
        self.arm_callback("reply", rname)
    }
    async fn t_on_failure(&mut self, rname: String) -> i32 {
        self.arm_callback("failure", rname)
    }
    async fn t_on_branch_failure(&mut self, rname: String) -> i32 {
        self.arm_callback("branch-failure", rname)
    }
    async fn t_check_trans(&mut self) -> i32 {
        // No transaction table offline: nothing matches.
        -1
    }
    async fn t_newtran(&mut self) -> i32 {
        self.tm_call("t_newtran")
    }
    async fn t_reply(&mut self, code: i32, reason: String) -> i32 {
        self.reply("KSR.tm.t_reply", code, reason, true)
    }
}
