//! A tenant's dialogs: the table, the state machine the proxy drives at
//! each event (an initial INVITE admitted, relayed, its replies going
//! upstream, in-dialog requests), lifetimes and keep-alives, and the
//! in-dialog requests (BYE, OPTIONS) the proxy sends on a dialog's behalf.
//!
//! Every initial INVITE the proxy relays statefully is tracked here, from
//! its admission until its transaction fails or, answered, until BYE or
//! the end of its lifetime: the tenant's `max_calls` counts those (in the
//! tenant's profiles, see [`super::DialogState::admit`]), the table keeps
//! them all bounded by `max_dialogs`.
//! Only those the script asked for with `dlg_manage` are *managed*: known
//! to `is_known_dlg`, `$dlg(...)` and the other `KSR.dialog` functions.
//!
//! In-dialog requests and replies are matched by Call-ID and tags (the
//! caller's From tag, the callee's To tag), not by a `did` Record-Route
//! parameter.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kemibox_metrics::{Counter, Gauge, ModuleKind, ModuleSeries};
use kemibox_sip::{NameAddr, SipMessage, render};
use serde::{Deserialize, Serialize};

use crate::Message;
use crate::uac::LocalRequest;

/// Kamailio's dialog `hash_size` default: `h_entry` is the Call-ID's hash
/// modulo this.
const HASH_SIZE: u32 = 4096;
/// An unanswered INVITE's dialog is dropped after this, whatever the
/// transaction layer said (its maximum lifetime is 180 s): a safety net,
/// the transaction's end normally deletes it first.
const MAX_SETUP: Duration = Duration::from_secs(200);
/// A deleted dialog stays this long (for the BYE's own routes, `$dlg`,
/// `is_known_dlg`) before it is removed.
const LINGER: Duration = Duration::from_secs(5);

/// What a tenant's dialogs are allowed, from its configuration (`[dialog]`,
/// `[limits] max_calls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogSettings {
    /// A dialog's lifetime from its confirmation, in seconds (Kamailio's
    /// `default_timeout`, 43200).
    pub default_timeout: u32,
    /// Dialogs (calls) tracked at most: beyond, initial INVITEs are
    /// refused with `max_calls_reply` (state stays bounded).
    pub max_dialogs: usize,
    /// Send BYE to both sides when a confirmed dialog's lifetime ends (as
    /// Kamailio's `send_bye`, or `dlg_set_property("timeout-bye")`).
    pub send_bye: bool,
    /// Seconds between in-dialog OPTIONS keep-alives of dialogs with
    /// `ka-src`/`ka-dst` (Kamailio's `ka_interval`); 0: none.
    pub ka_interval: u32,
    /// Keep-alives failed (408 or 481) in a row that end the dialog
    /// (Kamailio's `ka_failed_limit`).
    pub ka_failed_limit: u32,
    /// Concurrent calls the tenant may have (`[limits] max_calls`).
    pub max_calls: Option<u32>,
    /// The answer to an initial INVITE over `max_calls`.
    pub max_calls_reply: (u16, String),
}

impl Default for DialogSettings {
    fn default() -> DialogSettings {
        DialogSettings {
            default_timeout: 43_200,
            max_dialogs: 100_000,
            send_bye: true,
            ka_interval: 0,
            ka_failed_limit: 1,
            max_calls: None,
            max_calls_reply: (503, "Too Many Calls".into()),
        }
    }
}

/// A dialog's identity, Kamailio's `h_entry` and `h_id`. Written
/// `h_entry:h_id` wherever a string names it (profile memberships, the
/// saved records, `dlg.profile_list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DialogId {
    pub h_entry: u32,
    pub h_id: u32,
}

impl std::fmt::Display for DialogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.h_entry, self.h_id)
    }
}

/// Kamailio's dialog states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum State {
    Unconfirmed = 1,
    Early = 2,
    /// 2xx sent, ACK not seen yet.
    ConfirmedNoAck = 3,
    Confirmed = 4,
    Deleted = 5,
}

impl State {
    fn live(self) -> bool {
        self != State::Deleted
    }

    fn early(self) -> bool {
        matches!(self, State::Unconfirmed | State::Early)
    }

    /// Answered (2xx), with or without its ACK.
    pub fn confirmed(self) -> bool {
        matches!(self, State::ConfirmedNoAck | State::Confirmed)
    }
}

/// One side of a dialog, as the proxy needs it to send requests there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    /// Its tag (the From tag for the caller, the To tag for the callee).
    pub tag: String,
    /// Its Contact URI: the Request-URI of requests to it.
    pub contact: String,
    /// The highest CSeq it sent in the dialog (or we sent on its behalf).
    pub cseq: u32,
    /// The route set towards it (Route header values in order).
    pub route_set: Vec<String>,
    /// The socket it reached us on (`udp:ip:port`), when known.
    pub socket: Option<String>,
}

/// The side of a dialog a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Caller,
    Callee,
}

/// One dialog. Its serde form is what a node saves to find its dialogs
/// after a restart: the timers (instants) are not in it, they are set
/// again when it is restored ([`Dialogs::restore`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dialog {
    pub id: DialogId,
    pub call_id: String,
    pub from_uri: String,
    pub to_uri: String,
    /// The caller's From header value (tag included).
    pub from_header: String,
    /// The INVITE's To header value (without the callee's tag).
    pub to_header: String,
    pub state: State,
    /// The script called `dlg_manage` for it.
    pub managed: bool,
    /// Its INVITE was relayed statefully (it counts as a call).
    pub relayed: bool,
    pub caller: Leg,
    pub callee: Leg,
    /// Unix seconds: created, confirmed, ended.
    pub init_ts: u64,
    pub start_ts: u64,
    pub end_ts: u64,
    /// Lifetime in seconds from confirmation.
    pub timeout: u32,
    /// Dialog flags (`dlg_setflag`, `$dlg_ctx(flags)`).
    pub flags: u32,
    pub vars: BTreeMap<String, String>,
    /// `dlg_set_property("timeout-bye")`.
    pub timeout_bye: bool,
    /// `ka-src` / `ka-dst`: keep-alives to the caller / callee.
    pub ka_src: bool,
    pub ka_dst: bool,
    #[serde(skip, default = "Instant::now")]
    created: Instant,
    #[serde(skip)]
    deadline: Option<Instant>,
    #[serde(skip)]
    ended: Option<Instant>,
    #[serde(skip)]
    next_ka: Option<Instant>,
    #[serde(skip)]
    ka_failed: [u32; 2],
    /// Record-Route entries the INVITE carried when it left: those above
    /// them in the 2xx are the callee's route set.
    rr_sent: usize,
}

impl Dialog {
    /// The header value of `side`'s own address (its From in requests it
    /// would send).
    fn address_of(&self, side: Side) -> String {
        match side {
            Side::Caller => self.from_header.clone(),
            Side::Callee if self.callee.tag.is_empty() => self.to_header.clone(),
            Side::Callee => format!("{};tag={}", self.to_header, self.callee.tag),
        }
    }

    /// An in-dialog request with `method` to `to`, as the other side would
    /// send it: its From/To, the next CSeq of that direction, the route
    /// set learned from the Record-Routes, to that side's Contact.
    pub fn request_to(&mut self, to: Side, method: &str) -> LocalRequest {
        let from = match to {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        };
        let (sender, target) = match to {
            Side::Caller => (&mut self.callee, &self.caller),
            Side::Callee => (&mut self.caller, &self.callee),
        };
        sender.cseq = sender.cseq.saturating_add(1);
        let cseq = sender.cseq;
        LocalRequest {
            method: method.to_string(),
            ruri: target.contact.clone(),
            from: self.address_of(from),
            to: self.address_of(to),
            call_id: self.call_id.clone(),
            cseq,
            route: target.route_set.clone(),
            socket: target.socket.clone(),
            ..LocalRequest::default()
        }
    }

    /// The direction of an in-dialog request from `from_tag`: 1 from the
    /// caller (downstream), 2 from the callee (upstream), as
    /// `$dlg_ctx(dir)`.
    pub fn direction(&self, from_tag: Option<&str>) -> i32 {
        if from_tag == Some(self.caller.tag.as_str()) {
            1
        } else {
            2
        }
    }

    /// Seconds left of its lifetime (the whole timeout before
    /// confirmation).
    pub fn remaining(&self, now: Instant) -> u64 {
        match self.deadline {
            Some(d) => d.saturating_duration_since(now).as_secs(),
            None => u64::from(self.timeout),
        }
    }
}

/// Why an initial INVITE is not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The tenant has `max_calls` calls (on every node when shared).
    MaxCalls(u64),
    /// The tenant's dialog table holds `max_dialogs`, or its profiles the
    /// most memberships they may.
    Full(usize),
}

/// What an event did to a dialog that its saved record must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Answered, acknowledged, or changed while confirmed (a CSeq).
    Confirmed(DialogId),
    /// Ended (BYE, a failed transaction): it leaves its profiles.
    Ended(DialogId),
}

/// The ids of the messages of a dialog.
struct Ids<'a> {
    call_id: &'a str,
    from_tag: Option<&'a str>,
    to_tag: Option<&'a str>,
}

fn ids(sip: &SipMessage) -> Option<Ids<'_>> {
    Some(Ids {
        call_id: sip.call_id()?,
        from_tag: sip.from().and_then(|f| f.tag()),
        to_tag: sip.to().and_then(|t| t.tag()),
    })
}

/// A header value without its `tag` parameter.
fn without_tag(value: &str) -> String {
    value
        .split(';')
        .filter(|p| !p.trim().to_ascii_lowercase().starts_with("tag="))
        .collect::<Vec<_>>()
        .join(";")
        .trim()
        .to_string()
}

/// The Contact URI of `sip`, if it has one.
fn contact_uri(sip: &SipMessage) -> Option<String> {
    let element = sip.header_elements("Contact").next()?;
    NameAddr::parse(element).ok().map(|na| na.uri.to_string())
}

fn hash(call_id: &str) -> u32 {
    // FNV-1a: stable across runs, so h_entry is too.
    call_id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    }) % HASH_SIZE
}

fn unix_now() -> u64 {
    kemibox_store::unix_now()
}

#[derive(Default)]
struct Inner {
    dialogs: HashMap<DialogId, Dialog>,
    /// (Call-ID, caller's From tag) to dialog.
    by_call: HashMap<(String, String), DialogId>,
    next_id: u32,
    early: usize,
    active: usize,
}

impl Inner {
    /// Move `d` to `state`, keeping the counts.
    fn set_state(&mut self, id: DialogId, state: State, now: Instant) -> Option<State> {
        let d = self.dialogs.get_mut(&id)?;
        let old = d.state;
        if old == state || old == State::Deleted {
            return Some(old);
        }
        d.state = state;
        if state == State::Deleted {
            d.ended = Some(now);
            d.end_ts = unix_now();
        }
        let (early_delta, active_delta) = (
            i64::from(state.early()) - i64::from(old.early()),
            i64::from(state.confirmed()) - i64::from(old.confirmed()),
        );
        self.early = (self.early as i64 + early_delta).max(0) as usize;
        self.active = (self.active as i64 + active_delta).max(0) as usize;
        Some(old)
    }

    fn find(&self, ids: &Ids<'_>) -> Option<DialogId> {
        let by = |tag: Option<&str>| {
            self.by_call
                .get(&(ids.call_id.to_string(), tag?.to_string()))
                .copied()
        };
        if let Some(id) = by(ids.from_tag) {
            return Some(id);
        }
        // A request from the callee: its From tag is the dialog's To tag.
        let id = by(ids.to_tag)?;
        let d = self.dialogs.get(&id)?;
        (Some(d.callee.tag.as_str()) == ids.from_tag).then_some(id)
    }

    fn remove(&mut self, id: DialogId) {
        if let Some(d) = self.dialogs.remove(&id) {
            if d.state.live() {
                self.early -= usize::from(d.state.early());
                self.active -= usize::from(d.state.confirmed());
            }
            let key = (d.call_id, d.caller.tag);
            if self.by_call.get(&key) == Some(&id) {
                self.by_call.remove(&key);
            }
        }
    }
}

/// What the timer found to do (see [`Dialogs::tick`]).
#[derive(Debug, Default)]
pub struct Due {
    /// Requests to send: BYEs of ended dialogs and keep-alives.
    pub requests: Vec<(DialogId, Purpose, LocalRequest)>,
    /// Dialogs that ended (their profiles are to be forgotten).
    pub ended: Vec<DialogId>,
}

/// Why the proxy sends a request for a dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Bye,
    KeepAlive(Side),
}

/// The table locked: the early and active gauges follow its counts when
/// the lock is let go, whatever changed them.
struct Locked<'a> {
    guard: std::sync::MutexGuard<'a, Inner>,
    metrics: &'a DialogMetrics,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.metrics.early.set(self.guard.early as u64);
        self.metrics.active.set(self.guard.active as u64);
    }
}

/// A tenant's dialogs (see the module docs).
pub struct Dialogs {
    settings: DialogSettings,
    inner: Mutex<Inner>,
    metrics: Arc<DialogMetrics>,
}

impl Default for Dialogs {
    fn default() -> Dialogs {
        Dialogs::new(DialogSettings::default())
    }
}

impl std::fmt::Debug for Dialogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (early, active) = self.counts();
        f.debug_struct("Dialogs")
            .field("settings", &self.settings)
            .field("early", &early)
            .field("active", &active)
            .finish()
    }
}

impl Dialogs {
    /// An empty table under `settings`.
    pub fn new(settings: DialogSettings) -> Dialogs {
        Dialogs {
            settings,
            inner: Mutex::new(Inner::default()),
            metrics: Arc::new(DialogMetrics::default()),
        }
    }

    pub fn settings(&self) -> &DialogSettings {
        &self.settings
    }

    /// Its metrics (reported through the tenant state's series).
    pub fn metrics(&self) -> &Arc<DialogMetrics> {
        &self.metrics
    }

    fn lock(&self) -> Locked<'_> {
        Locked {
            guard: self.inner.lock().unwrap_or_else(|e| e.into_inner()),
            metrics: &self.metrics,
        }
    }

    /// Early (states 1, 2) and active (3, 4) dialogs.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.early, inner.active)
    }

    /// An initial INVITE arrives, before its request route: refused when
    /// the table is full, else tracked (unmanaged) from now on; the id of
    /// a dialog new to the table (its call to be counted). A retransmitted
    /// or repeated INVITE of a tracked dialog is admitted again (`None`),
    /// so it is not counted twice.
    pub fn admit(&self, sip: &SipMessage, now: Instant) -> Result<Option<DialogId>, Refusal> {
        let Some(ids) = ids(sip) else { return Ok(None) };
        let mut inner = self.lock();
        if inner.find(&ids).is_some() {
            return Ok(None);
        }
        if inner.dialogs.len() >= self.settings.max_dialogs {
            return Err(Refusal::Full(self.settings.max_dialogs));
        }
        let id = Self::insert(&mut inner, sip, &ids, self.settings.default_timeout, now);
        Ok(Some(id))
    }

    /// Forget dialog `id` at once (an admission the quota then refused).
    pub fn discard(&self, id: DialogId) {
        self.lock().remove(id);
    }

    /// Put back `dialog`, saved by this node before it restarted: its
    /// lifetime ends at unix second `expires` (at once when past), its
    /// keep-alives start again. Later dialogs get higher `h_id`s. False
    /// when the table has it already or is full.
    pub fn restore(&self, mut dialog: Dialog, expires: Option<u64>, now: Instant) -> bool {
        let mut inner = self.lock();
        if inner.dialogs.contains_key(&dialog.id)
            || inner.dialogs.len() >= self.settings.max_dialogs
            || !dialog.state.confirmed()
        {
            return false;
        }
        let left = expires.map(|e| e.saturating_sub(unix_now()));
        dialog.created = now;
        dialog.deadline = Some(now + Duration::from_secs(left.unwrap_or(0)));
        dialog.ended = None;
        dialog.next_ka = self.ka_next(now);
        dialog.ka_failed = [0; 2];
        let id = dialog.id;
        inner.next_id = inner.next_id.max(id.h_id);
        inner
            .by_call
            .insert((dialog.call_id.clone(), dialog.caller.tag.clone()), id);
        inner.dialogs.insert(id, dialog);
        inner.active += 1;
        true
    }

    /// Dialog `id` as saved (see [`Dialog`]) with the unix second its
    /// lifetime ends, while it is confirmed.
    pub fn snapshot(&self, id: DialogId, now: Instant) -> Option<(Dialog, u64)> {
        let inner = self.lock();
        let d = inner.dialogs.get(&id).filter(|d| d.state.confirmed())?;
        let expires = unix_now() + d.remaining(now);
        Some((d.clone(), expires))
    }

    fn insert(
        inner: &mut Inner,
        sip: &SipMessage,
        ids: &Ids<'_>,
        timeout: u32,
        now: Instant,
    ) -> DialogId {
        inner.next_id = inner.next_id.wrapping_add(1).max(1);
        let id = DialogId {
            h_entry: hash(ids.call_id),
            h_id: inner.next_id,
        };
        let from = sip.header("From").unwrap_or_default();
        let to = sip.header("To").unwrap_or_default();
        let uri = |v: &str| {
            NameAddr::parse(v)
                .map(|na| na.uri.to_string())
                .unwrap_or_default()
        };
        let cseq = sip.cseq().map(|(n, _)| n).unwrap_or(1);
        let dialog = Dialog {
            id,
            call_id: ids.call_id.to_string(),
            from_uri: uri(from),
            to_uri: uri(to),
            from_header: from.trim().to_string(),
            to_header: without_tag(to),
            state: State::Unconfirmed,
            managed: false,
            relayed: false,
            caller: Leg {
                tag: ids.from_tag.unwrap_or_default().to_string(),
                contact: contact_uri(sip).unwrap_or_default(),
                cseq,
                route_set: sip
                    .header_elements("Record-Route")
                    .map(str::to_string)
                    .collect(),
                socket: None,
            },
            callee: Leg {
                cseq,
                ..Leg::default()
            },
            init_ts: unix_now(),
            start_ts: 0,
            end_ts: 0,
            timeout,
            flags: 0,
            vars: BTreeMap::new(),
            timeout_bye: false,
            ka_src: false,
            ka_dst: false,
            created: now,
            deadline: None,
            ended: None,
            next_ka: None,
            ka_failed: [0; 2],
            rr_sent: 0,
        };
        inner
            .by_call
            .insert((ids.call_id.to_string(), dialog.caller.tag.clone()), id);
        inner.dialogs.insert(id, dialog);
        inner.early += 1;
        id
    }

    /// `dlg_manage` on an initial INVITE: the dialog becomes managed
    /// (tracked first when the proxy did not admit it, e.g. in `kemibox
    /// route`). `None` when the table is full.
    pub fn manage(&self, sip: &SipMessage, now: Instant) -> Option<DialogId> {
        let ids = ids(sip)?;
        let mut inner = self.lock();
        let id = match inner.find(&ids) {
            Some(id) => id,
            None if inner.dialogs.len() >= self.settings.max_dialogs => return None,
            None => Self::insert(&mut inner, sip, &ids, self.settings.default_timeout, now),
        };
        if let Some(d) = inner.dialogs.get_mut(&id) {
            d.managed = true;
        }
        Some(id)
    }

    /// The initial INVITE `routed` (as the request route left it) was
    /// relayed statefully: its dialog counts as a call until its
    /// transaction fails. Learns the caller's socket and how many
    /// Record-Routes the INVITE carried when it left (to tell the callee's
    /// route set in the 2xx).
    pub fn relayed(&self, routed: &Message, now: Instant) {
        let Some(ids) = ids(&routed.sip) else { return };
        let mut inner = self.lock();
        let id = match inner.find(&ids) {
            Some(id) => id,
            None if inner.dialogs.len() >= self.settings.max_dialogs => return,
            None => Self::insert(
                &mut inner,
                &routed.sip,
                &ids,
                self.settings.default_timeout,
                now,
            ),
        };
        let sent = SipMessage::parse(render(&routed.sip, &routed.edits)).ok();
        let rr_sent = sent.map(|s| s.header_elements("Record-Route").count());
        if let Some(d) = inner.dialogs.get_mut(&id) {
            d.relayed = true;
            d.caller.socket = Some(format!("{}:{}", routed.transport.as_str(), routed.local));
            d.rr_sent = rr_sent.unwrap_or(0);
        }
    }

    /// The request route of an initial INVITE ended: a dialog that was
    /// not relayed statefully (answered, forwarded statelessly, dropped)
    /// stops counting. The ids of dialogs removed.
    pub fn routed(&self, sip: &SipMessage) -> Option<DialogId> {
        let ids = ids(sip)?;
        let mut inner = self.lock();
        let id = inner.find(&ids)?;
        let d = inner.dialogs.get(&id)?;
        if d.relayed || !d.state.early() {
            return None;
        }
        inner.remove(id);
        Some(id)
    }

    /// A reply to an initial INVITE goes upstream with `status`: 1xx with
    /// a To tag makes the dialog early, 2xx confirms it (the callee's tag,
    /// Contact and route set learned, its lifetime starts), a final
    /// negative one deletes it. Replies to requests of confirmed dialogs
    /// change nothing. The dialog confirmed or deleted, if any.
    pub fn reply_out(&self, reply: &SipMessage, now: Instant) -> Option<Change> {
        let status = reply.status()?;
        if reply.cseq().map(|(_, m)| m) != Some("INVITE") {
            return None;
        }
        let ids = ids(reply)?;
        let mut inner = self.lock();
        let id = inner.find(&ids)?;
        let d = inner.dialogs.get_mut(&id)?;
        if !d.state.early() {
            return None;
        }
        match status {
            101..=199 if ids.to_tag.is_some() => {
                d.callee.tag = ids.to_tag.unwrap_or_default().to_string();
                inner.set_state(id, State::Early, now);
                None
            }
            200..=299 => {
                d.callee.tag = ids.to_tag.unwrap_or_default().to_string();
                d.callee.contact = contact_uri(reply).unwrap_or_default();
                let rr_sent = d.rr_sent;
                let all: Vec<String> = reply
                    .header_elements("Record-Route")
                    .map(str::to_string)
                    .collect();
                let above = all.len().saturating_sub(rr_sent);
                d.callee.route_set = all[..above].iter().rev().cloned().collect();
                d.start_ts = unix_now();
                d.deadline = Some(now + Duration::from_secs(u64::from(d.timeout)));
                d.next_ka = self.ka_next(now);
                inner.set_state(id, State::ConfirmedNoAck, now);
                Some(Change::Confirmed(id))
            }
            300.. => {
                inner.set_state(id, State::Deleted, now);
                inner.remove(id);
                Some(Change::Ended(id))
            }
            _ => None,
        }
    }

    fn ka_next(&self, now: Instant) -> Option<Instant> {
        (self.settings.ka_interval > 0)
            .then(|| now + Duration::from_secs(u64::from(self.settings.ka_interval)))
    }

    /// An in-dialog request arrives (before its request route): its CSeq
    /// is remembered for its direction, an ACK confirms the dialog, a BYE
    /// ends it. What changed: the ACK, a higher CSeq of a confirmed
    /// dialog, its end.
    pub fn in_dialog(&self, sip: &SipMessage, now: Instant) -> Option<Change> {
        let ids = ids(sip)?;
        let mut inner = self.lock();
        let id = inner.find(&ids)?;
        let d = inner.dialogs.get_mut(&id)?;
        let mut higher = false;
        if let Some((n, _)) = sip.cseq() {
            let leg = if d.direction(ids.from_tag) == 1 {
                &mut d.caller
            } else {
                &mut d.callee
            };
            if sip.method_str() != "ACK" && n > leg.cseq {
                leg.cseq = n;
                higher = true;
            }
        }
        match sip.method_str() {
            "ACK" if d.state == State::ConfirmedNoAck => {
                inner.set_state(id, State::Confirmed, now);
                Some(Change::Confirmed(id))
            }
            "BYE" if d.state.live() => {
                inner.set_state(id, State::Deleted, now);
                Some(Change::Ended(id))
            }
            _ if higher && d.state.confirmed() => Some(Change::Confirmed(id)),
            _ => None,
        }
    }

    /// The managed dialog `sip` belongs to (any state but removed).
    pub fn find_managed(&self, sip: &SipMessage) -> Option<DialogId> {
        let ids = ids(sip)?;
        let inner = self.lock();
        let id = inner.find(&ids)?;
        inner.dialogs.get(&id)?.managed.then_some(id)
    }

    /// The managed dialog with these ids (`to_tag` empty: any).
    pub fn find_by(&self, call_id: &str, from_tag: &str, to_tag: &str) -> Option<DialogId> {
        let inner = self.lock();
        let id = *inner
            .by_call
            .get(&(call_id.to_string(), from_tag.to_string()))?;
        let d = inner.dialogs.get(&id)?;
        (d.managed && (to_tag.is_empty() || d.callee.tag == to_tag)).then_some(id)
    }

    /// Read dialog `id`.
    pub fn with<T>(&self, id: DialogId, f: impl FnOnce(&Dialog) -> T) -> Option<T> {
        self.lock().dialogs.get(&id).map(f)
    }

    /// Change dialog `id` (flags, variables, properties, timeout).
    pub fn update<T>(&self, id: DialogId, f: impl FnOnce(&mut Dialog) -> T) -> Option<T> {
        self.lock().dialogs.get_mut(&id).map(f)
    }

    /// Set dialog `id`'s lifetime to `secs` (from now when confirmed).
    pub fn set_timeout(&self, id: DialogId, secs: u32, now: Instant) -> bool {
        self.update(id, |d| {
            d.timeout = secs;
            if d.state.confirmed() {
                d.deadline = Some(now + Duration::from_secs(u64::from(secs)));
            }
        })
        .is_some()
    }

    /// Every dialog, managed or not (for `dlg.list`), in id order.
    pub fn list(&self) -> Vec<Dialog> {
        let inner = self.lock();
        let mut all: Vec<Dialog> = inner.dialogs.values().cloned().collect();
        all.sort_by_key(|d| d.id);
        all
    }

    /// End confirmed dialog `id`: the BYEs for `sides`, the dialog deleted.
    /// `None` when there is no such confirmed dialog.
    pub fn end(&self, id: DialogId, sides: &[Side], now: Instant) -> Option<Vec<LocalRequest>> {
        let mut inner = self.lock();
        let d = inner.dialogs.get_mut(&id)?;
        if !d.state.confirmed() {
            return None;
        }
        let byes = sides.iter().map(|s| d.request_to(*s, "BYE")).collect();
        inner.set_state(id, State::Deleted, now);
        Some(byes)
    }

    /// What is due at `now`: confirmed dialogs whose lifetime ended are
    /// deleted (with BYE to both sides when `send_bye` or their
    /// `timeout-bye`), keep-alives are due, unanswered setups past
    /// [`MAX_SETUP`] and deleted dialogs past [`LINGER`] are removed.
    pub fn tick(&self, now: Instant) -> Due {
        let mut due = Due::default();
        let mut inner = self.lock();
        let mut expired = Vec::new();
        let mut gone = Vec::new();
        for d in inner.dialogs.values_mut() {
            match d.state {
                State::Deleted => {
                    if d.ended.is_none_or(|e| now.duration_since(e) >= LINGER) {
                        gone.push(d.id);
                    }
                }
                s if s.early() => {
                    if now.duration_since(d.created) >= MAX_SETUP {
                        gone.push(d.id);
                        due.ended.push(d.id);
                    }
                }
                _ => {
                    if d.deadline.is_some_and(|t| t <= now) {
                        expired.push(d.id);
                        if self.settings.send_bye || d.timeout_bye {
                            for side in [Side::Caller, Side::Callee] {
                                due.requests
                                    .push((d.id, Purpose::Bye, d.request_to(side, "BYE")));
                            }
                        }
                        continue;
                    }
                    if d.next_ka.is_some_and(|t| t <= now) {
                        d.next_ka = self.ka_next(now);
                        for (on, side) in [(d.ka_src, Side::Caller), (d.ka_dst, Side::Callee)] {
                            if on {
                                let ka = d.request_to(side, "OPTIONS");
                                due.requests.push((d.id, Purpose::KeepAlive(side), ka));
                            }
                        }
                    }
                }
            }
        }
        for id in expired {
            inner.set_state(id, State::Deleted, now);
            due.ended.push(id);
        }
        for id in gone {
            inner.remove(id);
        }
        due
    }

    /// The final status of a keep-alive to `side` of `id`: 408 and 481
    /// count as failures; `ka_failed_limit` of them in a row end the
    /// dialog with a BYE to the other side (returned).
    pub fn keep_alive_answered(
        &self,
        id: DialogId,
        side: Side,
        status: u16,
        now: Instant,
    ) -> Option<LocalRequest> {
        let mut inner = self.lock();
        let d = inner.dialogs.get_mut(&id)?;
        let slot = &mut d.ka_failed[side as usize];
        if status != 408 && status != 481 {
            *slot = 0;
            return None;
        }
        *slot += 1;
        if *slot < self.settings.ka_failed_limit.max(1) || !d.state.confirmed() {
            return None;
        }
        let other = match side {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        };
        let bye = d.request_to(other, "BYE");
        inner.set_state(id, State::Deleted, now);
        Some(bye)
    }
}

/// One tenant's dialogs on this node: what operators watch to see calls
/// in progress and the `max_calls` quota at work.
#[derive(Debug, Default)]
pub struct DialogMetrics {
    /// Dialogs not answered yet (Kamailio's states 1 and 2).
    pub early: Gauge,
    /// Dialogs answered (2xx), until BYE or the end of their lifetime
    /// (states 3 and 4).
    pub active: Gauge,
    /// Initial INVITEs refused before their request route because the
    /// tenant had `max_calls` calls (or its dialog table was full).
    pub refused: Counter,
}

impl DialogMetrics {
    /// Its series (the registry adds the tenant label).
    pub fn metric_series(&self, out: &mut Vec<ModuleSeries>) {
        ModuleSeries::of_tenant(
            [
                (
                    "kemibox_dialogs_early",
                    ModuleKind::Gauge,
                    "The tenant's dialogs on this node not answered yet (states 1 and 2).",
                    self.early.get(),
                ),
                (
                    "kemibox_dialogs_active",
                    ModuleKind::Gauge,
                    "The tenant's answered dialogs on this node, until BYE or the end of their lifetime (states 3 and 4).",
                    self.active.get(),
                ),
                (
                    "kemibox_dialog_calls_refused_total",
                    ModuleKind::Counter,
                    "Initial INVITEs refused before their route: the tenant had max_calls calls (or a full dialog table).",
                    self.refused.get(),
                ),
            ],
            out,
        );
    }
}
