//! `KSR.pv`: reading and writing pseudo-variables.
//!
//! Reads see the message as received, except `$ru`/`$rU`/`$rd`/`$rp` and
//! `$du`, which reflect the script's changes (as in Kamailio). `$var(x)` is
//! per instance and starts at 0; `$avp(x)` is per message, a stack of values
//! (an assignment pushes, reads see the newest).

use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use kemibox_sip::Uri;
use kemibox_store::unix_now;

use crate::bindings::kemibox::ksr::pv::Host;
use crate::bindings::kemibox::ksr::types::Xval;
use crate::htable::{HtError, Matcher, TableRef, Target};
use crate::pv_format::{self, Piece};
use crate::pv_name::{self, PvName};
use crate::{Ctx, Event, Message, PvValue};

/// Why a pseudo-variable could not be read or written.
pub(crate) enum PvError {
    Malformed,
    Unknown,
    ReadOnly,
    /// A `$sht*` name or operation the tenant's tables refuse.
    Htable(String),
    /// A Redis outage already logged for the table: not logged again.
    Repeated(String),
}

impl PvError {
    /// `key {key:?}: ` before what went wrong.
    fn with_key(self, key: &str) -> PvError {
        match self {
            PvError::Htable(why) => PvError::Htable(format!("key {key:?}: {why}")),
            PvError::Repeated(why) => PvError::Repeated(format!("key {key:?}: {why}")),
            other => other,
        }
    }

    fn htable(e: HtError) -> PvError {
        if e.should_log() {
            PvError::Htable(e.to_string())
        } else {
            PvError::Repeated(e.to_string())
        }
    }
}

/// A `$sht*` pseudo-variable that reads or writes a table (not an
/// iterator's `$shtitkey`/`$shtitval`): what may wait on Redis.
fn table_pv(name: &str) -> Option<(&str, &str)> {
    match pv_name::parse(name)? {
        PvName::Named("shtitkey" | "shtitval", _) => None,
        PvName::Named(class, inner) if class.starts_with("sht") => Some((class, inner)),
        _ => None,
    }
}

impl std::fmt::Display for PvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PvError::Malformed => "malformed pseudo-variable name",
            PvError::Unknown => "unknown pseudo-variable",
            PvError::ReadOnly => "pseudo-variable is read-only",
            PvError::Htable(why) | PvError::Repeated(why) => why,
        })
    }
}

fn text(s: impl Into<String>) -> Option<PvValue> {
    Some(PvValue::Str(s.into()))
}

fn int(i: impl TryInto<i32>) -> Option<PvValue> {
    i.try_into().ok().map(PvValue::Int)
}

/// The SIP version of the start line as received (`SIP/2.0`).
fn sip_version(sip: &kemibox_sip::SipMessage) -> String {
    let raw = sip.raw();
    let end = raw
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(raw.len());
    let line = String::from_utf8_lossy(&raw[..end]);
    let version = if sip.is_request() {
        line.rsplit(' ').next()
    } else {
        line.split(' ').next()
    };
    version.unwrap_or_default().to_string()
}

fn uri_part(uri: Option<String>, part: fn(&Uri<'_>) -> Option<PvValue>) -> Option<PvValue> {
    uri.and_then(|u| Uri::parse(&u).ok().as_ref().and_then(part))
}

fn read_message(m: &Message, class: &str) -> Result<Option<PvValue>, PvError> {
    let sip = &m.sip;
    let from = || sip.from();
    let to = || sip.to();
    Ok(match class {
        "ru" => m.ruri().and_then(text),
        "rU" => uri_part(m.ruri(), |u| u.user.and_then(text)),
        "rd" => uri_part(m.ruri(), |u| text(u.host)),
        "rp" => uri_part(m.ruri(), |u| int(u.port.unwrap_or(5060))),
        "rz" => uri_part(m.ruri(), |u| text(u.scheme)),
        "du" => m.dst_uri.clone().and_then(text),
        "dd" => uri_part(m.dst_uri.clone(), |u| {
            Some(u.host).filter(|h| !h.is_empty()).and_then(text)
        }),
        "dp" => uri_part(m.dst_uri.clone(), |u| {
            let tls = u.scheme.eq_ignore_ascii_case("sips")
                || u.param("transport")
                    .flatten()
                    .is_some_and(|t| t.eq_ignore_ascii_case("tls"));
            int(u.port.unwrap_or(if tls { 5061 } else { 5060 }))
        }),
        "dP" => uri_part(m.dst_uri.clone(), |u| {
            text(u.param("transport").flatten().unwrap_or("udp"))
        }),
        "rv" => text(sip_version(sip)),
        "fu" => from().map(|f| f.uri.to_string()).and_then(text),
        "fU" => from().and_then(|f| uri_part(Some(f.uri.to_string()), |u| u.user.and_then(text))),
        "fd" => from().and_then(|f| uri_part(Some(f.uri.to_string()), |u| text(u.host))),
        "fn" => from()
            .and_then(|f| f.display_name.map(|d| d.to_string()))
            .and_then(text),
        "ft" => from()
            .and_then(|f| f.tag().map(str::to_string))
            .and_then(text),
        "tu" => to().map(|t| t.uri.to_string()).and_then(text),
        "tU" => to().and_then(|t| uri_part(Some(t.uri.to_string()), |u| u.user.and_then(text))),
        "td" => to().and_then(|t| uri_part(Some(t.uri.to_string()), |u| text(u.host))),
        "tn" => to()
            .and_then(|t| t.display_name.map(|d| d.to_string()))
            .and_then(text),
        "tt" => to()
            .and_then(|t| t.tag().map(str::to_string))
            .and_then(text),
        "ci" => sip.call_id().and_then(text),
        "cs" => sip.cseq().and_then(|(n, _)| int(n)),
        "rm" => text(sip.method_str()),
        "rs" => sip.status().and_then(int),
        "rr" => sip.reason().and_then(text),
        "si" => text(m.source.ip().to_string()),
        "sp" => int(m.source.port()),
        "Ri" => text(m.local.ip().to_string()),
        "Rp" => int(m.local.port()),
        "pr" | "proto" => text(m.transport.as_str()),
        "ua" => sip.header("User-Agent").and_then(text),
        "ct" => sip.header("Contact").and_then(text),
        "cT" => sip.header("Content-Type").and_then(text),
        "cl" => int(sip.body().len()),
        "rb" => text(String::from_utf8_lossy(sip.body())),
        "ml" => int(sip.raw().len()),
        "mb" => text(String::from_utf8_lossy(sip.raw())),
        "mf" => int(m.flags as i32),
        "bf" => int(m.branch_flags.first().copied().unwrap_or(0) as i32),
        "T_branch_idx" => int(0),
        // The status of the reply being routed (the winning one in a
        // failure route); 0 before any, as Kamailio.
        "T_reply_code" => int(m.tm.status.unwrap_or(0)),
        // The digest credentials (Proxy-Authorization first, as Kamailio):
        // `$au` user part of the username, `$ad` its domain part, `$aU`
        // the whole username, `$ar` the realm.
        "au" | "ad" | "aU" | "ar" => {
            let creds = super::auth::message_credentials(sip);
            creds
                .as_ref()
                .and_then(|c| match class {
                    "au" => c.user(),
                    "ad" => c.domain(),
                    "aU" => c.username.as_deref(),
                    _ => c.realm.as_deref(),
                })
                .and_then(text)
        }
        _ => return Err(PvError::Unknown),
    })
}

/// Apply one transformation (`s.len`, `uri.user`, ...) of a format string;
/// `$null` stays `$null`, an unknown transformation gives `$null`.
fn transform(value: Option<PvValue>, transformation: &str) -> Option<PvValue> {
    let shown = value?.as_text();
    match transformation {
        "s.len" => int(shown.len()),
        "s.int" => {
            let t = shown.trim_start();
            let digits = t
                .char_indices()
                .take_while(|&(i, c)| c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+')))
                .count();
            Some(PvValue::Int(t[..digits].parse().unwrap_or(0)))
        }
        "s.tolower" => Some(PvValue::Str(shown.to_ascii_lowercase())),
        "s.toupper" => Some(PvValue::Str(shown.to_ascii_uppercase())),
        "uri.user" => uri_part(Some(shown), |u| u.user.and_then(text)),
        "uri.host" => uri_part(Some(shown), |u| text(u.host)),
        "uri.port" => uri_part(Some(shown), |u| u.port.map(|p| PvValue::Str(p.to_string()))),
        _ => None,
    }
}

impl Ctx {
    /// Expand the pseudo-variables of a format string (`KSR.xlog`, see
    /// [`crate::pv_format`]) with the same reader as `KSR.pv.get`
    /// ([`Ctx::pv_value`], so a `$sht` of a table in Redis reads Redis):
    /// an unknown, malformed or `$null` one prints as `<null>`.
    pub(crate) async fn pv_format(&self, format: &str) -> String {
        let mut out = String::with_capacity(format.len());
        for piece in pv_format::parse(format) {
            if out.len() >= pv_format::MAX_OUTPUT {
                break;
            }
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Malformed(_) => out.push_str(pv_format::NULL_TEXT),
                Piece::Pv {
                    name,
                    transformations,
                } => {
                    let value = self.pv_value(&name).await.ok().flatten();
                    let value = transformations.iter().fold(value, |v, t| transform(v, t));
                    match value {
                        Some(v) => out.push_str(&v.as_text()),
                        None => out.push_str(pv_format::NULL_TEXT),
                    }
                }
            }
        }
        if out.len() > pv_format::MAX_OUTPUT {
            let mut end = pv_format::MAX_OUTPUT;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
        }
        out
    }

    /// Evaluate a pseudo-variable; `Ok(None)` is `$null`. The one reader
    /// every module goes through (`KSR.pv.get`, format strings, acc's
    /// extra columns): a `$sht*` of a table waits on the table wherever
    /// it lives (memory answers at once, Redis after a round trip), the
    /// others read the message and the instance at once. Boxed: a key may
    /// itself hold pseudo-variables (`$sht(t=>$si)`), read through here.
    pub(crate) fn pv_value<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<PvValue>, PvError>> + Send + 'a>> {
        Box::pin(async move {
            match table_pv(name) {
                Some((class, inner)) => {
                    let (table, key) = self.sht_name(inner).await?;
                    self.sht_read(class, &table, key).await
                }
                None => self.pv_read(name),
            }
        })
    }

    /// Evaluate a pseudo-variable that is not a table's `$sht*` (those
    /// are [`Ctx::pv_value`]'s); `Ok(None)` is `$null`.
    fn pv_read(&self, name: &str) -> Result<Option<PvValue>, PvError> {
        match pv_name::parse(name).ok_or(PvError::Malformed)? {
            PvName::Named("var", v) => {
                Ok(Some(self.vars.get(v).cloned().unwrap_or(PvValue::Int(0))))
            }
            PvName::Named("avp", a) => Ok(self
                .message
                .as_ref()
                .and_then(|m| m.avps.get(a)?.first().cloned())),
            PvName::Named("hdr", h) => Ok(self
                .message
                .as_ref()
                .and_then(|m| m.sip.header(h))
                .and_then(text)),
            PvName::Named("hdrc", h) => Ok(self
                .message
                .as_ref()
                .and_then(|m| int(m.sip.header_count(h)))),
            PvName::Plain("ts" | "Ts") => Ok(int(SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0))),
            PvName::Plain("sf") => Ok(int(self.sflags as i32)),
            // The ids of a suspended transaction (`KSR.tmx.t_suspend`).
            PvName::Named("T", part @ ("id_index" | "id_label")) => Ok(self
                .message
                .as_ref()
                .and_then(|m| m.tm.suspended)
                .and_then(|(index, label)| {
                    int(if part == "id_index" { index } else { label } as i32)
                })),
            // Where the message goes, while `ksr_onsend_route` runs.
            PvName::Named("snd", part) => {
                let Some((transport, to)) = self.message.as_ref().and_then(|m| m.sending_to) else {
                    return Ok(None);
                };
                Ok(match part {
                    "ip" => text(to.ip().to_string()),
                    "port" => int(to.port()),
                    "proto" | "sproto" => text(transport.as_str()),
                    "af" => text(if to.is_ipv4() { "ipv4" } else { "ipv6" }),
                    _ => return Err(PvError::Unknown),
                })
            }
            // `KSR.ipops` lookup results.
            PvName::Named("dns", inner) => self.dns.dns(inner).map_err(|()| PvError::Unknown),
            PvName::Named("srvquery", inner) => self.dns.srv(inner).map_err(|()| PvError::Unknown),
            PvName::Named("naptrquery", inner) => {
                self.dns.naptr(inner).map_err(|()| PvError::Unknown)
            }
            PvName::Named(class @ ("shtitkey" | "shtitval"), iterator) => {
                Ok(self.ht_iterator_item(iterator).map(|item| match class {
                    "shtitkey" => PvValue::Str(item.key.clone()),
                    _ => item.value.clone(),
                }))
            }
            PvName::Named(class @ ("dlg" | "dlg_var" | "dlg_ctx"), inner) => {
                self.dlg_pv_read(class, inner)
            }
            PvName::Plain(class) => match &self.message {
                Some(m) => read_message(m, class),
                None => Ok(None),
            },
            PvName::Named(..) => Err(PvError::Unknown),
        }
    }

    /// `table=>key` of a `$sht*` name, the key's pseudo-variables
    /// expanded, and the table.
    async fn sht_name(&self, inner: &str) -> Result<(TableRef, String), PvError> {
        let (table, key) = inner
            .split_once("=>")
            .ok_or_else(|| PvError::Htable(format!("{inner:?} is not table=>key")))?;
        let key = self.expand(key).await?;
        let found = self.state.htable.get(table);
        let table = found.ok_or_else(|| PvError::Htable(format!("no htable {table:?}")))?;
        Ok((table, key))
    }

    /// `$sht`, `$shtex`, `$shtcn`, `$shtcv`, `$shtinc`, `$shtdec` of
    /// `table`, `key` expanded.
    async fn sht_read(
        &self,
        class: &str,
        table: &TableRef,
        key: String,
    ) -> Result<Option<PvValue>, PvError> {
        let now = unix_now();
        let count = async |target| {
            let matcher = Matcher::count_expr(&key).map_err(PvError::Htable)?;
            let n = (table.count_matching(target, &matcher, now).await).map_err(PvError::htable)?;
            Ok(int(n))
        };
        let add = async |delta| {
            (table.add(&key, delta, now).await)
                .map(|n| Some(PvValue::Int(n)))
                .map_err(PvError::htable)
        };
        match class {
            "sht" => (table.get_or_initval(&key, now).await).map_err(PvError::htable),
            "shtex" => (table.expires_in(&key, now).await)
                .map(int)
                .map_err(PvError::htable),
            "shtcn" => count(Target::Name).await,
            "shtcv" => count(Target::Value).await,
            "shtinc" => add(1).await,
            "shtdec" => add(-1).await,
            _ => Err(PvError::Unknown),
        }
    }

    /// `$sht(t=>k) = v` (`$null` removes) and `$shtex(t=>k) = seconds`.
    async fn sht_write(
        &self,
        class: &str,
        table: &TableRef,
        key: String,
        value: Option<PvValue>,
    ) -> Result<(), PvError> {
        let now = unix_now();
        match (class, value) {
            ("sht", Some(v)) => {
                (table.set(&key, v, None, now).await).map_err(|e| PvError::htable(e).with_key(&key))
            }
            ("sht", None) => (table.remove(&key, now).await)
                .map(|_| ())
                .map_err(PvError::htable),
            ("shtex", v) => {
                let secs = v.and_then(|v| v.as_text().trim().parse::<u64>().ok());
                let secs =
                    secs.ok_or_else(|| PvError::Htable("$shtex takes a number of seconds".into()))?;
                (table.set_expire(&key, secs, now).await).map_err(PvError::htable)
            }
            ("shtcn" | "shtcv" | "shtinc" | "shtdec", _) => Err(PvError::ReadOnly),
            _ => Err(PvError::Unknown),
        }
    }

    /// `text` with each pseudo-variable in it replaced by its value
    /// (`<null>` for `$null`, as Kamailio prints it).
    async fn expand(&self, text: &str) -> Result<String, PvError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            let len = pv_len(tail);
            if len <= 1 {
                out.push('$');
                rest = &tail[1..];
                continue;
            }
            let value = self.pv_value(&tail[..len]).await?;
            out.push_str(&value.map_or_else(|| "<null>".into(), |v| v.as_text()));
            rest = &tail[len..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Assign a pseudo-variable that is not a table's `$sht*` (those wait
    /// on their table: [`Ctx::pv_set`]); `None` assigns `$null`.
    pub(crate) fn pv_write(&mut self, name: &str, value: Option<PvValue>) -> Result<(), PvError> {
        let parsed = pv_name::parse(name).ok_or(PvError::Malformed)?;
        let recorded = value.as_ref().map(PvValue::as_text);
        match parsed {
            PvName::Named("var", v) => {
                self.vars
                    .insert(v.to_string(), value.unwrap_or(PvValue::Int(0)));
            }
            PvName::Named("avp", a) => {
                if let Some(m) = self.message.as_mut() {
                    match value {
                        Some(v) => m.avps.entry(a.to_string()).or_default().insert(0, v),
                        // `$avp(x) = $null` removes the newest value only.
                        None => {
                            if let Some(stack) = m.avps.get_mut(a)
                                && !stack.is_empty()
                            {
                                stack.remove(0);
                            }
                        }
                    }
                }
            }
            PvName::Plain("ru") => {
                let uri = value.map(|v| v.as_text()).unwrap_or_default();
                self.set_ruri("KSR.pv", uri);
                return Ok(());
            }
            PvName::Plain("du") => {
                self.set_dst_uri("KSR.pv", value.map(|v| v.as_text()));
                return Ok(());
            }
            PvName::Plain(part @ ("rU" | "rd" | "rp")) => {
                let Some(current) = self.message.as_ref().and_then(Message::ruri) else {
                    return Ok(());
                };
                let Ok(uri) = Uri::parse(&current) else {
                    self.script_error_now("KSR.pv", format!("cannot parse R-URI {current:?}"));
                    return Ok(());
                };
                let new = value.map(|v| v.as_text()).unwrap_or_default();
                let rewritten = match part {
                    "rU" => uri
                        .with_user(Some(new.as_str()).filter(|u| !u.is_empty()))
                        .to_string(),
                    "rd" => uri.with_host(&new).to_string(),
                    _ => uri.with_port(new.parse().ok()).to_string(),
                };
                self.set_ruri("KSR.pv", rewritten);
                return Ok(());
            }
            PvName::Plain(class) => {
                return Err(
                    if self
                        .message
                        .as_ref()
                        .map(|m| read_message(m, class).is_ok())
                        .unwrap_or(true)
                    {
                        PvError::ReadOnly
                    } else {
                        PvError::Unknown
                    },
                );
            }
            PvName::Named(
                "hdr" | "hdrc" | "dns" | "srvquery" | "naptrquery" | "shtitkey" | "shtitval",
                _,
            ) => {
                return Err(PvError::ReadOnly);
            }
            PvName::Named(class @ ("dlg" | "dlg_var" | "dlg_ctx"), inner) => {
                self.dlg_pv_write(class, inner, value)?;
            }
            PvName::Named(..) => return Err(PvError::Unknown),
        }
        self.events.push(Event::PvSet {
            name: name.to_string(),
            value: recorded,
        });
        Ok(())
    }

    /// Read for `KSR.pv.get*`, logging bad names: with the script line for
    /// `KSR.pv.get` (nil shows the failure), at once for the functions that
    /// answer a default instead.
    async fn pv_get(&mut self, function: &str, name: &str) -> Option<PvValue> {
        let read = self.pv_value(name).await;
        read.unwrap_or_else(|e| {
            if matches!(e, PvError::Repeated(_)) {
                // A Redis outage, logged at its start.
            } else if function == "KSR.pv.get" {
                self.script_error(function, format!("{e}: {name}"));
            } else {
                self.script_error_now(function, format!("{e}: {name}"));
            }
            None
        })
    }

    /// `$sht*` of a table wait on it here (a table in Redis answers
    /// asynchronously).
    async fn pv_set(&mut self, function: &str, name: &str, value: Option<PvValue>) {
        let written = match table_pv(name) {
            Some((class, inner)) => {
                let recorded = value.as_ref().map(PvValue::as_text);
                let written = match self.sht_name(inner).await {
                    Ok((table, key)) => self.sht_write(class, &table, key, value).await,
                    Err(e) => Err(e),
                };
                written.map(|()| {
                    self.events.push(Event::PvSet {
                        name: name.to_string(),
                        value: recorded,
                    })
                })
            }
            None => self.pv_write(name, value),
        };
        match written {
            Err(PvError::Repeated(_)) | Ok(()) => {}
            Err(e) => self.script_error_now(function, format!("{e}: {name}")),
        }
    }
}

/// The length of the pseudo-variable name at the start of `text` (which
/// starts with `$`): `$xx`, `$xx(inner)` or `$(inner)`, parentheses
/// balanced; 1 when no name follows the `$`.
fn pv_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut i = 1;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
        i += 1;
    }
    if bytes.get(i) != Some(&b'(') {
        return i;
    }
    let mut depth = 0;
    for (j, &b) in bytes.iter().enumerate().skip(i) {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    1
}

fn or_default(value: Option<PvValue>, default: Xval) -> Xval {
    value.map(|v| v.to_xval()).unwrap_or(default)
}

impl Host for Ctx {
    async fn get(&mut self, pvname: String) -> Xval {
        or_default(self.pv_get("KSR.pv.get", &pvname).await, Xval::Null)
    }
    async fn gete(&mut self, pvname: String) -> Xval {
        or_default(
            self.pv_get("KSR.pv.gete", &pvname).await,
            Xval::Str(String::new()),
        )
    }
    async fn getvn(&mut self, pvname: String, vn: i32) -> Xval {
        or_default(self.pv_get("KSR.pv.getvn", &pvname).await, Xval::Int(vn))
    }
    async fn getvs(&mut self, pvname: String, vs: String) -> Xval {
        or_default(self.pv_get("KSR.pv.getvs", &pvname).await, Xval::Str(vs))
    }
    async fn getw(&mut self, pvname: String) -> Xval {
        or_default(
            self.pv_get("KSR.pv.getw", &pvname).await,
            Xval::Str("<<null>>".into()),
        )
    }
    async fn seti(&mut self, pvname: String, val: i32) {
        self.pv_set("KSR.pv.seti", &pvname, Some(PvValue::Int(val)))
            .await;
    }
    async fn sets(&mut self, pvname: String, val: String) {
        self.pv_set("KSR.pv.sets", &pvname, Some(PvValue::Str(val)))
            .await;
    }
    async fn unset(&mut self, pvname: String) {
        self.pv_set("KSR.pv.unset", &pvname, None).await;
    }
    async fn is_null(&mut self, pvname: String) -> bool {
        self.pv_get("KSR.pv.is_null", &pvname).await.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{INVITE, ctx, invite_with, logs, message, ready, rendered, s, value};

    fn i(n: i32) -> Option<PvValue> {
        Some(PvValue::Int(n))
    }

    /// Message pseudo-variables read the message as received and where it
    /// came from.
    #[test]
    fn message_pseudo_variables() {
        let mut c = ctx(INVITE);
        let mut get = |name: &str| value(ready(c.get(name.into())));
        assert_eq!(get("$ru"), s("sip:bob@example.com"));
        assert_eq!(get("$rU"), s("bob"));
        assert_eq!(get("$rd"), s("example.com"));
        assert_eq!(get("$rp"), i(5060));
        assert_eq!(get("$rm"), s("INVITE"));
        assert_eq!(get("$rv"), s("SIP/2.0"));
        assert_eq!(get("$fU"), s("alice"));
        assert_eq!(get("$fn"), s("Alice"));
        assert_eq!(get("$ft"), s("a1"));
        assert_eq!(get("$tt"), None);
        assert_eq!(get("$tu"), s("sip:bob@example.com"));
        assert_eq!(get("$ci"), s("call-1@192.0.2.7"));
        assert_eq!(get("$cs"), i(1));
        assert_eq!(get("$ua"), s("phone/1.0"));
        assert_eq!(get("$si"), s("192.0.2.7"));
        assert_eq!(get("$sp"), i(5070));
        assert_eq!(get("$Ri"), s("192.0.2.1"));
        assert_eq!(get("$Rp"), i(5060));
        assert_eq!(get("$pr"), s("udp"));
        assert_eq!(get("$hdr(Max-Forwards)"), s("70"));
        assert_eq!(get("$hdrc(Via)"), i(1));
        assert_eq!(get("$du"), None);
    }

    /// `$var` is per instance and starts at 0; `$avp` is a stack: a
    /// write pushes, reads see the newest, `$null` pops one.
    #[test]
    fn script_variables() {
        let mut c = ctx(INVITE);
        assert_eq!(value(ready(c.get("$var(x)".into()))), i(0));
        ready(c.sets("$var(x)".into(), "v".into()));
        assert_eq!(value(ready(c.get("$var(x)".into()))), s("v"));
        ready(c.seti("$avp(a)".into(), 1));
        ready(c.seti("$avp(a)".into(), 2));
        assert_eq!(value(ready(c.get("$avp(a)".into()))), i(2));
        ready(c.unset("$avp(a)".into()));
        assert_eq!(value(ready(c.get("$avp(a)".into()))), i(1));
        ready(c.unset("$avp(a)".into()));
        assert!(ready(c.is_null("$avp(a)".into())));
        assert_eq!(
            c.events,
            vec![
                Event::PvSet {
                    name: "$var(x)".into(),
                    value: Some("v".into())
                },
                Event::PvSet {
                    name: "$avp(a)".into(),
                    value: Some("1".into())
                },
                Event::PvSet {
                    name: "$avp(a)".into(),
                    value: Some("2".into())
                },
                Event::PvSet {
                    name: "$avp(a)".into(),
                    value: None
                },
                Event::PvSet {
                    name: "$avp(a)".into(),
                    value: None
                },
            ]
        );
        // A new message keeps $var (per instance) but not $avp.
        ready(c.seti("$avp(b)".into(), 9));
        c.begin(Some(message(&mut ctx(INVITE)).clone()));
        assert_eq!(value(ready(c.get("$var(x)".into()))), s("v"));
        assert!(ready(c.is_null("$avp(b)".into())));
    }

    /// Writing the R-URI parts rewrites the R-URI the request is forwarded
    /// with; `$du` is checked and read back by parts.
    #[test]
    fn ruri_and_destination_writes() {
        let mut c = ctx(INVITE);
        ready(c.sets("$rU".into(), "carol".into()));
        ready(c.sets("$rd".into(), "example.net".into()));
        ready(c.seti("$rp".into(), 5080));
        assert_eq!(
            value(ready(c.get("$ru".into()))),
            s("sip:carol@example.net:5080")
        );
        assert!(rendered(&c).starts_with("INVITE sip:carol@example.net:5080 SIP/2.0\r\n"));
        // The R-URI as received stays readable through the header reads.
        assert_eq!(
            value(ready(c.get("$hdr(To)".into()))),
            s("<sip:bob@example.com>")
        );

        ready(c.sets("$du".into(), "sip:192.0.2.50:5090;transport=tcp".into()));
        assert_eq!(value(ready(c.get("$dd".into()))), s("192.0.2.50"));
        assert_eq!(value(ready(c.get("$dp".into()))), i(5090));
        assert_eq!(value(ready(c.get("$dP".into()))), s("tcp"));
        ready(c.sets("$du".into(), "not a uri".into()));
        assert_eq!(
            message(&mut c).dst_uri.as_deref(),
            Some("sip:192.0.2.50:5090;transport=tcp")
        );
        ready(c.unset("$du".into()));
        assert_eq!(message(&mut c).dst_uri, None);
        assert_eq!(
            logs(&c),
            vec!["KSR.pv: invalid URI \"not a uri\": invalid URI"]
        );
    }

    /// Unknown, malformed and read-only names are the script's mistakes:
    /// logged, `$null` on reads, nothing written.
    #[test]
    fn bad_names_are_logged() {
        let mut c = ctx(&invite_with(&[], &[]));
        assert_eq!(value(ready(c.get("$nope".into()))), None);
        // `get` answers nil: the guest takes the reason to log it with the
        // script line. The defaulted reads and the writes log at once.
        assert_eq!(
            c.take_script_error().as_deref(),
            Some("KSR.pv.get: unknown pseudo-variable: $nope")
        );
        assert_eq!(value(ready(c.getw("$nope".into()))), s("<<null>>"));
        assert_eq!(value(ready(c.getvn("$nope".into(), 7))), i(7));
        assert_eq!(
            value(ready(c.getvs("$du".into(), "none".into()))),
            s("none")
        );
        ready(c.sets("$ci".into(), "x".into()));
        ready(c.sets("$hdr(X-A)".into(), "x".into()));
        ready(c.sets("var(x)".into(), "x".into()));
        assert_eq!(value(ready(c.get("$ci".into()))), s("call-1@192.0.2.7"));
        assert_eq!(
            logs(&c),
            vec![
                "KSR.pv.getw: unknown pseudo-variable: $nope",
                "KSR.pv.getvn: unknown pseudo-variable: $nope",
                "KSR.pv.sets: pseudo-variable is read-only: $ci",
                "KSR.pv.sets: pseudo-variable is read-only: $hdr(X-A)",
                "KSR.pv.sets: malformed pseudo-variable name: var(x)",
            ]
        );
    }

    /// `$T(id_index)`/`$T(id_label)` once the transaction is suspended,
    /// `$snd(...)` while the onsend route runs.
    #[test]
    fn transaction_ids_and_send_target() {
        let mut c = ctx(INVITE);
        assert_eq!(value(ready(c.get("$T(id_index)".into()))), None);
        message(&mut c).tm.suspended = Some((7, 123_456));
        assert_eq!(value(ready(c.get("$T(id_index)".into()))), i(7));
        assert_eq!(value(ready(c.get("$T(id_label)".into()))), i(123_456));
        message(&mut c).sending_to =
            Some((crate::Transport::Tcp, "[2001:db8::1]:5061".parse().unwrap()));
        assert_eq!(value(ready(c.get("$snd(ip)".into()))), s("2001:db8::1"));
        assert_eq!(value(ready(c.get("$snd(port)".into()))), i(5061));
        assert_eq!(value(ready(c.get("$snd(proto)".into()))), s("tcp"));
        assert_eq!(value(ready(c.get("$snd(af)".into()))), s("ipv6"));
    }
}
