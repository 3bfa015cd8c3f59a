//! A token bucket: `per_second` on average, up to `burst` at once. The
//! proxy's per-tenant request rate and the pool's instance re-creation
//! budget both count with it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the bucket says of one take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Yes,
    /// Refused; `warn`: log it (true at most once a second per bucket, so
    /// a refused flood logs one line a second).
    No {
        warn: bool,
    },
}

pub struct TokenBucket {
    per_second: u32,
    burst: u32,
    state: Mutex<State>,
}

struct State {
    tokens: f64,
    refilled: Instant,
    warned: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_second: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            per_second,
            burst,
            state: Mutex::new(State {
                tokens: f64::from(burst),
                refilled: Instant::now(),
                warned: None,
            }),
        }
    }

    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Take a token at `now`.
    pub fn take(&self, now: Instant) -> Take {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
        s.tokens = (s.tokens + elapsed * f64::from(self.per_second)).min(f64::from(self.burst));
        s.refilled = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            return Take::Yes;
        }
        let warn = s
            .warned
            .is_none_or(|w| now.saturating_duration_since(w) >= Duration::from_secs(1));
        if warn {
            s.warned = Some(now);
        }
        Take::No { warn }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(b: &TokenBucket, n: usize, now: Instant) -> usize {
        (0..n).filter(|_| b.take(now) == Take::Yes).count()
    }

    #[test]
    fn a_burst_is_served_then_the_rate_refills() {
        let b = TokenBucket::new(10, 3);
        let t0 = Instant::now();
        assert_eq!(taken(&b, 10, t0), 3);
        // 10/s: one token per 100 ms, never more than the burst.
        assert_eq!(taken(&b, 5, t0 + Duration::from_millis(250)), 2);
        assert_eq!(taken(&b, 10, t0 + Duration::from_secs(60)), 3);
    }

    #[test]
    fn warnings_come_at_most_once_a_second() {
        let b = TokenBucket::new(1, 1);
        let t0 = Instant::now();
        assert_eq!(b.take(t0), Take::Yes);
        let warns = |at: Instant| b.take(at) == Take::No { warn: true };
        assert!(warns(t0));
        assert!(!warns(t0 + Duration::from_millis(10)));
        assert!(!warns(t0 + Duration::from_millis(900)));
        // A token came back at 1 s; the next refusal warns again.
        assert_eq!(b.take(t0 + Duration::from_millis(1500)), Take::Yes);
        assert!(warns(t0 + Duration::from_millis(1600)));
    }
}
