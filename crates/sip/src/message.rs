//! The immutable received message and its read accessors.

use bytes::Bytes;

use crate::error::ParseError;
use crate::lex::split_list;
use crate::method::Method;
use crate::name_addr::NameAddr;
use crate::names::names_equal;
use crate::parse::{HeaderField, Layout, StartLine, parse};
use crate::uri::{Scheme, Uri};
use crate::via::Via;

/// A received SIP message: the raw bytes plus the positions of its parts.
///
/// Parsing only records spans, so a message costs one small vector of
/// header positions beyond the bytes themselves, and the forwarded copy
/// (see [`crate::render`]) can reproduce every untouched byte. Reads always
/// see the message as received; a script's changes live in
/// [`crate::Edits`] beside it, as Kamailio's lumps do.
///
/// Structured accessors (`from()`, `top_via()`, ...) parse on demand and
/// return `None` when the header is absent or malformed; use
/// [`SipMessage::validate`] to learn why a mandatory header is unusable.
#[derive(Debug, Clone)]
pub struct SipMessage {
    raw: Bytes,
    layout: Layout,
}

/// The Contact header set of a message (RFC 3261 20.10).
///
/// REGISTER distinguishes `Contact: *` (remove all bindings) from a list of
/// addresses, so the wildcard is its own case rather than a fake address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts<'a> {
    /// `Contact: *`
    Star,
    /// The addresses of every Contact header, in order (empty when there is
    /// no Contact header).
    List(Vec<NameAddr<'a>>),
}

impl SipMessage {
    /// Parses a received message, keeping `data` as the message's storage
    /// (a `Vec<u8>`, `Bytes` or `&'static [u8]` is taken without copying).
    ///
    /// Fails on anything that cannot be a SIP/2.0 message: a bad start line,
    /// a header line without a colon or with control characters, more than
    /// [`crate::MAX_HEADERS`] headers, more than [`crate::MAX_MESSAGE_SIZE`]
    /// bytes, missing end of headers, or a Content-Length larger than the
    /// bytes that follow (bytes beyond Content-Length are ignored).
    pub fn parse(data: impl Into<Bytes>) -> Result<SipMessage, ParseError> {
        let raw = data.into();
        let layout = parse(&raw)?;
        Ok(SipMessage { raw, layout })
    }

    /// Like [`SipMessage::parse`] for a borrowed buffer (copies it once).
    pub fn parse_slice(data: &[u8]) -> Result<SipMessage, ParseError> {
        SipMessage::parse(Bytes::copy_from_slice(data))
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn fields(&self) -> &[HeaderField] {
        &self.layout.headers
    }

    pub(crate) fn name_bytes(&self, h: &HeaderField) -> &[u8] {
        h.name.of(&self.raw)
    }

    pub(crate) fn name_of(&self, h: &HeaderField) -> &str {
        std::str::from_utf8(self.name_bytes(h)).unwrap_or_default()
    }

    pub(crate) fn value_of<'s>(&'s self, h: &'s HeaderField) -> &'s str {
        match &h.text {
            Some(text) => text,
            None => std::str::from_utf8(h.value.of(&self.raw)).unwrap_or_default(),
        }
    }

    fn field_named<'s>(&'s self, name: &str) -> impl DoubleEndedIterator<Item = &'s HeaderField> {
        self.fields()
            .iter()
            .filter(move |h| names_equal(self.name_bytes(h), name.as_bytes()))
    }

    /// The whole received buffer (including any bytes past Content-Length).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The received buffer as shared `Bytes`, for handing on without a copy.
    pub fn raw_bytes(&self) -> &Bytes {
        &self.raw
    }

    /// Whether this is a request (as opposed to a reply).
    pub fn is_request(&self) -> bool {
        matches!(self.layout.start_line, StartLine::Request { .. })
    }

    /// The request method; `None` for replies (see [`SipMessage::method_str`]).
    pub fn method(&self) -> Option<&Method> {
        match &self.layout.start_line {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Reply { .. } => None,
        }
    }

    /// The method the message is about: the request method, or for a reply
    /// the CSeq method (`""` when the CSeq is missing or malformed). This is
    /// what Kamailio's `$rm` gives.
    pub fn method_str(&self) -> &str {
        match self.method() {
            Some(m) => m.as_str(),
            None => self.cseq().map_or("", |(_, m)| m),
        }
    }

    /// The status code of a reply.
    pub fn status(&self) -> Option<u16> {
        match self.layout.start_line {
            StartLine::Reply { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase of a reply.
    pub fn reason(&self) -> Option<&str> {
        match self.layout.start_line {
            StartLine::Reply { reason, .. } => std::str::from_utf8(reason.of(&self.raw)).ok(),
            StartLine::Request { .. } => None,
        }
    }

    /// The Request-URI as received (the edited one is [`crate::Edits::ruri`]).
    pub fn ruri(&self) -> Option<&str> {
        match self.layout.start_line {
            StartLine::Request { uri, .. } => std::str::from_utf8(uri.of(&self.raw)).ok(),
            StartLine::Reply { .. } => None,
        }
    }

    /// The value of the first header named `name` (case-insensitive,
    /// compact forms match their long names), trimmed; folded values are
    /// unfolded and invalid UTF-8 is replaced with U+FFFD (the forwarded
    /// bytes are untouched).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).next()
    }

    /// The values of every header named `name`, in order (one item per
    /// header line, not split at commas; see [`SipMessage::header_elements`]).
    /// Double-ended so the last one is `next_back()`.
    pub fn header_values<'s>(&'s self, name: &str) -> impl DoubleEndedIterator<Item = &'s str> {
        self.field_named(name).map(|h| self.value_of(h))
    }

    /// The comma-separated elements of every header named `name`, in order
    /// (`Supported: a, b` + `Supported: c` gives `a`, `b`, `c`). Commas in
    /// quoted strings and `<...>` do not split.
    pub fn header_elements<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s str> {
        self.header_values(name).flat_map(split_list)
    }

    /// How many headers are named `name`.
    pub fn header_count(&self, name: &str) -> usize {
        self.field_named(name).count()
    }

    /// Every header as `(name, value)` in received order; the position in
    /// this sequence is the index used by [`crate::Edits::remove_header_at`].
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.fields()
            .iter()
            .map(|h| (self.name_of(h), self.value_of(h)))
    }

    /// The header at `index` in received order.
    pub fn header_at(&self, index: usize) -> Option<(&str, &str)> {
        self.fields()
            .get(index)
            .map(|h| (self.name_of(h), self.value_of(h)))
    }

    /// The body (exactly Content-Length bytes when that header is present).
    pub fn body(&self) -> &[u8] {
        self.layout.body.of(&self.raw)
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID").filter(|v| !v.is_empty())
    }

    /// The CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let mut parts = self.header("CSeq")?.split_ascii_whitespace();
        let (num, method, None) = (parts.next()?, parts.next()?, parts.next()) else {
            return None;
        };
        if !num.bytes().all(|b| b.is_ascii_digit()) || !crate::lex::is_token(method.as_bytes()) {
            return None;
        }
        Some((num.parse().ok()?, method))
    }

    /// The From header.
    pub fn from(&self) -> Option<NameAddr<'_>> {
        NameAddr::parse(self.header("From")?).ok()
    }

    /// The To header.
    pub fn to(&self) -> Option<NameAddr<'_>> {
        NameAddr::parse(self.header("To")?).ok()
    }

    /// All Contact addresses, or the `*` wildcard. `*` together with other
    /// contacts, or any unparsable contact, is an error.
    pub fn contacts(&self) -> Result<Contacts<'_>, ParseError> {
        let mut list = Vec::new();
        let mut star = false;
        for element in self.header_elements("Contact") {
            if element == "*" {
                star = true;
            } else {
                list.push(NameAddr::parse(element)?);
            }
        }
        match (star, list.is_empty()) {
            (false, _) => Ok(Contacts::List(list)),
            (true, true) => Ok(Contacts::Star),
            (true, false) => Err(ParseError::new("invalid Contact: '*' mixed with addresses")),
        }
    }

    /// The first entry of the first Via header.
    pub fn top_via(&self) -> Option<Via<'_>> {
        Via::parse(self.header_elements("Via").next()?).ok()
    }

    /// The number of Via entries across all Via headers.
    pub fn via_count(&self) -> usize {
        self.header_elements("Via").count()
    }

    /// Max-Forwards, when present and numeric.
    pub fn max_forwards(&self) -> Option<u32> {
        parse_u32(self.header("Max-Forwards")?)
    }

    /// The User-Agent.
    pub fn user_agent(&self) -> Option<&str> {
        self.header("User-Agent")
    }

    /// The Content-Type.
    pub fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
    }

    /// The Content-Length value, when the header is present (validated
    /// during parsing to match the body).
    pub fn content_length(&self) -> Option<usize> {
        self.layout.content_length
    }

    /// The Expires header as delta-seconds.
    pub fn expires(&self) -> Option<u32> {
        parse_u32(self.header("Expires")?)
    }

    /// The URIs of every Route entry in order (all Route headers, split at
    /// commas).
    pub fn routes(&self) -> Result<Vec<&str>, ParseError> {
        self.address_uris("Route")
    }

    /// The URIs of every Record-Route entry in order.
    pub fn record_routes(&self) -> Result<Vec<&str>, ParseError> {
        self.address_uris("Record-Route")
    }

    fn address_uris(&self, name: &'static str) -> Result<Vec<&str>, ParseError> {
        self.header_elements(name)
            .map(|e| NameAddr::parse(e).map(|na| na.uri))
            .collect()
    }

    /// Checks what a proxy needs before routing (RFC 3261 8.1.1, 16.3):
    /// a parsable Request-URI (without URI headers for SIP/SIPS), top Via,
    /// exactly one From, To, Call-ID and CSeq (whose method matches a
    /// request's method) and at most one, numeric Max-Forwards. The
    /// error's reason fits a `400` reply.
    pub fn validate(&self) -> Result<(), ParseError> {
        if let Some(ruri) = self.ruri() {
            const BAD_RURI: ParseError = ParseError::new("invalid Request-URI");
            let uri = Uri::parse(ruri).map_err(|_| BAD_RURI)?;
            // Headers are not allowed in a SIP Request-URI (RFC 3261
            // 19.1.1); forwarding them is what RFC 4475 3.1.2.11 forbids.
            if matches!(uri.scheme_kind(), Scheme::Sip | Scheme::Sips) && !uri.headers.is_empty() {
                return Err(BAD_RURI);
            }
        }
        // Single-instance headers appearing twice make the message
        // ambiguous (RFC 4475 3.3.8): which one would the proxy route on?
        for (name, duplicate) in [
            ("From", "duplicate From header"),
            ("To", "duplicate To header"),
            ("Call-ID", "duplicate Call-ID header"),
            ("CSeq", "duplicate CSeq header"),
            ("Max-Forwards", "duplicate Max-Forwards header"),
        ] {
            if self.header_count(name) > 1 {
                return Err(ParseError::new(duplicate));
            }
        }
        require(self.header("Via"), "missing Via header")?;
        require(self.top_via(), "invalid Via header")?;
        for (name, missing, invalid) in [
            ("From", "missing From header", "invalid From header"),
            ("To", "missing To header", "invalid To header"),
        ] {
            let value = require(self.header(name), missing)?;
            let addr = NameAddr::parse(value).map_err(|_| ParseError::new(invalid))?;
            addr.parse_uri().map_err(|_| ParseError::new(invalid))?;
        }
        require(self.call_id(), "missing Call-ID header")?;
        require(self.header("CSeq"), "missing CSeq header")?;
        let (_, cseq_method) = require(self.cseq(), "invalid CSeq header")?;
        if let Some(method) = self.method()
            && method.as_str() != cseq_method
        {
            return Err(ParseError::new("CSeq method does not match request method"));
        }
        if self.header("Max-Forwards").is_some() && self.max_forwards().is_none() {
            return Err(ParseError::new("invalid Max-Forwards header"));
        }
        Ok(())
    }
}

fn require<T>(v: Option<T>, reason: &'static str) -> Result<T, ParseError> {
    v.ok_or(ParseError::new(reason))
}

fn parse_u32(v: &str) -> Option<u32> {
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}
