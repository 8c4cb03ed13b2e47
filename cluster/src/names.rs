//! The names the cluster uses on the NATS server (docs/cluster.md, "Names").

/// The stream of calls.
pub const STREAM: &str = "TOOLPLANE_CALLS";
/// Every call's subject is under this.
pub const CALLS: &str = "tp.call.>";
/// Keyed calls: `tp.call.k.{partition}`.
pub const KEYED_PREFIX: &str = "tp.call.k.";
/// Keyless calls.
pub const ANY: &str = "tp.call.any";
/// The consumer of keyless calls.
pub const ANY_CONSUMER: &str = "any";
/// The bucket of results, by call id.
pub const RESULTS: &str = "toolplane_results";
/// The bucket of live nodes, by node name.
pub const NODES: &str = "toolplane_nodes";
/// A node's answers come here.
pub fn reply(node: &str) -> String {
    format!("tp.reply.{node}")
}
/// The consumer of partition `p`.
pub fn consumer(p: u32) -> String {
    format!("k{p}")
}
/// The run marker of call `call`, in the results bucket.
pub fn run_marker(call: &str) -> String {
    format!("run.{call}")
}

/// Headers of a call message.
pub mod header {
    /// The node that took the call, and waits for its answer.
    pub const REPLY: &str = "tp-reply";
    /// The tool.
    pub const TOOL: &str = "tp-tool";
    /// The ordering key, when keyed.
    pub const KEY: &str = "tp-key";
    /// Who called (a client's name, `anonymous` or `local`).
    pub const CLIENT: &str = "tp-client";
    /// Not started after this (Unix time, ms): the caller has stopped
    /// waiting.
    pub const START_BY: &str = "tp-start-by";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";
}
