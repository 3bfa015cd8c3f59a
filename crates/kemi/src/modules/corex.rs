//! `KSR.corex`: Kamailio's corex functions that apply to kemibox: extended
//! flags, the send socket, R-URI user and User-Agent tests.

use std::net::{IpAddr, SocketAddr};

use kemibox_sip::Uri;

use crate::bindings::kemibox::ksr::corex::Host;
use crate::{AppendedBranch, Ctx, Level, Message, Transport};

/// Branches one request may fork to (Kamailio's `max_branches` default).
const MAX_BRANCHES: usize = 12;

impl Ctx {
    fn append_uri(&mut self, function: &str, uri: String, q: Option<String>) -> i32 {
        if let Err(e) = Uri::parse(&uri) {
            self.script_error(function, format!("invalid URI {uri:?}: {e}"));
            return -1;
        }
        self.append(AppendedBranch {
            uri,
            dst_uri: None,
            q,
            path: Vec::new(),
        })
    }

    /// Add a branch for `t_relay`, up to [`MAX_BRANCHES`]. 1, or -1.
    pub(crate) fn append(&mut self, branch: AppendedBranch) -> i32 {
        let Some(m) = self.message.as_mut().filter(|m| m.sip.is_request()) else {
            return -1;
        };
        if m.branches.len() + 1 >= MAX_BRANCHES {
            self.log(
                Level::Warn,
                &format!("KSR.corex.append_branch: at most {MAX_BRANCHES} branches"),
            );
            return -1;
        }
        m.branches.push(branch);
        1
    }
}

/// Highest extended flag (Kamailio's `KSR_MAX_XFLAG`).
const MAX_XFLAG: i32 = 63;

/// A socket specification `[proto:]host[:port]` (Kamailio's
/// `parse_phostport`): the protocol name if given, the host (brackets
/// removed) and the port (`None`: any). Shared with the proxy, which reads
/// a local request's socket (`kemibox_kemi::uac::LocalRequest::socket`)
/// as `set_send_socket` reads the script's.
pub fn parse_socket(spec: &str) -> Option<(Option<String>, String, Option<u16>)> {
    let (proto, rest) = match spec.split_once(':') {
        Some((p, rest))
            if ["udp", "tcp", "tls", "sctp", "ws", "wss"]
                .iter()
                .any(|k| p.eq_ignore_ascii_case(k)) =>
        {
            (Some(p.to_ascii_lowercase()), rest)
        }
        _ => (None, spec),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (host, port)
    } else if rest.matches(':').count() > 1 {
        // A bare IPv6 address.
        (rest, None)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p != 0)?),
        None => None,
    };
    Some((proto, host.to_string(), port))
}

impl Ctx {
    fn xflag(&mut self, function: &str, fval: i32, set: Option<bool>) -> i32 {
        if !(0..=MAX_XFLAG).contains(&fval) {
            self.script_error(function, format!("flag {fval} out of range 0..{MAX_XFLAG}"));
            return -1;
        }
        let bit = 1u64 << fval;
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        match set {
            Some(true) => m.xflags |= bit,
            Some(false) => m.xflags &= !bit,
            None => return if m.xflags & bit != 0 { 1 } else { -1 },
        }
        1
    }
}

impl Host for Ctx {
    async fn has_ruri_user(&mut self) -> i32 {
        let user = self
            .message
            .as_ref()
            .filter(|m| m.sip.is_request())
            .and_then(Message::ruri)
            .is_some_and(|u| Uri::parse(&u).is_ok_and(|u| u.user.is_some_and(|s| !s.is_empty())));
        if user { 1 } else { -1 }
    }
    async fn has_user_agent(&mut self) -> i32 {
        let present = self
            .message
            .as_ref()
            .and_then(|m| m.sip.user_agent())
            .is_some_and(|ua| !ua.is_empty());
        if present { 1 } else { -1 }
    }
    async fn setxflag(&mut self, fval: i32) -> i32 {
        self.xflag("KSR.corex.setxflag", fval, Some(true))
    }
    async fn resetxflag(&mut self, fval: i32) -> i32 {
        self.xflag("KSR.corex.resetxflag", fval, Some(false))
    }
    async fn isxflagset(&mut self, fval: i32) -> i32 {
        self.xflag("KSR.corex.isxflagset", fval, None)
    }
    async fn set_send_socket(&mut self, ssock: String) -> i32 {
        const FUNCTION: &str = "KSR.corex.set_send_socket";
        if self.message.is_none() {
            return -1;
        }
        if ssock.is_empty() {
            if let Some(m) = self.message.as_mut() {
                m.send_socket = None;
            }
            return 1;
        }
        let Some((proto, host, port)) = parse_socket(&ssock) else {
            self.script_error(FUNCTION, format!("invalid socket {ssock:?}"));
            return -1;
        };
        let transport = match proto.as_deref() {
            Some("udp") => Some(Transport::Udp),
            Some("tcp") => Some(Transport::Tcp),
            Some(_) => None,
            None => self.message.as_ref().map(|m| m.transport),
        };
        let found: Option<SocketAddr> = match (transport, host.parse::<IpAddr>()) {
            (Some(_), Ok(ip)) => self
                .myself
                .addresses
                .iter()
                .find(|a| a.ip() == ip && port.is_none_or(|p| p == a.port()))
                .copied(),
            _ => None,
        };
        match (transport, found) {
            (Some(t), Some(addr)) => {
                if let Some(m) = self.message.as_mut() {
                    m.send_socket = Some((t, addr));
                }
            }
            // As Kamailio: a warning, and the proxy keeps its choice.
            _ => self.log(
                Level::Warn,
                &format!("{FUNCTION}: no socket found to match {ssock:?}"),
            ),
        }
        1
    }
    async fn append_branch(&mut self) -> i32 {
        let Some(m) = self.message.as_ref().filter(|m| m.sip.is_request()) else {
            return -1;
        };
        let Some(uri) = m.ruri() else { return -1 };
        let branch = AppendedBranch {
            uri,
            dst_uri: m.dst_uri.clone(),
            q: None,
            path: Vec::new(),
        };
        self.append(branch)
    }
    async fn append_branch_uri(&mut self, uri: String) -> i32 {
        self.append_uri("KSR.corex.append_branch_uri", uri, None)
    }
    async fn append_branch_uri_q(&mut self, uri: String, q: String) -> i32 {
        let valid = q.parse::<f32>().is_ok_and(|v| (0.0..=1.0).contains(&v));
        if !valid {
            self.script_error(
                "KSR.corex.append_branch_uri_q",
                format!("q must be a number from 0 to 1, not {q:?}"),
            );
            return -1;
        }
        self.append_uri("KSR.corex.append_branch_uri_q", uri, Some(q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{INVITE, ctx, ctx_on, invite_with, logs, message, ready};

    #[test]
    fn socket_specifications() {
        let p = |s: &str| parse_socket(s);
        assert_eq!(
            p("udp:127.0.0.1:5060"),
            Some((Some("udp".into()), "127.0.0.1".into(), Some(5060)))
        );
        assert_eq!(p("127.0.0.1"), Some((None, "127.0.0.1".into(), None)));
        assert_eq!(
            p("TCP:[::1]:5080"),
            Some((Some("tcp".into()), "::1".into(), Some(5080)))
        );
        assert_eq!(p("::1"), Some((None, "::1".into(), None)));
        assert_eq!(p("udp:1.2.3.4:x"), None);
        assert_eq!(p("udp:"), None);
        assert_eq!(p("[::1"), None);
    }

    /// Extended flags 0..=63: set, test, reset; others are refused.
    #[test]
    fn extended_flags() {
        let mut c = ctx(INVITE);
        for flag in [0, 17, 63] {
            assert_eq!(ready(c.isxflagset(flag)), -1, "{flag}");
            assert_eq!(ready(c.setxflag(flag)), 1, "{flag}");
            assert_eq!(ready(c.isxflagset(flag)), 1, "{flag}");
        }
        assert_eq!(message(&mut c).xflags, 1 | 1 << 17 | 1 << 63);
        assert_eq!(ready(c.resetxflag(17)), 1);
        assert_eq!(ready(c.isxflagset(17)), -1);
        assert_eq!(ready(c.isxflagset(63)), 1);
        assert_eq!(ready(c.setxflag(64)), -1);
        assert_eq!(ready(c.isxflagset(-1)), -1);
        assert_eq!(
            logs(&c),
            vec![
                "KSR.corex.setxflag: flag 64 out of range 0..63",
                "KSR.corex.isxflagset: flag -1 out of range 0..63",
            ]
        );
    }

    /// `set_send_socket` picks one of the proxy's sockets, with the
    /// protocol asked for (the message's own when none is given) and any
    /// port when none is given; an empty value goes back to the proxy's
    /// choice.
    #[test]
    fn send_socket_choice() {
        let mut c = ctx_on(INVITE, Transport::Tcp);
        let mut pick = |spec: &str| {
            let r = ready(c.set_send_socket(spec.into()));
            (r, c.message.as_ref().and_then(|m| m.send_socket))
        };
        let addr = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert_eq!(
            pick("udp:192.0.2.1:5080"),
            (1, Some((Transport::Udp, addr("192.0.2.1:5080"))))
        );
        assert_eq!(
            pick("192.0.2.1"),
            (1, Some((Transport::Tcp, addr("192.0.2.1:5060"))))
        );
        assert_eq!(pick(""), (1, None));
        assert_eq!(
            pick("TCP:[192.0.2.1]:5080"),
            (1, Some((Transport::Tcp, addr("192.0.2.1:5080"))))
        );
    }

    /// A socket the proxy does not have, or a protocol it does not
    /// serve, is warned about (1, the proxy's choice is kept, as in
    /// Kamailio); an unreadable value is an error.
    #[test]
    fn send_socket_not_found_or_invalid() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.set_send_socket("udp:192.0.2.1:5080".into())), 1);
        assert_eq!(ready(c.set_send_socket("udp:198.51.100.1:5060".into())), 1);
        assert_eq!(ready(c.set_send_socket("tls:192.0.2.1:5061".into())), 1);
        assert_eq!(ready(c.set_send_socket("udp:192.0.2.1:x".into())), -1);
        let kept = "192.0.2.1:5080".parse().unwrap();
        assert_eq!(message(&mut c).send_socket, Some((Transport::Udp, kept)));
        assert_eq!(
            logs(&c),
            vec![
                "KSR.corex.set_send_socket: no socket found to match \"udp:198.51.100.1:5060\"",
                "KSR.corex.set_send_socket: no socket found to match \"tls:192.0.2.1:5061\"",
                "KSR.corex.set_send_socket: invalid socket \"udp:192.0.2.1:x\"",
            ]
        );
        assert!(matches!(
            c.events[0],
            crate::Event::Log {
                level: Level::Warn,
                ..
            }
        ));
    }

    /// Branches for `t_relay`: the R-URI (with `$du`), or a given URI;
    /// at most 11 besides the R-URI's.
    #[test]
    fn appended_branches() {
        let mut c = ctx(INVITE);
        message(&mut c).dst_uri = Some("sip:192.0.2.50".into());
        assert_eq!(ready(c.append_branch()), 1);
        assert_eq!(
            ready(c.append_branch_uri("sip:carol@example.com".into())),
            1
        );
        assert_eq!(
            ready(c.append_branch_uri_q("sip:dave@example.com".into(), "0.5".into())),
            1
        );
        assert_eq!(ready(c.append_branch_uri("carol".into())), -1);
        assert_eq!(
            ready(c.append_branch_uri_q("sip:eve@example.com".into(), "2".into())),
            -1
        );
        let branches = &message(&mut c).branches;
        assert_eq!(
            branches
                .iter()
                .map(|b| (b.uri.as_str(), b.dst_uri.as_deref(), b.q.as_deref()))
                .collect::<Vec<_>>(),
            vec![
                ("sip:bob@example.com", Some("sip:192.0.2.50"), None),
                ("sip:carol@example.com", None, None),
                ("sip:dave@example.com", None, Some("0.5")),
            ]
        );
        for _ in 3..MAX_BRANCHES - 1 {
            assert_eq!(ready(c.append_branch()), 1);
        }
        assert_eq!(ready(c.append_branch()), -1);
        assert_eq!(message(&mut c).branches.len(), MAX_BRANCHES - 1);
    }

    /// The R-URI user and User-Agent tests.
    #[test]
    fn ruri_user_and_user_agent() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.has_ruri_user()), 1);
        assert_eq!(ready(c.has_user_agent()), 1);
        let raw = invite_with(
            &[
                ("INVITE ", "INVITE sip:example.com SIP/2.0"),
                ("User-Agent:", ""),
            ],
            &[],
        );
        let mut c = ctx(&raw);
        assert_eq!(ready(c.has_ruri_user()), -1);
        assert_eq!(ready(c.has_user_agent()), -1);
    }
}
