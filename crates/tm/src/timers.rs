//! Time, the RFC 3261 timer values (Table 4) and timer identities.

use std::time::Duration;

use crate::effects::{Effect, TxId};

/// A point in time, in milliseconds on the caller's clock.
///
/// The layer never reads a clock: every call takes `now`, and every timer
/// is armed as an absolute `Millis`. Tests drive a virtual clock; the proxy
/// maps its monotonic clock (e.g. milliseconds since start-up) onto it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + d`, saturating (a timer cannot overflow the clock).
    pub fn after(self, d: Duration) -> Millis {
        Millis(self.0.saturating_add(ms(d)))
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The base timer values and the per-transport timers derived from them
/// (RFC 3261 17.1.1.1, 17.1.2.2, 17.2.1, 17.2.2 and Table 4).
///
/// Configurable because networks with long round trips raise T1, and
/// tests shorten everything. The derived timers are methods so they can
/// never drift apart from the base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// T1, the RTT estimate (default 500 ms).
    pub t1: Duration,
    /// T2, the longest retransmit interval for non-INVITE requests and
    /// INVITE responses (default 4 s).
    pub t2: Duration,
    /// T4, how long the network may still hold a message (default 5 s).
    pub t4: Duration,
    /// Timer D over unreliable transports: how long an INVITE client
    /// transaction keeps absorbing final response retransmissions (the RFC
    /// asks for "> 32 s"; default 32 s).
    pub d_unreliable: Duration,
    /// Timer J over unreliable transports: how long a non-INVITE server
    /// transaction keeps absorbing request retransmissions after its final
    /// response (RFC 3261: 64*T1, the default, 32 s). A busy proxy may
    /// lower it (Kamailio keeps finished transactions 5 s), trading late
    /// retransmissions after lost responses for memory.
    pub j_unreliable: Duration,
    /// Timer C, the proxy's INVITE transaction timeout (RFC 3261 16.6
    /// step 11, "> 3 min"; default 180 s), or `None` to leave it to the
    /// TU. Armed when an INVITE client transaction starts and restarted on
    /// every provisional response; reported as [`crate::TuEvent::TimerC`].
    pub c: Option<Duration>,
    /// Timer B and F, when not 64*T1: how long a client transaction waits
    /// for any response (a proxy's fr_timeout). Values over 64*T1 are
    /// capped to it.
    pub fr: Option<Duration>,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            d_unreliable: Duration::from_secs(32),
            j_unreliable: Duration::from_secs(32),
            c: Some(Duration::from_secs(180)),
            fr: None,
        }
    }
}

fn unreliable_only(reliable: bool, d: Duration) -> Duration {
    if reliable { Duration::ZERO } else { d }
}

impl Timers {
    /// Timer A: first INVITE retransmit interval (T1; unreliable only).
    pub fn a(&self) -> Duration {
        self.t1
    }

    /// Timer B: INVITE transaction timeout (64*T1, or `fr` when shorter).
    pub fn b(&self) -> Duration {
        self.no_response_timeout()
    }

    /// Timer D: wait for response retransmits after an INVITE final
    /// response (`d_unreliable` over unreliable transports, 0 otherwise).
    pub fn d(&self, reliable: bool) -> Duration {
        unreliable_only(reliable, self.d_unreliable)
    }

    /// Timer E: first non-INVITE retransmit interval (T1; unreliable only).
    pub fn e(&self) -> Duration {
        self.t1
    }

    /// Timer F: non-INVITE transaction timeout (64*T1, or `fr` when
    /// shorter).
    pub fn f(&self) -> Duration {
        self.no_response_timeout()
    }

    fn no_response_timeout(&self) -> Duration {
        let rfc = self.t1.saturating_mul(64);
        self.fr.map_or(rfc, |fr| fr.min(rfc))
    }

    /// Timer G: first INVITE final response retransmit interval (T1;
    /// unreliable only).
    pub fn g(&self) -> Duration {
        self.t1
    }

    /// Timer H: wait for the ACK of an INVITE final response (64*T1).
    pub fn h(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer I: wait for ACK retransmits (T4 unreliable, 0 reliable).
    pub fn i(&self, reliable: bool) -> Duration {
        unreliable_only(reliable, self.t4)
    }

    /// Timer J: wait for non-INVITE request retransmits (`j_unreliable`,
    /// 64*T1 by default, over unreliable transports; 0 reliable).
    pub fn j(&self, reliable: bool) -> Duration {
        unreliable_only(reliable, self.j_unreliable)
    }

    /// Timer K: wait for non-INVITE response retransmits (T4 unreliable,
    /// 0 reliable).
    pub fn k(&self, reliable: bool) -> Duration {
        unreliable_only(reliable, self.t4)
    }
}

/// Which timer of a transaction fired; the letters are RFC 3261's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// INVITE client: retransmit the request.
    A,
    /// INVITE client: give up while Calling.
    B,
    /// INVITE client: proxy timeout without a final response (RFC 3261 16.6).
    C,
    /// INVITE client: stop absorbing final response retransmissions.
    D,
    /// Non-INVITE client: retransmit the request.
    E,
    /// Non-INVITE client: give up.
    F,
    /// INVITE server: retransmit the final non-2xx response.
    G,
    /// INVITE server: give up waiting for the ACK.
    H,
    /// INVITE server: stop absorbing ACK retransmissions.
    I,
    /// Non-INVITE server: stop absorbing request retransmissions.
    J,
    /// Non-INVITE client: stop absorbing response retransmissions.
    K,
    /// INVITE server: send the automatic `100 Trying` if the TU has not
    /// responded yet (see [`crate::AutoTrying::After`]).
    Trying,
}

/// Names one armed timer: the transaction, the timer, and its deadline.
///
/// The deadline is part of the identity so a stale firing (the timer was
/// re-armed, or the transaction left the state that armed it) is told
/// apart from the current one without ever cancelling anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId {
    tx: TxId,
    kind: TimerKind,
    at: Millis,
}

impl TimerId {
    /// The transaction the timer belongs to.
    pub fn tx(&self) -> TxId {
        self.tx
    }

    /// Which timer it is.
    pub fn kind(&self) -> TimerKind {
        self.kind
    }

    /// When it is due.
    pub fn at(&self) -> Millis {
        self.at
    }
}

/// The timers a transaction currently expects, at most one per kind.
///
/// Arming replaces the previous deadline of that kind; a firing counts only
/// when it matches an expected (kind, deadline) pair, which is how lazy
/// cancellation is implemented.
#[derive(Debug, Clone, Default)]
pub(crate) struct Deadlines {
    armed: Vec<(TimerKind, Millis)>,
}

impl Deadlines {
    /// Expects `kind` at `now + after` and returns the effect arming it.
    pub(crate) fn arm(
        &mut self,
        tx: TxId,
        kind: TimerKind,
        now: Millis,
        after: Duration,
    ) -> Effect {
        let at = now.after(after);
        self.armed.retain(|(k, _)| *k != kind);
        self.armed.push((kind, at));
        Effect::Arm {
            timer: TimerId { tx, kind, at },
            at,
        }
    }

    /// Stops expecting `kind` (its pending firing becomes stale).
    pub(crate) fn disarm(&mut self, kind: TimerKind) {
        self.armed.retain(|(k, _)| *k != kind);
    }

    /// Whether `timer` is one this transaction still expects; if so it is
    /// consumed (a timer fires once).
    pub(crate) fn fire(&mut self, timer: &TimerId) -> bool {
        let before = self.armed.len();
        self.armed
            .retain(|(k, at)| !(*k == timer.kind && *at == timer.at));
        self.armed.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effects::ClientId;

    #[test]
    fn table_4_defaults() {
        let t = Timers::default();
        assert_eq!(t.a(), Duration::from_millis(500));
        assert_eq!(t.b(), Duration::from_secs(32));
        assert_eq!(t.d(false), Duration::from_secs(32));
        assert_eq!(t.d(true), Duration::ZERO);
        assert_eq!(t.e(), Duration::from_millis(500));
        assert_eq!(t.f(), Duration::from_secs(32));
        assert_eq!(t.g(), Duration::from_millis(500));
        assert_eq!(t.h(), Duration::from_secs(32));
        assert_eq!(t.i(false), Duration::from_secs(5));
        assert_eq!(t.i(true), Duration::ZERO);
        assert_eq!(t.j(false), Duration::from_secs(32));
        assert_eq!(t.j(true), Duration::ZERO);
        assert_eq!(t.k(false), Duration::from_secs(5));
        assert_eq!(t.k(true), Duration::ZERO);
    }

    #[test]
    fn saturating_clock() {
        assert_eq!(
            Millis(u64::MAX).after(Duration::from_secs(1)),
            Millis(u64::MAX)
        );
        assert_eq!(ms(Duration::MAX), u64::MAX);
    }

    #[test]
    fn stale_and_repeated_firings_are_ignored() {
        let tx = TxId::Client(ClientId::new(1));
        let mut d = Deadlines::default();
        let Effect::Arm { timer: first, .. } =
            d.arm(tx, TimerKind::A, Millis(0), Duration::from_millis(500))
        else {
            panic!("not an Arm");
        };
        let Effect::Arm { timer: second, .. } =
            d.arm(tx, TimerKind::A, Millis(100), Duration::from_millis(500))
        else {
            panic!("not an Arm");
        };
        assert!(!d.fire(&first));
        assert!(d.fire(&second));
        assert!(!d.fire(&second));
        let Effect::Arm { timer: b, .. } =
            d.arm(tx, TimerKind::B, Millis(0), Duration::from_secs(32))
        else {
            panic!("not an Arm");
        };
        d.disarm(TimerKind::B);
        assert!(!d.fire(&b));
    }
}
