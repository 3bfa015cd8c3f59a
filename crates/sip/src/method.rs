//! SIP request methods.

use std::fmt;

/// A SIP request method.
///
/// Routing scripts branch on the method constantly (`KSR.is_INVITE()`,
/// `is_method_in("IBC")`), so the common methods get their own variant and
/// compare without string work; anything else, including extension methods
/// and wrongly-cased spellings (methods are case-sensitive, RFC 3261 7.1),
/// is kept verbatim in [`Method::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// `INVITE` (RFC 3261).
    Invite,
    /// `ACK` (RFC 3261).
    Ack,
    /// `BYE` (RFC 3261).
    Bye,
    /// `CANCEL` (RFC 3261).
    Cancel,
    /// `REGISTER` (RFC 3261).
    Register,
    /// `OPTIONS` (RFC 3261).
    Options,
    /// `INFO` (RFC 6086).
    Info,
    /// `UPDATE` (RFC 3311).
    Update,
    /// `PRACK` (RFC 3262).
    Prack,
    /// `SUBSCRIBE` (RFC 6665).
    Subscribe,
    /// `NOTIFY` (RFC 6665).
    Notify,
    /// `PUBLISH` (RFC 3903).
    Publish,
    /// `MESSAGE` (RFC 3428).
    Message,
    /// `REFER` (RFC 3515).
    Refer,
    /// Any other method token, exactly as received.
    Other(Box<str>),
}

impl Method {
    /// Classifies a method token. Matching is case-sensitive as RFC 3261
    /// requires: `invite` is an unknown extension method, not `INVITE`.
    pub fn parse(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "MESSAGE" => Method::Message,
            "REFER" => Method::Refer,
            other => Method::Other(other.into()),
        }
    }

    /// The method token as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Message => "MESSAGE",
            Method::Refer => "REFER",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_round_trip() {
        for m in [
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "REGISTER",
            "OPTIONS",
            "INFO",
            "UPDATE",
            "PRACK",
            "SUBSCRIBE",
            "NOTIFY",
            "PUBLISH",
            "MESSAGE",
            "REFER",
        ] {
            let parsed = Method::parse(m);
            assert!(!matches!(parsed, Method::Other(_)), "{m}");
            assert_eq!(parsed.as_str(), m);
        }
    }

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!(Method::parse("invite"), Method::Other("invite".into()));
        assert_eq!(Method::parse("KDMQ").to_string(), "KDMQ");
    }
}
