//! Matching messages to transactions (RFC 3261 17.1.3 and 17.2.3).

use kemibox_sip::{Method, SipMessage};

/// The branch prefix that marks an RFC 3261 branch id (17.2.3): only such
/// branches are unique enough to be a transaction key on their own.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Whether `branch` starts with [`MAGIC_COOKIE`] (compared ignoring case,
/// like the rest of the branch) and has something after it.
pub fn has_magic_cookie(branch: &str) -> bool {
    branch.len() > MAGIC_COOKIE.len()
        && branch
            .get(..MAGIC_COOKIE.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(MAGIC_COOKIE))
}

/// The key of a server transaction: what a retransmitted request (or the
/// ACK of a non-2xx response) has in common with the request that created
/// the transaction.
///
/// Two forms, chosen by the request's top Via:
///
/// * **RFC 3261** (branch with the magic cookie, 17.2.3): branch, sent-by
///   host and port, and the method, where ACK counts as INVITE (so the ACK
///   of a non-2xx response finds its INVITE) and CANCEL is its own method
///   (so a CANCEL gets its own transaction). The branch and host compare
///   ignoring ASCII case (RFC 3261 7.3.1).
/// * **Legacy** (RFC 2543 clients, no magic cookie): Request-URI, From
///   tag, Call-ID, CSeq number, the top Via entry as received, and the
///   method (ACK counted as INVITE again). The To tag is deliberately left
///   out of the key: an ACK carries the tag of the *response*, not of the
///   INVITE, so instead [`crate::TransactionTable`] checks an ACK's To tag
///   against the tag of the final response it sent. Two different
///   requests that agree on everything else but the To tag are not
///   distinguished; for a legacy client that would mean reusing a CSeq
///   number in the same call, which RFC 2543 forbids too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey(ServerKeyKind);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ServerKeyKind {
    Rfc3261 {
        branch: Box<str>,
        host: Box<str>,
        port: Option<u16>,
        method: Method,
    },
    Legacy {
        ruri: Box<str>,
        from_tag: Box<str>,
        call_id: Box<str>,
        cseq: u32,
        via: Box<str>,
        method: Method,
    },
}

/// Why a message cannot be matched to any transaction.
///
/// Such messages never reach a state machine: a request gets handled by
/// the proxy's validation (400), a response is stray.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not a request (server keys) or not a response (client keys).
    WrongKind,
    /// No top Via, or it does not parse.
    NoVia,
    /// A client key needs a branch.
    NoBranch,
    /// The CSeq header is missing or malformed.
    NoCSeq,
}

impl KeyError {
    /// A short fixed phrase for logs.
    pub fn reason(self) -> &'static str {
        match self {
            KeyError::WrongKind => "wrong message kind",
            KeyError::NoVia => "missing or invalid top Via",
            KeyError::NoBranch => "missing Via branch",
            KeyError::NoCSeq => "missing or invalid CSeq",
        }
    }
}

/// The method as far as matching is concerned: ACK belongs to the INVITE.
fn match_method(m: &Method) -> Method {
    match m {
        Method::Ack => Method::Invite,
        other => other.clone(),
    }
}

impl ServerKey {
    /// The key of a received request; an ACK yields the key of the INVITE
    /// it acknowledges.
    pub fn for_request(msg: &SipMessage) -> Result<ServerKey, KeyError> {
        let method = msg.method().ok_or(KeyError::WrongKind)?;
        Self::with_method(msg, match_method(method))
    }

    /// The key of the INVITE server transaction a CANCEL cancels (RFC 3261
    /// 9.2: the same key, with INVITE as the method).
    pub fn for_cancelled_invite(msg: &SipMessage) -> Result<ServerKey, KeyError> {
        if !msg.is_request() {
            return Err(KeyError::WrongKind);
        }
        Self::with_method(msg, Method::Invite)
    }

    fn with_method(msg: &SipMessage, method: Method) -> Result<ServerKey, KeyError> {
        let via = msg.top_via().ok_or(KeyError::NoVia)?;
        if let Some(branch) = via.branch().filter(|b| has_magic_cookie(b)) {
            return Ok(ServerKey(ServerKeyKind::Rfc3261 {
                branch: branch.to_ascii_lowercase().into(),
                host: via.host.to_ascii_lowercase().into(),
                port: via.port,
                method,
            }));
        }
        let (cseq, _) = msg.cseq().ok_or(KeyError::NoCSeq)?;
        let top_via = msg.header_elements("Via").next().ok_or(KeyError::NoVia)?;
        let from_tag = msg.from().and_then(|f| f.tag()).unwrap_or_default();
        Ok(ServerKey(ServerKeyKind::Legacy {
            ruri: msg.ruri().unwrap_or_default().into(),
            from_tag: from_tag.into(),
            call_id: msg.call_id().unwrap_or_default().into(),
            cseq,
            via: top_via.into(),
            method,
        }))
    }

    /// Whether this is an RFC 3261 (magic cookie) key rather than a legacy
    /// one.
    pub fn is_rfc3261(&self) -> bool {
        matches!(self.0, ServerKeyKind::Rfc3261 { .. })
    }
}

/// The key of a client transaction (RFC 3261 17.1.3): the branch of the
/// Via the proxy put on top of the request, and the CSeq method.
///
/// The method is part of the key because a CANCEL carries the branch of
/// the INVITE it cancels (9.1) yet is a transaction of its own. The branch
/// compares ignoring ASCII case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    branch: Box<str>,
    method: Method,
}

impl ClientKey {
    /// The key of a request about to be sent (its top Via is the proxy's).
    pub fn for_request(msg: &SipMessage) -> Result<ClientKey, KeyError> {
        let method = msg.method().ok_or(KeyError::WrongKind)?.clone();
        Self::build(msg, method)
    }

    /// The key a received response belongs to.
    pub fn for_response(msg: &SipMessage) -> Result<ClientKey, KeyError> {
        if msg.is_request() {
            return Err(KeyError::WrongKind);
        }
        let (_, method) = msg.cseq().ok_or(KeyError::NoCSeq)?;
        Self::build(msg, Method::parse(method))
    }

    fn build(msg: &SipMessage, method: Method) -> Result<ClientKey, KeyError> {
        let via = msg.top_via().ok_or(KeyError::NoVia)?;
        let branch = via
            .branch()
            .filter(|b| !b.is_empty())
            .ok_or(KeyError::NoBranch)?;
        Ok(ClientKey {
            branch: branch.to_ascii_lowercase().into(),
            method,
        })
    }

    /// The branch, lower-cased.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The method of the transaction.
    pub fn method(&self) -> &Method {
        &self.method
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> SipMessage {
        SipMessage::parse_slice(s.replace('\n', "\r\n").as_bytes()).unwrap()
    }

    const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\n\
        Via: SIP/2.0/UDP a.example.com:5060;branch=z9hG4bKabc\n\
        From: <sip:alice@example.com>;tag=f1\n\
        To: <sip:bob@example.com>\n\
        Call-ID: c1\n\
        CSeq: 1 INVITE\n\
        Content-Length: 0\n\n";

    #[test]
    fn ack_and_invite_share_a_key_cancel_does_not() {
        let invite = ServerKey::for_request(&msg(INVITE)).unwrap();
        assert!(invite.is_rfc3261());
        let ack = msg(&INVITE
            .replacen("INVITE sip", "ACK sip", 1)
            .replace("1 INVITE", "1 ACK")
            .replace("<sip:bob@example.com>\n", "<sip:bob@example.com>;tag=t9\n"));
        assert_eq!(ServerKey::for_request(&ack).unwrap(), invite);
        let cancel = msg(&INVITE
            .replacen("INVITE sip", "CANCEL sip", 1)
            .replace("1 INVITE", "1 CANCEL"));
        assert_ne!(ServerKey::for_request(&cancel).unwrap(), invite);
        assert_eq!(ServerKey::for_cancelled_invite(&cancel).unwrap(), invite);
    }

    #[test]
    fn branch_and_host_ignore_case_port_does_not() {
        let a = ServerKey::for_request(&msg(INVITE)).unwrap();
        let b = ServerKey::for_request(&msg(&INVITE.replace(
            "a.example.com:5060;branch=z9hG4bKabc",
            "A.Example.COM:5060;branch=Z9HG4BKABC",
        )))
        .unwrap();
        assert_eq!(a, b);
        let c = ServerKey::for_request(&msg(&INVITE.replace(":5060;", ";"))).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn legacy_keys() {
        let legacy = INVITE.replace("branch=z9hG4bKabc", "branch=1234");
        let k = ServerKey::for_request(&msg(&legacy)).unwrap();
        assert!(!k.is_rfc3261());
        let other_cseq =
            ServerKey::for_request(&msg(&legacy.replace("1 INVITE", "2 INVITE"))).unwrap();
        assert_ne!(k, other_cseq);
        let no_branch = INVITE.replace(";branch=z9hG4bKabc", "");
        assert!(
            !ServerKey::for_request(&msg(&no_branch))
                .unwrap()
                .is_rfc3261()
        );
        assert!(!has_magic_cookie("z9hG4bK"));
        assert!(has_magic_cookie("z9hG4bKx"));
    }

    #[test]
    fn client_keys() {
        let req = ClientKey::for_request(&msg(INVITE)).unwrap();
        let resp = msg("SIP/2.0 180 Ringing\n\
            Via: SIP/2.0/UDP a.example.com:5060;branch=z9hG4bKABC\n\
            From: <sip:alice@example.com>;tag=f1\n\
            To: <sip:bob@example.com>;tag=t\n\
            Call-ID: c1\n\
            CSeq: 1 INVITE\n\
            Content-Length: 0\n\n");
        assert_eq!(ClientKey::for_response(&resp).unwrap(), req);
        assert_eq!(req.branch(), "z9hg4bkabc");
        assert_eq!(req.method(), &Method::Invite);
        assert_eq!(
            ClientKey::for_response(&msg(INVITE)),
            Err(KeyError::WrongKind)
        );
        assert_eq!(ServerKey::for_request(&resp), Err(KeyError::WrongKind));
    }
}
