//! `save` / `save_uri`: a REGISTER's Contacts become bindings of its AOR
//! (RFC 3261 section 10.3), with Path (RFC 3327), `+sip.instance` and
//! `reg-id` (RFC 5626), public GRUUs in the reply (RFC 5627) and the
//! address the REGISTER came from when the Contact does not match it.

use std::net::{IpAddr, SocketAddr};

use kemibox_sip::{Contacts, NameAddr, Uri};
use kemibox_store::{Binding, StoreError};

use super::{
    SAVE_MEMORY_ONLY, SAVE_NO_REPLY, SAVE_REPLACE_ALL, aor_of, instance_urn, parse_q, q_text,
    unix_now,
};
use crate::modules::nathelper::{is_private, source_uri};
use crate::services::RegistrarSettings;
use crate::{Ctx, Level, Message, Transport};

/// A REGISTER the registrar refuses: the reply it gets and, for the
/// script's log, why.
struct Refusal {
    code: i32,
    reason: &'static str,
    headers: Vec<String>,
    why: String,
}

impl Refusal {
    fn bad(reason: &'static str, why: impl Into<String>) -> Refusal {
        Refusal {
            code: 400,
            reason,
            headers: Vec::new(),
            why: why.into(),
        }
    }
}

/// What a REGISTER asks for, read from the message before the store is
/// consulted.
struct Register {
    aor: String,
    /// The AOR as a URI (`sip:alice@example.com`), for public GRUUs.
    aor_uri: String,
    request: Request,
    /// The REGISTER's Path entries, echoed in the 200 OK.
    path: Vec<String>,
    /// The UA supports GRUU (`Supported: gruu`): the reply carries
    /// `pub-gruu` for contacts with an instance.
    gruu: bool,
}

enum Request {
    /// No Contact: only list the bindings.
    List,
    /// `Contact: *` with `Expires: 0`: remove every binding.
    RemoveAll { call_id: String, cseq: u32 },
    /// These contacts, each a binding to add, refresh or (expires 0)
    /// remove.
    Contacts(Vec<Wanted>),
}

/// One Contact of the REGISTER as the binding it asks for.
struct Wanted {
    binding: Binding,
    /// `expires=0`: remove the binding.
    remove: bool,
}

/// What a REGISTER did, for save's return value.
#[derive(Default)]
struct Outcome {
    added: bool,
    updated: bool,
    removed: bool,
}

impl Outcome {
    /// 1 added, 2 updated (or refreshed, or a stale repeat left alone),
    /// 3 removed, 4 nothing asked for but the listing.
    fn code(&self) -> i32 {
        if self.added {
            1
        } else if self.updated {
            2
        } else if self.removed {
            3
        } else {
            4
        }
    }
}

/// RFC 3261 `delta-seconds`: digits, values past 2^32-1 read as 2^32-1.
fn delta_seconds(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        text.parse::<u64>()
            .map_or(u32::MAX, |v| u32::try_from(v).unwrap_or(u32::MAX)),
    )
}

/// Where the REGISTER came from as a SIP URI, when the UA is behind NAT
/// or the script said so with `KSR.nathelper.fix_nated_register`
/// (`forced`): requests for the binding go there instead (Kamailio's
/// `received`, as `fix_nated_register` sets it after `nat_uac_test`).
/// Behind NAT means what Kamailio's tests 1, 2 and 16 look for: the
/// Contact is a private address other than the source, or the top Via's
/// sent-by is not the address the request came from. A Contact elsewhere
/// on a public address, sent from where its Via says, is taken as meant
/// (a UA registering its other port, a third-party registration).
fn received(
    contact: &Uri<'_>,
    via: Option<(&str, Option<u16>)>,
    source: SocketAddr,
    transport: Transport,
    forced: bool,
) -> Option<String> {
    let ip_of = |host: &str| {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
    };
    let private_contact = ip_of(contact.host).is_some_and(|ip| ip != source.ip() && is_private(ip));
    let via_elsewhere = via.is_some_and(|(host, port)| {
        ip_of(host) != Some(source.ip()) || port.unwrap_or(5060) != source.port()
    });
    (forced || private_contact || via_elsewhere).then(|| source_uri(source, transport))
}

impl Register {
    /// Read the REGISTER in `m` for the AOR of `uri` (the To URI when
    /// `None`), with expiry rules `settings`, at `now`.
    fn read(
        m: &Message,
        uri: Option<&str>,
        settings: &RegistrarSettings,
        now: u64,
    ) -> Result<Register, Refusal> {
        let sip = &m.sip;
        let to = sip.to();
        let aor_text = match uri {
            Some(u) => u,
            None => to
                .as_ref()
                .map(|t| t.uri)
                .ok_or_else(|| Refusal::bad("Bad To Header", "no usable To header"))?,
        };
        let aor_uri = Uri::parse(aor_text)
            .ok()
            .filter(|u| aor_of(u).is_some())
            .ok_or_else(|| Refusal::bad("Bad AOR", format!("no AOR in {aor_text:?}")))?;
        let aor = aor_of(&aor_uri).unwrap_or_default();
        let aor_uri = format!("{}:{aor}", aor_uri.scheme.to_ascii_lowercase());
        let call_id = sip
            .call_id()
            .ok_or_else(|| Refusal::bad("Missing Call-ID", "no Call-ID"))?
            .to_string();
        let cseq = sip
            .cseq()
            .ok_or_else(|| Refusal::bad("Bad CSeq", "no valid CSeq"))?
            .0;
        let header_expires = sip.header("Expires").and_then(delta_seconds);
        let path: Vec<String> = sip.header_elements("Path").map(str::to_string).collect();
        let top_via = sip.top_via();
        let via = top_via.as_ref().map(|v| (v.host, v.port));
        if let Some(bad) = path.iter().find(|p| NameAddr::parse(p).is_err()) {
            return Err(Refusal::bad("Bad Path", format!("invalid Path {bad:?}")));
        }
        let gruu = sip
            .header_elements("Supported")
            .any(|o| o.eq_ignore_ascii_case("gruu"));
        let request = match sip.contacts() {
            Err(e) => return Err(Refusal::bad("Invalid Contact", format!("Contact: {e}"))),
            Ok(Contacts::Star) if header_expires != Some(0) => {
                return Err(Refusal::bad(
                    "Invalid Contact",
                    "Contact: * needs Expires: 0",
                ));
            }
            Ok(Contacts::Star) => Request::RemoveAll { call_id, cseq },
            Ok(Contacts::List(list)) if list.is_empty() => Request::List,
            Ok(Contacts::List(list)) => {
                let mut wanted = Vec::with_capacity(list.len());
                for c in &list {
                    let expires = c
                        .param("expires")
                        .flatten()
                        .and_then(delta_seconds)
                        .or(header_expires)
                        .unwrap_or(settings.default_expires);
                    let contact = c.parse_uri().map_err(|e| {
                        Refusal::bad("Invalid Contact", format!("Contact {:?}: {e}", c.uri))
                    })?;
                    if expires != 0 && expires < settings.min_expires {
                        return Err(Refusal {
                            code: 423,
                            reason: "Interval Too Brief",
                            headers: vec![format!("Min-Expires: {}", settings.min_expires)],
                            why: format!(
                                "expires {expires} of {:?} is below {}",
                                c.uri, settings.min_expires
                            ),
                        });
                    }
                    let expires = match settings.max_expires {
                        0 => expires,
                        max => expires.min(max),
                    };
                    let q = match c.param("q") {
                        None => None,
                        Some(v) => Some(v.and_then(parse_q).ok_or_else(|| {
                            Refusal::bad("Invalid q Value", format!("q of {:?}", c.uri))
                        })?),
                    };
                    wanted.push(Wanted {
                        remove: expires == 0,
                        binding: Binding {
                            aor: aor.clone(),
                            contact: c.uri.to_string(),
                            expires: now + u64::from(expires),
                            q,
                            call_id: call_id.clone(),
                            cseq,
                            path: path.clone(),
                            received: received(
                                &contact,
                                via,
                                m.source,
                                m.transport,
                                m.force_received,
                            ),
                            socket: Some(format!("{}:{}", m.transport.as_str(), m.local)),
                            instance: c.param("+sip.instance").flatten().map(str::to_string),
                            reg_id: c.param("reg-id").flatten().and_then(|r| r.parse().ok()),
                            user_agent: sip.user_agent().map(str::to_string),
                            updated: now,
                        },
                    });
                }
                Request::Contacts(wanted)
            }
        };
        Ok(Register {
            aor,
            aor_uri,
            request,
            path,
            gruu,
        })
    }

    /// The 200 OK's `Contact:` line for `b` (RFC 3261 10.3 step 8: every
    /// current binding with its remaining expiry).
    fn contact_line(&self, b: &Binding, now: u64) -> String {
        let mut line = format!("Contact: <{}>;expires={}", b.contact, b.remaining(now));
        if let Some(q) = b.q {
            line += &format!(";q={}", q_text(q));
        }
        if let Some(instance) = &b.instance {
            line += &format!(";+sip.instance={instance}");
            if self.gruu {
                line += &format!(
                    ";pub-gruu=\"{};gr={}\"",
                    self.aor_uri,
                    instance_urn(instance)
                );
            }
        }
        if let Some(reg_id) = b.reg_id {
            line += &format!(";reg-id={reg_id}");
        }
        line
    }
}

/// The store changes a REGISTER makes, and the bindings left afterwards.
#[derive(Default)]
struct Plan {
    remove: Vec<Binding>,
    save: Vec<Binding>,
    after: Vec<Binding>,
    outcome: Outcome,
}

/// RFC 3261 10.3 step 7: a binding saved from the same Call-ID with this
/// or a higher CSeq is not changed by this (repeated or reordered)
/// request.
fn is_stale(existing: &Binding, call_id: &str, cseq: u32) -> bool {
    existing.call_id == call_id && cseq <= existing.cseq
}

impl Plan {
    /// What `request` does to the AOR's `existing` (unexpired) bindings;
    /// with `replace_all` every binding the request does not name goes.
    fn new(request: &Request, existing: &[Binding], replace_all: bool) -> Plan {
        let mut plan = Plan::default();
        match request {
            Request::List => plan.after = existing.to_vec(),
            Request::RemoveAll { call_id, cseq } => {
                plan.outcome.removed = true;
                for b in existing {
                    if is_stale(b, call_id, *cseq) {
                        plan.after.push(b.clone());
                    } else {
                        plan.remove.push(b.clone());
                    }
                }
            }
            Request::Contacts(wanted) => {
                // Bindings the request leaves as they are (stale repeats).
                let mut kept: Vec<Binding> = Vec::new();
                for w in wanted {
                    let new = &w.binding;
                    let old = existing.iter().find(|e| e.same_as(new));
                    if let Some(old) = old.filter(|o| is_stale(o, &new.call_id, new.cseq)) {
                        if w.remove {
                            plan.outcome.removed = true;
                        } else {
                            plan.outcome.updated = true;
                        }
                        if !kept.iter().any(|k| k.same_as(old)) {
                            kept.push(old.clone());
                        }
                        continue;
                    }
                    // A contact given twice: the later one wins.
                    plan.save.retain(|s| !s.same_as(new));
                    plan.remove.retain(|r| !r.same_as(new));
                    match (old, w.remove) {
                        (Some(old), true) => {
                            plan.outcome.removed = true;
                            plan.remove.push(old.clone());
                        }
                        (None, true) => plan.outcome.removed = true,
                        (Some(_), false) => {
                            plan.outcome.updated = true;
                            plan.save.push(new.clone());
                        }
                        (None, false) => {
                            plan.outcome.added = true;
                            plan.save.push(new.clone());
                        }
                    }
                }
                for e in existing {
                    let named = plan.save.iter().chain(&plan.remove).chain(&kept);
                    let named = named.into_iter().any(|n| n.same_as(e));
                    if named {
                        continue;
                    }
                    if replace_all {
                        plan.outcome.removed = true;
                        plan.remove.push(e.clone());
                    } else {
                        plan.after.push(e.clone());
                    }
                }
                plan.after.extend(kept);
                plan.after.extend(plan.save.iter().cloned());
            }
        }
        plan.after.sort_by(Binding::priority_cmp);
        plan
    }
}

impl Ctx {
    /// `save` and `save_uri` (`uri`: the AOR's URI instead of the To URI).
    pub(super) async fn registrar_save(
        &mut self,
        function: &str,
        table: String,
        flags: i32,
        uri: Option<String>,
    ) -> i32 {
        let Some(m) = self.message.as_ref().filter(|m| m.sip.is_request()) else {
            return -1;
        };
        let reply = flags & SAVE_NO_REPLY == 0;
        let now = unix_now();
        let settings = self.services.registrar;
        let register = match Register::read(m, uri.as_deref(), &settings, now) {
            Ok(r) => r,
            Err(refusal) => {
                self.log(Level::Warn, &format!("{function}: {}", refusal.why));
                if reply {
                    self.reply_with(function, refusal.code, refusal.reason, refusal.headers);
                }
                return -1;
            }
        };
        let store = self.services.location.clone();
        let tenant = self.tenant.clone();
        let existing = match store
            .lookup(tenant.as_str(), &table, &register.aor, now)
            .await
        {
            Ok(b) => b,
            Err(e) => return self.store_failed(function, &table, &register.aor, e, reply),
        };
        let plan = Plan::new(&register.request, &existing, flags & SAVE_REPLACE_ALL != 0);
        let max = self.services.registrar.max_contacts;
        if max != 0 && plan.outcome.added && plan.after.len() > max as usize {
            self.log(
                Level::Warn,
                &format!(
                    "{function}: {} would have {} contacts, at most {max} allowed",
                    register.aor,
                    plan.after.len()
                ),
            );
            if reply {
                self.reply_with(function, 503, "Too many registered contacts", Vec::new());
            }
            return -1;
        }
        let applied = async {
            for b in &plan.remove {
                store
                    .remove(tenant.as_str(), &table, &b.aor, &b.contact)
                    .await?;
            }
            for b in &plan.save {
                if flags & SAVE_MEMORY_ONLY != 0 {
                    store.save_in_memory(tenant.as_str(), &table, b).await?;
                } else {
                    store.save(tenant.as_str(), &table, b).await?;
                }
            }
            Ok::<(), StoreError>(())
        };
        if let Err(e) = applied.await {
            return self.store_failed(function, &table, &register.aor, e, reply);
        }
        if reply {
            let mut headers = Vec::new();
            if !register.path.is_empty() {
                headers.push(format!("Path: {}", register.path.join(", ")));
            }
            headers.extend(plan.after.iter().map(|b| register.contact_line(b, now)));
            self.reply_with(function, 200, "OK", headers);
        }
        plan.outcome.code()
    }

    /// A location store error during save: logged with the tenant, table
    /// and AOR, answered 500 (unless the script asked for no reply), -1.
    fn store_failed(
        &mut self,
        function: &str,
        table: &str,
        aor: &str,
        e: StoreError,
        reply: bool,
    ) -> i32 {
        self.log(
            Level::Err,
            &format!("{function}: location store failed for {aor} in table {table}: {e}"),
        );
        if reply {
            self.reply_with(function, 500, "Server Internal Error", Vec::new());
        }
        -1
    }

    /// Queue a reply with `headers` besides those the script added with
    /// `append_to_reply`; they do not stay for later replies.
    fn reply_with(&mut self, function: &str, code: i32, reason: &str, headers: Vec<String>) {
        let Some(m) = self.message.as_mut() else {
            return;
        };
        let saved = m.reply_headers.clone();
        m.reply_headers.extend(headers);
        self.internal_reply(function, code, reason.to_string());
        if let Some(m) = self.message.as_mut() {
            m.reply_headers = saved;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kemibox_sip::SipMessage;

    /// `text` as received from 192.0.2.7:5070 over UDP.
    fn register_of(text: &str) -> Message {
        let sip = SipMessage::parse(text.as_bytes().to_vec()).expect("parses");
        Message::new(
            sip,
            "192.0.2.7:5070".parse().expect("addr"),
            "192.0.2.1:5060".parse().expect("addr"),
            Transport::Udp,
        )
    }

    fn settings() -> RegistrarSettings {
        RegistrarSettings {
            default_expires: 3600,
            min_expires: 60,
            max_expires: 7200,
            max_contacts: 0,
        }
    }

    fn read(extra: &str) -> Result<Register, Refusal> {
        let text = format!(
            "REGISTER sip:example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK1\r\n\
             From: <sip:alice@example.com>;tag=1\r\n\
             To: <sip:alice@EXAMPLE.com:5060>\r\n\
             Call-ID: c1\r\nCSeq: 7 REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Register::read(&register_of(&text), None, &settings(), 1000)
    }

    fn contacts(r: &Register) -> &[Wanted] {
        match &r.request {
            Request::Contacts(w) => w,
            _ => panic!("not a contact list"),
        }
    }

    #[test]
    fn expiry_comes_from_param_then_header_then_default_and_is_capped() {
        let r = read(
            "Contact: <sip:a@192.0.2.7:5070>;expires=120, <sip:b@192.0.2.7:5070>\r\n\
             Contact: <sip:c@192.0.2.7:5070>;expires=99999999999;q=0.5\r\nExpires: 300\r\n",
        )
        .ok()
        .unwrap();
        assert_eq!(r.aor, "alice@example.com");
        assert_eq!(r.aor_uri, "sip:alice@example.com");
        let w = contacts(&r);
        let expires: Vec<u64> = w.iter().map(|w| w.binding.expires).collect();
        assert_eq!(expires, [1120, 1300, 8200]);
        assert_eq!(w[2].binding.q, Some(500));
        assert_eq!(w[0].binding.received, None);
        assert_eq!(w[0].binding.socket.as_deref(), Some("udp:192.0.2.1:5060"));
        let r = read("Contact: <sip:a@192.0.2.7:5070>\r\n").ok().unwrap();
        assert_eq!(contacts(&r)[0].binding.expires, 4600);
    }

    #[test]
    fn refusals() {
        let code = |extra: &str| read(extra).err().map(|r| (r.code, r.headers));
        assert_eq!(
            code("Contact: <sip:a@h>;expires=30\r\n"),
            Some((423, vec!["Min-Expires: 60".to_string()]))
        );
        assert_eq!(code("Contact: *\r\n"), Some((400, vec![])));
        assert_eq!(code("Contact: *\r\nExpires: 5\r\n"), Some((400, vec![])));
        assert_eq!(
            code("Contact: *, <sip:a@h>\r\nExpires: 0\r\n"),
            Some((400, vec![]))
        );
        assert_eq!(code("Contact: <sip:a@h>;q=2\r\n"), Some((400, vec![])));
        assert_eq!(code("Contact: <nonsense>\r\n"), Some((400, vec![])));
        assert!(read("Contact: *\r\nExpires: 0\r\n").is_ok());
        assert!(read("Contact: <sip:a@h>;expires=0\r\n").is_ok());
    }

    #[test]
    fn received_only_when_behind_nat() {
        let src: SocketAddr = "192.0.2.7:5070".parse().unwrap();
        let via = Some(("192.0.2.7", Some(5070)));
        let r = |u: &str, via| received(&Uri::parse(u).unwrap(), via, src, Transport::Tcp, false);
        // Sent from where the Via says, public Contact: as meant.
        assert_eq!(r("sip:a@192.0.2.7:5070", via), None);
        assert_eq!(r("sip:a@198.51.100.1:5090", via), None);
        // A private Contact, or a Via that is not the source: behind NAT.
        let nat = Some("sip:192.0.2.7:5070;transport=tcp");
        assert_eq!(r("sip:a@10.0.0.5:5060", via).as_deref(), nat);
        assert_eq!(r("sip:a@100.64.1.2", via).as_deref(), nat);
        assert_eq!(
            r("sip:a@192.0.2.7:5070", Some(("192.168.1.5", Some(5070)))).as_deref(),
            nat
        );
        assert_eq!(
            r("sip:a@192.0.2.7:5070", Some(("192.0.2.7", None))).as_deref(),
            nat
        );
        // fix_nated_register: the source even for a Contact as meant.
        assert_eq!(
            received(
                &Uri::parse("sip:a@198.51.100.1:5090").unwrap(),
                via,
                src,
                Transport::Tcp,
                true
            )
            .as_deref(),
            nat
        );
        let v6: SocketAddr = "[2001:db8::7]:5070".parse().unwrap();
        let v6_via = Some(("[2001:db8::7]", Some(5070)));
        assert_eq!(
            received(
                &Uri::parse("sip:a@[2001:db8::7]:5070").unwrap(),
                v6_via,
                v6,
                Transport::Udp,
                false
            ),
            None
        );
        assert_eq!(
            received(
                &Uri::parse("sip:a@[fd00::1]").unwrap(),
                v6_via,
                v6,
                Transport::Udp,
                false
            )
            .as_deref(),
            Some("sip:[2001:db8::7]:5070;transport=udp")
        );
    }

    fn binding(contact: &str, call_id: &str, cseq: u32) -> Binding {
        Binding {
            aor: "a@h".into(),
            contact: contact.into(),
            expires: 5000,
            q: None,
            call_id: call_id.into(),
            cseq,
            path: vec![],
            received: None,
            socket: None,
            instance: None,
            reg_id: None,
            user_agent: None,
            updated: 1000,
        }
    }

    #[test]
    fn stale_repeats_change_nothing_and_replace_all_removes_the_rest() {
        let existing = vec![binding("sip:x@h", "c1", 5), binding("sip:y@h", "c2", 1)];
        let want = |contact: &str, cseq: u32, remove: bool| Wanted {
            binding: binding(contact, "c1", cseq),
            remove,
        };
        let plan = Plan::new(
            &Request::Contacts(vec![want("sip:x@h", 5, true)]),
            &existing,
            false,
        );
        assert!(plan.remove.is_empty() && plan.save.is_empty());
        assert_eq!(plan.after.len(), 2);
        let plan = Plan::new(
            &Request::Contacts(vec![want("sip:x@h", 6, false), want("sip:z@h", 6, false)]),
            &existing,
            true,
        );
        assert_eq!(plan.outcome.code(), 1);
        assert_eq!(plan.remove.len(), 1);
        assert_eq!(plan.remove[0].contact, "sip:y@h");
        assert_eq!(plan.after.len(), 2);
        let plan = Plan::new(
            &Request::RemoveAll {
                call_id: "c2".into(),
                cseq: 2,
            },
            &existing,
            false,
        );
        assert_eq!(plan.outcome.code(), 3);
        assert_eq!(plan.remove.len(), 2);
    }
}
