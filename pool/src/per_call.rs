//! What a caller attaches to one call's event for the registry's handler
//! (core's [`toolplane_core::Attached`]): where the call's progress goes,
//! the tool version whose input check the caller ran already, and — written
//! by the worker — the form of the output of the version that ran.
//!
//! ```no_run
//! # async fn f(registry: toolplane_pool::Registry, input: &[u8]) -> Option<()> {
//! use std::sync::Arc;
//! use toolplane_pool::PerCall;
//!
//! let entry = registry.resolve("echo").await?;
//! let tool = entry.wait().await.as_ref().ok()?.clone();
//! let (tx, mut progress) = toolplane_pool::progress::channel();
//! // Checks the input now; the worker that runs this version does not.
//! let per_call = Arc::new(PerCall::checked(&tool, input).ok()?.with_progress(tx));
//! let event = toolplane_core::Event::new(entry.id, input).with_attached(per_call.clone());
//! // … submit `event`; read `progress`; after the answer:
//! let form = per_call.form();
//! # let _ = (event, form, progress.try_recv()); Some(()) }
//! ```

use std::sync::{Arc, OnceLock};

use toolplane_tool::progress::ProgressSink;

use crate::kind::{OutputForm, Tool};

/// One call's context, shared between its caller and the worker that runs
/// it. Build it with [`PerCall::new`] or [`PerCall::checked`].
#[derive(Debug, Default)]
pub struct PerCall {
    checked: Option<Tool>,
    progress: Option<ProgressSink>,
    form: OnceLock<OutputForm>,
}

impl PerCall {
    /// A context with nothing checked and no progress sink.
    pub fn new() -> PerCall {
        PerCall::default()
    }

    /// Checks `input` against `tool`'s input schema now: a worker that
    /// resolves the same version of the tool for the call does not check
    /// it again (one that resolves another, after a reload, does).
    ///
    /// # Errors
    ///
    /// The input does not match; the message names the tool and the field.
    pub fn checked(tool: &Tool, input: &[u8]) -> Result<PerCall, String> {
        tool.check_input(input)?;
        Ok(PerCall {
            checked: Some(tool.clone()),
            ..PerCall::default()
        })
    }

    /// Sends the call's progress reports (an upstream MCP server's
    /// `notifications/progress`, a jsonl worker's progress lines) to
    /// `sink`.
    #[must_use]
    pub fn with_progress(mut self, sink: ProgressSink) -> PerCall {
        self.progress = Some(sink);
        self
    }

    /// How the output of the tool version that ran the call reads; `None`
    /// until a worker started it (or when it never ran).
    pub fn form(&self) -> Option<OutputForm> {
        self.form.get().copied()
    }

    /// Whether `tool`'s input check for this call ran already.
    pub(crate) fn checked_for(&self, tool: &Tool) -> bool {
        self.checked.as_ref().is_some_and(|t| t.same(tool))
    }

    /// The progress sink, for the call.
    pub(crate) fn progress(&self) -> Option<ProgressSink> {
        self.progress.clone()
    }

    /// Records the form of `tool`, the version that runs the call.
    pub(crate) fn ran(&self, tool: &Tool) {
        let _ = self.form.set(tool.output_form());
    }

    /// The context attached to `event`, if it is one of these.
    pub(crate) fn of(event: &mut toolplane_core::Event) -> Option<Arc<PerCall>> {
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

    /// A version the caller checked is not checked again by the worker:
    /// a context marked checked for an input that never was (only this
    /// module can make one) starts the call instead of refusing it.
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
        assert!(marked.checked_for(&tool));
        assert!(!PerCall::new().checked_for(&tool));
        let refused = tool.start(&wasi, entry.id, bad.as_slice().into(), false, None);
        assert!(matches!(refused, Call::Done(Outcome::Error(_))));
        let started = tool.start(&wasi, entry.id, bad.as_slice().into(), true, None);
        assert!(matches!(started, Call::Pending(_)), "checked twice");
    }
}
