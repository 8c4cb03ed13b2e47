//! What the engine, its producers, injectors and workers share: leaf types,
//! so that none of those modules imports another for them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use futures_util::task::AtomicWaker;

use crate::admission::{Budget, Gate, SharedBusy};
use crate::config::Config;
use crate::doorbell::Doorbell;
use crate::event::Event;
use crate::metrics::{AdmissionCounters, Latencies, RejectCounts, WorkerCounters};
use crate::outcome::{Completion, SlotBox};
use crate::tools::ToolTable;

/// A control message to a worker (flume: never on the event path).
pub(crate) enum Control {
    AddSource(Source),
    Snapshot(flume::Sender<SnapshotReply>),
    Shutdown { deadline: Instant },
}

/// An event submitted through the injector, with its reply channel.
pub(crate) struct Injected {
    pub(crate) event: Event,
    pub(crate) reply: Reply,
}

/// Where an injected event's completion goes, and how its caller says it
/// no longer wants it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) tx: flume::Sender<Completion>,
    pub(crate) cancel: Arc<CancelFlag>,
}

/// Set when a [`Ticket`](crate::Ticket) is dropped unanswered: the worker
/// does not start the event, and a pending call ends `Cancelled` when it
/// is next polled; the waker makes that poll happen even while the call
/// waits on something else (a timer, a host call).
#[derive(Debug, Default)]
pub(crate) struct CancelFlag {
    cancelled: AtomicBool,
    waker: AtomicWaker,
}

impl CancelFlag {
    pub(crate) fn cancel(&self) {
        // Release, paired with the Acquire in `is_cancelled`. The flag
        // publishes nothing else; the waker's own state (AtomicWaker)
        // orders this store before the wake-up it triggers.
        self.cancelled.store(true, Ordering::Release);
        self.waker.wake();
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        // Pairs with the Release in `cancel`.
        self.cancelled.load(Ordering::Acquire)
    }

    /// Wakes `waker` when the flag is set; returns whether it already is.
    #[inline]
    pub(crate) fn register(&self, waker: &std::task::Waker) -> bool {
        self.waker.register(waker);
        self.is_cancelled()
    }
}

/// What producers, injectors and the engine share about one worker.
pub(crate) struct WorkerShared {
    pub(crate) doorbell: CachePadded<Doorbell>,
    pub(crate) waker: AtomicWaker,
    pub(crate) control: flume::Sender<Control>,
    pub(crate) injector: ArrayQueue<Injected>,
    pub(crate) counters: CachePadded<WorkerCounters>,
}

impl WorkerShared {
    /// Wakes the worker if it announced that it parks.
    #[inline]
    pub(crate) fn ring(&self) {
        if self.doorbell.needs_wake() {
            self.waker.wake();
        }
    }

    pub(crate) fn send_control(&self, msg: Control) {
        if self.control.send(msg).is_ok() {
            self.doorbell.post_control();
            self.waker.wake();
        }
    }
}

/// State shared by the engine, its producers, injectors and workers.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) workers: Box<[WorkerShared]>,
    pub(crate) budget: Budget,
    pub(crate) lease: usize,
    /// Ring fill above which `Low` events are shed.
    pub(crate) shed_above: usize,
    pub(crate) gate: Gate,
    /// Completions go to a sink; producers only get empty slots back.
    pub(crate) has_sink: bool,
    pub(crate) injector_busy: SharedBusy,
    pub(crate) injector_counters: AdmissionCounters,
    pub(crate) producers: Mutex<Producers>,
    pub(crate) tools: Arc<ToolTable>,
    pub(crate) clock: quanta::Clock,
    pub(crate) next_worker: CachePadded<std::sync::atomic::AtomicUsize>,
}

/// Live producers, and the counts of those already dropped.
#[derive(Default)]
pub(crate) struct Producers {
    pub(crate) live: Vec<Arc<ProducerShared>>,
    pub(crate) retired: AdmissionCounters,
}

impl Shared {
    /// Accepted events and rejections, over every producer (live or
    /// dropped) and the injector.
    pub(crate) fn admission(&self) -> (u64, RejectCounts) {
        let reg = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        let mut accepted = reg.retired.accepted() + self.injector_counters.accepted();
        let mut rejected = reg.retired.rejected();
        rejected.add(&self.injector_counters.rejected());
        for p in &reg.live {
            accepted += p.counters.accepted();
            rejected.add(&p.counters.rejected());
        }
        (accepted, rejected)
    }
}

/// One producer's pair of rings, worker side.
pub(crate) struct Source {
    pub(crate) events: rtrb::Consumer<SlotBox>,
    pub(crate) completions: rtrb::Producer<SlotBox>,
    /// Events taken from `events` whose completions are not yet published.
    pub(crate) owed: usize,
}

impl Source {
    pub(crate) fn new(
        events: rtrb::Consumer<SlotBox>,
        completions: rtrb::Producer<SlotBox>,
    ) -> Source {
        Source {
            events,
            completions,
            owed: 0,
        }
    }
}

/// What the engine sees of a producer.
#[derive(Debug, Default)]
pub(crate) struct ProducerShared {
    pub(crate) busy: CachePadded<crate::sync::AtomicBool>,
    pub(crate) counters: AdmissionCounters,
}

/// A snapshot reply: the worker's index and a copy of its histograms.
pub(crate) type SnapshotReply = (usize, Latencies);
