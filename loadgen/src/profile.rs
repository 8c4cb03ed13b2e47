//! Workload profiles: checked-in TOML files naming the rate shape, the
//! duration and warm-up, the seed, the tool mix, payload sizes, keys,
//! priorities, engine settings and the SLO. Everything is validated up
//! front; an error names the file, the key and what is accepted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toolplane_pool::Mode;

use crate::units::{self, DURATION_FORMS, RATE_FORMS, SIZE_FORMS};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: Option<String>,
    #[serde(default)]
    description: String,
    seed: u64,
    duration: Option<String>,
    warmup: Option<String>,
    concurrency: Option<usize>,
    connections: Option<usize>,
    drain_timeout: Option<String>,
    rate: RawRate,
    tools: Vec<RawTool>,
    #[serde(default)]
    payload: RawPayload,
    #[serde(default)]
    keys: RawKeys,
    #[serde(default)]
    priority: RawPriority,
    #[serde(default)]
    engine: Option<toolplane_core::Config>,
    #[serde(default)]
    pool: RawPool,
    #[serde(default)]
    slo: RawSlo,
}

#[derive(Deserialize)]
#[serde(tag = "shape", rename_all = "lowercase", deny_unknown_fields)]
enum RawRate {
    Constant {
        rate: String,
    },
    Ramp {
        from: String,
        to: String,
    },
    Steps {
        start: String,
        step: String,
        max: String,
        step_duration: String,
        #[serde(default)]
        find_max: bool,
    },
    Bursts {
        rate: String,
        size: u32,
        every: String,
    },
    Phases {
        phases: Vec<RawPhase>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    label: Option<String>,
    rate: String,
    duration: String,
    burst_size: Option<u32>,
    burst_every: Option<String>,
    #[serde(default = "sustain")]
    expect: Expect,
}

fn sustain() -> Expect {
    Expect::Sustain
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    name: String,
    weight: u32,
    #[serde(default)]
    input: toml::Table,
    payload_field: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayload {
    sizes: Vec<RawSize>,
}

impl Default for RawPayload {
    fn default() -> Self {
        RawPayload {
            sizes: vec![RawSize {
                size: toml::Value::String("64 B".into()),
                weight: 100,
            }],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSize {
    size: toml::Value,
    weight: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    #[serde(default)]
    cardinality: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPriority {
    #[serde(default)]
    low_pct: f64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPool {
    instances: Option<u32>,
    #[serde(default)]
    modes: BTreeMap<String, Mode>,
    tools_dir: Option<PathBuf>,
    fs_inline: Option<bool>,
    warm_slots: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSlo {
    p50: Option<String>,
    p90: Option<String>,
    p95: Option<String>,
    p99: Option<String>,
    p999: Option<String>,
    p9999: Option<String>,
    max: Option<String>,
    max_error_pct: Option<f64>,
    max_shed_pct: Option<f64>,
    max_memory_growth_pct: Option<f64>,
    min_rate_pct: Option<f64>,
    min_sustainable_rate: Option<String>,
}

/// Builds `Invalid` errors for one file.
struct Check<'a>(&'a Path);

impl Check<'_> {
    fn invalid(
        &self,
        key: impl Into<String>,
        value: impl std::fmt::Display,
        accepted: impl Into<String>,
    ) -> ProfileError {
        ProfileError::Invalid {
            path: self.0.to_owned(),
            key: key.into(),
            value: value.to_string(),
            accepted: accepted.into(),
        }
    }

    fn rate(&self, key: &str, text: &str) -> Result<f64, ProfileError> {
        match units::parse_rate(text) {
            Some(r) if r <= MAX_RATE => Ok(r),
            Some(_) => Err(self.invalid(
                key,
                format!("{text:?}"),
                format!("a rate of at most {}", units::fmt_rate(MAX_RATE)),
            )),
            None => Err(self.invalid(key, format!("{text:?}"), RATE_FORMS)),
        }
    }

    fn duration(
        &self,
        key: &str,
        text: &str,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ProfileError> {
        match units::parse_duration(text) {
            Some(d) if d >= min && d <= max => Ok(d),
            Some(_) => Err(self.invalid(
                key,
                format!("{text:?}"),
                format!(
                    "a duration from {} to {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            )),
            None => Err(self.invalid(key, format!("{text:?}"), DURATION_FORMS)),
        }
    }

    fn pct(&self, key: &str, v: Option<f64>) -> Result<Option<f64>, ProfileError> {
        match v {
            Some(p) if !(0.0..=100.0).contains(&p) || p.is_nan() => {
                Err(self.invalid(key, p, "a percentage from 0 to 100"))
            }
            other => Ok(other),
        }
    }
}

const DAY: Duration = Duration::from_secs(24 * 3600);
const HOUR: Duration = Duration::from_secs(3600);
const MS: Duration = Duration::from_millis(1);

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
        let raw: RawProfile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let c = Check(path);
        let name = match raw.name {
            Some(n) if n.trim().is_empty() => {
                return Err(c.invalid("name", "\"\"", "a non-empty name"));
            }
            Some(n) => n,
            None => path
                .file_stem()
                .map_or_else(|| "profile".into(), |s| s.to_string_lossy().into_owned()),
        };
        let warmup = match &raw.warmup {
            Some(w) => c.duration("warmup", w, Duration::ZERO, HOUR)?,
            None => Duration::ZERO,
        };
        let duration = |shape: &str| -> Result<Duration, ProfileError> {
            match &raw.duration {
                Some(d) => c.duration("duration", d, MS, DAY),
                None => Err(c.invalid(
                    "duration",
                    "(missing)",
                    format!("a duration for rate shape {shape:?} ({DURATION_FORMS})"),
                )),
            }
        };
        let no_duration = |shape: &str| -> Result<(), ProfileError> {
            match &raw.duration {
                Some(d) => Err(c.invalid(
                    "duration",
                    format!("{d:?}"),
                    format!("no `duration` with rate shape {shape:?}: its phases set the length"),
                )),
                None => Ok(()),
            }
        };
        let mut find_max = false;
        let phases = match &raw.rate {
            RawRate::Constant { rate } => {
                let r = c.rate("rate.rate", rate)?;
                vec![Phase {
                    label: units::fmt_rate(r),
                    duration: duration("constant")?,
                    from: r,
                    to: r,
                    burst: None,
                    expect: Expect::Sustain,
                }]
            }
            RawRate::Ramp { from, to } => {
                let (a, b) = (c.rate("rate.from", from)?, c.rate("rate.to", to)?);
                vec![Phase {
                    label: format!("{} → {}", units::fmt_rate(a), units::fmt_rate(b)),
                    duration: duration("ramp")?,
                    from: a,
                    to: b,
                    burst: None,
                    expect: Expect::Sustain,
                }]
            }
            RawRate::Bursts { rate, size, every } => {
                let r = c.rate("rate.rate", rate)?;
                let every = c.duration("rate.every", every, MS, HOUR)?;
                if *size == 0 || *size > 1_000_000 {
                    return Err(c.invalid("rate.size", size, "from 1 to 1000000 events per burst"));
                }
                vec![Phase {
                    label: format!(
                        "{} + {size} every {}",
                        units::fmt_rate(r),
                        humantime::format_duration(every)
                    ),
                    duration: duration("bursts")?,
                    from: r,
                    to: r,
                    burst: Some(Burst { size: *size, every }),
                    expect: Expect::Sustain,
                }]
            }
            RawRate::Steps {
                start,
                step,
                max,
                step_duration,
                find_max: fm,
            } => {
                no_duration("steps")?;
                find_max = *fm;
                let start = c.rate("rate.start", start)?;
                let step = c.rate("rate.step", step)?;
                let max = c.rate("rate.max", max)?;
                if max < start {
                    return Err(c.invalid(
                        "rate.max",
                        units::fmt_rate(max),
                        format!("at least rate.start ({})", units::fmt_rate(start)),
                    ));
                }
                let d = c.duration(
                    "rate.step_duration",
                    step_duration,
                    Duration::from_millis(100),
                    HOUR,
                )?;
                let n = ((max - start) / step).floor() as usize + 1;
                if n > MAX_PHASES {
                    return Err(c.invalid("rate.step", units::fmt_rate(step), format!("a step giving at most {MAX_PHASES} steps from rate.start to rate.max (this gives {n})")));
                }
                (0..n)
                    .map(|i| {
                        let r = start + step * i as f64;
                        Phase {
                            label: units::fmt_rate(r),
                            duration: d,
                            from: r,
                            to: r,
                            burst: None,
                            expect: Expect::Sustain,
                        }
                    })
                    .collect()
            }
            RawRate::Phases { phases } => {
                no_duration("phases")?;
                if phases.is_empty() || phases.len() > MAX_PHASES {
                    return Err(c.invalid(
                        "rate.phases",
                        format!("{} phases", phases.len()),
                        format!("from 1 to {MAX_PHASES} phases"),
                    ));
                }
                let mut out = Vec::with_capacity(phases.len());
                for (i, p) in phases.iter().enumerate() {
                    let key = |k: &str| format!("rate.phases[{i}].{k}");
                    let r = c.rate(&key("rate"), &p.rate)?;
                    let d = c.duration(&key("duration"), &p.duration, MS, DAY)?;
                    let burst = match (p.burst_size, &p.burst_every) {
                        (None, None) => None,
                        (Some(size), Some(every)) if size > 0 => Some(Burst {
                            size,
                            every: c.duration(&key("burst_every"), every, MS, HOUR)?,
                        }),
                        (Some(0), _) => {
                            return Err(c.invalid(
                                key("burst_size"),
                                0,
                                "a burst of at least 1 event",
                            ));
                        }
                        _ => {
                            return Err(c.invalid(
                                key("burst_size"),
                                "(one of burst_size, burst_every)",
                                "both burst_size and burst_every, or neither",
                            ));
                        }
                    };
                    let label = p.label.clone().unwrap_or_else(|| units::fmt_rate(r));
                    out.push(Phase {
                        label,
                        duration: d,
                        from: r,
                        to: r,
                        burst,
                        expect: p.expect,
                    });
                }
                out
            }
        };
        if !phases.iter().any(|p| p.expect == Expect::Sustain) {
            return Err(c.invalid(
                "rate.phases",
                "(every phase expects overload)",
                "at least one phase with expect = \"sustain\"",
            ));
        }

        if raw.tools.is_empty() {
            return Err(c.invalid(
                "tools",
                "[]",
                "at least one [[tools]] entry with a name and a weight",
            ));
        }
        let mut tools = Vec::with_capacity(raw.tools.len());
        for (i, t) in raw.tools.iter().enumerate() {
            if t.name.trim().is_empty() {
                return Err(c.invalid(format!("tools[{i}].name"), "\"\"", "a tool name"));
            }
            if tools.iter().any(|x: &ToolMix| x.name == t.name) {
                return Err(c.invalid(
                    format!("tools[{i}].name"),
                    format!("{:?}", t.name),
                    "each tool listed once",
                ));
            }
            let input = match serde_json::to_value(&t.input) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => {
                    return Err(c.invalid(
                        format!("tools[{i}].input"),
                        "(table)",
                        "a table of JSON-compatible values",
                    ));
                }
            };
            let payload_field = t
                .payload_field
                .clone()
                .or_else(|| default_payload_field(&t.name).map(str::to_owned));
            tools.push(ToolMix {
                name: t.name.clone(),
                weight: t.weight,
                input,
                payload_field,
            });
        }
        let total: u64 = tools.iter().map(|t| u64::from(t.weight)).sum();
        if total != 100 {
            let list: Vec<String> = tools
                .iter()
                .map(|t| format!("{} {}", t.name, t.weight))
                .collect();
            return Err(c.invalid(
                "tools[*].weight",
                format!("{} (adding up to {total})", list.join(" + ")),
                "weights that add up to 100",
            ));
        }

        if raw.payload.sizes.is_empty() {
            return Err(c.invalid("payload.sizes", "[]", "at least one { size, weight }"));
        }
        let mut sizes = Vec::with_capacity(raw.payload.sizes.len());
        for (i, s) in raw.payload.sizes.iter().enumerate() {
            let key = format!("payload.sizes[{i}].size");
            let bytes = match &s.size {
                toml::Value::String(t) => units::parse_size(t)
                    .ok_or_else(|| c.invalid(&key, format!("{t:?}"), SIZE_FORMS))?,
                toml::Value::Integer(n) => {
                    u64::try_from(*n).map_err(|_| c.invalid(&key, n, SIZE_FORMS))?
                }
                other => return Err(c.invalid(&key, other, SIZE_FORMS)),
            };
            if bytes > MAX_PAYLOAD {
                return Err(c.invalid(
                    &key,
                    units::Bytes(bytes),
                    format!("at most {}", units::Bytes(MAX_PAYLOAD)),
                ));
            }
            sizes.push((bytes, s.weight));
        }
        let total: u64 = sizes.iter().map(|s| u64::from(s.1)).sum();
        if total != 100 {
            return Err(c.invalid(
                "payload.sizes[*].weight",
                format!("weights adding up to {total}"),
                "weights that add up to 100",
            ));
        }
        let low_priority_pct = c
            .pct("priority.low_pct", Some(raw.priority.low_pct))?
            .unwrap_or(0.0);
        if let Some(n) = raw.concurrency
            && !(1..=1 << 20).contains(&n)
        {
            return Err(c.invalid(
                "concurrency",
                n,
                "from 1 to 1048576 events in flight (omit it for an open loop)",
            ));
        }

        let connections = raw.connections.unwrap_or(DEFAULT_CONNECTIONS);
        if !(1..=65_536).contains(&connections) {
            return Err(c.invalid(
                "connections",
                connections,
                "from 1 to 65536 connections to a server target",
            ));
        }

        let engine = raw.engine.unwrap_or_default();
        if let Err(e) = engine.validate() {
            return Err(match e {
                toolplane_core::ConfigError::Invalid {
                    key,
                    value,
                    accepted,
                    ..
                } => c.invalid(format!("engine.{key}"), value, accepted),
                other => c.invalid("engine", "(table)", other.to_string()),
            });
        }
        let mut pool = PoolSettings {
            instances: raw.pool.instances,
            modes: raw.pool.modes,
            tools_dir: None,
            fs_inline: raw.pool.fs_inline,
            warm_slots: raw.pool.warm_slots,
        };
        if pool.instances == Some(0) {
            return Err(c.invalid(
                "pool.instances",
                0,
                "at least 1 instance slot (omit it to size the pool for the engine)",
            ));
        }
        if let Some(dir) = raw.pool.tools_dir {
            let dir = if dir.is_relative() {
                path.parent().unwrap_or(Path::new(".")).join(dir)
            } else {
                dir
            };
            pool.tools_dir = Some(dir);
        }
        for name in pool.modes.keys() {
            if toolplane_pool::builtin::get(name).is_none() {
                return Err(c.invalid(
                    format!("pool.modes.{name:?}"),
                    "(mode override)",
                    format!("a built-in tool ({})", builtin_names().join(", ")),
                ));
            }
        }

        let s = &raw.slo;
        let mut latency = Vec::new();
        for ((key, q), v) in PERCENTILES
            .iter()
            .zip([&s.p50, &s.p90, &s.p95, &s.p99, &s.p999, &s.p9999, &s.max])
        {
            if let Some(text) = v {
                latency.push((
                    *key,
                    *q,
                    c.duration(&format!("slo.{key}"), text, Duration::from_nanos(1), HOUR)?,
                ));
            }
        }
        let slo = Slo {
            latency,
            max_error_pct: c.pct("slo.max_error_pct", s.max_error_pct)?,
            max_shed_pct: c.pct("slo.max_shed_pct", s.max_shed_pct)?,
            max_memory_growth_pct: match s.max_memory_growth_pct {
                Some(p) if p.is_nan() || p < 0.0 => {
                    return Err(c.invalid(
                        "slo.max_memory_growth_pct",
                        p,
                        "a percentage of at least 0",
                    ));
                }
                other => other,
            },
            min_rate_pct: c.pct("slo.min_rate_pct", s.min_rate_pct)?,
            min_sustainable_rate: match &s.min_sustainable_rate {
                Some(r) => Some(c.rate("slo.min_sustainable_rate", r)?),
                None => None,
            },
        };
        if find_max && !slo.latency.iter().any(|l| l.0 == "p99") {
            return Err(c.invalid(
                "slo.p99",
                "(missing)",
                "a p99 threshold: `find_max` steps the rate up until p99 breaks it",
            ));
        }
        if slo.min_sustainable_rate.is_some() && !find_max {
            return Err(c.invalid(
                "slo.min_sustainable_rate",
                "(set)",
                "`rate.find_max = true` with shape \"steps\"",
            ));
        }
        let drain_timeout = match &raw.drain_timeout {
            Some(d) => c.duration("drain_timeout", d, MS, HOUR)?,
            None => Duration::from_secs(30),
        };
        Ok(Profile {
            path: path.to_owned(),
            name,
            description: raw.description,
            seed: raw.seed,
            warmup,
            phases,
            find_max,
            concurrency: raw.concurrency,
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
