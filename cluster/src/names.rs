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
/// The node a reply subject names, when it is one (`tp.reply.{node}`,
/// the node a single subject token): answers go nowhere else.
pub fn ingress_of(reply: &str) -> Option<&str> {
    let node = reply.strip_prefix("tp.reply.")?;
    let token = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    (!node.is_empty() && node.len() <= 64 && node.chars().all(token)).then_some(node)
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

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_nodes_reply_subject_is_an_answer_s_address() {
        assert_eq!(super::ingress_of("tp.reply.node-1"), Some("node-1"));
        for bad in [
            "tp.reply.",
            "tp.reply.a.b",
            "tp.reply.*",
            "tp.reply.>",
            "tp.call.k.1",
            "$JS.API.STREAM.DELETE.TOOLPLANE_CALLS",
            "tp.reply.a b",
        ] {
            assert_eq!(super::ingress_of(bad), None, "{bad}");
        }
    }
}
