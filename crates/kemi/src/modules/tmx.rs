//! `KSR.tmx`: which kind of transaction route is running, the
//! retransmission pre-check, and suspending/resuming a transaction
//! (`t_suspend`/`t_continue`, carried out by the proxy when the route ends).

use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};

use super::kemi;
use crate::bindings::kemibox::ksr::tmx::Host;
use crate::{ActionKind, Ctx, Event, REFUSED, RouteType};

/// Suspension ids: the index counts, the label is unguessable, so one
/// request cannot resume another's transaction by trying numbers.
static NEXT_INDEX: AtomicU32 = AtomicU32::new(1);
static LABEL_SALT: LazyLock<RandomState> = LazyLock::new(RandomState::new);

fn suspension_ids() -> (u32, u32) {
    let index = NEXT_INDEX.fetch_add(1, Ordering::Relaxed);
    // Positive, so that scripts see the same number in $T(id_label) and
    // pass it back unchanged through t_continue's s32.
    let label = (LABEL_SALT.hash_one(index) as u32) & 0x7fff_ffff;
    (index & 0x7fff_ffff, label)
}

impl Ctx {
    /// 1 when the message is being routed in a route of type `route`.
    fn runs_in(&self, route: RouteType) -> i32 {
        kemi(self.message.as_ref().is_some_and(|m| m.route == route))
    }
}

impl Host for Ctx {
    async fn t_precheck_trans(&mut self) -> i32 {
        // Retransmissions are absorbed by the transaction layer before any
        // route runs.
        -1
    }
    async fn t_is_branch_route(&mut self) -> i32 {
        self.runs_in(RouteType::Branch)
    }
    async fn t_is_failure_route(&mut self) -> i32 {
        self.runs_in(RouteType::Failure)
    }
    async fn t_is_reply_route(&mut self) -> i32 {
        // tm's reply route (`t_on_reply`), not the core's `ksr_reply_route`.
        self.runs_in(RouteType::OnReply)
    }
    async fn t_suspend(&mut self) -> i32 {
        if self.refuses(ActionKind::Suspend) {
            return REFUSED;
        }
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        if !m.sip.is_request() || m.sip.method_str() == "ACK" || m.tm.suspended.is_some() {
            return -1;
        }
        let (index, label) = suspension_ids();
        m.tm.suspended = Some((index, label));
        self.events.push(Event::Suspend { index, label });
        1
    }
    async fn t_continue(&mut self, tindex: i32, tlabel: i32, cbname: String) -> i32 {
        if self.refuses(ActionKind::Continue) {
            return REFUSED;
        }
        let (Ok(index), Ok(label)) = (u32::try_from(tindex), u32::try_from(tlabel)) else {
            self.script_error(
                "KSR.tmx.t_continue",
                format!("invalid transaction id {tindex}:{tlabel}"),
            );
            return -1;
        };
        if cbname.is_empty() {
            self.script_error("KSR.tmx.t_continue", "empty function name");
            return -1;
        }
        self.events.push(Event::Continue {
            index,
            label,
            route: cbname,
        });
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{INVITE, actions, ctx, invite_with, logs, message, ready};

    /// `t_suspend` gives the transaction ids once, recorded for the proxy
    /// and for `$T(id_index)`/`$T(id_label)`: positive (they go back
    /// through `t_continue`'s s32), and another transaction's differ.
    #[test]
    fn suspend_gives_ids_once() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.t_suspend()), 1);
        let Some((index, label)) = message(&mut c).tm.suspended else {
            panic!("not suspended");
        };
        assert!(i32::try_from(index).is_ok() && i32::try_from(label).is_ok());
        assert_eq!(actions(&c), vec![Event::Suspend { index, label }]);
        assert_eq!(ready(c.t_suspend()), -1);
        assert_eq!(message(&mut c).tm.suspended, Some((index, label)));

        let mut other = ctx(INVITE);
        assert_eq!(ready(other.t_suspend()), 1);
        let (other_index, other_label) = message(&mut other).tm.suspended.unwrap();
        assert_ne!(other_index, index);
        assert_ne!(other_label, label);
    }

    /// Nothing to suspend for an ACK or a reply.
    #[test]
    fn ack_and_replies_cannot_be_suspended() {
        let ack = invite_with(
            &[
                ("INVITE ", "ACK sip:bob@example.com SIP/2.0"),
                ("CSeq:", "CSeq: 1 ACK"),
            ],
            &[],
        );
        let mut c = ctx(&ack);
        assert_eq!(ready(c.t_suspend()), -1);
        let mut reply = ctx(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-2\r\n\
            From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b1\r\n\
            Call-ID: c2\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(ready(reply.t_suspend()), -1);
        assert!(c.events.is_empty() && reply.events.is_empty());
    }

    /// `t_continue` records the resume for the proxy; invalid ids or an
    /// empty route name are the script's mistakes.
    #[test]
    fn continue_records_the_resume() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.t_continue(3, 77, "resume".into())), 1);
        assert_eq!(ready(c.t_continue(-1, 77, "resume".into())), -1);
        assert_eq!(ready(c.t_continue(3, 77, "".into())), -1);
        assert_eq!(
            actions(&c),
            vec![Event::Continue {
                index: 3,
                label: 77,
                route: "resume".into(),
            }]
        );
        assert_eq!(
            logs(&c),
            vec![
                "KSR.tmx.t_continue: invalid transaction id -1:77",
                "KSR.tmx.t_continue: empty function name",
            ]
        );
    }

    /// The route-kind tests read what the proxy says is running.
    #[test]
    fn route_kind_tests() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.t_is_failure_route()), -1);
        assert_eq!(ready(c.t_is_branch_route()), -1);
        assert_eq!(ready(c.t_is_reply_route()), -1);
        message(&mut c).route = RouteType::Failure;
        assert_eq!(ready(c.t_is_failure_route()), 1);
        assert_eq!(ready(c.t_is_branch_route()), -1);
        assert_eq!(ready(c.t_precheck_trans()), -1);
    }
}
