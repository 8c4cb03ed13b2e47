//! End-to-end tests across toolplane's crates, one binary with a module
//! per area (as wasmtime's `tests/all`).

mod accounting;
mod builtin_tools;
mod concurrency;
mod config;
mod containment;
mod faults;
mod hostile;
mod injector;
mod jsonl;
mod limits;
mod mcp_upstream;
mod ordering;
mod overload;
mod process;
mod registry;
mod remote;
#[path = "../upstreams/http_server.rs"]
mod remote_server;
mod shutdown;
mod spans;
mod support;
mod timestamps;
mod upstream_bounds;
mod wasi;
mod wasi_faults;
