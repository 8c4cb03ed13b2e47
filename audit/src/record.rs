//! One call's record, as written (JSON in a frame) and as `toolplane audit
//! --json` prints it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What the log keeps of one call that reached admission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When the call was taken, in microseconds since the Unix epoch.
    pub time_us: u64,
    /// The call's id (32 hex digits), as answered to the caller.
    pub call: String,
    /// Who called: a client's name, `local` (stdio, the CLI) or
    /// `anonymous` (a server without clients).
    pub client: Arc<str>,
    /// The tool, by its canonical name.
    pub tool: Arc<str>,
    /// The ordering key, if the call had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u64>,
    /// The outcome, as the metrics label it (`ok`, `invalid_input`,
    /// `rate_limited`, `timeout`, …).
    pub outcome: String,
    /// From taking the call to its outcome, in microseconds.
    pub latency_us: u64,
    /// The SHA-256 of the call's input (64 hex digits).
    pub input_sha256: String,
    /// The input's size in bytes.
    pub input_bytes: u64,
    /// The output's size in bytes (0 without one).
    pub output_bytes: u64,
    /// The W3C trace id the call was part of, if the caller sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// The node that took the call.
    pub node: Arc<str>,
    /// The input itself, with `audit.arguments = true` (as JSON text when
    /// it is UTF-8, else not kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

impl Record {
    /// `time_us` as a time.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.time_us)
    }

    /// Microseconds since the Unix epoch of `t` (0 before it).
    pub fn micros(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros().min(u128::from(u64::MAX)) as u64)
    }

    /// One line for people: time, client, tool, outcome, latency, call id.
    pub fn line(&self) -> String {
        let key = self.key.map(|k| format!(" key={k}")).unwrap_or_default();
        format!(
            "{} {} {} {}{key} {} {}µs in={}B out={}B call={}",
            humantime::format_rfc3339_micros(self.time()),
            self.node,
            self.client,
            self.tool,
            self.outcome,
            self.latency_us,
            self.input_bytes,
            self.output_bytes,
            self.call
        )
    }
}
