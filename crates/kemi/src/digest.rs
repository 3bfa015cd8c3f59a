//! HTTP digest as SIP uses it (RFC 7616, RFC 2617, RFC 8760): parsing the
//! credentials of an Authorization or Proxy-Authorization header, the
//! hashes behind a response, and the challenge header. The KEMI functions
//! in `modules/auth.rs` and `modules/auth_db.rs` put these together; the
//! pseudo-variables `$au`, `$ar`, ... read the same parsed credentials.

use md5::Md5;
use sha2::{Digest, Sha256};

/// A digest algorithm of RFC 7616 section 3.3 (SHA-512-256 is left out:
/// no SIP user agent offers it, and the store keeps no HA1 for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    /// The algorithm named in credentials (case-insensitive); `None` for
    /// one we cannot check.
    pub(crate) fn parse(name: &str) -> Option<Algorithm> {
        [
            ("MD5", Algorithm::Md5),
            ("MD5-sess", Algorithm::Md5Sess),
            ("SHA-256", Algorithm::Sha256),
            ("SHA-256-sess", Algorithm::Sha256Sess),
        ]
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, a)| a)
    }

    /// Whether the hash is SHA-256 (the HA1 to use is the SHA-256 one).
    pub(crate) fn is_sha256(self) -> bool {
        matches!(self, Algorithm::Sha256 | Algorithm::Sha256Sess)
    }

    /// `H(data)` in lower-case hex.
    pub(crate) fn hash(self, data: &[u8]) -> String {
        if self.is_sha256() {
            hex::encode(Sha256::digest(data))
        } else {
            hex::encode(Md5::digest(data))
        }
    }

    /// Length of a hash in hex: the length a response must have.
    pub(crate) fn hex_len(self) -> usize {
        if self.is_sha256() { 64 } else { 32 }
    }

    /// `H(username:realm:password)` (RFC 7616 section 3.4.2).
    pub(crate) fn ha1(self, username: &str, realm: &str, password: &str) -> String {
        self.hash(format!("{username}:{realm}:{password}").as_bytes())
    }
}

/// `qop` of a response (RFC 7616 section 3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Qop {
    Auth,
    /// Integrity: the body is part of the response.
    AuthInt,
}

/// The directives of one `Digest` credentials header, unescaped (others,
/// like `opaque`, which our challenges never send, are skipped). Every
/// directive is optional here; [`Credentials::incomplete`] says what a
/// check cannot do without.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) username: Option<String>,
    pub(crate) realm: Option<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) uri: Option<String>,
    pub(crate) response: Option<String>,
    pub(crate) algorithm: Option<String>,
    pub(crate) cnonce: Option<String>,
    pub(crate) qop: Option<String>,
    pub(crate) nc: Option<String>,
}

impl Credentials {
    /// Parse a header value `Digest name=value, name="quoted", ...`.
    /// `None` when it is not digest credentials or does not parse
    /// (a directive twice, a bad quoted string, junk between directives).
    pub(crate) fn parse(value: &str) -> Option<Credentials> {
        let value = value.trim_start();
        let scheme_end = value.find([' ', '\t', '\r', '\n']).unwrap_or(value.len());
        if !value[..scheme_end].eq_ignore_ascii_case("Digest") {
            return None;
        }
        let mut creds = Credentials::default();
        let mut rest = &value[scheme_end..];
        loop {
            rest = rest.trim_start_matches(is_lws);
            if rest.is_empty() {
                break;
            }
            if let Some(after) = rest.strip_prefix(',') {
                // Empty list elements are allowed (RFC 7230 section 7).
                rest = after;
                continue;
            }
            let name_end = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
            if name_end == 0 {
                return None;
            }
            let name = &rest[..name_end];
            rest = rest[name_end..].trim_start_matches(is_lws);
            rest = rest.strip_prefix('=')?.trim_start_matches(is_lws);
            let (value, after) = if rest.starts_with('"') {
                quoted(rest)?
            } else {
                let end = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
                (rest[..end].to_string(), &rest[end..])
            };
            rest = after.trim_start_matches(is_lws);
            if !rest.is_empty() {
                rest = rest.strip_prefix(',')?;
            }
            if let Some(slot) = creds.directive(name) {
                if slot.is_some() {
                    return None;
                }
                *slot = Some(value);
            }
        }
        Some(creds)
    }

    /// Where directive `name` goes; `None` for directives we ignore.
    fn directive(&mut self, name: &str) -> Option<&mut Option<String>> {
        let slot = match name.to_ascii_lowercase().as_str() {
            "username" => &mut self.username,
            "realm" => &mut self.realm,
            "nonce" => &mut self.nonce,
            "uri" => &mut self.uri,
            "response" => &mut self.response,
            "algorithm" => &mut self.algorithm,
            "cnonce" => &mut self.cnonce,
            "qop" => &mut self.qop,
            "nc" => &mut self.nc,
            _ => return None,
        };
        Some(slot)
    }

    /// What a check needs and these credentials lack (RFC 7616 section
    /// 3.4: `cnonce` and `nc` come with `qop`), or `None` when complete.
    pub(crate) fn incomplete(&self) -> Option<&'static str> {
        let required = [
            (&self.username, "username"),
            (&self.realm, "realm"),
            (&self.nonce, "nonce"),
            (&self.uri, "uri"),
            (&self.response, "response"),
        ];
        if let Some((_, name)) = required.iter().find(|(v, _)| v.is_none()) {
            return Some(name);
        }
        if self.qop.is_some() {
            if self.cnonce.is_none() {
                return Some("cnonce");
            }
            if self.nc.is_none() {
                return Some("nc");
            }
        }
        None
    }

    /// The algorithm used (MD5 when absent); `Err` with the name when we
    /// cannot check it.
    pub(crate) fn algorithm(&self) -> Result<Algorithm, &str> {
        match self.algorithm.as_deref() {
            None => Ok(Algorithm::Md5),
            Some(name) => Algorithm::parse(name).ok_or(name),
        }
    }

    /// The `qop` used; `Ok(None)` without one, `Err` for an unknown value.
    pub(crate) fn qop(&self) -> Result<Option<Qop>, ()> {
        match self.qop.as_deref() {
            None => Ok(None),
            Some(q) if q.eq_ignore_ascii_case("auth") => Ok(Some(Qop::Auth)),
            Some(q) if q.eq_ignore_ascii_case("auth-int") => Ok(Some(Qop::AuthInt)),
            Some(_) => Err(()),
        }
    }

    /// The nonce count: exactly 8 hex digits (RFC 7616 section 3.4).
    pub(crate) fn nonce_count(&self) -> Option<u32> {
        let nc = self.nc.as_deref()?;
        if nc.len() != 8 {
            return None;
        }
        u32::from_str_radix(nc, 16).ok()
    }

    /// The user part of the username (`alice` of `alice@example.com`):
    /// what Kamailio's `$au` gives and the From/To checks compare.
    pub(crate) fn user(&self) -> Option<&str> {
        let username = self.username.as_deref()?;
        Some(username.split_once('@').map_or(username, |(u, _)| u))
    }

    /// The domain part of the username, when it has one (`$ad`).
    pub(crate) fn domain(&self) -> Option<&str> {
        self.username.as_deref()?.split_once('@').map(|(_, d)| d)
    }

    /// The response these credentials should carry for a request with
    /// `method` and `body`, given `ha1` = `H(username:realm:password)`
    /// (RFC 7616 section 3.4.1; RFC 2617 section 3.2.2.1 without `qop`).
    /// `None` when a directive it needs is missing or unknown.
    pub(crate) fn expected_response(&self, ha1: &str, method: &str, body: &[u8]) -> Option<String> {
        let alg = self.algorithm().ok()?;
        let nonce = self.nonce.as_deref()?;
        let uri = self.uri.as_deref()?;
        let qop = self.qop().ok()?;
        let cnonce = self.cnonce.as_deref().unwrap_or_default();
        let ha1 = match alg {
            Algorithm::Md5Sess | Algorithm::Sha256Sess => {
                alg.hash(format!("{ha1}:{nonce}:{cnonce}").as_bytes())
            }
            Algorithm::Md5 | Algorithm::Sha256 => ha1.to_string(),
        };
        let ha2 = match qop {
            Some(Qop::AuthInt) => alg.hash(format!("{method}:{uri}:{}", alg.hash(body)).as_bytes()),
            _ => alg.hash(format!("{method}:{uri}").as_bytes()),
        };
        Some(match (qop, self.qop.as_deref()) {
            (Some(_), Some(qop)) => {
                let nc = self.nc.as_deref()?;
                alg.hash(format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}").as_bytes())
            }
            _ => alg.hash(format!("{ha1}:{nonce}:{ha2}").as_bytes()),
        })
    }
}

fn is_lws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// RFC 3261 `token` characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

/// Given `s` starting with `"`, the unescaped content of the quoted string
/// and what follows its closing quote; `None` when unterminated.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &s[i + 1..])),
            _ => out.push(c),
        }
    }
    None
}

/// `s` as a quoted string, escaping `"` and `\` (RFC 3261 section 25.1).
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Compare two byte strings in time that depends only on their lengths,
/// so a forged response or nonce MAC learns nothing from timing.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the auth functions learned about one message, for the functions
/// that follow them in the same route.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuthState {
    /// Index (in [`kemibox_sip::SipMessage::headers`]) of the credentials
    /// header the last check used: what `consume_credentials` removes.
    pub(crate) checked: Option<usize>,
    /// A check found the nonce stale (or forgotten): the next challenge
    /// says `stale=true`, so the user agent retries with a fresh nonce
    /// without asking its user for the password again.
    pub(crate) stale: bool,
}

/// Which pair of headers a check or challenge uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// 401, WWW-Authenticate and Authorization: a registrar or UAS.
    Www,
    /// 407, Proxy-Authenticate and Proxy-Authorization: a proxy.
    Proxy,
}

impl Kind {
    /// Kamailio's choice for `auth_challenge` and `auth_check`: REGISTER is
    /// answered as a registrar, everything else as a proxy.
    pub(crate) fn for_method(method: &str) -> Kind {
        if method.eq_ignore_ascii_case("REGISTER") {
            Kind::Www
        } else {
            Kind::Proxy
        }
    }

    /// The header carrying the credentials.
    pub(crate) fn credentials_header(self) -> &'static str {
        match self {
            Kind::Www => "Authorization",
            Kind::Proxy => "Proxy-Authorization",
        }
    }

    /// The reply status and reason of a challenge.
    pub(crate) fn status(self) -> (i32, &'static str) {
        match self {
            Kind::Www => (401, "Unauthorized"),
            Kind::Proxy => (407, "Proxy Authentication Required"),
        }
    }

    /// A challenge header line, in Kamailio's directive order:
    /// `WWW-Authenticate: Digest realm="..", nonce="..", qop="auth",
    /// stale=true, algorithm=MD5`.
    pub(crate) fn challenge(
        self,
        realm: &str,
        nonce: &str,
        qop: Option<&str>,
        stale: bool,
        algorithm: &str,
    ) -> String {
        let name = match self {
            Kind::Www => "WWW-Authenticate",
            Kind::Proxy => "Proxy-Authenticate",
        };
        let mut line = format!("{name}: Digest realm={}, nonce=\"{nonce}\"", quote(realm));
        if let Some(qop) = qop {
            line.push_str(&format!(", qop=\"{qop}\""));
        }
        if stale {
            line.push_str(", stale=true");
        }
        line.push_str(&format!(", algorithm={algorithm}"));
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 section 3.5 (HA1 and the request as in the RFC).
    #[test]
    fn rfc_2617_example_response() {
        let creds = Credentials::parse(
            r#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .expect("parses");
        assert_eq!(creds.incomplete(), None);
        assert_eq!(creds.nonce_count(), Some(1));
        let ha1 = Algorithm::Md5.ha1("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(
            creds.expected_response(&ha1, "GET", b"").as_deref(),
            Some("6629fae49393a05397450978507c4ef1")
        );
    }

    /// RFC 7616 section 3.9.1, with MD5 and with SHA-256.
    #[test]
    fn rfc_7616_example_responses() {
        let header = |algorithm: &str, response: &str| {
            format!(
                "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", \
                 uri=\"/dir/index.html\", algorithm={algorithm}, \
                 nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", nc=00000001, \
                 cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, \
                 response=\"{response}\", \
                 opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
            )
        };
        for (alg, expected) in [
            (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let name = if alg == Algorithm::Md5 {
                "MD5"
            } else {
                "SHA-256"
            };
            let creds = Credentials::parse(&header(name, expected)).expect("parses");
            assert_eq!(creds.algorithm(), Ok(alg));
            let ha1 = alg.ha1("Mufasa", "http-auth@example.org", "Circle of Life");
            assert_eq!(
                creds.expected_response(&ha1, "GET", b"").as_deref(),
                Some(expected),
                "{name}"
            );
        }
    }

    #[test]
    fn sess_auth_int_and_no_qop_responses() {
        let alg = Algorithm::Md5;
        let ha1 = alg.ha1("alice", "example.com", "secret");
        let creds = |extra: &str| {
            Credentials::parse(&format!(
                "Digest username=\"alice\", realm=\"example.com\", nonce=\"n1\", \
                 uri=\"sip:example.com\", response=\"x\"{extra}"
            ))
            .unwrap()
        };
        // Without qop (RFC 2069 compatibility): H(HA1:nonce:HA2).
        let ha2 = alg.hash(b"REGISTER:sip:example.com");
        assert_eq!(
            creds("").expected_response(&ha1, "REGISTER", b""),
            Some(alg.hash(format!("{ha1}:n1:{ha2}").as_bytes()))
        );
        // MD5-sess: HA1 becomes H(HA1:nonce:cnonce).
        let c = creds(", algorithm=MD5-sess, qop=auth, nc=00000002, cnonce=\"c\"");
        let sess = alg.hash(format!("{ha1}:n1:c").as_bytes());
        assert_eq!(
            c.expected_response(&ha1, "REGISTER", b""),
            Some(alg.hash(format!("{sess}:n1:00000002:c:auth:{ha2}").as_bytes()))
        );
        // auth-int: the body's hash joins HA2.
        let c = creds(", qop=auth-int, nc=00000001, cnonce=\"c\"");
        let ha2 = alg.hash(format!("INVITE:sip:example.com:{}", alg.hash(b"v=0")).as_bytes());
        assert_eq!(
            c.expected_response(&ha1, "INVITE", b"v=0"),
            Some(alg.hash(format!("{ha1}:n1:00000001:c:auth-int:{ha2}").as_bytes()))
        );
        // An algorithm we do not know gives nothing to compare with.
        assert_eq!(
            creds(", algorithm=SHA-512-256").expected_response(&ha1, "INVITE", b""),
            None
        );
    }

    #[test]
    fn parsing_follows_the_quoted_string_and_list_rules() {
        let c = Credentials::parse(
            "digest USERNAME = \"al\\\"ice\" ,,realm=\"a, b\",nonce=abc , Uri=\"sip:x\", \
             response=\"r\", x-unknown=\"ignored\"",
        )
        .expect("parses");
        assert_eq!(c.username.as_deref(), Some("al\"ice"));
        assert_eq!(c.realm.as_deref(), Some("a, b"));
        assert_eq!(c.nonce.as_deref(), Some("abc"));
        assert_eq!(c.uri.as_deref(), Some("sip:x"));
        assert_eq!(c.incomplete(), None);
        assert_eq!(c.algorithm(), Ok(Algorithm::Md5));
        for bad in [
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
            "Digest username=\"open",
            "Digest username=\"a\" realm=\"b\"",
            "Digest username=\"a\", username=\"b\"",
            "Digest =x",
            "Digest username",
            "Digestusername=\"a\"",
        ] {
            assert_eq!(Credentials::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn incomplete_credentials_say_what_is_missing() {
        let c = Credentials::parse("Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\"")
            .unwrap();
        assert_eq!(c.incomplete(), Some("response"));
        let c = Credentials::parse(
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\", qop=auth, cnonce=\"c\"",
        )
        .unwrap();
        assert_eq!(c.incomplete(), Some("nc"));
        let c = Credentials::parse("Digest nc=1, username=\"alice@example.com\"").unwrap();
        assert_eq!(c.nonce_count(), None, "nc is 8 hex digits");
        assert_eq!(c.user(), Some("alice"));
        assert_eq!(c.domain(), Some("example.com"));
    }

    #[test]
    fn challenge_lines_quote_the_realm() {
        let line = Kind::Proxy.challenge("a\"b", "n", Some("auth"), true, "SHA-256");
        assert_eq!(
            line,
            "Proxy-Authenticate: Digest realm=\"a\\\"b\", nonce=\"n\", qop=\"auth\", stale=true, algorithm=SHA-256"
        );
        let line = Kind::Www.challenge("example.com", "n", None, false, "MD5");
        assert_eq!(
            line,
            "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"n\", algorithm=MD5"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
