//! The injector: submission for many threads and async callers, such as a
//! server's request handlers. Each worker has a bounded crossbeam
//! `ArrayQueue` that it polls beside its producer rings; keyed events go to
//! the same worker as through a producer, so per-key ordering and
//! exclusion hold across both paths. Each call gets a flume reply channel,
//! awaitable from any executor.
//!
//! This path allocates (a reply channel per call) and uses shared atomics;
//! the [`Producer`](crate::Producer) is the zero-allocation path.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::admission::{RejectReason, Rejected};
use crate::event::{Event, Priority, worker_for_key};
use crate::outcome::Completion;
use crate::shared::{CancelFlag, Injected, Reply, Shared};

/// A cloneable, `Send + Sync` submission handle.
///
/// # Examples
///
/// ```
/// use toolplane_core::{handler_fn, Engine, Event, Outcome};
///
/// let engine = Engine::builder()
///     .workers(1)
///     .pin_workers(false)
///     .build(handler_fn(|e| Outcome::Ok(e.payload().clone())))
///     .unwrap();
/// let injector = engine.injector();
/// let tool = engine.tool("echo");
/// let completion = injector.submit(Event::new(tool, b"ping".as_slice())).unwrap().wait().unwrap();
/// assert_eq!(completion.outcome, Outcome::Ok(b"ping".as_slice().into()));
/// ```
#[derive(Clone)]
pub struct Injector {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector").finish_non_exhaustive()
    }
}

/// The completion was lost: the worker that held the event stopped without
/// answering (it never happens while the engine keeps its invariants; it
/// is reported rather than hidden).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the engine stopped without answering this call")]
pub struct Lost;

/// Why [`Injector::call`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// Admission refused the event.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// See [`Lost`].
    #[error(transparent)]
    Lost(#[from] Lost),
}

/// The pending answer to one injected event.
///
/// Dropping a ticket before its answer arrives cancels the call: the
/// worker does not start the event if it has not yet, and a call already
/// running ends as [`Outcome::Cancelled`](crate::Outcome::Cancelled) at
/// its next check (a WASI tool's next epoch tick, an async handler's next
/// poll; it is woken for it). Either way the engine counts exactly one
/// outcome for it, `cancelled`, which nobody receives. A server drops the
/// ticket when its client goes away or cancels the request.
#[derive(Debug)]
pub struct Ticket {
    reply: flume::Receiver<Completion>,
    cancel: Arc<CancelFlag>,
    answered: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.answered {
            self.cancel.cancel();
        }
    }
}

impl Ticket {
    /// Blocks until the completion arrives.
    ///
    /// # Errors
    ///
    /// [`Lost`] if the engine dropped the call without an answer.
    pub fn wait(mut self) -> Result<Completion, Lost> {
        let r = self.reply.recv().map_err(|_| Lost);
        self.answered = true;
        r
    }

    /// Blocks at most `timeout`; `Ok(None)` if it has not arrived yet (the
    /// ticket stays valid).
    ///
    /// # Errors
    ///
    /// [`Lost`] as for [`Ticket::wait`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<Completion>, Lost> {
        let r = match self.reply.recv_timeout(timeout) {
            Ok(c) => Ok(Some(c)),
            Err(flume::RecvTimeoutError::Timeout) => return Ok(None),
            Err(flume::RecvTimeoutError::Disconnected) => Err(Lost),
        };
        self.answered = true;
        r
    }

    /// Awaits the completion, under any executor.
    ///
    /// # Errors
    ///
    /// [`Lost`] as for [`Ticket::wait`].
    pub async fn recv(mut self) -> Result<Completion, Lost> {
        let r = self.reply.recv_async().await.map_err(|_| Lost);
        self.answered = true;
        r
    }

    /// Cancels the call (the same as dropping the ticket): see [`Ticket`].
    pub fn cancel(self) {}
}

impl Injector {
    pub(crate) fn new(shared: Arc<Shared>) -> Injector {
        Injector { shared }
    }

    /// Submits an event without blocking; the ticket yields its completion.
    ///
    /// # Errors
    ///
    /// As [`Producer::submit`](crate::Producer::submit).
    pub fn submit(&self, event: Event) -> Result<Ticket, Rejected> {
        let shared = &*self.shared;
        let result = if shared.injector_busy.enter(&shared.gate) {
            let r = self.admit(event);
            shared.injector_busy.leave();
            r
        } else {
            Err((RejectReason::ShuttingDown, event))
        };
        result.map_err(|(reason, event)| {
            shared.injector_counters.add_rejected_shared(reason);
            Rejected::new(reason, event)
        })
    }

    /// Submits an event and awaits its completion.
    ///
    /// # Errors
    ///
    /// [`InjectError::Rejected`] with the event when admission refuses it.
    pub async fn call(&self, event: Event) -> Result<Completion, InjectError> {
        Ok(self.submit(event)?.recv().await?)
    }

    fn admit(&self, mut event: Event) -> Result<Ticket, (RejectReason, Event)> {
        let shared = &*self.shared;
        let n = shared.workers.len();
        let w = match event.key {
            Some(key) => worker_for_key(key, n),
            None => shared.next_worker.fetch_add(1, Ordering::Relaxed) % n,
        };
        if shared.budget.take(1) == 0 {
            return Err((RejectReason::InflightLimit, event));
        }
        let worker = &shared.workers[w];
        if event.priority == Priority::Low && worker.injector.len() > shared.shed_above {
            shared.budget.give(1);
            return Err((RejectReason::Shed, event));
        }
        event.submitted = shared.clock.raw();
        let (tx, rx) = flume::bounded(1);
        let cancel = Arc::new(CancelFlag::default());
        let reply = Reply {
            tx,
            cancel: Arc::clone(&cancel),
        };
        if let Err(back) = worker.injector.push(Injected { event, reply }) {
            shared.budget.give(1);
            return Err((RejectReason::Full, back.event));
        }
        shared.injector_counters.add_accepted_shared();
        worker.ring();
        Ok(Ticket {
            reply: rx,
            cancel,
            answered: false,
        })
    }
}
