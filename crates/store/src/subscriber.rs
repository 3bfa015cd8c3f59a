//! Subscribers: who may authenticate, per tenant and domain.

use async_trait::async_trait;
use md5::{Digest, Md5};
use sha2::Sha256;

use crate::StoreError;

/// One subscriber as stored: the HA1 hashes stand in for the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub tenant: String,
    pub username: String,
    pub domain: String,
    /// `MD5(username:domain:password)`, lower-case hex (the realm is the
    /// domain, as Kamailio's auth_db uses it by default).
    pub ha1_md5: String,
    /// `SHA-256(username:domain:password)`, lower-case hex.
    pub ha1_sha256: String,
}

/// Where subscribers live. Every call names the tenant: a tenant only
/// ever sees its own.
#[async_trait]
pub trait SubscriberStore: Send + Sync {
    /// Add `username@domain` with `password` (replacing an existing one).
    async fn add(
        &self,
        tenant: &str,
        username: &str,
        domain: &str,
        password: &str,
    ) -> Result<(), StoreError>;
    /// Remove `username@domain`; false when there was none.
    async fn remove(&self, tenant: &str, username: &str, domain: &str) -> Result<bool, StoreError>;
    /// One subscriber, if stored.
    async fn get(
        &self,
        tenant: &str,
        username: &str,
        domain: &str,
    ) -> Result<Option<Subscriber>, StoreError>;
    /// Every subscriber of `tenant`, by domain then username.
    async fn list(&self, tenant: &str) -> Result<Vec<Subscriber>, StoreError>;
}

/// `MD5(username:realm:password)` in lower-case hex (RFC 2617 HA1).
pub fn ha1_md5(username: &str, realm: &str, password: &str) -> String {
    hex::encode(Md5::digest(format!("{username}:{realm}:{password}")))
}

/// `SHA-256(username:realm:password)` in lower-case hex (RFC 7616 HA1).
pub fn ha1_sha256(username: &str, realm: &str, password: &str) -> String {
    hex::encode(Sha256::digest(format!("{username}:{realm}:{password}")))
}

/// The subscriber to store for these arguments, refusing empty parts and
/// characters that cannot appear in a SIP user or host.
pub(crate) fn subscriber(
    tenant: &str,
    username: &str,
    domain: &str,
    password: &str,
) -> Result<Subscriber, StoreError> {
    let bad =
        |s: &str| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '@' || c == ':');
    if bad(tenant) || bad(username) || bad(domain) {
        return Err(StoreError::Invalid(format!(
            "tenant, user and domain must be non-empty, without spaces, '@' or ':' ({tenant:?}, {username:?}, {domain:?})"
        )));
    }
    if password.is_empty() {
        return Err(StoreError::Invalid("the password must not be empty".into()));
    }
    Ok(Subscriber {
        tenant: tenant.into(),
        username: username.into(),
        domain: domain.into(),
        ha1_md5: ha1_md5(username, domain, password),
        ha1_sha256: ha1_sha256(username, domain, password),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_matches_rfc_examples() {
        // RFC 2617 section 3.5: Mufasa / testrealm@host.com / Circle Of Life.
        assert_eq!(
            ha1_md5("Mufasa", "testrealm@host.com", "Circle Of Life"),
            "939e7578ed9e3c518a452acee763bce9"
        );
        // RFC 7616 section 3.9.1: Mufasa / http-auth@example.org / Circle of Life.
        assert_eq!(
            ha1_sha256("Mufasa", "http-auth@example.org", "Circle of Life"),
            "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
        );
    }

    #[test]
    fn refuses_what_cannot_be_a_sip_user() {
        assert!(subscriber("t", "", "example.com", "pw").is_err());
        assert!(subscriber("t", "a b", "example.com", "pw").is_err());
        assert!(subscriber("t", "alice", "example.com", "").is_err());
        assert!(subscriber("t", "alice@x", "example.com", "pw").is_err());
        assert!(subscriber("t", "alice", "example.com", "pw").is_ok());
    }
}
