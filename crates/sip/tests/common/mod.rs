//! Realistic SIP messages shared by the integration tests.
#![allow(
    dead_code,
    reason = "each test binary uses only some of the shared helpers"
)]

pub const SDP: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\n\
s=-\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49172 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// The INVITE's header section, without the Content-Length line.
pub const INVITE_HEAD: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: \"Alice, A.\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
User-Agent: kemibox-test/1.0\r\n\
Content-Type: application/sdp\r\n";

/// A complete INVITE with an SDP body.
pub fn invite() -> String {
    format!("{INVITE_HEAD}Content-Length: {}\r\n\r\n{SDP}", SDP.len())
}

pub const RINGING: &str = "SIP/2.0 180 Ringing\r\n\
Via: SIP/2.0/UDP proxy.example.com:5060;branch=z9hG4bK4b43c2ff8.1\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;received=192.0.2.101;rport=5060\r\n\
Record-Route: <sip:proxy.example.com;lr>\r\n\
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
From: \"Alice, A.\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
Contact: <sip:bob@192.0.2.4>\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 0\r\n\
\r\n";

pub const REGISTER: &str = "REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:bob@192.0.2.4>;expires=7200, \"Mobile, \\\"2\\\"\" <sip:bob@[2001:db8::4]:5070;transport=tcp>;q=0.5\r\n\
Expires: 7200\r\n\
Content-Length: 0\r\n\
\r\n";

/// A BYE using compact header names and a folded Subject.
pub const COMPACT: &str = "BYE sip:alice@pc33.atlanta.example.com SIP/2.0\r\n\
v: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds10, SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK2\r\n\
Max-Forwards: 70\r\n\
f: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
t: \"Alice, A.\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 231 BYE\r\n\
k: timer, 100rel\r\n\
Supported: path\r\n\
s: a subject\r\n  folded over\r\n\tthree lines\r\n\
Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
Route: <sip:p3.example.com;lr>\r\n\
l: 0\r\n\
\r\n";

pub fn parse(s: &str) -> kemibox_sip::SipMessage {
    kemibox_sip::SipMessage::parse(s.as_bytes().to_vec()).unwrap()
}
