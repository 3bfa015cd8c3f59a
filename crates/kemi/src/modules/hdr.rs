//! `KSR.hdr`: header edits (pending until the message is forwarded) and
//! header reads (of the message as received).

use crate::bindings::kemibox::ksr::hdr::Host;
use crate::bindings::kemibox::ksr::types::Xval;
use crate::{Ctx, Event, Message};

/// A header line the script wants to add, checked and without its CRLF.
/// `None` when it is not `Name: value` or would inject more lines.
pub(crate) fn header_line(raw: &str) -> Option<&str> {
    let line = raw.trim_end_matches(['\r', '\n']);
    let (name, _) = line.split_once(':')?;
    let name_ok = !name.trim().is_empty()
        && name
            .trim_end()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
    (name_ok && !line.contains(['\r', '\n'])).then_some(line)
}

/// Index `idx` into `count` values: 0 first, -1 last.
fn resolve_index(idx: i32, count: usize) -> Option<usize> {
    let count = i64::try_from(count).ok()?;
    let i = if idx < 0 {
        count + i64::from(idx)
    } else {
        i64::from(idx)
    };
    (0..count).contains(&i).then_some(i as usize)
}

impl Ctx {
    /// Add a header line with `place`, recording it. 1 on success, -1 otherwise.
    fn add_header(
        &mut self,
        function: &str,
        raw: &str,
        position: &str,
        place: impl FnOnce(&mut Message, String) -> bool,
    ) -> i32 {
        let Some(line) = header_line(raw) else {
            self.script_error(function, format!("not a single header line: {raw:?}"));
            return -1;
        };
        let line = line.to_string();
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        if !place(m, line.clone()) {
            return -1;
        }
        self.events.push(Event::HeaderAdded {
            header: line,
            position: position.to_string(),
        });
        1
    }

    fn header_at(&self, name: &str, idx: i32) -> Option<String> {
        let m = self.message.as_ref()?;
        let values: Vec<&str> = m.sip.header_values(name).collect();
        resolve_index(idx, values.len()).map(|i| values[i].to_string())
    }

    fn remove_headers(&mut self, name: &str) -> i32 {
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        let count = m.edits.remove_header(&m.sip, name);
        if count == 0 {
            return -1;
        }
        self.events.push(Event::HeaderRemoved {
            name: name.to_string(),
            count,
        });
        1
    }
}

impl Host for Ctx {
    async fn append(&mut self, hdrval: String) -> i32 {
        self.add_header("KSR.hdr.append", &hdrval, "end", |m, line| {
            m.edits.append_header(&m.sip, &line).is_ok()
        })
    }
    async fn append_after(&mut self, hdrval: String, hdrname: String) -> i32 {
        let position = format!("after {hdrname}");
        self.add_header("KSR.hdr.append_after", &hdrval, &position, |m, line| {
            m.edits
                .append_after(&m.sip, &hdrname, &line)
                .unwrap_or(false)
        })
    }
    async fn insert(&mut self, hdrval: String) -> i32 {
        self.add_header("KSR.hdr.insert", &hdrval, "start", |m, line| {
            m.edits.insert_header(&m.sip, &line).is_ok()
        })
    }
    async fn insert_before(&mut self, hdrval: String, hdrname: String) -> i32 {
        let position = format!("before {hdrname}");
        self.add_header("KSR.hdr.insert_before", &hdrval, &position, |m, line| {
            m.edits
                .insert_before(&m.sip, &hdrname, &line)
                .unwrap_or(false)
        })
    }
    async fn remove(&mut self, hdrname: String) -> i32 {
        self.remove_headers(&hdrname)
    }
    async fn rmappend(&mut self, hrm: String, hadd: String) -> i32 {
        if header_line(&hadd).is_none() {
            self.script_error(
                "KSR.hdr.rmappend",
                format!("not a single header line: {hadd:?}"),
            );
            return -1;
        }
        self.remove_headers(&hrm);
        self.add_header("KSR.hdr.rmappend", &hadd, "end", |m, line| {
            m.edits.append_header(&m.sip, &line).is_ok()
        })
    }
    async fn is_present(&mut self, hdrname: String) -> i32 {
        let present = self
            .message
            .as_ref()
            .is_some_and(|m| m.sip.header_count(&hdrname) > 0);
        if present { 1 } else { -1 }
    }
    async fn append_to_reply(&mut self, hdrval: String) -> i32 {
        let Some(line) = header_line(&hdrval) else {
            self.script_error(
                "KSR.hdr.append_to_reply",
                format!("not a single header line: {hdrval:?}"),
            );
            return -1;
        };
        let line = line.to_string();
        match self.message.as_mut() {
            Some(m) => {
                m.reply_headers.push(line);
                1
            }
            None => -1,
        }
    }
    async fn get(&mut self, hdrname: String) -> Xval {
        self.header_at(&hdrname, 0)
            .map(Xval::Str)
            .unwrap_or(Xval::Null)
    }
    async fn get_idx(&mut self, hdrname: String, idx: i32) -> Xval {
        self.header_at(&hdrname, idx)
            .map(Xval::Str)
            .unwrap_or(Xval::Null)
    }
    async fn gete(&mut self, hdrname: String) -> Xval {
        Xval::Str(self.header_at(&hdrname, 0).unwrap_or_default())
    }
    async fn gete_idx(&mut self, hdrname: String, idx: i32) -> Xval {
        Xval::Str(self.header_at(&hdrname, idx).unwrap_or_default())
    }
    async fn getw(&mut self, hdrname: String) -> Xval {
        Xval::Str(
            self.header_at(&hdrname, 0)
                .unwrap_or_else(|| "<<null>>".into()),
        )
    }
    async fn getw_idx(&mut self, hdrname: String, idx: i32) -> Xval {
        Xval::Str(
            self.header_at(&hdrname, idx)
                .unwrap_or_else(|| "<<null>>".into()),
        )
    }
    async fn match_content(
        &mut self,
        hname: String,
        op: String,
        mval: String,
        hidx: String,
    ) -> i32 {
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let values: Vec<&str> = m.sip.header_values(&hname).collect();
        let test = |v: &&str| match op.as_str() {
            "eq" => *v == mval,
            "ne" => *v != mval,
            "in" => v.contains(mval.as_str()),
            "sw" => v.starts_with(mval.as_str()),
            _ => false,
        };
        if !matches!(op.as_str(), "eq" | "ne" | "in" | "sw") {
            self.script_error(
                "KSR.hdr.match_content",
                format!("unknown operator {op:?} (eq, ne, in, sw)"),
            );
            return -1;
        }
        // Kamailio's index expressions: first, last, all, at least one.
        let matched = match hidx.as_str() {
            "f" => values.first().is_some_and(test),
            "a" => !values.is_empty() && values.iter().all(test),
            "o" => values.iter().any(test),
            "l" => values.last().is_some_and(test),
            n => match n
                .parse::<i32>()
                .ok()
                .and_then(|i| resolve_index(i, values.len()))
            {
                Some(i) => test(&values[i]),
                None => false,
            },
        };
        if matched { 1 } else { -1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::kemibox::ksr::sl;
    use crate::testing::{INVITE, actions, ctx, invite_with, logs, ready, rendered, s, value};

    // `Host::append` is named in full: `Ctx::append` (corex's branches)
    // would be found first.

    /// Added lines land where asked in the forwarded message, each
    /// recorded with its position.
    #[test]
    fn added_headers_land_where_asked() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(Host::append(&mut c, "X-End: 1".into())), 1);
        assert_eq!(ready(c.insert("X-Start: 2".into())), 1);
        assert_eq!(
            ready(c.append_after("X-After: 3".into(), "Call-ID".into())),
            1
        );
        assert_eq!(
            ready(c.insert_before("X-Before: 4".into(), "cseq".into())),
            1
        );
        let out = rendered(&c);
        assert!(
            out.starts_with("INVITE sip:bob@example.com SIP/2.0\r\nX-Start: 2\r\nVia: "),
            "{out}"
        );
        assert!(
            out.contains(
                "Call-ID: call-1@192.0.2.7\r\nX-After: 3\r\nX-Before: 4\r\nCSeq: 1 INVITE\r\n"
            ),
            "{out}"
        );
        assert!(out.contains("X-End: 1\r\n"), "{out}");
        let positions: Vec<(String, String)> = actions(&c)
            .into_iter()
            .filter_map(|e| match e {
                Event::HeaderAdded { header, position } => Some((header, position)),
                _ => None,
            })
            .collect();
        assert_eq!(
            positions,
            [
                ("X-End: 1", "end"),
                ("X-Start: 2", "start"),
                ("X-After: 3", "after Call-ID"),
                ("X-Before: 4", "before cseq"),
            ]
            .map(|(h, p)| (h.to_string(), p.to_string()))
        );
        // Anchored on a header the message lacks: nothing is added.
        assert_eq!(ready(c.append_after("X-No: 5".into(), "Route".into())), -1);
        assert!(!rendered(&c).contains("X-No"));
    }

    /// A value that is not exactly one `Name: value` line is refused, so a
    /// script cannot inject headers.
    #[test]
    fn injection_is_refused() {
        let mut c = ctx(INVITE);
        assert_eq!(
            ready(Host::append(&mut c, "X-A: 1\r\nX-Injected: 2".into())),
            -1
        );
        assert_eq!(ready(c.insert("no colon".into())), -1);
        assert_eq!(rendered(&c), INVITE);
        assert_eq!(
            logs(&c),
            vec![
                "KSR.hdr.append: not a single header line: \"X-A: 1\\r\\nX-Injected: 2\"",
                "KSR.hdr.insert: not a single header line: \"no colon\"",
            ]
        );
        // A trailing CRLF is tolerated and dropped.
        assert_eq!(header_line("X-A: 1\r\n"), Some("X-A: 1"));
    }

    /// `remove` drops every line of the name; `rmappend` swaps them for
    /// one new line.
    #[test]
    fn remove_and_replace() {
        let mut c = ctx(&invite_with(&[], &["X-Old: 1", "x-old: 2"]));
        assert_eq!(ready(c.is_present("X-OLD".into())), 1);
        assert_eq!(ready(c.rmappend("X-Old".into(), "X-New: 3".into())), 1);
        let out = rendered(&c);
        assert!(!out.to_ascii_lowercase().contains("x-old"), "{out}");
        assert!(out.contains("X-New: 3\r\n"), "{out}");
        assert_eq!(ready(c.remove("Contact".into())), 1);
        assert!(!rendered(&c).contains("Contact:"));
        assert_eq!(ready(c.remove("Route".into())), -1);
        assert_eq!(
            actions(&c)[0],
            Event::HeaderRemoved {
                name: "X-Old".into(),
                count: 2,
            }
        );
    }

    /// Reads see the message as received: by index from either end, with
    /// `$null`, an empty string or `<<null>>` for a missing header.
    #[test]
    fn header_reads() {
        let mut c = ctx(&invite_with(&[], &["X-N: first", "X-N: last"]));
        assert_eq!(value(ready(c.get("x-n".into()))), s("first"));
        assert_eq!(value(ready(c.get_idx("X-N".into(), -1))), s("last"));
        assert_eq!(value(ready(c.get_idx("X-N".into(), 2))), None);
        assert_eq!(value(ready(c.get("X-None".into()))), None);
        assert_eq!(value(ready(c.gete("X-None".into()))), s(""));
        assert_eq!(value(ready(c.getw_idx("X-N".into(), 5))), s("<<null>>"));
        // Edits do not change what is read.
        assert_eq!(ready(c.remove("X-N".into())), 1);
        assert_eq!(value(ready(c.gete_idx("X-N".into(), 1))), s("last"));
    }

    /// `match_content` with each operator and index expression.
    #[test]
    fn match_content_operators_and_indexes() {
        let mut c = ctx(&invite_with(&[], &["X-M: alpha", "X-M: beta"]));
        let mut m = |op: &str, v: &str, idx: &str| {
            ready(c.match_content("X-M".into(), op.into(), v.into(), idx.into()))
        };
        assert_eq!(m("eq", "alpha", "f"), 1);
        assert_eq!(m("eq", "alpha", "l"), -1);
        assert_eq!(m("sw", "be", "l"), 1);
        assert_eq!(m("in", "ph", "o"), 1);
        assert_eq!(m("in", "a", "a"), 1);
        assert_eq!(m("ne", "alpha", "a"), -1);
        assert_eq!(m("eq", "beta", "-1"), 1);
        assert_eq!(m("eq", "beta", "7"), -1);
        assert_eq!(m("like", "beta", "f"), -1);
        assert_eq!(
            logs(&c),
            vec!["KSR.hdr.match_content: unknown operator \"like\" (eq, ne, in, sw)"]
        );
    }

    /// Lines for the proxy's own reply go out with the next reply.
    #[test]
    fn headers_for_the_reply() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.append_to_reply("Retry-After: 30".into())), 1);
        assert_eq!(ready(c.append_to_reply("bad".into())), -1);
        assert_eq!(
            ready(sl::Host::sl_send_reply(&mut c, 503, "Busy".into())),
            1
        );
        assert_eq!(
            actions(&c),
            vec![Event::Reply {
                code: 503,
                reason: "Busy".into(),
                stateful: false,
                headers: vec!["Retry-After: 30".into()],
            }]
        );
        assert_eq!(rendered(&c), INVITE);
    }
}
