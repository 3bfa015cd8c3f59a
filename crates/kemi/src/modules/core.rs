//! Kamailio core exports on `KSR`: logging, method tests, flags, R-URI and
//! destination URI, `is_myself*`, reply/forward connection flags.

use kemibox_sip::Uri;

use crate::bindings::kemibox::ksr::core::Host;
use crate::{ActionKind, Ctx, Event, Level, Message, REFUSED, Transport};

/// Number of flag bits (message, branch and script flags).
const FLAG_BITS: i32 = 32;
/// Highest branch index accepted by `setbiflag` and friends.
const MAX_BRANCHES: i32 = 12;

/// Set (`Some(true)`), reset (`Some(false)`) or test (`None`) `bit`.
fn apply_flag(flags: &mut u32, bit: u32, set: Option<bool>) -> bool {
    match set {
        Some(true) => *flags |= bit,
        Some(false) => *flags &= !bit,
        None => return *flags & bit != 0,
    }
    true
}

/// Split a bare `host`, `ip`, `host:port`, `[v6]` or `[v6]:port`; a bare
/// IPv6 address (several colons) has no port. A port that is not a number
/// leaves the whole text as the host (so it matches nothing).
fn split_host_port(target: &str) -> (&str, Option<u16>) {
    if let Some(rest) = target.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => match port.strip_prefix(':').and_then(|p| p.parse().ok()) {
                Some(port) => (host, Some(port)),
                None => (target, None),
            },
            None => (target, None),
        };
    }
    match target.split_once(':') {
        Some((host, port)) if !port.contains(':') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (target, None),
        },
        _ => (target, None),
    }
}

impl Ctx {
    fn method_is(&self, name: &str) -> bool {
        self.message
            .as_ref()
            .is_some_and(|m| m.sip.method_str().eq_ignore_ascii_case(name))
    }

    fn flag_bit(&mut self, function: &str, flag: i32) -> Option<u32> {
        if (0..FLAG_BITS).contains(&flag) {
            Some(1u32 << flag)
        } else {
            self.script_error(function, format!("flag {flag} out of range 0..31"));
            None
        }
    }

    fn with_message(&mut self, f: impl FnOnce(&mut Message) -> bool) -> bool {
        self.message.as_mut().is_some_and(f)
    }

    /// Set one of the message's boolean settings; false without a message.
    fn raise(&mut self, field: fn(&mut Message) -> &mut bool) -> bool {
        self.with_message(|m| {
            *field(m) = true;
            true
        })
    }

    fn update_flags(&mut self, function: &str, flag: i32, set: Option<bool>) -> bool {
        let Some(bit) = self.flag_bit(function, flag) else {
            return false;
        };
        self.with_message(|m| apply_flag(&mut m.flags, bit, set))
    }

    fn update_branch_flags(
        &mut self,
        function: &str,
        flag: i32,
        branch: i32,
        set: Option<bool>,
    ) -> bool {
        let Some(bit) = self.flag_bit(function, flag) else {
            return false;
        };
        if !(0..MAX_BRANCHES).contains(&branch) {
            self.script_error(
                function,
                format!("branch {branch} out of range 0..{}", MAX_BRANCHES - 1),
            );
            return false;
        }
        let index = branch as usize;
        self.with_message(|m| {
            if m.branch_flags.len() <= index {
                m.branch_flags.resize(index + 1, 0);
            }
            apply_flag(&mut m.branch_flags[index], bit, set)
        })
    }

    fn update_script_flags(&mut self, function: &str, flag: i32, set: Option<bool>) -> bool {
        let Some(bit) = self.flag_bit(function, flag) else {
            return false;
        };
        apply_flag(&mut self.sflags, bit, set)
    }

    fn transport_is(&self, transport: Transport) -> bool {
        self.message
            .as_ref()
            .is_some_and(|m| m.transport == transport)
    }

    fn uri_is_myself(&self, uri: &str) -> bool {
        Uri::parse(uri).is_ok_and(|u| self.myself.matches(u.host, u.port))
    }

    /// `KSR.is_myself`: a `sip:`/`sips:` URI is parsed as one (as Kamailio
    /// does); anything else is a bare host, IP or `host:port`.
    fn target_is_myself(&self, target: &str) -> bool {
        let target = target.trim();
        let scheme = target.split_once(':').map(|(s, _)| s);
        if scheme.is_some_and(|s| s.eq_ignore_ascii_case("sip") || s.eq_ignore_ascii_case("sips")) {
            return self.uri_is_myself(target);
        }
        let (host, port) = split_host_port(target);
        !host.is_empty() && self.myself.matches(host, port)
    }

    /// Rewrite the R-URI with `change` applied to its parsed form.
    fn rewrite_ruri(&mut self, function: &str, change: impl FnOnce(&Uri<'_>) -> String) -> bool {
        let Some(current) = self.message.as_ref().and_then(Message::ruri) else {
            return false;
        };
        match Uri::parse(&current) {
            Ok(uri) => {
                let text = change(&uri);
                self.set_ruri(function, text)
            }
            Err(e) => {
                self.script_error(function, format!("cannot parse R-URI {current:?}: {e}"));
                false
            }
        }
    }

    /// Replace the R-URI after checking it parses.
    pub(crate) fn set_ruri(&mut self, function: &str, uri: String) -> bool {
        if let Err(e) = Uri::parse(&uri) {
            self.script_error(function, format!("invalid URI {uri:?}: {e}"));
            return false;
        }
        let recorded = uri.clone();
        let done = self.with_message(|m| m.edits.set_ruri(uri).is_ok());
        if done {
            self.events.push(Event::PvSet {
                name: "$ru".into(),
                value: Some(recorded),
            });
        }
        done
    }

    /// Set or clear `$du`, checking a new value parses.
    pub(crate) fn set_dst_uri(&mut self, function: &str, uri: Option<String>) -> bool {
        if let Some(u) = &uri
            && let Err(e) = Uri::parse(u)
        {
            self.script_error(function, format!("invalid URI {u:?}: {e}"));
            return false;
        }
        let recorded = uri.clone();
        let done = self.with_message(|m| {
            m.dst_uri = uri;
            true
        });
        if done {
            self.events.push(Event::PvSet {
                name: "$du".into(),
                value: recorded,
            });
        }
        done
    }
}

impl Host for Ctx {
    async fn dbg(&mut self, msg: String) {
        self.log(Level::Dbg, &msg);
    }
    async fn info(&mut self, msg: String) {
        self.log(Level::Info, &msg);
    }
    async fn notice(&mut self, msg: String) {
        self.log(Level::Notice, &msg);
    }
    async fn warn(&mut self, msg: String) {
        self.log(Level::Warn, &msg);
    }
    async fn err(&mut self, msg: String) {
        self.log(Level::Err, &msg);
    }
    async fn crit(&mut self, msg: String) {
        self.log(Level::Crit, &msg);
    }
    async fn log(&mut self, level: String, msg: String) {
        self.log(Level::from_name(&level), &msg);
    }

    async fn is_method(&mut self, method: String) -> bool {
        self.method_is(&method)
    }
    async fn is_method_in(&mut self, methods: String) -> bool {
        methods.chars().any(|c| {
            let name = match c {
                'I' => "INVITE",
                'A' => "ACK",
                'B' => "BYE",
                'C' => "CANCEL",
                'R' => "REGISTER",
                'M' => "MESSAGE",
                'O' => "OPTIONS",
                'S' => "SUBSCRIBE",
                'P' => "PUBLISH",
                'N' => "NOTIFY",
                'U' => "UPDATE",
                'K' => "KDMQ",
                'G' => "GET",
                'T' => "POST",
                'V' => "PUT",
                'D' => "DELETE",
                _ => return false,
            };
            self.method_is(name)
        })
    }
    async fn is_invite(&mut self) -> bool {
        self.method_is("INVITE")
    }
    async fn is_ack(&mut self) -> bool {
        self.method_is("ACK")
    }
    async fn is_bye(&mut self) -> bool {
        self.method_is("BYE")
    }
    async fn is_cancel(&mut self) -> bool {
        self.method_is("CANCEL")
    }
    async fn is_register(&mut self) -> bool {
        self.method_is("REGISTER")
    }
    async fn is_options(&mut self) -> bool {
        self.method_is("OPTIONS")
    }
    async fn is_message(&mut self) -> bool {
        self.method_is("MESSAGE")
    }
    async fn is_subscribe(&mut self) -> bool {
        self.method_is("SUBSCRIBE")
    }
    async fn is_publish(&mut self) -> bool {
        self.method_is("PUBLISH")
    }
    async fn is_notify(&mut self) -> bool {
        self.method_is("NOTIFY")
    }
    async fn is_refer(&mut self) -> bool {
        self.method_is("REFER")
    }
    async fn is_info(&mut self) -> bool {
        self.method_is("INFO")
    }
    async fn is_update(&mut self) -> bool {
        self.method_is("UPDATE")
    }
    async fn is_prack(&mut self) -> bool {
        self.method_is("PRACK")
    }
    async fn is_kdmq(&mut self) -> bool {
        self.method_is("KDMQ")
    }

    async fn is_myself(&mut self, uri: String) -> bool {
        self.target_is_myself(&uri)
    }
    async fn is_myself_ruri(&mut self) -> bool {
        let ruri = self.message.as_ref().and_then(Message::ruri);
        ruri.is_some_and(|u| self.uri_is_myself(&u))
    }
    async fn is_myself_furi(&mut self) -> bool {
        let uri = self
            .message
            .as_ref()
            .and_then(|m| m.sip.from())
            .map(|f| f.uri.to_string());
        uri.is_some_and(|u| self.uri_is_myself(&u))
    }
    async fn is_myself_turi(&mut self) -> bool {
        let uri = self
            .message
            .as_ref()
            .and_then(|m| m.sip.to())
            .map(|t| t.uri.to_string());
        uri.is_some_and(|u| self.uri_is_myself(&u))
    }
    async fn is_myself_srcip(&mut self) -> bool {
        self.message
            .as_ref()
            .is_some_and(|m| self.myself.has_ip(m.source.ip()))
    }
    async fn is_myself_suri(&mut self) -> bool {
        self.message.as_ref().is_some_and(|m| {
            self.myself
                .matches(&m.source.ip().to_string(), Some(m.source.port()))
        })
    }
    async fn is_myself_duri(&mut self) -> bool {
        let duri = self.message.as_ref().and_then(|m| m.dst_uri.clone());
        duri.is_some_and(|u| self.uri_is_myself(&u))
    }
    async fn is_myself_nhuri(&mut self) -> bool {
        let next_hop = self
            .message
            .as_ref()
            .and_then(|m| m.dst_uri.clone().or_else(|| m.ruri()));
        next_hop.is_some_and(|u| self.uri_is_myself(&u))
    }
    async fn is_udp(&mut self) -> bool {
        self.transport_is(Transport::Udp)
    }
    async fn is_tcp(&mut self) -> bool {
        self.transport_is(Transport::Tcp)
    }
    async fn is_tls(&mut self) -> bool {
        false
    }
    async fn is_ws(&mut self) -> bool {
        false
    }
    async fn is_wss(&mut self) -> bool {
        false
    }
    async fn is_wsx(&mut self) -> bool {
        false
    }
    async fn is_sctp(&mut self) -> bool {
        false
    }
    async fn is_proto(&mut self, sproto: String) -> bool {
        sproto.chars().any(|c| match c.to_ascii_lowercase() {
            'u' => self.transport_is(Transport::Udp),
            't' => self.transport_is(Transport::Tcp),
            // e TLS, s SCTP, v WS, w WSS: not transports of kemibox.
            _ => false,
        })
    }
    async fn is_src_port(&mut self, vport: i32) -> bool {
        self.message
            .as_ref()
            .is_some_and(|m| i32::from(m.source.port()) == vport)
    }
    async fn is_dst_port(&mut self, vport: i32) -> bool {
        self.message
            .as_ref()
            .is_some_and(|m| i32::from(m.local.port()) == vport)
    }

    async fn setflag(&mut self, flag: i32) -> bool {
        self.update_flags("KSR.setflag", flag, Some(true))
    }
    async fn resetflag(&mut self, flag: i32) -> bool {
        self.update_flags("KSR.resetflag", flag, Some(false))
    }
    async fn isflagset(&mut self, flag: i32) -> bool {
        self.update_flags("KSR.isflagset", flag, None)
    }
    async fn setbflag(&mut self, flag: i32) -> bool {
        self.update_branch_flags("KSR.setbflag", flag, 0, Some(true))
    }
    async fn resetbflag(&mut self, flag: i32) -> bool {
        self.update_branch_flags("KSR.resetbflag", flag, 0, Some(false))
    }
    async fn isbflagset(&mut self, flag: i32) -> bool {
        self.update_branch_flags("KSR.isbflagset", flag, 0, None)
    }
    async fn setbiflag(&mut self, flag: i32, branch: i32) -> bool {
        self.update_branch_flags("KSR.setbiflag", flag, branch, Some(true))
    }
    async fn resetbiflag(&mut self, flag: i32, branch: i32) -> bool {
        self.update_branch_flags("KSR.resetbiflag", flag, branch, Some(false))
    }
    async fn isbiflagset(&mut self, flag: i32, branch: i32) -> bool {
        self.update_branch_flags("KSR.isbiflagset", flag, branch, None)
    }
    async fn setsflag(&mut self, flag: i32) -> bool {
        self.update_script_flags("KSR.setsflag", flag, Some(true))
    }
    async fn resetsflag(&mut self, flag: i32) -> bool {
        self.update_script_flags("KSR.resetsflag", flag, Some(false))
    }
    async fn issflagset(&mut self, flag: i32) -> bool {
        self.update_script_flags("KSR.issflagset", flag, None)
    }

    async fn seturi(&mut self, uri: String) -> bool {
        self.set_ruri("KSR.seturi", uri)
    }
    async fn setuser(&mut self, user: String) -> bool {
        self.rewrite_ruri("KSR.setuser", |u| u.with_user(Some(&user)).to_string())
    }
    async fn sethost(&mut self, host: String) -> bool {
        self.rewrite_ruri("KSR.sethost", |u| u.with_host(&host).to_string())
    }
    async fn setdsturi(&mut self, uri: String) -> bool {
        self.set_dst_uri("KSR.setdsturi", Some(uri))
    }
    async fn resetdsturi(&mut self) -> bool {
        self.set_dst_uri("KSR.resetdsturi", None)
    }
    async fn isdsturiset(&mut self) -> bool {
        self.message.as_ref().is_some_and(|m| m.dst_uri.is_some())
    }

    async fn force_rport(&mut self) -> bool {
        self.raise(|m| &mut m.force_rport)
    }
    async fn add_local_rport(&mut self) -> bool {
        self.raise(|m| &mut m.add_local_rport)
    }
    async fn set_drop(&mut self) {
        if self.raise(|m| &mut m.drop) {
            self.events.push(Event::Drop);
        }
    }
    async fn set_reply_no_connect(&mut self) -> bool {
        self.raise(|m| &mut m.reply_no_connect)
    }
    async fn set_reply_close(&mut self) -> bool {
        self.raise(|m| &mut m.reply_close)
    }
    async fn set_forward_no_connect(&mut self) -> bool {
        self.raise(|m| &mut m.forward_no_connect)
    }
    async fn forward(&mut self) -> i32 {
        if self.refuses(ActionKind::Forward) {
            return REFUSED;
        }
        let Some(m) = self
            .message
            .as_ref()
            .filter(|m| m.sip.is_request() && !m.drop)
        else {
            return -1;
        };
        let destination = m.dst_uri.clone().or_else(|| m.ruri());
        self.events.push(Event::Forward { destination });
        1
    }
    async fn forward_uri(&mut self, uri: String) -> i32 {
        if self.refuses(ActionKind::Forward) {
            return REFUSED;
        }
        if let Err(e) = Uri::parse(&uri) {
            self.script_error("KSR.forward_uri", format!("invalid URI {uri:?}: {e}"));
            return -1;
        }
        if !self
            .message
            .as_ref()
            .is_some_and(|m| m.sip.is_request() && !m.drop)
        {
            return -1;
        }
        self.events.push(Event::Forward {
            destination: Some(uri),
        });
        1
    }
    async fn set_forward_close(&mut self) -> bool {
        self.raise(|m| &mut m.forward_close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{INVITE, ctx, ready};

    #[test]
    fn bare_hosts_split_like_kamailio_targets() {
        assert_eq!(split_host_port("192.0.2.1"), ("192.0.2.1", None));
        assert_eq!(split_host_port("192.0.2.1:5080"), ("192.0.2.1", Some(5080)));
        assert_eq!(
            split_host_port("[2001:db8::1]:5061"),
            ("2001:db8::1", Some(5061))
        );
        assert_eq!(split_host_port("[2001:db8::1]"), ("2001:db8::1", None));
        assert_eq!(split_host_port("2001:db8::1"), ("2001:db8::1", None));
        assert_eq!(split_host_port("host:nope"), ("host:nope", None));
        assert_eq!(split_host_port("[::1]x"), ("[::1]x", None));
    }

    /// `KSR.is_myself` takes a SIP URI or, as Kamailio, a bare host, IP or
    /// `host:port`; a port must be one of ours, no port matches any.
    #[test]
    fn is_myself_accepts_bare_hosts() {
        let mut c = ctx(INVITE);
        let mut is = |t: &str| ready(c.is_myself(t.into()));
        assert!(is("sip:192.0.2.1:5060"));
        assert!(is("SIP:proxy.example.com"));
        assert!(is("192.0.2.1"));
        assert!(is("192.0.2.1:5080"));
        assert!(is("proxy.example.com"));
        assert!(is("PROXY.example.com:5060"));
        assert!(is("[192.0.2.1]:5060"));
        assert!(!is("192.0.2.1:5999"));
        assert!(!is("192.0.2.2"));
        assert!(!is("example.com"));
        assert!(!is(""));
        assert!(!is("sip:"));
        assert!(!is("tel:+123"));
    }
}
