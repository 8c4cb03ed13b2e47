//! The seam between the registry and the runtimes that run tools.
//!
//! The registry discovers manifests, checks them, lists them, watches their
//! files and reloads them, and keeps every version's load state: the same
//! for every kind of tool. What differs per kind is here, one `match` per
//! step: what a load needs besides the manifest ([`LoadInput`]), how it loads
//! ([`load`]), which files a tool depends on ([`depends_on`]), whether a
//! reload changed anything ([`unchanged`]), and the loaded tool itself
//! ([`Tool`]), which the engine handler and [`crate::Registry::call`]
//! dispatch on. A new kind of tool is a new crate, a new
//! [`crate::manifest::RuntimeManifest`] variant and one arm in each of
//! these, not edits across the registry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use toolplane_core::{Call, Outcome, Payload, ToolId};
use toolplane_tool::CallMeta;
use toolplane_wasi::WasiWorker;

pub use toolplane_process::ProcessStats;
/// The upper bounds of the latency histograms in [`ProcessStats`], in
/// seconds.
pub use toolplane_process::stats::LATENCY_BUCKETS;
use toolplane_process::{ProcessHost, ProcessLoadError, ProcessTool};
use toolplane_tool::Checks;
use toolplane_wasi::{LoadedTool, PoolConfig, Runtime, read_module};

use crate::error::LoadError;
use crate::manifest::{Manifest, Origin, RuntimeManifest};

/// A tool ready to call, of whichever kind. Cheap to clone.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Tool {
    /// A WASI module, run in the pool.
    Wasi(Arc<LoadedTool>),
    /// A program, run as processes ([`crate::process`]).
    Process(Arc<ProcessTool>),
}

impl Tool {
    /// The WASI tool, if it is one.
    pub fn wasi(&self) -> Option<&Arc<LoadedTool>> {
        match self {
            Tool::Wasi(t) => Some(t),
            Tool::Process(_) => None,
        }
    }

    /// Checks a call's input against the tool's schema.
    ///
    /// # Errors
    ///
    /// The input is not JSON, or does not match; the message names the
    /// tool and the field.
    pub fn check_input(&self, input: &[u8]) -> Result<(), String> {
        match self {
            Tool::Wasi(t) => t.check_input(input),
            Tool::Process(t) => t.check_input(input),
        }
    }

    /// Checks a call's output against the tool's `output_schema`, when it
    /// declares one.
    ///
    /// # Errors
    ///
    /// The output is not JSON or does not match; the message names the
    /// tool and the field.
    pub fn check_output(&self, output: &[u8]) -> Result<(), String> {
        match self {
            Tool::Wasi(t) => t.check_output(output),
            Tool::Process(t) => t.check_output(output),
        }
    }

    /// How the tool's output reads.
    pub fn output_form(&self) -> OutputForm {
        match self {
            Tool::Wasi(_) => OutputForm::Json,
            Tool::Process(t) if t.answers_content() => OutputForm::Content,
            Tool::Process(_) => OutputForm::Json,
        }
    }

    /// Why the tool is down (a process tool whose processes keep
    /// failing), if it is.
    pub fn down(&self) -> Option<Arc<str>> {
        match self {
            Tool::Wasi(_) => None,
            Tool::Process(t) => t.down(),
        }
    }

    /// A process tool's processes, queue and latencies now; none for a
    /// kind without processes.
    pub fn stats(&self) -> Option<ProcessStats> {
        match self {
            Tool::Wasi(_) => None,
            Tool::Process(t) => Some(t.stats()),
        }
    }

    /// What keeps a process tool's processes in, in words; none for a WASI
    /// tool (its manifest's grants say it all).
    pub fn containment(&self) -> Option<Containment> {
        match self {
            Tool::Wasi(_) => None,
            Tool::Process(t) if t.is_remote() => None,
            Tool::Process(t) => Some(Containment {
                files: t.files(),
                contained: t.containment(),
                process_limits: t.limits(),
            }),
        }
    }

    /// Stops what the tool runs (a process tool's processes: each asked,
    /// then killed if it has not exited within the grace) and takes no
    /// more calls; for a shutdown, after the calls in flight drained. How
    /// many processes it stopped.
    pub async fn close(&self) -> usize {
        match self {
            Tool::Wasi(_) => 0,
            Tool::Process(t) => t.close().await,
        }
    }

    /// No longer listed: a process tool's processes stop once idle.
    pub(crate) fn retire(&self) {
        match self {
            Tool::Wasi(_) => {}
            Tool::Process(t) => t.retire(),
        }
    }

    /// The set this tool is (its members are listed as tools of their own),
    /// if it is one.
    pub(crate) fn set(&self) -> Option<Set> {
        match self {
            Tool::Process(t) if t.is_set() => Some(Set(Arc::clone(t))),
            _ => None,
        }
    }

    /// Starts a call on a worker: the input checked before anything runs
    /// (unless `input_checked`: its caller checked it against this version,
    /// [`crate::PerCall::checked`]), then run by the tool's kind (WASI on
    /// the worker's `wasi` state, a process tool with its `meta`: progress
    /// sink and trace),
    /// its output checked.
    pub(crate) fn start(
        &self,
        wasi: &WasiWorker,
        id: ToolId,
        input: Payload,
        input_checked: bool,
        meta: CallMeta,
    ) -> Call {
        if !input_checked && let Err(e) = self.check_input(&input) {
            return Call::Done(Outcome::Error(e.into()));
        }
        match self {
            Tool::Wasi(t) => {
                let run = wasi.run_unchecked(id, Arc::clone(t), input);
                let t = Arc::clone(t);
                Call::pending(async move { checked(run.await, |out| t.check_output(out)) })
            }
            Tool::Process(t) => {
                let t = Arc::clone(t);
                Call::pending(async move {
                    let out = t.run_unchecked(&input, meta).await;
                    checked(out, |out| t.check_output(out))
                })
            }
        }
    }

    /// Runs a call of a tool that was still loading when the call came
    /// (its input checked by the wait): as [`Tool::start`] does.
    pub(crate) async fn run(
        self,
        wasi: WasiWorker,
        id: ToolId,
        input: Payload,
        meta: CallMeta,
    ) -> Outcome {
        match self {
            Tool::Wasi(t) => {
                let out = wasi.run_unchecked(id, Arc::clone(&t), input).await;
                checked(out, |out| t.check_output(out))
            }
            Tool::Process(t) => {
                // Boxed: a process call's future is kilobytes.
                let out = Box::pin(t.run_unchecked(&input, meta)).await;
                checked(out, |out| t.check_output(out))
            }
        }
    }

    /// Whether `self` and `other` are the same loaded version of a tool.
    pub(crate) fn same(&self, other: &Tool) -> bool {
        match (self, other) {
            (Tool::Wasi(a), Tool::Wasi(b)) => Arc::ptr_eq(a, b),
            (Tool::Process(a), Tool::Process(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// A loaded set of tools (an MCP server, a jsonl worker with `[[tools]]`):
/// its members are listed as tools of their own, `<set>.<member>`, each a
/// view of the set. Only process tools make sets today.
#[derive(Debug, Clone)]
pub(crate) struct Set(Arc<ProcessTool>);

/// A [`Set`] that does not keep it loaded.
#[derive(Debug, Clone)]
pub(crate) struct WeakSet(std::sync::Weak<ProcessTool>);

impl WeakSet {
    pub(crate) fn upgrade(&self) -> Option<Set> {
        self.0.upgrade().map(Set)
    }
}

/// A member that cannot be listed: its qualified name and why.
pub(crate) struct Unlisted {
    pub(crate) name: String,
    pub(crate) why: String,
}

impl Set {
    pub(crate) fn downgrade(&self) -> WeakSet {
        WeakSet(Arc::downgrade(&self.0))
    }

    /// Calls `f` whenever the members change.
    pub(crate) fn on_change(&self, f: Box<dyn Fn() + Send + Sync>) {
        self.0.on_members_changed(f);
    }

    /// The members now, each its manifest (from the set's, `set`) and a
    /// tool of its own sharing the set's processes; or why it cannot be
    /// listed (its qualified name or schemas are not valid).
    pub(crate) fn members(&self, set: &Manifest) -> Vec<Result<(Manifest, Tool), Unlisted>> {
        self.0
            .members()
            .iter()
            .map(|m| {
                let unlisted = |why: String| Unlisted {
                    name: format!("{}.{}", set.name, m.name),
                    why,
                };
                let manifest = set.member(m).map_err(unlisted)?;
                let checks = Checks::new(&manifest.input_schema, manifest.output_schema.as_ref())
                    .map_err(|e| unlisted(format!("tool {}: {e}", manifest.name)))?;
                let tool = self
                    .0
                    .member(manifest.name.as_str().into(), checks, &m.name);
                Ok((manifest, Tool::Process(Arc::new(tool))))
            })
            .collect()
    }
}

/// How a tool's successful output reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputForm {
    /// The tool's own JSON (or text).
    Json,
    /// An upstream MCP server's unstructured result, `{"content": [...]}`:
    /// its content blocks, to serve as they came
    /// ([`OutputForm::content_blocks`] reads them back).
    Content,
}

impl OutputForm {
    /// The content blocks of `output`, when it is in this form an
    /// upstream MCP server's unstructured result (served to MCP clients as
    /// the blocks it came as); `None` for any other output.
    pub fn content_blocks(
        self,
        output: &[u8],
    ) -> Option<Vec<toolplane_process::mcp::ContentBlock>> {
        match self {
            OutputForm::Content => toolplane_process::mcp::content_blocks(output),
            OutputForm::Json => None,
        }
    }
}

/// What keeps a process tool's processes in, in words (as `tools list`
/// and `/v1/tools` say it).
#[derive(Debug, Clone)]
pub struct Containment {
    /// What its processes see of the file system.
    pub files: &'static str,
    /// Namespaces, capabilities, the seccomp filter.
    pub contained: String,
    /// How its memory and process-count limits are held.
    pub process_limits: String,
}

/// `outcome`, or an error when it is output that fails the tool's output
/// check: every caller (the engine, [`crate::Registry::call`]) gets the
/// same check, once.
pub(crate) fn checked(
    outcome: Outcome,
    check: impl FnOnce(&[u8]) -> Result<(), String>,
) -> Outcome {
    match outcome {
        Outcome::Ok(out) => match check(&out) {
            Ok(()) => Outcome::Ok(out),
            Err(e) => Outcome::Error(e.into()),
        },
        other => other,
    }
}

/// What runs tools, one per kind: the WASI runtime, and the process host
/// (its thread started by the first process tool).
#[derive(Debug)]
pub(crate) struct Runtimes {
    pub(crate) wasi: Runtime,
    process: std::sync::OnceLock<ProcessHost>,
    /// Where every kind's tools load.
    pub(crate) site: toolplane_tool::Site,
}

impl Runtimes {
    pub(crate) fn new(wasi: Runtime, site: toolplane_tool::Site) -> Runtimes {
        Runtimes {
            wasi,
            process: std::sync::OnceLock::new(),
            site,
        }
    }

    /// The process host, started by the first call.
    fn process_host(&self) -> std::io::Result<ProcessHost> {
        if let Some(h) = self.process.get() {
            return Ok(h.clone());
        }
        let h = ProcessHost::start()?;
        // Two loaders may race: one host wins, the other's thread ends.
        Ok(self.process.get_or_init(|| h).clone())
    }
}

/// Calls `tool` with `input` outside any engine (see
/// [`crate::Registry::call`]).
pub(crate) async fn call_once(runtimes: &Runtimes, tool: Tool, input: &[u8]) -> Outcome {
    match tool {
        Tool::Wasi(t) => {
            let out =
                toolplane_wasi::run_once_unchecked(&runtimes.wasi, Arc::clone(&t), input).await;
            checked(out, |out| t.check_output(out))
        }
        // Boxed: a process call's future is kilobytes, and a WASI call's
        // future would otherwise be as large (and moved as often).
        Tool::Process(t) => {
            let out = Box::pin(t.run_unchecked(input, CallMeta::default())).await;
            checked(out, |out| t.check_output(out))
        }
    }
}

/// What a load needs besides the manifest.
pub(crate) enum LoadInput {
    /// A module built into this binary.
    Static(&'static [u8]),
    /// A module file, read by the loader.
    File(PathBuf),
    /// A module file read already (a reload compared its digest).
    Read(Vec<u8>, PathBuf),
    /// Nothing: a process tool's program starts at each call.
    Program,
}

impl LoadInput {
    /// The source of the tool described by the manifest file `path`.
    pub(crate) fn of_file(manifest: &Manifest, path: &Path) -> LoadInput {
        match &manifest.runtime {
            RuntimeManifest::Wasi(w) => {
                LoadInput::File(path.parent().unwrap_or(Path::new(".")).join(&w.module))
            }
            RuntimeManifest::Process(_) | RuntimeManifest::Remote(_) => LoadInput::Program,
        }
    }

    /// A reload's source: read now, so that [`unchanged`] can compare it.
    /// A file that cannot be read is left for the loader, which reports it.
    pub(crate) fn read_for_reload(manifest: &Manifest, dir: &Path, cfg: &PoolConfig) -> LoadInput {
        match &manifest.runtime {
            RuntimeManifest::Wasi(w) => {
                let path = dir.join(&w.module);
                match read_module(cfg, &path) {
                    Ok(bytes) => LoadInput::Read(bytes, path),
                    Err(_) => LoadInput::File(path),
                }
            }
            RuntimeManifest::Process(_) | RuntimeManifest::Remote(_) => LoadInput::Program,
        }
    }
}

/// Loads `manifest` (found at `origin`) from `source`: the tool, or why not
/// and the file at fault.
pub(crate) fn load(
    runtimes: &Runtimes,
    manifest: &Arc<Manifest>,
    origin: &Origin,
    source: LoadInput,
) -> (Result<Tool, LoadError>, Option<PathBuf>) {
    let base = match origin {
        Origin::File(p) => p.parent(),
        Origin::Builtin => None,
    };
    let checks = match Checks::new(&manifest.input_schema, manifest.output_schema.as_ref()) {
        Ok(c) => c,
        Err(e) => return (Err(e.into()), None),
    };
    let name: Arc<str> = manifest.name.as_str().into();
    let runtime = &runtimes.wasi;
    match &manifest.runtime {
        RuntimeManifest::Wasi(spec) => {
            let (bytes, path) = match source {
                LoadInput::Static(b) => (Ok(std::borrow::Cow::Borrowed(b)), None),
                LoadInput::File(p) => (
                    read_module(runtime.config(), &p).map(std::borrow::Cow::Owned),
                    Some(p),
                ),
                LoadInput::Read(b, p) => (Ok(std::borrow::Cow::Owned(b)), Some(p)),
                LoadInput::Program => (Ok(std::borrow::Cow::Borrowed(&[][..])), None),
            };
            let result = bytes
                .and_then(|b| {
                    LoadedTool::load(runtime, &runtimes.site, name, checks, spec, base, &b)
                })
                .map(|t| Tool::Wasi(Arc::new(t)))
                .map_err(LoadError::from);
            (result, path)
        }
        RuntimeManifest::Process(_) | RuntimeManifest::Remote(_) => {
            let at = toolplane_process::Context {
                base,
                site: &runtimes.site,
            };
            let result = runtimes
                .process_host()
                .map_err(ProcessLoadError::Host)
                .and_then(|host| match &manifest.runtime {
                    RuntimeManifest::Remote(spec) => {
                        ProcessTool::load_remote(name, spec, checks, at, host)
                    }
                    RuntimeManifest::Process(spec) => {
                        ProcessTool::load(name, spec, checks, at, host)
                    }
                    RuntimeManifest::Wasi(_) => unreachable!("matched above"),
                })
                .map(|t| Tool::Process(Arc::new(t)))
                .map_err(LoadError::from);
            (result, None)
        }
    }
}

/// Whether `tool`, loaded from a manifest with `manifest_digest`, is what a
/// reload with this manifest and source would load again.
pub(crate) fn unchanged(
    tool: &Tool,
    manifest_digest: Option<[u8; 32]>,
    new_digest: [u8; 32],
    source: &LoadInput,
) -> bool {
    manifest_digest == Some(new_digest)
        && match (tool, source) {
            (Tool::Wasi(t), LoadInput::Read(bytes, _)) => t.digest == toolplane_wasi::digest(bytes),
            (Tool::Process(_), LoadInput::Program) => true,
            _ => false,
        }
}

/// Whether the tool `manifest` describes, found at `origin`, depends on the
/// file `path` (besides its manifest).
pub(crate) fn depends_on(manifest: &Manifest, origin: &Origin, path: &Path) -> bool {
    match (&manifest.runtime, origin) {
        (RuntimeManifest::Wasi(w), Origin::File(m)) => {
            m.parent().map(|d| d.join(&w.module)).as_deref() == Some(path)
        }
        (RuntimeManifest::Wasi(_), Origin::Builtin)
        | (RuntimeManifest::Process(_) | RuntimeManifest::Remote(_), _) => false,
    }
}

/// The manifest a changed file that no listed tool depends on may be for:
/// `<stem>.wasm`'s `<stem>`, a module that appeared for a manifest that
/// could not load without it.
pub(crate) fn manifest_stem(file: &str) -> Option<&str> {
    file.strip_suffix(".wasm")
}
