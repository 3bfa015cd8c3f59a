//! Which route type a script runs in, and what it may ask for there.
//!
//! Kamailio allows each function in some route types only (`t_relay` not
//! in an onreply route, a stateless `forward` not in a failure route, ...)
//! and a function called elsewhere fails. kemibox does the same: the proxy
//! names the route type in [`crate::Message::route`] before the route runs,
//! and a KSR function that asks the proxy for something the route type does
//! not allow returns [`REFUSED`] without asking. The guest turns that into
//! `-1` for the script and logs `script:line: KSR.x.y is not allowed in this
//! route type`.

/// What a refused KSR function returns across the WIT boundary; the guest
/// gives the script -1 instead and logs where the call was.
pub const REFUSED: i32 = i32::MIN;

/// The route types, as Kamailio names its route blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RouteType {
    /// `ksr_request_route`, for every new request (and offline runs).
    #[default]
    Request,
    /// `ksr_reply_route`, for every reply (Kamailio's core `reply_route`).
    Reply,
    /// The transaction's `t_on_reply` route.
    OnReply,
    /// The transaction's `t_on_branch` route, per branch before it is sent.
    Branch,
    /// The transaction's `t_on_failure` route, once every branch failed (or
    /// a suspended transaction timed out).
    Failure,
    /// The transaction's `t_on_branch_failure` route, per branch ending
    /// with a negative reply.
    BranchFailure,
    /// `ksr_onsend_route`, before a request is sent.
    OnSend,
    /// The route named by `KSR.tmx.t_continue`, on a suspended transaction.
    Continue,
}

/// What a KSR function may ask the proxy for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// Arm a transaction route (`t_on_*`).
    Arm,
    /// Create the server transaction (`t_newtran`).
    NewTransaction,
    /// Relay statefully (`t_relay`).
    Relay,
    /// Forward statelessly (`forward`, `forward_uri`).
    Forward,
    /// Answer the request (`sl_*`, `t_reply`, and modules that answer).
    Reply,
    /// Suspend the transaction (`t_suspend`).
    Suspend,
    /// Resume a suspended transaction (`t_continue`).
    Continue,
}

impl RouteType {
    /// Kamailio's name of the route type, for log lines.
    pub fn name(self) -> &'static str {
        match self {
            RouteType::Request => "request_route",
            RouteType::Reply => "reply_route",
            RouteType::OnReply => "onreply_route",
            RouteType::Branch => "branch_route",
            RouteType::Failure => "failure_route",
            RouteType::BranchFailure => "branch_failure_route",
            RouteType::OnSend => "onsend_route",
            RouteType::Continue => "t_continue route",
        }
    }

    /// Whether a route of this type may ask for `action`. Request routes
    /// may ask for anything; failure and `t_continue` routes act on the
    /// transaction they run for (relay again, reply, arm routes, suspend
    /// again) but not statelessly; branch-failure routes may start new
    /// branches (as Kamailio's); reply and branch routes change or drop
    /// their own message and may resume another suspended transaction;
    /// onsend routes may only drop the request.
    pub fn allows(self, action: ActionKind) -> bool {
        match self {
            RouteType::Request => true,
            RouteType::Failure | RouteType::Continue => action != ActionKind::Forward,
            RouteType::BranchFailure => matches!(
                action,
                ActionKind::Arm
                    | ActionKind::NewTransaction
                    | ActionKind::Relay
                    | ActionKind::Continue
            ),
            RouteType::Reply | RouteType::OnReply | RouteType::Branch => {
                action == ActionKind::Continue
            }
            RouteType::OnSend => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ActionKind, RouteType};

    #[test]
    fn route_types_allow_what_kamailios_do() {
        use ActionKind::*;
        let all = [
            Arm,
            NewTransaction,
            Relay,
            Forward,
            Reply,
            Suspend,
            Continue,
        ];
        assert!(all.iter().all(|a| RouteType::Request.allows(*a)));
        assert!(!RouteType::Failure.allows(Forward));
        assert!(RouteType::Failure.allows(Relay) && RouteType::Failure.allows(Suspend));
        assert!(RouteType::BranchFailure.allows(Relay));
        assert!(!RouteType::BranchFailure.allows(Reply));
        assert!(!RouteType::OnReply.allows(Relay) && RouteType::OnReply.allows(Continue));
        assert!(all.iter().all(|a| !RouteType::OnSend.allows(*a)));
    }
}
