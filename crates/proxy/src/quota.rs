//! Per-tenant request rate limits: a token bucket checked before a new
//! request runs the tenant's `ksr_request_route`.
//!
//! Only requests that would start the request route are counted: ACKs,
//! CANCELs, retransmissions absorbed by a transaction, replies and the
//! routes a transaction runs later (branch, reply, failure) are never
//! refused. A refused request gets the tenant's configured reply,
//! statelessly, and is counted in [`TenantStats::rate_limited`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// What a tenant's counters say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantStats {
    pub tenant: String,
    /// Requests refused for the tenant's rate limit since start.
    pub rate_limited: u64,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// When the last "rate limited" warning was logged.
    warned: Option<Instant>,
}

/// A tenant's limiter and counters.
pub(crate) struct Limiter {
    limit: Option<RateLimit>,
    bucket: Mutex<Bucket>,
}

/// What the limiter says of one request.
pub(crate) enum Admit {
    Yes,
    /// Refused; `warn`: log it (at most once a second per tenant).
    No {
        warn: bool,
    },
}

impl Limiter {
    pub fn new(limit: Option<RateLimit>) -> Limiter {
        let burst = limit.as_ref().map_or(0, |l| l.burst);
        Limiter {
            limit,
            bucket: Mutex::new(Bucket {
                tokens: f64::from(burst),
                refilled: Instant::now(),
                warned: None,
            }),
        }
    }

    pub fn limit(&self) -> Option<&RateLimit> {
        self.limit.as_ref()
    }

    /// Take a token for one request at `now`.
    pub fn admit(&self, now: Instant) -> Admit {
        let Some(limit) = &self.limit else {
            return Admit::Yes;
        };
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * f64::from(limit.per_second)).min(f64::from(limit.burst));
        b.refilled = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Admit::Yes;
        }
        let warn = b
            .warned
            .is_none_or(|w| now.saturating_duration_since(w) >= Duration::from_secs(1));
        if warn {
            b.warned = Some(now);
        }
        Admit::No { warn }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(per_second: u32, burst: u32) -> Limiter {
        Limiter::new(Some(RateLimit {
            per_second,
            burst,
            reply: LimitedReply::default(),
        }))
    }

    fn admitted(l: &Limiter, n: usize, now: Instant) -> usize {
        (0..n)
            .filter(|_| matches!(l.admit(now), Admit::Yes))
            .count()
    }

    #[test]
    fn a_burst_is_served_then_the_rate_refills() {
        let l = limited(10, 3);
        let t0 = Instant::now();
        assert_eq!(admitted(&l, 10, t0), 3);
        // 10/s: one token per 100 ms, never more than the burst.
        assert_eq!(admitted(&l, 5, t0 + Duration::from_millis(250)), 2);
        assert_eq!(admitted(&l, 10, t0 + Duration::from_secs(60)), 3);
    }

    #[test]
    fn warnings_come_at_most_once_a_second() {
        let l = limited(1, 1);
        let t0 = Instant::now();
        assert!(matches!(l.admit(t0), Admit::Yes));
        let warns = |at: Instant| matches!(l.admit(at), Admit::No { warn: true, .. });
        assert!(warns(t0));
        assert!(!warns(t0 + Duration::from_millis(10)));
        assert!(!warns(t0 + Duration::from_millis(900)));
        // A token came back at 1 s; the next refusal warns again.
        assert!(matches!(
            l.admit(t0 + Duration::from_millis(1500)),
            Admit::Yes
        ));
        assert!(warns(t0 + Duration::from_millis(1600)));
    }

    #[test]
    fn no_limit_admits_everything() {
        let l = Limiter::new(None);
        assert_eq!(admitted(&l, 1000, Instant::now()), 1000);
    }
}
