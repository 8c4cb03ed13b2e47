//! End-to-end tests of the `toolplane` binary: each starts the real binary
//! on an ephemeral port (or on stdio) and talks to it as clients do: REST
//! with reqwest, MCP with rmcp's client over streamable HTTP and over a
//! child process's stdio.

mod audit;
mod cli;
mod clients;
mod cluster;
mod containment;
mod edge;
mod hostile;
mod import;
mod loadgen;
mod mcp;
mod oauth;
#[path = "../upstreams/http_server.rs"]
mod remote_server;
mod rest;
mod secrets;
mod support;
mod traces;
