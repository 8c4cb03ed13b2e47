//! `loadgen`: run, check and list workload profiles. See `loadgen --help`.
//!
//! Exit codes: 0 when the SLO holds, 1 when it does not, 2 for usage,
//! profile or start-up errors, and for output that could not be written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use toolplane_loadgen::{Profile, Progress, RunOptions, Target, plot, profile, units};

#[cfg(not(feature = "heap-count"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--features heap-count`: the same allocator, its live bytes counted
/// and reported beside the resident size.
#[cfg(feature = "heap-count")]
#[global_allocator]
static GLOBAL: toolplane_loadgen::memory::Counting<mimalloc::MiMalloc> =
    toolplane_loadgen::memory::Counting(mimalloc::MiMalloc);

/// Drives toolplane with a workload profile (open loop, coordinated-omission
/// corrected latency) and judges the run against the profile's SLO.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: toolplane_startup::log::LogArgs,
}

/// `loadgen run`.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// A profile file, or the name of one in profiles/ (`smoke`).
    profile: String,
    /// Overrides the rate of a one-phase profile (`10k/s`).
    #[arg(long)]
    rate: Option<String>,
    /// Overrides the measured duration of a one-phase profile (`30m`).
    #[arg(long)]
    duration: Option<String>,
    /// Overrides the warm-up (`30s`; `0s` for none).
    #[arg(long)]
    warmup: Option<String>,
    /// Writes the report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Writes an HdrHistogram interval log (corrected, and tagged uncorrected).
    #[arg(long, value_name = "FILE")]
    hlog: Option<PathBuf>,
    /// Writes an SVG plot of latency, rate and memory over time.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Samples the run in-process and writes a flamegraph SVG.
    #[arg(long, value_name = "FILE.svg")]
    flamegraph: Option<PathBuf>,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
    /// Progress as one line per second even on a terminal.
    #[arg(long, conflicts_with = "quiet")]
    lines: bool,
    /// Whether the profile's latency thresholds decide the verdict
    /// (`judge`), or are reported beside it (`report`: the exit status
    /// then rests on the deterministic checks — every accepted event
    /// answered once, books balanced, rate held, no errors or rejections —
    /// for a shared machine whose stalls move the tail, such as CI's).
    #[arg(long, value_name = "judge|report", default_value = "judge")]
    latency_slo: LatencySlo,
    /// Drives a running `toolplane serve` (http://HOST:PORT) over its REST
    /// call path instead of the embedded engine, with the profile's
    /// `connections` keep-alive connections.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// Bearer token for the target.
    #[arg(
        long,
        env = "TOOLPLANE_TOKEN",
        hide_env_values = true,
        requires = "target"
    )]
    token: Option<String>,
}

/// `--latency-slo`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LatencySlo {
    /// The latency thresholds decide the verdict.
    Judge,
    /// They are reported, not judged.
    Report,
}

// `Run` is much larger than the other variants; the value is parsed once.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a profile against the embedded engine (WASI pool, built-in
    /// tools), or a running server with --target.
    Run(RunArgs),
    /// Validates profiles (every one in profiles/ when none is named).
    Check {
        /// Profile files or names.
        profiles: Vec<String>,
    },
    /// Lists the built-in tools and the profiles.
    List,
    /// Measures what this machine imposes on the generator's core: how
    /// late a sleep wakes there (at the generator's priority) and the
    /// longest interruptions a thread spinning there sees. Run it idle,
    /// and beside a load.
    Machine {
        /// How long each of the two probes runs (`10s`).
        #[arg(long, default_value = "10s")]
        seconds: String,
        /// The sleep period (`100us`: the gap between sends at 10k/s).
        #[arg(long, default_value = "100us")]
        period: String,
    },
}

/// Writes a line to stdout. A reader that went away (`loadgen list |
/// head`) ends the output, not the program (`println!` panics); any other
/// write error is logged and makes the exit status 2.
macro_rules! say {
    ($($arg:tt)*) => {
        emit(format_args!($($arg)*))
    };
}

/// A line could not be written (other than to a reader that went away):
/// the run's output is incomplete, and the exit status says so.
static WRITE_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn emit(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n"))
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        tracing::error!("cannot write to stdout: {e}");
        WRITE_FAILED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    toolplane_startup::init("loadgen", cli.log.log_format);
    let code = command(cli.command);
    if WRITE_FAILED.load(std::sync::atomic::Ordering::Relaxed) {
        ExitCode::from(2)
    } else {
        code
    }
}

fn command(command: Command) -> ExitCode {
    match command {
        Command::Run(RunArgs {
            profile,
            rate,
            duration,
            warmup,
            json,
            hlog,
            plot,
            flamegraph,
            quiet,
            lines,
            latency_slo,
            target,
            token,
        }) => {
            let progress = if quiet {
                Progress::Quiet
            } else if lines {
                Progress::Lines
            } else {
                Progress::Auto
            };
            run(
                &profile,
                Overrides {
                    rate,
                    duration,
                    warmup,
                    latency_slo,
                },
                RunOptions {
                    progress,
                    hlog,
                    flamegraph,
                },
                json,
                plot,
                target.as_deref().map(|t| (t, token.as_deref())),
            )
        }
        Command::Check { profiles } => check(&profiles),
        Command::List => list(),
        Command::Machine { seconds, period } => {
            let parse = |flag: &str, v: &str| {
                humantime::parse_duration(v).map_err(|e| format!("--{flag} {v:?}: {e}"))
            };
            match (parse("seconds", &seconds), parse("period", &period)) {
                (Ok(each), Ok(period)) if !each.is_zero() && !period.is_zero() => {
                    say!("{}", toolplane_loadgen::machine::probe(each, period));
                    ExitCode::SUCCESS
                }
                (Err(e), _) | (_, Err(e)) => fail(e),
                _ => fail("--seconds and --period must be above zero"),
            }
        }
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    tracing::error!("{message}");
    ExitCode::from(2)
}

/// The profiles directory: `./profiles`, else the one beside this crate.
fn profiles_dir() -> PathBuf {
    let here = PathBuf::from("profiles");
    if here.is_dir() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles")
}

fn resolve(name: &str) -> PathBuf {
    let p = PathBuf::from(name);
    if p.exists() || name.contains('/') || name.ends_with(".toml") {
        return p;
    }
    profiles_dir().join(format!("{name}.toml"))
}

/// Command-line changes to a profile.
struct Overrides {
    rate: Option<String>,
    duration: Option<String>,
    warmup: Option<String>,
    latency_slo: LatencySlo,
}

fn run(
    name: &str,
    Overrides {
        rate,
        duration,
        warmup,
        latency_slo,
    }: Overrides,
    opts: RunOptions,
    json: Option<PathBuf>,
    plot_path: Option<PathBuf>,
    remote: Option<(&str, Option<&str>)>,
) -> ExitCode {
    let mut profile = match Profile::from_file(resolve(name)) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if let Some(r) = rate {
        let Some(r) = units::parse_rate(&r).filter(|r| *r <= profile::MAX_RATE) else {
            return fail(format!(
                "--rate {r:?}: expected {}, at most {}",
                units::RATE_FORMS,
                units::fmt_rate(profile::MAX_RATE)
            ));
        };
        if let Err(e) = profile.set_rate(r) {
            return fail(e);
        }
    }
    if let Some(d) = duration {
        let Some(d) = units::parse_duration(&d).filter(|d| !d.is_zero()) else {
            return fail(format!(
                "--duration {d:?}: expected {}",
                units::DURATION_FORMS
            ));
        };
        if let Err(e) = profile.set_duration(d) {
            return fail(e);
        }
    }
    if let Some(w) = warmup {
        let Some(w) = units::parse_duration(&w) else {
            return fail(format!(
                "--warmup {w:?}: expected {}",
                units::DURATION_FORMS
            ));
        };
        profile.warmup = w;
    }
    if profile.needs_target && remote.is_none() {
        return fail(format!(
            "{}: drives a running server (needs_target = true): give --target http://HOST:PORT (a `toolplane serve --http` address)",
            profile.path.display()
        ));
    }
    if latency_slo == LatencySlo::Report
        && let Err(e) = profile.report_latency()
    {
        return fail(e);
    }
    if let Err(e) = profile.check_tools(&profile::builtin_names()).or_else(|e| {
        if profile.pool.tools_dir.is_some() || remote.is_some() {
            Ok(())
        } else {
            Err(e)
        }
    }) {
        return fail(e);
    }
    if opts.progress != Progress::Quiet {
        tracing::info!(
            "{} — {} for {} after {} warm-up; {}",
            profile.name,
            profile
                .phases
                .iter()
                .map(|p| p.label.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            humantime::format_duration(profile.measured()),
            humantime::format_duration(profile.warmup),
            match remote {
                Some((url, _)) => format!("driving {url} over {} connections", profile.connections),
                None => "starting the embedded engine and tools".into(),
            },
        );
    }
    let target = match remote {
        Some((url, token)) => Target::remote(&profile, url, token),
        None => Target::embedded(&profile),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let out = match toolplane_loadgen::run(&profile, target, &opts) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let report = &out.report;
    say!("{}", report.text().trim_end_matches('\n'));
    if let Some(path) = &json {
        let text = serde_json::to_string_pretty(report).expect("the report serializes");
        if let Err(e) = std::fs::write(path, text + "\n") {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
    }
    if let Some(path) = &plot_path {
        let title = format!(
            "loadgen {} — {} ({})",
            profile.name,
            report.target,
            units::fmt_rate(report.target_rate)
        );
        if let Err(e) = plot::write_svg(
            path,
            &title,
            &out.points,
            &out.memory,
            profile.warmup.as_secs_f64(),
        ) {
            return fail(e);
        }
    }
    if report.slo.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn profile_files(names: &[String]) -> Result<Vec<PathBuf>, String> {
    if !names.is_empty() {
        return Ok(names.iter().map(|n| resolve(n)).collect());
    }
    let dir = profiles_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read the profiles directory {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no profiles (*.toml) in {}", dir.display()));
    }
    Ok(files)
}

fn check(names: &[String]) -> ExitCode {
    let files = match profile_files(names) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let mut bad = 0;
    for f in &files {
        let result = Profile::from_file(f).and_then(|p| {
            p.check_tools_offline()?;
            Ok(p)
        });
        match result {
            Ok(p) => say!(
                "ok    {}: {} events over {} after {} warm-up",
                f.display(),
                p.scheduled_events().round(),
                humantime::format_duration(p.measured()),
                humantime::format_duration(p.warmup)
            ),
            Err(e) => {
                bad += 1;
                say!("error {e}");
            }
        }
    }
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn list() -> ExitCode {
    say!("built-in tools:");
    for b in toolplane_pool::builtin::BUILTINS {
        let m = toolplane_pool::Manifest::from_toml_str(b.manifest, Path::new(b.manifest_path));
        let (kind, desc) = match &m {
            Ok(m) => (m.runtime.describe().kind, m.description.clone()),
            Err(e) => ("?".into(), e.to_string()),
        };
        say!("  {:<12} {:<12} {desc}", b.name, kind);
    }
    let dir = profiles_dir();
    say!("profiles ({}):", dir.display());
    match profile_files(&[]) {
        Ok(files) => {
            for f in files {
                match Profile::from_file(&f) {
                    Ok(p) => say!(
                        "  {:<10} {:>8} total  {}",
                        p.name,
                        humantime::format_duration(p.total()).to_string(),
                        p.description
                    ),
                    Err(e) => say!("  {}: {e}", f.display()),
                }
            }
        }
        Err(e) => say!("  {e}"),
    }
    ExitCode::SUCCESS
}
