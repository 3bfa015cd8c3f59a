//! Where a server transaction's responses go.

use std::net::SocketAddr;

use kemibox_sip::SipMessage;

/// The other end of a server transaction: where the request came from,
/// which of our sockets it arrived on, where responses go, and over what
/// kind of transport.
///
/// The reply address is the caller's choice (it may apply Kamailio's
/// `force_rport()` or a connection alias); [`Peer::for_request`] computes
/// the RFC 3261 18.2.2 / RFC 3581 default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The source address of the request (stamped as `received`/`rport`
    /// into the automatic `100 Trying`).
    pub source: SocketAddr,
    /// Our address the request arrived on: responses are sent from it.
    pub local: SocketAddr,
    /// Where responses are sent.
    pub reply_to: SocketAddr,
    /// Whether the request came over a reliable transport; this disables
    /// response retransmissions and zeroes Timers I and J.
    pub reliable: bool,
}

impl Peer {
    /// The default peer of a request received from `source` on our
    /// address `local` (responses are sent from it): over a reliable
    /// transport, or when the top Via has `rport` (RFC 3581), the responses
    /// go back to `source`; otherwise to the source IP at the Via's sent-by
    /// port (5060 when none; RFC 3261 18.2.2).
    pub fn for_request(
        request: &SipMessage,
        source: SocketAddr,
        local: SocketAddr,
        reliable: bool,
    ) -> Peer {
        let via = request.top_via();
        let back_to_source = reliable || via.as_ref().is_some_and(|v| v.rport().is_some());
        let reply_to = if back_to_source {
            source
        } else {
            let port = via.and_then(|v| v.port).unwrap_or(5060);
            SocketAddr::new(source.ip(), port)
        };
        Peer {
            source,
            local,
            reply_to,
            reliable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_reply_address() {
        let m = |via: &str| {
            SipMessage::parse_slice(
                format!("OPTIONS sip:x SIP/2.0\r\nVia: {via}\r\nContent-Length: 0\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap()
        };
        let src: SocketAddr = "198.51.100.1:40000".parse().unwrap();
        let local: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let p = Peer::for_request(
            &m("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa"),
            src,
            local,
            false,
        );
        assert_eq!(p.reply_to, "198.51.100.1:5070".parse().unwrap());
        let p = Peer::for_request(
            &m("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa"),
            src,
            local,
            false,
        );
        assert_eq!(p.reply_to, "198.51.100.1:5060".parse().unwrap());
        let p = Peer::for_request(
            &m("SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bKa"),
            src,
            local,
            false,
        );
        assert_eq!(p.reply_to, src);
        let p = Peer::for_request(
            &m("SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKa"),
            src,
            local,
            true,
        );
        assert_eq!(p.reply_to, src);
        assert_eq!(p.local, local);
    }
}
