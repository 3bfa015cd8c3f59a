//! Responses of our branches (RFC 3261 16.7): reply routes, forwarding
//! upstream, a branch's end (its branch-failure route), and the failure
//! route once every branch failed.

use kemibox_kemi::Message;
use kemibox_sandbox::Script;
use kemibox_sip::render;
use kemibox_tm::{ClientId, ClientState, ServerId};

use super::{Branch, Stateful, reason_phrase};
use crate::egress::build_reply;
use crate::route::{self, Ran, RouteType};

/// What to do once a branch ended.
enum Decision {
    /// Other branches are still pending, or a final response went up.
    Wait,
    /// A 2xx: forward it and cancel the other pending branches.
    Success {
        server: ServerId,
        others: Vec<ClientId>,
    },
    /// Every branch failed: the failure route, else the best response.
    AllFailed {
        server: ServerId,
        script: Script,
        best: (u16, Option<Vec<u8>>),
        failure: Option<String>,
        request: Box<Message>,
    },
}

/// RFC 3261 16.7 step 6: a 6xx wins, else the lowest class; 503 goes
/// upstream as 500.
fn best_branch(branches: &[Branch]) -> (u16, Option<Vec<u8>>) {
    let finals = branches
        .iter()
        .filter_map(|b| Some((b.status?, b.response.clone())));
    let best = finals.min_by_key(|(status, _)| {
        if *status >= 600 {
            0
        } else {
            *status / 100 * 1000 + status % 100
        }
    });
    match best {
        Some((503, _)) => (500, None),
        Some(best) => best,
        None => (500, None),
    }
}

impl Stateful {
    /// A response for one of our branches: `ksr_reply_route`, the
    /// transaction's reply route, then upstream (provisional ones but 100
    /// at once) or the branch's end.
    pub(super) async fn branch_response(&self, client: ClientId, m: Message) {
        let Some(status) = m.sip.status() else { return };
        let Some((server, index)) = client.branch_of() else {
            // Responses to our own CANCELs end here.
            return;
        };
        let found = {
            let table = self.lock();
            let now = self.now();
            table.server_data(server).map(|p| {
                (
                    p.script.clone(),
                    p.callbacks.clone(),
                    p.canceled,
                    p.expired(now),
                )
            })
        };
        let Some((script, callbacks, canceled, expired)) = found else {
            return;
        };

        let mut m = m;
        m.tm.status = Some(status);
        m.tm.canceled = canceled;
        m.tm.expired = expired;
        m.tm.armed = callbacks.armed();
        let routes = std::iter::once(route::REPLY_ROUTE.to_string())
            .filter(|f| script.tenant().defines(f))
            .map(|f| (RouteType::Reply, f))
            .chain(callbacks.reply.clone().map(|f| (RouteType::OnReply, f)));
        for (kind, function) in routes {
            match route::run(&script, kind, &function, m.clone()).await {
                Ran::Done(routed) => {
                    if !routed.actions.is_empty() {
                        self.act(
                            &script,
                            kind,
                            routed.message.clone(),
                            routed.actions,
                            Some(server),
                        )
                        .await;
                    }
                    // A script drops provisional replies only (as Kamailio).
                    if routed.message.drop && status < 200 {
                        return;
                    }
                    m = routed.message;
                }
                // The reply goes on as received: never lost to a script.
                Ran::Failed(_) => {}
            }
        }

        m.edits.remove_top_via(&m.sip);
        let bytes = render(&m.sip, &m.edits);
        if status < 200 {
            let owed_cancel = {
                let mut table = self.lock();
                let pending = table
                    .server_data_mut(server)
                    .and_then(|p| p.branches.get_mut(index as usize))
                    .is_some_and(|b| std::mem::take(&mut b.cancel_pending));
                if pending {
                    table.build_cancel(client)
                } else {
                    None
                }
            };
            if let Some(cancel) = owed_cancel {
                self.send_cancel(client, cancel).await;
            }
            if status > 100 {
                self.send_upstream(server, status, bytes).await;
            }
            return;
        }
        self.branch_final(client, status, Some(bytes)).await;
    }

    /// A branch ended with `status` (`bytes`: the response, our Via
    /// removed; `None` when we made it up, e.g. 408 on timeout). A
    /// negative one runs the transaction's branch-failure route first,
    /// which may start new branches.
    pub(super) async fn branch_final(&self, client: ClientId, status: u16, bytes: Option<Vec<u8>>) {
        let Some((server, index)) = client.branch_of() else {
            return;
        };
        let index = index as usize;
        let branch_failure = {
            let mut table = self.lock();
            let now = self.now();
            let Some(p) = table.server_data_mut(server) else {
                return;
            };
            match p.branches.get_mut(index) {
                Some(b) if b.status.is_none() => {
                    b.status = Some(status);
                    b.response = bytes.clone();
                }
                _ => return,
            }
            match &p.callbacks.branch_failure {
                Some(function) if status >= 300 && !p.final_sent => {
                    let timeout = status == 408 && bytes.is_none();
                    Some((
                        p.script.clone(),
                        function.clone(),
                        p.request_for_failure(status, timeout, now),
                    ))
                }
                _ => None,
            }
        };
        if let Some((script, function, request)) = branch_failure
            && let Ran::Done(routed) =
                route::run(&script, RouteType::BranchFailure, &function, request).await
        {
            self.act(
                &script,
                RouteType::BranchFailure,
                routed.message,
                routed.actions,
                Some(server),
            )
            .await;
        }
        match self.decide(server, status) {
            Decision::Wait => {}
            Decision::Success { server, others } => {
                // Cancel the other branches first: a 2xx ends the server
                // transaction, and with it what the branches are known by.
                for other in others {
                    let cancel = {
                        let table = self.lock();
                        if table.client_state(other) == Some(ClientState::Proceeding) {
                            table.build_cancel(other)
                        } else {
                            None
                        }
                    };
                    if let Some(cancel) = cancel {
                        self.send_cancel(other, cancel).await;
                    }
                }
                if let Some(bytes) = bytes {
                    self.send_upstream(server, status, bytes).await;
                }
            }
            Decision::AllFailed {
                server,
                script,
                best,
                failure,
                request,
            } => {
                self.all_failed(&script, server, best, failure, *request)
                    .await
            }
        }
    }

    /// What the transaction does now that one of its branches ended with
    /// `status`.
    fn decide(&self, server: ServerId, status: u16) -> Decision {
        let mut table = self.lock();
        let now = self.now();
        let Some(p) = table.server_data_mut(server) else {
            return Decision::Wait;
        };
        if (200..300).contains(&status) {
            // Forward every 2xx; cancel the other pending branches (16.7 step 10).
            let others = p
                .branches
                .iter()
                .filter(|b| b.status.is_none())
                .filter_map(|b| b.client)
                .collect();
            p.final_sent = true;
            return Decision::Success { server, others };
        }
        if p.final_sent || p.branches.iter().any(|b| b.status.is_none()) {
            return Decision::Wait;
        }
        let best = best_branch(&p.branches);
        let timeout = best.0 == 408 && best.1.is_none();
        // The failure route runs once.
        let failure = p.callbacks.failure.take();
        let request = p.request_for_failure(best.0, timeout, now);
        Decision::AllFailed {
            server,
            script: p.script.clone(),
            best,
            failure,
            request: Box::new(request),
        }
    }

    /// Every branch failed (or a suspended transaction timed out): run the
    /// failure route, which may relay again (serial forking), answer or
    /// suspend; otherwise send the best response up.
    pub(super) async fn all_failed(
        &self,
        script: &Script,
        server: ServerId,
        best: (u16, Option<Vec<u8>>),
        failure: Option<String>,
        request: Message,
    ) {
        let (status, bytes) = best;
        let mut request = request;
        self.account_failure(script, server, &mut request, status, bytes.as_deref());
        if let Some(function) = failure
            && let Ran::Done(routed) =
                route::run(script, RouteType::Failure, &function, request.clone()).await
        {
            self.keep_flags(server, &routed.message);
            if self
                .act(
                    script,
                    RouteType::Failure,
                    routed.message,
                    routed.actions,
                    Some(server),
                )
                .await
            {
                return;
            }
        }
        let bytes = match bytes {
            Some(b) => b,
            None => match build_reply(&request, status, reason_phrase(status), &[]) {
                Some(b) => b,
                None => return,
            },
        };
        self.send_upstream(server, status, bytes).await;
    }
}
