//! The engine: builds the workers, hands out producers and injectors,
//! answers metrics, and shuts down with a full accounting.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use futures_util::task::AtomicWaker;

use crate::admission::{Budget, Gate, SharedBusy, lease_size};
use crate::config::{Config, ConfigError};
use crate::doorbell::Doorbell;
use crate::event::ToolId;
use crate::handler::Handler;
use crate::injector::Injector;
use crate::metrics::{
    AdmissionCounters, Latencies, Metrics, OutcomeCounts, Report, WorkerCounters, WorkerMetrics,
};
use crate::outcome::Sink;
use crate::producer::Producer;
use crate::shared::{Control, Producers, Shared, WorkerShared};
use crate::span::{self, Exporter, SpanExport};
use crate::tools::ToolTable;
use crate::worker::{self, Launch};

/// How long [`Engine::metrics`] waits for the workers' histograms.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(1);

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A worker thread could not be spawned.
    #[error("cannot spawn worker {worker}: {source}")]
    Spawn {
        /// The worker's index.
        worker: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A worker failed to start (its runtime, or the handler's `start`).
    #[error("worker {worker} failed to start: {reason}")]
    WorkerStart {
        /// The worker's index.
        worker: usize,
        /// What went wrong.
        reason: String,
    },
    /// The span export file could not be opened.
    #[error("cannot open span export file {path} (key `span_export`): {source}")]
    SpanExport {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Configures and builds an [`Engine`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use toolplane_core::{handler_fn, Config, Engine, Event, Outcome};
///
/// let engine = Engine::builder()
///     .config(Config::default())
///     .workers(2)
///     .pin_workers(false)
///     .build(handler_fn(|e| Outcome::Ok(e.payload().clone())))
///     .unwrap();
/// let echo = engine.tool("echo");
/// let mut producer = engine.producer();
/// producer.submit(Event::new(echo, b"hi".as_slice()).with_key(1)).unwrap();
/// let mut got = None;
/// while got.is_none() {
///     producer.drain(|c| got = Some(c));
/// }
/// assert_eq!(got.unwrap().outcome, Outcome::Ok(b"hi".as_slice().into()));
/// let report = engine.shutdown(Duration::from_secs(1));
/// assert!(report.is_balanced());
/// ```
#[must_use]
pub struct EngineBuilder {
    config: Config,
    sink: Option<Arc<dyn Sink>>,
    spans: Option<SpanExport>,
    tools: Option<Arc<ToolTable>>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    )*};
}

impl EngineBuilder {
    /// Replaces the whole configuration (from a file, the environment, or
    /// code). Setters called afterwards override single keys.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets `workers`.
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = Some(n);
        self
    }

    setters! {
        /// Sets `max_inflight`.
        max_inflight: usize,
        /// Sets `batch_size`.
        batch_size: usize,
        /// Sets `queue_watermark`.
        queue_watermark: f64,
        /// Sets `ring_capacity`.
        ring_capacity: usize,
        /// Sets `sample_every`.
        sample_every: u64,
        /// Sets `max_concurrent_per_worker`.
        max_concurrent_per_worker: usize,
        /// Sets `pin_workers`.
        pin_workers: bool,
        /// Sets `idle_spin`.
        idle_spin: Duration,
        /// Sets `call_timeout`.
        call_timeout: Option<Duration>,
    }

    /// Sends completions of producer-submitted events to `sink` on the
    /// worker threads instead of back to the producers.
    pub fn sink(mut self, sink: impl Sink) -> Self {
        self.sink = Some(Arc::new(sink));
        self
    }

    /// Where sampled spans go (overrides the `span_export` key).
    pub fn span_export(mut self, export: SpanExport) -> Self {
        self.spans = Some(export);
        self
    }

    /// Shares an existing tool table (a registry that outlives engines).
    pub fn tools(mut self, tools: Arc<ToolTable>) -> Self {
        self.tools = Some(tools);
        self
    }

    /// Validates the configuration, starts the workers (each calls
    /// `handler.start` on its own thread) and returns the running engine.
    ///
    /// # Errors
    ///
    /// [`BuildError`] naming the invalid key, the span file, or the worker
    /// that failed to start; workers already started are shut down.
    pub fn build<H: Handler>(self, handler: H) -> Result<Engine, BuildError> {
        let config = self.config;
        config.validate()?;
        let n = config.resolved_workers();
        let export = self.spans.unwrap_or_else(|| match &config.span_export {
            Some(p) => SpanExport::JsonLines(p.clone()),
            None => SpanExport::Off,
        });
        let export_file = match &export {
            SpanExport::JsonLines(path) => {
                Some(span::open(path).map_err(|source| BuildError::SpanExport {
                    path: path.clone(),
                    source,
                })?)
            }
            _ => None,
        };
        let exporting = !matches!(export, SpanExport::Off) && config.sample_every > 0;
        let cores = if config.pin_workers {
            // Read once, before any thread is pinned: the list holds only
            // the cores in the calling thread's affinity mask, and a
            // pinned thread's mask is its one core.
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut controls = Vec::with_capacity(n);
        let workers: Box<[WorkerShared]> = (0..n)
            .map(|_| {
                let (tx, rx) = flume::unbounded();
                controls.push(rx);
                WorkerShared {
                    doorbell: CachePadded::new(Doorbell::default()),
                    waker: AtomicWaker::new(),
                    control: tx,
                    injector: ArrayQueue::new(config.ring_capacity),
                    counters: CachePadded::new(WorkerCounters::default()),
                }
            })
            .collect();
        let shared = Arc::new(Shared {
            lease: lease_size(config.max_inflight),
            budget: Budget::new(config.max_inflight),
            shed_above: (config.queue_watermark * config.ring_capacity as f64).floor() as usize,
            workers,
            gate: Gate::default(),
            has_sink: self.sink.is_some(),
            injector_busy: SharedBusy::default(),
            injector_counters: AdmissionCounters::default(),
            producers: Mutex::new(Producers::default()),
            tools: self.tools.unwrap_or_default(),
            clock: quanta::Clock::new(),
            next_worker: CachePadded::new(std::sync::atomic::AtomicUsize::new(0)),
            config,
        });
        let mut span_consumers = Vec::new();
        let mut span_producers = Vec::new();
        for _ in 0..n {
            if exporting {
                let (p, c) = rtrb::RingBuffer::new(span::EXPORT_RING);
                span_producers.push(Some(p));
                span_consumers.push(c);
            } else {
                span_producers.push(None);
            }
        }
        let handler = Arc::new(handler);
        let mut engine = Engine {
            shared: shared.clone(),
            threads: Vec::with_capacity(n),
            exporter: None,
            report: None,
        };
        let (ready_tx, ready_rx) = flume::unbounded();
        for (index, (control, spans)) in controls.into_iter().zip(span_producers).enumerate() {
            let launch = Launch {
                index,
                shared: shared.clone(),
                handler: handler.clone(),
                control,
                spans,
                sink: self.sink.clone(),
                core_id: (!cores.is_empty()).then(|| cores[index % cores.len()]),
                ready: ready_tx.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("toolplane-worker-{index}"))
                .spawn(move || worker::run(launch));
            match spawned {
                Ok(t) => engine.threads.push(t),
                Err(source) => {
                    engine.stop(Duration::ZERO);
                    return Err(BuildError::Spawn {
                        worker: index,
                        source,
                    });
                }
            }
        }
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => {
                    failure.get_or_insert(reason);
                }
                Err(_) => {
                    failure.get_or_insert_with(|| "exited during start-up".to_owned());
                }
            }
        }
        if let Some(reason) = failure {
            let worker = (0..n)
                .find(|&i| {
                    // Pairs with the worker's Release stores of `alive`
                    // (worker::run): seen false, its failure is reported.
                    !shared.workers[i]
                        .counters
                        .alive
                        .load(std::sync::atomic::Ordering::Acquire)
                })
                .unwrap_or(0);
            engine.stop(Duration::ZERO);
            return Err(BuildError::WorkerStart { worker, reason });
        }
        if exporting {
            let exporter = Exporter::start(
                &export,
                export_file,
                span_consumers,
                shared.clock.clone(),
                shared.tools.clone(),
            )
            .map_err(|source| BuildError::Spawn { worker: n, source })?;
            engine.exporter = Some(exporter);
        }
        Ok(engine)
    }
}

/// A running engine. See the crate docs for the whole picture.
///
/// Dropping an engine that was not shut down cancels whatever has not
/// finished (as `shutdown(Duration::ZERO)`); call [`Engine::shutdown`] to
/// drain.
pub struct Engine {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    exporter: Option<Exporter>,
    report: Option<Report>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("workers", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A builder with the default configuration.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            config: Config::default(),
            sink: None,
            spans: None,
            tools: None,
        }
    }

    /// A new producer handle: one SPSC ring to each worker and one
    /// completion ring back. Give each submitting thread its own.
    pub fn producer(&self) -> Producer {
        Producer::new(self.shared.clone())
    }

    /// A handle for many-thread and async callers (cheap to clone).
    pub fn injector(&self) -> Injector {
        Injector::new(self.shared.clone())
    }

    /// The engine's tool table.
    pub fn tools(&self) -> &Arc<ToolTable> {
        &self.shared.tools
    }

    /// Interns a tool name (shorthand for `tools().intern(name)`).
    pub fn tool(&self, name: &str) -> ToolId {
        self.shared.tools.intern(name)
    }

    /// The clock that stamped every [`Timestamps`](crate::Timestamps).
    pub fn clock(&self) -> &quanta::Clock {
        &self.shared.clock
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// How many workers run.
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// Each worker thread's kernel id (Linux), for watching it from
    /// outside (`/proc/self/task/TID`: its scheduling counters); 0 where
    /// there is none. Workers have all started when the engine is built.
    pub fn worker_tids(&self) -> Vec<i32> {
        self.shared
            .workers
            .iter()
            .map(|w| w.counters.tid.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    /// Counters, gauges and merged latency histograms. Counters are read
    /// directly; histograms are copied by each worker on request (waiting
    /// at most one second for a busy worker).
    pub fn metrics(&self) -> Metrics {
        let (tx, rx) = flume::unbounded();
        for w in self.shared.workers.iter() {
            w.send_control(Control::Snapshot(tx.clone()));
        }
        drop(tx);
        let mut latency = Latencies::default();
        let mut answered = 0;
        let deadline = Instant::now() + SNAPSHOT_WAIT;
        while answered < self.shared.workers.len() {
            match rx.recv_deadline(deadline) {
                Ok((_, l)) => {
                    latency.merge(&l);
                    answered += 1;
                }
                Err(_) => break,
            }
        }
        let mut m = self.counters();
        m.latency = latency.ticks_to_nanos(&self.shared.clock);
        m.stale_workers = self.shared.workers.len() - answered;
        m
    }

    /// Counters and gauges only, read directly without asking the workers
    /// (cheap enough for a readiness probe): `latency` is empty and
    /// `stale_workers` is 0. Use [`Engine::metrics`] for the histograms.
    pub fn counters(&self) -> Metrics {
        let (accepted, rejected) = self.shared.admission();
        let mut outcomes = OutcomeCounts::default();
        let (mut undelivered, mut spans_exported, mut spans_dropped) = (0, 0, 0);
        let mut workers = Vec::with_capacity(self.shared.workers.len());
        for w in self.shared.workers.iter() {
            let c = w.counters.read();
            outcomes.add(&c.outcomes);
            undelivered += c.undelivered;
            spans_exported += c.spans_exported;
            spans_dropped += c.spans_dropped;
            workers.push(WorkerMetrics {
                queue_depth: c.queue_depth,
                calls_in_flight: c.calls_in_flight,
                // Pairs with the worker's Release stores (worker::run): a
                // worker seen dead has published its last counters.
                alive: w.counters.alive.load(std::sync::atomic::Ordering::Acquire),
            });
        }
        Metrics {
            accepted,
            in_flight: accepted.saturating_sub(outcomes.total()),
            outcomes,
            rejected,
            undelivered,
            spans_exported,
            spans_dropped,
            workers,
            latency: Latencies::default(),
            stale_workers: 0,
        }
    }

    /// Stops admission, lets the workers drain for up to `grace`, cancels
    /// whatever is left (each such event completes as `Cancelled`), joins
    /// the workers and the span exporter, and returns the final accounting,
    /// for which `accepted == outcomes.total()` holds.
    ///
    /// Pending calls are cancelled by dropping their futures at the
    /// deadline; a synchronous handler call already running cannot be
    /// interrupted and finishes first (the WASI pool bounds its calls with
    /// epoch deadlines). Producers may outlive the engine: their submits are
    /// refused with `ShuttingDown`, and completions already in their rings
    /// can still be drained.
    pub fn shutdown(mut self, grace: Duration) -> Report {
        self.stop(grace)
    }

    fn stop(&mut self, grace: Duration) -> Report {
        if let Some(r) = &self.report {
            return r.clone();
        }
        let started = Instant::now();
        let shared = &self.shared;
        shared.gate.close();
        {
            let reg = shared.producers.lock().unwrap_or_else(|e| e.into_inner());
            for p in &reg.live {
                Gate::wait_idle(&p.busy);
            }
        }
        shared.injector_busy.wait_idle();
        let deadline = started + grace;
        for w in shared.workers.iter() {
            w.send_control(Control::Shutdown { deadline });
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(mut e) = self.exporter.take() {
            e.finish();
        }
        let m = self.counters();
        let report = Report {
            accepted: m.accepted,
            outcomes: m.outcomes,
            rejected: m.rejected,
            undelivered: m.undelivered,
            spans_exported: m.spans_exported,
            spans_dropped: m.spans_dropped,
            shutdown_took: started.elapsed(),
        };
        self.report = Some(report.clone());
        report
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}
