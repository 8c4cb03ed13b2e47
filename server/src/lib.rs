//! toolplane-server: the `toolplane` binary's library. It serves the engine
//! and its tools to AI agents over MCP (stdio and streamable HTTP at
//! `/mcp`, via rmcp) and to programs over a REST call path, with
//! liveness, cached readiness and Prometheus metrics (axum); and it runs
//! the `tools list`, `call` and `check` commands.
//!
//! Every surface calls tools through one path, [`App::call`]: the tool's
//! JSON Schema is checked first (the error names the field), then the call
//! goes through the engine's injector, so admission, ordering and
//! accounting are the engine's.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod audit;
mod budget;
pub mod clients;
pub mod cluster;
pub mod config;
mod connections;
mod error;
pub mod http;
pub mod import;
mod listen;
pub mod mcp;
pub mod oauth;
pub mod otel;
pub mod prom;
pub mod reload;
pub mod runner;
pub mod serve;
mod token;
pub mod trace;

pub use app::{App, Readiness, ToolCall};
pub use config::{ConfigError, ServerSettings, Settings};
pub use connections::Connections;
pub use error::{CallError, CallResult, Refusal};
pub use mcp::Mcp;
