//! `KSR.tm`: transactions. The functions record what the script asked for
//! as events; the proxy carries them out when the route returns (creating
//! the transaction, relaying, replying) and `kemibox route` prints them.
//! What the transaction layer knows (reply status, cancellation, timeouts)
//! comes in `Message::tm`, filled in by the proxy before the route runs.

use super::kemi;
use crate::bindings::kemibox::ksr::tm::Host;
use std::time::Duration;

use crate::{ActionKind, CallbackKind, Ctx, Event, FrTimers, Message, REFUSED, TmFunction};

impl Ctx {
    fn arm_callback(&mut self, kind: CallbackKind, function: String) -> i32 {
        if self.refuses(ActionKind::Arm) {
            return REFUSED;
        }
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
        let action = match function {
            TmFunction::Relay => ActionKind::Relay,
            TmFunction::NewTran => ActionKind::NewTransaction,
        };
        if self.refuses(action) {
            return REFUSED;
        }
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
        if self.refuses(ActionKind::Relay) {
            return REFUSED;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RouteType;
    use crate::testing::{INVITE, actions, ctx, logs, message, ready};

    /// `t_check_status` matches the whole status against the pattern: the
    /// routed reply's, or the transaction's (a failure route's winning
    /// reply); nothing to match in a request outside a transaction.
    #[test]
    fn check_status_matches_the_whole_code() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.t_check_status("[0-9]+".into())), -1);
        message(&mut c).tm.status = Some(486);
        let mut check = |re: &str| ready(c.t_check_status(re.into()));
        assert_eq!(check("486"), 1);
        assert_eq!(check("4[0-9][0-9]"), 1);
        assert_eq!(check("48"), -1);
        assert_eq!(check("408|486"), 1);
        assert_eq!(check("5.."), -1);
        assert_eq!(check("("), -1);
        assert!(
            logs(&c)[0].starts_with("KSR.tm.t_check_status: bad regular expression \"(\""),
            "{:?}",
            logs(&c)
        );

        let mut reply = ctx("SIP/2.0 183 Session Progress\r\n\
            Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-2\r\n\
            From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b1\r\n\
            Call-ID: c2\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(ready(reply.t_check_status("1[0-9][0-9]".into())), 1);
    }

    /// Outside the route types that allow them, `t_relay`, `t_newtran`,
    /// `t_reply` and `t_on_*` refuse without acting (the guest makes -1 of
    /// it and logs the line); the same calls act in a request route.
    #[test]
    fn route_types_refuse_what_they_do_not_allow() {
        let mut c = ctx(INVITE);
        message(&mut c).route = RouteType::OnReply;
        assert_eq!(ready(c.t_relay()), REFUSED);
        assert_eq!(ready(c.t_newtran()), REFUSED);
        assert_eq!(ready(c.t_reply(404, "Not Found".into())), REFUSED);
        assert_eq!(ready(c.t_on_failure("f".into())), REFUSED);
        assert!(actions(&c).is_empty(), "{:?}", actions(&c));
        message(&mut c).route = RouteType::Failure;
        assert_eq!(ready(c.t_relay()), 1);
        message(&mut c).route = RouteType::Request;
        assert_eq!(ready(c.t_reply(404, "Not Found".into())), 1);
        assert_eq!(actions(&c).len(), 2);
    }

    /// `t_is_set` sees routes armed in this route and before it.
    #[test]
    fn is_set_sees_armed_routes() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.t_is_set("failure_route".into())), -1);
        assert_eq!(ready(c.t_on_failure("missed".into())), 1);
        assert_eq!(ready(c.t_is_set("failure_route".into())), 1);
        assert_eq!(ready(c.t_is_set("branch_route".into())), -1);
        message(&mut c).tm.armed = vec![CallbackKind::Branch];
        assert_eq!(ready(c.t_is_set("branch_route".into())), 1);
        assert_eq!(ready(c.t_is_set("onreply_route".into())), -1);
        assert_eq!(ready(c.t_is_set("bogus".into())), -1);
        assert_eq!(ready(c.t_on_reply("".into())), -1);
        assert_eq!(
            logs(&c),
            vec![
                "KSR.tm.t_is_set: unknown route type \"bogus\"",
                "KSR.tm.t_on_reply: empty function name",
            ]
        );
        assert_eq!(
            actions(&c),
            vec![Event::Callback {
                kind: CallbackKind::Failure,
                function: "missed".into(),
            }]
        );
    }

    /// `t_set_fr` sets the branches' final-response timers in
    /// milliseconds; 0 keeps the proxy's default; negative is an error.
    #[test]
    fn set_fr_timers() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.t_set_fr(30_000, 2_000)), 1);
        assert_eq!(
            message(&mut c).fr_timers,
            FrTimers {
                fr_inv: Some(Duration::from_secs(30)),
                fr: Some(Duration::from_secs(2)),
            }
        );
        assert_eq!(ready(c.t_set_fr(0, 1_500)), 1);
        assert_eq!(
            message(&mut c).fr_timers,
            FrTimers {
                fr_inv: None,
                fr: Some(Duration::from_millis(1_500)),
            }
        );
        assert_eq!(ready(c.t_set_fr(-1, 0)), -1);
        assert_eq!(
            message(&mut c).fr_timers.fr,
            Some(Duration::from_millis(1_500))
        );
        assert_eq!(
            logs(&c),
            vec!["KSR.tm.t_set_fr: timeouts must not be negative (-1, 0)"]
        );
    }

    /// `t_relay` asks for the transaction towards `$du`, else the R-URI
    /// as rewritten; without a `relay_to` list nothing is refused.
    #[test]
    fn relay_names_its_destination() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.t_relay()), 1);
        message(&mut c).dst_uri = Some("sip:192.0.2.50:5080".into());
        assert_eq!(ready(c.t_relay()), 1);
        assert_eq!(ready(c.t_newtran()), 1);
        let tm = |function, destination: &str| Event::Tm {
            function,
            destination: Some(destination.into()),
        };
        assert_eq!(
            actions(&c),
            vec![
                tm(TmFunction::Relay, "sip:bob@example.com"),
                tm(TmFunction::Relay, "sip:192.0.2.50:5080"),
                tm(TmFunction::NewTran, "sip:192.0.2.50:5080"),
            ]
        );
    }

    /// The transaction facts the proxy passes in answer the tests.
    #[test]
    fn transaction_facts() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.t_is_canceled()), -1);
        assert_eq!(ready(c.t_branch_timeout()), -1);
        let tm = &mut message(&mut c).tm;
        tm.canceled = true;
        tm.branch_timeout = true;
        tm.any_timeout = true;
        tm.expired = true;
        assert_eq!(ready(c.t_is_canceled()), 1);
        assert_eq!(ready(c.t_branch_timeout()), 1);
        assert_eq!(ready(c.t_any_timeout()), 1);
        assert_eq!(ready(c.t_is_expired()), 1);
        assert_eq!(ready(c.t_check_trans()), -1);
    }
}
