//! Relaying a request on branches of its server transaction: the branch
//! route, `ksr_onsend_route`, our Via, and one client transaction each.

use kemibox_kemi::{Message, Transport};
use kemibox_sandbox::Script;
use kemibox_sip::SipMessage;
use kemibox_tm::ServerId;

use super::{Branch, Callbacks, Stateful};
use crate::egress::{self, Hop, forward_options};
use crate::route::{self, Ran, RouteType};

/// `m` with a branch's Path (RFC 3327) as Route headers on top, so it
/// reaches a contact registered through other proxies; `None` when a Path
/// entry cannot be a header value.
fn with_path(mut m: Message, path: &[String]) -> Option<Message> {
    if path.is_empty() {
        return Some(m);
    }
    let route = format!("Route: {}", path.join(", "));
    match m.edits.insert_header(&m.sip, &route) {
        Ok(()) => Some(m),
        Err(e) => {
            tracing::warn!(path = ?path, "branch not sent: bad Path: {e}");
            None
        }
    }
}

impl Stateful {
    /// Relay the request in `m` on new branches of `server`: one to $du or
    /// the R-URI, and one per branch the script appended
    /// (`KSR.corex.append_branch*`), all at once (parallel forking). False
    /// when no branch could be started.
    pub(super) async fn relay(
        &self,
        server: ServerId,
        mut m: Message,
        callbacks: &Callbacks,
    ) -> bool {
        let appended = std::mem::take(&mut m.branches);
        let script = {
            let mut table = self.lock();
            let Some(p) = table.server_data_mut(server) else {
                return false;
            };
            if p.canceled {
                // No new branches once the caller canceled (as Kamailio's tm).
                tracing::debug!(server = server.get(), "not relaying: transaction canceled");
                return false;
            }
            p.callbacks = callbacks.clone();
            p.request.edits = m.edits.clone();
            p.request.flags = m.flags;
            p.request.avps = m.avps.clone();
            p.request.acc = m.acc.clone();
            p.request.fr_timers = m.fr_timers;
            p.request.send_socket = m.send_socket;
            p.request.forward_no_connect = m.forward_no_connect;
            p.request.forward_close = m.forward_close;
            p.script.clone()
        };
        let path = std::mem::take(&mut m.path);
        let mut started = false;
        if let Some(main) = with_path(m.clone(), &path) {
            started |= self.branch(&script, server, main, callbacks).await;
        }
        for b in appended {
            let mut bm = m.clone();
            if bm.edits.set_ruri(b.uri).is_err() {
                continue;
            }
            bm.dst_uri = b.dst_uri;
            if let Some(bm) = with_path(bm, &b.path) {
                started |= self.branch(&script, server, bm, callbacks).await;
            }
        }
        started
    }

    /// Start one branch of `server` for the request in `m`: branch route,
    /// `ksr_onsend_route`, then the client transaction.
    async fn branch(
        &self,
        script: &Script,
        server: ServerId,
        m: Message,
        callbacks: &Callbacks,
    ) -> bool {
        let Some((_, hop)) = egress::next_hop(script, &m).await else {
            return false;
        };
        // The branch route may change (or drop) this branch only.
        let mut m = m;
        if let Some(function) = callbacks.branch.clone() {
            match route::run(script, RouteType::Branch, &function, m).await {
                Ran::Done(routed) => {
                    if !routed.actions.is_empty() {
                        let message = routed.message.clone();
                        self.act(
                            script,
                            RouteType::Branch,
                            message,
                            routed.actions,
                            Some(server),
                        )
                        .await;
                    }
                    if routed.message.drop {
                        return true;
                    }
                    m = routed.message;
                }
                Ran::Failed(_) => return false,
            }
        }
        if !egress::onsend_allows(script, &m, (hop.transport, hop.addr)).await {
            return false;
        }
        let Some(from) = self.egress.sending_socket(&m, hop) else {
            return false;
        };
        self.start_branch(server, m, hop, from).await
    }

    /// Record the branch on `server`, render its request and start its
    /// client transaction.
    async fn start_branch(
        &self,
        server: ServerId,
        mut m: Message,
        hop: Hop,
        from: std::net::SocketAddr,
    ) -> bool {
        let index = {
            let mut table = self.lock();
            let Some(p) = table.server_data_mut(server) else {
                return false;
            };
            p.branches.push(Branch {
                hop,
                from,
                client: None,
                status: None,
                response: None,
                cancel_pending: false,
            });
            p.branches.len() - 1
        };
        let Some(bytes) =
            self.egress
                .branch_bytes(&mut m, hop, from, &format!("{}.{index}", server.get()))
        else {
            return false;
        };
        let Ok(request) = SipMessage::parse(bytes) else {
            return false;
        };
        let now = self.now();
        let mut timers = self.settings.transactions.timers;
        if let Some(fr) = m.fr_timers.fr {
            timers.fr = Some(fr);
        }
        if let Some(fr_inv) = m.fr_timers.fr_inv {
            timers.c = Some(fr_inv);
        }
        let reliable = hop.transport == Transport::Tcp;
        let index32 = u32::try_from(index).unwrap_or(u32::MAX);
        let sent = {
            let mut table = self.lock();
            match table.send_branch(
                (server, index32),
                request,
                (from, hop.addr, reliable),
                timers,
                now,
            ) {
                Ok((client, effects)) => {
                    if let Some(b) = table
                        .server_data_mut(server)
                        .and_then(|p| p.branches.get_mut(index))
                    {
                        b.client = Some(client);
                    }
                    Some((client, effects))
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "cannot create the branch transaction");
                    None
                }
            }
        };
        let Some((client, effects)) = sent else {
            return false;
        };
        if !self.run_with(effects, forward_options(&m)).await {
            // The request could not be sent (no connection, and the script
            // asked not to open one): the branch fails at once.
            let effects = self.lock().on_transport_error(client.into());
            self.run(effects).await;
        }
        true
    }
}
