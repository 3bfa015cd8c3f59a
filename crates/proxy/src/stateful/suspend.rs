//! Suspended transactions (`KSR.tmx.t_suspend` / `KSR.tmx.t_continue`):
//! parked under their ids, resumed by a later route, or failed with 408
//! through their failure route when no `t_continue` comes in time.

use kemibox_kemi::Message;
use kemibox_sandbox::Script;
use kemibox_tm::ServerId;

use super::{Callbacks, Due, Stateful};
use crate::route::{self, Ran, RouteType};

/// The ids as one alias of the transaction in the table.
fn alias((index, label): (u32, u32)) -> u64 {
    (u64::from(index) << 32) | u64::from(label)
}

impl Stateful {
    /// Park `server` under `ids` with the request as the route left it.
    /// When no `t_continue` comes within the transaction's final-response
    /// timeout (`t_set_fr`, else Timer B), it fails with 408 through its
    /// failure route.
    pub(super) async fn suspend(
        &self,
        server: ServerId,
        ids: (u32, u32),
        m: &Message,
        callbacks: &Callbacks,
    ) {
        let wait = m
            .fr_timers
            .fr
            .unwrap_or_else(|| self.settings.transactions.timers.b());
        {
            let mut table = self.lock();
            let Some(p) = table.server_data_mut(server) else {
                return;
            };
            p.request = m.clone();
            p.callbacks = callbacks.clone();
            p.suspended = Some(ids);
            if !table.set_alias(server, alias(ids)) {
                tracing::warn!(
                    index = ids.0,
                    label = ids.1,
                    "t_suspend: ids already in use"
                );
                return;
            }
        }
        self.arm(Due::Suspended(server, ids), self.now().after(wait));
    }

    /// The wait of the transaction suspended under `ids` ran out (unless
    /// it was resumed, canceled or suspended again since).
    pub(super) async fn suspension_timeout(&self, server: ServerId, ids: (u32, u32)) {
        let now = self.now();
        let failed = {
            let mut table = self.lock();
            let failed = match table.server_data_mut(server) {
                Some(p) if p.suspended == Some(ids) => {
                    p.suspended = None;
                    let failure = p.callbacks.failure.take();
                    let request = p.request_for_failure(408, true, now);
                    Some((p.script.clone(), failure, request))
                }
                _ => None,
            };
            if failed.is_some() {
                table.clear_alias(server);
            }
            failed
        };
        if let Some((script, failure, request)) = failed {
            tracing::info!(
                index = ids.0,
                label = ids.1,
                "suspended transaction timed out"
            );
            self.all_failed(&script, server, (408, None), failure, request)
                .await;
        }
    }

    /// Resume the transaction suspended under `ids` (`KSR.tmx.t_continue`):
    /// run `route` on its request and act on what it did, like a failure
    /// route; a route that neither relays, replies nor suspends again gets
    /// the error reply. Only the tenant that suspended a transaction
    /// (`script`) can resume it.
    pub(super) async fn resume(&self, script: &Script, ids: (u32, u32), route_name: &str) {
        let found = {
            let mut table = self.lock();
            let own = table.by_alias(alias(ids)).and_then(|server| {
                let p = table.server_data(server)?;
                (p.suspended == Some(ids) && std::sync::Arc::ptr_eq(p.script.pool(), script.pool()))
                    .then(|| (server, p.request.clone(), p.script.clone()))
            });
            if let Some((server, ..)) = &own {
                table.clear_alias(*server);
                if let Some(p) = table.server_data_mut(*server) {
                    p.suspended = None;
                }
            }
            own
        };
        let Some((server, request, script)) = found else {
            tracing::info!(
                index = ids.0,
                label = ids.1,
                "t_continue: no transaction suspended with these ids"
            );
            return;
        };
        // The route runs on the version that suspended the transaction.
        let handled =
            match route::run(&script, RouteType::Continue, route_name, request.clone()).await {
                Ran::Done(routed) => {
                    Box::pin(self.act(
                        &script,
                        RouteType::Continue,
                        routed.message,
                        routed.actions,
                        Some(server),
                    ))
                    .await
                }
                Ran::Failed(_) => false,
            };
        if !handled {
            self.error_reply(server, &request).await;
        }
    }
}
