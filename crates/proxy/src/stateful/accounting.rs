//! Transaction accounting: the proxy tells its tenant's acc module
//! ([`kemibox_kemi::Acc`], in the tenant's state) when every branch of a
//! transaction failed and when its final reply goes upstream, with the
//! request as routed (its flags and captured extra values), the status,
//! reason and To tag. What is recorded, where, and which flags it resets
//! is the acc module's business; no storage is touched here (records go
//! to a queue).

use kemibox_kemi::{AccCompletion, Message};
use kemibox_sandbox::Script;
use kemibox_sip::SipMessage;
use kemibox_tm::ServerId;

use super::{Stateful, reason_phrase};

/// The reason phrase and To tag of `reply` (`None`: a reply the proxy makes
/// up later, whose reason is the usual one for `status`).
fn reply_facts(status: u16, reply: Option<&[u8]>) -> (String, Option<String>) {
    let parsed = reply.and_then(|b| SipMessage::parse_slice(b).ok());
    let reason = (parsed.as_ref())
        .and_then(|r| r.reason().map(str::to_string))
        .unwrap_or_else(|| reason_phrase(status).to_string());
    let to_tag = (parsed.as_ref()).and_then(|r| r.to().and_then(|t| t.tag().map(str::to_string)));
    (reason, to_tag)
}

impl Stateful {
    /// The final reply `bytes` with `status` is about to go upstream for
    /// `server`: account the transaction (once, at its first final reply).
    pub(super) fn account_reply(&self, server: ServerId, status: u16, bytes: &[u8]) {
        if status < 200 {
            return;
        }
        let job = {
            let mut table = self.lock();
            let Some(p) = table.server_data_mut(server) else {
                return;
            };
            if std::mem::replace(&mut p.accounted, true) {
                return;
            }
            let tenant = p.script.tenant();
            if !tenant.spec.state.acc.interested(p.request.flags) {
                return;
            }
            (tenant.clone(), p.request.clone())
        };
        let (tenant, request) = job;
        let (reason, to_tag) = reply_facts(status, Some(bytes));
        tenant.spec.state.acc.reply_out(
            &tenant.spec.id,
            AccCompletion {
                request: &request,
                code: status,
                reason: &reason,
                to_tag: to_tag.as_deref(),
            },
        );
    }

    /// Every branch of `server` failed with best `status` (`reply`: that
    /// response, if one came): missed calls, before the failure route.
    /// The missed flags the acc module resets are cleared on the
    /// transaction and on `request`, the failure route's message.
    pub(super) fn account_failure(
        &self,
        script: &Script,
        server: ServerId,
        request: &mut Message,
        status: u16,
        reply: Option<&[u8]>,
    ) {
        let tenant = script.tenant();
        if !tenant.spec.state.acc.interested(request.flags) {
            return;
        }
        let (reason, to_tag) = reply_facts(status, reply);
        let reset = tenant.spec.state.acc.branches_failed(
            &tenant.spec.id,
            AccCompletion {
                request,
                code: status,
                reason: &reason,
                to_tag: to_tag.as_deref(),
            },
        );
        if reset != 0 {
            request.flags &= !reset;
            if let Some(p) = self.lock().server_data_mut(server) {
                p.request.flags &= !reset;
            }
        }
    }

    /// A failure route ended on the transaction's request: its flags and
    /// captured values are the transaction's from now on (what the final
    /// reply is accounted by).
    pub(super) fn keep_flags(&self, server: ServerId, routed: &Message) {
        if let Some(p) = self.lock().server_data_mut(server) {
            p.request.flags = routed.flags;
            p.request.acc = routed.acc.clone();
        }
    }
}
