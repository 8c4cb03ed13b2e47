//! Progress of a call, from the tool to whoever asked for it: a caller
//! (the MCP front, for a client that sent a `progressToken`) attaches a
//! sink to its call (`toolplane_pool::PerCall`); the handler hands it to
//! the call; an upstream MCP server's `notifications/progress` for the
//! call go into it.

/// One progress report.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Progress so far (increasing).
    pub progress: f64,
    /// The total, when known.
    pub total: Option<f64>,
    /// What is happening, in words.
    pub message: Option<String>,
}

/// Where a call's progress goes: bounded, so a tool that reports faster
/// than its caller's client takes the reports cannot grow our memory;
/// reports past [`BACKLOG`] are dropped (a later one says more anyway).
pub type ProgressSink = tokio::sync::mpsc::Sender<Progress>;

/// How many of a call's reports may wait for its caller.
pub const BACKLOG: usize = 256;

/// A sink and its reports, holding up to [`BACKLOG`].
pub fn channel() -> (ProgressSink, tokio::sync::mpsc::Receiver<Progress>) {
    tokio::sync::mpsc::channel(BACKLOG)
}
