//! `KSR.tmx`: which kind of transaction route is running, and the
//! retransmission pre-check.

use super::kemi;
use crate::Ctx;
use crate::bindings::kemibox::ksr::tmx::Host;

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
}
