//! Progress of a call, from the tool to whoever asked for it: a caller
//! (the MCP front, for a client that sent a `progressToken`) registers a
//! sink and tags its event with the number it gets; the handler takes the
//! sink for that event and hands it to the call; an upstream MCP server's
//! `notifications/progress` for the call go into it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Sinks waiting for their events, by event tag.
#[derive(Debug, Default)]
pub struct ProgressHub {
    next: AtomicU64,
    sinks: Mutex<HashMap<u64, ProgressSink>>,
}

impl ProgressHub {
    /// Registers `sink`; the tag to give the call's event (never 0, the
    /// tag of an event nobody watches).
    pub fn register(&self, sink: ProgressSink) -> u64 {
        let tag = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.sinks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tag, sink);
        tag
    }

    /// The sink of the event tagged `tag`, taken (once).
    pub fn take(&self, tag: u64) -> Option<ProgressSink> {
        if tag == 0 {
            return None;
        }
        self.sinks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&tag)
    }
}
