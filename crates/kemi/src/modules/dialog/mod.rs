//! `KSR.dialog`: Kamailio's dialog functions over the tenant's dialogs
//! ([`table`]) and their profiles (the tenant's
//! [`crate::dialog_profiles::Profiles`], shared with the other nodes when
//! configured), `$dlg(...)`, `$dlg_var(...)` and `$dlg_ctx(...)` ([`pvs`],
//! called from pv.rs), and the proxy's side: [`DialogState`]'s hooks,
//! called once at each event of a call, its timer ([`upkeep`]) and the
//! saved copy of its dialogs ([`backup`]).
//!
//! Return codes are Kamailio's: 1 for success or a match, -1 otherwise;
//! misuse (an unknown side, property or profile, a bad flag) is logged
//! with the function's name.

pub mod backup;
mod pvs;
pub mod table;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use kemibox_sip::SipMessage;

use self::backup::Backup;
use self::table::{Change, DialogId, Dialogs, Purpose, Refusal, Side};
use crate::bindings::kemibox::ksr::dialog::Host;
use crate::bindings::kemibox::ksr::types::Xval;
use crate::dialog_profiles::{ProfileError, Profiles};
use crate::uac::{LocalRequest, UacHandle};
use crate::{Ctx, Message, PvValue, TenantState};

use super::kemi;

/// How often [`upkeep`] looks for ended lifetimes and due keep-alives.
const TICK: Duration = Duration::from_secs(1);

/// A tenant's dialog module state: its dialogs and, with a shared store,
/// their saved copy. Their profiles and the call count are the tenant's
/// [`Profiles`] (`TenantState::profiles`), which the hooks are given.
#[derive(Debug, Default)]
pub struct DialogState {
    pub table: Dialogs,
    backup: Option<Backup>,
}

impl DialogState {
    /// A tenant's dialogs, saved in `backup` when given.
    pub fn new(settings: table::DialogSettings, backup: Option<Backup>) -> DialogState {
        DialogState {
            table: Dialogs::new(settings),
            backup,
        }
    }

    /// Where its dialogs are saved, if anywhere.
    pub fn backup(&self) -> Option<&Backup> {
        self.backup.as_ref()
    }

    /// Dialog `id` changed (or ended): its saved record follows.
    pub fn touch(&self, id: DialogId) {
        if let Some(b) = &self.backup {
            b.touch(id);
        }
    }

    /// At start: this node's saved dialogs back into the table (see
    /// [`Backup::restore`]); how many.
    pub async fn restore(&self, tenant: &str, profiles: &Profiles) -> usize {
        match &self.backup {
            Some(b) => b.restore(tenant, &self.table, profiles).await,
            None => 0,
        }
    }

    /// Dialog `id` ended: it leaves its profiles and the call count, and
    /// its record goes.
    async fn ended(&self, profiles: &Profiles, id: DialogId) {
        profiles.forget(&id.to_string()).await;
        self.touch(id);
    }

    async fn follow(&self, profiles: &Profiles, change: Option<Change>) {
        match change {
            Some(Change::Confirmed(id)) => self.touch(id),
            Some(Change::Ended(id)) => self.ended(profiles, id).await,
            None => {}
        }
    }

    /// An initial INVITE arrives (before its request route): `Err` with
    /// the reply to send when the tenant is at `max_calls` (its calls in
    /// `profiles`, on every node when shared) or its table is full.
    /// Counted here, at admission, so a burst cannot slip past the quota.
    pub async fn admit(
        &self,
        profiles: &Profiles,
        sip: &SipMessage,
    ) -> Result<(), (u16, String, Refusal)> {
        let refuse = |why: Refusal| {
            self.table.metrics().refused.inc();
            let (code, reason) = self.table.settings().max_calls_reply.clone();
            Err((code, reason, why))
        };
        let id = match self.table.admit(sip, Instant::now()) {
            Ok(Some(id)) => id,
            Ok(None) => return Ok(()),
            Err(why) => return refuse(why),
        };
        let max = self.table.settings().max_calls.map(u64::from);
        match profiles.call_admitted(&id.to_string(), max).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.table.discard(id);
                refuse(match e {
                    ProfileError::Quota(max) => Refusal::MaxCalls(max),
                    ProfileError::Full(n) => Refusal::Full(n),
                    // The call count is always declared and without values.
                    ProfileError::Unknown(_) | ProfileError::ValueRequired(_) => Refusal::Full(0),
                })
            }
        }
    }

    /// The request route of an initial INVITE ended (see
    /// [`Dialogs::routed`]).
    pub async fn routed(&self, profiles: &Profiles, sip: &SipMessage) {
        if let Some(id) = self.table.routed(sip) {
            profiles.forget(&id.to_string()).await;
        }
    }

    /// An initial INVITE was relayed statefully, as `routed`.
    pub fn relayed(&self, routed: &Message) {
        self.table.relayed(routed, Instant::now());
    }

    /// A reply (`bytes`, as sent) goes upstream for a server transaction.
    pub async fn reply_out(&self, profiles: &Profiles, bytes: &[u8]) {
        let Ok(reply) = SipMessage::parse_slice(bytes) else {
            return;
        };
        let change = self.table.reply_out(&reply, Instant::now());
        self.follow(profiles, change).await;
    }

    /// An in-dialog request arrives, before its request route.
    pub async fn in_dialog(&self, profiles: &Profiles, sip: &SipMessage) {
        let change = self.table.in_dialog(sip, Instant::now());
        self.follow(profiles, change).await;
    }

    /// End confirmed dialog `id` of `state` with BYE to `sides`, sent
    /// through its proxy (the `dlg.end_dlg` RPC, `dlg_bye`). False when
    /// there is no such confirmed dialog, or no proxy to send the BYEs.
    pub async fn end(state: &TenantState, tenant: &str, id: DialogId, sides: &[Side]) -> bool {
        if state.uac.get().is_none() {
            tracing::warn!(tenant, "dialog BYE not sent: the proxy is not running");
            return false;
        }
        let dialog = &state.dialog;
        let Some(byes) = dialog.table.end(id, sides, Instant::now()) else {
            return false;
        };
        dialog.ended(&state.profiles, id).await;
        for bye in byes {
            send(&state.uac, tenant, id, bye, None);
        }
        true
    }
}

/// Send `request` of dialog `id` through the proxy, in a task of its own
/// (the caller never waits for the far end); a keep-alive's answer goes
/// back to the table of `state`.
fn send(
    uac: &UacHandle,
    tenant: &str,
    id: DialogId,
    request: LocalRequest,
    keep_alive: Option<(Side, Weak<TenantState>)>,
) {
    let Some(uac) = uac.get().cloned() else {
        tracing::warn!(tenant, method = %request.method, "dialog request not sent: the proxy is not running");
        return;
    };
    let tenant = tenant.to_string();
    tokio::spawn(async move {
        let method = request.method.clone();
        let to = request.ruri.clone();
        let status = match uac.send(request).await {
            Ok(reply) => reply.status,
            Err(e) => {
                tracing::info!(tenant, %method, %to, dialog = %id, "dialog request failed: {e}");
                408
            }
        };
        tracing::debug!(tenant, %method, %to, status, "dialog request answered");
        let Some((side, state)) = keep_alive else {
            return;
        };
        let Some(state) = state.upgrade() else { return };
        if let Some(bye) = state
            .dialog
            .table
            .keep_alive_answered(id, side, status, Instant::now())
        {
            tracing::info!(tenant, %to, status, "dialog keep-alive failed: ending the call");
            state.dialog.ended(&state.profiles, id).await;
            send(&state.uac, &tenant, id, bye, None);
        }
    });
}

/// The dialog timer of one tenant, for as long as its state is held:
/// lifetimes that ended (BYE to both sides), keep-alives, removals. One
/// task per tenant, whatever its number of dialogs; with a shared store,
/// the writer of its records ([`backup::writer`]) too.
pub async fn upkeep(tenant: String, state: Weak<TenantState>) {
    if state.upgrade().is_some_and(|s| s.dialog.backup().is_some()) {
        tokio::spawn(backup::writer(tenant.clone(), state.clone()));
    }
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let due = state.dialog.table.tick(Instant::now());
        for id in &due.ended {
            state.dialog.ended(&state.profiles, *id).await;
        }
        for (id, purpose, request) in due.requests {
            if purpose == Purpose::Bye {
                tracing::info!(tenant, dialog = %id, to = %request.ruri, "dialog lifetime over: BYE");
            }
            let keep_alive = match purpose {
                Purpose::KeepAlive(side) => Some((side, Arc::downgrade(&state))),
                Purpose::Bye => None,
            };
            send(&state.uac, &tenant, id, request, keep_alive);
        }
    }
}

impl Ctx {
    /// The managed dialog of the message being routed.
    fn dlg_current(&self) -> Option<DialogId> {
        let m = self.message.as_ref()?;
        self.state.dialog.table.find_managed(&m.sip)
    }

    /// The current dialog, or a logged error naming `function`.
    fn dlg_or_error(&mut self, function: &str) -> Option<DialogId> {
        let found = self.dlg_current();
        if found.is_none() {
            self.script_error(
                function,
                "no dialog for this message (dlg_manage not called?)",
            );
        }
        found
    }

    fn dlg_flag(&mut self, function: &str, flag: i32) -> Option<(DialogId, u32)> {
        if !(0..32).contains(&flag) {
            self.script_error(function, format!("flag {flag} is not 0..31"));
            return None;
        }
        Some((self.dlg_or_error(function)?, 1u32 << flag))
    }

    fn dlg_property(&mut self, function: &str, name: &str, on: bool) -> i32 {
        let Some(id) = self.dlg_or_error(function) else {
            return -1;
        };
        if !matches!(name, "timeout-bye" | "ka-src" | "ka-dst") {
            self.script_error(
                function,
                format!("unknown property {name:?} (timeout-bye, ka-src, ka-dst)"),
            );
            return -1;
        }
        let set = |d: &mut table::Dialog| match name {
            "timeout-bye" => d.timeout_bye = on,
            "ka-src" => d.ka_src = on,
            _ => d.ka_dst = on,
        };
        self.dlg_change(id, set)
    }

    /// Change dialog `id` (its record follows): 1, or -1 when it is gone.
    fn dlg_change(&self, id: DialogId, f: impl FnOnce(&mut table::Dialog)) -> i32 {
        let done = self.state.dialog.table.update(id, f).is_some();
        if done {
            self.state.dialog.touch(id);
        }
        kemi(done)
    }

    /// A profile function's result, or -1 with the error logged.
    fn dlg_profile_result<T>(
        &mut self,
        function: &str,
        result: Result<T, ProfileError>,
    ) -> Option<T> {
        result
            .map_err(|e| self.script_error(function, e.to_string()))
            .ok()
    }

    fn dlg_var(&self, name: &str) -> Option<String> {
        let id = self.dlg_current()?;
        self.state
            .dialog
            .table
            .with(id, |d| d.vars.get(name).cloned())?
    }

    fn dlg_set_var_of(
        &mut self,
        function: &str,
        id: Option<DialogId>,
        name: &str,
        value: Option<String>,
    ) -> i32 {
        let Some(id) = id else {
            self.script_error(function, "no such dialog");
            return -1;
        };
        self.dlg_change(id, |d| {
            match value {
                Some(v) => d.vars.insert(name.to_string(), v),
                None => d.vars.remove(name),
            };
        });
        1
    }

    async fn dlg_profile_set(&mut self, function: &str, profile: &str, value: Option<&str>) -> i32 {
        let Some(id) = self.dlg_or_error(function) else {
            return -1;
        };
        let state = self.state.clone();
        let added = state.profiles.add(profile, value, &id.to_string()).await;
        if self.dlg_profile_result(function, added).is_none() {
            return -1;
        }
        state.dialog.touch(id);
        1
    }

    async fn dlg_profile_unset(
        &mut self,
        function: &str,
        profile: &str,
        value: Option<&str>,
    ) -> i32 {
        let Some(id) = self.dlg_or_error(function) else {
            return -1;
        };
        let state = self.state.clone();
        let removed = state.profiles.remove(profile, value, &id.to_string()).await;
        let removed = self.dlg_profile_result(function, removed) == Some(true);
        if removed {
            state.dialog.touch(id);
        }
        kemi(removed)
    }

    fn dlg_profile_is_in(&mut self, function: &str, profile: &str, value: Option<&str>) -> i32 {
        let id = self.dlg_current();
        // An unknown profile is an error even without a dialog.
        let is_in = self.state.profiles.is_in(
            profile,
            value,
            &id.map(|id| id.to_string()).unwrap_or_default(),
        );
        kemi(id.is_some() && self.dlg_profile_result(function, is_in) == Some(true))
    }

    async fn dlg_profile_size(
        &mut self,
        function: &str,
        profile: &str,
        value: Option<&str>,
        pv: &str,
    ) -> i32 {
        let state = self.state.clone();
        let size = state.profiles.size(profile, value).await;
        let Some(size) = self.dlg_profile_result(function, size) else {
            return -1;
        };
        let size = i32::try_from(size).unwrap_or(i32::MAX);
        match self.pv_write(pv, Some(PvValue::Int(size))) {
            Ok(()) => 1,
            Err(_) => {
                self.script_error(function, format!("cannot write the size to {pv:?}"));
                -1
            }
        }
    }
}

impl Host for Ctx {
    async fn dlg_manage(&mut self) -> i32 {
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let sip = &m.sip;
        if !sip.is_request() {
            return -1;
        }
        let in_dialog = sip.to().is_some_and(|t| t.tag().is_some());
        if in_dialog {
            return kemi(self.dlg_current().is_some());
        }
        if sip.method_str() != "INVITE" {
            self.script_error("KSR.dialog.dlg_manage", "not an INVITE");
            return -1;
        }
        let managed = self.state.dialog.table.manage(sip, Instant::now());
        if managed.is_none() {
            let max = self.state.dialog.table.settings().max_dialogs;
            self.script_error(
                "KSR.dialog.dlg_manage",
                format!("the tenant's {max} dialogs (max_dialogs) are tracked"),
            );
        }
        kemi(managed.is_some())
    }

    async fn dlg_bye(&mut self, side: String) -> i32 {
        const F: &str = "KSR.dialog.dlg_bye";
        let sides: &[Side] = match side.as_str() {
            "caller" => &[Side::Caller],
            "callee" => &[Side::Callee],
            "all" => &[Side::Caller, Side::Callee],
            _ => {
                self.script_error(F, format!("unknown side {side:?} (caller, callee, all)"));
                return -1;
            }
        };
        let Some(id) = self.dlg_or_error(F) else {
            return -1;
        };
        let state = self.state.clone();
        let ended = DialogState::end(&state, self.tenant.as_str(), id, sides).await;
        if !ended {
            self.script_error(
                F,
                "the dialog is not confirmed, or there is no proxy to send the BYE",
            );
        }
        kemi(ended)
    }

    async fn is_known_dlg(&mut self) -> i32 {
        kemi(self.dlg_current().is_some())
    }

    async fn dlg_set_timeout(&mut self, to: i32) -> i32 {
        const F: &str = "KSR.dialog.dlg_set_timeout";
        let Ok(secs) = u32::try_from(to) else {
            self.script_error(F, format!("negative timeout {to}"));
            return -1;
        };
        let Some(id) = self.dlg_or_error(F) else {
            return -1;
        };
        let done = self
            .state
            .dialog
            .table
            .set_timeout(id, secs, Instant::now());
        if done {
            self.state.dialog.touch(id);
        }
        kemi(done)
    }

    async fn dlg_set_timeout_id(&mut self, to: i32, he: i32, hi: i32) -> i32 {
        const F: &str = "KSR.dialog.dlg_set_timeout_id";
        let (Ok(secs), Ok(h_entry), Ok(h_id)) =
            (u32::try_from(to), u32::try_from(he), u32::try_from(hi))
        else {
            self.script_error(F, format!("negative value in ({to}, {he}, {hi})"));
            return -1;
        };
        let id = DialogId { h_entry, h_id };
        let done = self
            .state
            .dialog
            .table
            .set_timeout(id, secs, Instant::now());
        if done {
            self.state.dialog.touch(id);
        } else {
            self.script_error(F, format!("no dialog {he}:{hi}"));
        }
        kemi(done)
    }

    async fn dlg_set_property(&mut self, pval: String) -> i32 {
        self.dlg_property("KSR.dialog.dlg_set_property", &pval, true)
    }

    async fn dlg_reset_property(&mut self, pval: String) -> i32 {
        self.dlg_property("KSR.dialog.dlg_reset_property", &pval, false)
    }

    async fn dlg_isflagset(&mut self, val: i32) -> i32 {
        let Some((id, bit)) = self.dlg_flag("KSR.dialog.dlg_isflagset", val) else {
            return -1;
        };
        kemi(self.state.dialog.table.with(id, |d| d.flags & bit != 0) == Some(true))
    }

    async fn dlg_setflag(&mut self, val: i32) -> i32 {
        let Some((id, bit)) = self.dlg_flag("KSR.dialog.dlg_setflag", val) else {
            return -1;
        };
        self.dlg_change(id, |d| d.flags |= bit)
    }

    async fn dlg_resetflag(&mut self, val: i32) -> i32 {
        let Some((id, bit)) = self.dlg_flag("KSR.dialog.dlg_resetflag", val) else {
            return -1;
        };
        self.dlg_change(id, |d| d.flags &= !bit)
    }

    async fn dlg_get_var(&mut self, ci: String, ft: String, tt: String, key: String) -> Xval {
        let table = &self.state.dialog.table;
        table
            .find_by(&ci, &ft, &tt)
            .and_then(|id| table.with(id, |d| d.vars.get(&key).cloned()))
            .flatten()
            .map_or(Xval::Null, Xval::Str)
    }

    async fn dlg_set_var(
        &mut self,
        ci: String,
        ft: String,
        tt: String,
        key: String,
        val: String,
    ) -> i32 {
        let id = self.state.dialog.table.find_by(&ci, &ft, &tt);
        self.dlg_set_var_of("KSR.dialog.dlg_set_var", id, &key, Some(val))
    }

    async fn var_sets(&mut self, name: String, val: String) -> i32 {
        let id = self.dlg_or_error("KSR.dialog.var_sets");
        if id.is_none() {
            return -1;
        }
        self.dlg_set_var_of("KSR.dialog.var_sets", id, &name, Some(val))
    }

    async fn var_get(&mut self, name: String) -> Xval {
        self.dlg_var(&name).map_or(Xval::Null, Xval::Str)
    }

    async fn var_gete(&mut self, name: String) -> Xval {
        Xval::Str(self.dlg_var(&name).unwrap_or_default())
    }

    async fn var_getw(&mut self, name: String) -> Xval {
        Xval::Str(self.dlg_var(&name).unwrap_or_else(|| "<null>".into()))
    }

    async fn var_rm(&mut self, name: String) -> i32 {
        let id = self.dlg_or_error("KSR.dialog.var_rm");
        if id.is_none() {
            return -1;
        }
        self.dlg_set_var_of("KSR.dialog.var_rm", id, &name, None)
    }

    async fn var_is_null(&mut self, name: String) -> i32 {
        kemi(self.dlg_var(&name).is_none())
    }

    async fn set_dlg_profile_static(&mut self, sprofile: String) -> i32 {
        self.dlg_profile_set("KSR.dialog.set_dlg_profile_static", &sprofile, None)
            .await
    }

    async fn set_dlg_profile(&mut self, sprofile: String, svalue: String) -> i32 {
        self.dlg_profile_set("KSR.dialog.set_dlg_profile", &sprofile, Some(&svalue))
            .await
    }

    async fn unset_dlg_profile_static(&mut self, sprofile: String) -> i32 {
        self.dlg_profile_unset("KSR.dialog.unset_dlg_profile_static", &sprofile, None)
            .await
    }

    async fn unset_dlg_profile(&mut self, sprofile: String, svalue: String) -> i32 {
        self.dlg_profile_unset("KSR.dialog.unset_dlg_profile", &sprofile, Some(&svalue))
            .await
    }

    async fn is_in_profile_static(&mut self, sprofile: String) -> i32 {
        self.dlg_profile_is_in("KSR.dialog.is_in_profile_static", &sprofile, None)
    }

    async fn is_in_profile(&mut self, sprofile: String, svalue: String) -> i32 {
        self.dlg_profile_is_in("KSR.dialog.is_in_profile", &sprofile, Some(&svalue))
    }

    async fn get_profile_size_static(&mut self, sprofile: String, spv: String) -> i32 {
        self.dlg_profile_size("KSR.dialog.get_profile_size_static", &sprofile, None, &spv)
            .await
    }

    async fn get_profile_size(&mut self, sprofile: String, svalue: String, spv: String) -> i32 {
        self.dlg_profile_size(
            "KSR.dialog.get_profile_size",
            &sprofile,
            Some(&svalue),
            &spv,
        )
        .await
    }
}

#[cfg(test)]
mod tests;
