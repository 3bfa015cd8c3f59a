//! `KSR.tm`: transactions. The functions record what the script asked for
//! as events; the proxy carries them out when the route returns (creating
//! the transaction, relaying, replying) and `kemibox route` prints them.
//! What the transaction layer knows (reply status, cancellation, timeouts)
//! comes in `Message::tm`, filled in by the proxy before the route runs.

use super::kemi;
use crate::bindings::kemibox::ksr::tm::Host;
use std::time::Duration;

use crate::{CallbackKind, Ctx, Event, FrTimers, Message, TmFunction};

impl Ctx {
    fn arm_callback(&mut self, kind: CallbackKind, function: String) -> i32 {
        if function.is_empty() {
            self.script_error(
                &format!("KSR.tm.{}", kind.arming_function()),
                "empty function name",
            );
            return -1;
        }
        self.events.push(Event::Callback { kind, function });
        1
    }

    fn tm_call(&mut self, function: TmFunction) -> i32 {
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let destination = m.dst_uri.clone().or_else(|| Message::ruri(m));
        self.events.push(Event::Tm {
            function,
            destination,
        });
        1
    }

    /// With a `relay_to` allowlist: false (logged) when no destination of
    /// the relay (`$du` or the R-URI, and each appended branch) is allowed.
    /// The proxy checks each branch again before sending it.
    async fn relay_allowed(&mut self) -> bool {
        let (Some(relay_to), Some(m)) = (self.relay_to.clone(), self.message.as_ref()) else {
            return true;
        };
        let mut targets: Vec<String> = Vec::new();
        targets.extend(m.dst_uri.clone().or_else(|| Message::ruri(m)));
        for b in &m.branches {
            targets.push(b.dst_uri.clone().unwrap_or_else(|| b.uri.clone()));
        }
        let mut refused = Vec::new();
        for target in &targets {
            match relay_to.check_uri(target).await {
                Ok(()) => return true,
                Err(destination) => refused.push(destination),
            }
        }
        tracing::warn!(
            tenant = %self.tenant,
            destination = %refused.join(", "),
            "t_relay refused: destination not in the tenant's relay_to"
        );
        false
    }
}

impl Host for Ctx {
    async fn t_relay(&mut self) -> i32 {
        if self.message.is_some() && !self.relay_allowed().await {
            return -1;
        }
        self.tm_call(TmFunction::Relay)
    }
    async fn t_on_branch(&mut self, rname: String) -> i32 {
        self.arm_callback(CallbackKind::Branch, rname)
    }
    async fn t_on_reply(&mut self, rname: String) -> i32 {
        self.arm_callback(CallbackKind::Reply, rname)
    }
    async fn t_on_failure(&mut self, rname: String) -> i32 {
        self.arm_callback(CallbackKind::Failure, rname)
    }
    async fn t_on_branch_failure(&mut self, rname: String) -> i32 {
        self.arm_callback(CallbackKind::BranchFailure, rname)
    }
    async fn t_check_trans(&mut self) -> i32 {
        // No transaction table offline: nothing matches.
        -1
    }
    async fn t_newtran(&mut self) -> i32 {
        self.tm_call(TmFunction::NewTran)
    }
    async fn t_reply(&mut self, code: i32, reason: String) -> i32 {
        self.reply("KSR.tm.t_reply", code, reason, true)
    }
    async fn t_check_status(&mut self, rmatch: String) -> i32 {
        let status = self
            .message
            .as_ref()
            .and_then(|m| m.tm.status.or(m.sip.status()));
        let Some(status) = status else {
            return -1;
        };
        let pattern = format!("^(?:{rmatch})$");
        match regex::Regex::new(&pattern) {
            Ok(re) => kemi(re.is_match(&status.to_string())),
            Err(e) => {
                self.script_error(
                    "KSR.tm.t_check_status",
                    format!("bad regular expression {rmatch:?}: {e}"),
                );
                -1
            }
        }
    }
    async fn t_is_canceled(&mut self) -> i32 {
        kemi(self.message.as_ref().is_some_and(|m| m.tm.canceled))
    }
    async fn t_is_set(&mut self, target: String) -> i32 {
        let kind = match target.as_str() {
            "branch_route" => CallbackKind::Branch,
            "onreply_route" => CallbackKind::Reply,
            "failure_route" => CallbackKind::Failure,
            "branch_failure_route" => CallbackKind::BranchFailure,
            other => {
                self.script_error("KSR.tm.t_is_set", format!("unknown route type {other:?}"));
                return -1;
            }
        };
        let armed_now = self
            .events
            .iter()
            .any(|e| matches!(e, Event::Callback { kind: k, .. } if *k == kind));
        let armed_before = self
            .message
            .as_ref()
            .is_some_and(|m| m.tm.armed.contains(&kind));
        kemi(armed_now || armed_before)
    }
    async fn t_branch_timeout(&mut self) -> i32 {
        kemi(self.message.as_ref().is_some_and(|m| m.tm.branch_timeout))
    }
    async fn t_any_timeout(&mut self) -> i32 {
        kemi(self.message.as_ref().is_some_and(|m| m.tm.any_timeout))
    }
    async fn t_set_fr(&mut self, fr_inv: i32, fr: i32) -> i32 {
        if fr_inv < 0 || fr < 0 {
            self.script_error(
                "KSR.tm.t_set_fr",
                format!("timeouts must not be negative ({fr_inv}, {fr})"),
            );
            return -1;
        }
        let ms = |v: i32| (v > 0).then(|| Duration::from_millis(v as u64));
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        m.fr_timers = FrTimers {
            fr_inv: ms(fr_inv),
            fr: ms(fr),
        };
        1
    }
    async fn t_is_expired(&mut self) -> i32 {
        kemi(self.message.as_ref().is_some_and(|m| m.tm.expired))
    }
    async fn t_load_contacts(&mut self) -> i32 {
        // Serial forking works on what `KSR.registrar.lookup` leaves: see
        // `modules/registrar/serial.rs`.
        self.load_contacts()
    }
    async fn t_next_contacts(&mut self) -> i32 {
        self.next_contacts()
    }
}
