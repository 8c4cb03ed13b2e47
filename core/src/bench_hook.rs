//! A hook for toolplane's benchmarks (`bench/`), not part of the API: the
//! worker's per-batch path driven on the calling thread, so that an
//! instruction count (iai-callgrind) sees exactly one batch and nothing of
//! thread wake-ups or spinning.
//!
//! [`WorkerBatch::pass`] runs the very function a worker runs for each
//! producer ring per pass (take a read chunk of event slots, dispatch each
//! event, time and count it, sample its span, write the slots back in one
//! completion chunk). [`WorkerBatch::submit`] and [`WorkerBatch::reap`] are
//! the producer's side, kept out of the measured part.

use std::sync::Arc;

use crate::config::Config;
use crate::event::{Event, Payload, ToolId};
use crate::handler::{FnWorker, Handler, WorkerContext, handler_fn};
use crate::outcome::{Outcome, Slot, SlotBox};
use crate::shared::Source;
use crate::span::{EXPORT_RING, SpanRecord};
use crate::tools::ToolTable;
use crate::worker::{Runner, take_batch};

/// One worker's batch path with one producer ring, on this thread.
pub struct WorkerBatch<F> {
    runner: Runner<FnWorker<F>>,
    source: Source,
    events: rtrb::Producer<SlotBox>,
    completions: rtrb::Consumer<SlotBox>,
    spans: Option<rtrb::Consumer<SpanRecord>>,
    free: Vec<SlotBox>,
    batch: usize,
    tool: ToolId,
    now: u64,
}

impl<F> std::fmt::Debug for WorkerBatch<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBatch")
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl<F> WorkerBatch<F>
where
    F: Fn(Event) -> Outcome + Clone + Send + Sync + 'static,
{
    /// A worker with the default [`Config`] but `batch_size = batch`,
    /// running `handler`, sampling one span in `sample_every` (0: off).
    pub fn new(handler: F, batch: usize, sample_every: u64) -> WorkerBatch<F> {
        let config = Config {
            batch_size: batch,
            ..Config::default()
        };
        let tools = Arc::new(ToolTable::default());
        let tool = tools.intern("bench");
        let cx = WorkerContext {
            worker: 0,
            workers: 1,
            max_concurrent: config.max_concurrent_per_worker,
            tools,
        };
        let state = handler_fn(handler)
            .start(&cx)
            .expect("a function handler always starts");
        let (events, events_rx) = rtrb::RingBuffer::new(config.ring_capacity);
        let (completions_tx, completions) = rtrb::RingBuffer::new(config.ring_capacity);
        let (span_tx, span_rx) = rtrb::RingBuffer::new(EXPORT_RING);
        let sampling = sample_every > 0;
        WorkerBatch {
            runner: Runner::new(
                state,
                0,
                quanta::Clock::new(),
                &config,
                sample_every,
                Some(span_tx),
                None,
            ),
            source: Source::new(events_rx, completions_tx),
            events,
            completions,
            spans: sampling.then_some(span_rx),
            free: (0..config.ring_capacity)
                .map(|_| SlotBox::default())
                .collect(),
            batch,
            tool,
            now: 0,
        }
    }

    /// The producer's side: `n` events (empty payloads, keyed by their
    /// index modulo `keys` when `keys > 0`) into the ring, in slots taken
    /// from the free list. Returns how many went in.
    pub fn submit(&mut self, n: usize, keys: u64) -> usize {
        let stamp = self.runner.clock.raw();
        let mut sent = 0;
        while sent < n {
            let Some(mut slot) = self.free.pop() else {
                break;
            };
            let mut event = Event::new(self.tool, Payload::new()).with_tag(sent as u64);
            if keys > 0 {
                event = event.with_key(sent as u64 % keys);
            }
            event.submitted = stamp;
            slot.put(Slot::Event(event));
            if let Err(rtrb::PushError::Full(slot)) = self.events.push(slot) {
                self.free.push(slot);
                break;
            }
            sent += 1;
        }
        sent
    }

    /// The worker's side: one batch. Returns the events taken.
    #[inline(never)]
    pub fn pass(&mut self) -> usize {
        let (taken, _) = take_batch(
            &mut self.runner,
            &mut self.source,
            0,
            self.batch,
            &mut self.now,
        );
        self.runner.completed = 0;
        taken
    }

    /// The producer's side again: takes the completions back (their slots
    /// return to the free list) and empties the span ring. Returns the
    /// completions that held an `Ok` outcome.
    pub fn reap(&mut self) -> usize {
        let mut ok = 0;
        while let Ok(mut slot) = self.completions.pop() {
            if let Slot::Done(c) = slot.take()
                && matches!(c.outcome, Outcome::Ok(_))
            {
                ok += 1;
            }
            self.free.push(slot);
        }
        if let Some(spans) = &mut self.spans {
            while spans.pop().is_ok() {}
        }
        ok
    }

    /// Spans the worker handed to the export ring.
    pub fn spans_sampled(&self) -> u64 {
        self.runner.local.spans_exported
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_completes_one_batch_and_samples_spans() {
        let mut w = WorkerBatch::new(|_| Outcome::Ok(Payload::new()), 64, 4);
        assert_eq!(w.submit(100, 0), 100);
        assert_eq!(w.pass(), 64);
        assert_eq!(w.reap(), 64);
        assert_eq!(w.pass(), 36);
        assert_eq!(w.reap(), 36);
        assert_eq!(w.pass(), 0);
        assert_eq!(w.spans_sampled(), 25);
    }

    #[test]
    fn keyed_events_run_in_one_pass_when_they_finish_at_once() {
        let mut w = WorkerBatch::new(|_| Outcome::Ok(Payload::new()), 64, 0);
        assert_eq!(w.submit(64, 8), 64);
        assert_eq!(w.pass(), 64);
        assert_eq!(w.reap(), 64);
        assert_eq!(w.spans_sampled(), 0);
    }
}
