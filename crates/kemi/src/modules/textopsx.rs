//! `KSR.textopsx`: Kamailio's textops extensions.
//!
//! `msg_apply_changes` has a precise meaning with [`kemibox_sip::Edits`]:
//! the message is rendered with its edits and parsed again, and the result
//! becomes the message as "received" with no pending edits. Reads that
//! look at the received message (`KSR.pv`, `KSR.textops.search*`, the
//! sdpops tests) then see the changes; what a later relay sends is the
//! same as without the call. The Record-Route a script added can no longer
//! be redone or removed afterwards (as in Kamailio, whose lumps are gone).

use super::kemi;
use super::textops::{compile_regex, regex_error};
use crate::bindings::kemibox::ksr::textopsx::Host;
use crate::{Ctx, RouteType};
use kemibox_sip::{Edits, SipMessage, render};

/// Headers `keep_hf` never removes (Kamailio's list).
const ALWAYS_KEPT: &[&str] = &[
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Via",
    "Contact",
    "Content-Length",
    "Content-Type",
    "Route",
    "Record-Route",
    "Max-Forwards",
];

/// Compact forms of the headers above (RFC 3261 7.3.3).
const ALWAYS_KEPT_COMPACT: &[&str] = &["f", "t", "i", "v", "m", "l", "c"];

/// Which values of a header a `hname[...]` expression names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Index {
    /// No index given: the function's default.
    Default,
    /// `[n]`: the n-th value from the top (n >= 1) or the bottom (n <= -1).
    At(i32),
    /// `[*]`: every header of that name.
    All,
}

/// Parse `Name`, `Name[n]`, `Name[-n]`, `Name[*]` (white space allowed);
/// `None` for anything else (an empty name, a `.param` form).
fn parse_hname(hname: &str) -> Option<(&str, Index)> {
    let hname = hname.trim();
    let (name, index) = match hname.split_once('[') {
        None => (hname, Index::Default),
        Some((name, rest)) => {
            let inner = rest.strip_suffix(']')?.trim();
            let index = match inner {
                "*" => Index::All,
                "" => Index::Default,
                n => match n.parse::<i32>().ok()? {
                    0 => Index::Default,
                    n => Index::At(n),
                },
            };
            (name.trim_end(), index)
        }
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    (valid && !name.contains('.')).then_some((name, index))
}

/// The comma-separated values of a header value: (start, end) of each,
/// trimmed, commas inside double quotes ignored.
fn value_ranges(value: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    let mut push = |from: usize, to: usize| {
        let piece = &value[from..to];
        let lead = piece.len() - piece.trim_start().len();
        let trimmed = piece.trim();
        out.push((from + lead, from + lead + trimmed.len()));
    };
    for (i, c) in value.char_indices() {
        match c {
            '\\' if quoted && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped => quoted = !quoted,
            ',' if !quoted => {
                push(start, i);
                start = i + 1;
            }
            _ => {}
        }
        escaped = false;
    }
    push(start, value.len());
    out
}

/// One value of a received header: the header's index and the value's
/// range, with the ranges of all values of that header.
struct ValueAt {
    header: usize,
    value: (usize, usize),
    all: Vec<(usize, usize)>,
    position: usize,
}

/// The values of the headers named `name`, in order.
fn values_of(sip: &SipMessage, name: &str, skip: impl Fn(usize) -> bool) -> Vec<ValueAt> {
    let mut out = Vec::new();
    for (header, (n, v)) in sip.headers().enumerate() {
        if skip(header) || !kemibox_sip::names_equal(n.as_bytes(), name.as_bytes()) {
            continue;
        }
        let all = value_ranges(v);
        for (position, &value) in all.iter().enumerate() {
            out.push(ValueAt {
                header,
                value,
                all: all.clone(),
                position,
            });
        }
    }
    out
}

/// The value `index` names among `values` (1 the first, -1 the last).
fn pick(values: Vec<ValueAt>, index: i32) -> Option<ValueAt> {
    let n = values.len();
    let at = if index > 0 {
        usize::try_from(index - 1).ok()?
    } else {
        n.checked_sub(usize::try_from(index.unsigned_abs()).ok()?)?
    };
    values.into_iter().nth(at)
}

/// Largest pattern length times value length `fnmatch` works on: the
/// matcher's time grows with that product and host time is not metered by
/// the script's fuel.
const MAX_GLOB_WORK: usize = 1 << 22;

/// Shell glob matching (`fnmatch(3)` without flags): `*`, `?`, bracket
/// expressions with ranges and `!`/`^` negation, `\` escaping.
fn glob(pattern: &[char], text: &[char], fold: bool) -> bool {
    let same = |a: char, b: char| {
        if fold {
            a.to_lowercase().eq(b.to_lowercase())
        } else {
            a == b
        }
    };
    // Iterative matching with one backtrack point for the last `*`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some('?') => Some(p + 1),
            Some('[') => match bracket(pattern, p, text[t], fold) {
                Bracket::Match(next) => Some(next),
                Bracket::NoMatch => None,
                Bracket::Unclosed => same('[', text[t]).then_some(p + 1),
            },
            Some('\\') if p + 1 < pattern.len() => same(pattern[p + 1], text[t]).then_some(p + 2),
            Some(&c) => same(c, text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// How a bracket expression matched one character.
enum Bracket {
    /// Matched; the pattern goes on at this index.
    Match(usize),
    NoMatch,
    /// No closing `]`: the `[` is a literal.
    Unclosed,
}

/// Match `c` against the bracket expression at `pattern[at]`.
fn bracket(pattern: &[char], at: usize, c: char, fold: bool) -> Bracket {
    let mut i = at + 1;
    let negate = matches!(pattern.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let lower = |x: char| if fold { x.to_ascii_lowercase() } else { x };
    let c = lower(c);
    let mut matched = false;
    let mut first = true;
    loop {
        let Some(&x) = pattern.get(i) else {
            return Bracket::Unclosed;
        };
        if x == ']' && !first {
            break;
        }
        first = false;
        if pattern.get(i + 1) == Some(&'-') && pattern.get(i + 2).is_some_and(|&y| y != ']') {
            let (lo, hi) = (lower(x), lower(pattern[i + 2]));
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lower(x) == c;
            i += 1;
        }
    }
    if matched != negate {
        Bracket::Match(i + 1)
    } else {
        Bracket::NoMatch
    }
}

impl Ctx {
    /// Render the message with its edits, optionally with a new reply start
    /// line, and parse the result as the message; the edits are cleared.
    fn apply_changes(&mut self, function: &str, status_line: Option<String>) -> i32 {
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        let mut raw = render(&m.sip, &m.edits);
        if let Some(line) = status_line {
            let end = raw.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
            raw.splice(..end, line.into_bytes());
        }
        match SipMessage::parse(raw) {
            Ok(sip) => {
                m.sip = sip;
                m.edits = Edits::new();
                m.rr.inserted = None;
                1
            }
            Err(e) => {
                self.script_error(function, format!("the changed message does not parse: {e}"));
                -1
            }
        }
    }

    /// `fnmatch`'s result: 0 on a match, -1 otherwise or (logged) when
    /// the pattern and value are too long to match in bounded time.
    fn fnmatch_with(&mut self, function: &str, val: &str, pattern: &str, fold: bool) -> i32 {
        let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), val.chars().collect());
        if p.len().saturating_mul(t.len()) > MAX_GLOB_WORK {
            self.script_error(
                function,
                format!(
                    "pattern ({} characters) and value ({}) too long to match",
                    p.len(),
                    t.len()
                ),
            );
            return -1;
        }
        if glob(&p, &t, fold) { 0 } else { -1 }
    }

    /// Parse `hname` for `function`, logging what is not supported.
    fn hname<'h>(&mut self, function: &str, hname: &'h str) -> Option<(&'h str, Index)> {
        let parsed = parse_hname(hname);
        if parsed.is_none() {
            self.script_error(
                function,
                format!("invalid header name expression {hname:?}"),
            );
        }
        parsed
    }

    /// Apply one value edit, logging a refused text; 1 done, -1 not.
    fn value_edit(
        &mut self,
        function: &str,
        header: usize,
        range: (usize, usize),
        text: &str,
    ) -> i32 {
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        match m
            .edits
            .replace_in_value(&m.sip, header, range.0, range.1, text)
        {
            Ok(done) => kemi(done),
            Err(e) => {
                self.script_error(function, format!("{e}: {text:?}"));
                -1
            }
        }
    }

    /// Add a whole header line `name: value` at the end or before the
    /// first header `before`.
    fn add_value_header(
        &mut self,
        function: &str,
        name: &str,
        value: &str,
        before: Option<&str>,
    ) -> i32 {
        if value.bytes().any(|b| b == b'\r' || b == b'\n') {
            self.script_error(
                function,
                format!("invalid character in header value: {value:?}"),
            );
            return -1;
        }
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        let line = format!("{name}: {value}");
        let result = match before {
            Some(first) => m.edits.insert_before(&m.sip, first, &line).map(|_| ()),
            None => m.edits.append_header(&m.sip, &line),
        };
        match result {
            Ok(()) => 1,
            Err(e) => {
                self.script_error(function, format!("{e}: {line:?}"));
                -1
            }
        }
    }

    /// The values of `name` not removed by earlier edits.
    fn live_values(&self, name: &str) -> Vec<ValueAt> {
        self.message.as_ref().map_or_else(Vec::new, |m| {
            values_of(&m.sip, name, |i| m.edits.is_removed(i))
        })
    }

    /// Remove one value: the whole header when it is its only value, else
    /// the value with one comma.
    fn remove_value(&mut self, function: &str, v: &ValueAt) -> i32 {
        if v.all.len() == 1 {
            let Some(m) = self.message.as_mut() else {
                return -1;
            };
            return kemi(m.edits.remove_header_at(&m.sip, v.header));
        }
        let range = match v.all.get(v.position + 1) {
            Some(next) => (v.value.0, next.0),
            None => (v.all[v.position - 1].1, v.value.1),
        };
        self.value_edit(function, v.header, range, "")
    }

    fn keep_headers(&mut self, function: &str, sre: Option<&str>) -> i32 {
        let re = match sre.filter(|s| !s.is_empty()) {
            None => None,
            Some(pattern) => match compile_regex(pattern) {
                Ok(re) => Some(re),
                Err(e) => {
                    self.script_error(function, regex_error(pattern, &e));
                    return -1;
                }
            },
        };
        if let Some(m) = self.message.as_mut() {
            let doomed: Vec<usize> = m
                .sip
                .headers()
                .enumerate()
                .filter(|(_, (name, _))| {
                    let kept = ALWAYS_KEPT
                        .iter()
                        .chain(ALWAYS_KEPT_COMPACT)
                        .any(|k| k.eq_ignore_ascii_case(name));
                    !kept && !re.as_ref().is_some_and(|re| re.is_match(name.as_bytes()))
                })
                .map(|(i, _)| i)
                .collect();
            for i in doomed {
                m.edits.remove_header_at(&m.sip, i);
            }
        }
        // Kamailio's KEMI export returns -1 even after removing headers.
        -1
    }
}

impl Host for Ctx {
    async fn msg_apply_changes(&mut self) -> i32 {
        const FUNCTION: &str = "KSR.textopsx.msg_apply_changes";
        let route = self.message.as_ref().map(|m| m.route);
        if !matches!(
            route,
            Some(RouteType::Request | RouteType::Reply | RouteType::OnReply)
        ) {
            let name = route.map_or("the script's top level", RouteType::name);
            self.script_error(FUNCTION, format!("not allowed in {name}"));
            return -1;
        }
        self.apply_changes(FUNCTION, None)
    }
    async fn change_reply_status(&mut self, code: i32, reason: String) -> i32 {
        const FUNCTION: &str = "KSR.textopsx.change_reply_status";
        let Some(current) = self.message.as_ref().and_then(|m| m.sip.status()) else {
            // Kamailio's KEMI call fails on a request too (its status check
            // reads no reply class). In a failure route the best reply is
            // not the routed message: say where its status can change.
            let why = match self.message.as_ref().map(|m| m.route) {
                Some(route @ (RouteType::Failure | RouteType::BranchFailure)) => format!(
                    "the message is not a reply: in {} it is the request; change the \
                     reply's status in its reply route (KSR.tm.t_on_reply), or send \
                     your own with KSR.tm.t_reply",
                    route.name()
                ),
                _ => "the message is not a reply".to_string(),
            };
            self.script_error(FUNCTION, why);
            return -1;
        };
        let current = i32::from(current);
        let why = if reason.trim().is_empty()
            || reason.bytes().any(|b| b == b'\r' || b == b'\n' || b < b' ')
        {
            Some(format!("invalid reason {reason:?}"))
        } else if !(100..=699).contains(&code) {
            Some(format!("status code {code} outside 100..699"))
        } else if (code < 300 || current < 300) && code / 100 != current / 100 {
            Some(format!(
                "the class of a {current} reply cannot change (to {code})"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            self.script_error(FUNCTION, why);
            return -1;
        }
        self.apply_changes(FUNCTION, Some(format!("SIP/2.0 {code} {reason}")))
    }
    async fn remove_body(&mut self) -> i32 {
        if let Some(m) = self.message.as_mut()
            && !m.edits.body(&m.sip).is_empty()
        {
            // Cannot fail: no Content-Type to check.
            let _ = m.edits.replace_body(None, None);
        }
        1
    }
    async fn keep_hf(&mut self) -> i32 {
        self.keep_headers("KSR.textopsx.keep_hf", None)
    }
    async fn keep_hf_re(&mut self, sre: String) -> i32 {
        self.keep_headers("KSR.textopsx.keep_hf_re", Some(&sre))
    }
    async fn fnmatch(&mut self, val: String, r#match: String) -> i32 {
        self.fnmatch_with("KSR.textopsx.fnmatch", &val, &r#match, false)
    }
    async fn fnmatch_ex(&mut self, val: String, r#match: String, flags: String) -> i32 {
        let fold = flags.starts_with(['i', 'I']);
        self.fnmatch_with("KSR.textopsx.fnmatch_ex", &val, &r#match, fold)
    }
    async fn append_hf_value(&mut self, hname: String, val: String) -> i32 {
        const FUNCTION: &str = "KSR.textopsx.append_hf_value";
        let Some((name, index)) = self.hname(FUNCTION, &hname) else {
            return -1;
        };
        match index {
            Index::All => {
                self.script_error(FUNCTION, "[*] is not supported");
                -1
            }
            Index::Default => self.add_value_header(FUNCTION, name, &val, None),
            Index::At(n) => match pick(self.live_values(name), n) {
                Some(v) => {
                    let at = v.value.1;
                    self.value_edit(FUNCTION, v.header, (at, at), &format!(",{val}"))
                }
                None => self.add_value_header(FUNCTION, name, &val, None),
            },
        }
    }
    async fn insert_hf_value(&mut self, hname: String, val: String) -> i32 {
        const FUNCTION: &str = "KSR.textopsx.insert_hf_value";
        let Some((name, index)) = self.hname(FUNCTION, &hname) else {
            return -1;
        };
        match index {
            Index::All => {
                self.script_error(FUNCTION, "[*] is not supported");
                -1
            }
            Index::Default => {
                let exists = !self.live_values(name).is_empty();
                self.add_value_header(FUNCTION, name, &val, exists.then_some(name))
            }
            Index::At(n) => match pick(self.live_values(name), n) {
                Some(v) => {
                    let at = v.value.0;
                    self.value_edit(FUNCTION, v.header, (at, at), &format!("{val},"))
                }
                None if n == 1 => self.add_value_header(FUNCTION, name, &val, None),
                None => -1,
            },
        }
    }
    async fn remove_hf_value(&mut self, hname: String) -> i32 {
        const FUNCTION: &str = "KSR.textopsx.remove_hf_value";
        let Some((name, index)) = self.hname(FUNCTION, &hname) else {
            return -1;
        };
        match index {
            Index::All => {
                let Some(m) = self.message.as_mut() else {
                    return -1;
                };
                kemi(m.edits.remove_header(&m.sip, name) > 0)
            }
            Index::Default | Index::At(_) => {
                let n = if let Index::At(n) = index { n } else { 1 };
                match pick(self.live_values(name), n) {
                    Some(v) => self.remove_value(FUNCTION, &v),
                    None => -1,
                }
            }
        }
    }
    async fn assign_hf_value(&mut self, hname: String, val: String) -> i32 {
        const FUNCTION: &str = "KSR.textopsx.assign_hf_value";
        let Some((name, index)) = self.hname(FUNCTION, &hname) else {
            return -1;
        };
        let n = match index {
            Index::All => {
                self.script_error(FUNCTION, "[*] needs a .param, which is not supported");
                return -1;
            }
            Index::Default => 1,
            Index::At(n) => n,
        };
        match pick(self.live_values(name), n) {
            Some(v) => self.value_edit(FUNCTION, v.header, v.value, &val),
            None => -1,
        }
    }
    async fn include_hf_value(&mut self, hname: String, val: String) -> i32 {
        const FUNCTION: &str = "KSR.textopsx.include_hf_value";
        let Some((name, Index::Default)) = self.hname(FUNCTION, &hname) else {
            return -1;
        };
        if val.is_empty() {
            return -1;
        }
        let values = self.live_values(name);
        let present = self.message.as_ref().is_some_and(|m| {
            values
                .iter()
                .any(|v| value_text(&m.sip, v).eq_ignore_ascii_case(&val))
        });
        if present {
            return 1;
        }
        match values.first() {
            Some(first) => {
                let at = first.all.last().map_or(first.value.1, |last| last.1);
                self.value_edit(FUNCTION, first.header, (at, at), &format!(",{val}"))
            }
            None => self.add_value_header(FUNCTION, name, &val, None),
        }
    }
    async fn exclude_hf_value(&mut self, hname: String, val: String) -> i32 {
        const FUNCTION: &str = "KSR.textopsx.exclude_hf_value";
        let Some((name, Index::Default)) = self.hname(FUNCTION, &hname) else {
            return -1;
        };
        if val.is_empty() {
            return -1;
        }
        let values = self.live_values(name);
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        // Per header: the values that stay.
        let mut headers: Vec<(usize, Vec<String>, usize)> = Vec::new();
        for v in &values {
            let text = value_text(&m.sip, v);
            if headers.last().is_none_or(|h| h.0 != v.header) {
                let end = v.all.last().map_or(0, |l| l.1);
                headers.push((v.header, Vec::new(), end));
            }
            if !text.eq_ignore_ascii_case(&val)
                && let Some(h) = headers.last_mut()
            {
                h.1.push(text.to_string());
            }
        }
        for (header, kept, end) in headers {
            let all = values.iter().filter(|v| v.header == header).count();
            if kept.len() == all {
                continue;
            }
            if kept.is_empty() {
                if let Some(m) = self.message.as_mut() {
                    m.edits.remove_header_at(&m.sip, header);
                }
            } else {
                self.value_edit(FUNCTION, header, (0, end), &kept.join(", "));
            }
        }
        1
    }
    async fn hf_value_exists(&mut self, hname: String, val: String) -> i32 {
        const FUNCTION: &str = "KSR.textopsx.hf_value_exists";
        let Some((name, Index::Default)) = self.hname(FUNCTION, &hname) else {
            return -1;
        };
        let values = self.live_values(name);
        kemi(
            !val.is_empty()
                && self.message.as_ref().is_some_and(|m| {
                    values
                        .iter()
                        .any(|v| value_text(&m.sip, v).eq_ignore_ascii_case(&val))
                }),
        )
    }
}

/// The text of one value.
fn value_text<'m>(sip: &'m SipMessage, v: &ValueAt) -> &'m str {
    sip.header_at(v.header)
        .and_then(|(_, value)| value.get(v.value.0..v.value.1))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
