//! Handing received messages to workers: messages of one call (same
//! Call-ID) go to the same worker and are handled in the order they
//! arrived, so a 180 is never overtaken by the 200 that followed it;
//! different calls run in parallel.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::Shared;
use crate::transport::Inbound;

/// Messages queued per worker. A receive loop never waits for one busy
/// worker (that would stall every call behind it): when a worker's queue
/// is full the message is dropped and counted, as the kernel would drop it
/// with a full socket buffer, and the sender's retransmission comes back.
const QUEUE: usize = 1024;

/// The queues of the message workers.
pub struct Dispatch {
    queues: Vec<mpsc::Sender<Inbound>>,
    receivers: Mutex<Vec<mpsc::Receiver<Inbound>>>,
    salt: std::collections::hash_map::RandomState,
    /// Messages dropped because their worker's queue was full.
    overflow: AtomicU64,
}

impl Dispatch {
    /// `workers` queues (at least one).
    pub fn new(workers: usize) -> Dispatch {
        let (queues, receivers) = (0..workers.max(1)).map(|_| mpsc::channel(QUEUE)).unzip();
        Dispatch {
            queues,
            receivers: Mutex::new(receivers),
            salt: Default::default(),
            overflow: AtomicU64::new(0),
        }
    }

    /// Start the workers.
    pub fn start(shared: &Arc<Shared>, tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>) {
        let receivers = std::mem::take(
            &mut *shared
                .dispatch
                .receivers
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for mut rx in receivers {
            let shared = shared.clone();
            tasks.spawn(async move {
                while let Some(inbound) = rx.recv().await {
                    crate::handler::handle(&shared, inbound).await;
                }
                Ok(())
            });
        }
    }

    /// Queue a message for the worker of its call, without waiting.
    pub fn send(&self, inbound: Inbound) {
        let mut h = self.salt.build_hasher();
        match call_id(&inbound.data) {
            Some(id) => id.hash(&mut h),
            None => inbound.source.hash(&mut h),
        }
        let index = (h.finish() % self.queues.len() as u64) as usize;
        let Some(queue) = self.queues.get(index) else {
            return;
        };
        match queue.try_send(inbound) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(dropped)) => {
                let total = self.overflow.fetch_add(1, Ordering::Relaxed) + 1;
                if total.is_power_of_two() {
                    tracing::warn!(peer = %dropped.source, dropped = total, "worker queue full: message dropped (overload)");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("message worker gone; message dropped")
            }
        }
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
