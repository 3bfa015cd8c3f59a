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
