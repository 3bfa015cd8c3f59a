//! Who is calling: the `Authorization: Bearer TOKEN` header matched,
//! in constant time, against the process token and the tenants' tokens.

use crate::rpc::{FORBIDDEN, RpcError, UNAUTHORIZED};

/// The tokens the admin API accepts.
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

impl Tokens {
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
        let mut found = None;
        if let Some(admin) = &self.admin
            && constant_time_eq(presented.as_bytes(), admin.as_bytes())
        {
            found = Some(Caller::Admin);
        }
        for (tenant, token) in &self.tenants {
            if constant_time_eq(presented.as_bytes(), token.as_bytes()) && found.is_none() {
                found = Some(Caller::Tenant(tenant.clone()));
            }
        }
        found.ok_or_else(|| RpcError::new(UNAUTHORIZED, "unauthorized: wrong token"))
    }
}

/// Equal, in a time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            admin: Some("top-secret".into()),
            tenants: vec![("a".into(), "a-secret".into())],
        }
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
        let t = Tokens {
            admin: None,
            tenants: vec![("a".into(), "a-secret".into())],
        };
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

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
