//! Carrying out what a route asked for: the one interpreter of
//! [`Action`]s, for request, failure, branch-failure and `t_continue`
//! routes (which act on a transaction) and the routes that may only
//! resume another one.

use kemibox_kemi::Message;
use kemibox_sandbox::Script;
use kemibox_tm::ServerId;

use super::{Callbacks, Stateful};
use crate::route::{Action, RouteType};

impl Stateful {
    /// Carry out `actions` of a route of `kind` on `message`, in order.
    /// `server` is the transaction the route runs for (`None` for a
    /// request route until one is needed). True when the transaction got
    /// a new branch, a reply or was suspended again: a failure route that
    /// did none of these leaves the transaction to its best reply.
    pub async fn act(
        &self,
        script: &Script,
        kind: RouteType,
        mut message: Message,
        actions: Vec<Action>,
        mut server: Option<ServerId>,
    ) -> bool {
        if actions.is_empty() {
            return false;
        }
        let is_ack = message.sip.method_str() == "ACK";
        let mut callbacks = server
            .and_then(|s| {
                let table = self.lock();
                table.server_data(s).map(|p| p.callbacks.clone())
            })
            .unwrap_or_default();
        let mut handled = false;
        for action in actions {
            match action {
                Action::Arm(kind, function) => callbacks.arm(kind, function),
                // The ACK of a 2xx has no transaction (RFC 3261 17.2.1).
                Action::NewTransaction if is_ack => {}
                Action::NewTransaction => {
                    self.server_of(script, &mut server, &message, &callbacks)
                        .await;
                }
                Action::Relay if message.drop => {}
                Action::Relay if is_ack => {
                    self.egress.forward_request(script, &mut message).await;
                }
                Action::Relay => {
                    let Some(s) = self
                        .server_of(script, &mut server, &message, &callbacks)
                        .await
                    else {
                        continue;
                    };
                    if Box::pin(self.relay(s, message.clone(), &callbacks)).await {
                        Stateful::dialog_relayed(script, &message);
                        handled = true;
                    } else if kind == RouteType::Request {
                        self.error_reply(s, &message).await;
                        handled = true;
                    }
                }
                Action::Forward { .. } if message.drop => {}
                Action::Forward { destination } => {
                    let mut forwarded = message.clone();
                    if destination.is_some() {
                        forwarded.dst_uri = destination;
                    }
                    self.egress.forward_request(script, &mut forwarded).await;
                }
                Action::Reply {
                    code,
                    reason,
                    headers,
                    stateful,
                } => {
                    if stateful && !is_ack {
                        self.server_of(script, &mut server, &message, &callbacks)
                            .await;
                    }
                    match server {
                        Some(s) => self.reply(s, &message, code, &reason, &headers).await,
                        None => {
                            self.egress
                                .reply(&message, code, &reason, &headers, Some(script.metrics()))
                                .await
                        }
                    }
                    handled = true;
                }
                Action::Suspend { .. } if is_ack => {}
                Action::Suspend { index, label } => {
                    if let Some(s) = self
                        .server_of(script, &mut server, &message, &callbacks)
                        .await
                    {
                        self.suspend(s, (index, label), &message, &callbacks).await;
                        handled = true;
                    }
                }
                Action::Continue {
                    index,
                    label,
                    route,
                } => self.resume(script, (index, label), &route).await,
            }
        }
        handled
    }

    /// The route's server transaction: the one it runs for or already
    /// made, else a new one (`None` when it cannot be created; answered).
    async fn server_of(
        &self,
        script: &Script,
        server: &mut Option<ServerId>,
        message: &Message,
        callbacks: &Callbacks,
    ) -> Option<ServerId> {
        if server.is_none() {
            *server = self.ensure_server(script, message, callbacks).await.ok();
        }
        *server
    }
}
