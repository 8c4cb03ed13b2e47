//! Why the cluster cannot start, or a call cannot go through it: each
//! error names the setting, the server, the stream or the call.

use std::path::PathBuf;
use std::time::Duration;

/// Any error of a NATS client call, kept as the source.
pub type Source = Box<dyn std::error::Error + Send + Sync>;

/// Why the cluster cannot start, or a call cannot go through it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `[cluster]` holds a setting out of range.
    #[error("{0}")]
    Setting(String),
    /// The credentials file could not be read.
    #[error("cluster.credentials: {}: {source}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No server of `cluster.nats` answered in time.
    #[error("cluster.nats: cannot reach {urls} within {}: {source}", humantime::format_duration(*.waited))]
    Connect {
        /// The URLs tried.
        urls: String,
        /// How long.
        waited: Duration,
        /// The client's reason.
        #[source]
        source: Source,
    },
    /// The server lacks what the cluster needs.
    #[error("cluster.nats: the NATS server at {server} is version {version}: {needs}")]
    Server {
        /// Which server.
        server: String,
        /// Its version.
        version: String,
        /// What is missing, naming the setting that needs it.
        needs: String,
    },
    /// A JetStream request failed (creating or reading a stream, a
    /// consumer or a bucket).
    #[error("cluster: {what}: {source}")]
    JetStream {
        /// What was asked, naming the stream, consumer or bucket.
        what: String,
        /// The client's reason.
        #[source]
        source: Source,
    },
    /// A stream, consumer or bucket exists with other settings than this
    /// node's: it was made by another node, or another version.
    #[error("cluster: {what} exists with {field} = {have}, this node asks {want}{hint}")]
    Mismatch {
        /// The stream, consumer or bucket.
        what: String,
        /// The setting, as the server names it.
        field: &'static str,
        /// What the server holds.
        have: String,
        /// What this node asks.
        want: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The call was not accepted by the stream: it did not run.
    #[error("the cluster did not take the call (nothing ran): {reason}")]
    NotAccepted {
        /// Why: the server's answer, naming the limit when one was hit.
        reason: String,
        /// The client's error.
        #[source]
        source: Option<Source>,
    },
    /// The call was sent, and the stream did not confirm it in time (the
    /// connection dropped, or the server is slow): it may be stored, and
    /// run.
    #[error("the cluster did not confirm call {call} in time: it may still run")]
    Unconfirmed {
        /// The call's id.
        call: String,
        /// The client's error.
        #[source]
        source: Source,
    },
    /// The call was accepted, and no answer came within the wait; it may
    /// have run.
    #[error("no answer from the cluster within {}: the call may have run", humantime::format_duration(*.waited))]
    NoAnswer {
        /// How long the caller waited.
        waited: Duration,
    },
    /// An answer that cannot be read (a node of another version).
    #[error("cluster: an answer from node {node:?} cannot be read: {message}")]
    BadAnswer {
        /// Who sent it, if known.
        node: String,
        /// What is wrong.
        message: String,
    },
}

impl ClusterError {
    pub(crate) fn js(
        what: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ClusterError::JetStream {
            what: what.into(),
            source: Box::new(e),
        }
    }
}
