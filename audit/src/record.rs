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
    /// In a cluster, the node that ran it (it may be another than the one
    /// that took it; none when it did not reach a node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_on: Option<Arc<str>>,
    /// With an OAuth access token: its subject (`sub`), the user or agent
    /// the client acted for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The input itself, with `audit.arguments = true` (as JSON text when
    /// it is UTF-8, else not kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// The input was to be kept but was left out: the record would have
    /// been larger than a frame holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub arguments_omitted: bool,
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

    /// One line for people: time, node, client, tool, outcome, latency,
    /// sizes, call id. Names are printed escaped (a client name from an
    /// access token could hold a newline or a terminal's escape sequence),
    /// and quoted when they hold a space.
    pub fn line(&self) -> String {
        let key = self.key.map(|k| format!(" key={k}")).unwrap_or_default();
        let ran = self
            .ran_on
            .as_deref()
            .filter(|n| **n != *self.node)
            .map(|n| format!(" ran_on={}", plain(n)))
            .unwrap_or_default();
        let sub = self
            .subject
            .as_deref()
            .map(|s| format!(" sub={}", plain(s)))
            .unwrap_or_default();
        format!(
            "{} {} {}{sub} {}{key} {} {}µs in={}B out={}B call={}{ran}",
            humantime::format_rfc3339_micros(self.time()),
            plain(&self.node),
            plain(&self.client),
            plain(&self.tool),
            plain(&self.outcome),
            self.latency_us,
            self.input_bytes,
            self.output_bytes,
            plain(&self.call)
        )
    }
}

/// A record for tests: call `n`, keyed `n`.
#[cfg(test)]
pub(crate) fn sample(n: u64) -> Record {
    Record {
        time_us: 1_700_000_000_000_000 + n,
        call: format!("{n:032x}"),
        client: Arc::from("bot"),
        tool: Arc::from("echo"),
        key: Some(n),
        outcome: "ok".into(),
        latency_us: 12,
        input_sha256: "0".repeat(64),
        input_bytes: 2,
        output_bytes: 2,
        trace: None,
        node: Arc::from("n1"),
        ran_on: None,
        subject: None,
        arguments: None,
        arguments_omitted: false,
    }
}

/// `text` as one word of a line: control characters escaped, quoted if it
/// holds a space or a quote.
fn plain(text: &str) -> String {
    if !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '"')
    {
        return text.to_string();
    }
    format!("{:?}", text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_cannot_be_forged_through_a_name() {
        let r = Record {
            time_us: 0,
            call: "c".into(),
            client: Arc::from("evil\n2026-01-01T00:00:00Z n1 admin echo ok\x1b[2J"),
            tool: Arc::from("echo"),
            key: None,
            outcome: "ok".into(),
            latency_us: 1,
            input_sha256: String::new(),
            input_bytes: 0,
            output_bytes: 0,
            trace: None,
            node: Arc::from("n1"),
            ran_on: Some(Arc::from("n2\nx")),
            subject: Some("a b".into()),
            arguments: None,
            arguments_omitted: false,
        };
        let line = r.line();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(!line.contains('\x1b'), "{line}");
        assert!(line.contains("sub=\"a b\""), "{line}");
        assert!(line.ends_with(r#" ran_on="n2\nx""#), "{line}");
    }
}
