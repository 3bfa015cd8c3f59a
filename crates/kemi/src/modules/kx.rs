//! `KSR.kx`: Kamailio's kemix accessors. `get_*` return nil for a missing
//! value, `gete_*` "" and `getw_*` "<<null>>".

use std::time::{SystemTime, UNIX_EPOCH};

use kemibox_sip::{Contacts, NameAddr, Uri};

use crate::bindings::kemibox::ksr::kx::Host;
use crate::bindings::kemibox::ksr::types::Xval;
use crate::{Ctx, Message, Transport};

/// What a missing value reads as (Kamailio's `SR_KEMI_XVAL_NULL_*`).
#[derive(Clone, Copy)]
enum Null {
    /// nil
    None,
    /// ""
    Empty,
    /// "<<null>>"
    Print,
}

fn xval(value: Option<String>, null: Null) -> Xval {
    match (value, null) {
        (Some(v), _) => Xval::Str(v),
        (None, Null::None) => Xval::Null,
        (None, Null::Empty) => Xval::Str(String::new()),
        (None, Null::Print) => Xval::Str("<<null>>".into()),
    }
}

/// Which part of a URI.
#[derive(Clone, Copy)]
enum Part {
    User,
    Host,
}

fn uri_part(uri: Option<String>, part: Part) -> Option<String> {
    let uri = uri?;
    let parsed = Uri::parse(&uri).ok()?;
    let value = match part {
        Part::User => parsed.user?,
        Part::Host => parsed.host,
    };
    (!value.is_empty()).then(|| value.to_string())
}

/// The current R-URI of a request that parses.
fn ruri(m: &Message) -> Option<String> {
    m.ruri().filter(|u| Uri::parse(u).is_ok())
}

fn header_uri(m: &Message, name: &str) -> Option<String> {
    m.sip
        .header(name)
        .and_then(|v| NameAddr::parse(v).ok())
        .map(|a| a.uri.to_string())
}

fn first_contact_uri(m: &Message) -> Option<String> {
    match m.sip.contacts().ok()? {
        Contacts::List(list) => list.first().map(|c| c.uri.to_string()),
        Contacts::Star => None,
    }
}

/// `[v6]` or `v4`.
fn ip_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// Kamailio's protocol ids.
fn proto_id(t: Transport) -> i32 {
    match t {
        Transport::Udp => 1,
        Transport::Tcp => 2,
    }
}

/// The digest username's user part, Proxy-Authorization first (Kamailio's
/// `$au` for kemix); nil for ACK and CANCEL.
fn auth_user(m: &Message) -> Option<String> {
    if matches!(m.sip.method_str(), "ACK" | "CANCEL") {
        return None;
    }
    let header = m
        .sip
        .header("Proxy-Authorization")
        .or_else(|| m.sip.header("Authorization"))?;
    let rest = header.trim().strip_prefix("Digest")?;
    let username = rest.split(',').find_map(|part| {
        let (k, v) = part.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("username")
            .then(|| v.trim().trim_matches('"').to_string())
    })?;
    Some(username.split('@').next().unwrap_or_default().to_string())
}

/// A define's or variable's value as Kamailio's `get_defn`/`get_envn` read
/// it: its integer value, 0 when absent or not an integer.
fn integer(value: Option<&String>) -> i32 {
    value.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

fn now() -> i32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
        .unwrap_or(0)
}

impl Ctx {
    /// A string read from the message; nil/""/"<<null>>" without one.
    fn kx(&self, null: Null, read: impl FnOnce(&Message) -> Option<String>) -> Xval {
        xval(self.message.as_ref().and_then(read), null)
    }

    fn kx_int(&self, default: i32, read: impl FnOnce(&Message) -> i32) -> i32 {
        self.message.as_ref().map_or(default, read)
    }
}

impl Host for Ctx {
    async fn get_ruri(&mut self) -> Xval {
        self.kx(Null::None, ruri)
    }
    async fn get_ouri(&mut self) -> Xval {
        self.kx(Null::None, |m| m.sip.ruri().map(str::to_string))
    }
    async fn get_ruser(&mut self) -> Xval {
        self.kx(Null::None, |m| uri_part(ruri(m), Part::User))
    }
    async fn gete_ruser(&mut self) -> Xval {
        self.kx(Null::Empty, |m| uri_part(ruri(m), Part::User))
    }
    async fn getw_ruser(&mut self) -> Xval {
        self.kx(Null::Print, |m| uri_part(ruri(m), Part::User))
    }
    async fn get_rhost(&mut self) -> Xval {
        self.kx(Null::None, |m| uri_part(ruri(m), Part::Host))
    }
    async fn gete_rhost(&mut self) -> Xval {
        self.kx(Null::Empty, |m| uri_part(ruri(m), Part::Host))
    }
    async fn getw_rhost(&mut self) -> Xval {
        self.kx(Null::Print, |m| uri_part(ruri(m), Part::Host))
    }
    async fn get_furi(&mut self) -> Xval {
        self.kx(Null::None, |m| header_uri(m, "From"))
    }
    async fn get_fuser(&mut self) -> Xval {
        self.kx(Null::None, |m| uri_part(header_uri(m, "From"), Part::User))
    }
    async fn gete_fuser(&mut self) -> Xval {
        self.kx(Null::Empty, |m| uri_part(header_uri(m, "From"), Part::User))
    }
    async fn getw_fuser(&mut self) -> Xval {
        self.kx(Null::Print, |m| uri_part(header_uri(m, "From"), Part::User))
    }
    async fn get_fhost(&mut self) -> Xval {
        self.kx(Null::None, |m| uri_part(header_uri(m, "From"), Part::Host))
    }
    async fn gete_fhost(&mut self) -> Xval {
        self.kx(Null::Empty, |m| uri_part(header_uri(m, "From"), Part::Host))
    }
    async fn getw_fhost(&mut self) -> Xval {
        self.kx(Null::Print, |m| uri_part(header_uri(m, "From"), Part::Host))
    }
    async fn get_turi(&mut self) -> Xval {
        self.kx(Null::None, |m| header_uri(m, "To"))
    }
    async fn get_tuser(&mut self) -> Xval {
        self.kx(Null::None, |m| uri_part(header_uri(m, "To"), Part::User))
    }
    async fn gete_tuser(&mut self) -> Xval {
        self.kx(Null::Empty, |m| uri_part(header_uri(m, "To"), Part::User))
    }
    async fn getw_tuser(&mut self) -> Xval {
        self.kx(Null::Print, |m| uri_part(header_uri(m, "To"), Part::User))
    }
    async fn get_thost(&mut self) -> Xval {
        self.kx(Null::None, |m| uri_part(header_uri(m, "To"), Part::Host))
    }
    async fn gete_thost(&mut self) -> Xval {
        self.kx(Null::Empty, |m| uri_part(header_uri(m, "To"), Part::Host))
    }
    async fn getw_thost(&mut self) -> Xval {
        self.kx(Null::Print, |m| uri_part(header_uri(m, "To"), Part::Host))
    }
    async fn get_duri(&mut self) -> Xval {
        self.kx(Null::None, |m| m.dst_uri.clone())
    }
    async fn gete_duri(&mut self) -> Xval {
        self.kx(Null::Empty, |m| m.dst_uri.clone())
    }
    async fn getw_duri(&mut self) -> Xval {
        self.kx(Null::Print, |m| m.dst_uri.clone())
    }
    async fn get_cturi(&mut self) -> Xval {
        self.kx(Null::None, first_contact_uri)
    }
    async fn gete_cturi(&mut self) -> Xval {
        self.kx(Null::Empty, first_contact_uri)
    }
    async fn getw_cturi(&mut self) -> Xval {
        self.kx(Null::Print, first_contact_uri)
    }
    async fn get_nhuri(&mut self) -> Xval {
        self.kx(Null::None, |m| m.dst_uri.clone().or_else(|| ruri(m)))
    }
    async fn get_srcuri(&mut self) -> Xval {
        self.kx(Null::Empty, |m| {
            let transport = match m.transport {
                Transport::Udp => "",
                Transport::Tcp => ";transport=tcp",
            };
            Some(format!(
                "sip:{}:{}{transport}",
                ip_text(m.source.ip()),
                m.source.port()
            ))
        })
    }
    async fn get_ua(&mut self) -> Xval {
        self.kx(Null::None, |m| m.sip.user_agent().map(str::to_string))
    }
    async fn gete_ua(&mut self) -> Xval {
        self.kx(Null::Empty, |m| m.sip.user_agent().map(str::to_string))
    }
    async fn getw_ua(&mut self) -> Xval {
        self.kx(Null::Print, |m| m.sip.user_agent().map(str::to_string))
    }
    async fn get_srcip(&mut self) -> Xval {
        self.kx(Null::None, |m| Some(m.source.ip().to_string()))
    }
    async fn get_srcport(&mut self) -> Xval {
        Xval::Int(self.kx_int(0, |m| i32::from(m.source.port())))
    }
    async fn get_send_sock(&mut self) -> Xval {
        self.kx(Null::None, |m| {
            m.send_socket
                .map(|(t, a)| format!("{}:{}:{}", t.as_str(), ip_text(a.ip()), a.port()))
        })
    }
    async fn get_send_sock_port(&mut self) -> i32 {
        self.kx_int(0, |m| m.send_socket.map_or(0, |(_, a)| i32::from(a.port())))
    }
    async fn get_rcvip(&mut self) -> Xval {
        self.kx(Null::None, |m| Some(m.local.ip().to_string()))
    }
    async fn get_rcvport(&mut self) -> Xval {
        Xval::Int(self.kx_int(0, |m| i32::from(m.local.port())))
    }
    async fn get_rcvadvip(&mut self) -> Xval {
        self.kx(Null::None, |m| Some(m.local.ip().to_string()))
    }
    async fn get_rcvadvport(&mut self) -> Xval {
        Xval::Int(self.kx_int(0, |m| i32::from(m.local.port())))
    }
    async fn get_proto(&mut self) -> Xval {
        self.kx(Null::Empty, |m| Some(m.transport.as_str().to_string()))
    }
    async fn get_protoid(&mut self) -> i32 {
        self.kx_int(-1, |m| proto_id(m.transport))
    }
    async fn get_au(&mut self) -> Xval {
        self.kx(Null::None, auth_user)
    }
    async fn gete_au(&mut self) -> Xval {
        self.kx(Null::Empty, auth_user)
    }
    async fn getw_au(&mut self) -> Xval {
        self.kx(Null::Print, auth_user)
    }
    async fn get_method(&mut self) -> Xval {
        self.kx(Null::None, |m| {
            Some(m.sip.method_str().to_string()).filter(|s| !s.is_empty())
        })
    }
    async fn get_status(&mut self) -> i32 {
        self.kx_int(-1, |m| m.sip.status().map_or(-1, i32::from))
    }
    async fn gets_status(&mut self) -> Xval {
        self.kx(Null::None, |m| m.sip.status().map(|s| s.to_string()))
    }
    async fn get_body(&mut self) -> Xval {
        self.kx(Null::None, body)
    }
    async fn gete_body(&mut self) -> Xval {
        self.kx(Null::Empty, body)
    }
    async fn getw_body(&mut self) -> Xval {
        self.kx(Null::Print, body)
    }
    async fn get_bodylen(&mut self) -> i32 {
        self.kx_int(0, |m| i32::try_from(m.sip.body().len()).unwrap_or(i32::MAX))
    }
    async fn get_timestamp(&mut self) -> i32 {
        now()
    }
    async fn get_callid(&mut self) -> Xval {
        self.kx(Null::Empty, |m| m.sip.call_id().map(str::to_string))
    }
    async fn get_msgbuf(&mut self) -> Xval {
        self.kx(Null::Empty, |m| {
            Some(String::from_utf8_lossy(m.sip.raw()).into_owned())
        })
    }
    async fn get_msglen(&mut self) -> i32 {
        self.kx_int(-1, |m| i32::try_from(m.sip.raw().len()).unwrap_or(i32::MAX))
    }
    async fn get_msgtype(&mut self) -> i32 {
        self.kx_int(-1, |m| if m.sip.is_request() { 1 } else { 2 })
    }
    async fn get_def(&mut self, dname: String) -> Xval {
        Xval::Str(self.state.defines.get(&dname).cloned().unwrap_or_default())
    }
    async fn get_defn(&mut self, dname: String) -> i32 {
        integer(self.state.defines.get(&dname))
    }
    async fn ifdef(&mut self, dname: String) -> bool {
        self.state.defines.contains_key(&dname)
    }
    async fn ifndef(&mut self, dname: String) -> bool {
        !self.state.defines.contains_key(&dname)
    }
    async fn get_env(&mut self, envname: String) -> Xval {
        Xval::Str(self.state.env.get(&envname).cloned().unwrap_or_default())
    }
    async fn get_envn(&mut self, envname: String) -> i32 {
        integer(self.state.env.get(&envname))
    }
}

/// The body as text, `None` when empty.
fn body(m: &Message) -> Option<String> {
    let body = m.sip.body();
    (!body.is_empty()).then(|| String::from_utf8_lossy(body).into_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::TenantState;
    use crate::testing::{INVITE, ctx, ready};

    fn configured() -> Ctx {
        let mut ctx = ctx(INVITE);
        let mut state = TenantState::default();
        state.defines.insert("WITH_AUTH".into(), String::new());
        state.defines.insert("MAX_CALLS".into(), "12".into());
        state.env.insert("REGION".into(), "eu-1".into());
        state.env.insert("PORT".into(), "5080".into());
        ctx.state = Arc::new(state);
        ctx
    }

    fn text(x: Xval) -> String {
        match x {
            Xval::Str(s) => s,
            other => panic!("expected a string, got {other:?}"),
        }
    }

    /// ifdef/ifndef answer from the tenant's defines, get_def/get_defn
    /// give their values.
    #[test]
    fn defines_are_the_tenants() {
        let mut ctx = configured();
        assert!(ready(ctx.ifdef("WITH_AUTH".into())));
        assert!(!ready(ctx.ifndef("WITH_AUTH".into())));
        assert!(!ready(ctx.ifdef("WITH_NAT".into())));
        assert!(ready(ctx.ifndef("WITH_NAT".into())));
        assert_eq!(text(ready(ctx.get_def("MAX_CALLS".into()))), "12");
        assert_eq!(ready(ctx.get_defn("MAX_CALLS".into())), 12);
        assert_eq!(text(ready(ctx.get_def("WITH_AUTH".into()))), "");
        assert_eq!(ready(ctx.get_defn("WITH_AUTH".into())), 0);
        assert_eq!(text(ready(ctx.get_def("NONE".into()))), "");
    }

    /// get_env reads the tenant's variables, never the process's.
    #[test]
    fn env_is_the_tenants_not_the_process() {
        let mut ctx = configured();
        assert_eq!(text(ready(ctx.get_env("REGION".into()))), "eu-1");
        assert_eq!(ready(ctx.get_envn("PORT".into())), 5080);
        assert_eq!(ready(ctx.get_envn("REGION".into())), 0);
        // PATH is set in every test process; the tenant did not set it.
        assert!(std::env::var("PATH").is_ok());
        assert_eq!(text(ready(ctx.get_env("PATH".into()))), "");
        assert_eq!(ready(ctx.get_envn("PATH".into())), 0);
    }
}
