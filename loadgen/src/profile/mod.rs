//! Workload profiles: checked-in TOML files naming the rate shape, the
//! duration and warm-up, the seed, the tool mix, payload sizes, keys,
//! priorities, engine settings and the SLO. Everything is validated up
//! front; an error names the file, the key and what is accepted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toolplane_pool::Mode;

use crate::units;

mod raw;

use self::raw::{Check, RawProfile, RawTool};

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

/// A validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The file it came from.
    pub path: PathBuf,
    /// Its name (the file stem unless set).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Seed of every random choice: the same seed, the same workload.
    pub seed: u64,
    /// Warm-up before the measured phases, at the first phase's rate; not
    /// measured.
    pub warmup: Duration,
    /// The measured schedule.
    pub phases: Vec<Phase>,
    /// Stop at the first step that breaks the SLO and report the highest
    /// rate that held.
    pub find_max: bool,
    /// At most this many events in flight (a connection-bound client);
    /// `None`: open loop.
    pub concurrency: Option<usize>,
    /// Keep-alive connections to a server target (`--target`); each has
    /// one request outstanding.
    pub connections: usize,
    /// The tool mix (weights add up to 100).
    pub tools: Vec<ToolMix>,
    /// Payload sizes with weights (adding up to 100).
    pub sizes: Vec<(u64, u32)>,
    /// Distinct ordering keys; 0 sends events without a key.
    pub key_cardinality: u64,
    /// Percentage of events sent with low (sheddable) priority.
    pub low_priority_pct: f64,
    /// Engine settings.
    pub engine: toolplane_core::Config,
    /// Pool settings.
    pub pool: PoolSettings,
    /// The objectives.
    pub slo: Slo,
    /// How long to wait for events still in flight after the schedule ends.
    pub drain_timeout: Duration,
}

impl Profile {
    /// Reads and validates a profile file.
    ///
    /// # Errors
    ///
    /// The file cannot be read, is not a valid profile, or has a value out
    /// of range; the error names the file and the key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Profile, ProfileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Profile::from_toml_str(&text, path)
    }

    /// Parses and validates a profile; `path` names it in errors and
    /// anchors a relative `pool.tools_dir`.
    ///
    /// # Errors
    ///
    /// As [`Profile::from_file`].
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Profile, ProfileError> {
        let mut raw: RawProfile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let c = Check(path);
        let name = raw.name(&c)?;
        let warmup = raw.warmup(&c)?;
        let (phases, find_max) = raw.phases(&c)?;
        let tools = RawTool::mix(&raw.tools, &c)?;
        let sizes = raw.payload.sizes(&c)?;
        let low_priority_pct = raw.low_priority_pct(&c)?;
        let (concurrency, connections) = raw.client(&c)?;
        let engine = raw.engine(&c)?;
        let pool = raw.pool.settings(&c)?;
        let slo = raw.slo.slo(&c, find_max)?;
        let drain_timeout = raw.drain_timeout(&c)?;
        Ok(Profile {
            path: path.to_owned(),
            name,
            description: raw.description,
            seed: raw.seed,
            warmup,
            phases,
            find_max,
            concurrency,
            connections,
            tools,
            sizes,
            key_cardinality: raw.keys.cardinality,
            low_priority_pct,
            engine,
            pool,
            slo,
            drain_timeout,
        })
    }

    /// Checks the tool mix against the tools a target serves.
    ///
    /// # Errors
    ///
    /// A tool of the mix is not among `available`; the error lists them.
    pub fn check_tools<S: AsRef<str>>(&self, available: &[S]) -> Result<(), ProfileError> {
        for (i, t) in self.tools.iter().enumerate() {
            if !available.iter().any(|a| a.as_ref() == t.name) {
                let list: Vec<&str> = available.iter().map(AsRef::as_ref).collect();
                return Err(Check(&self.path).invalid(
                    format!("tools[{i}].name"),
                    format!("{:?}", t.name),
                    format!("a tool the target serves: {}", list.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// Replaces the rate of a single-phase profile (`--rate`).
    ///
    /// # Errors
    ///
    /// The profile has several phases or a ramp.
    pub fn set_rate(&mut self, rate: f64) -> Result<(), ProfileError> {
        match self.phases.as_mut_slice() {
            [p] if p.from == p.to => {
                p.from = rate;
                p.to = rate;
                p.label = match p.burst {
                    Some(b) => format!("{} + {} every {}", units::fmt_rate(rate), b.size, humantime::format_duration(b.every)),
                    None => units::fmt_rate(rate),
                };
                Ok(())
            }
            _ => Err(Check(&self.path).invalid("rate", "(--rate)", "a profile with one constant-rate phase for --rate; this one has several phases or a ramp")),
        }
    }

    /// Replaces the duration of a single-phase profile (`--duration`).
    ///
    /// # Errors
    ///
    /// The profile has several phases.
    pub fn set_duration(&mut self, d: Duration) -> Result<(), ProfileError> {
        match self.phases.as_mut_slice() {
            [p] => {
                p.duration = d;
                Ok(())
            }
            _ => Err(Check(&self.path).invalid(
                "duration",
                "(--duration)",
                "a profile with one phase for --duration; this one has several",
            )),
        }
    }

    /// Measured length: the phases without the warm-up.
    pub fn measured(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// Warm-up plus the phases.
    pub fn total(&self) -> Duration {
        self.warmup + self.measured()
    }

    /// Events the measured phases schedule.
    pub fn scheduled_events(&self) -> f64 {
        self.phases.iter().map(Phase::events).sum()
    }
}

/// The input field a built-in tool takes its sized payload in.
fn default_payload_field(tool: &str) -> Option<&'static str> {
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
