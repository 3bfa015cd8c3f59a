//! Who is calling: the `Authorization: Bearer TOKEN` header matched
//! against the process token and the tenants' tokens, in constant time.
//!
//! Tokens are kept as SHA-256 digests ([`Keyring`], made once when the
//! server starts), and a presented token is hashed and compared with every
//! digest with `subtle`'s constant-time equality: the time taken depends
//! neither on where a guess first differs from a token nor on a token's
//! length, and every token is compared whichever matched.

use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::rpc::{FORBIDDEN, RpcError, UNAUTHORIZED};

/// The tokens the admin API accepts, as configured.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// `[admin] token`: every method. `None` (allowed only on a loopback
    /// address, checked at start) lets requests without a token do
    /// everything.
    pub admin: Option<String>,
    /// `(tenant id, [[tenant]] admin_token)`: that tenant's methods only.
    pub tenants: Vec<(String, String)>,
}

/// The caller a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The process token (or no token where none is configured).
    Admin,
    /// A tenant's token.
    Tenant(String),
}

impl Caller {
    /// Allowed to act on tenant `id`? Else a [`FORBIDDEN`] error.
    pub fn check_tenant(&self, method: &str, id: &str) -> Result<(), RpcError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant(own) if own == id => Ok(()),
            Caller::Tenant(own) => Err(RpcError::new(
                FORBIDDEN,
                format!("{method}: the token of tenant {own} cannot act on tenant {id}"),
            )),
        }
    }

    /// Allowed to call a process-wide method? Else a [`FORBIDDEN`] error.
    pub fn check_process(&self, method: &str) -> Result<(), RpcError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant(own) => Err(RpcError::new(
                FORBIDDEN,
                format!(
                    "{method} is process-wide: the token of tenant {own} may only call its own tenant's methods"
                ),
            )),
        }
    }
}

/// A token's SHA-256 digest.
type Fingerprint = [u8; 32];

fn fingerprint(token: &[u8]) -> Fingerprint {
    Sha256::digest(token).into()
}

/// Whether two digests are equal, every byte compared whatever differs
/// (no early exit): digests have one length, so neither token's length
/// shows in the time either.
fn same(a: &Fingerprint, b: &Fingerprint) -> Choice {
    a.ct_eq(b)
}

/// The configured tokens as digests, ready to check requests against.
#[derive(Debug, Clone)]
pub struct Keyring {
    admin: Option<Fingerprint>,
    tenants: Vec<(String, Fingerprint)>,
}

impl From<&Tokens> for Keyring {
    fn from(tokens: &Tokens) -> Keyring {
        Keyring {
            admin: tokens.admin.as_deref().map(|t| fingerprint(t.as_bytes())),
            tenants: tokens
                .tenants
                .iter()
                .map(|(id, t)| (id.clone(), fingerprint(t.as_bytes())))
                .collect(),
        }
    }
}

impl Keyring {
    /// The caller the `Authorization` header value `header` names, or an
    /// [`UNAUTHORIZED`] error. Every token is compared, whatever matched
    /// first, so the time taken does not tell which one came close.
    pub fn authorize(&self, header: Option<&str>) -> Result<Caller, RpcError> {
        let presented = header.and_then(|h| {
            let (scheme, token) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let Some(presented) = presented else {
            if header.is_none() && self.admin.is_none() {
                return Ok(Caller::Admin);
            }
            return Err(RpcError::new(
                UNAUTHORIZED,
                "unauthorized: send Authorization: Bearer TOKEN (the [admin] token, or a tenant's admin_token)",
            ));
        };
        let presented = fingerprint(presented.as_bytes());
        let admin = self
            .admin
            .as_ref()
            .map_or(Choice::from(0), |d| same(d, &presented));
        // The matching tenant's index, chosen without branching; tokens are
        // distinct (checked at start), so at most one matches.
        let mut tenant = u64::MAX;
        for (i, (_, digest)) in self.tenants.iter().enumerate() {
            tenant.conditional_assign(&(i as u64), same(digest, &presented));
        }
        if bool::from(admin) {
            return Ok(Caller::Admin);
        }
        usize::try_from(tenant)
            .ok()
            .and_then(|i| self.tenants.get(i))
            .map(|(id, _)| Caller::Tenant(id.clone()))
            .ok_or_else(|| RpcError::new(UNAUTHORIZED, "unauthorized: wrong token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Keyring {
        Keyring::from(&Tokens {
            admin: Some("top-secret".into()),
            tenants: vec![("a".into(), "a-secret".into())],
        })
    }

    #[test]
    fn tokens_name_the_caller() {
        let t = tokens();
        assert_eq!(t.authorize(Some("Bearer top-secret")), Ok(Caller::Admin));
        assert_eq!(
            t.authorize(Some("bearer a-secret")),
            Ok(Caller::Tenant("a".into()))
        );
        for wrong in [
            None,
            Some("Bearer top-secre"),
            Some("Bearer top-secrett"),
            Some("Basic top-secret"),
            Some("top-secret"),
            Some("Bearer "),
        ] {
            assert_eq!(
                t.authorize(wrong).unwrap_err().code,
                UNAUTHORIZED,
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn without_a_process_token_only_tokenless_requests_are_admin() {
        let t = Keyring::from(&Tokens {
            admin: None,
            tenants: vec![("a".into(), "a-secret".into())],
        });
        assert_eq!(t.authorize(None), Ok(Caller::Admin));
        assert_eq!(
            t.authorize(Some("Bearer a-secret")),
            Ok(Caller::Tenant("a".into()))
        );
        assert_eq!(
            t.authorize(Some("Bearer x")).unwrap_err().code,
            UNAUTHORIZED
        );
    }

    #[test]
    fn a_tenant_caller_is_held_to_its_tenant() {
        let a = Caller::Tenant("a".into());
        assert!(a.check_tenant("app_lua.reload", "a").is_ok());
        assert_eq!(
            a.check_tenant("app_lua.reload", "b").unwrap_err().code,
            FORBIDDEN
        );
        assert_eq!(a.check_process("core.version").unwrap_err().code, FORBIDDEN);
        assert!(Caller::Admin.check_process("core.version").is_ok());
        assert!(Caller::Admin.check_tenant("tenant.stats", "b").is_ok());
    }

    /// Tokens compare through their digests: equal only when the whole
    /// values are.
    fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        same(&fingerprint(a), &fingerprint(b)).into()
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn the_digest_comparison_answers_equal_only_for_equal_tokens() {
        let long = "x".repeat(1000);
        let cases: [(&[u8], &[u8], bool); 7] = [
            (b"top-secret", b"top-secret", true),
            (b"top-secret", b"Top-secret", false),
            (b"top-secret", b"top-secreT", false),
            (b"top-secret", b"top-secret ", false),
            (long.as_bytes(), long.as_bytes(), true),
            (long.as_bytes(), &long.as_bytes()[1..], false),
            (b"\xff\x00", b"\xff\x01", false),
        ];
        for (a, b, equal) in cases {
            assert_eq!(constant_time_eq(a, b), equal, "{a:?} {b:?}");
            assert_eq!(constant_time_eq(b, a), equal, "{b:?} {a:?}");
        }
        // The Choice is 1 or 0, nothing else.
        let (x, y) = (fingerprint(b"a"), fingerprint(b"a"));
        assert_eq!(same(&x, &y).unwrap_u8(), 1);
        assert_eq!(same(&x, &fingerprint(b"b")).unwrap_u8(), 0);
    }

    #[test]
    fn each_tenant_token_names_its_own_tenant_wherever_it_is_listed() {
        let keys = Keyring::from(&Tokens {
            admin: Some("top".into()),
            tenants: (0..5)
                .map(|i| (format!("t{i}"), format!("token-{i}")))
                .collect(),
        });
        for i in 0..5 {
            assert_eq!(
                keys.authorize(Some(&format!("Bearer token-{i}"))),
                Ok(Caller::Tenant(format!("t{i}")))
            );
        }
        assert_eq!(keys.authorize(Some("Bearer top")), Ok(Caller::Admin));
        assert_eq!(
            keys.authorize(Some("Bearer token-5")).unwrap_err().code,
            UNAUTHORIZED
        );
    }
}
