//! Requests the transaction layer builds itself: the ACK of a non-2xx
//! response (RFC 3261 17.1.1.3) and a CANCEL (9.1).

use bytes::Bytes;
use kemibox_sip::SipMessage;

/// Max-Forwards of generated requests (RFC 3261 8.1.1.6 recommends 70).
const MAX_FORWARDS: u32 = 70;

/// The ACK for a 3xx-6xx `response` to the INVITE `request` (17.1.1.3):
/// the request's Request-URI, its top Via entry as the only Via, its Route
/// headers, From, Call-ID and CSeq number (method ACK), and the To of the
/// response (which carries the tag of the UAS that rejected it).
pub(crate) fn ack(request: &SipMessage, response: &SipMessage) -> Bytes {
    let to = response.header("To").or_else(|| request.header("To"));
    in_transaction(request, "ACK", to)
}

/// A CANCEL for `request` (9.1): like the ACK, but with the request's own
/// To.
pub(crate) fn cancel(request: &SipMessage) -> Bytes {
    in_transaction(request, "CANCEL", request.header("To"))
}

fn in_transaction(request: &SipMessage, method: &str, to: Option<&str>) -> Bytes {
    let ruri = request.ruri().unwrap_or_default();
    let cseq = request.cseq().map_or(0, |(n, _)| n);
    let mut out = String::with_capacity(512);
    out.push_str(method);
    out.push(' ');
    out.push_str(ruri);
    out.push_str(" SIP/2.0\r\n");
    if let Some(via) = request.header_elements("Via").next() {
        line(&mut out, "Via", via);
    }
    for route in request.header_values("Route") {
        line(&mut out, "Route", route);
    }
    if let Some(from) = request.header("From") {
        line(&mut out, "From", from);
    }
    if let Some(to) = to {
        line(&mut out, "To", to);
    }
    if let Some(call_id) = request.call_id() {
        line(&mut out, "Call-ID", call_id);
    }
    line(&mut out, "CSeq", &format!("{cseq} {method}"));
    line(&mut out, "Max-Forwards", &MAX_FORWARDS.to_string());
    out.push_str("Content-Length: 0\r\n\r\n");
    Bytes::from(out)
}

fn line(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> SipMessage {
        SipMessage::parse_slice(s.replace('\n', "\r\n").as_bytes()).unwrap()
    }

    #[test]
    fn ack_and_cancel_parse_back() {
        let req = msg("INVITE sip:bob@192.0.2.4 SIP/2.0\n\
            v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKp1, SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKu\n\
            Route: <sip:r1.example.com;lr>, <sip:r2.example.com;lr>\n\
            Route: <sip:r3.example.com;lr>\n\
            f: <sip:alice@example.com>;tag=1\n\
            t: <sip:bob@example.com>\n\
            i: call-1\n\
            CSeq: 7 INVITE\n\
            Content-Type: application/sdp\n\
            Content-Length: 4\n\nv=0\n");
        let resp = msg("SIP/2.0 486 Busy Here\n\
            Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKp1\n\
            From: <sip:alice@example.com>;tag=1\n\
            To: <sip:bob@example.com>;tag=b\n\
            Call-ID: call-1\n\
            CSeq: 7 INVITE\n\
            Content-Length: 0\n\n");
        let a = SipMessage::parse(ack(&req, &resp)).unwrap();
        a.validate().unwrap();
        assert_eq!(a.method_str(), "ACK");
        assert_eq!(a.via_count(), 1);
        assert_eq!(a.header_count("Route"), 2);
        assert_eq!(a.to().unwrap().tag(), Some("b"));
        assert_eq!(a.cseq(), Some((7, "ACK")));
        assert!(a.body().is_empty());
        let c = SipMessage::parse(cancel(&req)).unwrap();
        c.validate().unwrap();
        assert_eq!(c.cseq(), Some((7, "CANCEL")));
        assert_eq!(c.to().unwrap().tag(), None);
        assert_eq!(c.ruri(), Some("sip:bob@192.0.2.4"));
    }
}
