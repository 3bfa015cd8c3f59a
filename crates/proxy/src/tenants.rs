//! Several tenants in one proxy: which tenant a message belongs to.
//!
//! A request goes to the tenant owning the socket it arrived on, when
//! exactly one does; else to the tenant one of whose domains is the R-URI
//! host (among the socket's owners when several own it, among all tenants
//! when none does); else to the tenant with neither sockets nor domains
//! (the catch-all), if there is one; else nobody takes it and it is
//! answered with the configured `unmatched_reply`. Everything that runs
//! later for a transaction uses the tenant that created it.

use std::net::SocketAddr;
use std::sync::Arc;

use kemibox_kemi::{Message, Transport};
use kemibox_sandbox::Pool;
use kemibox_sip::Uri;

use crate::quota::{Limiter, RateLimit};
use crate::{Listen, Transports};

/// One hosted tenant as the proxy sees it: the pool running its script,
/// and how its messages are recognised and admitted.
pub struct Hosted {
    pub pool: Arc<Pool>,
    /// Listen addresses the tenant owns (each must be in the proxy's
    /// listen list; with port 0, the port as bound).
    pub listen: Vec<Listen>,
    /// Domains whose R-URIs are the tenant's: `example.com`, or
    /// `*.example.com` for any subdomain. Compared without case.
    pub domains: Vec<String>,
    /// Requests per second the tenant's request route may take (`None`:
    /// no limit).
    pub rate: Option<RateLimit>,
}

/// A hosted tenant being served: as given, its listen addresses resolved
/// to the sockets bound, and the limiter counting its requests against
/// its `rate`.
struct Served {
    tenant: Hosted,
    limiter: Limiter,
}

/// The hosted tenants.
pub(crate) struct Tenants {
    served: Vec<Served>,
}

impl Tenants {
    /// One tenant that gets every message.
    pub fn single(pool: Arc<Pool>) -> Tenants {
        Tenants {
            served: vec![Served {
                tenant: Hosted {
                    pool,
                    listen: Vec::new(),
                    domains: Vec::new(),
                    rate: None,
                },
                limiter: Limiter::new(None),
            }],
        }
    }

    /// The tenants, their listen addresses resolved to the bound sockets.
    pub fn new(
        hosted: Vec<Hosted>,
        listen: &[Listen],
        transports: &Transports,
    ) -> anyhow::Result<Tenants> {
        // `Transports::bind` binds in the order given, per transport.
        let bound = transports.local_addrs();
        let (mut udp, mut tcp) = (0, 0);
        let mut resolved = Vec::new();
        for l in listen {
            let k = match l.transport {
                Transport::Udp => &mut udp,
                Transport::Tcp => &mut tcp,
            };
            let socket = bound.iter().filter(|(t, _)| *t == l.transport).nth(*k);
            *k += 1;
            if let Some(&(transport, addr)) = socket {
                resolved.push((*l, Listen { transport, addr }));
            }
        }
        let mut served = Vec::new();
        for mut tenant in hosted {
            let mut sockets = Vec::new();
            for l in &tenant.listen {
                let before = sockets.len();
                sockets.extend(resolved.iter().filter(|(c, _)| c == l).map(|(_, s)| *s));
                if sockets.len() == before {
                    anyhow::bail!(
                        "tenant {}: listen {l} is not one of the proxy's listen addresses",
                        tenant.pool.tenant().spec.id
                    );
                }
            }
            tenant.listen = sockets;
            let limiter = Limiter::new(tenant.rate.clone());
            served.push(Served { tenant, limiter });
        }
        if served.is_empty() {
            anyhow::bail!("no tenant to serve");
        }
        Ok(Tenants { served })
    }

    /// Every hosted tenant's pool.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.served.iter().map(|s| &s.tenant.pool)
    }

    /// The tenant of a request (`ruri_host`: its R-URI host) or a reply
    /// (`None`) that arrived on `local`.
    pub fn select(
        &self,
        transport: Transport,
        local: SocketAddr,
        ruri_host: Option<&str>,
    ) -> Option<&Arc<Pool>> {
        if let [only] = self.served.as_slice() {
            return Some(&only.tenant.pool);
        }
        let arrived = Listen {
            transport,
            addr: local,
        };
        let owners: Vec<&Hosted> = self
            .served
            .iter()
            .map(|s| &s.tenant)
            .filter(|t| t.listen.contains(&arrived))
            .collect();
        if let [owner] = owners.as_slice() {
            return Some(&owner.pool);
        }
        if let Some(host) = ruri_host {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let by_domain = |t: &&Hosted| t.domains.iter().any(|d| domain_matches(d, host));
            let found = if owners.is_empty() {
                self.served.iter().map(|s| &s.tenant).find(by_domain)
            } else {
                owners.into_iter().find(by_domain)
            };
            if let Some(t) = found {
                return Some(&t.pool);
            }
        }
        self.served
            .iter()
            .map(|s| &s.tenant)
            .find(|t| t.listen.is_empty() && t.domains.is_empty())
            .map(|t| &t.pool)
    }

    /// The tenant of the request in `m`.
    pub fn for_request(&self, m: &Message) -> Option<&Arc<Pool>> {
        if let [only] = self.served.as_slice() {
            return Some(&only.tenant.pool);
        }
        let host = m
            .sip
            .ruri()
            .and_then(|r| Uri::parse(r).ok())
            .map(|u| u.host);
        self.select(m.transport, m.local, host)
    }

    /// The rate limiter of the tenant running `pool`.
    pub fn limiter(&self, pool: &Arc<Pool>) -> Option<&Limiter> {
        self.served
            .iter()
            .find(|s| Arc::ptr_eq(&s.tenant.pool, pool))
            .map(|s| &s.limiter)
    }
}

/// `domain` (`*.x` for any subdomain of x) against `host`, without case.
fn domain_matches(domain: &str, host: &str) -> bool {
    match domain.strip_prefix("*.") {
        Some(parent) => {
            host.len() > parent.len() + 1 && {
                let (sub, tail) = host.split_at(host.len() - parent.len());
                sub.ends_with('.') && tail.eq_ignore_ascii_case(parent)
            }
        }
        None => domain.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::domain_matches;

    #[test]
    fn domains_match_without_case_and_wildcards_match_subdomains_only() {
        assert!(domain_matches("a.example", "A.Example"));
        assert!(!domain_matches("a.example", "b.example"));
        assert!(!domain_matches("a.example", "x.a.example"));
        assert!(domain_matches("*.a.example", "x.A.example"));
        assert!(domain_matches("*.a.example", "y.x.a.example"));
        assert!(!domain_matches("*.a.example", "a.example"));
        assert!(!domain_matches("*.a.example", "xa.example"));
    }
}
