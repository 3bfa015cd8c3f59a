//! Dialog tracking: the proxy tells its tenant's dialog module
//! ([`kemibox_kemi::dialog::DialogState`], in the tenant's state) about
//! each event of a call, one call per event: an initial INVITE arriving
//! (refused over the tenant's `max_calls`, before its request route), its
//! route ending, its relaying, its replies going upstream, and in-dialog
//! requests arriving. What a dialog is and when it ends is the module's
//! business; nothing is decided here.

use kemibox_kemi::Message;
use kemibox_sandbox::Script;
use kemibox_sip::SipMessage;
use kemibox_tm::ServerId;

use super::Stateful;

/// Whether `sip` is an initial INVITE (no To tag): what starts a call.
pub(crate) fn initial_invite(sip: &SipMessage) -> bool {
    sip.method_str() == "INVITE" && sip.to().is_some_and(|t| t.tag().is_none())
}

/// An initial INVITE arrives for `script`'s tenant: `Some((code, reason))`
/// to answer it with when the tenant is at its `max_calls` (counted and
/// logged), `None` when it may run its request route.
pub(crate) async fn admit_call(script: &Script, m: &Message) -> Option<(u16, String)> {
    let tenant = script.tenant();
    let state = &tenant.spec.state;
    let (code, reason, why) = state.dialog.admit(&state.profiles, &m.sip).await.err()?;
    let refused = state.dialog.table.metrics().refused.get();
    tracing::info!(
        tenant = %tenant.spec.id,
        peer = %m.source,
        call_id = m.sip.call_id().unwrap_or(""),
        refused,
        "initial INVITE refused: {why:?}"
    );
    Some((code, reason))
}

/// The request route of an initial INVITE ended (the INVITE as received).
pub(crate) async fn routed(script: &Script, sip: &SipMessage) {
    let state = &script.tenant().spec.state;
    state.dialog.routed(&state.profiles, sip).await;
}

/// An in-dialog request (To tag) arrives, before its request route.
pub(crate) async fn in_dialog(script: &Script, sip: &SipMessage) {
    let state = &script.tenant().spec.state;
    state.dialog.in_dialog(&state.profiles, sip).await;
}

impl Stateful {
    /// `routed`, an initial INVITE as its route left it, was relayed.
    pub(super) fn dialog_relayed(script: &Script, routed: &Message) {
        if initial_invite(&routed.sip) {
            script.tenant().spec.state.dialog.relayed(routed);
        }
    }

    /// A reply (`bytes`, as sent) goes upstream for `server`: the
    /// tenant's dialogs follow the replies of initial INVITEs.
    pub(super) async fn dialog_reply(&self, server: ServerId, bytes: &[u8]) {
        let script = {
            let table = self.lock();
            match table.server_data(server) {
                Some(p) if initial_invite(&p.request.sip) => p.script.clone(),
                _ => return,
            }
        };
        let state = &script.tenant().spec.state;
        state.dialog.reply_out(&state.profiles, bytes).await;
    }
}
