use super::*;
use crate::bindings::kemibox::ksr::pv::Host as _;
use crate::bindings::kemibox::ksr::textops::Host as _;
use crate::testing::{INVITE, ctx, invite_with, logs, message, ready, rendered, s, value};

const REPLY: &str = "SIP/2.0 486 Busy Here\r\n\
Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-1\r\n\
From: <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>;tag=b1\r\n\
Call-ID: call-1@192.0.2.7\r\n\
CSeq: 1 INVITE\r\n\
X-Extra: 1\r\n\
Content-Length: 0\r\n\r\n";

#[test]
fn header_name_expressions() {
    assert_eq!(
        parse_hname("Supported"),
        Some(("Supported", Index::Default))
    );
    assert_eq!(parse_hname(" Allow [ 2 ] "), Some(("Allow", Index::At(2))));
    assert_eq!(parse_hname("Allow[-1]"), Some(("Allow", Index::At(-1))));
    assert_eq!(parse_hname("Allow[*]"), Some(("Allow", Index::All)));
    assert_eq!(parse_hname("Allow[0]"), Some(("Allow", Index::Default)));
    assert_eq!(parse_hname("Contact.expires"), None);
    assert_eq!(parse_hname("Allow[x]"), None);
    assert_eq!(parse_hname("Allow[1"), None);
    assert_eq!(parse_hname(""), None);
    assert_eq!(parse_hname("A B"), None);
}

#[test]
fn values_split_outside_quotes() {
    let v = "a, \"b, c\" <sip:x>,d ,";
    let r: Vec<&str> = value_ranges(v).iter().map(|&(a, b)| &v[a..b]).collect();
    assert_eq!(r, vec!["a", "\"b, c\" <sip:x>", "d", ""]);
    assert_eq!(value_ranges("x"), vec![(0, 1)]);
}

#[test]
fn glob_patterns() {
    let m = |p: &str, t: &str, fold: bool| {
        glob(
            &p.chars().collect::<Vec<_>>(),
            &t.chars().collect::<Vec<_>>(),
            fold,
        )
    };
    assert!(m("*.example.com", "sip.example.com", false));
    assert!(!m("*.example.com", "example.com", false));
    assert!(m("a?c", "abc", false));
    assert!(m("[a-c]x[!0-9]", "bxz", false));
    assert!(!m("[a-c]x[!0-9]", "bx5", false));
    assert!(m("[]]", "]", false));
    assert!(m("\\*", "*", false));
    assert!(!m("\\*", "a", false));
    assert!(m("ABC*", "abcdef", true));
    assert!(!m("ABC*", "abcdef", false));
    assert!(m("*a*b*c*", "xxaxxbxxcxx", false));
    assert!(m("[", "[", false));
    assert!(m("a[b", "a[b", false));
    assert!(!m("[", "a", false));
    assert!(m("", "", false));
    assert!(!m("", "a", false));
}

#[test]
fn fnmatch_returns_like_kamailio() {
    let mut c = ctx(INVITE);
    assert_eq!(
        ready(c.fnmatch("sip.example.com".into(), "*.example.*".into())),
        0
    );
    assert_eq!(
        ready(c.fnmatch("SIP.EXAMPLE.COM".into(), "*.example.*".into())),
        -1
    );
    assert_eq!(
        ready(c.fnmatch_ex("SIP.EXAMPLE.COM".into(), "*.example.*".into(), "i".into())),
        0
    );
    // Bounded work: a long pattern against a long value is refused.
    let long = "a".repeat(5000);
    let pattern = "*a".repeat(500) + "b";
    assert_eq!(ready(c.fnmatch(long, pattern)), -1);
    assert_eq!(
        logs(&c),
        vec!["KSR.textopsx.fnmatch: pattern (1001 characters) and value (5000) too long to match"]
    );
}

fn with_lists() -> Ctx {
    ctx(&invite_with(
        &[],
        &[
            "Supported: timer, 100rel, path",
            "Allow: INVITE,ACK",
            "Allow: BYE",
        ],
    ))
}

#[test]
fn values_appended_and_inserted() {
    let mut c = with_lists();
    assert_eq!(
        ready(c.append_hf_value("Allow[1]".into(), "CANCEL".into())),
        1
    );
    assert_eq!(
        ready(c.insert_hf_value("Supported[2]".into(), "gruu".into())),
        1
    );
    assert_eq!(ready(c.append_hf_value("X-New".into(), "v".into())), 1);
    assert_eq!(
        ready(c.insert_hf_value("Allow".into(), "OPTIONS".into())),
        1
    );
    assert_eq!(ready(c.insert_hf_value("X-None[2]".into(), "v".into())), -1);
    assert_eq!(ready(c.insert_hf_value("X-None[1]".into(), "w".into())), 1);
    let out = rendered(&c);
    assert!(
        out.contains("\r\nSupported: timer, gruu,100rel, path\r\n"),
        "{out}"
    );
    assert!(
        out.contains("\r\nAllow: OPTIONS\r\nAllow: INVITE,CANCEL,ACK\r\nAllow: BYE\r\n"),
        "{out}"
    );
    assert!(out.ends_with("\r\nX-New: v\r\nX-None: w\r\n\r\n"), "{out}");
    assert_eq!(ready(c.append_hf_value("Allow[*]".into(), "x".into())), -1);
    assert_eq!(ready(c.append_hf_value("Allow.p".into(), "x".into())), -1);
    assert_eq!(
        ready(c.append_hf_value("X-Bad".into(), "a\r\nInjected: 1".into())),
        -1
    );
    assert_eq!(
        logs(&c),
        vec![
            "KSR.textopsx.append_hf_value: [*] is not supported",
            "KSR.textopsx.append_hf_value: invalid header name expression \"Allow.p\"",
            "KSR.textopsx.append_hf_value: invalid character in header value: \"a\\r\\nInjected: 1\"",
        ]
    );
}

#[test]
fn values_removed_and_assigned() {
    let mut c = with_lists();
    assert_eq!(ready(c.remove_hf_value("Supported".into())), 1);
    assert_eq!(ready(c.remove_hf_value("Allow[-1]".into())), 1);
    assert_eq!(
        ready(c.assign_hf_value("Allow[2]".into(), "PRACK".into())),
        1
    );
    assert_eq!(ready(c.assign_hf_value("Allow[9]".into(), "x".into())), -1);
    assert_eq!(ready(c.remove_hf_value("X-None".into())), -1);
    let out = rendered(&c);
    assert!(out.contains("\r\nSupported: 100rel, path\r\n"), "{out}");
    assert!(out.contains("\r\nAllow: INVITE,PRACK\r\n"), "{out}");
    assert!(!out.contains("BYE"), "{out}");
    let mut c = with_lists();
    assert_eq!(ready(c.remove_hf_value("Supported[3]".into())), 1);
    assert!(rendered(&c).contains("\r\nSupported: timer, 100rel\r\n"));
    assert_eq!(ready(c.remove_hf_value("Allow[*]".into())), 1);
    assert!(!rendered(&c).contains("Allow"));
    assert_eq!(ready(c.remove_hf_value("Allow[*]".into())), -1);
}

#[test]
fn values_included_excluded_and_tested() {
    let mut c = with_lists();
    assert_eq!(
        ready(c.hf_value_exists("Supported".into(), "100REL".into())),
        1
    );
    assert_eq!(ready(c.hf_value_exists("Allow".into(), "BYE".into())), 1);
    assert_eq!(
        ready(c.hf_value_exists("Allow".into(), "CANCEL".into())),
        -1
    );
    assert_eq!(
        ready(c.hf_value_exists("Allow[1]".into(), "BYE".into())),
        -1
    );
    assert_eq!(ready(c.include_hf_value("Allow".into(), "bye".into())), 1);
    assert_eq!(
        ready(c.include_hf_value("Allow".into(), "CANCEL".into())),
        1
    );
    assert_eq!(
        ready(c.include_hf_value("Require".into(), "timer".into())),
        1
    );
    assert_eq!(
        ready(c.exclude_hf_value("Supported".into(), "100rel".into())),
        1
    );
    assert_eq!(ready(c.exclude_hf_value("Allow".into(), "bye".into())), 1);
    assert_eq!(
        ready(c.exclude_hf_value("Allow".into(), "nothing".into())),
        1
    );
    let out = rendered(&c);
    assert!(out.contains("\r\nSupported: timer, path\r\n"), "{out}");
    assert!(out.contains("\r\nAllow: INVITE,ACK,CANCEL\r\n"), "{out}");
    assert!(!out.contains("BYE"), "{out}");
    assert!(out.contains("\r\nRequire: timer\r\n"), "{out}");
}

/// After `msg_apply_changes`, reads see the edits and the message sent is
/// unchanged by the call.
#[test]
fn apply_changes_makes_edits_visible() {
    let mut c = with_lists();
    assert_eq!(ready(c.append_hf_value("X-Added".into(), "1".into())), 1);
    assert_eq!(ready(c.remove_hf_value("Allow[*]".into())), 1);
    assert_eq!(ready(c.is_present_hf("X-Added".into())), -1);
    let before = rendered(&c);
    assert_eq!(ready(c.msg_apply_changes()), 1);
    assert_eq!(rendered(&c), before);
    assert_eq!(ready(c.is_present_hf("X-Added".into())), 1);
    assert_eq!(ready(c.is_present_hf("Allow".into())), -1);
    assert_eq!(value(ready(c.get("$hdr(X-Added)".into()))), s("1"));
    // A value edit after applying works on the new message.
    assert_eq!(ready(c.append_hf_value("X-Added[1]".into(), "2".into())), 1);
    assert!(rendered(&c).contains("\r\nX-Added: 1,2\r\n"));

    message(&mut c).route = RouteType::Branch;
    assert_eq!(ready(c.msg_apply_changes()), -1);
    assert_eq!(
        logs(&c),
        vec!["KSR.textopsx.msg_apply_changes: not allowed in branch_route"]
    );
}

#[test]
fn reply_status_changed() {
    let mut c = ctx(REPLY);
    message(&mut c).route = RouteType::OnReply;
    assert_eq!(ready(c.remove_hf_value("X-Extra".into())), 1);
    assert_eq!(ready(c.change_reply_status(404, "Not Here".into())), 1);
    let out = rendered(&c);
    assert!(out.starts_with("SIP/2.0 404 Not Here\r\nVia: "), "{out}");
    assert!(!out.contains("X-Extra"), "{out}");
    assert_eq!(
        value(ready(c.get("$rs".into()))),
        Some(crate::PvValue::Int(404))
    );
    assert_eq!(value(ready(c.get("$rr".into()))), s("Not Here"));
    assert_eq!(ready(c.change_reply_status(200, "OK".into())), -1);
    assert_eq!(ready(c.change_reply_status(700, "Bad".into())), -1);
    assert_eq!(ready(c.change_reply_status(603, "".into())), -1);
    assert_eq!(ready(c.change_reply_status(603, "a\r\nb".into())), -1);
    let mut r = ctx(INVITE);
    assert_eq!(ready(r.change_reply_status(404, "x".into())), -1);
    assert_eq!(
        logs(&c),
        vec![
            "KSR.textopsx.change_reply_status: the class of a 404 reply cannot change (to 200)",
            "KSR.textopsx.change_reply_status: status code 700 outside 100..699",
            "KSR.textopsx.change_reply_status: invalid reason \"\"",
            "KSR.textopsx.change_reply_status: invalid reason \"a\\r\\nb\"",
        ]
    );
    // In a failure route the message is the request: refused, saying
    // where the reply's status can change.
    let mut f = ctx(INVITE);
    message(&mut f).route = RouteType::Failure;
    assert_eq!(ready(f.change_reply_status(404, "x".into())), -1);
    let said = logs(&f);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].starts_with(
            "KSR.textopsx.change_reply_status: the message is not a reply: in failure_route \
             it is the request"
        ) && said[0].contains("KSR.tm.t_on_reply"),
        "{said:?}"
    );
    let mut p = ctx(&REPLY.replace("486 Busy Here", "180 Ringing"));
    assert_eq!(ready(p.change_reply_status(183, "Progress".into())), 1);
    assert_eq!(ready(p.change_reply_status(200, "OK".into())), -1);
}

#[test]
fn body_removed_and_headers_kept() {
    let raw = INVITE.replace(
        "Content-Length: 0\r\n\r\n",
        "Content-Type: text/plain\r\nX-Keep-Me: 1\r\nContent-Length: 5\r\n\r\nhello",
    );
    let mut c = ctx(&raw);
    assert_eq!(ready(c.remove_body()), 1);
    let out = rendered(&c);
    assert!(out.ends_with("Content-Length: 0\r\n\r\n"), "{out}");
    assert!(!out.contains("text/plain"), "{out}");
    assert_eq!(ready(c.remove_body()), 1);

    assert_eq!(ready(c.keep_hf_re("^x-keep".into())), -1);
    let out = rendered(&c);
    assert!(out.contains("X-Keep-Me: 1"), "{out}");
    assert!(
        !out.contains("User-Agent") && out.contains("Call-ID"),
        "{out}"
    );
    assert_eq!(ready(c.keep_hf()), -1);
    assert!(!rendered(&c).contains("X-Keep-Me"));
    assert!(logs(&c).is_empty());
    assert_eq!(ready(c.keep_hf_re("(".into())), -1);
    assert_eq!(
        logs(&c),
        vec!["KSR.textopsx.keep_hf_re: invalid regular expression \"(\": unclosed group"]
    );
}
