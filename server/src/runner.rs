//! Calls pulled from the cluster, run on this node's engine: the tool
//! looked up here (a tool this node lacks is an error naming it), the
//! input checked here, the outcome sent back; a call the engine refuses
//! for load goes back to the stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use toolplane_cluster::{Job, Verdict};
use toolplane_core::RejectReason;

use crate::app::{App, CallError, CallId, ToolCall};

/// Runs calls pulled from the cluster on this node's engine.
#[derive(Debug)]
pub struct Runner {
    app: Arc<App>,
    node: String,
}

impl Runner {
    /// A runner for `app`, the node named `node`.
    pub fn new(app: Arc<App>, node: String) -> Runner {
        Runner { app, node }
    }
}

fn done(result: &str, message: String, output: Bytes) -> Verdict {
    Verdict::Done {
        result: result.into(),
        message,
        output,
    }
}

impl toolplane_cluster::Execute for Runner {
    async fn execute(&self, job: Job) -> Verdict {
        let app = &self.app;
        let Some(entry) = app.registry().resolve(&job.tool).await else {
            // A node that lags behind a tool change: another node may have
            // the tool; the last delivery answers.
            return Verdict::Retry {
                after: Duration::from_millis(500),
                result: "unknown_tool",
                why: format!(
                    "unknown tool {:?} on node {}: every node must serve the same tools",
                    job.tool, self.node
                ),
            };
        };
        let mut call = ToolCall::new(&job.tool, &job.input);
        call.key = job.key;
        if let Ok(id) = u128::from_str_radix(&job.call, 16) {
            call.id = CallId(id);
        }
        call.origin = "cluster";
        // The caller's trace, passed on to an MCP upstream.
        let trace = job
            .traceparent
            .as_deref()
            .and_then(|t| crate::trace::from_pair(t, job.tracestate.as_deref()))
            .map(|p| Arc::new(crate::trace::context_of(&p)));
        match app.call_entry(&entry, call, trace, None).await {
            Ok(a) => done("ok", String::new(), Bytes::copy_from_slice(&a.output)),
            Err(CallError::Rejected(r)) if r != RejectReason::ShuttingDown => Verdict::Retry {
                after: Duration::from_millis(50),
                result: "busy",
                why: format!("node {}: {}", self.node, CallError::Rejected(r)),
            },
            Err(CallError::ShuttingDown | CallError::Rejected(RejectReason::ShuttingDown)) => {
                Verdict::Retry {
                    after: Duration::ZERO,
                    result: "shutting_down",
                    why: format!("node {} is shutting down", self.node),
                }
            }
            Err(e) => done(e.label(), e.to_string(), Bytes::new()),
        }
    }

    async fn protected(&self, tool: &str) -> bool {
        // Resolved as `execute` resolves it (a tool still loading is
        // waited for); a tool this node lacks is sent back by `execute`,
        // and needs no marker.
        self.app.registry().resolve(tool).await.is_some_and(|e| {
            let a = &e.manifest.annotations;
            !(a.read_only == Some(true) || a.idempotent == Some(true))
        })
    }
}
