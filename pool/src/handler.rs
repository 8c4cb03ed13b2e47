//! The engine's handler for the registry's tools: each worker resolves the
//! event's tool in the registry, checks the input before anything runs,
//! and runs the call as a pending call on its reactor, by the tool's kind
//! ([`Tool`]): a WASI tool as an async wasmtime call, in a fresh instance
//! or the worker's live one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use toolplane_core::{
    Call, CallContext, Event, Handler, Outcome, Payload, StartError, ToolId, WorkerContext,
    WorkerHandler,
};

use crate::call::{self, LiveInstance};
use crate::kind::Tool;
use crate::manifest::Mode;
use crate::registry::{Registry, Snapshot, ToolEntry};
use crate::runtime::Runtime;
use crate::tool::LoadedTool;

/// Runs events as calls of the registry's tools. Build the engine with the
/// registry's tool table so the ids agree:
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use toolplane_pool::{PoolConfig, Registry, Runtime, ToolHandler};
///
/// let config = toolplane_core::Config::default();
/// let runtime = Runtime::new(PoolConfig::for_engine(&config))?;
/// let registry = Registry::builder(runtime).build()?;
/// let engine = toolplane_core::Engine::builder()
///     .config(config)
///     .tools(registry.tool_table())
///     .build(ToolHandler::new(registry.clone()))?;
/// # let _ = engine; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ToolHandler {
    registry: Registry,
}

impl ToolHandler {
    /// A handler over `registry`.
    pub fn new(registry: Registry) -> ToolHandler {
        ToolHandler { registry }
    }
}

impl Handler for ToolHandler {
    type Worker = ToolWorker;

    fn start(&self, cx: &WorkerContext) -> Result<ToolWorker, StartError> {
        Ok(ToolWorker {
            registry: self.registry.clone(),
            runtime: self.registry.runtime().clone(),
            version: u64::MAX,
            snapshot: self.registry.snapshot(),
            live: Rc::new(RefCell::new(LiveCache {
                idle: HashMap::new(),
                cap: self.registry.runtime().config().reuse_per_worker,
            })),
            worker: cx.worker,
        })
    }
}

/// One worker's state: its view of the registry and its live reuse-mode
/// instances.
pub struct ToolWorker {
    registry: Registry,
    runtime: Runtime,
    version: u64,
    snapshot: Arc<Snapshot>,
    live: Rc<RefCell<LiveCache>>,
    worker: usize,
}

impl std::fmt::Debug for ToolWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolWorker")
            .field("worker", &self.worker)
            .field("live", &self.live.borrow().idle.len())
            .finish_non_exhaustive()
    }
}

/// Idle live instances, one per reuse-mode tool at most.
struct LiveCache {
    idle: HashMap<ToolId, LiveInstance>,
    cap: usize,
}

impl LiveCache {
    /// An idle instance of exactly this version of the tool.
    fn take(&mut self, id: ToolId, tool: &Arc<LoadedTool>) -> Option<LiveInstance> {
        let live = self.idle.remove(&id)?;
        // A reloaded tool recycles the old version's instance.
        Arc::ptr_eq(&live.tool, tool).then_some(live)
    }

    fn put(&mut self, id: ToolId, live: LiveInstance) {
        if self.idle.len() < self.cap || self.idle.contains_key(&id) {
            self.idle.insert(id, live);
        }
    }
}

impl WorkerHandler for ToolWorker {
    fn call(&mut self, mut event: Event, _cx: &mut CallContext<'_>) -> Call {
        let version = self.registry.version();
        if version != self.version {
            self.snapshot = self.registry.snapshot();
            self.version = version;
            // Drop live instances of tools that were removed or replaced.
            let snap = &self.snapshot;
            self.live.borrow_mut().idle.retain(|id, live| {
                matches!(snap.get(*id).and_then(|e| e.loaded()), Some(Ok(Tool::Wasi(t))) if Arc::ptr_eq(t, &live.tool))
            });
        }
        let id = event.tool();
        let Some(entry) = self.snapshot.get(id) else {
            let name = self.registry.tool_table().name(id);
            return Call::Done(Outcome::Error(match name {
                Some(n) => format!("unknown tool {:?}", &*n).into(),
                None => format!("unknown tool id {}", id.0).into(),
            }));
        };
        let input = event.take_payload();
        match entry.loaded() {
            Some(Ok(Tool::Wasi(tool))) => {
                if let Err(e) = tool.check_input(&input) {
                    return Call::Done(Outcome::Error(e.into()));
                }
                Call::pending(run(
                    self.runtime.clone(),
                    Rc::clone(&self.live),
                    id,
                    Arc::clone(tool),
                    input,
                ))
            }
            Some(Ok(Tool::Process(tool))) => {
                if let Err(e) = tool.checks.input(&tool.manifest.name, &input) {
                    return Call::Done(Outcome::Error(e.into()));
                }
                let tool = Arc::clone(tool);
                let progress = self.registry.progress().take(event.tag());
                Call::pending(async move { tool.call_with(&input, progress).await })
            }
            Some(Err(reason)) => Call::Done(reason.outcome(&entry.manifest.name)),
            None => {
                // Listed but still loading: wait for it, then call.
                let entry: Arc<ToolEntry> = Arc::clone(entry);
                let rt = self.runtime.clone();
                let live = Rc::clone(&self.live);
                Call::pending(async move {
                    match entry.ready_for(&input).await {
                        Ok(Tool::Wasi(tool)) => run(rt, live, id, tool, input).await,
                        Ok(Tool::Process(tool)) => tool.call(&input).await,
                        Err(o) => o,
                    }
                })
            }
        }
    }
}

async fn run(
    rt: Runtime,
    live: Rc<RefCell<LiveCache>>,
    id: ToolId,
    tool: Arc<LoadedTool>,
    input: Payload,
) -> Outcome {
    let call = async {
        match tool.spec.mode {
            Mode::Fresh => call::fresh(rt.clone(), Arc::clone(&tool), input).await,
            Mode::Reuse => {
                let idle = live.borrow_mut().take(id, &tool);
                let mut instance = match idle {
                    Some(i) => i,
                    None => match LiveInstance::new(&rt, Arc::clone(&tool)).await {
                        Ok(i) => i,
                        Err(o) => return o,
                    },
                };
                let (outcome, keep) = instance.call(&rt, &input).await;
                if keep {
                    live.borrow_mut().put(id, instance);
                }
                outcome
            }
        }
    };
    call::bounded(&rt, &tool, call).await
}
