//! loadgen: drives toolplane with a workload profile, open loop, and
//! reports honest latency.
//!
//! Every event has an intended send time from the profile's schedule; a
//! slow engine never slows the schedule down. Latency is measured from the
//! intended send time to the completion (corrected for coordinated
//! omission, as wrk2 does) and also from the actual send time
//! (uncorrected), so the two can be compared; the generator records its own
//! lag behind the schedule. Completion time is the worker's timestamp when
//! the outcome was written, on the engine's clock (the schedule's clock).
//!
//! ```no_run
//! use toolplane_loadgen::{run, Profile, RunOptions, Target};
//!
//! let profile = Profile::from_file("profiles/smoke.toml")?;
//! let target = Target::embedded(&profile)?;
//! let out = run(&profile, target, &RunOptions::default())?;
//! println!("{}", out.report.text());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod driver;
pub mod error;
pub mod held;
pub mod machine;
pub mod memory;
pub mod placement;
pub mod plot;
pub mod profile;
pub mod progress;
pub mod remote;
pub mod report;
pub mod schedule;
pub mod stats;
pub mod target;
pub mod units;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

pub use profile::{Profile, ProfileError};
pub use progress::{Point, Progress};
pub use report::Report;
pub use target::{Target, TargetError};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Progress display.
    pub progress: Progress,
    /// Write an HdrHistogram interval log here.
    pub hlog: Option<PathBuf>,
    /// Profile the run in-process and write a flamegraph SVG here.
    pub flamegraph: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            progress: Progress::Quiet,
            hlog: None,
            flamegraph: None,
        }
    }
}

/// A run that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The profile does not fit the target.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The target would not start.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The sampling profiler failed.
    #[error("flamegraph {path}: {message}")]
    Flamegraph {
        /// The SVG asked for.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// A finished run.
#[derive(Debug)]
pub struct RunOutput {
    /// The report.
    pub report: Report,
    /// Per-interval points (for the plot).
    pub points: Vec<Point>,
    /// Memory samples.
    pub memory: Vec<memory::Sample>,
}

/// Runs `profile` against `target` and shuts the target down.
///
/// # Errors
///
/// The profile names a tool the target does not serve, or the profiler
/// fails.
pub fn run(profile: &Profile, target: Target, opts: &RunOptions) -> Result<RunOutput, RunError> {
    profile.check_tools(&target.tools)?;
    let workload = match &target.backend {
        target::Backend::Engine(e) => workload::Workload::new(profile, |name| e.tool(name)),
        target::Backend::Remote(r) => workload::Workload::new(profile, |name| r.tool(name)),
    };
    let remote = match &target.backend {
        target::Backend::Remote(r) => Some(std::sync::Arc::clone(r)),
        target::Backend::Engine(_) => None,
    };
    let before = remote.as_ref().and_then(|r| r.scrape());
    let (tx, rx) = flume::unbounded();
    let (free_tx, free_rx) = flume::unbounded();
    let placement = target.placement;
    let spawn_reporter = || {
        progress::spawn(
            progress::Settings {
                progress: opts.progress,
                total: profile.total(),
                warmup: profile.warmup,
                hlog: opts.hlog.clone(),
                label: format!("{} ", profile.name),
                remote: remote.clone(),
                runtime: target.runtime.clone(),
            },
            rx,
            free_tx,
        )
    };
    // Off the generator's core, as the engine's threads are.
    let reporter = match &placement {
        Some(p) => p.others(spawn_reporter),
        None => spawn_reporter(),
    };
    let profiler = match &opts.flamegraph {
        Some(path) => Some(
            pprof::ProfilerGuardBuilder::default()
                .frequency(499)
                .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                .build()
                .map_err(|e| RunError::Flamegraph {
                    path: path.clone(),
                    message: e.to_string(),
                })?,
        ),
        None => None,
    };
    // What the machine takes from the embedded engine's workers (a
    // server's are in another process).
    let held = match &target.backend {
        target::Backend::Engine(e) => {
            let start =
                || held::Sampler::start(e.worker_tids(), profile.warmup, profile.total()).ok();
            match &placement {
                Some(p) => p.others(start),
                None => start(),
            }
        }
        target::Backend::Remote(_) => None,
    };
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let backend = &target.backend;
    let (driven, entered) = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("loadgen-generator".into())
            .spawn_scoped(s, || {
                let ch = driver::Channels { tx, free: free_rx };
                match backend {
                    target::Backend::Engine(engine) => {
                        // The embedded target left the generator a core
                        // (crate::placement). An engine handed in: workers
                        // take cores from the first, the generator the last
                        // one when no worker does (target::default_workers).
                        let entered = match &placement {
                            Some(p) => Some(p.enter()),
                            None => {
                                if engine.config().pin_workers
                                    && cores.len() > engine.workers()
                                    && let Some(last) = cores.last()
                                {
                                    core_affinity::set_for_current(*last);
                                }
                                None
                            }
                        };
                        let mut p = engine.producer();
                        p.preallocate();
                        let driven = driver::drive(
                            &mut p,
                            engine.clock(),
                            engine.tools(),
                            profile,
                            workload,
                            &ch,
                        );
                        (driven, entered)
                    }
                    target::Backend::Remote(r) => {
                        let mut client = r.client(profile.connections);
                        let driven = driver::drive(
                            &mut client,
                            r.clock(),
                            r.table(),
                            profile,
                            workload,
                            &ch,
                        );
                        (driven, None)
                    }
                }
            })
            .expect("spawning the generator thread")
            .join()
            .expect("the generator does not panic")
    });
    let flame = match (&opts.flamegraph, profiler) {
        (Some(path), Some(guard)) => Some(write_flamegraph(path, &guard)),
        _ => None,
    };
    let reported = reporter.join().unwrap_or_default();
    let held = held.map(held::Sampler::finish);
    let workers = match &target.backend {
        target::Backend::Engine(e) => e.workers(),
        target::Backend::Remote(_) => 0,
    };
    let label = match &entered {
        Some(e) => format!("{}; {e}", target.label),
        None => target.label.clone(),
    };
    let engine = target.shutdown(Duration::from_secs(5), before);
    if let Some(Err(e)) = flame {
        return Err(e);
    }
    let report = Report::new(&report::Parts {
        profile,
        target: label,
        workers,
        driven: &driven,
        reported: &reported,
        engine: &engine,
        held: held.as_ref(),
    });
    Ok(RunOutput {
        report,
        points: reported.points,
        memory: reported.memory,
    })
}

fn write_flamegraph(
    path: &std::path::Path,
    guard: &pprof::ProfilerGuard<'_>,
) -> Result<(), RunError> {
    let err = |message: String| RunError::Flamegraph {
        path: path.to_owned(),
        message,
    };
    let report = guard.report().build().map_err(|e| err(e.to_string()))?;
    let file = std::fs::File::create(path).map_err(|e| err(e.to_string()))?;
    report.flamegraph(file).map_err(|e| err(e.to_string()))
}
