//! A worker: one thread (pinned to a core when asked), one tokio
//! current-thread runtime, and a loop that drains its rings in batches,
//! runs calls, and publishes completions.
//!
//! One pass of the loop:
//! 1. handle control messages, if the doorbell's `CONTROL` bit says any;
//! 2. poll the pending calls that were woken;
//! 3. take up to `batch_size` event slots from each producer's ring (one
//!    rtrb read chunk) and events from the injector queue; a synchronous
//!    outcome is written into the slot that brought its event, and the
//!    batch's slots go back in one rtrb write chunk of that producer's
//!    completion ring: one release store per batch each way;
//! 4. publish counters, give the pass's credits back, reset the arena.
//!
//! Before it takes events from a producer's ring, the worker makes sure
//! the completion ring has room for every one of them plus every earlier
//! event of that producer still pending (`owed`), so a completion never
//! needs to wait or spill: a producer that stops draining sees its
//! submissions refused as `Full` instead.
//!
//! When a pass finds nothing it can take, the worker spins for
//! `idle_spin` (yielding its core between checks), then parks on its
//! doorbell (see [`crate::doorbell`]). Events it may not take yet (caps
//! full, completion ring full) do not count as work, so a full worker
//! parks and lets its runtime fire the timers that free the room. While
//! calls are pending and the worker is busy, it turns the runtime's timer
//! and I/O driver at least every 50 µs.

mod calls;
mod keys;
mod origin;
mod runner;

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::StreamExt;
use slab::Slab;

pub(crate) use self::origin::Origin;
pub(crate) use self::runner::Runner;
use self::runner::{InFlight, Started};
use crate::event::Event;
use crate::handler::{Handler, WorkerContext, WorkerHandler};
use crate::outcome::{Completion, Outcome, Sink, Slot};
use crate::shared::{Control, Injected, Shared, Source};
use crate::span::SpanRecord;

/// How often, at least, a worker with pending calls turns the runtime's
/// driver (timers, I/O) while it is busy.
const DRIVER_TURN_NS: u64 = 50_000;
/// The same, when no call is pending (tasks a handler spawned).
const DRIVER_TURN_IDLE_NS: u64 = 1_000_000;

enum Step {
    Busy,
    Idle,
    Exit,
}

/// Everything a worker thread needs from the engine builder.
pub(crate) struct Launch<H> {
    pub(crate) index: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) handler: Arc<H>,
    pub(crate) control: flume::Receiver<Control>,
    pub(crate) spans: Option<rtrb::Producer<SpanRecord>>,
    pub(crate) sink: Option<Arc<dyn Sink>>,
    pub(crate) core_id: Option<core_affinity::CoreId>,
    pub(crate) ready: flume::Sender<Result<(), String>>,
}

/// The worker thread's body.
pub(crate) fn run<H: Handler>(launch: Launch<H>) {
    let Launch {
        index,
        shared,
        handler,
        control,
        spans,
        sink,
        core_id,
        ready,
    } = launch;
    if let Some(id) = core_id {
        // Pinning is best effort: a restricted cpuset may refuse it.
        let _ = core_affinity::set_for_current(id);
    }
    // Best effort too: a seccomp filter or an old kernel may refuse it.
    let slice = shared.config.worker_slice;
    let _ = crate::slice::request(slice);
    shared.workers[index]
        .counters
        .tid
        .store(crate::slice::tid(), Ordering::Relaxed);
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder
        .enable_all()
        // Our calls are polled inside the worker's own future; these keep a
        // task that a handler spawns from delaying timers and I/O: tokio
        // otherwise checks its drivers only every 61 polls and the global
        // queue every 31 (its documented defaults).
        .event_interval(8)
        .global_queue_interval(1)
        .max_blocking_threads(4)
        .thread_name(format!("toolplane-worker-{index}-blocking"));
    // Its file operations are calls' work (`fs_inline = false`). (tokio
    // built for loom has no thread hooks.)
    #[cfg(not(loom))]
    builder.on_thread_start(move || {
        let _ = crate::slice::request(slice);
    });
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot build its runtime: {e}")));
            return;
        }
    };
    let _enter = runtime.enter();
    let config = &shared.config;
    let cx = WorkerContext {
        worker: index,
        workers: shared.workers.len(),
        max_concurrent: config.max_concurrent_per_worker,
        tools: shared.tools.clone(),
    };
    let state = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.start(&cx)))
    {
        Ok(Ok(state)) => state,
        Ok(Err(e)) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
        Err(panic) => {
            let _ = ready.send(Err(format!("panicked: {}", calls::panic_message(&*panic))));
            return;
        }
    };
    let sample_every = config.sample_every;
    let mut worker = Worker {
        index,
        control,
        sources: Slab::new(),
        source_ids: Vec::new(),
        rotate: 0,
        batch: config.batch_size,
        idle_spin_ns: config.idle_spin.as_nanos() as u64,
        stopping: None,
        deadline_timer: None,
        runner: Runner::new(
            state,
            index,
            shared.clock.clone(),
            config,
            sample_every,
            spans,
            sink,
        ),
        shared,
    };
    let alive = &worker.shared.workers[index].counters.alive;
    // Release, paired with the engine's Acquire loads of `alive` (start-up
    // failure, metrics): alive is published after the handler's state.
    alive.store(true, Ordering::Release);
    let _ = ready.send(Ok(()));
    runtime.block_on(worker.run());
    worker.finish_pass(0);
    let shared = Arc::clone(&worker.shared);
    // Every call is answered by now; what the handler left (futures, their
    // timers and blocking tasks) goes with the worker.
    drop(worker);
    // Release, paired with the same Acquire loads: a reader that sees the
    // worker gone sees its last counters.
    shared.workers[index]
        .counters
        .alive
        .store(false, Ordering::Release);
    drop(_enter);
    // Not `drop(runtime)`: it waits for every blocking task, and one may
    // never end (a tool's `open` of a FIFO no one writes). Its call was
    // answered at its deadline; the thread ends with the process.
    runtime.shutdown_background();
}

/// One batch from a producer's ring through `runner`: up to `batch` events
/// are dispatched, and the slots of those that finished go back in one
/// write chunk of the completion ring. Returns (taken, left).
#[inline]
pub(crate) fn take_batch<H: WorkerHandler>(
    runner: &mut Runner<H>,
    src: &mut Source,
    sid: usize,
    batch: usize,
    now: &mut u64,
) -> (usize, usize) {
    let available = src.events.slots();
    if available == 0 {
        return (0, 0);
    }
    let room = src.completions.slots().saturating_sub(src.owed);
    let k = available.min(batch).min(room).min(runner.room());
    if k == 0 {
        return (0, available);
    }
    let Source {
        events,
        completions,
        owed,
    } = src;
    let chunk = events.read_chunk(k).expect("k <= available slots");
    // Every event of the chunk was published before this read: a start
    // time taken now is never earlier than its submission.
    *now = runner.clock.raw();
    let out = completions
        .write_chunk_uninit(k)
        .expect("k <= free completion slots");
    let index = runner.index;
    let produced = out.fill_from_iter(chunk.into_iter().filter_map(|mut slot| {
        let Slot::Event(event) = slot.take() else {
            unreachable!("producers only send slots holding an event")
        };
        match runner.dispatch(event, Origin::Source(sid, slot), now) {
            Started::Done(completion, Origin::Source(_, mut slot)) => {
                match &runner.sink {
                    Some(sink) => sink.complete(index, completion),
                    None => slot.put(Slot::Done(completion)),
                }
                Some(slot)
            }
            Started::Done(_, Origin::Reply(_)) => unreachable!("origin is a source"),
            Started::Pending => {
                *owed += 1;
                None
            }
        }
    }));
    if completions.is_abandoned() && runner.sink.is_none() {
        runner.local.undelivered += produced as u64;
    }
    (k, available - k)
}

struct Worker<H> {
    index: usize,
    shared: Arc<Shared>,
    control: flume::Receiver<Control>,
    sources: Slab<Source>,
    /// Keys of `sources`, for iterating while the slab is borrowed.
    source_ids: Vec<usize>,
    /// Which source goes first this pass, for fairness.
    rotate: usize,
    batch: usize,
    idle_spin_ns: u64,
    stopping: Option<Instant>,
    deadline_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    runner: Runner<H>,
}

impl<H: WorkerHandler> Worker<H> {
    async fn run(&mut self) {
        // The runtime's deferred-waker list allocates on its first use and
        // keeps its capacity: use it once now, so that the first driver turn
        // under load does not allocate (core/tests/zero_alloc.rs).
        tokio::task::yield_now().await;
        let clock = self.runner.clock.clone();
        let mut last_turn = clock.raw();
        loop {
            match poll_fn(|cx| Poll::Ready(self.turn(cx))).await {
                Step::Exit => return,
                Step::Busy => {
                    let now = clock.raw();
                    let every = if self.runner.calls.is_empty() {
                        DRIVER_TURN_IDLE_NS
                    } else {
                        DRIVER_TURN_NS
                    };
                    if clock.delta_as_nanos(last_turn, now) >= every {
                        tokio::task::yield_now().await;
                        last_turn = now;
                    }
                }
                Step::Idle => {
                    self.idle().await;
                    last_turn = clock.raw();
                }
            }
        }
    }

    /// One pass; see the module docs.
    fn turn(&mut self, cx: &mut Context<'_>) -> Step {
        if self.shared.workers[self.index].doorbell.take_control() {
            self.handle_control();
        }
        let mut now = self.runner.clock.raw();
        let mut work = self.poll_calls(cx, &mut now);
        let mut depth = 0;
        let n = self.source_ids.len();
        self.rotate = self.rotate.wrapping_add(1);
        for i in 0..n {
            let sid = self.source_ids[(self.rotate + i) % n];
            let (taken, left) = self.drain_source(sid, &mut now);
            work += taken;
            depth += left;
        }
        work += self.drain_injector(&mut now);
        depth += self.shared.workers[self.index].injector.len() + self.runner.keys.parked_len();
        self.finish_pass(depth as u64);
        if let Some(deadline) = self.stopping {
            if self.is_drained() {
                return Step::Exit;
            }
            if Instant::now() >= deadline {
                self.cancel_all();
                return Step::Exit;
            }
        }
        if work > 0 { Step::Busy } else { Step::Idle }
    }

    fn poll_calls(&mut self, cx: &mut Context<'_>, now: &mut u64) -> usize {
        let mut done = 0;
        while done < self.batch {
            let Poll::Ready(Some((slot, outcome))) = self.runner.calls.poll_next_unpin(cx) else {
                break;
            };
            *now = self.runner.clock.raw();
            let InFlight {
                meta,
                origin,
                started,
            } = self.runner.inflight.remove(slot);
            let completion = self.runner.complete(meta, started, *now, outcome);
            self.deliver(origin, completion);
            if let Some(key) = meta.key {
                self.release_key(key, now);
            }
            done += 1;
        }
        done
    }

    /// Starts the events parked behind `key`, in order, until one of them
    /// is pending (the key stays busy) or none is left (the key is free).
    fn release_key(&mut self, key: u64, now: &mut u64) {
        while let Some((event, origin)) = self.runner.keys.pop(key) {
            match self.runner.start(event, origin, now) {
                Started::Pending => return,
                Started::Done(completion, origin) => self.deliver(origin, completion),
            }
        }
        self.runner.keys.release(key);
    }

    /// Takes one batch from a producer's ring. Returns (taken, left).
    fn drain_source(&mut self, sid: usize, now: &mut u64) -> (usize, usize) {
        take_batch(
            &mut self.runner,
            &mut self.sources[sid],
            sid,
            self.batch,
            now,
        )
    }

    fn drain_injector(&mut self, now: &mut u64) -> usize {
        let mut taken = 0;
        while taken < self.batch && self.runner.room() > 0 {
            let Some(Injected { event, reply }) = self.shared.workers[self.index].injector.pop()
            else {
                break;
            };
            // The queue fills while we take from it: stamp after each pop.
            *now = self.runner.clock.raw();
            taken += 1;
            if let Started::Done(completion, origin) =
                self.runner.dispatch(event, Origin::Reply(reply), now)
            {
                self.deliver(origin, completion);
            }
        }
        taken
    }

    /// Sends a completion where its event came from.
    fn deliver(&mut self, origin: Origin, completion: Completion) {
        match origin {
            Origin::Source(sid, mut slot) => {
                let src = &mut self.sources[sid];
                src.owed -= 1;
                let delivered = match &self.runner.sink {
                    Some(sink) => {
                        sink.complete(self.index, completion);
                        true
                    }
                    None => {
                        slot.put(Slot::Done(completion));
                        !src.completions.is_abandoned()
                    }
                };
                // The empty slot goes back even to a sink engine's producer,
                // which reuses it. `owed` reserved room for it, so a full
                // ring only happens for cancellations at shutdown.
                let returned = src.completions.push(slot).is_ok();
                if !delivered || (!returned && self.runner.sink.is_none()) {
                    self.runner.local.undelivered += 1;
                }
            }
            Origin::Reply(reply) => {
                if reply.tx.send(completion).is_err() {
                    self.runner.local.undelivered += 1;
                }
            }
        }
    }

    /// Publishes counters, returns credits, resets the scratch arena.
    fn finish_pass(&mut self, depth: u64) {
        let runner = &mut self.runner;
        self.shared
            .budget
            .give(std::mem::take(&mut runner.completed));
        runner.local.queue_depth = depth;
        runner.local.calls_in_flight = runner.inflight.len() as u64;
        self.shared.workers[self.index]
            .counters
            .publish(&runner.local);
        runner.arena.reset();
    }

    fn handle_control(&mut self) {
        while let Ok(msg) = self.control.try_recv() {
            match msg {
                Control::AddSource(source) => {
                    let sid = self.sources.insert(source);
                    self.source_ids.push(sid);
                }
                Control::Snapshot(reply) => {
                    let _ = reply.send((self.index, self.runner.latencies.clone()));
                }
                Control::Shutdown { deadline } => {
                    self.stopping = Some(deadline);
                    self.deadline_timer = Some(Box::pin(tokio::time::sleep_until(deadline.into())));
                }
            }
        }
    }

    /// Whether the worker can do something now: a control message, or an
    /// event it is allowed to take. Events it may not take yet (the
    /// concurrency cap or the per-key queues are full, or the producer's
    /// completion ring has no room) are not work: counting them would spin
    /// the worker without ever letting the runtime fire the timers that
    /// free the room. A producer's `drain` rings the doorbell once it has
    /// made room in a completion ring.
    fn has_work(&self) -> bool {
        let me = &self.shared.workers[self.index];
        if me.doorbell.has_control() {
            return true;
        }
        if self.runner.room() == 0 {
            return false;
        }
        !me.injector.is_empty()
            || self.source_ids.iter().any(|&sid| {
                let s = &self.sources[sid];
                s.events.slots() > 0 && s.completions.slots() > s.owed
            })
    }

    /// Spin briefly, then park until a producer, a control message, a
    /// pending call or the shutdown deadline wakes the worker.
    async fn idle(&mut self) {
        self.reap_sources();
        if self.runner.calls.is_empty() && self.stopping.is_none() && self.idle_spin_ns > 0 {
            let clock = &self.runner.clock;
            let start = clock.raw();
            loop {
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
                if self.has_work() {
                    return;
                }
                if clock.delta_as_nanos(start, clock.raw()) >= self.idle_spin_ns {
                    break;
                }
            }
        }
        let me = self.shared.clone();
        let me = &me.workers[self.index];
        let mut first = true;
        poll_fn(|cx| {
            if !first {
                return Poll::Ready(());
            }
            first = false;
            me.waker.register(cx.waker());
            me.doorbell.announce_sleep();
            if self.has_work() {
                return Poll::Ready(());
            }
            if let Some(timer) = &mut self.deadline_timer
                && timer.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
        me.doorbell.cancel_sleep();
    }

    /// Forgets sources whose producer is gone and which owe nothing.
    fn reap_sources(&mut self) {
        let sources = &mut self.sources;
        self.source_ids.retain(|&sid| {
            let s = &sources[sid];
            let gone = s.events.is_abandoned() && s.events.is_empty() && s.owed == 0;
            if gone {
                sources.remove(sid);
            }
            !gone
        });
    }

    fn is_drained(&self) -> bool {
        self.runner.calls.is_empty()
            && self.runner.keys.parked_len() == 0
            && self.shared.workers[self.index].injector.is_empty()
            && self
                .source_ids
                .iter()
                .all(|&sid| self.sources[sid].events.is_empty())
    }

    /// Shutdown past its deadline: every event this worker holds ends as
    /// `Cancelled`, none is dropped.
    fn cancel_all(&mut self) {
        let now = self.runner.clock.raw();
        self.runner.calls.clear();
        let inflight: Vec<InFlight> = self.runner.inflight.drain().collect();
        for InFlight {
            meta,
            origin,
            started,
        } in inflight
        {
            let c = self.runner.complete(meta, started, now, Outcome::Cancelled);
            self.deliver(origin, c);
        }
        let parked: Vec<_> = self.runner.keys.drain_parked().collect();
        for (event, origin) in parked {
            self.cancel(event, origin, now);
        }
        for i in 0..self.source_ids.len() {
            let sid = self.source_ids[i];
            while let Ok(mut slot) = self.sources[sid].events.pop() {
                self.sources[sid].owed += 1;
                if let Slot::Event(event) = slot.take() {
                    self.cancel(event, Origin::Source(sid, slot), now);
                }
            }
        }
        while let Some(Injected { event, reply }) = self.shared.workers[self.index].injector.pop() {
            self.cancel(event, Origin::Reply(reply), now);
        }
        self.finish_pass(0);
    }

    fn cancel(&mut self, event: Event, origin: Origin, now: u64) {
        let meta = self::runner::Meta::of(&event);
        let c = self.runner.complete(meta, now, now, Outcome::Cancelled);
        self.deliver(origin, c);
    }
}
