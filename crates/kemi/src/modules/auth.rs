//! `KSR.auth`: digest challenges and checks (Kamailio's auth module).
//!
//! A check finds the credentials for the realm, verifies the nonce (ours,
//! for this tenant), recomputes the response from an HA1 (from the
//! script's password here, from the subscriber store in `auth_db.rs`) and
//! compares it in constant time; then it refuses stale nonces and replays.
//! The password is proved before the nonce's freshness is judged, so only
//! a user agent that knows the password is told `stale=true` (RFC 7616
//! section 3.3: after -4, and after -6 so a phone that reused its nonce
//! retries at once), and failed attempts never consume nonce counts.
//!
//! Failed checks are logged at info level (target `kemibox::auth`) with the
//! tenant, the user, the source address and the reason; passwords and
//! HA1 values never reach a log line.

use kemibox_sip::{SipMessage, Uri};

use crate::bindings::kemibox::ksr::auth::Host;
use crate::digest::{Credentials, Kind, constant_time_eq};
use crate::nonce::{Refused, Usage};
use crate::{Ctx, Event, Message, PvValue};

/// Challenge flag 1: offer `qop="auth"`.
const QOP_AUTH: i32 = 1;
/// Challenge flag 2: offer `qop="auth-int"`.
const QOP_AUTH_INT: i32 = 2;
/// Challenge flag 4: no automatic 500 when the challenge cannot be built.
const NO_ERROR_REPLY: i32 = 4;
/// Challenge flag 16 (and pv flag 16): `stale=true` in the challenge.
const STALE: i32 = 16;
/// Challenge flag 32 (ours): also offer SHA-256 (RFC 8760).
const OFFER_SHA256: i32 = 32;
/// Challenge flag 64 (ours): only add the header(s) to the reply the
/// script sends itself (`KSR.sl.send_reply`, `KSR.tm.t_reply`).
const HEADER_ONLY: i32 = 64;

/// pv flag 1: the password argument is already an HA1.
const PASSWD_IS_HA1: i32 = 1;
/// pv flag 2: on failure, build a challenge without qop into the AVP.
const AVP_CHALLENGE: i32 = 2;
/// pv flag 4: on failure, build a challenge with `qop="auth"`.
const AVP_QOP_AUTH: i32 = 4;
/// pv flag 8: on failure, build a challenge with `qop="auth-int"`.
const AVP_QOP_AUTH_INT: i32 = 8;

/// `checks` flag 1: the auth user must be the From user (To for REGISTER).
pub(crate) const CHECK_USER: i32 = 1;

/// Where a failed pv check leaves its challenge: Kamailio's default
/// `challenge_avp`, for `KSR.hdr.append_to_reply`.
const CHALLENGE_AVP: &str = "digest_challenge";

/// Where a check gets the HA1 to verify the response with.
pub(crate) enum Secret {
    /// The script's plain password: HA1 = H(username:realm:password).
    Password(String),
    /// An HA1 the script computed (pv flag 1).
    Ha1(String),
    /// The tenant's subscriber store (`KSR.auth_db`), by username and realm.
    Subscribers,
}

/// Requests that are never authenticated, as in Kamailio: ACK has no reply
/// to carry a challenge, CANCEL must keep its INVITE's CSeq, and PRACK
/// belongs to an INVITE that was authenticated already.
pub(crate) fn exempt(method: &str) -> bool {
    ["ACK", "CANCEL", "PRACK"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// The realm to use: the script's, or when empty the To host for REGISTER
/// (the user registering) and the From host otherwise (the caller), as
/// Kamailio's documentation describes for an empty realm.
fn realm_or_default(m: &Message, realm: &str) -> Option<String> {
    if !realm.is_empty() {
        return Some(realm.to_string());
    }
    let addr = if m.sip.method_str().eq_ignore_ascii_case("REGISTER") {
        m.sip.to()
    } else {
        m.sip.from()
    }?;
    let uri = Uri::parse(addr.uri).ok()?;
    Some(uri.host.to_string()).filter(|h| !h.is_empty())
}

/// The first `kind` credentials for `realm`: their header index and
/// contents. `Err(())` when none matched and some `Digest` header could
/// not be parsed (Kamailio's "bad credentials").
fn find_credentials(
    sip: &SipMessage,
    kind: Kind,
    realm: &str,
) -> Result<Option<(usize, Credentials)>, ()> {
    let mut malformed = false;
    for (i, (name, value)) in sip.headers().enumerate() {
        if !name.eq_ignore_ascii_case(kind.credentials_header()) {
            continue;
        }
        match Credentials::parse(value) {
            Some(c) if c.realm.as_deref() == Some(realm) => return Ok(Some((i, c))),
            Some(_) => {}
            None => malformed |= is_digest(value),
        }
    }
    if malformed { Err(()) } else { Ok(None) }
}

fn is_digest(value: &str) -> bool {
    value
        .trim_start()
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("digest"))
}

/// The credentials `$au`, `$ar`, `$ad`, `$aU` read: Proxy-Authorization
/// when present, else Authorization (as Kamailio's pseudo-variables).
pub(crate) fn message_credentials(sip: &SipMessage) -> Option<Credentials> {
    sip.header("Proxy-Authorization")
        .or_else(|| sip.header("Authorization"))
        .and_then(Credentials::parse)
}

/// The qop value to offer for challenge flags.
fn offered_qop(auth: bool, auth_int: bool) -> Option<&'static str> {
    match (auth, auth_int) {
        (true, true) => Some("auth,auth-int"),
        (false, true) => Some("auth-int"),
        (true, false) => Some("auth"),
        (false, false) => None,
    }
}

impl Ctx {
    /// Log a refused authentication (info: a wrong password is routine,
    /// but an operator looking for an attack wants to see it).
    fn auth_refused(&self, function: &str, user: &str, reason: &str) {
        let source = self
            .message
            .as_ref()
            .map(|m| m.source.to_string())
            .unwrap_or_default();
        tracing::info!(
            target: "kemibox::auth",
            tenant = self.tenant.as_str(),
            user,
            source,
            function,
            "digest authentication refused: {reason}"
        );
    }

    /// Challenge header lines for `kind`: with a fresh nonce, SHA-256
    /// first when offered (RFC 7616 section 3.7: most preferred first).
    fn challenge_lines(
        &self,
        kind: Kind,
        realm: &str,
        qop: Option<&str>,
        stale: bool,
        sha256: bool,
    ) -> Vec<String> {
        let nonce = self.services.nonces.issue(self.tenant.as_str());
        let mut lines = Vec::new();
        if sha256 {
            lines.push(kind.challenge(realm, &nonce, qop, stale, "SHA-256"));
        }
        lines.push(kind.challenge(realm, &nonce, qop, stale, "MD5"));
        lines
    }

    /// `auth_challenge`, `www_challenge`, `proxy_challenge`: `kind` `None`
    /// picks by method.
    fn challenge(&mut self, function: &str, realm: &str, flags: i32, kind: Option<Kind>) -> i32 {
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        if !m.sip.is_request() {
            self.script_error(function, "only requests can be challenged");
            return -1;
        }
        let method = m.sip.method_str();
        if kind.is_none()
            && ["ACK", "CANCEL"]
                .iter()
                .any(|x| x.eq_ignore_ascii_case(method))
        {
            // Nothing to challenge; Kamailio's auth_challenge says yes.
            return 1;
        }
        let kind = kind.unwrap_or_else(|| Kind::for_method(method));
        let stale = flags & STALE != 0 || m.auth.stale;
        let Some(realm) = realm_or_default(m, realm) else {
            self.script_error(function, "empty realm and no From/To host to use instead");
            if flags & NO_ERROR_REPLY == 0 {
                self.internal_reply(function, 500, "Internal Server Error".into());
            }
            return -1;
        };
        let qop = offered_qop(flags & QOP_AUTH != 0, flags & QOP_AUTH_INT != 0);
        let lines = self.challenge_lines(kind, &realm, qop, stale, flags & OFFER_SHA256 != 0);
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        if flags & HEADER_ONLY != 0 {
            m.reply_headers.extend(lines);
            return 1;
        }
        // The challenge belongs to this reply only, not to a later one.
        let before = m.reply_headers.len();
        m.reply_headers.extend(lines);
        let (code, reason) = kind.status();
        let ret = self.reply(function, code, reason.into(), false);
        if let Some(m) = self.message.as_mut() {
            m.reply_headers.truncate(before);
        }
        ret
    }

    /// Verify the `kind` credentials for `realm` against `secret`.
    /// `Ok(Some(credentials))` when they prove the password with a fresh,
    /// unused nonce; `Ok(None)` for requests that are never authenticated
    /// (ACK, CANCEL, PRACK); `Err` with Kamailio's code otherwise: -1 error
    /// or malformed credentials or a nonce not issued here, -2 wrong
    /// password, -3 unknown user, -4 stale nonce, -5 no credentials for
    /// the realm, -6 nonce reused.
    pub(crate) async fn digest_check(
        &mut self,
        function: &str,
        realm: &str,
        kind: Kind,
        secret: Secret,
    ) -> Result<Option<Credentials>, i32> {
        let Some(m) = self.message.as_ref() else {
            return Err(-1);
        };
        if !m.sip.is_request() {
            self.script_error(function, "only requests can be authenticated");
            return Err(-1);
        }
        if exempt(m.sip.method_str()) {
            return Ok(None);
        }
        let Some(realm) = realm_or_default(m, realm) else {
            self.script_error(function, "empty realm and no From/To host to use instead");
            return Err(-1);
        };
        let (index, creds) = match find_credentials(&m.sip, kind, &realm) {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::debug!(target: "kemibox::auth", tenant = self.tenant.as_str(), realm, "no credentials for the realm");
                return Err(-5);
            }
            Err(()) => {
                self.auth_refused(function, "", "malformed credentials");
                return Err(-1);
            }
        };
        let method = m.sip.method_str().to_string();
        let call_id = m.sip.call_id().unwrap_or_default().to_string();
        let cseq = m.sip.header("CSeq").unwrap_or_default().to_string();
        let body = m.sip.body().to_vec();
        if let Some(m) = self.message.as_mut() {
            m.auth.checked = Some(index);
        }
        let username = creds.username.clone().unwrap_or_default();
        if let Some(missing) = creds.incomplete() {
            self.auth_refused(
                function,
                &username,
                &format!("credentials without {missing}"),
            );
            return Err(-1);
        }
        let algorithm = match creds.algorithm() {
            Ok(a) => a,
            Err(name) => {
                let reason = format!("unsupported algorithm {name}");
                self.auth_refused(function, &username, &reason);
                return Err(-1);
            }
        };
        let Ok(qop) = creds.qop() else {
            self.auth_refused(function, &username, "unsupported qop");
            return Err(-1);
        };
        let nc = match qop {
            Some(_) => match creds.nonce_count() {
                Some(nc) => Some(nc),
                None => {
                    self.auth_refused(function, &username, "nc is not 8 hex digits");
                    return Err(-1);
                }
            },
            None => None,
        };
        let nonce = creds.nonce.as_deref().unwrap_or_default();
        let Some(verified) = self.services.nonces.verify(self.tenant.as_str(), nonce) else {
            self.auth_refused(
                function,
                &username,
                "nonce not issued here (forged, old or another tenant's)",
            );
            return Err(-1);
        };
        let ha1 = match secret {
            Secret::Password(password) => algorithm.ha1(&username, &realm, &password),
            Secret::Ha1(ha1) => ha1.to_ascii_lowercase(),
            Secret::Subscribers => {
                let store = self.services.subscribers.clone();
                match store.get(self.tenant.as_str(), &username, &realm).await {
                    Ok(Some(s)) if algorithm.is_sha256() => s.ha1_sha256,
                    Ok(Some(s)) => s.ha1_md5,
                    Ok(None) => {
                        self.auth_refused(function, &username, "unknown user");
                        return Err(-3);
                    }
                    Err(e) => {
                        tracing::error!(
                            target: "kemibox::auth",
                            tenant = self.tenant.as_str(),
                            user = username,
                            realm,
                            function,
                            "subscriber store: {e}"
                        );
                        return Err(-1);
                    }
                }
            }
        };
        let response = creds.response.as_deref().unwrap_or_default();
        if response.len() != algorithm.hex_len() {
            self.auth_refused(function, &username, "response of the wrong length");
            return Err(-1);
        }
        let expected = creds
            .expected_response(&ha1, &method, &body)
            .unwrap_or_default();
        if !constant_time_eq(
            response.to_ascii_lowercase().as_bytes(),
            expected.as_bytes(),
        ) {
            self.auth_refused(function, &username, "wrong password");
            return Err(-2);
        }
        if verified.expired {
            self.auth_refused(function, &username, "stale nonce");
            if let Some(m) = self.message.as_mut() {
                m.auth.stale = true;
            }
            return Err(-4);
        }
        let usage = match nc {
            Some(nc) => Usage::Count(nc),
            None => Usage::Once {
                call_id: &call_id,
                cseq: &cseq,
            },
        };
        let refused = match self.services.nonces.record_use(verified, usage) {
            Ok(()) => return Ok(Some(creds)),
            // With nc, a forgotten nonce is stale (the user agent retries
            // with a fresh one); a one-time nonce that cannot be vouched
            // for counts as reused, as in Kamailio.
            Err(Refused::Forgotten) if nc.is_some() => {
                self.auth_refused(function, &username, "nonce no longer tracked");
                -4
            }
            Err(_) => {
                self.auth_refused(function, &username, "nonce reused");
                -6
            }
        };
        // The password was right: the next challenge says stale=true so
        // the user agent retries with the fresh nonce without asking its
        // user (Kamailio answers an nc replay as stale for the same end).
        if let Some(m) = self.message.as_mut() {
            m.auth.stale = true;
        }
        Err(refused)
    }

    /// The From/To checks of `auth_check` and `pv_auth_check` (flag 1):
    /// the auth user is the From user, for REGISTER and PUBLISH the To
    /// user, which must then equal the From user (and their hosts when
    /// `use_domain`), and for PUBLISH the R-URI user too. `skip_forwarded`
    /// (auth_db flag 2) skips the auth user check for INVITE, BYE, PRACK,
    /// UPDATE and MESSAGE, which may carry an anonymous caller id. -8 on a
    /// mismatch, -1 when a URI does not parse.
    pub(crate) fn check_user(
        &self,
        function: &str,
        creds: &Credentials,
        skip_forwarded: bool,
        use_domain: bool,
    ) -> i32 {
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let method = m.sip.method_str();
        let is = |names: &[&str]| names.iter().any(|n| n.eq_ignore_ascii_case(method));
        let from = m.sip.from();
        let to = m.sip.to();
        let (Some(from), Some(to)) = (from, to) else {
            return -1;
        };
        let (Ok(furi), Ok(turi)) = (Uri::parse(from.uri), Uri::parse(to.uri)) else {
            return -1;
        };
        let register = is(&["REGISTER", "PUBLISH"]);
        let checked = if register { &turi } else { &furi };
        let auth_user = creds.user().unwrap_or_default();
        fn user<'a>(u: &Uri<'a>) -> &'a str {
            u.user.unwrap_or_default()
        }
        let mismatch = |reason: &str| {
            self.auth_refused(function, auth_user, reason);
            -8
        };
        let forwarded = is(&["INVITE", "BYE", "PRACK", "UPDATE", "MESSAGE"]);
        if !(skip_forwarded && forwarded) && auth_user != user(checked) {
            return mismatch(if register {
                "auth user is not the To user"
            } else {
                "auth user is not the From user"
            });
        }
        if register {
            if user(&furi) != user(&turi)
                || (use_domain && !furi.host.eq_ignore_ascii_case(turi.host))
            {
                return mismatch("From and To differ");
            }
            if is(&["PUBLISH"]) {
                let Some(Ok(ruri)) = m.sip.ruri().map(Uri::parse) else {
                    return -1;
                };
                if user(&furi) != user(&ruri)
                    || (use_domain && !furi.host.eq_ignore_ascii_case(ruri.host))
                {
                    return mismatch("From and R-URI differ");
                }
            }
        }
        1
    }

    /// `pv_www_authenticate`, `pv_proxy_authenticate`, `pv_auth_check`
    /// before its user check. On failure, pv flags 2/4/8 leave a challenge
    /// line in `$avp(digest_challenge)` for the script's own reply.
    async fn pv_authenticate(
        &mut self,
        function: &str,
        realm: &str,
        passwd: String,
        flags: i32,
        kind: Kind,
    ) -> Result<Option<Credentials>, i32> {
        if passwd.is_empty() {
            self.script_error(function, "empty password");
            return Err(-1);
        }
        let secret = if flags & PASSWD_IS_HA1 != 0 {
            Secret::Ha1(passwd)
        } else {
            Secret::Password(passwd)
        };
        let result = self.digest_check(function, realm, kind, secret).await;
        if result.is_err() && flags & (AVP_CHALLENGE | AVP_QOP_AUTH | AVP_QOP_AUTH_INT) != 0 {
            self.challenge_to_avp(realm, flags, kind);
        }
        result
    }

    /// Kamailio's challenge AVP: the header line a failed pv check asks
    /// for, pushed onto `$avp(digest_challenge)`.
    fn challenge_to_avp(&mut self, realm: &str, flags: i32, kind: Kind) {
        let Some(m) = self.message.as_ref() else {
            return;
        };
        let Some(realm) = realm_or_default(m, realm) else {
            return;
        };
        let qop = if flags & AVP_QOP_AUTH_INT != 0 {
            Some("auth-int")
        } else if flags & AVP_QOP_AUTH != 0 {
            Some("auth")
        } else {
            None
        };
        let stale = flags & STALE != 0 || m.auth.stale;
        let lines = self.challenge_lines(kind, &realm, qop, stale, false);
        if let Some(m) = self.message.as_mut() {
            let stack = m.avps.entry(CHALLENGE_AVP.to_string()).or_default();
            for line in lines {
                stack.insert(0, PvValue::Str(line));
            }
        }
    }

    /// The method of the request being routed ("" without one).
    pub(crate) fn request_method(&self) -> String {
        self.message
            .as_ref()
            .map(|m| m.sip.method_str().to_string())
            .unwrap_or_default()
    }
}

impl Host for Ctx {
    async fn auth_challenge(&mut self, realm: String, flags: i32) -> i32 {
        self.challenge("KSR.auth.auth_challenge", &realm, flags, None)
    }
    async fn www_challenge(&mut self, realm: String, flags: i32) -> i32 {
        self.challenge("KSR.auth.www_challenge", &realm, flags, Some(Kind::Www))
    }
    async fn proxy_challenge(&mut self, realm: String, flags: i32) -> i32 {
        self.challenge("KSR.auth.proxy_challenge", &realm, flags, Some(Kind::Proxy))
    }
    async fn consume_credentials(&mut self) -> i32 {
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        if exempt(m.sip.method_str()) {
            return -1;
        }
        let Some(index) = m.auth.checked.take() else {
            self.script_error(
                "KSR.auth.consume_credentials",
                "no checked credentials to remove (check them first; they go once)",
            );
            return -1;
        };
        let name = m
            .sip
            .header_at(index)
            .map(|(n, _)| n.to_string())
            .unwrap_or_default();
        if !m.edits.remove_header_at(&m.sip, index) {
            return -1;
        }
        self.events.push(Event::HeaderRemoved { name, count: 1 });
        1
    }
    async fn has_credentials(&mut self, realm: String) -> i32 {
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let Some(realm) = realm_or_default(m, &realm) else {
            return -1;
        };
        let found = [Kind::Proxy, Kind::Www]
            .into_iter()
            .any(|kind| matches!(find_credentials(&m.sip, kind, &realm), Ok(Some(_))));
        super::kemi(found)
    }
    async fn pv_auth_check(
        &mut self,
        realm: String,
        passwd: String,
        flags: i32,
        checks: i32,
    ) -> i32 {
        const F: &str = "KSR.auth.pv_auth_check";
        let kind = Kind::for_method(&self.request_method());
        match self.pv_authenticate(F, &realm, passwd, flags, kind).await {
            // Kamailio's auth module compares users only (its use_domain
            // is off by default), and has no flag to skip forwarded methods.
            Ok(Some(creds)) if checks & CHECK_USER != 0 => self.check_user(F, &creds, false, false),
            Ok(_) => 1,
            Err(code) => code,
        }
    }
    async fn pv_www_authenticate(&mut self, realm: String, passwd: String, flags: i32) -> i32 {
        const F: &str = "KSR.auth.pv_www_authenticate";
        match self
            .pv_authenticate(F, &realm, passwd, flags, Kind::Www)
            .await
        {
            Ok(_) => 1,
            Err(code) => code,
        }
    }
    async fn pv_proxy_authenticate(&mut self, realm: String, passwd: String, flags: i32) -> i32 {
        const F: &str = "KSR.auth.pv_proxy_authenticate";
        match self
            .pv_authenticate(F, &realm, passwd, flags, Kind::Proxy)
            .await
        {
            Ok(_) => 1,
            Err(code) => code,
        }
    }
}
