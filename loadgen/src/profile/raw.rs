//! A profile as its TOML says it, and each section's check: the units
//! deserialize themselves ([`Written`]), and every section turns itself
//! into its validated form, naming the key and what is accepted when a
//! value is not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toolplane_pool::Mode;

use super::model::{
    Burst, DEFAULT_CONNECTIONS, Expect, MAX_PAYLOAD, MAX_PHASES, MAX_RATE, PERCENTILES, Phase,
    PoolSettings, ProfileError, Slo, ToolMix, builtin_names, default_payload_field,
};
use crate::units::{self, DURATION_FORMS, Rate, Size, Time, Written};

pub(super) const DAY: Duration = Duration::from_secs(24 * 3600);
pub(super) const HOUR: Duration = Duration::from_secs(3600);
const MS: Duration = Duration::from_millis(1);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) description: String,
    pub(super) seed: u64,
    pub(super) duration: Option<Written<Time>>,
    pub(super) warmup: Option<Written<Time>>,
    pub(super) concurrency: Option<usize>,
    pub(super) connections: Option<usize>,
    #[serde(default)]
    pub(super) needs_target: bool,
    pub(super) drain_timeout: Option<Written<Time>>,
    pub(super) rate: RawRate,
    pub(super) tools: Vec<RawTool>,
    #[serde(default)]
    pub(super) payload: RawPayload,
    #[serde(default)]
    pub(super) keys: RawKeys,
    #[serde(default)]
    pub(super) priority: RawPriority,
    #[serde(default)]
    pub(super) engine: Option<toolplane_core::Config>,
    #[serde(default)]
    pub(super) pool: RawPool,
    #[serde(default)]
    pub(super) slo: RawSlo,
}

#[derive(Deserialize)]
#[serde(tag = "shape", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawRate {
    Constant {
        rate: Written<Rate>,
    },
    Ramp {
        from: Written<Rate>,
        to: Written<Rate>,
    },
    Steps {
        start: Written<Rate>,
        step: Written<Rate>,
        max: Written<Rate>,
        step_duration: Written<Time>,
        #[serde(default)]
        find_max: bool,
    },
    Bursts {
        rate: Written<Rate>,
        size: u32,
        every: Written<Time>,
    },
    Phases {
        phases: Vec<RawPhase>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPhase {
    label: Option<String>,
    rate: Written<Rate>,
    duration: Written<Time>,
    burst_size: Option<u32>,
    burst_every: Option<Written<Time>>,
    #[serde(default = "sustain")]
    expect: Expect,
}

fn sustain() -> Expect {
    Expect::Sustain
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTool {
    name: String,
    weight: u32,
    #[serde(default)]
    input: toml::Table,
    payload_field: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPayload {
    sizes: Vec<RawSize>,
}

impl Default for RawPayload {
    fn default() -> Self {
        RawPayload {
            sizes: vec![RawSize {
                size: Written::new("64 B"),
                weight: 100,
            }],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSize {
    size: Written<Size>,
    weight: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeys {
    #[serde(default)]
    pub(super) cardinality: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPriority {
    #[serde(default)]
    pub(super) low_pct: f64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    instances: Option<u32>,
    #[serde(default)]
    modes: BTreeMap<String, Mode>,
    tools_dir: Option<PathBuf>,
    fs_inline: Option<bool>,
    warm_slots: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlo {
    p50: Option<Written<Time>>,
    p90: Option<Written<Time>>,
    p95: Option<Written<Time>>,
    p99: Option<Written<Time>>,
    p999: Option<Written<Time>>,
    p9999: Option<Written<Time>>,
    max: Option<Written<Time>>,
    max_error_pct: Option<f64>,
    max_shed_pct: Option<f64>,
    max_memory_growth_pct: Option<f64>,
    min_rate_pct: Option<f64>,
    min_sustainable_rate: Option<Written<Rate>>,
}

/// Builds `Invalid` errors for one file.
pub(super) struct Check<'a>(pub(super) &'a Path);

impl Check<'_> {
    pub(super) fn invalid(
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

    pub(super) fn rate(&self, key: &str, w: &Written<Rate>) -> Result<f64, ProfileError> {
        match w.value {
            Some(r) if r <= MAX_RATE => Ok(r),
            Some(_) => Err(self.invalid(
                key,
                &w.text,
                format!("a rate of at most {}", units::fmt_rate(MAX_RATE)),
            )),
            None => Err(self.invalid(key, &w.text, units::RATE_FORMS)),
        }
    }

    pub(super) fn duration(
        &self,
        key: &str,
        w: &Written<Time>,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ProfileError> {
        match w.value {
            Some(d) if d >= min && d <= max => Ok(d),
            Some(_) => Err(self.invalid(
                key,
                &w.text,
                format!(
                    "a duration from {} to {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            )),
            None => Err(self.invalid(key, &w.text, DURATION_FORMS)),
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

impl RawProfile {
    /// The name: as set, else the file stem.
    pub(super) fn name(&self, c: &Check<'_>) -> Result<String, ProfileError> {
        match &self.name {
            Some(n) if n.trim().is_empty() => Err(c.invalid("name", "\"\"", "a non-empty name")),
            Some(n) => Ok(n.clone()),
            None => Ok(c
                .0
                .file_stem()
                .map_or_else(|| "profile".into(), |s| s.to_string_lossy().into_owned())),
        }
    }

    pub(super) fn warmup(&self, c: &Check<'_>) -> Result<Duration, ProfileError> {
        match &self.warmup {
            Some(w) => c.duration("warmup", w, Duration::ZERO, HOUR),
            None => Ok(Duration::ZERO),
        }
    }

    pub(super) fn drain_timeout(&self, c: &Check<'_>) -> Result<Duration, ProfileError> {
        match &self.drain_timeout {
            Some(d) => c.duration("drain_timeout", d, MS, HOUR),
            None => Ok(Duration::from_secs(30)),
        }
    }

    pub(super) fn low_priority_pct(&self, c: &Check<'_>) -> Result<f64, ProfileError> {
        Ok(c.pct("priority.low_pct", Some(self.priority.low_pct))?
            .unwrap_or(0.0))
    }

    /// `concurrency` and `connections`.
    pub(super) fn client(&self, c: &Check<'_>) -> Result<(Option<usize>, usize), ProfileError> {
        if let Some(n) = self.concurrency
            && !(1..=1 << 20).contains(&n)
        {
            return Err(c.invalid(
                "concurrency",
                n,
                "from 1 to 1048576 events in flight (omit it for an open loop)",
            ));
        }
        let connections = self.connections.unwrap_or(DEFAULT_CONNECTIONS);
        if !(1..=65_536).contains(&connections) {
            return Err(c.invalid(
                "connections",
                connections,
                "from 1 to 65536 connections to a server target",
            ));
        }
        Ok((self.concurrency, connections))
    }

    /// The engine's settings, checked by the engine's own rules.
    pub(super) fn engine(&mut self, c: &Check<'_>) -> Result<toolplane_core::Config, ProfileError> {
        let engine = self.engine.take().unwrap_or_default();
        match engine.validate() {
            Ok(()) => Ok(engine),
            Err(toolplane_core::ConfigError::Invalid {
                key,
                value,
                accepted,
                ..
            }) => Err(c.invalid(format!("engine.{key}"), value, accepted)),
            Err(other) => Err(c.invalid("engine", "(table)", other.to_string())),
        }
    }

    /// The measured schedule, and whether to find the highest rate that
    /// holds.
    pub(super) fn phases(&self, c: &Check<'_>) -> Result<(Vec<Phase>, bool), ProfileError> {
        let (phases, find_max) = self.rate.phases(c, self.duration.as_ref())?;
        if !phases.iter().any(|p| p.expect == Expect::Sustain) {
            return Err(c.invalid(
                "rate.phases",
                "(every phase expects overload)",
                "at least one phase with expect = \"sustain\"",
            ));
        }
        Ok((phases, find_max))
    }
}

/// One phase at a constant rate, the SLO applying.
fn steady(label: String, duration: Duration, rate: f64, burst: Option<Burst>) -> Phase {
    Phase {
        label,
        duration,
        from: rate,
        to: rate,
        burst,
        expect: Expect::Sustain,
    }
}

impl RawRate {
    fn phases(
        &self,
        c: &Check<'_>,
        duration: Option<&Written<Time>>,
    ) -> Result<(Vec<Phase>, bool), ProfileError> {
        let length = |shape: &str| -> Result<Duration, ProfileError> {
            match duration {
                Some(d) => c.duration("duration", d, MS, DAY),
                None => Err(c.invalid(
                    "duration",
                    "(missing)",
                    format!("a duration for rate shape {shape:?} ({DURATION_FORMS})"),
                )),
            }
        };
        let no_length = |shape: &str| -> Result<(), ProfileError> {
            match duration {
                Some(d) => Err(c.invalid(
                    "duration",
                    &d.text,
                    format!("no `duration` with rate shape {shape:?}: its phases set the length"),
                )),
                None => Ok(()),
            }
        };
        Ok(match self {
            RawRate::Constant { rate } => {
                let r = c.rate("rate.rate", rate)?;
                (
                    vec![steady(units::fmt_rate(r), length("constant")?, r, None)],
                    false,
                )
            }
            RawRate::Ramp { from, to } => {
                let (a, b) = (c.rate("rate.from", from)?, c.rate("rate.to", to)?);
                let phase = Phase {
                    label: format!("{} → {}", units::fmt_rate(a), units::fmt_rate(b)),
                    duration: length("ramp")?,
                    from: a,
                    to: b,
                    burst: None,
                    expect: Expect::Sustain,
                };
                (vec![phase], false)
            }
            RawRate::Bursts { rate, size, every } => {
                let r = c.rate("rate.rate", rate)?;
                let every = c.duration("rate.every", every, MS, HOUR)?;
                if *size == 0 || *size > 1_000_000 {
                    return Err(c.invalid("rate.size", size, "from 1 to 1000000 events per burst"));
                }
                let label = format!(
                    "{} + {size} every {}",
                    units::fmt_rate(r),
                    humantime::format_duration(every)
                );
                let burst = Some(Burst { size: *size, every });
                (vec![steady(label, length("bursts")?, r, burst)], false)
            }
            RawRate::Steps {
                start,
                step,
                max,
                step_duration,
                find_max,
            } => {
                no_length("steps")?;
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
                    return Err(c.invalid(
                        "rate.step",
                        units::fmt_rate(step),
                        format!("a step giving at most {MAX_PHASES} steps from rate.start to rate.max (this gives {n})"),
                    ));
                }
                let phases = (0..n)
                    .map(|i| {
                        let r = start + step * i as f64;
                        steady(units::fmt_rate(r), d, r, None)
                    })
                    .collect();
                (phases, *find_max)
            }
            RawRate::Phases { phases } => {
                no_length("phases")?;
                if phases.is_empty() || phases.len() > MAX_PHASES {
                    return Err(c.invalid(
                        "rate.phases",
                        format!("{} phases", phases.len()),
                        format!("from 1 to {MAX_PHASES} phases"),
                    ));
                }
                let phases = phases
                    .iter()
                    .enumerate()
                    .map(|(i, p)| p.phase(c, i))
                    .collect::<Result<_, _>>()?;
                (phases, false)
            }
        })
    }
}

impl RawPhase {
    fn phase(&self, c: &Check<'_>, i: usize) -> Result<Phase, ProfileError> {
        let key = |k: &str| format!("rate.phases[{i}].{k}");
        let r = c.rate(&key("rate"), &self.rate)?;
        let d = c.duration(&key("duration"), &self.duration, MS, DAY)?;
        let burst = match (self.burst_size, &self.burst_every) {
            (None, None) => None,
            (Some(size), Some(every)) if size > 0 => Some(Burst {
                size,
                every: c.duration(&key("burst_every"), every, MS, HOUR)?,
            }),
            (Some(0), _) => {
                return Err(c.invalid(key("burst_size"), 0, "a burst of at least 1 event"));
            }
            _ => {
                return Err(c.invalid(
                    key("burst_size"),
                    "(one of burst_size, burst_every)",
                    "both burst_size and burst_every, or neither",
                ));
            }
        };
        Ok(Phase {
            label: self.label.clone().unwrap_or_else(|| units::fmt_rate(r)),
            duration: d,
            from: r,
            to: r,
            burst,
            expect: self.expect,
        })
    }
}

impl RawTool {
    /// The tool mix: each tool once, weights adding up to 100.
    pub(super) fn mix(raw: &[RawTool], c: &Check<'_>) -> Result<Vec<ToolMix>, ProfileError> {
        if raw.is_empty() {
            return Err(c.invalid(
                "tools",
                "[]",
                "at least one [[tools]] entry with a name and a weight",
            ));
        }
        let mut tools = Vec::with_capacity(raw.len());
        for (i, t) in raw.iter().enumerate() {
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
            let Ok(serde_json::Value::Object(input)) = serde_json::to_value(&t.input) else {
                return Err(c.invalid(
                    format!("tools[{i}].input"),
                    "(table)",
                    "a table of JSON-compatible values",
                ));
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
        Ok(tools)
    }
}

impl RawPayload {
    /// Payload sizes with weights adding up to 100.
    pub(super) fn sizes(&self, c: &Check<'_>) -> Result<Vec<(u64, u32)>, ProfileError> {
        if self.sizes.is_empty() {
            return Err(c.invalid("payload.sizes", "[]", "at least one { size, weight }"));
        }
        let mut sizes = Vec::with_capacity(self.sizes.len());
        for (i, s) in self.sizes.iter().enumerate() {
            let key = format!("payload.sizes[{i}].size");
            let bytes = s
                .size
                .value
                .ok_or_else(|| c.invalid(&key, &s.size.text, units::SIZE_FORMS))?;
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
        Ok(sizes)
    }
}

impl RawPool {
    /// The embedded target's pool settings; a relative `tools_dir` is taken
    /// from the profile's directory.
    pub(super) fn settings(&mut self, c: &Check<'_>) -> Result<PoolSettings, ProfileError> {
        if self.instances == Some(0) {
            return Err(c.invalid(
                "pool.instances",
                0,
                "at least 1 instance slot (omit it to size the pool for the engine)",
            ));
        }
        for name in self.modes.keys() {
            if toolplane_pool::builtin::get(name).is_none() {
                return Err(c.invalid(
                    format!("pool.modes.{name:?}"),
                    "(mode override)",
                    format!("a built-in tool ({})", builtin_names().join(", ")),
                ));
            }
        }
        let tools_dir = self.tools_dir.take().map(|dir| {
            if dir.is_relative() {
                c.0.parent().unwrap_or(Path::new(".")).join(dir)
            } else {
                dir
            }
        });
        Ok(PoolSettings {
            instances: self.instances,
            modes: std::mem::take(&mut self.modes),
            tools_dir,
            fs_inline: self.fs_inline,
            warm_slots: self.warm_slots,
        })
    }
}

impl RawSlo {
    /// The objectives; `find_max` needs a p99 threshold, and only it takes
    /// a least sustainable rate.
    pub(super) fn slo(&self, c: &Check<'_>, find_max: bool) -> Result<Slo, ProfileError> {
        let mut latency = Vec::new();
        let thresholds = [
            &self.p50,
            &self.p90,
            &self.p95,
            &self.p99,
            &self.p999,
            &self.p9999,
            &self.max,
        ];
        for ((key, q), v) in PERCENTILES.iter().zip(thresholds) {
            if let Some(w) = v {
                let limit = c.duration(&format!("slo.{key}"), w, Duration::from_nanos(1), HOUR)?;
                latency.push((*key, *q, limit));
            }
        }
        let slo = Slo {
            latency,
            max_error_pct: c.pct("slo.max_error_pct", self.max_error_pct)?,
            max_shed_pct: c.pct("slo.max_shed_pct", self.max_shed_pct)?,
            max_memory_growth_pct: match self.max_memory_growth_pct {
                Some(p) if p.is_nan() || p < 0.0 => {
                    return Err(c.invalid(
                        "slo.max_memory_growth_pct",
                        p,
                        "a percentage of at least 0",
                    ));
                }
                other => other,
            },
            min_rate_pct: c.pct("slo.min_rate_pct", self.min_rate_pct)?,
            min_sustainable_rate: match &self.min_sustainable_rate {
                Some(r) => Some(c.rate("slo.min_sustainable_rate", r)?),
                None => None,
            },
            latency_judged: true,
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
        Ok(slo)
    }
}
