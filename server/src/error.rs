//! Why a call did not produce the tool's output, in one place: the error
//! type every surface returns ([`CallError`]), how an engine outcome or
//! rejection becomes one, the result label each is counted under
//! ([`CallResult`]), and the HTTP status each gives (its answer, through
//! `IntoResponse`, is in `http.rs`; MCP's, from the same type, in
//! `mcp.rs`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use toolplane_core::{Outcome, Payload, RejectReason};
use toolplane_pool::LoadError;

/// Why a call did not produce the tool's output.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No tool has this name.
    #[error("unknown tool {0:?}")]
    UnknownTool(String),
    /// The tool is listed but could not be loaded.
    #[error("tool {tool} is unavailable: {reason}")]
    Unavailable {
        /// The tool.
        tool: String,
        /// Why it did not load.
        #[source]
        reason: Arc<LoadError>,
    },
    /// The input is not JSON or does not match the tool's schema; the
    /// message names the field.
    #[error("{0}")]
    InvalidInput(String),
    /// Admission refused the call.
    #[error("the engine refused the call: {0}")]
    Rejected(RejectReason),
    /// The tool refused the call for load after the engine accepted it (a
    /// process tool's full queue); the message names the tool and limit.
    #[error("{message}")]
    Refused {
        /// Which limit.
        reason: RejectReason,
        /// The tool's words.
        message: String,
    },
    /// The server (or its engine) is draining for shutdown.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The tool reported an error, or its output does not match its
    /// `output_schema`.
    #[error("{0}")]
    Tool(String),
    /// The tool trapped.
    #[error("tool {tool} trapped: {message}")]
    Trapped {
        /// The tool.
        tool: String,
        /// The trap.
        message: String,
    },
    /// The call ran past its deadline.
    #[error("tool {0} timed out")]
    Timeout(String),
    /// The engine stopped before the call finished.
    #[error("the call was cancelled at shutdown")]
    Cancelled,
    /// The tool's handler panicked (a fault of this server).
    #[error("internal fault: the handler of tool {tool} panicked: {message}")]
    Panicked {
        /// The tool.
        tool: String,
        /// The panic's message.
        message: String,
    },
    /// The engine dropped the call without an answer (a fault of this
    /// server).
    #[error("internal fault: {0}")]
    Lost(#[from] toolplane_core::Lost),
    /// The caller's client may not make this call now: the tool is outside
    /// its scope, it is over a rate, or its queue is full or timed out.
    #[error(transparent)]
    Client(#[from] Refusal),
    /// The audit log cannot take the call's record, and answers wait for
    /// their records (`audit.durability = "before-answer"`): refused before
    /// running while the log fails, or, for a call that ran meanwhile, its
    /// answer withheld.
    #[error("{0}")]
    Audit(#[source] std::sync::Arc<toolplane_audit::AuditError>),
    /// The call ran on another node of the cluster and did not produce
    /// the tool's output there: that node's result and words.
    #[error("{message}")]
    Remote {
        /// The node that ran it.
        node: String,
        /// Its result there.
        result: CallResult,
        /// Why, as that node said (naming the tool, the limit, the node).
        message: String,
    },
    /// The cluster did not take the call (nothing ran), or took it and
    /// gave no answer in time.
    #[error("{0}")]
    Cluster(#[source] Arc<toolplane_cluster::ClusterError>),
}

impl CallError {
    /// The engine's answer to a call of `tool`: its output, or why not.
    ///
    /// # Errors
    ///
    /// Every outcome but `Ok`.
    pub fn from_outcome(tool: &str, outcome: Outcome) -> Result<Payload, CallError> {
        match outcome {
            Outcome::Ok(out) => Ok(out),
            Outcome::Error(m) => Err(CallError::Tool(m.into_owned())),
            Outcome::Trap(m) => Err(CallError::Trapped {
                tool: tool.to_string(),
                message: m.into_owned(),
            }),
            Outcome::Timeout => Err(CallError::Timeout(tool.to_string())),
            Outcome::Cancelled => Err(CallError::Cancelled),
            Outcome::Refused(reason, m) => Err(CallError::Refused {
                reason,
                message: m.into_owned(),
            }),
            Outcome::Panicked(m) => Err(CallError::Panicked {
                tool: tool.to_string(),
                message: m.into_owned(),
            }),
        }
    }

    /// A call admission refused.
    pub fn rejected(reason: RejectReason) -> CallError {
        match reason {
            RejectReason::ShuttingDown => CallError::ShuttingDown,
            r => CallError::Rejected(r),
        }
    }

    /// What the call is counted as.
    pub fn result(&self) -> CallResult {
        match self {
            CallError::UnknownTool(_) => CallResult::UnknownTool,
            CallError::Unavailable { .. } => CallResult::Unavailable,
            CallError::InvalidInput(_) => CallResult::InvalidInput,
            CallError::Rejected(r) | CallError::Refused { reason: r, .. } => match r {
                RejectReason::Full => CallResult::Full,
                RejectReason::Shed => CallResult::Shed,
                RejectReason::InflightLimit => CallResult::InflightLimit,
                RejectReason::ShuttingDown => CallResult::ShuttingDown,
                RejectReason::Busy => CallResult::Busy,
            },
            CallError::ShuttingDown => CallResult::ShuttingDown,
            CallError::Tool(_) | CallError::Trapped { .. } => CallResult::Error,
            CallError::Timeout(_) => CallResult::Timeout,
            CallError::Cancelled => CallResult::Cancelled,
            CallError::Panicked { .. } | CallError::Lost(_) => CallResult::Internal,
            CallError::Client(r) => match r {
                Refusal::OutOfScope { .. } => CallResult::OutOfScope,
                Refusal::RateLimited { .. } => CallResult::RateLimited,
                Refusal::QueueFull { .. } => CallResult::QueueFull,
                Refusal::QueueTimeout { .. } => CallResult::QueueTimeout,
            },
            CallError::Audit(_) => CallResult::AuditUnavailable,
            CallError::Remote { result, .. } => *result,
            CallError::Cluster(e) => match **e {
                toolplane_cluster::ClusterError::NoAnswer { .. }
                | toolplane_cluster::ClusterError::Unconfirmed { .. } => CallResult::Timeout,
                _ => CallResult::ClusterUnavailable,
            },
        }
    }

    /// How long the caller should wait before trying again, for the
    /// refusals that say (a rate's next cell).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Client(r) => Some(r.retry_after()),
            _ => None,
        }
    }

    /// The JSON-RPC error code an MCP `tools/call` answers with (the rest
    /// are `isError` results): a tool the client does not know, or may not
    /// see, is invalid params.
    pub fn mcp_error_code(&self) -> Option<i32> {
        match self {
            CallError::UnknownTool(_) | CallError::Client(Refusal::OutOfScope { .. }) => {
                Some(rmcp::model::ErrorCode::INVALID_PARAMS.0)
            }
            _ => None,
        }
    }

    /// What failed, without what the caller sent or the tool wrote (a
    /// schema error quotes the input, a tool's error is its own text, a
    /// trap or panic may hold either): for records that leave the server
    /// (a span's status).
    pub fn described(&self) -> Cow<'static, str> {
        match self {
            CallError::UnknownTool(_) => "unknown tool".into(),
            CallError::InvalidInput(_) => "the input does not match the tool's input schema".into(),
            CallError::Tool(_) => "the tool answered with an error".into(),
            CallError::Trapped { tool, .. } => format!("tool {tool} trapped").into(),
            CallError::Panicked { tool, .. } => {
                format!("internal fault: the handler of tool {tool} panicked").into()
            }
            CallError::Remote { node, result, .. } => {
                format!("{} on node {node}", result.as_str()).into()
            }
            e => e.to_string().into(),
        }
    }

    /// A short label for metrics and for the `kind` of an HTTP error.
    pub fn label(&self) -> &'static str {
        self.result().as_str()
    }

    /// The HTTP status of a failed call.
    pub fn status(&self) -> StatusCode {
        match self {
            CallError::Remote { result, .. } => result.status(),
            CallError::Cluster(_) => self.result().status(),
            CallError::UnknownTool(_) => StatusCode::NOT_FOUND,
            CallError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            CallError::Rejected(_) | CallError::Refused { .. } => StatusCode::TOO_MANY_REQUESTS,
            CallError::ShuttingDown | CallError::Cancelled | CallError::Audit(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // Not 503: the tool stays broken until its files change, so a
            // client must not be told to retry.
            CallError::Unavailable { .. } => StatusCode::FAILED_DEPENDENCY,
            CallError::Tool(_) | CallError::Trapped { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            CallError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            CallError::Panicked { .. } | CallError::Lost(_) => StatusCode::INTERNAL_SERVER_ERROR,
            CallError::Client(Refusal::OutOfScope { .. }) => StatusCode::FORBIDDEN,
            CallError::Client(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// Why a client's call was refused before it reached the engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// The tool is not in the client's `tools`.
    #[error("client {client:?} may not call tool {tool:?} (clients.tools)")]
    OutOfScope {
        /// The client.
        client: Arc<str>,
        /// The tool (canonical name).
        tool: String,
    },
    /// Over the client's rate, or its rate for the tool.
    #[error(
        "client {client:?} is over its rate{}, {rate} ({}): retry in {}",
        .rule.as_ref().map(|r| format!(" for {r:?}")).unwrap_or_default(),
        if .rule.is_some() { "clients.tools_rate" } else { "clients.rate" },
        humantime::format_duration(round_ms(*.retry_after))
    )]
    RateLimited {
        /// The client.
        client: Arc<str>,
        /// The `tools_rate` pattern, when that rate was the one.
        rule: Option<String>,
        /// The rate, as the file gives it.
        rate: String,
        /// When a call would pass.
        retry_after: Duration,
    },
    /// Every slot busy and the queue full.
    #[error(
        "client {client:?} has {max_inflight} calls running (clients.max_inflight) and {queue} waiting (clients.queue): retry later"
    )]
    QueueFull {
        /// The client.
        client: Arc<str>,
        /// Its slots.
        max_inflight: u32,
        /// Its queue.
        queue: u32,
    },
    /// Waited `queue_timeout` without a slot.
    #[error(
        "client {client:?} waited {} for one of its {max_inflight} slots (clients.queue_timeout): retry later",
        humantime::format_duration(*.waited)
    )]
    QueueTimeout {
        /// The client.
        client: Arc<str>,
        /// Its slots.
        max_inflight: u32,
        /// The wait.
        waited: Duration,
    },
}

/// To the millisecond, at least 1 ms (a wait shown as "0s" reads wrong).
fn round_ms(d: Duration) -> Duration {
    Duration::from_millis((d.as_millis() as u64).max(1))
}

impl Refusal {
    /// How long a caller should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        match self {
            Refusal::RateLimited { retry_after, .. } => *retry_after,
            Refusal::OutOfScope { .. } => Duration::ZERO,
            Refusal::QueueFull { .. } | Refusal::QueueTimeout { .. } => Duration::from_secs(1),
        }
    }
}

/// Every result a call through the server can have, as counted per tool:
/// `ok`, one per kind of [`CallError`], and `abandoned` (the caller went
/// away or cancelled the request before the answer; the engine does not
/// start the event or stops it at its next check, and counts it
/// `cancelled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallResult {
    /// The tool's output.
    Ok,
    /// [`CallError::UnknownTool`].
    UnknownTool,
    /// [`CallError::Unavailable`].
    Unavailable,
    /// [`CallError::InvalidInput`].
    InvalidInput,
    /// Refused: the worker's ring is full.
    Full,
    /// Refused: shed.
    Shed,
    /// Refused: the in-flight budget is spent.
    InflightLimit,
    /// Refused: shutting down.
    ShuttingDown,
    /// Refused by the tool: its queue is full.
    Busy,
    /// The tool failed or trapped.
    Error,
    /// [`CallError::Timeout`].
    Timeout,
    /// [`CallError::Cancelled`].
    Cancelled,
    /// A fault of this server.
    Internal,
    /// The caller went away first.
    Abandoned,
    /// The tool is outside the client's `tools`.
    OutOfScope,
    /// Over the client's rate (or its rate for the tool).
    RateLimited,
    /// The client's slots busy and its queue full.
    QueueFull,
    /// The client's queue wait ran out.
    QueueTimeout,
    /// [`CallError::Audit`].
    AuditUnavailable,
    /// [`CallError::Cluster`]: the cluster did not take the call.
    ClusterUnavailable,
}

impl CallResult {
    /// Every result, in the order counters keep them.
    pub const ALL: [CallResult; 20] = [
        CallResult::Ok,
        CallResult::UnknownTool,
        CallResult::Unavailable,
        CallResult::InvalidInput,
        CallResult::Full,
        CallResult::Shed,
        CallResult::InflightLimit,
        CallResult::ShuttingDown,
        CallResult::Busy,
        CallResult::Error,
        CallResult::Timeout,
        CallResult::Cancelled,
        CallResult::Internal,
        CallResult::Abandoned,
        CallResult::OutOfScope,
        CallResult::RateLimited,
        CallResult::QueueFull,
        CallResult::QueueTimeout,
        CallResult::AuditUnavailable,
        CallResult::ClusterUnavailable,
    ];

    /// The result a label names (as another node of the cluster sends it).
    pub fn from_label(label: &str) -> Option<CallResult> {
        CallResult::ALL.into_iter().find(|r| r.as_str() == label)
    }

    /// The HTTP status of a call with this result (as [`CallError::status`]
    /// gives it for each error).
    pub fn status(self) -> StatusCode {
        match self {
            CallResult::Ok => StatusCode::OK,
            CallResult::UnknownTool => StatusCode::NOT_FOUND,
            CallResult::InvalidInput => StatusCode::BAD_REQUEST,
            CallResult::Full
            | CallResult::Shed
            | CallResult::InflightLimit
            | CallResult::Busy
            | CallResult::RateLimited
            | CallResult::QueueFull
            | CallResult::QueueTimeout => StatusCode::TOO_MANY_REQUESTS,
            CallResult::ShuttingDown
            | CallResult::Cancelled
            | CallResult::AuditUnavailable
            | CallResult::ClusterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            CallResult::Unavailable => StatusCode::FAILED_DEPENDENCY,
            CallResult::Error => StatusCode::UNPROCESSABLE_ENTITY,
            CallResult::Timeout => StatusCode::GATEWAY_TIMEOUT,
            CallResult::Internal | CallResult::Abandoned => StatusCode::INTERNAL_SERVER_ERROR,
            CallResult::OutOfScope => StatusCode::FORBIDDEN,
        }
    }

    /// Its metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            CallResult::Ok => "ok",
            CallResult::UnknownTool => "unknown_tool",
            CallResult::Unavailable => "unavailable",
            CallResult::InvalidInput => "invalid_input",
            CallResult::Full => RejectReason::Full.as_str(),
            CallResult::Shed => RejectReason::Shed.as_str(),
            CallResult::InflightLimit => RejectReason::InflightLimit.as_str(),
            CallResult::ShuttingDown => RejectReason::ShuttingDown.as_str(),
            CallResult::Busy => RejectReason::Busy.as_str(),
            CallResult::Error => "error",
            CallResult::Timeout => "timeout",
            CallResult::Cancelled => "cancelled",
            CallResult::Internal => "internal",
            CallResult::Abandoned => "abandoned",
            CallResult::OutOfScope => "out_of_scope",
            CallResult::RateLimited => "rate_limited",
            CallResult::QueueFull => "queue_full",
            CallResult::QueueTimeout => "queue_timeout",
            CallResult::AuditUnavailable => "audit_unavailable",
            CallResult::ClusterUnavailable => "cluster_unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> CallError {
        CallError::Unavailable {
            tool: "t".into(),
            reason: Arc::new(LoadError::Wasi(toolplane_pool::WasiLoadError::NoEntry)),
        }
    }

    #[test]
    fn every_call_error_has_the_status_the_api_promises() {
        let cases = [
            (CallError::UnknownTool("x".into()), 404),
            (CallError::InvalidInput("at /n".into()), 400),
            (CallError::Rejected(RejectReason::Full), 429),
            (CallError::Rejected(RejectReason::Shed), 429),
            (CallError::Rejected(RejectReason::InflightLimit), 429),
            (
                CallError::Refused {
                    reason: RejectReason::Busy,
                    message: "tool t is busy".into(),
                },
                429,
            ),
            (CallError::ShuttingDown, 503),
            (CallError::Cancelled, 503),
            (unavailable(), 424),
            (CallError::Tool("bad".into()), 422),
            (CallError::Timeout("t".into()), 504),
            (CallError::Lost(toolplane_core::Lost), 500),
        ];
        for (e, status) in cases {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            // A node of the cluster answers with the result's label; its
            // status there is the one the error has here.
            let remote = CallError::Remote {
                node: "n2".into(),
                result: CallResult::from_label(e.label()).unwrap(),
                message: e.to_string(),
            };
            assert_eq!(remote.status(), e.status(), "{e:?}");
            assert_eq!(remote.label(), e.label());
        }
    }

    #[test]
    fn every_error_counts_under_its_own_label() {
        let cases = [
            (CallError::UnknownTool("x".into()), "unknown_tool"),
            (unavailable(), "unavailable"),
            (CallError::InvalidInput("i".into()), "invalid_input"),
            (CallError::Rejected(RejectReason::Full), "full"),
            (CallError::Rejected(RejectReason::Shed), "shed"),
            (
                CallError::Rejected(RejectReason::InflightLimit),
                "inflight_limit",
            ),
            (
                CallError::Rejected(RejectReason::ShuttingDown),
                "shutting_down",
            ),
            (CallError::ShuttingDown, "shutting_down"),
            (
                CallError::Refused {
                    reason: RejectReason::Busy,
                    message: "tool t is busy".into(),
                },
                "busy",
            ),
            (CallError::Tool("e".into()), "error"),
            (CallError::Timeout("t".into()), "timeout"),
            (CallError::Cancelled, "cancelled"),
            (CallError::Lost(toolplane_core::Lost), "internal"),
        ];
        for (e, label) in cases {
            assert_eq!(e.label(), label, "{e:?}");
        }
        for r in RejectReason::ALL {
            assert_eq!(CallError::Rejected(r).label(), r.as_str());
        }
        // Every result has its own label, and ALL is in discriminant order
        // (counters index it by `as usize`).
        for (i, r) in CallResult::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(
                !CallResult::ALL[..i]
                    .iter()
                    .any(|o| o.as_str() == r.as_str())
            );
        }
    }
}
