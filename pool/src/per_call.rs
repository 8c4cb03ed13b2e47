//! What a caller attaches to one call's event for the registry's handler
//! (core's [`toolplane_core::Attached`]): where the call's progress goes
//! and the trace it is part of ([`CallMeta`]), the tool version whose input check the caller ran already, and — written
//! by the worker — the form of the output of the version that ran.
//!
//! ```no_run
//! # async fn f(registry: toolplane_pool::Registry, input: &[u8]) -> Option<()> {
//! use toolplane_pool::PerCall;
//!
//! let entry = registry.resolve("echo").await?;
//! let tool = entry.wait().await.as_ref().ok()?.clone();
//! let (tx, mut progress) = toolplane_pool::progress::channel();
//! let meta = toolplane_pool::CallMeta { progress: Some(tx), trace: None };
//! // Checks the input now and builds the event from the bytes it checked;
//! // the worker that runs this version does not check them again.
//! let (event, per_call) = PerCall::checked_event(entry.id, &tool, input, meta).ok()?;
//! // … submit `event`; read `progress`; after the answer:
//! let form = per_call.form();
//! # let _ = (event, form, progress.try_recv()); Some(()) }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use toolplane_core::{Event, ToolId};
use toolplane_tool::CallMeta;
use toolplane_tool::progress::ProgressSink;

use crate::kind::{OutputForm, Tool};

/// One call's context, shared between its caller and the worker that runs
/// it: one per call (a context attached to a second event, or to a clone,
/// checks that event's input as if it had none). Build it with
/// [`PerCall::checked_event`] or [`PerCall::new`].
#[derive(Debug, Default)]
pub struct PerCall {
    checked: Option<Tool>,
    /// The skip of the input check was taken (it is taken once).
    skip_taken: AtomicBool,
    meta: CallMeta,
    form: OnceLock<OutputForm>,
}

impl PerCall {
    /// A context with nothing checked, no progress sink and no trace.
    pub fn new() -> PerCall {
        PerCall::default()
    }

    /// Checks `input` against `tool`'s input schema now and builds the
    /// call's event (`id`, the registry's id of the tool, and the bytes
    /// checked) with this context attached: a worker that runs the same
    /// version of the tool does not check it again (one that runs another,
    /// after a reload, does). `meta` goes with the call to the tool (its
    /// progress reports into `meta.progress`).
    ///
    /// # Errors
    ///
    /// The input does not match; the message names the tool and the field.
    pub fn checked_event(
        id: ToolId,
        tool: &Tool,
        input: &[u8],
        meta: CallMeta,
    ) -> Result<(Event, Arc<PerCall>), String> {
        tool.check_input(input)?;
        let per_call = Arc::new(PerCall {
            checked: Some(tool.clone()),
            meta,
            ..PerCall::default()
        });
        let event = Event::new(id, input).with_attached(Arc::clone(&per_call) as _);
        Ok((event, per_call))
    }

    /// Sends the call's progress reports (an upstream MCP server's
    /// `notifications/progress`, a jsonl worker's progress lines) to
    /// `sink`.
    #[must_use]
    pub fn with_progress(mut self, sink: ProgressSink) -> PerCall {
        self.meta.progress = Some(sink);
        self
    }

    /// Passes `trace` on to the tool (an upstream MCP server gets it in
    /// its request's `_meta`).
    #[must_use]
    pub fn with_trace(mut self, trace: toolplane_tool::TraceContext) -> PerCall {
        self.meta.trace = Some(Arc::new(trace));
        self
    }

    /// How the output of the tool version that ran the call reads; `None`
    /// until a worker started it (or when it never ran).
    pub fn form(&self) -> Option<OutputForm> {
        self.form.get().copied()
    }

    /// Whether the input check against `tool` ran already for this call:
    /// the same version, and the first event to ask.
    pub(crate) fn checked_for(&self, tool: &Tool) -> bool {
        // Relaxed: the swap alone decides who takes the skip; it guards
        // no other data.
        self.checked.as_ref().is_some_and(|t| t.same(tool))
            && !self.skip_taken.swap(true, Ordering::Relaxed)
    }

    /// What goes with the call to its tool.
    pub(crate) fn meta(&self) -> CallMeta {
        self.meta.clone()
    }

    /// Records the form of `tool`, the version that runs the call.
    pub(crate) fn ran(&self, tool: &Tool) {
        let _ = self.form.set(tool.output_form());
    }

    /// The context attached to `event`, if it is one of these.
    pub(crate) fn of(event: &mut Event) -> Option<Arc<PerCall>> {
        event
            .take_attached()
            .and_then(|a| a.downcast::<PerCall>().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PoolConfig, Registry, Runtime};
    use toolplane_core::{Call, Outcome};
    use toolplane_wasi::WasiWorker;

    /// A version the caller checked is not checked again by the worker,
    /// once: a context marked checked for an input that never was (made
    /// here, as `checked_event` never would) starts the call instead of
    /// refusing it, and a second event carrying it is checked.
    #[test]
    fn the_version_its_caller_checked_is_not_checked_again() {
        let data = tempfile::tempdir().unwrap();
        let config = PoolConfig::for_engine(&toolplane_core::Config::default());
        let registry = Registry::builder(Runtime::new(config).unwrap())
            .site(crate::SiteConfig {
                data_dir: Some(data.path().to_owned()),
                ..crate::SiteConfig::default()
            })
            .watch(false)
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let entry = rt.block_on(registry.resolve("fs.read")).unwrap();
        let tool = rt.block_on(entry.wait()).as_ref().unwrap().clone();
        let bad = b"[]";
        assert!(tool.check_input(bad).is_err());
        let wasi = WasiWorker::new(registry.runtime());
        let marked = PerCall {
            checked: Some(tool.clone()),
            ..PerCall::default()
        };
        assert!(!PerCall::new().checked_for(&tool));
        assert!(marked.checked_for(&tool));
        assert!(!marked.checked_for(&tool), "the skip is taken once");
        let refused = tool.start(
            &wasi,
            entry.id,
            bad.as_slice().into(),
            false,
            CallMeta::default(),
        );
        assert!(matches!(refused, Call::Done(Outcome::Error(_))));
        let started = tool.start(
            &wasi,
            entry.id,
            bad.as_slice().into(),
            true,
            CallMeta::default(),
        );
        assert!(matches!(started, Call::Pending(_)), "checked twice");
    }
}
