//! toolplane's WASI tools (`runtime = "wasi"`, the default), one kind of
//! tool below the registry that unites them:
//!
//! - [`Runtime`]: one wasmtime `Engine` with the pooling allocator,
//!   copy-on-write memory images, epoch deadlines driven by a ticker
//!   thread, a WASI preview1 linker, a semaphore in front of the pool's
//!   slots and the on-disk [`ModuleCache`].
//! - [`LoadedTool`]: a module compiled (or mapped from the cache) and
//!   pre-linked, with its entry point; [`WasiWorker`] runs its calls on a
//!   worker's reactor, in a fresh instance or the worker's live one
//!   ([`Mode`]).
//! - [`spec`]: the manifest keys of a WASI tool; [`WasiLoadError`]: why
//!   one could not be loaded.
//! - [`builtin`]: the built-in tools, built from `tools/` and embedded.
//!
//! The guest ABI (a WASI command, plus a fast in-memory entry) is described
//! in `tools/README.md`.

#![deny(unsafe_code)]

pub mod builtin;
pub mod cache;
mod call;
pub mod error;
mod host;
mod pipe;
mod runtime;
pub mod spec;
mod tool;
mod worker;

pub use cache::{CacheStats, ModuleCache, digest};
pub use error::{CompileError, ExportError, WasiLoadError};
pub use runtime::{
    PoolConfig, Runtime, RuntimeError, SlotUse, default_cache_dir, default_data_dir,
};
pub use spec::{Access, DirGrant, EntryKind, Limits, Mode, WasiManifest};
pub use tool::{LoadedTool, read_module};
pub use worker::{Held, WasiWorker, run_once_unchecked};
