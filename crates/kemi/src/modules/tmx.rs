//! `KSR.tmx`: which kind of transaction route is running, the
//! retransmission pre-check, and suspending/resuming a transaction
//! (`t_suspend`/`t_continue`, carried out by the proxy when the route ends).

use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};

use super::kemi;
use crate::bindings::kemibox::ksr::tmx::Host;
use crate::{Ctx, Event};

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

impl Host for Ctx {
    async fn t_precheck_trans(&mut self) -> i32 {
        // Retransmissions are absorbed by the transaction layer before any
        // route runs.
        -1
    }
    async fn t_is_branch_route(&mut self) -> i32 {
        kemi(self.message.as_ref().is_some_and(|m| m.tm.in_branch_route))
    }
    async fn t_is_failure_route(&mut self) -> i32 {
        kemi(self.message.as_ref().is_some_and(|m| m.tm.in_failure_route))
    }
    async fn t_is_reply_route(&mut self) -> i32 {
        kemi(self.message.as_ref().is_some_and(|m| m.tm.in_reply_route))
    }
    async fn t_suspend(&mut self) -> i32 {
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
