//! Workload profiles: checked-in TOML files naming the rate shape, the
//! duration and warm-up, the seed, the tool mix, payload sizes, keys,
//! priorities, engine settings and the SLO. Everything is validated up
//! front; an error names the file, the key and what is accepted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::units;

mod model;
mod raw;

pub use self::model::*;

use self::raw::{Check, RawProfile, RawTool};

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
    /// It drives a running server (`loadgen run --target`) and is refused
    /// against the embedded engine (`needs_target = true`).
    pub needs_target: bool,
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
            message: toolplane_core::config::plain_types(e.to_string().trim_end()),
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
            needs_target: raw.needs_target,
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

    /// [`Profile::check_tools`] without starting a target: the built-ins,
    /// and the manifests of `pool.tools_dir` by file stem; a name
    /// `<stem>.<tool>` is taken as a member of a set (an MCP server, a
    /// jsonl worker with several tools), which only a run can list.
    ///
    /// # Errors
    ///
    /// As [`Profile::check_tools`]; the tools directory cannot be read.
    pub fn check_tools_offline(&self) -> Result<(), ProfileError> {
        let mut available: Vec<String> = builtin_names().iter().map(|s| (*s).to_string()).collect();
        if let Some(dir) = &self.pool.tools_dir {
            let entries = std::fs::read_dir(dir).map_err(|e| {
                Check(&self.path).invalid(
                    "pool.tools_dir",
                    dir.display(),
                    format!("a readable directory ({e})"),
                )
            })?;
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "toml")
                    && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
                {
                    available.push(stem.to_string());
                }
            }
            let members: Vec<String> = self
                .tools
                .iter()
                .filter_map(|t| t.name.split_once('.').map(|(set, _)| (set, &t.name)))
                .filter(|(set, _)| available.iter().any(|a| a == set))
                .map(|(_, name)| name.clone())
                .collect();
            available.extend(members);
        }
        self.check_tools(&available)
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

    /// Reports the latency thresholds beside the verdict instead of
    /// judging them (`--latency-slo report`): the verdict then rests on
    /// the deterministic checks, each checked whether or not the profile
    /// names it (no errors, no rejections, 99% of the rate, every accepted
    /// event answered once, books balanced).
    ///
    /// # Errors
    ///
    /// A `find_max` profile, whose verdict is its latency.
    pub fn report_latency(&mut self) -> Result<(), ProfileError> {
        if self.find_max {
            return Err(Check(&self.path).invalid(
                "find_max",
                "(--latency-slo report)",
                "a profile whose verdict is not its p99; this one steps the rate up until its p99 breaks",
            ));
        }
        let slo = &mut self.slo;
        slo.latency_judged = false;
        slo.max_error_pct.get_or_insert(0.0);
        slo.max_shed_pct.get_or_insert(0.0);
        slo.min_rate_pct.get_or_insert(99.0);
        Ok(())
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
