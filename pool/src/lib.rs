//! toolplane's tool registry, over every kind of tool.
//!
//! The kinds are crates below this one, each with its own manifest keys,
//! errors and docs: `toolplane-wasi` (WebAssembly modules in pooled
//! wasmtime instances) and `toolplane-process` (programs run as exec,
//! jsonl or MCP servers, contained and supervised); `toolplane-tool` is
//! what they share (schema checks, bounded file reads, the data
//! directory's quota, progress) and `toolplane-units` the leaf below all.
//!
//! - [`Registry`]: the built-in tools and a directory of tools (`<tool>.toml`,
//!   beside `<tool>.wasm` for a WASI tool), discovered in parallel, loaded
//!   in the background, reloaded on change.
//! - [`manifest`]: the keys every manifest has; its `runtime` key picks
//!   the kind, whose crate reads the rest.
//! - [`kind`]: the seam between the registry and the kinds. The registry
//!   discovers, checks, lists and reloads every kind alike; loading and
//!   calling dispatch on the kind ([`Tool`]), one `match` per step.
//! - [`ToolHandler`]: the engine handler that runs events as tool calls on
//!   the worker's reactor.

#![deny(unsafe_code)]

pub mod error;
mod handler;
pub mod kind;
pub mod manifest;
mod per_call;
pub mod registry;

pub use error::LoadError;
pub use handler::{ToolHandler, ToolWorker};
pub use kind::Tool;
pub use manifest::{
    Access, Annotations, DirGrant, EntryKind, Limits, Manifest, ManifestError, Mode,
    RuntimeManifest, WasiManifest,
};
pub use per_call::PerCall;
pub use registry::{
    LiveTool, LoadState, Loaded, Origin, Problem, Registry, RegistryBuilder, RegistryError,
    RegistryEvent, SiteConfig, Snapshot, ToolEntry,
};
pub use toolplane_process as process;
pub use toolplane_tool::{CallMeta, TraceContext, checks, files, names, progress, secret};
pub use toolplane_wasi::{
    CacheStats, CompileError, ExportError, LoadedTool, ModuleCache, PoolConfig, Runtime,
    RuntimeError, SlotUse, WasiLoadError, builtin, cache, default_cache_dir, default_data_dir,
};
