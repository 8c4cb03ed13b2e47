//! The engine's handler for the registry's tools: each worker resolves the
//! event's tool in the registry, checks the input before anything runs
//! (unless its caller checked it against the same version, see
//! [`crate::PerCall`]), and runs the call as a pending call on its
//! reactor, by the tool's kind
//! ([`Tool`]): a WASI tool as an async wasmtime call, in a fresh instance
//! or the worker's live one.

use std::sync::Arc;

use toolplane_core::{
    Call, CallContext, Event, Handler, Outcome, StartError, WorkerContext, WorkerHandler,
};
use toolplane_wasi::WasiWorker;

use crate::kind::Tool;
use crate::per_call::PerCall;
use crate::registry::{Registry, Snapshot, ToolEntry};
use toolplane_tool::CallMeta;

/// Runs events as calls of the registry's tools. Build the engine with the
/// registry's tool table so the ids agree:
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use toolplane_pool::{PoolConfig, Registry, Runtime, SiteConfig, ToolHandler};
///
/// let config = toolplane_core::Config::default();
/// let runtime = Runtime::new(PoolConfig::for_engine(&config))?;
/// let registry = Registry::builder(runtime)
///     .site(SiteConfig::for_engine(&config))
///     .build()?;
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
            version: u64::MAX,
            snapshot: self.registry.snapshot(),
            wasi: WasiWorker::new(self.registry.runtime()),
            worker: cx.worker,
        })
    }
}

/// One worker's state: its view of the registry and each kind's state
/// (WASI's live reuse-mode instances).
pub struct ToolWorker {
    registry: Registry,
    version: u64,
    snapshot: Arc<Snapshot>,
    wasi: WasiWorker,
    worker: usize,
}

impl std::fmt::Debug for ToolWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolWorker")
            .field("worker", &self.worker)
            .field("wasi", &self.wasi)
            .finish_non_exhaustive()
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
            self.wasi
                .retain(|id| match snap.get(id).and_then(|e| e.loaded()) {
                    Some(Ok(Tool::Wasi(t))) => Some(Arc::clone(t)),
                    _ => None,
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
        let per_call = PerCall::of(&mut event);
        match entry.loaded() {
            Some(Ok(tool)) => match per_call {
                Some(p) => {
                    p.ran(tool);
                    tool.start(&self.wasi, id, input, p.checked_for(tool), p.meta())
                }
                None => tool.start(&self.wasi, id, input, false, CallMeta::default()),
            },
            Some(Err(reason)) => Call::Done(reason.outcome(&entry.manifest.name)),
            None => {
                // Listed but still loading: wait for it, then call.
                let entry: Arc<ToolEntry> = Arc::clone(entry);
                let wasi = self.wasi.clone();
                Call::pending(async move {
                    match entry.ready_for(&input).await {
                        Ok(tool) => {
                            let meta = per_call
                                .map(|p| {
                                    p.ran(&tool);
                                    p.meta()
                                })
                                .unwrap_or_default();
                            tool.run(wasi, id, input, meta).await
                        }
                        Err(o) => o,
                    }
                })
            }
        }
    }
}
