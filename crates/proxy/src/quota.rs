//! Per-tenant request rate limits: a token bucket checked before a new
//! request runs the tenant's `ksr_request_route`.
//!
//! Only requests that would start the request route are counted: ACKs,
//! CANCELs, retransmissions absorbed by a transaction, replies and the
//! routes a transaction runs later (branch, reply, failure) are never
//! refused. A refused request gets the tenant's configured reply,
//! statelessly, and is counted in `kemibox_rate_limited_total`
//! (`TenantMetrics::rate_limited`).

use std::time::Instant;

use kemibox_sandbox::{Take, TokenBucket};

/// The reply to a request over its tenant's rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitedReply {
    pub code: u16,
    pub reason: String,
    /// Seconds for a `Retry-After` header; `None`: no header.
    pub retry_after: Option<u32>,
}

impl Default for LimitedReply {
    fn default() -> LimitedReply {
        LimitedReply {
            code: 503,
            reason: "Service Unavailable".into(),
            retry_after: Some(1),
        }
    }
}

/// A tenant's rate limit: `per_second` requests on average, up to `burst`
/// at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
    pub reply: LimitedReply,
}

/// A tenant's limiter: its rate limit and the bucket counting it.
pub(crate) struct Limiter {
    limited: Option<(RateLimit, TokenBucket)>,
}

impl Limiter {
    pub fn new(limit: Option<RateLimit>) -> Limiter {
        Limiter {
            limited: limit.map(|l| {
                let bucket = TokenBucket::new(l.per_second, l.burst);
                (l, bucket)
            }),
        }
    }

    pub fn limit(&self) -> Option<&RateLimit> {
        self.limited.as_ref().map(|(l, _)| l)
    }

    /// Take a token for one request at `now`.
    pub fn admit(&self, now: Instant) -> Take {
        match &self.limited {
            Some((_, bucket)) => bucket.take(now),
            None => Take::Yes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_limit_refuses_past_its_burst_and_no_limit_admits_everything() {
        let now = Instant::now();
        let limited = Limiter::new(Some(RateLimit {
            per_second: 10,
            burst: 3,
            reply: LimitedReply::default(),
        }));
        let admitted = |l: &Limiter| (0..1000).filter(|_| l.admit(now) == Take::Yes).count();
        assert_eq!(admitted(&limited), 3);
        assert_eq!(admitted(&Limiter::new(None)), 1000);
    }
}
