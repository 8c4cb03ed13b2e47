//! What travels with one call besides its input, from its caller to the
//! tool that runs it: where the call's progress goes, and the trace it is
//! part of (passed on to an upstream MCP server in its request's `_meta`,
//! as the MCP specification places W3C Trace Context).

use crate::progress::ProgressSink;

/// A call's companions: a caller attaches them to its call
/// (`toolplane_pool::PerCall`), the handler hands them to the tool.
#[derive(Debug, Clone, Default)]
pub struct CallMeta {
    /// Where the call's progress reports go, when someone watches it.
    pub progress: Option<ProgressSink>,
    /// The trace context to pass on to an upstream (shared: a call's
    /// companions are cloned for the worker that runs it).
    pub trace: Option<std::sync::Arc<TraceContext>>,
}

/// W3C Trace Context, as sent on: `traceparent` names the caller's span
/// (for a traced server, its own span of the call), `tracestate` the
/// vendors' entries, when there are any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-TRACEID-SPANID-FLAGS`.
    pub traceparent: String,
    /// The `tracestate` list, when not empty.
    pub tracestate: Option<String>,
}
