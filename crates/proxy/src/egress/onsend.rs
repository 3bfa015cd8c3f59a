//! `ksr_onsend_route`: the script's last look at a request before it goes
//! out (Kamailio's `onsend_route`), with `$snd(ip)`, `$snd(port)` and
//! `$snd(proto)` naming the destination. `KSR.x.drop()` there keeps the
//! request from being sent; other changes are not applied, as in Kamailio.

use std::net::SocketAddr;

use kemibox_kemi::{Message, Transport};
use kemibox_sandbox::Script;

use crate::route::{self, Fallback, Ran, RouteType};

/// The route's name, run only when the script defines it.
pub const ROUTE: &str = "ksr_onsend_route";

/// Whether `message` may be sent to `to`: true unless the script's
/// `ksr_onsend_route` dropped it. A failing route does not stop the
/// request (the route runner's policy for onsend routes).
pub async fn allows(script: &Script, message: &Message, to: (Transport, SocketAddr)) -> bool {
    if !script.tenant().defines(ROUTE) {
        return true;
    }
    let mut m = message.clone();
    m.sending_to = Some(to);
    match route::run(script, RouteType::OnSend, ROUTE, m).await {
        // `KSR.x.drop()` and `KSR.set_drop()` both mark the message.
        Ran::Done(routed) if routed.message.drop => {
            tracing::debug!(peer = %to.1, "request dropped by {ROUTE}");
            false
        }
        Ran::Done(_) | Ran::Failed(Fallback::Proceed) => true,
        Ran::Failed(Fallback::ErrorReply | Fallback::DropBranch) => false,
    }
}
