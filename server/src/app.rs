//! The served engine: one call path for REST, MCP and the CLI, per-tool
//! accounting, cached readiness and the shutdown sequence.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use toolplane_core::{Engine, Injector, Metrics, Payload, Priority, Report, ToolId, ToolTable};
use toolplane_pool::{LoadState, PerCall, Registry, ToolEntry};

use crate::clients::{Client, ClientStats, Directory};
use crate::config::Settings;
pub use crate::error::{CallError, CallResult};

/// How often readiness is recomputed at most.
pub const READY_EVERY: Duration = Duration::from_millis(100);

/// A call's answer: the output, and how it reads (from the version of the
/// tool that answered, not a later lookup that a reload may have changed).
#[derive(Debug)]
pub struct Answer {
    /// The tool's output, checked against its `output_schema`.
    pub output: Payload,
    /// How it reads.
    pub form: toolplane_pool::kind::OutputForm,
}

/// One call.
#[derive(Debug, Clone)]
pub struct ToolCall<'a> {
    /// The tool.
    pub tool: &'a str,
    /// Its JSON input.
    pub input: &'a [u8],
    /// The ordering key: calls with the same key run in order.
    pub key: Option<u64>,
    /// Low-priority calls are shed first under load.
    pub priority: Priority,
    /// Where the call's progress goes, when someone watches it.
    pub progress: Option<toolplane_pool::progress::ProgressSink>,
    /// Who calls, when the server has `[[clients]]`: its scope, rates and
    /// slots apply (`None`: the local user, or a server without clients).
    pub client: Option<Arc<Client>>,
    /// Its id, as the audit log and the answer's `x-toolplane-call-id` name it.
    pub id: CallId,
    /// Who calls when no client does: `anonymous` over HTTP, `local`
    /// over stdio and the CLI (as the audit log names them).
    pub origin: &'static str,
    /// The caller's W3C trace context, if it sent one.
    pub trace: Option<crate::trace::Parent>,
    /// Where it came in, as its span says (filled in when traced).
    pub front: crate::otel::Front,
}

/// A call's id: 64 random bits drawn when the process starts and a
/// counter, so ids differ across restarts and nodes; 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallId(pub u128);

impl CallId {
    /// The next id of this process.
    pub fn next() -> CallId {
        use std::sync::OnceLock;
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(|| {
            getrandom::u64().unwrap_or_else(|_| {
                // No entropy source: the start time and the pid.
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                t ^ (u64::from(std::process::id()) << 32)
            })
        });
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        CallId((u128::from(prefix) << 64) | u128::from(n))
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl<'a> ToolCall<'a> {
    /// A normal-priority, unkeyed call.
    pub fn new(tool: &'a str, input: &'a [u8]) -> ToolCall<'a> {
        ToolCall {
            tool,
            input,
            key: None,
            priority: Priority::Normal,
            progress: None,
            client: None,
            id: CallId::next(),
            origin: "local",
            trace: None,
            front: crate::otel::Front::Local,
        }
    }
}

/// Counters of the calls made through this server, by tool and result:
/// one row of atomics per tool id, so a call adds to a counter under a
/// shared read lock and allocates nothing (a new tool id takes the write
/// lock once).
#[derive(Debug, Default)]
pub struct ToolCounters {
    by_tool: RwLock<Vec<[AtomicU64; CallResult::ALL.len()]>>,
    unknown: AtomicU64,
}

impl ToolCounters {
    fn add(&self, tool: ToolId, result: CallResult) {
        let (i, result) = (tool.0 as usize, result as usize);
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
            for (n, r) in row.iter().zip(CallResult::ALL) {
                let n = n.load(Ordering::Relaxed);
                if let (Some(name), true) = (&name, n > 0) {
                    v.push((Arc::clone(name), r.as_str(), n));
                }
            }
        }
        let unknown = self.unknown.load(Ordering::Relaxed);
        if unknown > 0 {
            v.push((
                Arc::from("(unknown)"),
                CallResult::UnknownTool.as_str(),
                unknown,
            ));
        }
        v.sort();
        v
    }
}

/// Adds one call to [`ToolCounters`] when dropped.
struct Count<'a> {
    counters: &'a ToolCounters,
    tool: ToolId,
    name: &'a str,
    started: Instant,
    result: CallResult,
    client: Option<&'a ClientStats>,
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.counters.add(self.tool, self.result);
        if let Some(c) = self.client {
            c.finish(self.result, self.started.elapsed());
        }
        if self.result == CallResult::Abandoned {
            tracing::debug!(
                tool = self.name,
                result = self.result.as_str(),
                latency_us = self.started.elapsed().as_micros() as u64,
                "call abandoned: its caller went away"
            );
        }
    }
}

/// How long a call of this tool may run at most (its limit, and a
/// process's start).
fn tool_timeout(m: &toolplane_pool::manifest::Manifest) -> Duration {
    use toolplane_pool::manifest::RuntimeManifest;
    match &m.runtime {
        RuntimeManifest::Wasi(w) => w.limits.timeout,
        RuntimeManifest::Process(p) => p.limits.timeout + p.limits.startup_timeout,
        RuntimeManifest::Remote(r) => r.limits.timeout + r.limits.startup_timeout,
        _ => Duration::from_secs(60),
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
        LoadState::Down(why) => format!("failed: {why}"),
    }
}

/// The last readiness verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Serving; what is wrong with single tools (down, or failed to load),
    /// if anything: readiness is about the server, and a client that calls
    /// a failing tool gets that tool's error.
    Ready(String),
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
    connections: Arc<crate::connections::Connections>,
    sessions: Arc<crate::mcp::front::Sessions>,
    clients: Option<Arc<Directory>>,
    oauth: Option<Arc<crate::oauth::Verifier>>,
    /// Failed calls are logged at most [`FAILED_LINES`] a second: a caller
    /// can fail calls as fast as it sends them.
    failed_log: crate::budget::LogBudget,
    /// `[audit]`: every call's record.
    audit: Option<Arc<toolplane_audit::AuditLog>>,
    /// Calls whose record the ring could not take (`async`), at most so
    /// many lines a second.
    audit_log: crate::budget::LogBudget,
    /// OpenTelemetry traces, when the environment asks for them.
    tracing: Option<Arc<crate::otel::Tracing>>,
    /// The engine's clock, which stamps a call's phases.
    clock: quanta::Clock,
    /// `[cluster]`: calls go through NATS JetStream, to run on any node.
    cluster: Option<Arc<toolplane_cluster::Cluster>>,
}

/// Lines a second at most for failed calls (each one is counted in
/// `/metrics` all the same).
pub const FAILED_LINES: u32 = 20;

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
        let clock = engine.clock().clone();
        App {
            tracing: None,
            cluster: None,
            clock,
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
            failed_log: crate::budget::LogBudget::new(FAILED_LINES),
            audit: None,
            audit_log: crate::budget::LogBudget::new(1),
            started: Instant::now(),
            connections: Arc::default(),
            sessions: crate::mcp::front::Sessions::new(
                settings.server.max_sessions,
                settings.server.session_idle,
            ),
            // With [oauth] and no list, the list is empty: OAuth clients
            // are counted in it all the same.
            clients: (settings.clients.is_some() || settings.oauth.is_some()).then(|| {
                Arc::new(Directory::new(
                    settings.clients.as_deref().unwrap_or_default(),
                ))
            }),
            oauth: None,
            settings,
        }
    }

    /// Serves as a node of `cluster`: calls taken here run on any node.
    pub fn with_cluster(mut self, cluster: Arc<toolplane_cluster::Cluster>) -> App {
        self.cluster = Some(cluster);
        self
    }

    /// The cluster this server is a node of.
    pub fn cluster(&self) -> Option<&Arc<toolplane_cluster::Cluster>> {
        self.cluster.as_ref()
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
    pub fn connections(&self) -> &Arc<crate::connections::Connections> {
        &self.connections
    }

    /// The MCP sessions of streamable HTTP.
    pub fn sessions(&self) -> &Arc<crate::mcp::front::Sessions> {
        &self.sessions
    }

    /// The `[[clients]]` served, when the configuration has them.
    pub fn clients(&self) -> Option<&Arc<Directory>> {
        self.clients.as_ref()
    }

    /// The OAuth resource server, when `[oauth]` is set.
    pub fn oauth(&self) -> Option<&Arc<crate::oauth::Verifier>> {
        self.oauth.as_ref()
    }

    /// Serves `[oauth]` with `verifier` (before the app is shared).
    pub fn with_oauth(mut self, verifier: Arc<crate::oauth::Verifier>) -> App {
        self.oauth = Some(verifier);
        self
    }

    /// Writes every call's record to `log` (before the app is shared).
    pub fn with_audit(mut self, log: Arc<toolplane_audit::AuditLog>) -> App {
        self.audit = Some(log);
        self
    }

    /// Traces every call with `tracing` (before the app is shared).
    pub fn with_tracing(mut self, tracing: Arc<crate::otel::Tracing>) -> App {
        self.tracing = Some(tracing);
        self
    }

    /// The tracer, when the environment turned traces on.
    pub fn tracing(&self) -> Option<&Arc<crate::otel::Tracing>> {
        self.tracing.as_ref()
    }

    /// The audit log, when `[audit]` is set.
    pub fn audit(&self) -> Option<&Arc<toolplane_audit::AuditLog>> {
        self.audit.as_ref()
    }

    /// A call's audit record, but for its outcome, latency and output.
    fn audit_record(
        &self,
        log: &toolplane_audit::AuditLog,
        entry: &ToolEntry,
        call: &ToolCall<'_>,
        client: Option<&Client>,
        trace: Option<String>,
    ) -> toolplane_audit::Record {
        let (name, subject) = match client {
            None => (Arc::from(call.origin), None),
            Some(c) => (
                Arc::clone(c.name()),
                c.is_oauth()
                    .then(|| c.owner().split_once('\0').map(|(_, sub)| sub.to_string()))
                    .flatten(),
            ),
        };
        toolplane_audit::Record {
            time_us: toolplane_audit::Record::micros(std::time::SystemTime::now()),
            call: call.id.to_string(),
            client: name,
            tool: Arc::from(entry.manifest.name.as_str()),
            key: call.key,
            outcome: String::new(),
            latency_us: 0,
            input_sha256: sha256_hex(call.input),
            input_bytes: call.input.len() as u64,
            output_bytes: 0,
            trace,
            node: Arc::clone(&log.options().node),
            ran_on: None,
            subject,
            arguments: log
                .options()
                .arguments
                .then(|| String::from_utf8(call.input.to_vec()).ok())
                .flatten(),
            arguments_omitted: false,
        }
    }

    /// A call that runs without its record (async: the ring stayed full,
    /// or the log is closing): counted by the log, said at most once a
    /// second.
    fn audit_dropped(&self, tool: &str, e: &CallError) {
        if let Some(n) = self.audit_log.take() {
            let not_logged = (n > 0).then_some(n);
            tracing::warn!(tool, error = %e, not_logged, "a call runs without its audit record");
        }
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
    pub async fn call(&self, call: ToolCall<'_>) -> Result<Answer, CallError> {
        let client = call.client.clone();
        let Some(entry) = self.registry.resolve(call.tool).await else {
            self.counters.unknown.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = &client {
                c.stats().finish(CallResult::UnknownTool, Duration::ZERO);
            }
            let e = CallError::UnknownTool(call.tool.to_string());
            if let Some(t) = &self.tracing {
                t.start(&call.front, None, call.trace.as_ref()).end(
                    Err(&e),
                    CallResult::UnknownTool,
                    None,
                );
            }
            if let Some(n) = self.failed_log.take() {
                let not_logged = (n > 0).then_some(n);
                tracing::info!(tool = call.tool, result = "unknown_tool", error = %e, not_logged, "call failed");
            }
            return Err(e);
        };
        // Counts the call even when its future is dropped unfinished (an
        // HTTP client that disconnects, an MCP request cancelled), which
        // drops the engine's ticket and so cancels the event too.
        let mut count = Count {
            counters: &self.counters,
            tool: entry.id,
            // Its canonical name, whichever name the caller used.
            name: &entry.manifest.name,
            started: Instant::now(),
            result: CallResult::Abandoned,
            client: client.as_deref().map(|c| &**c.stats()),
        };
        // Its span, a child of the caller's; the trace its record names and
        // its upstream gets: the span's (the caller's, when not traced).
        let span = self
            .tracing
            .as_deref()
            .map(|t| t.start(&call.front, Some(&entry.manifest.name), call.trace.as_ref()));
        // Sampled, the call's span; not, the caller's context (an unsampled
        // span of ours names a trace nobody will find); without tracing,
        // the caller's, passed on as it came.
        let on = match &span {
            Some(s) if s.is_sampled() && s.context().is_valid() => Some(s.context()),
            Some(s) if s.context().is_valid() && call.trace.is_some() => Some(s.context()),
            _ => call.trace.as_ref(),
        };
        let trace_id = self
            .audit
            .is_some()
            .then(|| on.map(|t| t.trace_id().to_string()))
            .flatten();
        // Only an MCP upstream (a process or remote tool speaking MCP)
        // passes a trace on; a WASI tool never reads one, so none is
        // formatted for it.
        let passed = (!matches!(
            entry.manifest.runtime,
            toolplane_pool::manifest::RuntimeManifest::Wasi(_)
        ))
        .then_some(on)
        .flatten()
        .map(|t| Arc::new(crate::trace::context_of(t)));
        let mut phases = None;
        let sampled = span.as_ref().is_some_and(crate::otel::CallSpan::is_sampled);
        // Its audit record, but for the outcome: a place in the log's ring
        // held before the call runs, the record pushed when the call ends,
        // or when its caller goes away first (`abandoned`). The drain waits
        // for it (the call is in flight until its record is pushed).
        let _held = self.audit.is_some().then(|| InFlight::enter(self));
        let mut audit = match self.audit.as_deref() {
            None => None,
            Some(log) => {
                let before_answer =
                    log.options().durability == toolplane_audit::Durability::BeforeAnswer;
                let failing = before_answer.then(|| log.failing()).flatten();
                let slot = match failing {
                    // No call runs that could not be answered.
                    Some(e) => Err(CallError::Audit(e)),
                    None => log
                        .reserve()
                        .await
                        .map_err(|e| CallError::Audit(Arc::new(e))),
                };
                match slot {
                    Err(e) if before_answer => {
                        count.result = CallResult::AuditUnavailable;
                        if let Some(s) = span {
                            s.end(Err(&e), count.result, None);
                        }
                        return Err(e);
                    }
                    Err(e) => {
                        self.audit_dropped(count.name, &e);
                        None
                    }
                    Ok(None) => None,
                    Ok(Some(slot)) => Some(Pending {
                        slot: Some(slot),
                        started: count.started,
                        record: Some(self.audit_record(
                            log,
                            &entry,
                            &call,
                            client.as_deref(),
                            trace_id,
                        )),
                    }),
                }
            }
        };
        // The node that ran the call, in a cluster.
        let mut ran_on = None;
        let result = match &client {
            // Scope and rates before anything else (a refused call costs
            // no slot and no engine work), then a slot, held to the end.
            Some(c) => match c.admit(&entry.manifest.name) {
                Err(r) => Err(r.into()),
                Ok(()) => match c.slot().await {
                    Err(r) => Err(r.into()),
                    Ok(_slot) => {
                        self.run(
                            &entry,
                            call,
                            passed,
                            sampled.then_some(&mut phases),
                            &mut ran_on,
                        )
                        .await
                    }
                },
            },
            None => {
                self.run(
                    &entry,
                    call,
                    passed,
                    sampled.then_some(&mut phases),
                    &mut ran_on,
                )
                .await
            }
        };
        count.result = result
            .as_ref()
            .map_or_else(CallError::result, |_| CallResult::Ok);
        let latency_us = count.started.elapsed().as_micros() as u64;
        let mut result = result;
        if let Some(p) = &mut audit
            && let (Some(slot), Some(mut record)) = (p.slot.take(), p.record.take())
        {
            record.outcome = count.result.as_str().to_string();
            record.latency_us = latency_us;
            record.output_bytes = result.as_ref().map_or(0, |a| a.output.len() as u64);
            record.ran_on = ran_on.map(Arc::from);
            let ticket = slot.push(record);
            if let Some(log) = self.audit.as_deref()
                && log.options().durability == toolplane_audit::Durability::BeforeAnswer
                && let Err(e) = log.durable(ticket).await
            {
                // The call ran; its answer waits for a record the disk
                // does not take. Its record stays queued and is written
                // when the disk allows (with the call's own outcome).
                count.result = CallResult::AuditUnavailable;
                result = Err(CallError::Audit(Arc::new(e)));
            }
        }
        if let Some(s) = span {
            s.end(result.as_ref().map(|_| ()), count.result, phases);
        }
        // One line per call: at debug, and at info when it failed (at most
        // FAILED_LINES a second, the next line naming those left out).
        let who = client.as_deref().map(|c| &**c.name());
        match &result {
            Ok(_) => tracing::debug!(
                tool = count.name,
                client = who,
                result = "ok",
                latency_us,
                "call"
            ),
            Err(e) => {
                if let Some(n) = self.failed_log.take() {
                    let not_logged = (n > 0).then_some(n);
                    tracing::info!(
                        tool = count.name,
                        client = who,
                        result = count.result.as_str(),
                        latency_us,
                        error = %e,
                        not_logged,
                        "call failed"
                    );
                }
            }
        }
        result
    }

    /// Runs a call of a resolved tool here, or on the cluster when this
    /// server is a node of one.
    async fn run(
        &self,
        entry: &ToolEntry,
        call: ToolCall<'_>,
        trace: Option<Arc<toolplane_pool::TraceContext>>,
        phases: Option<&mut Option<crate::otel::Phases>>,
        ran_on: &mut Option<String>,
    ) -> Result<Answer, CallError> {
        match &self.cluster {
            Some(c) => self.call_remote(c, entry, call, trace, ran_on).await,
            None => self.call_entry(entry, call, trace, phases).await,
        }
    }

    /// Publishes a call to the cluster and waits for its one answer, from
    /// whichever node ran it (docs/cluster.md, "The call path").
    async fn call_remote(
        &self,
        cluster: &toolplane_cluster::Cluster,
        entry: &ToolEntry,
        call: ToolCall<'_>,
        trace: Option<Arc<toolplane_pool::TraceContext>>,
        ran_on: &mut Option<String>,
    ) -> Result<Answer, CallError> {
        if self.is_draining() {
            return Err(CallError::ShuttingDown);
        }
        let _guard = InFlight::enter(self);
        if self.is_draining() {
            return Err(CallError::ShuttingDown);
        }
        let (start_by, wait) =
            crate::cluster::waits(cluster.options(), tool_timeout(&entry.manifest));
        let id = call.id.to_string();
        let client = call.client.as_deref().map(|c| &**c.name());
        let (traceparent, tracestate) = match trace.as_deref() {
            Some(t) => (Some(t.traceparent.clone()), t.tracestate.clone()),
            None => (None, None),
        };
        let outcome = cluster
            .call(toolplane_cluster::Request {
                call: &id,
                tool: &entry.manifest.name,
                key: call.key,
                input: call.input,
                client: client.unwrap_or(call.origin),
                wait,
                start_by,
                traceparent,
                tracestate,
            })
            .await
            .map_err(|e| CallError::Cluster(Arc::new(e)))?;
        *ran_on = Some(outcome.node.clone());
        if outcome.result == "ok" {
            let form = match entry.wait().await {
                Ok(t) => t.output_form(),
                Err(reason) => {
                    return Err(CallError::Unavailable {
                        tool: entry.manifest.name.clone(),
                        reason: Arc::clone(reason),
                    });
                }
            };
            return Ok(Answer {
                output: Payload::from_slice(&outcome.output),
                form,
            });
        }
        Err(CallError::Remote {
            result: CallResult::from_label(&outcome.result).unwrap_or(CallResult::Internal),
            node: outcome.node,
            message: outcome.message,
        })
    }

    /// Runs a call of a resolved tool on this node's engine: `trace` goes
    /// with it to the tool; `phases`, when given, gets when the engine
    /// queued, ran and answered it.
    pub(crate) async fn call_entry(
        &self,
        entry: &ToolEntry,
        call: ToolCall<'_>,
        trace: Option<Arc<toolplane_pool::TraceContext>>,
        phases: Option<&mut Option<crate::otel::Phases>>,
    ) -> Result<Answer, CallError> {
        if self.is_draining() {
            return Err(CallError::ShuttingDown);
        }
        let tool = match entry.wait().await {
            Ok(t) => t.clone(),
            Err(reason) => {
                return Err(CallError::Unavailable {
                    tool: entry.manifest.name.clone(),
                    reason: Arc::clone(reason),
                });
            }
        };
        // Checked here, before admission (a bad call costs no engine slot);
        // the worker that runs this version does not check it again.
        let meta = toolplane_pool::CallMeta {
            progress: call.progress,
            trace,
        };
        let (event, per_call) = PerCall::checked_event(entry.id, &tool, call.input, meta)
            .map_err(CallError::InvalidInput)?;
        let mut event = event.with_priority(call.priority);
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
            Err(toolplane_core::InjectError::Rejected(r)) => {
                return Err(CallError::rejected(r.reason()));
            }
            Err(toolplane_core::InjectError::Lost(l)) => return Err(l.into()),
        };
        if let Some(phases) = phases {
            *phases = Some(crate::otel::Phases::of(
                &completion.times,
                completion.worker,
                &self.clock,
            ));
        }
        // The output was checked by the registry's handler, as for every
        // caller; its form is that of the version the worker ran (a reload
        // since admission may have replaced the one checked here).
        let output = CallError::from_outcome(&entry.manifest.name, completion.outcome)?;
        Ok(Answer {
            output,
            form: per_call.form().unwrap_or_else(|| tool.output_form()),
        })
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
        if let Some(c) = &self.cluster
            && !c.connected()
        {
            return Readiness::NotReady(format!(
                "the connection to NATS ({}) is down; the cluster takes no call",
                c.options().nats_shown()
            ));
        }
        if let Some(log) = &self.audit
            && log.options().durability == toolplane_audit::Durability::BeforeAnswer
            && let Some(e) = log.failing()
        {
            return Readiness::NotReady(format!("calls wait for their audit records: {e}"));
        }
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
        // Tools that are down or failed to load do not make the server
        // unready (its other tools serve, whatever their kind): they are
        // named.
        let mut wrong = Vec::new();
        for e in self.registry.snapshot().iter() {
            match e.state() {
                LoadState::Down(why) => {
                    wrong.push(format!("tool {} is failing: {why}", e.manifest.name));
                }
                LoadState::Failed(why) => {
                    wrong.push(format!("tool {} failed to load: {why}", e.manifest.name));
                }
                LoadState::Loading | LoadState::Ready => {}
            }
        }
        Readiness::Ready(wrong.join("; "))
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
                LoadState::Failed(_) | LoadState::Down(_) => n[2].1 += 1,
            }
        }
        n
    }
}

/// A call's audit record until the call ends, and the place held for it
/// in the log's ring; dropped before that (its caller went away), it is
/// pushed as `abandoned` (the place is held: it never waits).
struct Pending<'a> {
    slot: Option<toolplane_audit::log::Slot<'a>>,
    started: Instant,
    record: Option<toolplane_audit::Record>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let (Some(slot), Some(mut r)) = (self.slot.take(), self.record.take()) {
            r.outcome = CallResult::Abandoned.as_str().to_string();
            r.latency_us = self.started.elapsed().as_micros() as u64;
            slot.push(r);
        }
    }
}

/// Lower-case hex of the SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in sha2::Sha256::digest(bytes) {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 15)]));
    }
    hex
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
    fn counters_name_their_tools_and_skip_zeroes() {
        let names = ToolTable::default();
        let echo = names.intern("echo");
        let sleep = names.intern("sleep");
        let c = ToolCounters::default();
        c.add(sleep, CallResult::Ok);
        c.add(sleep, CallResult::Ok);
        c.add(echo, CallError::Cancelled.result());
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
