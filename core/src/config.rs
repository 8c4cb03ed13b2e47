//! Engine configuration: defaults that serve, a TOML file, environment
//! overrides, and validation that names the key, the value and the range.
//!
//! Precedence, lowest first: [`Config::default`], a TOML file
//! ([`Config::from_file`]), environment variables ([`Config::with_env`]),
//! then whatever the embedding program sets on the builder.
//!
//! | key | env | default | accepted |
//! |---|---|---|---|
//! | `workers` | `TOOLPLANE_WORKERS` | available cores | 1..=1024 |
//! | `max_inflight` | `TOOLPLANE_MAX_INFLIGHT`, `MCP_MAX_INFLIGHT` | 2048 | 1..=16777216 |
//! | `batch_size` | `TOOLPLANE_BATCH_SIZE`, `MCP_BATCH_SIZE` | 64 | 1..=65536 |
//! | `queue_watermark` | `TOOLPLANE_QUEUE_WATERMARK`, `MCP_QUEUE_WATERMARK` | 0.75 | 0.0 < x <= 1.0 |
//! | `ring_capacity` | `TOOLPLANE_RING_CAPACITY` | 1024 | 2..=1048576 |
//! | `sample_every` | `TOOLPLANE_SAMPLE_EVERY` | 100 | 0 (off) ..=1000000000 |
//! | `max_concurrent_per_worker` | `TOOLPLANE_MAX_CONCURRENT_PER_WORKER` | 256 | 1..=1048576 |
//! | `pin_workers` | `TOOLPLANE_PIN_WORKERS` | true | true, false |
//! | `idle_spin` | `TOOLPLANE_IDLE_SPIN` | "50us" | 0..=1s |
//! | `worker_slice` | `TOOLPLANE_WORKER_SLICE` | "100us" | 0 (the kernel's), 100us..=100ms |
//! | `call_timeout` | `TOOLPLANE_CALL_TIMEOUT` | none | 1ms..=1h |
//! | `span_export` | `TOOLPLANE_SPAN_EXPORT` | none | a file path (JSON lines) |
//!
//! When both a `TOOLPLANE_*` variable and its `MCP_*` alias are set, the
//! `TOOLPLANE_*` one wins.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where a configuration value came from, so an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// Set by the embedding program (builder or struct literal).
    Code,
    /// Read from this TOML file.
    File(PathBuf),
    /// Read from this environment variable.
    Env(&'static str),
}

impl fmt::Display for ValueSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueSource::Code => f.write_str("set in code"),
            ValueSource::File(p) => write!(f, "in {}", p.display()),
            ValueSource::Env(var) => write!(f, "from environment variable {var}"),
        }
    }
}

/// A configuration that cannot be used. Every variant names what is wrong
/// and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value outside its accepted range.
    #[error("invalid value for `{key}` ({source_of}): {value:?}; accepted: {accepted}")]
    Invalid {
        /// The configuration key, as written in the TOML file.
        key: &'static str,
        /// The offending value, as given.
        value: String,
        /// What would have been accepted.
        accepted: &'static str,
        /// Where the value came from.
        source_of: ValueSource,
    },
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for this schema (unknown
    /// key, wrong type, bad duration).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and the line.
        message: String,
    },
}

/// A TOML parser's message with the Rust types serde names in it said in
/// words (`expected usize` is `expected a whole number, 0 or more`), for
/// people who write the file, not the program.
pub fn plain_types(message: &str) -> String {
    const WORDS: [(&str, &str); 12] = [
        ("usize", "a whole number, 0 or more"),
        ("u64", "a whole number, 0 or more"),
        ("u32", "a whole number, 0 or more"),
        ("u16", "a whole number, 0 or more"),
        ("u8", "a whole number, 0 or more"),
        ("isize", "a whole number"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("i16", "a whole number"),
        ("i8", "a whole number"),
        ("f64", "a number"),
        ("f32", "a number"),
    ];
    let mut out = message.to_owned();
    for (ty, words) in WORDS {
        for lead in ["expected ", "expected an ", "expected a "] {
            let from = format!("{lead}{ty}");
            if out.contains(&from) {
                out = out.replace(&from, &format!("expected {words}"));
            }
        }
    }
    out
}

/// Engine settings. Build one with [`Config::default`] and adjust fields, or
/// load it with [`Config::from_file`] / [`Config::from_toml_str`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Worker threads. `None` means one per available core.
    pub workers: Option<usize>,
    /// Global budget of accepted events that have not completed yet.
    pub max_inflight: usize,
    /// Events a worker takes from one ring per pass; completions are
    /// published once per batch.
    pub batch_size: usize,
    /// Fill ratio of a worker ring above which `Priority::Low` events are
    /// shed.
    pub queue_watermark: f64,
    /// Capacity of each producer-to-worker ring (and of each worker's
    /// injector queue). Completion rings are twice this size.
    pub ring_capacity: usize,
    /// Export one span in this many; 0 disables sampling.
    pub sample_every: u64,
    /// Calls a worker keeps in flight at once (calls that wait park and
    /// the worker runs others).
    pub max_concurrent_per_worker: usize,
    /// Pin worker `i` to core `i % cores`.
    pub pin_workers: bool,
    /// How long an idle worker spins (yielding its core between checks)
    /// before it parks.
    #[serde(with = "humantime_serde_compat")]
    pub idle_spin: Duration,
    /// The time slice each worker thread (and its blocking threads) asks
    /// the kernel for: how long another thread keeps the worker's core
    /// once it runs there (see the `slice` module; Linux 6.12 and later).
    /// Zero leaves the kernel's default (about 3 ms).
    #[serde(with = "humantime_serde_compat")]
    pub worker_slice: Duration,
    /// Deadline for calls that wait (async handlers); they end in
    /// `Outcome::Timeout` past it. `None`: no engine-side deadline.
    #[serde(with = "humantime_serde_compat::option")]
    pub call_timeout: Option<Duration>,
    /// Write sampled spans as JSON lines to this file.
    pub span_export: Option<PathBuf>,
    /// Where values came from, for error messages (filled by
    /// [`Config::from_file`] and [`Config::with_env`]; not a file key).
    #[serde(skip)]
    pub provenance: Provenance,
}

/// Where each configuration value came from. Opaque: it only serves error
/// messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance(Vec<(&'static str, ValueSource)>);

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: None,
            max_inflight: 2048,
            batch_size: 64,
            queue_watermark: 0.75,
            ring_capacity: 1024,
            sample_every: 100,
            max_concurrent_per_worker: 256,
            pin_workers: true,
            idle_spin: Duration::from_micros(50),
            worker_slice: Duration::from_micros(100),
            call_timeout: None,
            span_export: None,
            provenance: Provenance::default(),
        }
    }
}

const WORKERS: (usize, usize) = (1, 1024);
const MAX_INFLIGHT: (usize, usize) = (1, 1 << 24);
const BATCH_SIZE: (usize, usize) = (1, 1 << 16);
const RING_CAPACITY: (usize, usize) = (2, 1 << 20);
const SAMPLE_EVERY: u64 = 1_000_000_000;
const MAX_CONCURRENT: (usize, usize) = (1, 1 << 20);
const IDLE_SPIN_MAX: Duration = Duration::from_secs(1);
/// The kernel's own bounds on a custom slice.
const WORKER_SLICE: (Duration, Duration) = (Duration::from_micros(100), Duration::from_millis(100));
const CALL_TIMEOUT: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(3600));

/// The environment variables read by [`Config::with_env`], with their
/// aliases, in precedence order.
const ENV: &[(&str, &[&str])] = &[
    ("workers", &["TOOLPLANE_WORKERS"]),
    (
        "max_inflight",
        &["TOOLPLANE_MAX_INFLIGHT", "MCP_MAX_INFLIGHT"],
    ),
    ("batch_size", &["TOOLPLANE_BATCH_SIZE", "MCP_BATCH_SIZE"]),
    (
        "queue_watermark",
        &["TOOLPLANE_QUEUE_WATERMARK", "MCP_QUEUE_WATERMARK"],
    ),
    ("ring_capacity", &["TOOLPLANE_RING_CAPACITY"]),
    ("sample_every", &["TOOLPLANE_SAMPLE_EVERY"]),
    (
        "max_concurrent_per_worker",
        &["TOOLPLANE_MAX_CONCURRENT_PER_WORKER"],
    ),
    ("pin_workers", &["TOOLPLANE_PIN_WORKERS"]),
    ("idle_spin", &["TOOLPLANE_IDLE_SPIN"]),
    ("worker_slice", &["TOOLPLANE_WORKER_SLICE"]),
    ("call_timeout", &["TOOLPLANE_CALL_TIMEOUT"]),
    ("span_export", &["TOOLPLANE_SPAN_EXPORT"]),
];

impl Config {
    /// Parses a TOML document. `origin` names the file in errors.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] for unknown keys, wrong types or bad
    /// durations; [`ConfigError::Invalid`] for values out of range.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: plain_types(e.to_string().trim_end()),
        })?;
        let table: toml::Table = toml::from_str(text).unwrap_or_default();
        for key in table.keys() {
            if let Some((k, _)) = ENV.iter().find(|(k, _)| *k == key.as_str()) {
                config.set_source(k, ValueSource::File(origin.to_path_buf()));
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] when the file cannot be read, otherwise as
    /// [`Config::from_toml_str`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text, path)
    }

    /// Applies the `TOOLPLANE_*` (and `MCP_*` alias) environment overrides
    /// of the process environment.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the variable when a value does not
    /// parse or is out of range.
    pub fn with_env(self) -> Result<Config, ConfigError> {
        self.with_env_from(|var| std::env::var(var).ok())
    }

    /// Applies environment overrides read through `lookup` (for tests and
    /// for programs that keep their environment elsewhere).
    ///
    /// # Errors
    ///
    /// As [`Config::with_env`].
    pub fn with_env_from(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        for (key, vars) in ENV {
            let Some((var, value)) = vars.iter().find_map(|v| lookup(v).map(|val| (*v, val)))
            else {
                continue;
            };
            let source = ValueSource::Env(var);
            let value = value.trim();
            let bad = |accepted: &'static str| ConfigError::Invalid {
                key,
                value: value.to_owned(),
                accepted,
                source_of: ValueSource::Env(var),
            };
            match *key {
                "workers" => self.workers = Some(value.parse().map_err(|_| bad(accepted(key)))?),
                "max_inflight" => {
                    self.max_inflight = value.parse().map_err(|_| bad(accepted(key)))?
                }
                "batch_size" => self.batch_size = value.parse().map_err(|_| bad(accepted(key)))?,
                "queue_watermark" => {
                    self.queue_watermark = value.parse().map_err(|_| bad(accepted(key)))?;
                }
                "ring_capacity" => {
                    self.ring_capacity = value.parse().map_err(|_| bad(accepted(key)))?;
                }
                "sample_every" => {
                    self.sample_every = value.parse().map_err(|_| bad(accepted(key)))?
                }
                "max_concurrent_per_worker" => {
                    self.max_concurrent_per_worker =
                        value.parse().map_err(|_| bad(accepted(key)))?;
                }
                "pin_workers" => {
                    self.pin_workers = value.parse().map_err(|_| bad(accepted(key)))?
                }
                "idle_spin" => {
                    self.idle_spin =
                        humantime::parse_duration(value).map_err(|_| bad(accepted(key)))?;
                }
                "worker_slice" => {
                    self.worker_slice = if value == "0" {
                        Duration::ZERO
                    } else {
                        humantime::parse_duration(value).map_err(|_| bad(accepted(key)))?
                    };
                }
                "call_timeout" => {
                    self.call_timeout = if value.is_empty() || value == "none" {
                        None
                    } else {
                        Some(humantime::parse_duration(value).map_err(|_| bad(accepted(key)))?)
                    };
                }
                "span_export" => {
                    self.span_export = (!value.is_empty()).then(|| PathBuf::from(value));
                }
                _ => unreachable!("every ENV key is handled above"),
            }
            self.set_source(key, source);
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every value against its accepted range.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError::Invalid`], in the order of the table in the
    /// module docs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, value: String| ConfigError::Invalid {
            key,
            value,
            accepted: accepted(key),
            source_of: self.source(key),
        };
        let in_range = |v: usize, (lo, hi): (usize, usize)| (lo..=hi).contains(&v);
        if let Some(w) = self.workers
            && !in_range(w, WORKERS)
        {
            return Err(bad("workers", w.to_string()));
        }
        if !in_range(self.max_inflight, MAX_INFLIGHT) {
            return Err(bad("max_inflight", self.max_inflight.to_string()));
        }
        if !in_range(self.batch_size, BATCH_SIZE) {
            return Err(bad("batch_size", self.batch_size.to_string()));
        }
        let wm = self.queue_watermark;
        if !(wm > 0.0 && wm <= 1.0) {
            return Err(bad("queue_watermark", wm.to_string()));
        }
        if !in_range(self.ring_capacity, RING_CAPACITY) {
            return Err(bad("ring_capacity", self.ring_capacity.to_string()));
        }
        if self.sample_every > SAMPLE_EVERY {
            return Err(bad("sample_every", self.sample_every.to_string()));
        }
        if !in_range(self.max_concurrent_per_worker, MAX_CONCURRENT) {
            return Err(bad(
                "max_concurrent_per_worker",
                self.max_concurrent_per_worker.to_string(),
            ));
        }
        if self.idle_spin > IDLE_SPIN_MAX {
            return Err(bad("idle_spin", format!("{:?}", self.idle_spin)));
        }
        if !self.worker_slice.is_zero()
            && !(WORKER_SLICE.0..=WORKER_SLICE.1).contains(&self.worker_slice)
        {
            return Err(bad("worker_slice", format!("{:?}", self.worker_slice)));
        }
        if let Some(t) = self.call_timeout
            && !(CALL_TIMEOUT.0..=CALL_TIMEOUT.1).contains(&t)
        {
            return Err(bad("call_timeout", format!("{t:?}")));
        }
        if let Some(p) = &self.span_export
            && p.as_os_str().is_empty()
        {
            return Err(bad("span_export", String::new()));
        }
        Ok(())
    }

    /// Worker count after resolving `None` to the available cores.
    pub fn resolved_workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(WORKERS.1)
        })
    }

    fn source(&self, key: &str) -> ValueSource {
        self.provenance
            .0
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map_or(ValueSource::Code, |(_, s)| s.clone())
    }

    fn set_source(&mut self, key: &'static str, source: ValueSource) {
        self.provenance.0.push((key, source));
    }
}

fn accepted(key: &str) -> &'static str {
    match key {
        "workers" => "an integer in 1..=1024",
        "max_inflight" => "an integer in 1..=16777216",
        "batch_size" => "an integer in 1..=65536",
        "queue_watermark" => "a number greater than 0.0 and at most 1.0",
        "ring_capacity" => "an integer in 2..=1048576",
        "sample_every" => "an integer in 0..=1000000000 (0 turns sampling off)",
        "max_concurrent_per_worker" => "an integer in 1..=1048576",
        "pin_workers" => "true or false",
        "idle_spin" => "a duration from 0us to 1s, like \"50us\"",
        "worker_slice" => {
            "0 (the kernel's slice) or a duration from 100us to 100ms, like \"100us\""
        }
        "call_timeout" => "a duration from 1ms to 1h, like \"5s\", or none",
        "span_export" => "a file path",
        _ => "see the toolplane_core::config docs",
    }
}

/// Serde helpers for durations written as "50us", "5s", "30m".
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e}")))
    }

    pub(super) mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer};

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            let s = Option::<String>::deserialize(d)?;
            match s.as_deref() {
                None | Some("none") => Ok(None),
                Some(s) => humantime::parse_duration(s)
                    .map(Some)
                    .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn parser_messages_say_types_in_words() {
        assert_eq!(
            plain_types("invalid type: string \"two\", expected usize"),
            "invalid type: string \"two\", expected a whole number, 0 or more"
        );
        assert_eq!(
            plain_types("invalid type: boolean `true`, expected f64"),
            "invalid type: boolean `true`, expected a number"
        );
        assert_eq!(plain_types("unknown field `x`"), "unknown field `x`");
    }

    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn toml_sets_values_and_durations() {
        let c = Config::from_toml_str(
            "workers = 3\nbatch_size = 32\nidle_spin = \"10us\"\ncall_timeout = \"2s\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.workers, Some(3));
        assert_eq!(c.batch_size, 32);
        assert_eq!(c.idle_spin, Duration::from_micros(10));
        assert_eq!(c.call_timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn worker_slice_is_zero_or_within_the_kernels_bounds() {
        let parse = |t: &str| Config::from_toml_str(t, Path::new("t.toml"));
        assert_eq!(Config::default().worker_slice, Duration::from_micros(100));
        assert_eq!(
            parse("worker_slice = \"0s\"\n").unwrap().worker_slice,
            Duration::ZERO
        );
        assert_eq!(
            parse("worker_slice = \"1ms\"\n").unwrap().worker_slice,
            Duration::from_millis(1)
        );
        for bad in ["\"50us\"", "\"1s\""] {
            let e = parse(&format!("worker_slice = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("worker_slice") && e.contains("100us to 100ms"),
                "{e}"
            );
        }
        let c = Config::default()
            .with_env_from(|k| (k == "TOOLPLANE_WORKER_SLICE").then(|| "0".to_owned()))
            .unwrap();
        assert_eq!(c.worker_slice, Duration::ZERO);
    }
}
