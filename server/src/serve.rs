//! Starting the engine with its tools, and the commands that use it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;
use toolplane_core::Engine;
use toolplane_pool::{LoadState, PoolConfig, Registry, Runtime, ToolHandler};

use crate::app::App;
use crate::config::Settings;
use crate::error::CallError;
use crate::listen::{HttpThreads, Limits};
use crate::mcp::Mcp;

/// After the drain, how long HTTP goes on answering (503, `Connection:
/// close`) while connections are open, before they are closed.
const LINGER: Duration = Duration::from_millis(250);

/// How long start-up waits for the tools to load before it reports them.
const LOAD_WAIT: Duration = Duration::from_secs(300);

/// Any error, as a [`Failure`]'s source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failure that ends a command, with the exit code it deserves: 2 when
/// the command could not start (usage, configuration, start-up), 1 when it
/// ran and the answer is "no".
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The configuration file is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The engine's settings (file or environment) are wrong.
    #[error(transparent)]
    EngineConfig(#[from] toolplane_core::ConfigError),
    /// A flag, argument or limit is wrong; the message names it.
    #[error("{0}")]
    Usage(String),
    /// Something the command needs could not start.
    #[error("{what}: {source}")]
    Start {
        /// What could not start.
        what: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// Tools did not finish loading in time.
    #[error("{what} did not load within {} s", .within.as_secs())]
    NotLoaded {
        /// Which tools.
        what: &'static str,
        /// The wait.
        within: Duration,
    },
    /// No tool has this name.
    #[error("unknown tool {tool:?}; the tools are: {}", .known.join(", "))]
    UnknownTool {
        /// The name asked for.
        tool: String,
        /// The tools there are.
        known: Vec<String>,
    },
    /// The call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// `check` found problems, each naming its file.
    #[error("{} problems:\n  {}", .0.len(), .0.join("\n  "))]
    Problems(Vec<String>),
    /// `import` could not read its file or write the manifests.
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
    /// The audit log cannot be read.
    #[error(transparent)]
    Audit(#[from] toolplane_audit::AuditError),
    /// Reading input or writing output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Failure {
    /// The process exit code.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Config(_)
            | Failure::EngineConfig(_)
            | Failure::Usage(_)
            | Failure::Start { .. }
            | Failure::NotLoaded { .. } => 2,
            Failure::UnknownTool { .. }
            | Failure::Call(_)
            | Failure::Problems(_)
            | Failure::Import(_)
            | Failure::Audit(_)
            | Failure::Io { .. } => 1,
        }
    }

    /// [`Failure::Start`] of `what`, for `map_err`.
    pub fn start<E: Into<BoxError>>(what: impl Into<String>) -> impl FnOnce(E) -> Failure {
        let what = what.into();
        move |e| Failure::Start {
            what,
            source: e.into(),
        }
    }

    /// [`Failure::Io`] while doing `what`, for `map_err`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Failure {
        let what = what.into();
        move |source| Failure::Io { what, source }
    }
}

/// The registry of `settings` (built-ins plus the tools directory), loaded.
///
/// # Errors
///
/// The data directory cannot be created, or the pool or registry cannot
/// start.
pub fn registry(settings: &Settings, watch: bool) -> Result<(Registry, PathBuf), Failure> {
    let (registry, data) = start_registry(settings, watch, false)?;
    if !registry.wait_loaded(LOAD_WAIT) {
        return Err(Failure::NotLoaded {
            what: "the tools",
            within: LOAD_WAIT,
        });
    }
    Ok((registry, data))
}

/// The registry, its tools listed and loading in the background (or, when
/// `on_demand`, each loaded at its first call).
fn start_registry(
    settings: &Settings,
    watch: bool,
    on_demand: bool,
) -> Result<(Registry, PathBuf), Failure> {
    let data = settings
        .data
        .clone()
        .unwrap_or_else(toolplane_pool::default_data_dir);
    std::fs::create_dir_all(&data).map_err(Failure::start(format!(
        "creating the data directory {}",
        data.display()
    )))?;
    let mut pool = PoolConfig::for_engine(&settings.engine);
    let mut site = toolplane_pool::SiteConfig {
        data_dir: Some(data.clone()),
        ..toolplane_pool::SiteConfig::for_engine(&settings.engine)
    };
    if let Some(n) = settings.pool_instances {
        pool.instances = n;
    }
    if let Some(n) = settings.pool_warm_slots {
        pool.max_unused_warm_slots = n;
    }
    if let Some(n) = settings.pool_max_module_size {
        pool.max_module_size = n;
    }
    if let Some(n) = settings.pool_data_dir_limit {
        site.data_dir_limit = n;
    }
    if let Some(on) = settings.pool_fs_inline {
        pool.fs_inline = on;
    }
    // A one-shot process (`toolplane call`) runs one call: an optimizing
    // compile would cost more than it saves (PERF.md, cold start).
    pool.optimize = !on_demand;
    let runtime = Runtime::new(pool).map_err(Failure::start("the WASI pool"))?;
    let mut b = Registry::builder(runtime)
        .site(site)
        .builtins(settings.builtins)
        .names(settings.names.clone())
        .watch(watch)
        .on_demand(on_demand);
    if let Some(dir) = &settings.tools {
        b = b.dir(dir);
    }
    let registry = b.build().map_err(Failure::start("the tool registry"))?;
    Ok((registry, data))
}

/// Waits until the built-in tools are loaded (bounded: their modules are
/// ours); the tools directory's keep loading while the server serves.
fn wait_builtins(registry: &Registry) -> Result<(), Failure> {
    let deadline = std::time::Instant::now() + LOAD_WAIT;
    loop {
        let loading = registry.snapshot().iter().any(|e| {
            e.origin == toolplane_pool::Origin::Builtin && e.state() == LoadState::Loading
        });
        if !loading {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Failure::NotLoaded {
                what: "the built-in tools",
                within: LOAD_WAIT,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Logs every problem of the registry's files: those found so far, and
/// each later one (a reload that failed, a tool whose module did not
/// load) as it happens.
fn log_problems(registry: &Registry) {
    let events = registry.subscribe();
    for p in registry.problems() {
        tracing::warn!("{p}");
    }
    std::thread::Builder::new()
        .name("toolplane-problems".into())
        .spawn(move || {
            while let Ok(ev) = events.recv() {
                if let toolplane_pool::RegistryEvent::Failed { name, path, reason } = ev {
                    match name {
                        Some(n) => tracing::warn!("{}: tool {n}: {reason}", path.display()),
                        None => tracing::warn!("{}: {reason}", path.display()),
                    }
                }
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::warn!("cannot start the problem log: {e}"));
}

/// Files the process may keep open beyond its HTTP connections (tool
/// modules, the data directory, the module cache, pipes, the listener).
const SPARE_FILES: u64 = 512;

/// Raises the soft open-file limit so that `connections` fit beside
/// [`SPARE_FILES`], up to the hard limit.
///
/// # Errors
///
/// The hard limit is too low for them: the message names both limits.
fn open_files_for(connections: usize) -> Result<(), Failure> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let need = connections as u64 + SPARE_FILES;
    let lim = getrlimit(Resource::Nofile);
    let soft = lim.current.unwrap_or(u64::MAX);
    if soft >= need {
        return Ok(());
    }
    let hard = lim.maximum.unwrap_or(u64::MAX);
    if hard < need {
        return Err(Failure::Usage(format!(
            "server.max_connections + server.reserve_connections = {connections} need {need} open files, \
             and the hard limit (ulimit -Hn) is {hard}: lower them or raise the limit"
        )));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(need),
            maximum: lim.maximum,
        },
    )
    .map_err(Failure::start(format!(
        "raising the open-file limit to {need}"
    )))
}

/// How `serve` was asked to listen.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Serve HTTP (REST, health, metrics, MCP at /mcp).
    pub http: Option<SocketAddr>,
    /// Serve MCP on stdin/stdout.
    pub stdio: bool,
}

/// Binds `addr` and starts the HTTP threads behind the edge's policy.
async fn start_http(
    app: &Arc<App>,
    mcp: &Mcp,
    addr: SocketAddr,
    mcp_stop: &CancellationToken,
    http_stop: &CancellationToken,
) -> Result<HttpThreads, Failure> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(Failure::start(format!("listening on {addr}")))?;
    let local = listener
        .local_addr()
        .map_err(Failure::start(format!("listening on {addr}")))?;
    if !local.ip().is_loopback() && app.settings().server.token.is_none() && app.clients().is_none()
    {
        tracing::warn!(
            "listening on {local}, beyond loopback, with no token: anyone who can reach it can call every tool (set --token or TOOLPLANE_TOKEN)"
        );
    }
    let s = &app.settings().server;
    let limits = Limits {
        max_connections: s.max_connections,
        reserve_connections: s.reserve_connections,
        header_timeout: s.header_timeout,
    };
    open_files_for(limits.max_connections + limits.reserve_connections)?;
    let policy = crate::http::Policy::new(s, local);
    let router = crate::http::router(Arc::clone(app), mcp.clone(), policy, mcp_stop.clone());
    app.sessions().spawn_sweeper(mcp_stop.clone());
    let threads = s.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let task = HttpThreads::start(
        listener,
        router,
        threads,
        limits,
        Arc::clone(app.connections()),
        http_stop,
    )
    .map_err(Failure::start(format!("starting {threads} HTTP threads")))?;
    tracing::info!(
        "listening on http://{local} (MCP at http://{local}/mcp), {threads} HTTP threads"
    );
    Ok(task)
}

/// The final accounting, logged as the server stops.
fn log_accounting(report: Option<&toolplane_core::Report>) {
    match report {
        Some(r) => tracing::info!(
            "stopped: accepted {}, {}; rejected {}; books {}",
            r.accepted,
            toolplane_core::OutcomeKind::ALL
                .iter()
                .map(|k| format!("{} {}", k.as_str(), r.outcomes.get(*k)))
                .collect::<Vec<_>>()
                .join(", "),
            r.rejected.total(),
            if r.is_balanced() {
                "balanced"
            } else {
                "NOT balanced"
            },
        ),
        None => tracing::info!("stopped"),
    }
}

/// Runs the server until SIGINT/SIGTERM (or, when MCP on stdio is all it
/// serves, until stdin closes), then drains and reports.
///
/// # Errors
///
/// Start-up failures (exit 2).
/// `config`, the file the settings came from, is read again for its
/// `[[clients]]` when it changes and on SIGHUP.
pub fn serve(settings: Settings, listen: Listen, config: Option<PathBuf>) -> Result<(), Failure> {
    // The control runtime: start-up, signals, the acceptor, MCP on stdio
    // and shutdown. HTTP connections are served on their own threads
    // (`crate::listen`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::start("the control runtime"))?;
    let served = rt.block_on(serve_async(settings, listen, config));
    // Not a plain drop, which waits for every blocking thread: tokio reads
    // stdin on one, blocked in read(2) until the client closes its end, so
    // a client that keeps stdin open after SIGTERM would hold the exit
    // forever. What must finish has (the drain, the audit log closed, the
    // last spans exported, every process stopped).
    rt.shutdown_background();
    served
}

async fn serve_async(
    settings: Settings,
    listen: Listen,
    config: Option<PathBuf>,
) -> Result<(), Failure> {
    let (registry, data) = start_registry(&settings, true, false)?;
    log_problems(&registry);
    wait_builtins(&registry)?;
    let engine = Engine::builder()
        .config(settings.engine.clone())
        .tools(registry.tool_table())
        .build(ToolHandler::new(registry.clone()))
        .map_err(Failure::start("the engine"))?;
    let workers = engine.workers();
    let tools = tools_count(&registry.snapshot());
    let source = match &settings.tools {
        Some(d) => format!("built-in tools and {}", d.display()),
        None => "built-in tools".to_string(),
    };
    let drain = settings.server.drain;
    let oauth = match &settings.oauth {
        Some(spec) => {
            let v = Arc::new(
                crate::oauth::Verifier::new(spec.clone())
                    .map_err(Failure::start("the OAuth resource server"))?,
            );
            // Tokens are refused until the keys are read; a token naming
            // a key re-reads them (at most every 30 s), as does the timer.
            match v.refresh().await {
                Ok(n) => tracing::info!(
                    "oauth: {n} keys read; access tokens for {} from {}",
                    spec.resource,
                    spec.authorization_servers.join(", ")
                ),
                Err(e) => {
                    tracing::warn!("oauth: {e}; access tokens are refused until the keys are read")
                }
            }
            Some(v)
        }
        None => None,
    };
    let audit = match &settings.audit {
        Some(o) => {
            // In a cluster a node has one name: its records carry it, as
            // the records of the calls it takes name it as `ran_on`.
            let mut o = o.clone();
            if let Some(c) = &settings.cluster {
                o.node = Arc::from(c.node.as_str());
            }
            let o = &o;
            let log = toolplane_audit::AuditLog::open(o.clone())
                .map_err(Failure::start("the audit log"))?;
            tracing::info!(
                "audit: every call recorded in {} ({}, batches of up to {} every {:?})",
                o.dir.display(),
                match o.durability {
                    toolplane_audit::Durability::Async => "async",
                    toolplane_audit::Durability::BeforeAnswer => "before the answer",
                },
                o.max_batch,
                o.max_delay
            );
            Some(Arc::new(log))
        }
        None => None,
    };
    // Traces, when the OTEL_* environment asks for them.
    let node = settings
        .audit
        .as_ref()
        .map_or_else(crate::audit::host_name, |o| o.node.to_string());
    let traces = crate::otel::Tracing::from_env(settings.engine.sample_every, &node)
        .map_err(Failure::start("OpenTelemetry traces"))?
        .map(Arc::new);
    if traces.is_some() {
        tracing::info!(
            "traces: exported over OTLP/HTTP to {}",
            crate::otel::endpoint_shown()
        );
    }
    // A node of a cluster: connected, the stream and consumers checked,
    // before anything is served (never a silent single-node fallback).
    let cluster = match &settings.cluster {
        Some(o) => {
            let c = toolplane_cluster::Cluster::connect(o.clone())
                .await
                .map_err(Failure::start("the cluster"))?;
            tracing::info!(
                "cluster: node {} on NATS {} ({} partitions, ack_wait {})",
                o.node,
                c.server(),
                o.partitions,
                humantime::format_duration(o.ack_wait)
            );
            Some(c)
        }
        None => None,
    };
    let mut app = App::new(engine, registry, settings);
    if let Some(c) = &cluster {
        app = app.with_cluster(Arc::clone(c));
    }
    if let Some(t) = &traces {
        app = app.with_tracing(Arc::clone(t));
    }
    if let Some(v) = &oauth {
        app = app.with_oauth(Arc::clone(v));
    }
    if let Some(log) = &audit {
        app = app.with_audit(Arc::clone(log));
    }
    let app = Arc::new(app);
    if let Some(c) = &cluster {
        c.serve(Arc::new(crate::runner::Runner::new(
            Arc::clone(&app),
            c.options().node.clone(),
        )));
    }
    let mcp = Mcp::new(Arc::clone(&app));
    tracing::info!(
        "version {}: {tools} ({source}), {workers} workers, data in {}",
        env!("CARGO_PKG_VERSION"),
        data.display()
    );

    if let Some(c) = app.clients() {
        tracing::info!(
            "{} clients, each with its own token, tools and limits ([[clients]])",
            c.list().clients().len()
        );
    }
    let mcp_stop = CancellationToken::new();
    let http_stop = CancellationToken::new();
    crate::reload::spawn(Arc::clone(&app), config, mcp_stop.clone())
        .map_err(Failure::start("reloading the clients"))?;
    if let Some(v) = &oauth {
        v.spawn_refresher(mcp_stop.clone());
    }
    let http_task = match listen.http {
        Some(addr) => Some(start_http(&app, &mcp, addr, &mcp_stop, &http_stop).await?),
        None => None,
    };
    let mut stdio = if listen.stdio {
        let service = mcp
            .clone()
            .serve(crate::mcp::stdio::stdio())
            .await
            .map_err(Failure::start("MCP on stdio"))?;
        tracing::info!("serving MCP on stdio");
        let ct = service.cancellation_token();
        // The service ends when stdin closes (or when cancelled).
        Some((ct, tokio::spawn(service.waiting()), false))
    } else {
        None
    };

    let stdio_only = listen.http.is_none();
    let cause = {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(Failure::start("installing the SIGTERM handler"))?;
        let stdio_closed = async {
            match &mut stdio {
                Some((_, done, finished)) if stdio_only => {
                    let _ = done.await;
                    *finished = true;
                }
                _ => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            () = stdio_closed => "stdin closed",
        }
    };
    tracing::info!(
        "{cause}: not ready, admission stopped, draining {} calls for up to {}",
        app.in_flight(),
        humantime::format_duration(drain)
    );
    // Through the drain HTTP goes on answering: calls with 503, every
    // answer with `Connection: close` (the edge), so clients move off
    // their keep-alive connections before those close.
    // This node pulls no more calls; those it holds finish in the drain
    // (or go back to the stream, for another node).
    if let Some(c) = &cluster {
        c.stop();
    }
    let report = app.shutdown(drain).await;
    // The open pulls ended (what they brought sent back), this node's
    // entry removed, and acks and answers flushed to NATS.
    if let Some(c) = &cluster
        && !c.close(Duration::from_secs(5)).await
    {
        tracing::warn!(
            "cluster: not every pull ended within 5s; what they hold is delivered again after ack_wait"
        );
    }
    // Every call's record written, then the file closed.
    if let Some(log) = &audit {
        let log = Arc::clone(log);
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
    }
    // The last spans exported.
    if let Some(t) = traces {
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    mcp_stop.cancel();
    if let Some((ct, done, finished)) = stdio {
        ct.cancel();
        if !finished {
            let _ = done.await;
        }
    }
    if let Some(mut t) = http_task {
        // Clients busy on keep-alive connections get a moment to be told
        // `Connection: close` with an answer, rather than have an idle
        // connection closed under a request they are sending.
        let linger = tokio::time::Instant::now() + LINGER.min(drain);
        while tokio::time::Instant::now() < linger && app.connections().open() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Connections already queued on the listener are answered, then
        // idle connections close and busy ones after their answer; open
        // streams get a moment to end.
        t.stop_accepting().await;
        http_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), t.finished()).await;
    }
    log_accounting(report.as_ref());
    close_processes(&app).await;
    Ok(())
}

/// After the drain: each process tool's processes stop, and its accounting
/// is logged.
async fn close_processes(app: &App) {
    let snapshot = app.registry().snapshot();
    for e in snapshot.iter().filter(|e| e.set.is_none()) {
        let Some(Ok(t)) = e.loaded() else {
            continue;
        };
        let Some(s) = t.stats() else {
            continue;
        };
        let stopped = t.close().await;
        let s = t.stats().unwrap_or(s);
        tracing::info!(
            "process tool {}: {} calls served, {} refused (queue full), {} restarts{}; {stopped} processes stopped",
            e.manifest.name,
            s.service.count,
            s.refused,
            s.restarts,
            s.down
                .map_or_else(String::new, |why| format!(", down: {why}")),
        );
    }
}

/// `toolplane tools list`.
///
/// # Errors
///
/// Start-up failures.
pub fn tools_list(settings: &Settings, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let (registry, _) = registry(settings, false)?;
    let w = |e: std::io::Error| Failure::io("writing the list")(e);
    let mut rows = Vec::new();
    for e in registry.snapshot().iter() {
        let m = &e.manifest;
        let state = crate::app::state_text(&e.state());
        let mut row = serde_json::json!({
            "name": m.name,
            "title": m.title,
            "description": m.description,
            "annotations": crate::app::annotations_json(&m.annotations),
            "output_schema": m.output_schema,
            "state": state,
        });
        if !json {
            writeln!(out, "{}  [{state}]\n    {}", m.name, m.description).map_err(w)?;
        }
        let described = m.runtime.describe();
        if !json {
            writeln!(out, "    {}", described.text).map_err(w)?;
        }
        for (k, v) in described.fields {
            row[k] = v;
        }
        if let Some(c) = e.loaded().and_then(|t| t.as_ref().ok()?.containment()) {
            if !json {
                writeln!(out, "    files: {}", c.files).map_err(w)?;
                writeln!(out, "    contained: {}", c.contained).map_err(w)?;
                writeln!(out, "    each process: {}", c.process_limits).map_err(w)?;
            }
            row["files"] = c.files.into();
            row["contained"] = c.contained.into();
            row["process_limits"] = c.process_limits.into();
        }
        rows.push(row);
    }
    if json {
        serde_json::to_writer_pretty(&mut *out, &rows).map_err(|e| w(e.into()))?;
        writeln!(out).map_err(w)?;
    }
    Ok(())
}

/// The tools a client is offered, as start-up and `check` say it (the
/// count `tools/list` has), with the sets still listing theirs.
fn tools_count(snapshot: &toolplane_pool::Snapshot) -> String {
    let (n, loading) = (snapshot.callable(), snapshot.sets_loading());
    match loading {
        0 => format!("{n} tools"),
        1 => format!("{n} tools, and 1 server still listing its own"),
        k => format!("{n} tools, and {k} servers still listing their own"),
    }
}

/// `toolplane cluster status`: the cluster as its NATS server holds it,
/// as a table or one JSON object.
///
/// # Errors
///
/// NATS unreachable, without JetStream or holding no cluster; a failed
/// write.
pub fn cluster_status(
    opts: &toolplane_cluster::Options,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::start("the status's runtime"))?;
    let s = rt
        .block_on(toolplane_cluster::status(opts))
        .map_err(Failure::start("cluster status"))?;
    let text = if json {
        let mut t = serde_json::to_string(&s).unwrap_or_default();
        t.push('\n');
        t
    } else {
        status_table(&s)
    };
    out.write_all(text.as_bytes())
        .map_err(Failure::io("writing"))
}

fn status_table(s: &toolplane_cluster::Status) -> String {
    use std::fmt::Write as _;
    let ms = |v: u64| humantime::format_duration(Duration::from_millis(v)).to_string();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "NATS {} (version {}): {} partitions, ack_wait {}, {} calls in the stream ({} bytes)",
        s.server,
        s.version,
        s.partitions,
        ms(s.ack_wait_ms),
        s.calls,
        s.bytes
    );
    let _ = writeln!(o, "\n{} live nodes", s.nodes.len());
    for n in &s.nodes {
        let _ = writeln!(
            o,
            "  {:<24} version {:<10} running {:<6} seen {} ago",
            n.name,
            n.version,
            n.running,
            ms(n.seen_ms)
        );
    }
    let _ = writeln!(
        o,
        "\n  {:<10} {:>9} {:>9} {:>11} {:>8}  oldest",
        "partition", "pending", "in flight", "redelivered", "waiting"
    );
    for c in &s.consumers {
        let _ = writeln!(
            o,
            "  {:<10} {:>9} {:>9} {:>11} {:>8}  {}",
            c.name,
            c.pending,
            c.in_flight,
            c.redelivered,
            c.waiting,
            c.oldest_ms.map_or_else(|| "-".to_string(), ms)
        );
    }
    o
}

/// `toolplane call TOOL JSON`: the output on stdout.
///
/// # Errors
///
/// [`Failure::UnknownTool`], or [`Failure::Call`] when the call fails.
pub fn call(
    settings: &Settings,
    tool: &str,
    input: &str,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    // Only the tool called is compiled (or mapped from the cache): a first
    // call on a new machine compiles one module, not every one listed.
    let (registry, _) = start_registry(settings, false, true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::start("the call's runtime"))?;
    // A set's member is known once the set has loaded (bounded by its
    // start-up timeout).
    if rt.block_on(registry.resolve(tool)).is_none() {
        let names: Vec<String> = registry
            .snapshot()
            .iter()
            .map(|e| e.manifest.name.clone())
            .collect();
        return Err(Failure::UnknownTool {
            tool: tool.to_string(),
            known: names,
        });
    }
    let output = CallError::from_outcome(tool, rt.block_on(registry.call(tool, input.as_bytes())))?;
    out.write_all(&output)
        .and_then(|()| {
            if output.ends_with(b"\n") {
                Ok(())
            } else {
                writeln!(out)
            }
        })
        .map_err(Failure::io("writing the output"))
}

/// `toolplane check`: every problem of the configuration, the manifests
/// and the modules, each with its path.
///
/// # Errors
///
/// [`Failure::Problems`], each naming its file.
pub fn check(settings: &Settings, out: &mut dyn Write) -> Result<(), Failure> {
    let (registry, _) = registry(settings, false)?;
    let found = registry.problems();
    let mut problems: Vec<String> = found.iter().map(ToString::to_string).collect();
    for e in registry.snapshot().iter() {
        if let LoadState::Failed(why) = e.state() {
            // A module that failed to load is already a problem (at the
            // module's path); list it once.
            if found.iter().any(|p| p.reason.ends_with(&why.to_string())) {
                continue;
            }
            let at = match &e.origin {
                toolplane_pool::Origin::File(p) => p.display().to_string(),
                toolplane_pool::Origin::Builtin => format!("built-in {}", e.manifest.name),
            };
            let line = format!("{at}: {why}");
            if !problems.contains(&line) {
                problems.push(line);
            }
        }
    }
    if problems.is_empty() {
        let _ = writeln!(
            out,
            "ok: {}{}",
            tools_count(&registry.snapshot()),
            settings
                .tools
                .as_deref()
                .map(|d: &Path| format!(" (built-in and {})", d.display()))
                .unwrap_or_else(|| " (built-in)".into())
        );
        return Ok(());
    }
    Err(Failure::Problems(problems))
}
