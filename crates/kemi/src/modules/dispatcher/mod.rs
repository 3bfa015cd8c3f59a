//! `KSR.dispatcher`: Kamailio's dispatcher over the tenant's destination
//! sets ([`sets`]: loaded from a [`list`] file, swapped on reload),
//! selected by the [`algo`]rithms, kept healthy by [`probe`]s through the
//! state machine of [`health`].
//!
//! A selection is kept with the request as AVPs standing for Kamailio's
//! `_dsdst_` XAVP list (one value per destination, the current one
//! first): `_dsdst_uri`, `_dsdst_grp`, `_dsdst_attrs`, `_dsdst_dstid`,
//! `_dsdst_sock`, and `_dsctx_cnt` for `_dsctx_`'s count. AVPs travel with
//! the transaction into its failure route, so `ds_next_dst` there takes
//! the next destination, even after a reload (it works on URIs).

pub mod algo;
pub mod health;
pub mod list;
pub mod probe;
pub mod sets;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Instant;

use kemibox_sip::Uri;

use self::algo::{Keys, NoSelection};
use self::list::flags::{DISABLED, INACTIVE, PROBING, TRYING};
use self::sets::{Destination, FLAG_FAILOVER, FLAG_HASH_USER, Set};
use super::kemi;
use crate::bindings::kemibox::ksr::dispatcher::Host;
use crate::{AppendedBranch, Ctx, Message, PvValue, Transport};

/// The AVPs of a selection (see the module docs).
pub const AVP_URI: &str = "_dsdst_uri";
pub const AVP_GRP: &str = "_dsdst_grp";
pub const AVP_ATTRS: &str = "_dsdst_attrs";
pub const AVP_DSTID: &str = "_dsdst_dstid";
pub const AVP_SOCK: &str = "_dsdst_sock";
pub const AVP_CNT: &str = "_dsctx_cnt";
const LIST_AVPS: [&str; 5] = [AVP_URI, AVP_GRP, AVP_ATTRS, AVP_DSTID, AVP_SOCK];

/// Where a selection's first destination goes (Kamailio's DS_SETOP_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetOp {
    /// `$du`.
    DstUri,
    /// The R-URI's host and port.
    Ruri,
    /// Only the failover list.
    ListOnly,
}

/// A destination as a selection keeps it.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    uri: String,
    grp: i32,
    attrs: String,
    dstid: String,
    sock: String,
}

impl Entry {
    fn of(d: &Destination) -> Entry {
        Entry {
            uri: d.uri.clone(),
            grp: d.setid,
            attrs: d.attrs.body.clone(),
            dstid: d.attrs.duid.clone().unwrap_or_default(),
            sock: d.attrs.socket.clone().unwrap_or_default(),
        }
    }
}

/// The selection in `m`'s AVPs, current first.
fn entries(m: &Message) -> Vec<Entry> {
    let column = |name: &str| m.avps.get(name).cloned().unwrap_or_default();
    let (uris, grps, attrs, dstids, socks) = (
        column(AVP_URI),
        column(AVP_GRP),
        column(AVP_ATTRS),
        column(AVP_DSTID),
        column(AVP_SOCK),
    );
    let text = |v: &[PvValue], i: usize| v.get(i).map(PvValue::as_text).unwrap_or_default();
    (0..uris.len())
        .map(|i| Entry {
            uri: text(&uris, i),
            grp: match grps.get(i) {
                Some(PvValue::Int(g)) => *g,
                Some(PvValue::Str(s)) => s.parse().unwrap_or(-1),
                None => -1,
            },
            attrs: text(&attrs, i),
            dstid: text(&dstids, i),
            sock: text(&socks, i),
        })
        .collect()
}

/// Replace the selection in `m`'s AVPs.
fn store(m: &mut Message, list: &[Entry], cnt: Option<usize>) {
    for name in LIST_AVPS {
        m.avps.remove(name);
    }
    if list.is_empty() {
        return;
    }
    let s = |f: fn(&Entry) -> String| list.iter().map(|e| PvValue::Str(f(e))).collect();
    m.avps.insert(AVP_URI.into(), s(|e| e.uri.clone()));
    m.avps.insert(
        AVP_GRP.into(),
        list.iter().map(|e| PvValue::Int(e.grp)).collect(),
    );
    m.avps.insert(AVP_ATTRS.into(), s(|e| e.attrs.clone()));
    m.avps.insert(AVP_DSTID.into(), s(|e| e.dstid.clone()));
    m.avps.insert(AVP_SOCK.into(), s(|e| e.sock.clone()));
    if let Some(cnt) = cnt {
        let cnt = i32::try_from(cnt).unwrap_or(i32::MAX);
        m.avps.insert(AVP_CNT.into(), vec![PvValue::Int(cnt)]);
    }
}

/// A URI's hashing key: user and host (and a port other than 5060/5061),
/// or the user only with `flags` 1.
fn uri_key(uri: Option<&str>, user_only: bool) -> String {
    let Some(u) = uri.and_then(|u| Uri::parse(u).ok()) else {
        return String::new();
    };
    let user = u.user.unwrap_or_default();
    if user_only {
        return user.to_string();
    }
    match u.port.filter(|p| *p != 5060 && *p != 5061) {
        Some(p) => format!("{user}@{}:{p}", u.host.to_ascii_lowercase()),
        None => format!("{user}@{}", u.host.to_ascii_lowercase()),
    }
}

/// The username of the request's credentials.
fn auth_user(m: &Message) -> Option<String> {
    let header = m
        .sip
        .header("Proxy-Authorization")
        .or_else(|| m.sip.header("Authorization"))?;
    let at = header.find("username=")? + "username=".len();
    let rest = header[at..].trim_start();
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split([',', ' ']).next()?,
    };
    Some(value.to_string()).filter(|v| !v.is_empty())
}

/// A socket attribute, `proto:ip:port`, as a transport and address.
fn socket_of(text: &str) -> Option<(Transport, SocketAddr)> {
    let (proto, addr) = text.split_once(':')?;
    let transport = match proto.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        _ => return None,
    };
    Some((transport, addr.parse().ok()?))
}

/// `ds_mark_dst_state`'s letters as state bits (also `dispatcher.set_state`'s).
pub fn parse_state(text: &str) -> Option<u32> {
    let mut chars = text.chars();
    let mut state = match chars.next()? {
        'a' | 'A' | '1' => 0,
        'i' | 'I' | '0' => INACTIVE,
        'd' | 'D' | '2' => DISABLED,
        't' | 'T' | '3' => TRYING,
        _ => return None,
    };
    match chars.next() {
        None => {}
        Some('p' | 'P') if state != DISABLED => state |= PROBING,
        Some(_) => return None,
    }
    chars.next().is_none().then_some(state)
}

impl Ctx {
    async fn ds_keys(&self, alg: i32) -> Keys {
        let pvar = match (alg == 7)
            .then(|| self.state.dispatcher.settings.hash_pvar.clone())
            .flatten()
        {
            Some(p) => Some(self.pv_format(&p).await),
            None => None,
        };
        let Some(m) = self.message.as_ref() else {
            return Keys::default();
        };
        let user_only = self.state.dispatcher.settings.flags & FLAG_HASH_USER != 0;
        let from = m.sip.from();
        let to = m.sip.to();
        Keys {
            callid: m.sip.call_id().unwrap_or_default().to_string(),
            from: uri_key(from.as_ref().map(|f| f.uri), user_only),
            to: uri_key(to.as_ref().map(|t| t.uri), user_only),
            ruri: uri_key(m.ruri().as_deref(), user_only),
            auth_user: auth_user(m),
            pvar,
            is_invite: m.sip.method_str() == "INVITE",
        }
    }

    /// Put destination `e` where `op` says. False when `$du` is set and
    /// `force_dst` is off, or the R-URI cannot take the host.
    fn ds_apply(&mut self, function: &str, e: &Entry, op: SetOp) -> bool {
        let Some(m) = self.message.as_ref() else {
            return false;
        };
        match op {
            SetOp::ListOnly => return true,
            SetOp::DstUri => {
                if m.dst_uri.is_some() && !self.state.dispatcher.settings.force_dst {
                    return false;
                }
                if !self.set_dst_uri(function, Some(e.uri.clone())) {
                    return false;
                }
            }
            SetOp::Ruri => {
                let Some(ruri) = m.ruri() else { return false };
                let Ok(dest) = Uri::parse(&e.uri) else {
                    return false;
                };
                let new = match Uri::parse(&ruri) {
                    Ok(r) => r.with_host(dest.host).with_port(dest.port).to_string(),
                    Err(_) => return false,
                };
                if !self.set_ruri(function, new) {
                    return false;
                }
            }
        }
        if let Some(sock) = socket_of(&e.sock).filter(|(_, a)| self.myself.addresses.contains(a))
            && let Some(m) = self.message.as_mut()
        {
            m.send_socket = Some(sock);
        }
        true
    }

    /// The selection functions: rules of (set, algorithm), the first
    /// destination placed by `op`, at most `limit` kept (<= 0: no limit).
    async fn ds_select_rules(
        &mut self,
        function: &str,
        rules: &[(i32, i32)],
        limit: i32,
        op: SetOp,
    ) -> i32 {
        if self.message.is_none() {
            return -1;
        }
        let limit = usize::try_from(limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let ds_flags = self.state.dispatcher.settings.flags;
        let sets = self.state.dispatcher.sets();
        let now = Instant::now();
        let mut list: Vec<Entry> = Vec::new();
        let mut parallel: Vec<Entry> = Vec::new();
        for &(setid, alg) in rules {
            let Some(set) = sets.sets.get(&setid) else {
                self.script_error(function, format!("no destination set {setid}"));
                continue;
            };
            let keys = self.ds_keys(alg).await;
            let chosen = if alg == 10 && keys.is_invite {
                if self.state.dispatcher.settings.hash_size == 0 {
                    self.script_error(function, "algorithm 10 needs ds_hash_size above 0");
                    continue;
                }
                self.state
                    .dispatcher
                    .choose_by_load(set, &keys, &keys.callid, now)
            } else {
                self.state
                    .dispatcher
                    .with_loads(|l| algo::choose(set, alg, &keys, l))
            };
            let first = match chosen {
                Ok(i) => i,
                Err(NoSelection::Misconfigured(why)) => {
                    self.script_error(function, why);
                    continue;
                }
                Err(NoSelection::NoneActive) => continue,
            };
            set.dests[first].selected.fetch_add(1, Ordering::Relaxed);
            if alg == 12 {
                let order = algo::failover_order(set, first, usize::MAX);
                list.push(Entry::of(&set.dests[first]));
                parallel.extend(order[1..].iter().map(|&i| Entry::of(&set.dests[i])));
                continue;
            }
            let keep = if ds_flags & FLAG_FAILOVER != 0 {
                limit
            } else {
                1
            };
            list.extend(
                algo::failover_order(set, first, keep)
                    .into_iter()
                    .map(|i| Entry::of(&set.dests[i])),
            );
        }
        list.truncate(limit);
        let Some(first) = list.first().cloned() else {
            return -1;
        };
        if !self.ds_apply(function, &first, op) {
            return -1;
        }
        let cnt = list.len() + parallel.len();
        if let Some(m) = self.message.as_mut() {
            store(m, &list, Some(cnt));
        }
        for e in parallel {
            if !self.ds_add_branch(&e, op) {
                break;
            }
        }
        1
    }

    /// Algorithm 12: one more branch to `e`.
    fn ds_add_branch(&mut self, e: &Entry, op: SetOp) -> bool {
        let Some(m) = self.message.as_ref() else {
            return false;
        };
        let Some(ruri) = m.ruri() else { return false };
        let branch = match op {
            SetOp::Ruri => {
                let Ok(dest) = Uri::parse(&e.uri) else {
                    return false;
                };
                let Ok(r) = Uri::parse(&ruri) else {
                    return false;
                };
                AppendedBranch {
                    uri: r.with_host(dest.host).with_port(dest.port).to_string(),
                    dst_uri: None,
                    q: None,
                    path: Vec::new(),
                }
            }
            SetOp::DstUri | SetOp::ListOnly => AppendedBranch {
                uri: ruri,
                dst_uri: Some(e.uri.clone()),
                q: None,
                path: Vec::new(),
            },
        };
        self.append(branch) == 1
    }

    async fn ds_choose(
        &mut self,
        function: &str,
        set: i32,
        alg: i32,
        limit: i32,
        op: SetOp,
    ) -> i32 {
        self.ds_select_rules(function, &[(set, alg)], limit, op)
            .await
    }

    async fn ds_routes(&mut self, rules: &str, mode: &str, limit: i32) -> i32 {
        let function = "KSR.dispatcher.ds_select_routes";
        let op = match mode.chars().next() {
            Some('0' | 'd' | 'D') => SetOp::DstUri,
            Some('1' | 'r' | 'R') => SetOp::Ruri,
            Some('2' | 'x' | 'X') => SetOp::ListOnly,
            _ => {
                self.script_error(
                    function,
                    format!("mode {mode:?}: use d(st), r(uri) or x(avp)"),
                );
                return -1;
            }
        };
        let mut parsed = Vec::new();
        for rule in rules.split(';').map(str::trim).filter(|r| !r.is_empty()) {
            let pair = rule
                .split_once('=')
                .and_then(|(s, a)| Some((s.trim().parse().ok()?, a.trim().parse().ok()?)));
            match pair {
                Some(p) => parsed.push(p),
                None => {
                    self.script_error(function, format!("rule {rule:?} is not set=algorithm"));
                    return -1;
                }
            }
        }
        if parsed.is_empty() {
            self.script_error(function, "no set=algorithm rules");
            return -1;
        }
        self.ds_select_rules(function, &parsed, limit, op).await
    }

    /// `ds_next_*` (drop the current first) and `ds_set_*`.
    fn ds_update(&mut self, function: &str, next: bool, op: SetOp) -> i32 {
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        let mut list = entries(m);
        if next && !list.is_empty() {
            list.remove(0);
            store(m, &list, None);
        }
        let Some(e) = list.first().cloned() else {
            return -1;
        };
        let callid = m.sip.call_id().unwrap_or_default().to_string();
        if next && !e.dstid.is_empty() {
            self.state
                .dispatcher
                .load_replace(&callid, e.grp, &e.dstid, Instant::now());
        }
        kemi(self.ds_apply(function, &e, op))
    }

    fn ds_mark(&mut self, function: &str, state: u32) -> i32 {
        let Some(e) = self
            .message
            .as_ref()
            .and_then(|m| entries(m).into_iter().next())
        else {
            return -1;
        };
        let sets = self.state.dispatcher.sets();
        match sets.find(e.grp, &e.uri) {
            Some(d) => {
                let after = d.update(state, self.state.dispatcher.settings.thresholds);
                tracing::info!(
                    tenant = self.tenant.as_str(),
                    setid = e.grp,
                    uri = e.uri,
                    state = after.letters(),
                    "{function}"
                );
                1
            }
            None => -1,
        }
    }

    /// `ds_is_from_list*`: `uri` empty for the request's source.
    fn ds_from(&mut self, function: &str, group: i32, mode: i32, uri: &str) -> i32 {
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let (ip, port, proto): (IpAddr, u16, String) = if uri.is_empty() {
            (
                m.source.ip(),
                m.source.port(),
                m.transport.as_str().to_string(),
            )
        } else {
            let parsed = Uri::parse(uri).ok().and_then(|u| {
                let host = u.host.trim_start_matches('[').trim_end_matches(']');
                let proto = match u.param("transport") {
                    Some(Some(t)) => t.to_ascii_lowercase(),
                    _ => "udp".into(),
                };
                Some((host.parse::<IpAddr>().ok()?, u.port.unwrap_or(0), proto))
            });
            match parsed {
                Some(p) => p,
                None => {
                    self.script_error(
                        function,
                        format!("{uri:?} is not a SIP URI with an IP address"),
                    );
                    return -1;
                }
            }
        };
        let sets = self.state.dispatcher.sets();
        let found = sets
            .sets
            .values()
            .filter(|s| group == -1 || s.id == group)
            .flat_map(|s: &Set| s.dests.iter())
            .find(|d| {
                d.addrs.contains(&ip)
                    && (mode & 1 != 0 || d.port == 0 || d.port == port)
                    && (mode & 2 != 0 || d.proto == proto)
                    && (mode & 4 == 0 || !d.skipped())
            })
            .cloned();
        let Some(d) = found else { return -1 };
        let settings = &self.state.dispatcher.settings;
        let outputs = [
            (settings.setid_pvname.clone(), PvValue::Int(d.setid)),
            (
                settings.attrs_pvname.clone(),
                PvValue::Str(d.attrs.body.clone()),
            ),
        ];
        for (name, value) in outputs {
            if let Some(name) = name
                && self.pv_write(&name, Some(value)).is_err()
            {
                self.script_error_now(function, format!("cannot set {name}"));
            }
        }
        1
    }
}

const IGNORE_PORT_PROTO: i32 = 2;

impl Host for Ctx {
    async fn ds_select_dst(&mut self, set: i32, alg: i32) -> i32 {
        self.ds_choose("KSR.dispatcher.ds_select_dst", set, alg, 0, SetOp::DstUri)
            .await
    }
    async fn ds_select_dst_limit(&mut self, set: i32, alg: i32, limit: i32) -> i32 {
        self.ds_choose(
            "KSR.dispatcher.ds_select_dst_limit",
            set,
            alg,
            limit,
            SetOp::DstUri,
        )
        .await
    }
    async fn ds_select_domain(&mut self, set: i32, alg: i32) -> i32 {
        self.ds_choose("KSR.dispatcher.ds_select_domain", set, alg, 0, SetOp::Ruri)
            .await
    }
    async fn ds_select_domain_limit(&mut self, set: i32, alg: i32, limit: i32) -> i32 {
        self.ds_choose(
            "KSR.dispatcher.ds_select_domain_limit",
            set,
            alg,
            limit,
            SetOp::Ruri,
        )
        .await
    }
    async fn ds_select(&mut self, set: i32, alg: i32) -> i32 {
        self.ds_choose("KSR.dispatcher.ds_select", set, alg, 0, SetOp::ListOnly)
            .await
    }
    async fn ds_select_limit(&mut self, set: i32, alg: i32, limit: i32) -> i32 {
        self.ds_choose(
            "KSR.dispatcher.ds_select_limit",
            set,
            alg,
            limit,
            SetOp::ListOnly,
        )
        .await
    }
    async fn ds_select_routes(&mut self, rules: String, mode: String) -> i32 {
        self.ds_routes(&rules, &mode, 0).await
    }
    async fn ds_select_routes_limit(&mut self, rules: String, mode: String, limit: i32) -> i32 {
        self.ds_routes(&rules, &mode, limit).await
    }
    async fn ds_next_dst(&mut self) -> i32 {
        self.ds_update("KSR.dispatcher.ds_next_dst", true, SetOp::DstUri)
    }
    async fn ds_next_domain(&mut self) -> i32 {
        self.ds_update("KSR.dispatcher.ds_next_domain", true, SetOp::Ruri)
    }
    async fn ds_set_dst(&mut self) -> i32 {
        self.ds_update("KSR.dispatcher.ds_set_dst", false, SetOp::DstUri)
    }
    async fn ds_set_domain(&mut self) -> i32 {
        self.ds_update("KSR.dispatcher.ds_set_domain", false, SetOp::Ruri)
    }
    async fn ds_mark_dst(&mut self) -> i32 {
        let mut state = INACTIVE;
        if self.state.dispatcher.settings.probing_mode == health::ProbingMode::All {
            state |= PROBING;
        }
        self.ds_mark("KSR.dispatcher.ds_mark_dst", state)
    }
    async fn ds_mark_dst_state(&mut self, state: String) -> i32 {
        let function = "KSR.dispatcher.ds_mark_dst_state";
        match parse_state(&state) {
            Some(s) => self.ds_mark(function, s),
            None => {
                self.script_error(
                    function,
                    format!("state {state:?}: use a, i, t or d, optionally followed by p"),
                );
                -1
            }
        }
    }
    async fn ds_is_from_lists(&mut self) -> i32 {
        self.ds_from("KSR.dispatcher.ds_is_from_lists", -1, IGNORE_PORT_PROTO, "")
    }
    async fn ds_is_from_list(&mut self, group: i32) -> i32 {
        self.ds_from(
            "KSR.dispatcher.ds_is_from_list",
            group,
            IGNORE_PORT_PROTO,
            "",
        )
    }
    async fn ds_is_from_list_mode(&mut self, group: i32, mode: i32) -> i32 {
        self.ds_from("KSR.dispatcher.ds_is_from_list_mode", group, mode, "")
    }
    async fn ds_is_from_list_uri(&mut self, group: i32, mode: i32, uri: String) -> i32 {
        self.ds_from("KSR.dispatcher.ds_is_from_list_uri", group, mode, &uri)
    }
    async fn ds_is_active(&mut self, set: i32) -> i32 {
        let sets = self.state.dispatcher.sets();
        kemi(
            sets.sets
                .get(&set)
                .is_some_and(|s| s.dests.iter().any(|d| !d.skipped())),
        )
    }
    async fn ds_is_active_uri(&mut self, set: i32, uri: String) -> i32 {
        let sets = self.state.dispatcher.sets();
        kemi(sets.find(set, &uri).is_some_and(|d| !d.skipped()))
    }
    async fn ds_list_exists(&mut self, set: i32) -> i32 {
        kemi(self.state.dispatcher.sets().sets.contains_key(&set))
    }
    async fn ds_reload(&mut self) -> i32 {
        let state = self.state.clone();
        match state.dispatcher.reload(self.tenant.as_str()).await {
            Ok(n) => {
                tracing::info!(
                    tenant = self.tenant.as_str(),
                    destinations = n,
                    "dispatcher reloaded"
                );
                1
            }
            Err(e) => {
                self.script_error("KSR.dispatcher.ds_reload", e);
                -1
            }
        }
    }
    async fn ds_load_update(&mut self) -> i32 {
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let callid = m.sip.call_id().unwrap_or_default().to_string();
        let ds = &self.state.dispatcher;
        if m.sip.is_request() {
            return match m.sip.method_str() {
                "BYE" | "CANCEL" => kemi(ds.load_remove(&callid)),
                _ => 1,
            };
        }
        let invite = m.sip.cseq().is_some_and(|(_, method)| method == "INVITE");
        let ok = m.sip.status().is_some_and(|s| (200..300).contains(&s));
        if invite && ok {
            return kemi(ds.load_confirm(&callid, Instant::now()));
        }
        1
    }
    async fn ds_load_unset(&mut self) -> i32 {
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let callid = m.sip.call_id().unwrap_or_default().to_string();
        kemi(self.state.dispatcher.load_remove(&callid))
    }
}

#[cfg(test)]
mod tests;
