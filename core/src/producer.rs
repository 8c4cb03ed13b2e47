//! Producers: the hot submission path. A producer owns one rtrb SPSC ring
//! to each worker and one completion ring back from each, so submitting
//! writes no memory that another producer writes.
//!
//! Per submit, in steady state: one SeqCst fence to enter the shutdown
//! gate, a credit from the producer's local lease, a raw clock read, a
//! slot from the producer's pool, one ring push (a pointer), one SeqCst
//! fence and one load of the worker's doorbell, and relaxed stores to the
//! producer's own counters. No allocation, no
//! lock, no syscall unless the worker announced it parks.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admission::{Gate, RejectReason, Rejected};
use crate::event::{Event, Priority, worker_for_key};
use crate::outcome::{Completion, Slot, SlotBox};
use crate::shared::{Control, ProducerShared, Shared, Source};

struct Lane {
    events: rtrb::Producer<SlotBox>,
    completions: rtrb::Consumer<SlotBox>,
}

/// A submitting thread's handle: `Send`, not `Sync`. Create one per thread
/// with [`Engine::producer`](crate::Engine::producer).
///
/// Completions of this producer's events come back to it (unless the
/// engine has a [`Sink`](crate::Sink)): call [`Producer::drain`] or
/// [`Producer::poll`] regularly. A producer that stops draining is
/// eventually refused with `Full`: a worker takes an event only when the
/// completion ring has room for its answer.
///
/// # Examples
///
/// ```
/// use toolplane_core::{handler_fn, Engine, Event, Outcome, Rejected};
///
/// let engine = Engine::builder()
///     .workers(1)
///     .pin_workers(false)
///     .build(handler_fn(|_| Outcome::Ok(Default::default())))
///     .unwrap();
/// let tool = engine.tool("noop");
/// let mut p = engine.producer();
/// let mut done = 0;
/// let mut sent = 0;
/// while done < 1000 {
///     if sent < 1000 {
///         match p.submit(Event::new(tool, b"".as_slice()).with_tag(sent)) {
///             Ok(()) => sent += 1,
///             // The ring may look full while the worker is just behind:
///             // drain and try again.
///             Err(Rejected::Full(_) | Rejected::InflightLimit(_)) => {}
///             Err(other) => panic!("{other}"),
///         }
///     }
///     done += p.drain(|_| {});
/// }
/// ```
pub struct Producer {
    shared: Arc<Shared>,
    me: Arc<ProducerShared>,
    lanes: Box<[Lane]>,
    /// Recycled slots. The pool only grows while the number of this
    /// producer's events in flight grows (at most three ring capacities
    /// per worker: queued, owed, and waiting to be drained).
    free: Vec<SlotBox>,
    /// Slots this producer has allocated so far.
    made: usize,
    credits: usize,
    next: usize,
    capacity: usize,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("credits", &self.credits)
            .finish_non_exhaustive()
    }
}

impl Producer {
    pub(crate) fn new(shared: Arc<Shared>) -> Producer {
        let capacity = shared.config.ring_capacity;
        let me = Arc::new(ProducerShared::default());
        shared
            .producers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .live
            .push(me.clone());
        // Pointers only, up to the pool's bound: the list never reallocates.
        let free = Vec::with_capacity(3 * capacity * shared.workers.len());
        let lanes = shared
            .workers
            .iter()
            .map(|w| {
                let (ev_tx, ev_rx) = rtrb::RingBuffer::new(capacity);
                let (c_tx, c_rx) = rtrb::RingBuffer::new(2 * capacity);
                w.send_control(Control::AddSource(Source::new(ev_rx, c_tx)));
                Lane {
                    events: ev_tx,
                    completions: c_rx,
                }
            })
            .collect();
        Producer {
            shared,
            me,
            lanes,
            free,
            made: 0,
            credits: 0,
            next: 0,
            capacity,
            _not_sync: PhantomData,
        }
    }

    /// Submits an event without blocking.
    ///
    /// # Errors
    ///
    /// The event comes back inside [`Rejected`] when the engine is shutting
    /// down, the in-flight budget is spent, a `Low` event meets a ring above
    /// the watermark, or the worker's ring is full. The ring may look full
    /// while its worker is just about to take a batch: retry after
    /// draining, or use [`Producer::submit_timeout`].
    #[inline]
    pub fn submit(&mut self, event: Event) -> Result<(), Rejected> {
        self.try_submit(event).map_err(|(reason, event)| {
            self.me.counters.bump_rejected(reason);
            Rejected::new(reason, event)
        })
    }

    /// Submits an event, waiting up to `timeout` (spinning, then sleeping
    /// with a growing backoff) while the engine is full, instead of failing
    /// at once. Only the final refusal is counted in the metrics.
    ///
    /// Completions keep arriving while it waits: if this producer is the
    /// one that should drain them, drain between calls (a producer whose
    /// completion ring is full stays `Full`).
    ///
    /// # Errors
    ///
    /// `ShuttingDown` at once; otherwise the last refusal once `timeout`
    /// has passed.
    pub fn submit_timeout(&mut self, event: Event, timeout: Duration) -> Result<(), Rejected> {
        let deadline = Instant::now() + timeout;
        let backoff = crossbeam_utils::Backoff::new();
        let mut sleep = Duration::from_micros(10);
        let mut event = event;
        loop {
            let (reason, back) = match self.try_submit(event) {
                Ok(()) => return Ok(()),
                Err(r) => r,
            };
            let now = Instant::now();
            if reason == RejectReason::ShuttingDown || now >= deadline {
                self.me.counters.bump_rejected(reason);
                return Err(Rejected::new(reason, back));
            }
            event = back;
            if backoff.is_completed() {
                std::thread::sleep(sleep.min(deadline - now));
                sleep = (sleep * 2).min(Duration::from_millis(1));
            } else {
                backoff.snooze();
            }
        }
    }

    #[inline]
    fn try_submit(&mut self, event: Event) -> Result<(), (RejectReason, Event)> {
        let shared = &*self.shared;
        if !shared.gate.enter(&self.me.busy) {
            return Err((RejectReason::ShuttingDown, event));
        }
        let result = self.admit(event);
        Gate::leave(&self.me.busy);
        result
    }

    #[inline]
    fn admit(&mut self, mut event: Event) -> Result<(), (RejectReason, Event)> {
        let shared = &*self.shared;
        let n = self.lanes.len();
        let w = match event.key {
            Some(key) => worker_for_key(key, n),
            None => {
                let w = self.next;
                self.next = if w + 1 == n { 0 } else { w + 1 };
                w
            }
        };
        if self.credits == 0 {
            self.credits = shared.budget.take(shared.lease);
            if self.credits == 0 {
                return Err((RejectReason::InflightLimit, event));
            }
        }
        let lane = &mut self.lanes[w];
        if event.priority == Priority::Low
            && self.capacity - lane.events.cached_slots() > shared.shed_above
            // The cached view only over-estimates the fill: confirm.
            && self.capacity - lane.events.slots() > shared.shed_above
        {
            return Err((RejectReason::Shed, event));
        }
        event.submitted = shared.clock.raw();
        if self.free.is_empty() && shared.has_sink {
            reclaim(&mut self.lanes, &mut self.free);
            for w in shared.workers.iter() {
                w.ring();
            }
        }
        let mut slot = self.free.pop().unwrap_or_else(|| {
            self.made += 1;
            SlotBox::default()
        });
        slot.put(Slot::Event(event));
        let lane = &mut self.lanes[w];
        if let Err(rtrb::PushError::Full(mut slot)) = lane.events.push(slot) {
            let Slot::Event(event) = slot.take() else {
                unreachable!("the slot was filled with an event just above")
            };
            self.free.push(slot);
            return Err((RejectReason::Full, event));
        }
        self.credits -= 1;
        self.me.counters.bump_accepted();
        shared.workers[w].ring();
        Ok(())
    }

    /// Hands every completion that has arrived to `f`; returns how many.
    /// Takes each worker's completions as one rtrb read chunk.
    pub fn drain(&mut self, mut f: impl FnMut(Completion)) -> usize {
        let mut total = 0;
        for (w, lane) in self.lanes.iter_mut().enumerate() {
            let n = lane.completions.slots();
            if n == 0 {
                continue;
            }
            if let Ok(chunk) = lane.completions.read_chunk(n) {
                for mut slot in chunk {
                    if let Slot::Done(c) = slot.take() {
                        f(c);
                        total += 1;
                    }
                    self.free.push(slot);
                }
            }
            // Room in the completion ring may be what the worker waits for
            // (after the chunk is committed, as for an event).
            self.shared.workers[w].ring();
        }
        total
    }

    /// One completion, if any has arrived.
    pub fn poll(&mut self) -> Option<Completion> {
        let n = self.lanes.len();
        for i in 0..n {
            let w = (self.next + i) % n;
            while let Ok(mut slot) = self.lanes[w].completions.pop() {
                let taken = slot.take();
                self.free.push(slot);
                self.shared.workers[w].ring();
                if let Slot::Done(c) = taken {
                    return Some(c);
                }
            }
        }
        None
    }

    /// The most slots this producer can ever hold: per worker, a full event
    /// ring plus a full completion ring (twice as large; a worker takes an
    /// event only when the completion ring has room for its answer).
    fn slot_bound(&self) -> usize {
        3 * self.capacity * self.lanes.len()
    }

    /// Allocates every slot this producer can ever need, so that not even
    /// the first bursts allocate. Without it the pool grows on demand to
    /// its high-water mark (at most three ring capacities per worker, in
    /// slots of 128 bytes) and then allocates no more.
    pub fn preallocate(&mut self) {
        let missing = self.slot_bound().saturating_sub(self.made);
        self.free.extend((0..missing).map(|_| SlotBox::default()));
        self.made += missing;
    }

    /// Events of this producer waiting in its rings to the workers (a
    /// snapshot: workers may be taking them right now).
    pub fn queued(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| self.capacity - l.events.slots())
            .sum()
    }
}

/// With a sink, completions go to the sink and workers send the empty
/// slots back: take them from the completion rings when the pool runs dry
/// (the producer of a sink engine never needs to drain).
fn reclaim(lanes: &mut [Lane], free: &mut Vec<SlotBox>) {
    for lane in lanes {
        let n = lane.completions.slots();
        if let Ok(chunk) = lane.completions.read_chunk(n) {
            free.extend(chunk);
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.shared.budget.give(self.credits);
        let mut reg = self
            .shared
            .producers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        reg.retired.absorb(&self.me.counters);
        reg.live.retain(|p| !Arc::ptr_eq(p, &self.me));
    }
}
