//! `KSR.textops`: searches on the message as received, header removal by
//! regular expression, the body, and string helpers (Kamailio's textops).

use super::kemi;
use std::cmp::Ordering;

use bytes::Bytes;
use regex::bytes::{Regex, RegexBuilder};

use crate::bindings::kemibox::ksr::textops::Host;
use crate::{Ctx, Event};

/// Compiled-program limit for a script's regular expression. Matching is
/// linear in the input whatever the pattern, but host time is not metered
/// by the script's fuel: this keeps the factor (the program size) small.
const REGEX_SIZE_LIMIT: usize = 1 << 16;
/// Lazy-DFA cache limit for a script's regular expression.
const REGEX_DFA_LIMIT: usize = 1 << 20;

/// Privacy values (RFC 3323, RFC 3325, RFC 4244).
const PRIVACY_VALUES: &[&str] = &[
    "header", "session", "user", "none", "critical", "id", "history",
];

/// A pattern compiled as Kamailio does (POSIX extended, `REG_ICASE |
/// REG_NEWLINE`, C locale): case-insensitive, `^`/`$` at line boundaries,
/// `.` not matching a line feed, classes such as `\w` and `[[:alpha:]]`
/// ASCII only.
pub(crate) fn compile_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .multi_line(true)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_LIMIT)
        .build()
}

/// Why `pattern` does not compile, on one line (`invalid regular
/// expression "(x": unclosed group`).
pub(crate) fn regex_error(pattern: &str, e: &regex::Error) -> String {
    let why = match e {
        regex::Error::Syntax(text) => text
            .lines()
            .last()
            .unwrap_or(text)
            .trim_start_matches("error: ")
            .to_string(),
        other => other.to_string(),
    };
    format!("invalid regular expression {pattern:?}: {why}")
}

/// Kamailio's three-way string result: 1 equal, -1 after, -2 before.
fn ordering(o: Ordering) -> i32 {
    match o {
        Ordering::Equal => 1,
        Ordering::Greater => -1,
        Ordering::Less => -2,
    }
}

/// The items of `list` separated by the first character of `sep`, white
/// space around them removed; `None` when an argument is empty.
fn list_items<'a>(subject: &str, list: &'a str, sep: &str) -> Option<Vec<&'a str>> {
    let sep = sep.chars().next()?;
    if subject.is_empty() || list.is_empty() {
        return None;
    }
    Some(
        list.split(sep)
            .map(|item| item.trim_matches([' ', '\t', '\r', '\n']))
            .collect(),
    )
}

/// `type/subtype` of a Content-Type value, lower-cased, parameters dropped.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A single `type/subtype` made of tokens.
fn is_media_type(value: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    value
        .split_once('/')
        .is_some_and(|(t, s)| token(t) && token(s))
}

impl Ctx {
    /// Compile `pattern`, logging a bad one.
    fn regex(&mut self, function: &str, pattern: &str) -> Option<Regex> {
        match compile_regex(pattern) {
            Ok(re) => Some(re),
            Err(e) => {
                self.script_error(function, regex_error(pattern, &e));
                None
            }
        }
    }

    /// Remove the headers whose name matches `matching` and not `skip`.
    /// 1 when a header matched, -1 otherwise.
    fn remove_headers_by_name(&mut self, matching: &Regex, skip: Option<&Regex>) -> i32 {
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        let chosen: Vec<(usize, String)> = m
            .sip
            .headers()
            .enumerate()
            .filter(|(_, (name, _))| {
                matching.is_match(name.as_bytes())
                    && !skip.is_some_and(|s| s.is_match(name.as_bytes()))
            })
            .map(|(i, (name, _))| (i, name.to_string()))
            .collect();
        let mut removed: Vec<(String, usize)> = Vec::new();
        for (index, name) in &chosen {
            if !m.edits.remove_header_at(&m.sip, *index) {
                continue;
            }
            match removed.iter_mut().find(|(n, _)| n == name) {
                Some((_, count)) => *count += 1,
                None => removed.push((name.clone(), 1)),
            }
        }
        for (name, count) in removed {
            self.events.push(Event::HeaderRemoved { name, count });
        }
        kemi(!chosen.is_empty())
    }

    fn has_body_of(&self, ctype: Option<&str>) -> bool {
        let Some(m) = self.message.as_ref() else {
            return false;
        };
        if m.sip.content_length().is_none_or(|l| l == 0) {
            return false;
        }
        match ctype {
            None => true,
            Some(wanted) => {
                let actual = m
                    .sip
                    .content_type()
                    .map_or_else(|| "application/sdp".to_string(), media_type);
                actual.eq_ignore_ascii_case(wanted.trim())
            }
        }
    }
}

impl Host for Ctx {
    async fn search(&mut self, sre: String) -> i32 {
        if sre.is_empty() {
            return 1;
        }
        let Some(re) = self.regex("KSR.textops.search", &sre) else {
            return -1;
        };
        kemi(
            self.message
                .as_ref()
                .is_some_and(|m| re.is_match(m.sip.raw())),
        )
    }
    async fn search_body(&mut self, sre: String) -> i32 {
        if sre.is_empty() {
            return 1;
        }
        let Some(re) = self.regex("KSR.textops.search_body", &sre) else {
            return -1;
        };
        kemi(self.message.as_ref().is_some_and(|m| {
            let body = m.sip.body();
            !body.is_empty() && re.is_match(body)
        }))
    }
    async fn search_hf(&mut self, hname: String, sre: String, flags: String) -> i32 {
        if hname.is_empty() || sre.is_empty() {
            return -1;
        }
        let Some(re) = self.regex("KSR.textops.search_hf", &sre) else {
            return -1;
        };
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let mut values = m.sip.header_values(&hname);
        let found = match flags.chars().next() {
            Some('f') => values.next().is_some_and(|v| re.is_match(v.as_bytes())),
            Some('l') => values
                .next_back()
                .is_some_and(|v| re.is_match(v.as_bytes())),
            _ => values.any(|v| re.is_match(v.as_bytes())),
        };
        kemi(found)
    }
    async fn is_present_hf(&mut self, hname: String) -> i32 {
        kemi(
            !hname.is_empty()
                && self
                    .message
                    .as_ref()
                    .is_some_and(|m| m.sip.header_count(&hname) > 0),
        )
    }
    async fn is_present_hf_re(&mut self, ematch: String) -> i32 {
        let Some(re) = self.regex("KSR.textops.is_present_hf_re", &ematch) else {
            return -1;
        };
        kemi(self.message.as_ref().is_some_and(|m| {
            m.sip
                .headers()
                .any(|(name, _)| re.is_match(name.as_bytes()))
        }))
    }
    async fn remove_hf_re(&mut self, ematch: String) -> i32 {
        let Some(re) = self.regex("KSR.textops.remove_hf_re", &ematch) else {
            return -1;
        };
        self.remove_headers_by_name(&re, None)
    }
    async fn remove_hf_exp(&mut self, ematch: String, eskip: String) -> i32 {
        let Some(matching) = self.regex("KSR.textops.remove_hf_exp", &ematch) else {
            return -1;
        };
        let Some(skip) = self.regex("KSR.textops.remove_hf_exp", &eskip) else {
            return -1;
        };
        self.remove_headers_by_name(&matching, Some(&skip))
    }
    async fn set_body(&mut self, nb: String, nc: String) -> i32 {
        const FUNCTION: &str = "KSR.textops.set_body";
        if nb.is_empty() || nc.is_empty() {
            self.script_error(FUNCTION, "empty body or content type");
            return -1;
        }
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        match m.edits.replace_body(Some(Bytes::from(nb)), Some(&nc)) {
            Ok(()) => 1,
            Err(e) => {
                self.script_error(FUNCTION, format!("invalid content type {nc:?}: {e}"));
                -1
            }
        }
    }
    async fn has_body(&mut self) -> i32 {
        kemi(self.has_body_of(None))
    }
    async fn has_body_type(&mut self, ctype: String) -> i32 {
        if ctype.is_empty() {
            return kemi(self.has_body_of(None));
        }
        if !is_media_type(ctype.trim()) {
            self.script_error(
                "KSR.textops.has_body_type",
                format!("not a single type/subtype: {ctype:?}"),
            );
            return -1;
        }
        kemi(self.has_body_of(Some(&ctype)))
    }
    async fn is_privacy(&mut self, privacy: String) -> i32 {
        if !PRIVACY_VALUES
            .iter()
            .any(|v| v.eq_ignore_ascii_case(&privacy))
        {
            self.script_error(
                "KSR.textops.is_privacy",
                format!("unknown privacy value {privacy:?}"),
            );
            return -1;
        }
        kemi(self.message.as_ref().is_some_and(|m| {
            m.sip
                .header_values("Privacy")
                .flat_map(|v| v.split(';'))
                .any(|v| v.trim().eq_ignore_ascii_case(&privacy))
        }))
    }
    async fn in_list(&mut self, subject: String, list: String, vsep: String) -> i32 {
        kemi(list_items(&subject, &list, &vsep).is_some_and(|items| items.contains(&&*subject)))
    }
    async fn in_list_prefix(&mut self, subject: String, list: String, vsep: String) -> i32 {
        kemi(list_items(&subject, &list, &vsep).is_some_and(|items| {
            items
                .iter()
                .any(|item| !item.is_empty() && subject.starts_with(item))
        }))
    }
    async fn cmp_str(&mut self, s1: String, s2: String) -> i32 {
        ordering(s1.as_bytes().cmp(s2.as_bytes()))
    }
    async fn cmp_istr(&mut self, s1: String, s2: String) -> i32 {
        let lower = |s: &str| s.to_ascii_lowercase();
        ordering(lower(&s1).as_bytes().cmp(lower(&s2).as_bytes()))
    }
    async fn is_audio_on_hold(&mut self) -> i32 {
        kemi(self.audio_on_hold("KSR.textops.is_audio_on_hold"))
    }
    async fn starts_with(&mut self, s1: String, s2: String) -> i32 {
        if s1.len() < s2.len() {
            return -1;
        }
        ordering(s1.as_bytes()[..s2.len()].cmp(s2.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{INVITE, actions, ctx, invite_with, logs, ready, rendered};

    #[test]
    fn regexes_compile_like_kamailio() {
        let re = compile_regex("^to:.*BOB").unwrap();
        assert!(re.is_match(b"INVITE x SIP/2.0\r\nTo: <sip:bob@b>\r\n"));
        assert!(!compile_regex("a.b").unwrap().is_match(b"a\nb"));
        let via = compile_regex(r"^(via|v):[[:space:]]*SIP/2\.0/[[:alpha:]]+ \w+").unwrap();
        assert!(via.is_match(b"X: y\r\nv: SIP/2.0/UDP host\r\n"));
        assert!(
            compile_regex("caf\u{e9}")
                .unwrap()
                .is_match("CAF\u{e9}".as_bytes())
        );
        // A program over the size limit is refused, not run.
        assert!(compile_regex("(?:a{100}){100}").is_err());
        let e = compile_regex("(").unwrap_err();
        assert_eq!(
            regex_error("(", &e),
            "invalid regular expression \"(\": unclosed group"
        );
    }

    #[test]
    fn lists_and_media_types() {
        assert_eq!(
            list_items("fi", " dk, fi ,no", ","),
            Some(vec!["dk", "fi", "no"])
        );
        assert_eq!(list_items("", "a", ","), None);
        assert_eq!(list_items("a", "a", ""), None);
        assert!(is_media_type("application/sdp"));
        assert!(!is_media_type("application/sdp, text/plain"));
        assert!(!is_media_type("sdp"));
        assert_eq!(
            media_type(" Application/SDP ; charset=x"),
            "application/sdp"
        );
    }

    /// Searches run on the message as received, without case, `^` at each
    /// line; an empty pattern matches, a bad one is logged.
    #[test]
    fn search_the_received_message() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.search("^to:.*BOB".into())), 1);
        assert_eq!(ready(c.search("^X-Missing:".into())), -1);
        assert_eq!(ready(c.search("".into())), 1);
        assert_eq!(ready(c.search("(".into())), -1);
        assert_eq!(
            logs(&c),
            vec!["KSR.textops.search: invalid regular expression \"(\": unclosed group"]
        );
        assert_eq!(ready(c.search_body("v=0".into())), -1);
    }

    /// `search_hf` looks at the first, the last or any value of a header.
    #[test]
    fn search_header_values() {
        let mut c = ctx(&invite_with(&[], &["X-Tag: one", "X-Tag: two"]));
        assert_eq!(
            ready(c.search_hf("X-Tag".into(), "two".into(), "".into())),
            1
        );
        assert_eq!(
            ready(c.search_hf("X-Tag".into(), "two".into(), "f".into())),
            -1
        );
        assert_eq!(
            ready(c.search_hf("X-Tag".into(), "two".into(), "l".into())),
            1
        );
        assert_eq!(ready(c.search_hf("".into(), "two".into(), "".into())), -1);
        assert_eq!(ready(c.is_present_hf("user-agent".into())), 1);
        assert_eq!(ready(c.is_present_hf("Route".into())), -1);
        assert_eq!(ready(c.is_present_hf_re("^x-t".into())), 1);
    }

    /// Headers removed by name pattern leave the forwarded message, each
    /// name reported once with its count; `remove_hf_exp` spares those
    /// matching the skip pattern.
    #[test]
    fn remove_headers_by_pattern() {
        let raw = invite_with(&[], &["X-Debug: 1", "X-Keep: 2", "X-Debug: 3"]);
        let mut c = ctx(&raw);
        assert_eq!(ready(c.remove_hf_exp("^x-".into(), "^x-keep$".into())), 1);
        let out = rendered(&c);
        assert!(!out.contains("X-Debug"), "{out}");
        assert!(out.contains("\r\nX-Keep: 2\r\n"), "{out}");
        assert_eq!(
            actions(&c),
            vec![Event::HeaderRemoved {
                name: "X-Debug".into(),
                count: 2,
            }]
        );
        assert_eq!(ready(c.remove_hf_re("^x-nothing".into())), -1);
        assert_eq!(ready(c.remove_hf_re("^x-keep$".into())), 1);
        assert!(!rendered(&c).contains("X-Keep"));
    }

    /// A new body replaces the old one with its type and length.
    #[test]
    fn set_body_and_body_tests() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.has_body()), -1);
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\n";
        assert_eq!(ready(c.set_body(sdp.into(), "application/sdp".into())), 1);
        let out = rendered(&c);
        assert!(out.ends_with(&format!("\r\n\r\n{sdp}")), "{out}");
        assert!(out.contains("Content-Type: application/sdp\r\n"), "{out}");
        assert!(
            out.contains(&format!("Content-Length: {}\r\n", sdp.len())),
            "{out}"
        );
        assert_eq!(ready(c.set_body("".into(), "text/plain".into())), -1);
        assert_eq!(
            logs(&c),
            vec!["KSR.textops.set_body: empty body or content type"]
        );

        let with_body = INVITE.replace(
            "Content-Length: 0\r\n\r\n",
            "Content-Type: Application/SDP; charset=x\r\nContent-Length: 4\r\n\r\nv=0\n",
        );
        let mut c = ctx(&with_body);
        assert_eq!(ready(c.has_body()), 1);
        assert_eq!(ready(c.has_body_type("application/sdp".into())), 1);
        assert_eq!(ready(c.has_body_type("text/plain".into())), -1);
        assert_eq!(ready(c.has_body_type("sdp".into())), -1);
        assert_eq!(ready(c.search_body("^v=0$".into())), 1);
    }

    /// Privacy values are matched in any Privacy header; an unknown value
    /// is the script's mistake.
    #[test]
    fn privacy() {
        let mut c = ctx(&invite_with(&[], &["Privacy: header;ID"]));
        assert_eq!(ready(c.is_privacy("id".into())), 1);
        assert_eq!(ready(c.is_privacy("user".into())), -1);
        assert_eq!(ready(c.is_privacy("secret".into())), -1);
        assert_eq!(
            logs(&c),
            vec!["KSR.textops.is_privacy: unknown privacy value \"secret\""]
        );
    }

    /// The string helpers and their three-way results (1 equal, -1 after,
    /// -2 before).
    #[test]
    fn string_helpers() {
        let mut c = ctx(INVITE);
        let list = |s: &str| s.to_string();
        assert_eq!(
            ready(c.in_list("fi".into(), list(" dk, fi ,no"), ",".into())),
            1
        );
        assert_eq!(ready(c.in_list("f".into(), list("dk,fi"), ",".into())), -1);
        assert_eq!(
            ready(c.in_list_prefix("+358401".into(), list("+46;+358"), ";".into())),
            1
        );
        assert_eq!(ready(c.cmp_str("a".into(), "b".into())), -2);
        assert_eq!(ready(c.cmp_str("b".into(), "a".into())), -1);
        assert_eq!(ready(c.cmp_istr("ABC".into(), "abc".into())), 1);
        assert_eq!(ready(c.starts_with("sip:alice".into(), "sip:".into())), 1);
        assert_eq!(ready(c.starts_with("a".into(), "abc".into())), -1);
    }
}
