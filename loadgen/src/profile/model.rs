//! What a profile is, as loadgen uses it: phases, the tool mix, the pool
//! settings, the SLO, and the limits and errors of reading one (a leaf:
//! the raw TOML side and the profile both name these).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toolplane_pool::Mode;

/// The most phases (steps) one profile may have.
pub const MAX_PHASES: usize = 200;
/// The highest rate a profile may ask for.
pub const MAX_RATE: f64 = 10e6;
/// The largest payload a profile may ask for.
pub const MAX_PAYLOAD: u64 = 64 << 20;
/// Connections to a server target when the profile does not say.
pub const DEFAULT_CONNECTIONS: usize = 64;

/// A profile that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file cannot be read.
    #[error("cannot read profile {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type. The message
    /// names the key and the line.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value that parses but is not accepted.
    #[error("{path}: `{key}` = {value} is not accepted; expected {accepted}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, as written (`rate.rate`, `tools[2].name`).
        key: String,
        /// The value, as written.
        value: String,
        /// What would be accepted.
        accepted: String,
    },
}

/// Whether a phase must hold the SLO or is expected to overload the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The SLO applies.
    Sustain,
    /// Rejections are expected; only memory and the books are checked.
    Overload,
}

/// Simultaneous events on top of a phase's rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    /// Events sent at once.
    pub size: u32,
    /// Time between bursts (the first one comes `every` into the phase).
    pub every: Duration,
}

/// One stretch of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// For reports: `"10k/s"`, `"step 3"`, `"overload"`.
    pub label: String,
    /// How long it lasts.
    pub duration: Duration,
    /// Rate at its start, events per second.
    pub from: f64,
    /// Rate at its end (equal to `from` unless the rate ramps).
    pub to: f64,
    /// Bursts on top of the rate.
    pub burst: Option<Burst>,
    /// Whether the SLO applies.
    pub expect: Expect,
}

impl Phase {
    /// Events this phase schedules (rate integral plus bursts).
    pub fn events(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        let bursts = self.burst.map_or(0.0, |b| {
            (secs / b.every.as_secs_f64()).floor() * f64::from(b.size)
        });
        (self.from + self.to) / 2.0 * secs + bursts
    }

    /// The average rate this phase asks for.
    pub fn mean_rate(&self) -> f64 {
        self.events() / self.duration.as_secs_f64()
    }
}

/// One tool of the mix.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolMix {
    /// The tool's name.
    pub name: String,
    /// Share of events, in percent.
    pub weight: u32,
    /// Fixed input fields (a JSON object).
    pub input: serde_json::Map<String, serde_json::Value>,
    /// The input field the sized payload goes in (`None`: input as is).
    pub payload_field: Option<String>,
}

/// Pool settings for the embedded target.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolSettings {
    /// Instance slots (default: sized for the engine).
    pub instances: Option<u32>,
    /// Per-tool mode overrides for built-ins.
    pub modes: BTreeMap<String, Mode>,
    /// A tools directory served beside the built-ins.
    pub tools_dir: Option<PathBuf>,
    /// File operations on the worker's thread (default: on, for the
    /// embedded target's private data directory).
    pub fs_inline: Option<bool>,
    /// Free slots kept warm for their tool before a never-used slot is
    /// touched (default: the pool's `max_unused_warm_slots`).
    pub warm_slots: Option<u32>,
}

/// Service-level objectives. Latency thresholds apply to corrected latency
/// over the measured (post-warm-up, `sustain`) events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Slo {
    /// Percentile thresholds: (name as in the report, quantile, limit).
    pub latency: Vec<(&'static str, f64, Duration)>,
    /// Most errors (error, timeout, trap, panic, cancelled, unfinished)
    /// as a percentage of completed events.
    pub max_error_pct: Option<f64>,
    /// Most rejected events as a percentage of scheduled events.
    pub max_shed_pct: Option<f64>,
    /// Most resident-memory growth after warm-up, in percent.
    pub max_memory_growth_pct: Option<f64>,
    /// Least achieved rate as a percentage of the target, per phase.
    pub min_rate_pct: Option<f64>,
    /// For step profiles with `find_max`: the least sustainable rate.
    pub min_sustainable_rate: Option<f64>,
    /// Whether the latency thresholds decide the verdict (the default), or
    /// are reported beside it (`loadgen run --latency-slo report`): a run
    /// on a shared machine, such as CI's, whose deterministic checks must
    /// hold but whose tail a neighbour's stall can move.
    pub latency_judged: bool,
}

/// The percentile keys an SLO (and a report) knows, with their quantiles.
pub const PERCENTILES: [(&str, f64); 7] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p999", 99.9),
    ("p9999", 99.99),
    ("max", 100.0),
];

/// The input field a built-in tool takes its sized payload in.
pub(crate) fn default_payload_field(tool: &str) -> Option<&'static str> {
    match tool {
        "echo" | "hash.sha256" => Some("data"),
        "fs.write" => Some("content"),
        "fs.read" => Some("length"),
        _ => None,
    }
}

/// The built-in tools' names.
pub fn builtin_names() -> Vec<&'static str> {
    toolplane_pool::builtin::BUILTINS
        .iter()
        .map(|b| b.name)
        .collect()
}
