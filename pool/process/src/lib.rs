//! Tools that run as processes (`runtime = "process"`): a program the
//! manifest names, started with an environment cleared to what the manifest
//! grants, in namespaces and a process group of its own that die with the
//! server.
//!
//! Protocols: `exec` (a fresh process per call, [`exec`]), `jsonl`
//! (long-lived processes answering JSON lines, [`jsonl`]) and `mcp` (an
//! upstream MCP server, [`mcp`]); long-lived processes ([`proc`]) are
//! pooled and supervised by [`warm`].
//!
//! A manifest that provides several tools (an MCP server, a jsonl worker
//! with `[[tools]]`) is a *set*: the registry lists it for its state, and
//! lists its members as `<set>.<tool>`, each a view of the set's pool. Every process lives on the process host
//! ([`host`]): a worker's call hands its work there and awaits the answer
//! as a pending call on its reactor.
//!
//! A busy tool queues calls (at most `pool.queue`) and refuses the next at
//! once; a queued call waits within its deadline.
//!
//! What keeps a tool in (`contain.rs`, `spawn.rs`; tools/README.md, "What
//! a process tool can reach"): its own PID, mount and (unless `network =
//! "host"`) network namespaces, no capabilities, the tools directory
//! read-only and the module cache hidden, the environment cleared,
//! memory and process count (a cgroup per process, `cgroup.rs`; else
//! `RLIMIT_DATA`), time and output; with
//! `[permissions]`, Landlock narrows its file system and TCP. Without
//! `[permissions]` it sees the file system as the server's user does.

use std::path::Path;
use std::sync::Arc;

use toolplane_core::Outcome;

pub use crate::codec::LineError;
pub use crate::error::{Exit, ListError, ProcessLoadError, StartError, Unavailable, UpstreamError};
pub use crate::spec::{Member, PoolSpec, ProcessLimits, ProcessManifest, Protocol, RemoteManifest};
use toolplane_tool::Checks;

mod cgroup;
mod codec;
mod contain;
pub mod error;
mod exec;
pub mod health;
mod host;
pub mod jsonl;
mod life;
pub mod mcp;
pub mod proc;
mod remote;
mod seccomp;
mod shared;
mod spawn;
pub mod spec;
pub mod stats;
pub mod warm;

pub use host::ProcessHost;
pub use life::{CANCEL_GRACE, STOP_GRACE};
pub use remote::install_tls_provider;
pub use shared::MembersChanged;
use shared::{Origin, Shared};
pub use spawn::Files;
pub use stats::ProcessStats;

/// Where a process tool loads: its manifest's directory, and what every
/// kind of tool shares (`{data}`, its quota, the directories hidden from
/// tools, the backlog a tool may hold).
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The manifest's directory (a tools directory).
    pub base: Option<&'a Path>,
    /// The registry's.
    pub site: &'a toolplane_tool::Site,
}

/// What [`ProcessTool::assemble`] builds a tool of.
struct Parts {
    protocol: Protocol,
    origin: Origin,
    pool: PoolSpec,
    limits: ProcessLimits,
    members: Vec<Member>,
    quota: Option<Arc<toolplane_tool::quota::DataQuota>>,
    set: bool,
}

/// Warns of each credential written in `tool`'s manifest under `table`.
fn warn_literal_secrets(tool: &str, table: &str, keys: &[&str]) {
    for key in keys {
        tracing::warn!(
            tool,
            "{table}.{key} is written in the manifest: keep secrets out of files with {key} = {{ env = \"VARIABLE\" }} or {key} = {{ file = \"path\" }}"
        );
    }
}

/// Whether `url`'s host is a loopback address (`localhost`, 127/8, ::1).
fn loopback(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// A process tool ready to call.
pub struct ProcessTool {
    /// Its name (a member's: `<set>.<member>`).
    pub name: Arc<str>,
    checks: Checks,
    shared: Arc<Shared>,
    runner: Runner,
    host: ProcessHost,
    /// What the program is asked for: the tool's own name, a member's; none
    /// for a set itself.
    target: Option<Arc<str>>,
}

#[derive(Clone)]
enum Runner {
    Exec,
    Warm(Arc<warm::Warm>),
}

impl std::fmt::Debug for ProcessTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("ProcessTool");
        d.field("name", &self.shared.name);
        match &self.shared.origin {
            Origin::Spawn(l) => d.field("program", &l.program),
            Origin::Remote(r) => d.field("url", &r.shown),
        };
        d.finish_non_exhaustive()
    }
}

impl ProcessTool {
    /// Resolves `spec` for the tool `name` (its schemas' `checks`): the program on `PATH` (or relative
    /// to `base`, the manifest's directory), `{data}`, the working
    /// directory; a long-lived protocol's pool starts its `pool.min`
    /// processes in the background.
    ///
    /// # Errors
    ///
    /// The program, a directory or a preset cannot be used; an upstream
    /// MCP server does not list its tools.
    pub fn load(
        name: Arc<str>,
        spec: &ProcessManifest,
        checks: Checks,
        at: Context<'_>,
        host: ProcessHost,
    ) -> Result<ProcessTool, ProcessLoadError> {
        let Context { base, site } = at;
        let backlog = site.backlog;
        contain::harden_server();
        let launch =
            spawn::Launch::resolve(&name, spec, base, site.data_dir.as_deref(), &site.hidden)?;
        warn_literal_secrets(&name, "env", &spec.literal_secrets());
        if matches!(launch.files, spawn::Files::Unsupported) {
            tracing::warn!(
                tool = %name,
                "[permissions] asks for Landlock, which this kernel does not support: its processes see the file system as the server's user does"
            );
        }
        let quota = site
            .quota
            .as_ref()
            .filter(|q| launch.files.may_write(&q.dir))
            .map(Arc::clone);
        let parts = Parts {
            protocol: spec.protocol,
            origin: Origin::Spawn(launch),
            pool: spec.pool.clone(),
            limits: spec.limits.clone(),
            members: spec.tools.clone(),
            quota,
            set: spec.is_set(),
        };
        ProcessTool::assemble(name, parts, checks, backlog, host)
    }

    /// Resolves a remote MCP server's manifest (`runtime = "remote"`, its
    /// headers read now) for the set `name`, and lists its tools through
    /// a first session.
    ///
    /// # Errors
    ///
    /// A header cannot be resolved; the server cannot be reached, does not
    /// finish `initialize` or does not list its tools within
    /// `limits.startup_timeout`.
    pub fn load_remote(
        name: Arc<str>,
        spec: &RemoteManifest,
        checks: Checks,
        at: Context<'_>,
        host: ProcessHost,
    ) -> Result<ProcessTool, ProcessLoadError> {
        let remote = remote::Remote::resolve(spec, at.base)?;
        warn_literal_secrets(&name, "headers", &spec.literal_secrets());
        if spec.url.starts_with("http://") && !spec.headers.is_empty() && !loopback(&spec.url) {
            tracing::warn!(
                tool = %name,
                "its headers go to {} unencrypted (http://, not a loopback address)",
                spec::shown_url(&spec.url)
            );
        }
        let parts = Parts {
            protocol: Protocol::Mcp,
            origin: Origin::Remote(remote),
            pool: spec.pool.clone(),
            limits: spec.limits.clone(),
            members: Vec::new(),
            quota: None,
            set: true,
        };
        ProcessTool::assemble(name, parts, checks, at.site.backlog, host)
    }

    /// The pool, its supervisor and (for an MCP server) its first list of
    /// tools, whatever the origin.
    fn assemble(
        name: Arc<str>,
        parts: Parts,
        checks: Checks,
        backlog: usize,
        host: ProcessHost,
    ) -> Result<ProcessTool, ProcessLoadError> {
        let Parts {
            protocol,
            origin,
            mut pool,
            limits,
            members,
            quota,
            set,
        } = parts;
        let turns = match protocol {
            Protocol::Exec => pool.max,
            Protocol::Jsonl | Protocol::Mcp => pool.max * pool.max_inflight_per_process,
        };
        // Running and waiting together stay within the backlog a tool may
        // hold (`Site::backlog`). The calls it runs at once are
        // the manifest's explicit choice and kept, said when they pass it.
        if turns > backlog {
            tracing::warn!(
                tool = %name,
                "runs {turns} calls at once (pool.max times pool.max_inflight_per_process), more than the {backlog} a tool's backlog may hold: at its busiest it can take that many of the engine's worker slots from other tools"
            );
        }
        let queue = backlog.saturating_sub(turns).min(pool.queue);
        if queue < pool.queue {
            tracing::info!(
                tool = %name,
                "pool.queue = {} cut to {queue}: a tool holds at most {backlog} calls, running and waiting ({turns} turns)",
                pool.queue
            );
            pool.queue = queue;
        }
        let startup_timeout = limits.startup_timeout;
        let shared = Arc::new(Shared {
            name: Arc::clone(&name),
            protocol,
            origin,
            pool,
            limits,
            counters: stats::Counters::default(),
            turns: Arc::new(tokio::sync::Semaphore::new(turns)),
            members: std::sync::Mutex::new(members),
            on_members: std::sync::Mutex::new(None),
            quota,
        });
        let runner = match protocol {
            Protocol::Exec => Runner::Exec,
            Protocol::Jsonl | Protocol::Mcp => {
                let _in = host.handle().enter();
                Runner::Warm(warm::Warm::start(Arc::clone(&shared)))
            }
        };
        if let (Protocol::Mcp, Runner::Warm(w)) = (protocol, &runner) {
            // Its members are whatever it lists: ask one process now.
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let w = Arc::clone(w);
            host.handle().spawn(async move {
                let _ = tx.send(w.members().await);
            });
            // Each step is bounded (the start and the list, each by
            // limits.startup_timeout): this bound only guards the loader
            // thread against a host that never answers.
            let bound = startup_timeout * 2 + std::time::Duration::from_secs(5);
            let listed = rx
                .recv_timeout(bound)
                .map_err(|_| ProcessLoadError::HostSilent(bound))?;
            shared.set_members(listed?);
        }
        let target = (!set).then(|| Arc::clone(&shared.name));
        Ok(ProcessTool {
            name,
            checks,
            shared,
            runner,
            host,
            target,
        })
    }

    /// Checks a call's input against the tool's schema.
    ///
    /// # Errors
    ///
    /// See [`Checks::input`].
    pub fn check_input(&self, input: &[u8]) -> Result<(), String> {
        self.checks.input(&self.name, input)
    }

    /// Checks a call's output against the tool's `output_schema`.
    ///
    /// # Errors
    ///
    /// See [`Checks::output`].
    pub fn check_output(&self, output: &[u8]) -> Result<(), String> {
        self.checks.output(&self.name, output)
    }

    /// Whether its output is an upstream MCP server's unstructured result,
    /// `{"content": [...]}` (see `mcp.rs`): an MCP tool without an
    /// `output_schema`.
    pub fn answers_content(&self) -> bool {
        self.shared.protocol == Protocol::Mcp && !self.checks.declares_output()
    }

    /// Whether it is a remote MCP server's (`runtime = "remote"`): no
    /// process of ours, so nothing to contain.
    pub fn is_remote(&self) -> bool {
        matches!(self.shared.origin, Origin::Remote(_))
    }

    /// What its processes see of the file system, in words.
    pub fn files(&self) -> &'static str {
        match &self.shared.origin {
            Origin::Spawn(l) => l.files.describe(),
            Origin::Remote(_) => "none here: a remote server",
        }
    }

    /// What else keeps its processes in (namespaces, capabilities), in
    /// words.
    pub fn containment(&self) -> String {
        let filter = match seccomp::filters() {
            Ok(_) => {
                "a seccomp filter (no new namespaces, keyrings, ptrace, bpf, io_uring, mounts)"
            }
            Err(_) => "no seccomp filter",
        };
        match &self.shared.origin {
            Origin::Spawn(l) => format!("{}; {filter}", l.contain.describe()),
            Origin::Remote(r) => format!("a remote server at {}: no process here", r.shown),
        }
    }

    /// How its memory and process-count limits are held, in words.
    pub fn limits(&self) -> String {
        match &self.shared.origin {
            Origin::Spawn(l) => cgroup::describe(l.limits),
            Origin::Remote(_) => "none here: a remote server".into(),
        }
    }

    /// Whether this is a set (see the module's comment).
    pub fn is_set(&self) -> bool {
        self.target.is_none()
    }

    /// A set's members now.
    pub fn members(&self) -> Vec<Member> {
        self.shared
            .members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Calls `f` whenever the set's members change.
    pub fn on_members_changed(&self, f: MembersChanged) {
        *self
            .shared
            .on_members
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// The member `member` of this set as a tool of its own, listed as
    /// `name` (`<set>.<member>`, `checks` its schemas'), sharing the set's
    /// processes.
    pub fn member(&self, name: Arc<str>, checks: Checks, member: &str) -> ProcessTool {
        ProcessTool {
            name,
            checks,
            shared: Arc::clone(&self.shared),
            runner: self.runner.clone(),
            host: self.host.clone(),
            target: Some(member.into()),
        }
    }

    /// Runs one call (on the process host), within `limits.timeout`, its
    /// progress (an MCP upstream's, a jsonl worker's) going to
    /// `meta.progress` when given, `meta.trace` passed on to an MCP
    /// upstream. The tool's schemas are not checked here: `toolplane_pool::Tool` checks the input before and the output after, for every caller (call through the registry unless you check both yourself).
    pub async fn run_unchecked(&self, input: &[u8], meta: toolplane_tool::CallMeta) -> Outcome {
        let Some(target) = &self.target else {
            let names: Vec<String> = self
                .members()
                .iter()
                .map(|m| format!("{}.{}", self.shared.name, m.name))
                .collect();
            return Outcome::Error(
                format!(
                    "{} is a set of tools: call one of its members ({})",
                    self.shared.name,
                    names.join(", ")
                )
                .into(),
            );
        };
        if let Some(why) = self.shared.quota.as_ref().and_then(|q| q.full()) {
            return Outcome::Error(format!("tool {}: {why}", self.name).into());
        }
        let deadline = tokio::time::Instant::now() + self.shared.limits.timeout;
        let out = match &self.runner {
            // On the host (its process is started there): the input is
            // copied for the task.
            Runner::Exec => {
                let input = input.to_vec();
                self.host
                    .run(exec::call(Arc::clone(&self.shared), input, deadline))
                    .await
            }
            // On this reactor: the request is written from this thread, and
            // the host's reader wakes this call with its answer.
            Runner::Warm(w) => w.call(target, input, deadline, meta).await,
        };
        if let Some(q) = &self.shared.quota {
            q.touched();
        }
        out
    }

    /// Why the tool is failed (its processes keep failing), if it is.
    pub fn down(&self) -> Option<Arc<str>> {
        match &self.runner {
            Runner::Exec => None,
            Runner::Warm(w) => w.down(),
        }
    }

    /// No longer listed: its processes stop once idle, and none start
    /// but for a call that still comes.
    pub fn retire(&self) {
        if let Runner::Warm(w) = &self.runner {
            w.retire_all();
        }
    }

    /// Stops its processes (each asked, then killed if it has not exited
    /// within the grace) and takes no more calls; for a shutdown, after the
    /// calls in flight drained. How many processes it stopped.
    pub async fn close(&self) -> usize {
        match &self.runner {
            Runner::Exec => 0,
            Runner::Warm(w) => w.close().await,
        }
    }

    /// Its processes, queue and latencies now.
    pub fn stats(&self) -> ProcessStats {
        self.shared.counters.snapshot(self.down())
    }
}
