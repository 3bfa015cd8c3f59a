//! CANCEL: answering it and canceling the branches of the INVITE it names
//! (RFC 3261 9.2, 16.10).

use kemibox_kemi::Message;
use kemibox_sandbox::Script;
use kemibox_sip::SipMessage;
use kemibox_tm::{ClientId, ClientState, ServerId};

use super::{Callbacks, Stateful};

impl Stateful {
    /// Answer a CANCEL and cancel the branches of `invite`. `script` is
    /// the handler's choice of tenant for the CANCEL when the INVITE's
    /// transaction is gone.
    pub async fn cancel(&self, m: &Message, invite: Option<ServerId>, script: Option<&Script>) {
        let Some(invite) = invite else {
            let metrics = script.map(|s| s.metrics().as_ref());
            self.egress
                .reply(m, 481, "Call/Transaction Does Not Exist", &[], metrics)
                .await;
            return;
        };
        // The CANCEL's transaction belongs to the INVITE's tenant.
        let script = self
            .lock()
            .server_data(invite)
            .map(|p| p.script.clone())
            .or_else(|| script.cloned());
        match script {
            Some(script) => {
                if let Ok(server) = self.ensure_server(&script, m, &Callbacks::default()).await {
                    self.reply(server, m, 200, "OK", &[]).await;
                }
            }
            None => self.egress.reply(m, 200, "OK", &[], None).await,
        }
        let (cancels, waiting): (Vec<(ClientId, Option<SipMessage>)>, Option<Message>) = {
            let mut table = self.lock();
            let table = &mut *table;
            let Some(p) = table.server_data_mut(invite) else {
                return;
            };
            p.canceled = true;
            // A transaction without a pending branch (suspended by
            // `t_suspend`, or created by `t_newtran` only) ends here.
            let suspended = p.suspended.take().is_some();
            let waiting =
                ((suspended || p.branches.is_empty()) && !p.final_sent).then(|| p.request.clone());
            let mut owed = Vec::new();
            let mut proceeding = Vec::new();
            for (i, b) in p.branches.iter().enumerate() {
                if b.status.is_none()
                    && let Some(client) = b.client
                {
                    proceeding.push((i, client));
                }
            }
            let mut out = Vec::new();
            for (i, client) in proceeding {
                if table.client_state(client) == Some(ClientState::Proceeding) {
                    out.push((client, table.build_cancel(client)));
                } else {
                    owed.push(i);
                }
            }
            if let Some(p) = table.server_data_mut(invite) {
                for i in owed {
                    if let Some(b) = p.branches.get_mut(i) {
                        b.cancel_pending = true;
                    }
                }
            }
            if waiting.is_some() {
                table.clear_alias(invite);
            }
            (out, waiting)
        };
        for (client, cancel) in cancels {
            if let Some(cancel) = cancel {
                self.send_cancel(client, cancel).await;
            }
        }
        if let Some(request) = waiting {
            self.reply(invite, &request, 487, "Request Terminated", &[])
                .await;
        }
    }

    /// Send `cancel` for branch `branch`, from and to where its request went.
    pub(super) async fn send_cancel(&self, branch: ClientId, cancel: SipMessage) {
        let now = self.now();
        let sent = {
            let mut table = self.lock();
            let hop = branch.branch_of().and_then(|(s, i)| {
                let b = table.server_data(s)?.branches.get(i as usize)?;
                Some((b.hop, b.from))
            });
            let Some((hop, from)) = hop else { return };
            table.send_request(
                cancel,
                from,
                hop.addr,
                hop.transport == kemibox_kemi::Transport::Tcp,
                now,
            )
        };
        match sent {
            Ok((_, effects)) => self.run(effects).await,
            Err(e) => tracing::info!(error = ?e, "cannot send CANCEL"),
        }
    }
}
