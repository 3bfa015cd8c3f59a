//! `ksr_onsend_route`: the script's last look at a request before it goes
//! out (Kamailio's `onsend_route`), with `$snd(ip)`, `$snd(port)` and
//! `$snd(proto)` naming the destination. `KSR.x.drop()` there keeps the
//! request from being sent; other changes are not applied, as in Kamailio.

use std::net::SocketAddr;

use kemibox_kemi::{Message, Transport};
use kemibox_sandbox::Script;

use crate::handler;

/// The route's name, run only when the script defines it.
pub const ROUTE: &str = "ksr_onsend_route";

/// Whether `message` may be sent to `to`: true unless the script's
/// `ksr_onsend_route` dropped it. A failing route is logged and does not
/// stop the request.
pub async fn allows(script: &Script, message: &Message, to: (Transport, SocketAddr)) -> bool {
    if !script.tenant().defines(ROUTE) {
        return true;
    }
    let mut m = message.clone();
    m.sending_to = Some(to);
    match script.invoke(ROUTE, Some(m)).await {
        Ok(inv) if inv.outcome.is_ok() => {
            // `KSR.x.drop()` and `KSR.set_drop()` both mark the message.
            let dropped = inv.message.is_some_and(|m| m.drop);
            if dropped {
                tracing::debug!(peer = %to.1, "request dropped by {ROUTE}");
            }
            !dropped
        }
        Ok(inv) => {
            handler::log_failure(script, &inv, Some(to.1));
            true
        }
        Err(failure) => {
            tracing::error!(tenant = %failure.tenant, error = %failure, "cannot run {ROUTE}");
            true
        }
    }
}
