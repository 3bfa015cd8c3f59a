//! A tenant's identity: what its log lines, metrics, admin methods and
//! stored subscribers are keyed by.
//!
//! It lives in the lowest crate every layer shares (config, sandbox, proxy,
//! admin), so one type names a tenant from the config file to the proxy,
//! and an id that would not survive a metrics label or a log filter cannot
//! be made.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A tenant id: one or more ASCII letters, digits, `_` or `-`.
///
/// Made only by [`FromStr`] (which checks the characters) or
/// [`TenantId::default_tenant`], so every value is one a config file could
/// have named. Shared, not copied: every instance, invocation and log
/// line of the tenant carries it, so a clone is a reference count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(Arc<str>);

/// Why a string is not a tenant id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTenantId(pub String);

impl fmt::Display for InvalidTenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tenant id {:?}: use letters, digits, '_' and '-' only",
            self.0
        )
    }
}

impl std::error::Error for InvalidTenantId {}

impl TenantId {
    /// The id of the one tenant a run without `[[tenant]]` hosts.
    pub const DEFAULT: &'static str = "default";

    /// The tenant of a run without `[[tenant]]`: "default".
    pub fn default_tenant() -> TenantId {
        TenantId(TenantId::DEFAULT.into())
    }

    /// The id as written in the config file.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TenantId {
    type Err = InvalidTenantId;

    fn from_str(s: &str) -> Result<TenantId, InvalidTenantId> {
        let valid = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid {
            Ok(TenantId(s.into()))
        } else {
            Err(InvalidTenantId(s.to_string()))
        }
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for TenantId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for TenantId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_letters_digits_underscore_and_dash_make_an_id() {
        for good in ["a", "acme-1", "A_b", "default"] {
            assert_eq!(good.parse::<TenantId>().unwrap().as_str(), good);
        }
        for bad in ["", "a b", "a.b", "é", "a/b", "a:b"] {
            assert_eq!(
                bad.parse::<TenantId>(),
                Err(InvalidTenantId(bad.to_string()))
            );
        }
        assert_eq!(TenantId::default_tenant().as_str(), TenantId::DEFAULT);
    }
}
