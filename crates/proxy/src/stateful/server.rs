//! Server transactions: creating them, and sending responses upstream.

use kemibox_kemi::{Message, Transport};
use kemibox_sandbox::Script;
use kemibox_tm::{Peer, ServerId, TxError, TxId};

use super::{Callbacks, Proxied, Stateful};
use crate::egress::{build_reply, reply_options};

impl Stateful {
    /// The server transaction for the request in `m`, created when needed
    /// for `script`'s tenant. `Err` after answering 503 when the table is
    /// full.
    pub async fn ensure_server(
        &self,
        script: &Script,
        m: &Message,
        callbacks: &Callbacks,
    ) -> Result<ServerId, ()> {
        let now = self.now();
        let reliable = m.transport == Transport::Tcp;
        let mut peer = Peer::for_request(&m.sip, m.source, m.local, reliable);
        if m.force_rport {
            peer.reply_to = m.source;
        }
        let proxied = Box::new(Proxied {
            script: script.clone(),
            request: m.clone(),
            callbacks: callbacks.clone(),
            branches: Vec::new(),
            canceled: false,
            final_sent: false,
            accounted: false,
            created: now,
            suspended: None,
        });
        let created = self.lock().new_server_with(&m.sip, peer, now, proxied);
        match created {
            Ok((server, effects)) => {
                script.metrics().transactions.inc();
                self.run(effects).await;
                Ok(server)
            }
            Err(TxError::Exists(TxId::Server(server))) => Ok(server),
            Err(TxError::Full) => {
                tracing::warn!("transaction table full: answering 503");
                self.egress
                    .reply(m, 503, "Service Unavailable", &[], Some(script.metrics()))
                    .await;
                Err(())
            }
            Err(e) => {
                tracing::info!(peer = %m.source, error = ?e, "cannot create a transaction");
                Err(())
            }
        }
    }

    /// Answer the request of `server` with `code`, through its transaction.
    pub async fn reply(
        &self,
        server: ServerId,
        m: &Message,
        code: u16,
        reason: &str,
        headers: &[String],
    ) {
        let Some(bytes) = build_reply(m, code, reason, headers) else {
            return;
        };
        self.send_upstream(server, code, bytes).await;
    }

    /// Answer the request of `server` with the configured error reply.
    pub async fn error_reply(&self, server: ServerId, m: &Message) {
        let (code, reason) = self.settings.error_reply.clone();
        self.reply(server, m, code, &reason, &[]).await;
    }

    /// Send a response for `server` upstream through its transaction (a
    /// late one, e.g. a 2xx retransmission, is not sent: the transaction
    /// is gone, and the caller forwards it statelessly). Over TCP, as the
    /// request route asked (`KSR.set_reply_no_connect`,
    /// `KSR.set_reply_close`).
    pub(super) async fn send_upstream(&self, server: ServerId, status: u16, bytes: Vec<u8>) {
        self.account_reply(server, status, &bytes);
        self.dialog_reply(server, &bytes).await;
        let now = self.now();
        let (result, tenant, options) = {
            let mut table = self.lock();
            let (tenant, options) = match table.server_data_mut(server) {
                Some(p) => {
                    if status >= 200 {
                        p.final_sent = true;
                    }
                    (Some(p.script.metrics().clone()), reply_options(&p.request))
                }
                None => (None, Default::default()),
            };
            (
                table.send_response(server, status, bytes, now),
                tenant,
                options,
            )
        };
        match result {
            Ok(effects) => {
                if let Some(tenant) = tenant {
                    tenant.reply(status);
                }
                self.run_with(effects, options).await;
            }
            Err(e) => {
                tracing::debug!(error = ?e, status, "response not sent through the transaction")
            }
        }
    }
}
