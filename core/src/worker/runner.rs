//! The part of a worker that runs calls: starts an event on the handler,
//! tracks pending calls, and turns outcomes into completions while it
//! counts, times and samples them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use bumpalo::Bump;
use futures_util::stream::FuturesUnordered;
use slab::Slab;

use super::calls::{CallFuture, panic_message};
use super::keys::KeyQueues;
use super::origin::Origin;
use crate::config::Config;
use crate::event::{Event, ToolId};
use crate::handler::{Call, CallContext, WorkerHandler};
use crate::metrics::{Latencies, LocalCounters};
use crate::outcome::{Completion, Outcome, Sink, Timestamps};
use crate::span::SpanRecord;

/// What the worker keeps of an event once the handler owns it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    tool: ToolId,
    pub(crate) key: Option<u64>,
    tag: u64,
    submitted: u64,
}

impl Meta {
    pub(crate) fn of(event: &Event) -> Meta {
        Meta {
            tool: event.tool,
            key: event.key,
            tag: event.tag,
            submitted: event.submitted,
        }
    }
}

/// A pending call's record (the span of a call in flight).
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) meta: Meta,
    pub(crate) origin: Origin,
    pub(crate) started: u64,
}

pub(crate) enum Started {
    Done(Completion, Origin),
    Pending,
}

pub(crate) struct Runner<H> {
    pub(crate) handler: H,
    pub(crate) index: usize,
    pub(crate) clock: quanta::Clock,
    pub(crate) arena: Bump,
    pub(crate) calls: FuturesUnordered<CallFuture>,
    pub(crate) inflight: Slab<InFlight>,
    pub(crate) max_concurrent: usize,
    pub(crate) keys: KeyQueues,
    pub(crate) local: LocalCounters,
    pub(crate) latencies: Latencies,
    pub(crate) spans: Option<rtrb::Producer<SpanRecord>>,
    pub(crate) sample_every: u64,
    pub(crate) sample_countdown: u64,
    /// Completions since the last pass: credits to give back.
    pub(crate) completed: usize,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) sink: Option<Arc<dyn Sink>>,
}

impl<H> Runner<H> {
    /// Worker `index`'s runner, its tables sized by `config`; a span is
    /// sampled every `sample_every` events (0: none) into `spans`.
    pub(crate) fn new(
        handler: H,
        index: usize,
        clock: quanta::Clock,
        config: &Config,
        sample_every: u64,
        spans: Option<rtrb::Producer<SpanRecord>>,
        sink: Option<Arc<dyn Sink>>,
    ) -> Runner<H> {
        Runner {
            handler,
            index,
            clock,
            arena: Bump::new(),
            calls: FuturesUnordered::new(),
            inflight: Slab::with_capacity(config.max_concurrent_per_worker),
            max_concurrent: config.max_concurrent_per_worker,
            keys: KeyQueues::new(config.max_concurrent_per_worker, config.ring_capacity),
            local: LocalCounters::default(),
            latencies: Latencies::default(),
            spans: if sample_every > 0 { spans } else { None },
            sample_countdown: sample_every.max(1),
            sample_every,
            completed: 0,
            call_timeout: config.call_timeout,
            sink,
        }
    }
}

impl<H: WorkerHandler> Runner<H> {
    /// Events the worker may still take this pass: each may become a
    /// pending call or a parked event, and both tables are bounded.
    #[inline]
    pub(crate) fn room(&self) -> usize {
        (self.max_concurrent - self.inflight.len()).min(self.keys.parked_room())
    }

    /// Parks `event` behind its busy key, or starts it.
    #[inline]
    pub(crate) fn dispatch(&mut self, event: Event, origin: Origin, now: &mut u64) -> Started {
        if let Some(key) = event.key
            && self.keys.is_busy(key)
        {
            self.keys.park(key, event, origin);
            return Started::Pending;
        }
        self.start(event, origin, now)
    }

    /// Calls the handler. `now` is the start time and becomes the finish
    /// time, so a run of synchronous calls reads the clock once per call.
    #[inline]
    pub(crate) fn start(&mut self, event: Event, origin: Origin, now: &mut u64) -> Started {
        let meta = Meta::of(&event);
        // Never before its submission, even if the two cores' clocks are a
        // few ticks apart.
        let started = (*now).max(meta.submitted);
        if let Origin::Reply(r) = &origin
            && r.cancel.is_cancelled()
        {
            // Its caller gave up before it started: it never runs.
            return Started::Done(
                self.complete(meta, started, started, Outcome::Cancelled),
                origin,
            );
        }
        let handler = &mut self.handler;
        let mut cx = CallContext {
            worker: self.index,
            scratch: &self.arena,
        };
        let call = catch_unwind(AssertUnwindSafe(|| handler.call(event, &mut cx)));
        let finished = self.clock.raw();
        *now = finished;
        let outcome = match call {
            Ok(Call::Done(outcome)) => outcome,
            Err(panic) => Outcome::Panicked(panic_message(&*panic)),
            Ok(Call::Pending(call)) => {
                if let Some(key) = meta.key {
                    self.keys.mark_busy(key);
                }
                let cancel = match &origin {
                    Origin::Reply(r) => Some(Arc::clone(&r.cancel)),
                    Origin::Source(..) => None,
                };
                let slot = self.inflight.insert(InFlight {
                    meta,
                    origin,
                    started,
                });
                self.calls
                    .push(CallFuture::new(slot, call, self.call_timeout, cancel));
                return Started::Pending;
            }
        };
        Started::Done(self.complete(meta, started, finished, outcome), origin)
    }

    /// Counts, times and samples an outcome, and builds its completion.
    #[inline]
    pub(crate) fn complete(
        &mut self,
        meta: Meta,
        started: u64,
        finished: u64,
        outcome: Outcome,
    ) -> Completion {
        let kind = outcome.kind();
        self.local.outcomes.0[kind as usize] += 1;
        self.completed += 1;
        let times = Timestamps {
            submitted: meta.submitted,
            started,
            finished,
        };
        // Raw ticks; scaled only when a snapshot asks (see `Latencies`).
        self.latencies.record(
            started.saturating_sub(meta.submitted),
            finished.saturating_sub(started),
        );
        if let Some(ring) = &mut self.spans {
            self.sample_countdown -= 1;
            if self.sample_countdown == 0 {
                self.sample_countdown = self.sample_every;
                let record = SpanRecord {
                    worker: self.index as u16,
                    tool: meta.tool,
                    key: meta.key,
                    tag: meta.tag,
                    outcome: kind,
                    times,
                };
                match ring.push(record) {
                    Ok(()) => self.local.spans_exported += 1,
                    Err(_) => self.local.spans_dropped += 1,
                }
            }
        }
        Completion {
            tag: meta.tag,
            tool: meta.tool,
            key: meta.key,
            worker: self.index as u16,
            outcome,
            times,
        }
    }
}
