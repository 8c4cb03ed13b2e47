//! Why a tool could not be loaded: the kind's own reason, or a schema
//! that is not one. A leaf module: the loaders and the registry report
//! through it.

use toolplane_process::ProcessLoadError;
use toolplane_tool::SchemaError;
use toolplane_wasi::WasiLoadError;

/// Why a tool could not be loaded. Its message is what `tools list`,
/// `toolplane check` and a call of the tool show.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A WASI tool's module, grants or limits cannot be used.
    #[error(transparent)]
    Wasi(#[from] WasiLoadError),
    /// A process tool's program or directories cannot be used.
    #[error(transparent)]
    Process(#[from] ProcessLoadError),
    /// A schema in the manifest is not a valid JSON Schema.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

impl LoadError {
    /// Whether loading again may succeed with nothing changed: an
    /// upstream that did not start, answer or list its tools (it may be
    /// down for a while, or its network).
    pub(crate) fn may_pass(&self) -> bool {
        matches!(
            self,
            LoadError::Process(ProcessLoadError::Upstream(_) | ProcessLoadError::HostSilent(_))
        )
    }

    /// The outcome of a call to the tool `name`, which failed to load so.
    pub(crate) fn outcome(&self, name: &str) -> toolplane_core::Outcome {
        toolplane_core::Outcome::Error(format!("tool {name} failed to load: {self}").into())
    }
}
