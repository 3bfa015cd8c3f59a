//! Handing received messages to tasks. The messages of one call (same
//! Call-ID) are handled one after another, in the order they arrived, so a
//! 180 is never overtaken by the 200 that followed it. Different calls are
//! handled at once, each call in a task of its own: a call whose route
//! takes long (a looping script until its fuel runs out, one waiting on a
//! database until its deadline) holds up the later messages of that call
//! only, never another call's, whatever their tenants. (With a fixed set of
//! workers, each serving the calls hashed to it, a message of tenant `b`
//! waited behind tenant `a`'s looping route whenever their Call-IDs hashed
//! to the same worker; docs/isolation.md.) How many of a tenant's routes
//! run at once is its pool's business (`kemibox_sandbox::Pool`).

use std::collections::VecDeque;
use std::collections::hash_map::{Entry, HashMap, RandomState};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::Shared;
use crate::transport::Inbound;

/// Messages accepted and not yet handled, at most. A receive loop never
/// waits: past this the message is dropped and counted, as the kernel
/// would drop it with a full socket buffer, and the sender's
/// retransmission comes back.
const PENDING: usize = 8192;

/// The calls being handled and the messages waiting behind them.
#[derive(Default)]
pub struct Dispatch {
    /// For each call with a task running, the messages that arrived while
    /// it handles an earlier one, oldest first. Keyed by a hash of the
    /// Call-ID (of the source address when there is none): two calls
    /// whose keys collide are merely handled one after the other.
    calls: Mutex<HashMap<u64, VecDeque<Inbound>>>,
    salt: RandomState,
    /// Messages accepted and not yet handled.
    pending: AtomicUsize,
    /// Messages dropped because [`PENDING`] were waiting.
    overflow: AtomicU64,
}

impl Dispatch {
    /// Hand `inbound` to the task of its call, starting one when the call
    /// has none; never waits.
    pub fn send(shared: &Arc<Shared>, inbound: Inbound) {
        let this = &shared.dispatch;
        if this.pending.fetch_add(1, Ordering::Relaxed) >= PENDING {
            this.pending.fetch_sub(1, Ordering::Relaxed);
            let total = this.overflow.fetch_add(1, Ordering::Relaxed) + 1;
            if total.is_power_of_two() {
                tracing::warn!(peer = %inbound.source, dropped = total, "{PENDING} messages waiting: message dropped (overload)");
            }
            return;
        }
        let key = this.key(&inbound);
        match this.calls().entry(key) {
            Entry::Occupied(mut waiting) => {
                waiting.get_mut().push_back(inbound);
                return;
            }
            Entry::Vacant(none) => {
                none.insert(VecDeque::new());
            }
        }
        let call = Call {
            shared: shared.clone(),
            key,
            finished: false,
        };
        tokio::spawn(call.run(inbound));
    }

    fn calls(&self) -> MutexGuard<'_, HashMap<u64, VecDeque<Inbound>>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, inbound: &Inbound) -> u64 {
        let mut h = self.salt.build_hasher();
        match call_id(&inbound.data) {
            Some(id) => id.hash(&mut h),
            None => inbound.source.hash(&mut h),
        }
        h.finish()
    }
}

/// The task handling one call's messages while it has any.
struct Call {
    shared: Arc<Shared>,
    key: u64,
    /// Set when the call has no message left (its entry is gone then).
    finished: bool,
}

impl Call {
    async fn run(mut self, first: Inbound) {
        let mut next = Some(first);
        while let Some(inbound) = next {
            crate::handler::handle(&self.shared, inbound).await;
            self.shared.dispatch.pending.fetch_sub(1, Ordering::Relaxed);
            next = self.next();
        }
        self.finished = true;
    }

    /// The call's next waiting message; with none, the call is done and
    /// its entry removed.
    fn next(&self) -> Option<Inbound> {
        let mut calls = self.shared.dispatch.calls();
        let Entry::Occupied(mut waiting) = calls.entry(self.key) else {
            return None;
        };
        let next = waiting.get_mut().pop_front();
        if next.is_none() {
            waiting.remove();
        }
        next
    }
}

impl Drop for Call {
    /// A task that ends early (a panic in a handler, the runtime shutting
    /// down) gives up its call's waiting messages, so the call's next
    /// message starts a task again instead of waiting forever.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let waiting = self.shared.dispatch.calls().remove(&self.key);
        let lost = waiting.map_or(0, |w| w.len());
        // The message being handled was not counted out either.
        self.shared
            .dispatch
            .pending
            .fetch_sub(lost + 1, Ordering::Relaxed);
        tracing::warn!(
            lost,
            "a call's handler ended early: its waiting messages are dropped"
        );
    }
}

/// The Call-ID value of a raw message, found without parsing it.
fn call_id(data: &[u8]) -> Option<&[u8]> {
    for line in data.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let colon = line.iter().position(|b| *b == b':')?;
        let (name, value) = line.split_at(colon);
        let name = name.trim_ascii();
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            return value.get(1..).map(<[u8]>::trim_ascii);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::call_id;

    #[test]
    fn finds_the_call_id_in_long_and_compact_form() {
        let long = b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nCall-ID:  abc@h \r\n\r\n";
        assert_eq!(call_id(long), Some(&b"abc@h"[..]));
        let compact = b"SIP/2.0 200 OK\r\ni: xyz\r\n\r\nbody i: no";
        assert_eq!(call_id(compact), Some(&b"xyz"[..]));
        assert_eq!(call_id(b"garbage"), None);
        assert_eq!(call_id(b"A\r\nno colon here\r\n\r\n"), None);
    }
}
