//! `KSR.maxfwd`: loop protection through Max-Forwards (RFC 3261 16.3 step 3,
//! 16.6 step 3).

/// Kamailio's `max_limit` default: a decremented value above it is lowered
/// to it.
const MAX_LIMIT: u32 = 70;

use crate::bindings::kemibox::ksr::maxfwd::Host;
use crate::{Ctx, Event};

impl Host for Ctx {
    async fn process_maxfwd(&mut self, limit: i32) -> i32 {
        let Ok(limit) = u32::try_from(limit) else {
            self.script_error(
                "KSR.maxfwd.process_maxfwd",
                format!("invalid limit {limit}"),
            );
            return -2;
        };
        let Some(m) = self.message.as_mut() else {
            return -2;
        };
        let present = m.sip.header("Max-Forwards").is_some();
        let (result, value) = match (present, m.sip.max_forwards()) {
            (false, _) => (2, limit),
            (true, None) => return -2,
            (true, Some(0)) => return -1,
            (true, Some(v)) => (1, (v - 1).min(MAX_LIMIT)),
        };
        m.edits.set_max_forwards(&m.sip, value);
        self.events.push(Event::HeaderAdded {
            header: format!("Max-Forwards: {value}"),
            position: if result == 2 { "start" } else { "replace" }.into(),
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{INVITE, ctx, invite_with, logs, ready, rendered};

    /// A present value is decremented in place: 1.
    #[test]
    fn decrements_a_present_value() {
        let mut ctx = ctx(INVITE);
        assert_eq!(ready(ctx.process_maxfwd(10)), 1);
        assert!(rendered(&ctx).contains("\r\nMax-Forwards: 69\r\n"));
        assert!(!rendered(&ctx).contains("Max-Forwards: 70"));
        assert_eq!(
            ctx.events,
            vec![Event::HeaderAdded {
                header: "Max-Forwards: 69".into(),
                position: "replace".into(),
            }]
        );
    }

    /// Above Kamailio's max_limit (70) the decremented value is lowered
    /// to it.
    #[test]
    fn caps_a_large_value_at_seventy() {
        let mut ctx = ctx(&invite_with(&[("Max-Forwards:", "Max-Forwards: 255")], &[]));
        assert_eq!(ready(ctx.process_maxfwd(10)), 1);
        assert!(rendered(&ctx).contains("\r\nMax-Forwards: 70\r\n"));
    }

    /// A missing header is added with the limit: 2.
    #[test]
    fn adds_a_missing_header_with_the_limit() {
        let mut ctx = ctx(&invite_with(&[("Max-Forwards:", "")], &[]));
        assert_eq!(ready(ctx.process_maxfwd(10)), 2);
        assert!(rendered(&ctx).contains("Max-Forwards: 10\r\n"));
        assert_eq!(
            ctx.events,
            vec![Event::HeaderAdded {
                header: "Max-Forwards: 10".into(),
                position: "start".into(),
            }]
        );
    }

    /// Zero: -1 and the message is left as it is (the script answers 483);
    /// a value that is not a number: -2.
    #[test]
    fn zero_is_exhausted_and_garbage_is_an_error() {
        let zero = invite_with(&[("Max-Forwards:", "Max-Forwards: 0")], &[]);
        let mut c = ctx(&zero);
        assert_eq!(ready(c.process_maxfwd(10)), -1);
        assert_eq!(rendered(&c), zero);
        assert!(c.events.is_empty());

        let garbage = invite_with(&[("Max-Forwards:", "Max-Forwards: many")], &[]);
        let mut c = ctx(&garbage);
        assert_eq!(ready(c.process_maxfwd(10)), -2);
        assert_eq!(rendered(&c), garbage);
    }

    /// A negative limit is the script's mistake: -2, logged.
    #[test]
    fn a_negative_limit_is_refused() {
        let mut ctx = ctx(INVITE);
        assert_eq!(ready(ctx.process_maxfwd(-1)), -2);
        assert_eq!(
            logs(&ctx),
            vec!["KSR.maxfwd.process_maxfwd: invalid limit -1"]
        );
        assert_eq!(rendered(&ctx), INVITE);
    }
}
