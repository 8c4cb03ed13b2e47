//! toolplane's WASI tool runtime.
//!
//! - [`Runtime`]: one wasmtime `Engine` with the pooling allocator, copy-on-write
//!   memory images, epoch deadlines driven by a ticker thread, a WASI preview1
//!   linker, a semaphore in front of the pool's slots and the on-disk
//!   [`ModuleCache`].
//! - [`Registry`]: the built-in tools and a directory of tools (`<tool>.toml`
//!   beside `<tool>.wasm`), discovered in parallel, loaded in the background,
//!   reloaded on change.
//! - [`ToolHandler`]: the engine handler that runs events as tool calls, each
//!   an async wasmtime call on the worker's reactor, in a fresh instance or a
//!   reused live one ([`Mode`]).
//! - [`kind`]: the seam between the registry and what runs a tool. The
//!   registry discovers, checks, lists and reloads every kind alike; a
//!   manifest's `runtime` key picks the kind, and loading and calling
//!   dispatch on it ([`Tool`]). WASI is the one kind today.
//!
//! The guest ABI (a WASI command, plus a fast in-memory entry) is described
//! in `tools/README.md`.

#![deny(unsafe_code)]

pub mod builtin;
pub mod cache;
mod call;
pub mod checks;
pub mod error;
pub mod files;
mod handler;
mod host;
pub mod kind;
pub mod manifest;
mod pipe;
pub mod process;
pub mod progress;
mod quota;
pub mod registry;
mod runtime;
mod size;
mod tool;

pub use cache::{CacheStats, ModuleCache};
pub use error::{CompileError, ExportError, LoadError};
pub use handler::{ToolHandler, ToolWorker};
pub use kind::Tool;
pub use manifest::{
    Access, Annotations, DirGrant, EntryKind, Limits, Manifest, ManifestError, Mode,
    RuntimeManifest, WasiManifest,
};
pub use registry::{
    LiveTool, LoadState, Loaded, Origin, Problem, Registry, RegistryBuilder, RegistryError,
    RegistryEvent, Snapshot, ToolEntry,
};
pub use runtime::{
    PoolConfig, Runtime, RuntimeError, SlotUse, default_cache_dir, default_data_dir,
};
pub use tool::LoadedTool;
