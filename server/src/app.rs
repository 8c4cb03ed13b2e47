//! The served engine: one call path for REST, MCP and the CLI, per-tool
//! accounting, cached readiness and the shutdown sequence.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use toolplane_core::{
    Engine, Event, Injector, Metrics, Outcome, Payload, Priority, RejectReason, Report, ToolId,
    ToolTable,
};
use toolplane_pool::{LoadState, Registry, ToolEntry};

use crate::config::Settings;

/// How often readiness is recomputed at most.
pub const READY_EVERY: Duration = Duration::from_millis(100);

/// Why a call did not produce the tool's output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No tool has this name.
    #[error("unknown tool {0:?}")]
    UnknownTool(String),
    /// The tool is listed but could not be loaded.
    #[error("tool {tool} is unavailable: {reason}")]
    Unavailable {
        /// The tool.
        tool: String,
        /// Why it did not load.
        reason: String,
    },
    /// The input is not JSON or does not match the tool's schema; the
    /// message names the field.
    #[error("{0}")]
    InvalidInput(String),
    /// Admission refused the call.
    #[error("the engine refused the call: {}", reason_text(*.0))]
    Rejected(RejectReason),
    /// The server is draining for shutdown.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The tool reported an error or trapped.
    #[error("{0}")]
    Tool(String),
    /// The call ran past its deadline.
    #[error("tool {0} timed out")]
    Timeout(String),
    /// The engine stopped before the call finished.
    #[error("the call was cancelled at shutdown")]
    Cancelled,
    /// A fault of this server (a handler panicked, a reply was lost).
    #[error("internal fault: {0}")]
    Internal(String),
}

fn reason_text(r: RejectReason) -> &'static str {
    match r {
        RejectReason::Full => "the worker's queue is full",
        RejectReason::Shed => "low-priority calls are shed above the queue watermark",
        RejectReason::InflightLimit => "the in-flight limit is reached",
        RejectReason::ShuttingDown => "the engine is shutting down",
    }
}

impl CallError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        RESULTS[self.index()]
    }

    /// Its place in [`RESULTS`].
    fn index(&self) -> usize {
        match self {
            CallError::UnknownTool(_) => 1,
            CallError::Unavailable { .. } => 2,
            CallError::InvalidInput(_) => 3,
            CallError::Rejected(RejectReason::Full) => 4,
            CallError::Rejected(RejectReason::Shed) => 5,
            CallError::Rejected(RejectReason::InflightLimit) => 6,
            CallError::Rejected(RejectReason::ShuttingDown) | CallError::ShuttingDown => 7,
            CallError::Tool(_) => 8,
            CallError::Timeout(_) => 9,
            CallError::Cancelled => 10,
            CallError::Internal(_) => 11,
        }
    }
}

/// Every result a call through the server can have, as counted: `ok`,
/// then each [`CallError::label`], then `abandoned` (the caller went away
/// or cancelled the request before the answer; the engine does not start
/// the event or stops it at its next check, and counts it `cancelled`).
pub const RESULTS: [&str; 13] = [
    "ok",
    "unknown_tool",
    "unavailable",
    "invalid_input",
    "full",
    "shed",
    "inflight_limit",
    "shutting_down",
    "error",
    "timeout",
    "cancelled",
    "internal",
    "abandoned",
];

/// [`RESULTS`]' `abandoned`.
const ABANDONED: usize = 12;

/// One call.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The tool.
    pub tool: &'a str,
    /// Its JSON input.
    pub input: &'a [u8],
    /// The ordering key: calls with the same key run in order.
    pub key: Option<u64>,
    /// Low-priority calls are shed first under load.
    pub priority: Priority,
}

impl<'a> Call<'a> {
    /// A normal-priority, unkeyed call.
    pub fn new(tool: &'a str, input: &'a [u8]) -> Call<'a> {
        Call {
            tool,
            input,
            key: None,
            priority: Priority::Normal,
        }
    }
}

/// Counters of the calls made through this server, by tool and result:
/// one row of atomics per tool id, so a call adds to a counter under a
/// shared read lock and allocates nothing (a new tool id takes the write
/// lock once).
#[derive(Debug, Default)]
pub struct ToolCounters {
    by_tool: RwLock<Vec<[AtomicU64; RESULTS.len()]>>,
    unknown: AtomicU64,
}

impl ToolCounters {
    fn add(&self, tool: ToolId, result: usize) {
        let i = tool.0 as usize;
        if let Some(row) = self
            .by_tool
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(i)
        {
            row[result].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut rows = self.by_tool.write().unwrap_or_else(|p| p.into_inner());
        while rows.len() <= i {
            rows.push(Default::default());
        }
        rows[i][result].fetch_add(1, Ordering::Relaxed);
    }

    /// Every (tool, result, count) that is not zero, sorted; calls to a
    /// tool that does not exist are counted under `(unknown)`.
    pub fn snapshot(&self, names: &ToolTable) -> Vec<(Arc<str>, &'static str, u64)> {
        let mut v = Vec::new();
        for (id, row) in self
            .by_tool
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .enumerate()
        {
            let name = names.name(ToolId(id as u32));
            for (n, label) in row.iter().zip(RESULTS) {
                let n = n.load(Ordering::Relaxed);
                if let (Some(name), true) = (&name, n > 0) {
                    v.push((Arc::clone(name), label, n));
                }
            }
        }
        let unknown = self.unknown.load(Ordering::Relaxed);
        if unknown > 0 {
            v.push((Arc::from("(unknown)"), RESULTS[1], unknown));
        }
        v.sort();
        v
    }
}

/// Adds one call to [`ToolCounters`] when dropped.
struct Count<'a> {
    counters: &'a ToolCounters,
    tool: ToolId,
    result: usize,
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.counters.add(self.tool, self.result);
    }
}

/// A manifest's annotations as JSON (`{"read_only": true, ...}`, unset
/// hints left out).
pub fn annotations_json(a: &toolplane_pool::Annotations) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in [
        ("read_only", a.read_only),
        ("destructive", a.destructive),
        ("idempotent", a.idempotent),
        ("open_world", a.open_world),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), v.into());
        }
    }
    serde_json::Value::Object(m)
}

/// A tool's load state in words: `loading`, `ready`, `failed: WHY`.
pub fn state_text(state: &LoadState) -> String {
    match state {
        LoadState::Loading => "loading".into(),
        LoadState::Ready => "ready".into(),
        LoadState::Failed(why) => format!("failed: {why}"),
    }
}

/// The last readiness verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Serving.
    Ready,
    /// Not serving, and why.
    NotReady(String),
}

/// The served engine.
pub struct App {
    engine: RwLock<Option<Engine>>,
    injector: Injector,
    registry: Registry,
    settings: Settings,
    draining: AtomicBool,
    in_flight: AtomicU64,
    drained: tokio::sync::Notify,
    ready: Mutex<(Instant, Readiness)>,
    counters: ToolCounters,
    started: Instant,
    connections: Arc<crate::listen::Connections>,
    sessions: Arc<crate::mcp::front::Sessions>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .field("draining", &self.draining.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl App {
    /// Serves `engine`, whose handler runs `registry`'s tools.
    pub fn new(engine: Engine, registry: Registry, settings: Settings) -> App {
        let injector = engine.injector();
        App {
            engine: RwLock::new(Some(engine)),
            injector,
            registry,
            draining: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            drained: tokio::sync::Notify::new(),
            ready: Mutex::new((
                Instant::now() - 2 * READY_EVERY,
                Readiness::NotReady("starting".into()),
            )),
            counters: ToolCounters::default(),
            started: Instant::now(),
            connections: Arc::default(),
            sessions: crate::mcp::front::Sessions::new(
                settings.server.max_sessions,
                settings.server.session_idle,
            ),
            settings,
        }
    }

    /// The tool registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The settings served.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The HTTP connection counts.
    pub fn connections(&self) -> &Arc<crate::listen::Connections> {
        &self.connections
    }

    /// The MCP sessions of streamable HTTP.
    pub fn sessions(&self) -> &Arc<crate::mcp::front::Sessions> {
        &self.sessions
    }

    /// Per-tool call counters.
    pub fn counters(&self) -> &ToolCounters {
        &self.counters
    }

    /// Calls made through this server that have not finished.
    pub fn in_flight(&self) -> u64 {
        // Pairs with the AcqRel updates in `InFlight`; a count for
        // reports, it guards no other data.
        self.in_flight.load(Ordering::Acquire)
    }

    /// Since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        // Pairs with the Release store in `shutdown`.
        self.draining.load(Ordering::Acquire)
    }

    /// The engine's merged metrics (`None` after shutdown).
    pub fn metrics(&self) -> Option<Metrics> {
        let g = self.engine.read().unwrap_or_else(|p| p.into_inner());
        g.as_ref().map(Engine::metrics)
    }

    /// Runs one call through the engine.
    ///
    /// # Errors
    ///
    /// See [`CallError`]: every way a call can fail, each with a message
    /// naming the tool, the field or the limit.
    pub async fn call(&self, call: Call<'_>) -> Result<Payload, CallError> {
        let snapshot = self.registry.snapshot();
        let Some(entry) = snapshot.by_name(call.tool).cloned() else {
            self.counters.unknown.fetch_add(1, Ordering::Relaxed);
            return Err(CallError::UnknownTool(call.tool.to_string()));
        };
        // Counts the call even when its future is dropped unfinished (an
        // HTTP client that disconnects, an MCP request cancelled), which
        // drops the engine's ticket and so cancels the event too.
        let mut count = Count {
            counters: &self.counters,
            tool: entry.id,
            result: ABANDONED,
        };
        let result = self.call_entry(&entry, call).await;
        count.result = result.as_ref().map_or_else(CallError::index, |_| 0);
        result
    }

    async fn call_entry(&self, entry: &ToolEntry, call: Call<'_>) -> Result<Payload, CallError> {
        if self.is_draining() {
            return Err(CallError::ShuttingDown);
        }
        let tool = match entry.wait().await {
            Ok(t) => Arc::clone(t),
            Err(reason) => {
                return Err(CallError::Unavailable {
                    tool: entry.manifest.name.clone(),
                    reason: reason.to_string(),
                });
            }
        };
        tool.check_input(call.input)
            .map_err(CallError::InvalidInput)?;
        let mut event = Event::new(entry.id, call.input).with_priority(call.priority);
        if let Some(k) = call.key {
            event = event.with_key(k);
        }
        let _guard = InFlight::enter(self);
        // Checked again after entering, so that a call admitted here is
        // always counted by the drain that begins after the flag is set.
        if self.is_draining() {
            return Err(CallError::ShuttingDown);
        }
        let completion = match self.injector.call(event).await {
            Ok(c) => c,
            Err(toolplane_core::CallError::Rejected(r)) => {
                return Err(match r.reason() {
                    RejectReason::ShuttingDown => CallError::ShuttingDown,
                    reason => CallError::Rejected(reason),
                });
            }
            Err(toolplane_core::CallError::Lost(l)) => {
                return Err(CallError::Internal(l.to_string()));
            }
        };
        let name = &entry.manifest.name;
        match completion.outcome {
            Outcome::Ok(out) => {
                tool.check_output(&out).map_err(CallError::Tool)?;
                Ok(out)
            }
            Outcome::Error(m) => Err(CallError::Tool(m.into_owned())),
            Outcome::Trap(m) => Err(CallError::Tool(format!("tool {name} trapped: {m}"))),
            Outcome::Timeout => Err(CallError::Timeout(name.clone())),
            Outcome::Cancelled => Err(CallError::Cancelled),
            Outcome::Panicked(m) => Err(CallError::Internal(format!(
                "the handler of tool {name} panicked: {m}"
            ))),
        }
    }

    /// Readiness, recomputed at most every [`READY_EVERY`]: workers alive,
    /// queues below the watermark; never ready once draining.
    pub fn readiness(&self) -> Readiness {
        if self.is_draining() {
            return Readiness::NotReady("shutting down".into());
        }
        let mut cached = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0.elapsed() >= READY_EVERY {
            *cached = (Instant::now(), self.compute_readiness());
        }
        cached.1.clone()
    }

    fn compute_readiness(&self) -> Readiness {
        let g = self.engine.read().unwrap_or_else(|p| p.into_inner());
        let Some(engine) = g.as_ref() else {
            return Readiness::NotReady("the engine has stopped".into());
        };
        let m = engine.counters();
        let dead = m.workers.iter().filter(|w| !w.alive).count();
        if dead > 0 {
            return Readiness::NotReady(format!(
                "{dead} of {} workers have stopped",
                m.workers.len()
            ));
        }
        // Tools still loading do not count: the server serves the tools
        // that are ready, and a call to a loading tool waits for it.
        let config = engine.config();
        // A worker's queue holds its rings and its injector queue; the
        // server feeds the injector, whose capacity is `ring_capacity`.
        let limit = (config.ring_capacity as f64 * config.queue_watermark) as u64;
        if let Some((i, w)) = m
            .workers
            .iter()
            .enumerate()
            .find(|(_, w)| w.queue_depth > limit)
        {
            return Readiness::NotReady(format!(
                "worker {i}'s queue holds {} events, above the watermark of {limit}",
                w.queue_depth
            ));
        }
        Readiness::Ready
    }

    /// Shuts down: readiness goes 503 and admission stops at once; calls in
    /// flight get until `drain` to finish, the rest are cancelled (and
    /// answered as such). Returns the engine's final accounting.
    pub async fn shutdown(&self, drain: Duration) -> Option<Report> {
        // Release, paired with the Acquire in `is_draining`: requests that
        // see it refuse new calls (readiness 503) from here on.
        self.draining.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + drain;
        loop {
            let notified = self.drained.notified();
            if self.in_flight() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let engine = self
            .engine
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        // Whatever is still running is cancelled: its callers get
        // `Cancelled` answers from the engine.
        tokio::task::spawn_blocking(move || engine.shutdown(Duration::ZERO))
            .await
            .ok()
    }

    /// Number of tools in each load state.
    pub fn tool_states(&self) -> [(&'static str, usize); 3] {
        let mut n = [("loading", 0), ("ready", 0), ("failed", 0)];
        for e in self.registry.snapshot().iter() {
            match e.state() {
                LoadState::Loading => n[0].1 += 1,
                LoadState::Ready => n[1].1 += 1,
                LoadState::Failed(_) => n[2].1 += 1,
            }
        }
        n
    }
}

struct InFlight<'a>(&'a App);

impl<'a> InFlight<'a> {
    fn enter(app: &'a App) -> InFlight<'a> {
        // AcqRel with the decrement in `drop`: the last one out (the
        // decrement that reads 1) sees every earlier call's increment and
        // wakes the drain.
        app.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(app)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Pairs with the AcqRel increment in `enter`.
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_counts_under_its_own_label() {
        let cases = [
            (CallError::UnknownTool("x".into()), "unknown_tool"),
            (
                CallError::Unavailable {
                    tool: "t".into(),
                    reason: "r".into(),
                },
                "unavailable",
            ),
            (CallError::InvalidInput("i".into()), "invalid_input"),
            (CallError::Rejected(RejectReason::Full), "full"),
            (CallError::Rejected(RejectReason::Shed), "shed"),
            (
                CallError::Rejected(RejectReason::InflightLimit),
                "inflight_limit",
            ),
            (
                CallError::Rejected(RejectReason::ShuttingDown),
                "shutting_down",
            ),
            (CallError::ShuttingDown, "shutting_down"),
            (CallError::Tool("e".into()), "error"),
            (CallError::Timeout("t".into()), "timeout"),
            (CallError::Cancelled, "cancelled"),
            (CallError::Internal("i".into()), "internal"),
        ];
        for (e, label) in cases {
            assert_eq!(e.label(), label, "{e:?}");
        }
        for r in RejectReason::ALL {
            assert_eq!(CallError::Rejected(r).label(), r.as_str());
        }
    }

    #[test]
    fn counters_name_their_tools_and_skip_zeroes() {
        let names = ToolTable::default();
        let echo = names.intern("echo");
        let sleep = names.intern("sleep");
        let c = ToolCounters::default();
        c.add(sleep, 0);
        c.add(sleep, 0);
        c.add(echo, CallError::Cancelled.index());
        c.unknown.fetch_add(1, Ordering::Relaxed);
        let got: Vec<(String, &str, u64)> = c
            .snapshot(&names)
            .into_iter()
            .map(|(t, r, n)| (t.to_string(), r, n))
            .collect();
        assert_eq!(
            got,
            [
                ("(unknown)".to_string(), "unknown_tool", 1),
                ("echo".to_string(), "cancelled", 1),
                ("sleep".to_string(), "ok", 2),
            ]
        );
    }
}
