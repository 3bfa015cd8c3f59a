//! Handing received messages to workers: messages of one call (same
//! Call-ID) go to the same worker and are handled in the order they
//! arrived, so a 180 is never overtaken by the 200 that followed it;
//! different calls run in parallel.
//!
//! A worker handles its messages one at a time, and almost every message
//! is done at its first poll (a typical route ends long before it would
//! yield). A message whose handling has to wait (a route running long
//! enough to yield, one waiting on a database, a tenant's instances all
//! busy) keeps its worker, which from then on serves that call only: a new
//! worker takes over the queue, and the call's later messages wait behind
//! it, in order. So a tenant whose route loops until its fuel runs out
//! holds up its own call, never the other calls, of any tenant, that share
//! its worker's queue (docs/isolation.md: before, they waited behind it).
//! The handling is never moved, so the common path costs no allocation.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::transport::Inbound;

/// What the workers hand each message to (the proxy's handler): dispatch
/// knows nothing above it.
pub(crate) trait Handler: Send + Sync + Sized + 'static {
    /// The queues this handler's messages go through.
    fn dispatch(&self) -> &Dispatch;
    /// Handle one received message.
    fn handle(self: &Arc<Self>, inbound: Inbound) -> impl Future<Output = ()> + Send;
}

/// Messages queued per worker. A receive loop never waits for one busy
/// worker (that would stall every call behind it): when a worker's queue
/// is full the message is dropped and counted, as the kernel would drop it
/// with a full socket buffer, and the sender's retransmission comes back.
const QUEUE: usize = 1024;

/// Calls at most that keep a worker of their own while waiting. Past it a
/// worker waits with its queue, as without them: a flood of slow calls
/// slows its workers instead of taking memory without bound (a worker's
/// state is some 40 KiB).
const WAITING: usize = 256;

/// A message and the hash of its call.
type Keyed = (u64, Inbound);

/// The queues of the message workers.
pub struct Dispatch {
    queues: Vec<mpsc::Sender<Keyed>>,
    receivers: Mutex<Vec<mpsc::Receiver<Keyed>>>,
    salt: RandomState,
    /// Messages dropped because their worker's queue was full.
    overflow: AtomicU64,
    /// The calls waiting on a worker of their own, each with the messages
    /// that arrived meanwhile, oldest first.
    waiting: Mutex<HashMap<u64, VecDeque<Inbound>>>,
    /// How many calls `waiting` holds, read without its lock.
    waiting_calls: AtomicUsize,
    /// The workers, those started to take over a queue included.
    workers: Mutex<JoinSet<()>>,
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
            waiting: Default::default(),
            waiting_calls: AtomicUsize::new(0),
            workers: Default::default(),
        }
    }

    /// Start the workers. A worker may end (to stay with a waiting call
    /// while another takes its queue), so they are not among the proxy's
    /// tasks, whose ending means the proxy failed; [`Dispatch::stop`] ends
    /// them.
    pub fn start<H: Handler>(handler: &Arc<H>) {
        let dispatch = handler.dispatch();
        let receivers =
            std::mem::take(&mut *dispatch.receivers.lock().unwrap_or_else(|e| e.into_inner()));
        let mut workers = dispatch.workers();
        for rx in receivers {
            workers.spawn(work(handler.clone(), rx));
        }
    }

    /// Stop the workers.
    pub fn stop(&self) {
        self.workers().abort_all();
    }

    /// Queue a message for the worker of its call, without waiting.
    pub fn send(&self, inbound: Inbound) {
        let mut h = self.salt.build_hasher();
        match call_id(&inbound.data) {
            Some(id) => id.hash(&mut h),
            None => inbound.source.hash(&mut h),
        }
        let key = h.finish();
        let index = (key % self.queues.len() as u64) as usize;
        let Some(queue) = self.queues.get(index) else {
            return;
        };
        match queue.try_send((key, inbound)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full((_, dropped))) => {
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

    fn waiting(&self) -> MutexGuard<'_, HashMap<u64, VecDeque<Inbound>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn workers(&self) -> MutexGuard<'_, JoinSet<()>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `inbound` behind its call when that call is waiting on a
    /// worker of its own; otherwise give it back. A call is only ever made
    /// to wait by the worker of its queue, so the one reading the queue
    /// sees it.
    fn behind_waiting(&self, key: u64, inbound: Inbound) -> Option<Inbound> {
        if self.waiting_calls.load(Ordering::Acquire) == 0 {
            return Some(inbound);
        }
        match self.waiting().get_mut(&key) {
            Some(behind) => {
                behind.push_back(inbound);
                None
            }
            None => Some(inbound),
        }
    }

    /// The waiting call's next message; with none, the call is done
    /// waiting and forgotten.
    fn next_behind(&self, key: u64) -> Option<Inbound> {
        let mut waiting = self.waiting();
        let behind = waiting.get_mut(&key)?;
        let next = behind.pop_front();
        if next.is_none() {
            waiting.remove(&key);
            self.waiting_calls.fetch_sub(1, Ordering::Release);
        }
        next
    }
}

/// A worker: handle the queue's messages one by one. When one has to
/// wait, hand the queue to a new worker and stay with that call until it
/// has no message left.
async fn work<H: Handler>(shared: Arc<H>, mut rx: mpsc::Receiver<Keyed>) {
    let dispatch = shared.dispatch();
    while let Some((key, inbound)) = rx.recv().await {
        let Some(inbound) = dispatch.behind_waiting(key, inbound) else {
            continue;
        };
        // Without tokio's cooperative budget: a message is not to count as
        // waiting merely because its worker has handled many in a row.
        let mut handling = std::pin::pin!(tokio::task::unconstrained(shared.handle(inbound)));
        if poll_once(handling.as_mut()).await.is_ready() {
            continue;
        }
        if dispatch.waiting_calls.load(Ordering::Relaxed) >= WAITING {
            handling.await;
            continue;
        }
        dispatch.waiting().insert(key, VecDeque::new());
        dispatch.waiting_calls.fetch_add(1, Ordering::Release);
        let spare = shared.clone();
        {
            let mut workers = dispatch.workers();
            // Forget the workers that are done.
            while workers.try_join_next().is_some() {}
            workers.spawn(spare_worker(spare, rx));
        }
        let mut finish = Finish {
            dispatch,
            key,
            done: false,
        };
        handling.await;
        while let Some(next) = dispatch.next_behind(key) {
            shared.handle(next).await;
        }
        // The call is forgotten already, and the queue's worker may have
        // made it wait again since: leave that alone.
        finish.done = true;
        return;
    }
}

/// [`work`] for a new task, boxed: a worker starts workers, and the box
/// is what lets the compiler see that its future is `Send`.
fn spare_worker<H: Handler>(
    shared: Arc<H>,
    rx: mpsc::Receiver<Keyed>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(work(shared, rx))
}

/// Poll `handling` once, on the calling task.
async fn poll_once<F: Future>(mut handling: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(handling.as_mut().poll(cx))).await
}

/// Forgets a waiting call when its worker ends early (a panic in a
/// handler, the runtime shutting down), so the call's next message is
/// handled again instead of waiting forever.
struct Finish<'a> {
    dispatch: &'a Dispatch,
    key: u64,
    /// Set when the call had no message left and was forgotten normally.
    done: bool,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let dispatch = self.dispatch;
        let Some(behind) = dispatch.waiting().remove(&self.key) else {
            return;
        };
        dispatch.waiting_calls.fetch_sub(1, Ordering::Release);
        if !behind.is_empty() {
            tracing::warn!(
                lost = behind.len(),
                "a call's handling ended early: the messages waiting behind it are dropped"
            );
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
