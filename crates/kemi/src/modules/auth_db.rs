//! `KSR.auth_db`: digest checks against the tenant's subscribers
//! (Kamailio's auth_db module, with the store in place of the database).
//!
//! The store keeps `H(username:domain:password)` in MD5 and SHA-256 and
//! is keyed by user and domain, so a check looks the subscriber up by the
//! credentials' username and the realm (Kamailio's `use_domain=1` with
//! realm = domain), and the HA1 matching the credentials' algorithm
//! verifies the response. Only the `subscriber` table exists.

use kemibox_sip::Uri;

use super::auth::{CHECK_USER, Secret, exempt};
use crate::Ctx;
use crate::bindings::kemibox::ksr::auth_db::Host;
use crate::digest::Kind;

/// auth_check flag 2: with flag 1, skip the From check for INVITE, BYE,
/// PRACK, UPDATE and MESSAGE (anonymous caller ids).
const SKIP_FORWARDED: i32 = 2;

/// The one table the store has.
const TABLE: &str = "subscriber";

impl Ctx {
    /// Refuse tables other than `subscriber`: a script naming another one
    /// expects other data, and silently using the subscribers would
    /// authenticate the wrong users.
    fn subscriber_table(&mut self, function: &str, table: &str) -> bool {
        if table == TABLE {
            return true;
        }
        self.script_error(
            function,
            format!("unknown table {table:?}: the subscribers are in {TABLE:?}"),
        );
        false
    }

    /// `www_authenticate`, `proxy_authenticate` and `auth_check`.
    async fn db_authenticate(
        &mut self,
        function: &str,
        realm: &str,
        table: &str,
        kind: Kind,
        flags: i32,
    ) -> i32 {
        if !self.subscriber_table(function, table) {
            return -1;
        }
        match self
            .digest_check(function, realm, kind, Secret::Subscribers)
            .await
        {
            Ok(Some(creds)) if flags & CHECK_USER != 0 => {
                self.check_user(function, &creds, flags & SKIP_FORWARDED != 0, true)
            }
            Ok(_) => 1,
            Err(code) => code,
        }
    }
}

impl Host for Ctx {
    async fn auth_check(&mut self, realm: String, table: String, flags: i32) -> i32 {
        if exempt(&self.request_method()) {
            return 1;
        }
        let kind = Kind::for_method(&self.request_method());
        self.db_authenticate("KSR.auth_db.auth_check", &realm, &table, kind, flags)
            .await
    }
    async fn www_authenticate(&mut self, realm: String, table: String) -> i32 {
        self.db_authenticate("KSR.auth_db.www_authenticate", &realm, &table, Kind::Www, 0)
            .await
    }
    async fn proxy_authenticate(&mut self, realm: String, table: String) -> i32 {
        self.db_authenticate(
            "KSR.auth_db.proxy_authenticate",
            &realm,
            &table,
            Kind::Proxy,
            0,
        )
        .await
    }
    async fn is_subscriber(&mut self, uri: String, table: String, _flags: i32) -> i32 {
        const F: &str = "KSR.auth_db.is_subscriber";
        if !self.subscriber_table(F, &table) {
            return -1;
        }
        let Ok(parsed) = Uri::parse(&uri) else {
            self.script_error(F, format!("not a URI: {uri:?}"));
            return -1;
        };
        let user = parsed.user.unwrap_or_default();
        let store = self.services.subscribers.clone();
        match store.get(self.tenant.as_str(), user, parsed.host).await {
            Ok(Some(_)) => 1,
            Ok(None) => -2,
            Err(e) => {
                tracing::error!(
                    target: "kemibox::auth",
                    tenant = self.tenant.as_str(),
                    user,
                    domain = parsed.host,
                    function = F,
                    "subscriber store: {e}"
                );
                -1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kemibox_sip::SipMessage;

    use super::Host;
    use crate::services::unreachable::Unreachable;
    use crate::{Ctx, Message, Myself, Nonces, Services, Transport};

    /// An unreachable store is an error (-1), not an unknown user (-3) or
    /// a wrong password, so scripts do not re-challenge users who typed
    /// nothing wrong.
    #[tokio::test]
    async fn an_unreachable_store_is_an_error() {
        let base = Services::in_memory();
        let services = Arc::new(Services {
            location: base.location.clone(),
            subscribers: Arc::new(Unreachable),
            registrar: base.registrar,
            nonces: Nonces::new([1; 32], Nonces::DEFAULT_EXPIRY),
        });
        let nonce = services.nonces.issue("t");
        let text = format!(
            "INVITE sip:bob@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
             From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\n\
             Proxy-Authorization: Digest username=\"alice\", realm=\"example.com\", \
             nonce=\"{nonce}\", uri=\"sip:bob@example.com\", response=\"{}\"\r\n\
             Content-Length: 0\r\n\r\n",
            "0".repeat(32)
        );
        let sip = SipMessage::parse(text.into_bytes()).unwrap();
        let addr = "127.0.0.1:5060".parse().unwrap();
        let mut ctx = Ctx::new("t".parse().unwrap(), Arc::new(Myself::default()), services);
        ctx.begin(Some(Message::new(sip, addr, addr, Transport::Udp)));
        let table = || "subscriber".to_string();
        let realm = || "example.com".to_string();
        assert_eq!(ctx.auth_check(realm(), table(), 0).await, -1);
        assert_eq!(ctx.proxy_authenticate(realm(), table()).await, -1);
        let uri = "sip:alice@example.com".to_string();
        assert_eq!(ctx.is_subscriber(uri, table(), 1).await, -1);
    }
}
