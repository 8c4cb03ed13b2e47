//! Admission: the global in-flight budget, watermark shedding, and the
//! gate that closes at shutdown. Every refusal is a [`Rejected`] that hands
//! the event back, so backpressure never drops data silently.
//!
//! ## The in-flight budget
//!
//! `max_inflight` credits exist. An event takes one when it is accepted and
//! its worker gives it back when the event has its outcome. Producers lease
//! credits in chunks of [`lease_size`] so that the hot path touches the
//! shared counter once per chunk, not once per event; workers give credits
//! back once per pass. A producer holds at most one unused lease (returned
//! when it is dropped), so the budget is exact to within one lease per
//! producer.
//!
//! ## The shutdown gate
//!
//! A submit marks its producer busy, then checks `closed`; shutdown sets
//! `closed`, then waits until no producer is busy. With a SeqCst fence on
//! each side (Dekker again, see [`crate::doorbell`]) either the submit sees
//! `closed` and refuses, or shutdown waits for the submit to finish, so an
//! accepted event is always in a ring before the workers' final drain.

use std::fmt;

use crossbeam_utils::CachePadded;

use crate::event::Event;
use crate::sync::{AtomicBool, AtomicUsize, Ordering, Spin, fence};

/// Why an event was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The worker's ring (or injector queue) is full.
    Full = 0,
    /// A low-priority event met a ring above the queue watermark.
    Shed = 1,
    /// The global in-flight budget is spent.
    InflightLimit = 2,
    /// The engine is shutting down.
    ShuttingDown = 3,
    /// The tool itself is busy: a process tool whose processes are all
    /// taken and whose queue (`pool.queue`) is full. Never a reason at
    /// admission: the engine accepted the event, and its outcome is
    /// [`Outcome::Refused`](crate::Outcome::Refused) with this reason.
    Busy = 4,
}

impl RejectReason {
    /// Every reason, in index order.
    pub const ALL: [RejectReason; 5] = [
        RejectReason::Full,
        RejectReason::Shed,
        RejectReason::InflightLimit,
        RejectReason::ShuttingDown,
        RejectReason::Busy,
    ];

    /// The reasons admission itself gives (all but [`RejectReason::Busy`]).
    pub const AT_ADMISSION: [RejectReason; 4] = [
        RejectReason::Full,
        RejectReason::Shed,
        RejectReason::InflightLimit,
        RejectReason::ShuttingDown,
    ];

    /// A lowercase name, as used in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Full => "full",
            RejectReason::Shed => "shed",
            RejectReason::InflightLimit => "inflight_limit",
            RejectReason::ShuttingDown => "shutting_down",
            RejectReason::Busy => "busy",
        }
    }
}

/// What the limit was, in words (every surface's message uses these).
impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectReason::Full => "the worker's ring is full",
            RejectReason::Shed => "low-priority events are shed above the queue watermark",
            RejectReason::InflightLimit => "the in-flight budget (max_inflight) is spent",
            RejectReason::ShuttingDown => "the engine is shutting down",
            RejectReason::Busy => "the tool is busy: its queue is full",
        })
    }
}

/// A refused event, handed back with the limit it hit.
///
/// # Examples
///
/// ```
/// use toolplane_core::{Event, Rejected, RejectReason, ToolId};
///
/// let r = Rejected::Full(Event::new(ToolId(0), b"x".as_slice()));
/// assert_eq!(r.reason(), RejectReason::Full);
/// let event = r.into_event(); // retry later, or report it
/// assert_eq!(event.payload().as_slice(), b"x");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum Rejected {
    /// The worker's ring is full: the engine is behind.
    Full(Event),
    /// A low-priority event was shed above the queue watermark.
    Shed(Event),
    /// `max_inflight` events are already accepted and unfinished.
    InflightLimit(Event),
    /// The engine is shutting down.
    ShuttingDown(Event),
    /// The tool is busy. Admission never hands this back (a tool refuses
    /// an accepted event with [`Outcome::Refused`](crate::Outcome::Refused));
    /// it is here so that every [`RejectReason`] has its refusal.
    Busy(Event),
}

impl Rejected {
    /// The limit that was hit.
    pub fn reason(&self) -> RejectReason {
        match self {
            Rejected::Full(_) => RejectReason::Full,
            Rejected::Shed(_) => RejectReason::Shed,
            Rejected::InflightLimit(_) => RejectReason::InflightLimit,
            Rejected::ShuttingDown(_) => RejectReason::ShuttingDown,
            Rejected::Busy(_) => RejectReason::Busy,
        }
    }

    /// The refused event.
    pub fn into_event(self) -> Event {
        match self {
            Rejected::Full(e)
            | Rejected::Shed(e)
            | Rejected::InflightLimit(e)
            | Rejected::ShuttingDown(e)
            | Rejected::Busy(e) => e,
        }
    }

    pub(crate) fn new(reason: RejectReason, event: Event) -> Rejected {
        match reason {
            RejectReason::Full => Rejected::Full(event),
            RejectReason::Shed => Rejected::Shed(event),
            RejectReason::InflightLimit => Rejected::InflightLimit(event),
            RejectReason::ShuttingDown => Rejected::ShuttingDown(event),
            RejectReason::Busy => Rejected::Busy(event),
        }
    }
}

impl fmt::Debug for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Rejected::{:?}(tag {})",
            self.reason(),
            self.clone().into_event().tag
        )
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rejected: {}", self.reason())
    }
}

impl std::error::Error for Rejected {}

/// Credits a producer leases at once: 1/64 of the budget, at most 32, so
/// dozens of producers can hold a lease before the budget feels it.
pub(crate) fn lease_size(max_inflight: usize) -> usize {
    (max_inflight / 64).clamp(1, 32)
}

/// The global in-flight budget.
#[derive(Debug)]
pub(crate) struct Budget {
    available: CachePadded<AtomicUsize>,
}

impl Budget {
    pub(crate) fn new(max_inflight: usize) -> Budget {
        Budget {
            available: CachePadded::new(AtomicUsize::new(max_inflight)),
        }
    }

    /// Takes up to `want` credits; returns how many it got (0 when spent).
    pub(crate) fn take(&self, want: usize) -> usize {
        let mut cur = self.available.load(Ordering::Relaxed);
        loop {
            let got = cur.min(want);
            if got == 0 {
                return 0;
            }
            // Relaxed: the counter guards no other memory; the events
            // themselves travel through the rings with their own ordering.
            match self.available.compare_exchange_weak(
                cur,
                cur - got,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return got,
                Err(now) => cur = now,
            }
        }
    }

    /// Returns `n` credits.
    pub(crate) fn give(&self, n: usize) {
        if n > 0 {
            self.available.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The admission gate that closes at shutdown.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    closed: AtomicBool,
}

impl Gate {
    /// Submitter: after marking itself busy, whether it may go on.
    #[inline]
    pub(crate) fn enter(&self, busy: &AtomicBool) -> bool {
        busy.store(true, Ordering::Relaxed);
        // Pairs with the fence in `close`: either we see `closed`, or the
        // closer sees us busy and waits for `leave`.
        fence(Ordering::SeqCst);
        if self.closed.load(Ordering::Relaxed) {
            busy.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Submitter: done publishing.
    #[inline]
    pub(crate) fn leave(busy: &AtomicBool) {
        // Release pairs with the Acquire in `wait_idle`: the publication
        // happens-before the closer's final drain.
        busy.store(false, Ordering::Release);
    }

    /// Closer: refuse every submit that has not yet entered.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        // Pairs with the fences in `enter` and `SharedBusy::enter`.
        fence(Ordering::SeqCst);
    }

    /// Closer: wait until a submitter that entered before `close` leaves.
    pub(crate) fn wait_idle(busy: &AtomicBool) {
        let spin = Spin::new();
        // Acquire pairs with the Release in `leave`.
        while busy.load(Ordering::Acquire) {
            spin.wait();
        }
    }
}

/// The gate for the shared injector, whose many submitters share one busy
/// counter instead of a flag each.
#[derive(Debug, Default)]
pub(crate) struct SharedBusy {
    count: CachePadded<AtomicUsize>,
}

impl SharedBusy {
    pub(crate) fn enter(&self, gate: &Gate) -> bool {
        self.count.fetch_add(1, Ordering::Relaxed);
        // Pairs with the fence in `Gate::close`, as `Gate::enter` does.
        fence(Ordering::SeqCst);
        if gate.closed.load(Ordering::Relaxed) {
            self.leave();
            return false;
        }
        true
    }

    pub(crate) fn leave(&self) {
        // Release pairs with the Acquire in `wait_idle`.
        self.count.fetch_sub(1, Ordering::Release);
    }

    pub(crate) fn wait_idle(&self) {
        let spin = Spin::new();
        // Acquire pairs with the Release in `leave`.
        while self.count.load(Ordering::Acquire) != 0 {
            spin.wait();
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize;
    use loom::thread;

    use super::*;

    /// An event a submitter publishes after entering the gate is visible to
    /// the closer's final drain, or the submitter was refused.
    #[test]
    fn loom_gate_never_strands_an_accepted_event() {
        crate::sync::loom_model(|| {
            let gate = Arc::new(Gate::default());
            let busy = Arc::new(AtomicBool::new(false));
            let ring = Arc::new(AtomicUsize::new(0));
            let submitter = {
                let (gate, busy, ring) = (gate.clone(), busy.clone(), ring.clone());
                thread::spawn(move || {
                    if gate.enter(&busy) {
                        ring.fetch_add(1, Ordering::Relaxed);
                        Gate::leave(&busy);
                        1
                    } else {
                        0
                    }
                })
            };
            gate.close();
            Gate::wait_idle(&busy);
            let drained = ring.load(Ordering::Relaxed);
            let accepted = submitter.join().unwrap();
            assert_eq!(
                drained, accepted,
                "an accepted event missed the final drain"
            );
        });
    }
}

#[cfg(all(test, not(loom)))]
mod thread_tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Submitters racing a close: once the closer has closed and waited
    /// for every busy flag, what it drains is final: no submit is accepted
    /// after that point, so nothing accepted is stranded.
    #[test]
    fn close_then_wait_idle_sees_every_accepted_submit() {
        let rounds = if cfg!(miri) { 3 } else { 300 };
        for _ in 0..rounds {
            let gate = Arc::new(Gate::default());
            let ring = Arc::new(AtomicUsize::new(0));
            let flags: Vec<Arc<AtomicBool>> = (0..2).map(|_| Arc::default()).collect();
            let submitters: Vec<_> = flags
                .iter()
                .map(|busy| {
                    let (gate, ring, busy) = (gate.clone(), ring.clone(), busy.clone());
                    std::thread::spawn(move || {
                        let mut accepted = 0;
                        for _ in 0..if cfg!(miri) { 4 } else { 300 } {
                            if gate.enter(&busy) {
                                ring.fetch_add(1, Ordering::Relaxed);
                                Gate::leave(&busy);
                                accepted += 1;
                            }
                        }
                        accepted
                    })
                })
                .collect();
            std::thread::yield_now();
            gate.close();
            for busy in &flags {
                Gate::wait_idle(busy);
            }
            let drained = ring.load(Ordering::Relaxed);
            let accepted: usize = submitters.into_iter().map(|s| s.join().unwrap()).sum();
            assert_eq!(
                drained, accepted,
                "a submit was accepted after the final drain"
            );
        }
    }

    #[test]
    fn the_budget_never_hands_out_more_than_it_has() {
        let budget = Arc::new(Budget::new(100));
        let takers: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    let mut got = 0;
                    for _ in 0..if cfg!(miri) { 10 } else { 1000 } {
                        got += budget.take(7);
                    }
                    got
                })
            })
            .collect();
        let total: usize = takers.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 100);
        budget.give(100);
        assert_eq!(budget.take(1000), 100);
    }
}
