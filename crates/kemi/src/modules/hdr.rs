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
