//! A worker's WASI state: its idle live instances (one per reuse-mode tool
//! at most), and a call run in a fresh instance or the worker's live one,
//! as an async wasmtime call on the worker's reactor.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use toolplane_core::{Outcome, Payload, ToolId};

use crate::call::{self, LiveInstance};
use crate::runtime::Runtime;
use crate::spec::Mode;
use crate::tool::LoadedTool;

/// One worker's WASI state. Not `Send`: it lives on its worker.
#[derive(Clone)]
pub struct WasiWorker {
    runtime: Runtime,
    live: Rc<RefCell<LiveCache>>,
}

impl std::fmt::Debug for WasiWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiWorker")
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

impl WasiWorker {
    /// A worker's state on `runtime`, keeping at most its
    /// `reuse_per_worker` live instances.
    pub fn new(runtime: &Runtime) -> WasiWorker {
        WasiWorker {
            runtime: runtime.clone(),
            live: Rc::new(RefCell::new(LiveCache {
                idle: HashMap::new(),
                cap: runtime.config().reuse_per_worker,
            })),
        }
    }

    /// Drops the live instances whose tool `current` no longer answers
    /// with the same version (removed or replaced).
    pub fn retain(&self, current: impl Fn(ToolId) -> Option<Arc<LoadedTool>>) {
        self.live
            .borrow_mut()
            .idle
            .retain(|id, live| current(*id).is_some_and(|t| Arc::ptr_eq(&t, &live.tool)));
    }

    /// Calls `tool` (the registry's `id`) with `input`, within its deadline.
    /// The tool's schemas are not checked here: `toolplane_pool::Tool` checks the input before and the output after, for every caller (call through the registry unless you check both yourself).
    pub fn run_unchecked(
        &self,
        id: ToolId,
        tool: Arc<LoadedTool>,
        input: Payload,
    ) -> impl Future<Output = Outcome> + 'static {
        let rt = self.runtime.clone();
        let live = Rc::clone(&self.live);
        async move {
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
            call::bounded(&tool, call).await
        }
    }
}

/// Calls `tool` with `input` outside any engine: a fresh instance, or a
/// live one for this call alone. The tool's schemas are not checked here: `toolplane_pool::Tool` checks the input before and the output after, for every caller (call through the registry unless you check both yourself).
pub async fn run_once_unchecked(runtime: &Runtime, tool: Arc<LoadedTool>, input: &[u8]) -> Outcome {
    call::once(runtime.clone(), tool, input).await
}

/// A live instance one caller holds across its calls of one tool (as
/// reuse mode does on a worker): created by the first call, recycled after
/// `recycle_after` calls, after a trap, or when the tool is a new version.
#[derive(Default)]
pub struct Held {
    live: Option<LiveInstance>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("live", &self.live.is_some())
            .finish()
    }
}

impl Held {
    /// Calls `tool` with `input` in the held instance (a new one when
    /// there is none, or it is of another version), within its deadline.
    /// The tool's schemas are not checked here: `toolplane_pool::Tool` checks the input before and the output after, for every caller (call through the registry unless you check both yourself).
    pub async fn run_unchecked(
        &mut self,
        rt: &Runtime,
        tool: Arc<LoadedTool>,
        input: &[u8],
    ) -> Outcome {
        if !tool.has_fast_entry() {
            return Outcome::Error(
                format!("tool {}: a live instance needs the fast entry", tool.name).into(),
            );
        }
        let idle = self.live.take();
        let mut kept = None;
        // Under the host's deadline like every call: an instance whose call
        // ran out of time is dropped, not kept.
        let outcome = call::bounded(&tool, async {
            let mut live = match idle {
                Some(l) if Arc::ptr_eq(&l.tool, &tool) => l,
                _ => match LiveInstance::new(rt, Arc::clone(&tool)).await {
                    Ok(l) => l,
                    Err(o) => return o,
                },
            };
            let (outcome, keep) = live.call(rt, input).await;
            if keep {
                kept = Some(live);
            }
            outcome
        })
        .await;
        self.live = kept;
        outcome
    }

    /// Drops the held instance.
    pub fn clear(&mut self) {
        self.live = None;
    }
}
