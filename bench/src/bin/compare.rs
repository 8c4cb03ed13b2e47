//! Side-by-side comparisons: each scenario runs toolplane and its
//! baselines in the same process, interleaved (A B C A B C …, one replica
//! of each side per round), and prints Markdown tables with the medians,
//! the spread and the per-replica ratio.
//!
//! ```text
//! compare engine [--seconds 2] [--replicas 5]
//!     the engine vs a crossbeam-channel and a flume worker pool
//!     (no-op handler, one producer, same threads and completion path)
//! compare wasi [--rounds 5] [--calls 2000] [--sizes 64,1024,65536]
//!              [--tools echo,hash.sha256] [--modes process,naive,...]
//!     the WASI call modes against each other and a process per call
//! compare mcp --server NAME[:TOOL]=COMMAND --server NAME=COMMAND [--tool echo]
//!             [--calls 2000] [--rounds 5] [--inflight 1,16] [--size 64]
//!     MCP servers on stdio, the same `tools/call` load on each (the last
//!     server is the baseline); `bench/peers/run.sh` builds hyper-mcp with
//!     an Extism echo plugin and runs this against `toolplane serve`
//! compare process [--rounds 5] [--calls 2000] [--inflight 1,16,128]
//!     a jsonl worker called directly and through toolplane by the same
//!     driver; exec, jsonl and WASI tools doing the same work; 1000
//!     overlapping sleeps on 4 processes; cold and warm starts (a jsonl
//!     worker, an MCP server from npm run by node and by npx)
//! compare registry [--tools 1000] [--replicas 3]
//!     registry start-up with that many tools: listed and all callable,
//!     with a cold module cache and a warm one
//! compare all
//!     engine, wasi and registry, with their defaults
//! ```

use std::time::{Duration, Instant};

use toolplane_bench::pools::{self, Side};
use toolplane_bench::registry;
use toolplane_bench::stats::{self, Better};
use toolplane_bench::wasi::{self, Fixture, Mode, Tool};
use toolplane_pool::{PoolConfig, Runtime, builtin};

#[global_allocator]
static GLOBAL: toolplane_bench::CountingMimalloc = toolplane_bench::CountingMimalloc;

/// toolplane against its baselines, interleaved; Markdown tables on stdout.
#[derive(clap::Parser, Debug)]
#[command(name = "compare")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Subcommand, Debug)]
enum Scenario {
    /// The engine against a crossbeam-channel and a flume worker pool
    /// (no-op handler, one producer, the same threads and completion path).
    Engine(EngineArgs),
    /// The WASI call modes against each other and a process per call.
    Wasi(WasiArgs),
    /// MCP servers on stdio, the same `tools/call` load on each (the last
    /// server is the baseline).
    Mcp(McpArgs),
    /// Registry start-up with many tools: listed, all callable, and one
    /// call on demand, with a cold module cache and a warm one.
    Registry(RegistryArgs),
    /// Process tools: a jsonl worker directly and through toolplane; exec,
    /// jsonl and WASI doing the same work; overlapping sleeps; cold starts.
    Process(ProcessArgs),
    /// engine, wasi and registry, with their defaults.
    All,
}

#[derive(clap::Args, Debug)]
struct EngineArgs {
    /// Seconds per replica (after a 0.5 s warm-up).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Replicas of each side.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    replicas: u64,
}

#[derive(clap::Args, Debug)]
struct WasiArgs {
    /// Rounds; each runs every mode in turn.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Calls per mode and round (a fiftieth, at least 5, for a process per call).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    calls: u64,
    /// Input sizes in bytes (JSON objects; at least 11).
    #[arg(long, value_delimiter = ',', default_values_t = [64, 1024, 65536], value_parser = clap::value_parser!(u64).range(11..))]
    sizes: Vec<u64>,
    /// Tools.
    #[arg(long, value_delimiter = ',', default_values_t = Tool::ALL.map(|t| t.builtin().to_string()), value_parser = Tool::ALL.map(|t| t.builtin()))]
    tools: Vec<String>,
    /// Modes.
    #[arg(long, value_delimiter = ',', default_values_t = Mode::ALL.map(|m| m.key().to_string()), value_parser = Mode::ALL.map(|m| m.key()))]
    modes: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct McpArgs {
    /// A server as NAME=COMMAND (NAME:TOOL=COMMAND calls TOOL there
    /// instead of --tool); two or more (the last is the baseline).
    #[arg(long = "server", required = true, num_args = 1)]
    servers: Vec<String>,
    /// The tool called on each.
    #[arg(long, default_value = "echo")]
    tool: String,
    /// Calls per server, in-flight count and round.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    calls: u64,
    /// Rounds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Calls in flight, one table each.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16], value_parser = clap::value_parser!(u64).range(1..))]
    inflight: Vec<u64>,
    /// Input size in bytes (at least 11).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(11..))]
    size: u64,
}

#[derive(clap::Args, Debug)]
struct ProcessArgs {
    /// Rounds; each runs every side in turn.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Calls per side, in-flight count and round (a tenth for exec).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    calls: u64,
    /// Calls in flight, one table each.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 128], value_parser = clap::value_parser!(u64).range(1..=256))]
    inflight: Vec<u64>,
    /// The MCP upstream's command (split at white space); by default
    /// `toolplane serve --stdio` beside this binary.
    #[arg(long)]
    upstream: Option<String>,
    /// The upstream's tool the MCP comparison calls (with the 64-byte input).
    #[arg(long, default_value = "echo")]
    upstream_tool: String,
}

#[derive(clap::Args, Debug)]
struct RegistryArgs {
    /// Tools on disk (copies of the built-ins under distinct names).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    tools: u64,
    /// Replicas, each with a new cache directory.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    replicas: u64,
}

/// A usage error in clap's form (exit 2).
fn usage(why: &str) -> ! {
    use clap::CommandFactory;
    Cli::command()
        .error(clap::error::ErrorKind::ValueValidation, why)
        .exit()
}

/// A scenario's arguments with every default, for `all`.
fn defaults(scenario: &str) -> Scenario {
    use clap::Parser;
    Cli::try_parse_from(["compare", scenario])
        .expect("every flag of a scenario has a default")
        .scenario
}

fn main() {
    use clap::Parser;
    wasi::child_main();
    let cli = Cli::parse();
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("machine: {}", toolplane_bench::machine());
    println!("command: compare {}", args.join(" "));
    println!();
    let result = match &cli.scenario {
        Scenario::Engine(a) => {
            engine(a.seconds, a.replicas as usize);
            Ok(())
        }
        Scenario::Wasi(a) => wasi_modes(a),
        Scenario::Mcp(a) => mcp(a),
        Scenario::Registry(a) => registry_startup(a),
        Scenario::Process(a) => process_tools(a),
        Scenario::All => {
            engine(2.0, 5);
            let (Scenario::Wasi(w), Scenario::Registry(r)) =
                (defaults("wasi"), defaults("registry"))
            else {
                unreachable!("defaults() parses the scenario it is given")
            };
            wasi_modes(&w).and_then(|()| registry_startup(&r))
        }
    };
    if let Err(e) = result {
        eprintln!("compare: {e}");
        std::process::exit(1);
    }
}

fn engine(seconds: f64, replicas: usize) {
    if seconds.is_nan() || seconds <= 0.0 {
        usage("--seconds must be positive");
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let workers = cores.len().saturating_sub(1).max(1);
    let mut runs: Vec<Vec<pools::Run>> = vec![Vec::new(); Side::ALL.len()];
    for r in 0..replicas {
        for (i, side) in Side::ALL.iter().enumerate() {
            let run = side.run(workers, seconds, &cores);
            eprintln!(
                "round {}: {}: {:.2} M events/s, p50 {} ns, p99 {} ns",
                r + 1,
                side.name(),
                run.events_per_sec / 1e6,
                run.p50_ns,
                run.p99_ns
            );
            runs[i].push(run);
        }
    }
    let sides = |f: fn(&pools::Run) -> f64| -> Vec<stats::Side> {
        Side::ALL
            .iter()
            .zip(&runs)
            .map(|(s, r)| stats::Side {
                name: s.name().into(),
                replicas: r.iter().map(f).collect(),
            })
            .collect()
    };
    let base = Side::Crossbeam.name();
    println!(
        "## engine vs worker pools: no-op handler, 1 producer, {workers} worker(s), {replicas} replicas of {seconds} s, interleaved\n"
    );
    println!("throughput:\n");
    println!(
        "{}",
        stats::table(
            "events/s",
            Better::Higher,
            base,
            &sides(|r| r.events_per_sec)
        )
    );
    println!("submission to finish, median:\n");
    println!(
        "{}",
        stats::table("ns", Better::Lower, base, &sides(|r| r.p50_ns as f64))
    );
    println!("submission to finish, 99th percentile:\n");
    println!(
        "{}",
        stats::table("ns", Better::Lower, base, &sides(|r| r.p99_ns as f64))
    );
    let engine = &runs[0];
    let allocs: u64 = engine.iter().map(|r| r.allocations).sum();
    let events: u64 = engine.iter().map(|r| r.events).sum();
    println!(
        "engine allocations per event over the measured windows: {:.6} ({allocs} in {events} events)\n",
        allocs as f64 / events.max(1) as f64
    );
}

fn wasi_modes(a: &WasiArgs) -> Result<(), Box<dyn std::error::Error>> {
    let (rounds, calls) = (a.rounds as usize, a.calls as usize);
    let sizes: Vec<usize> = a.sizes.iter().map(|&n| n as usize).collect();
    // clap checked each name against these lists.
    let tools: Vec<Tool> = Tool::ALL
        .into_iter()
        .filter(|t| a.tools.iter().any(|n| n == t.builtin()))
        .collect();
    let modes: Vec<Mode> = Mode::ALL
        .into_iter()
        .filter(|m| a.modes.iter().any(|n| n == m.key()))
        .collect();
    let spawn_calls = (calls / 50).max(5);
    let fixture = Fixture::new(PoolConfig::default())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "## WASI call modes: {rounds} rounds, modes interleaved in each; {calls} calls per mode and round ({spawn_calls} for a process per call)\n"
    );
    for tool in &tools {
        for &size in &sizes {
            let input = wasi::input(size);
            let mut callers: Vec<_> = modes.iter().map(|m| fixture.caller(*tool, *m)).collect();
            // Every path answers, and is warm, before anything is timed.
            rt.block_on(async {
                for (m, c) in modes.iter().zip(callers.iter_mut()) {
                    wasi::check(*tool, &input, &c.call(&input).await)
                        .map_err(|e| format!("{}: {e}", m.name()))?;
                }
                Ok::<(), String>(())
            })?;
            let mut samples = vec![Vec::new(); modes.len()];
            for _ in 0..rounds {
                for ((m, c), s) in modes.iter().zip(callers.iter_mut()).zip(&mut samples) {
                    let n = if *m == Mode::Process {
                        spawn_calls
                    } else {
                        calls
                    };
                    let per_call = rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..n {
                            std::hint::black_box(c.call(&input).await);
                        }
                        start.elapsed() / n as u32
                    });
                    s.push(per_call.as_secs_f64() * 1e6);
                }
            }
            let sides: Vec<stats::Side> = modes
                .iter()
                .zip(samples)
                .map(|(m, s)| stats::Side {
                    name: m.name().into(),
                    replicas: s,
                })
                .collect();
            let base = if modes.contains(&Mode::Process) {
                Mode::Process.name()
            } else {
                modes[0].name()
            };
            println!("### {} with a {size}-byte input\n", tool.builtin());
            println!("{}", stats::table("µs/call", Better::Lower, base, &sides));
        }
    }
    Ok(())
}

fn mcp(a: &McpArgs) -> Result<(), Box<dyn std::error::Error>> {
    use toolplane_bench::mcp::Server;
    let specs = &a.servers;
    if specs.len() < 2 {
        usage("mcp wants two or more --server NAME=COMMAND (the last is the baseline)");
    }
    let tool = a.tool.clone();
    let (calls, rounds, size) = (a.calls, a.rounds as usize, a.size as usize);
    let inflight = a.inflight.clone();
    // {"data":"aaa…"} of `size` bytes, as the tool's arguments.
    let input = wasi::input(size);
    let arguments: serde_json::Value = serde_json::from_slice(&input)?;
    let mut servers = Vec::new();
    for spec in specs {
        let (name, command) = spec
            .split_once('=')
            .unwrap_or_else(|| usage(&format!("--server {spec:?}: NAME[:TOOL]=COMMAND")));
        // NAME:TOOL calls TOOL on that server instead of --tool.
        let (name, tool) = name.split_once(':').unwrap_or((name, tool.as_str()));
        let mut s = Server::start(command, tool)?;
        // Warm: the first calls load modules and fill caches.
        s.round(&arguments, 200, 4)?;
        servers.push((name.to_string(), s));
    }
    println!(
        "## MCP `tools/call` on stdio: {size}-byte arguments, {calls} calls per round, {rounds} rounds, servers interleaved\n"
    );
    let baseline = servers.last().expect("two or more").0.clone();
    for &k in &inflight {
        let mut rate = vec![Vec::new(); servers.len()];
        let mut p50 = vec![Vec::new(); servers.len()];
        let mut p99 = vec![Vec::new(); servers.len()];
        for _ in 0..rounds {
            for (i, (name, s)) in servers.iter_mut().enumerate() {
                let r = s.round(&arguments, calls, k)?;
                if r.errors > 0 {
                    return Err(format!("{name}: {} of {calls} calls failed", r.errors).into());
                }
                eprintln!(
                    "{name} ({}), {k} in flight: {:.0} calls/s, p50 {} µs, p99 {} µs",
                    s.tool, r.calls_per_sec, r.p50_us, r.p99_us
                );
                rate[i].push(r.calls_per_sec);
                p50[i].push(r.p50_us);
                p99[i].push(r.p99_us);
            }
        }
        let sides = |v: &[Vec<f64>]| -> Vec<stats::Side> {
            servers
                .iter()
                .zip(v)
                .map(|((n, _), r)| stats::Side {
                    name: n.clone(),
                    replicas: r.clone(),
                })
                .collect()
        };
        println!("### {k} call(s) in flight\n");
        println!("throughput:\n");
        println!(
            "{}",
            stats::table("calls/s", Better::Higher, &baseline, &sides(&rate))
        );
        println!("write to response, median:\n");
        println!(
            "{}",
            stats::table("µs", Better::Lower, &baseline, &sides(&p50))
        );
        println!("write to response, 99th percentile:\n");
        println!(
            "{}",
            stats::table("µs", Better::Lower, &baseline, &sides(&p99))
        );
    }
    Ok(())
}

/// Registry start-up with `--tools` tools (copies of the built-ins under
/// distinct names), a cold cache (an empty directory) then a warm one (the
/// same directory, a new runtime) in each replica:
/// - listed: `Registry::build` returned, every manifest listed;
/// - all callable: every module loaded (compiled, or mapped from the
///   cache) and linked.
///
/// Prints a table and one JSON line with the medians.
fn registry_startup(a: &RegistryArgs) -> Result<(), Box<dyn std::error::Error>> {
    let (n, replicas) = (a.tools as usize, a.replicas as usize);
    let work = tempfile::TempDir::new()?;
    let tools = work.path().join("tools");
    let data = work.path().join("data");
    std::fs::create_dir_all(&tools)?;
    std::fs::create_dir_all(&data)?;
    let kinds = builtin::BUILTINS;
    registry::populate(&tools, n)?;
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for r in 0..replicas {
        let cache = work.path().join(format!("cache-{r}"));
        let mut c = registry_start(&tools, &data, &cache, n)?;
        let mut w = registry_start(&tools, &data, &cache, n)?;
        let once = work.path().join(format!("cache-once-{r}"));
        c.first_call_ms = first_call(&tools, &data, &once)?;
        w.first_call_ms = first_call(&tools, &data, &once)?;
        cold.push(c);
        warm.push(w);
    }
    let m = |v: &[Sample], f: fn(&Sample) -> f64| median_f64(v.iter().map(f).collect());
    let spread = |v: &[Sample], f: fn(&Sample) -> f64| {
        let xs: Vec<f64> = v.iter().map(f).collect();
        (
            xs.iter().copied().fold(f64::INFINITY, f64::min),
            xs.iter().copied().fold(0.0, f64::max),
        )
    };
    println!(
        "{n} tools ({} distinct modules), {replicas} replicas, cold cache then warm cache each",
        kinds.len()
    );
    println!();
    println!("| figure | cold median ms (min–max) | warm median ms (min–max) |");
    println!("|---|---|---|");
    for (label, f) in [
        (
            "runtime start",
            (|s: &Sample| s.runtime_ms) as fn(&Sample) -> f64,
        ),
        ("listed", |s: &Sample| s.listed_ms),
        ("all callable", |s: &Sample| s.callable_ms),
        (
            "on demand: runtime, listing and one call answered",
            |s: &Sample| s.first_call_ms,
        ),
    ] {
        let (cl, ch) = spread(&cold, f);
        let (wl, wh) = spread(&warm, f);
        println!(
            "| {label} | {:.1} ({cl:.1}–{ch:.1}) | {:.1} ({wl:.1}–{wh:.1}) |",
            m(&cold, f),
            m(&warm, f)
        );
    }
    let round = |x: f64| (x * 10.0).round() / 10.0;
    println!(
        "{}",
        serde_json::json!({
            "tools": n,
            "replicas": replicas,
            "listed_ms": round(m(&warm, |s| s.listed_ms)),
            "listed_cold_ms": round(m(&cold, |s| s.listed_ms)),
            "callable_warm_ms": round(m(&warm, |s| s.callable_ms)),
            "callable_cold_ms": round(m(&cold, |s| s.callable_ms)),
            "runtime_ms": round(m(&warm, |s| s.runtime_ms)),
            "first_call_cold_ms": round(m(&cold, |s| s.first_call_ms)),
            "first_call_warm_ms": round(m(&warm, |s| s.first_call_ms)),
        })
    );
    Ok(())
}

struct Sample {
    runtime_ms: f64,
    listed_ms: f64,
    callable_ms: f64,
    first_call_ms: f64,
}

/// A runtime with the pool's defaults, its cache in `cache`.
fn pool_runtime(cache: &std::path::Path) -> Result<Runtime, toolplane_pool::RuntimeError> {
    Runtime::new(PoolConfig {
        cache_dir: Some(cache.to_owned()),
        ..PoolConfig::default()
    })
}

/// What `toolplane call` does: a runtime, an on-demand registry over the
/// tools, and one call of one tool (its module compiled, or mapped from
/// `cache`, and nothing else); milliseconds until it answered.
fn first_call(
    tools: &std::path::Path,
    data: &std::path::Path,
    cache: &std::path::Path,
) -> Result<f64, Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let runtime = pool_runtime(cache)?;
    let registry = toolplane_pool::Registry::builder(runtime)
        .site(registry::site(data))
        .dir(tools)
        .builtins(false)
        .watch(false)
        .on_demand(true)
        .build()?;
    let name = registry
        .snapshot()
        .iter()
        .map(|e| e.manifest.name.clone())
        .find(|n| n.starts_with("echo-"))
        .ok_or("no echo copy listed")?;
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(registry.call(&name, b"{}"));
    if !matches!(outcome, toolplane_core::Outcome::Ok(_)) {
        return Err(format!("{name}: {outcome:?}").into());
    }
    Ok(t0.elapsed().as_secs_f64() * 1e3)
}

fn registry_start(
    tools: &std::path::Path,
    data: &std::path::Path,
    cache: &std::path::Path,
    n: usize,
) -> Result<Sample, Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let runtime = pool_runtime(cache)?;
    let runtime_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let mut listed_ms = 0.0;
    registry::start_with(runtime, tools, data, n, false, || {
        listed_ms = t1.elapsed().as_secs_f64() * 1e3;
    })?;
    Ok(Sample {
        runtime_ms,
        listed_ms,
        callable_ms: t1.elapsed().as_secs_f64() * 1e3,
        first_call_ms: 0.0,
    })
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Named sides of a table, one replica list each.
fn sides(names: &[&str], v: &[Vec<f64>]) -> Vec<stats::Side> {
    names
        .iter()
        .zip(v)
        .map(|(n, r)| stats::Side {
            name: (*n).into(),
            replicas: r.clone(),
        })
        .collect()
}

/// Per in-flight count, `rounds` rounds of `run(k)` (toolplane's side, then
/// the direct one): tables of calls/s, p50 and p99, and the added p50.
fn overhead(
    inflight: &[u64],
    rounds: usize,
    mut run: impl FnMut(
        u64,
    ) -> Result<
        (
            toolplane_bench::process::Round,
            toolplane_bench::process::Round,
        ),
        Box<dyn std::error::Error>,
    >,
) -> Result<(), Box<dyn std::error::Error>> {
    let names = ["toolplane", "direct"];
    for &k in inflight {
        let (mut rate, mut p50, mut p99) = (
            vec![Vec::new(); 2],
            vec![Vec::new(); 2],
            vec![Vec::new(); 2],
        );
        let mut added = Vec::new();
        for _ in 0..rounds {
            let (t, d) = run(k)?;
            eprintln!(
                "{k} in flight: toolplane {:.0}/s p50 {:.1} µs; direct {:.0}/s p50 {:.1} µs",
                t.calls_per_sec, t.p50_us, d.calls_per_sec, d.p50_us
            );
            for (i, r) in [t, d].iter().enumerate() {
                rate[i].push(r.calls_per_sec);
                p50[i].push(r.p50_us);
                p99[i].push(r.p99_us);
            }
            added.push(t.p50_us - d.p50_us);
        }
        let s = stats::summary(&added);
        println!("### {k} call(s) in flight\n");
        println!(
            "{}",
            stats::table("calls/s", Better::Higher, "direct", &sides(&names, &rate))
        );
        println!(
            "{}",
            stats::table("p50 µs", Better::Lower, "direct", &sides(&names, &p50))
        );
        println!(
            "{}",
            stats::table("p99 µs", Better::Lower, "direct", &sides(&names, &p99))
        );
        println!(
            "added at p50 (toolplane − direct, per round): median {} µs, range {}..{} µs\n",
            stats::fmt(s.median),
            stats::fmt(s.min),
            stats::fmt(s.max)
        );
    }
    Ok(())
}

fn process_tools(a: &ProcessArgs) -> Result<(), Box<dyn std::error::Error>> {
    use toolplane_bench::process::{self, Direct};
    let (rounds, calls) = (a.rounds as usize, a.calls);
    let dir = tempfile::TempDir::new()?;
    let (tools, data) = (dir.path().join("tools"), dir.path().join("data"));
    std::fs::create_dir_all(&tools)?;
    std::fs::create_dir_all(&data)?;
    let worker = process::echo_worker();
    let worker_s = worker.display().to_string();
    let long = "[limits]\ntimeout = \"60s\"\n";
    process::manifest(
        &tools,
        "jecho",
        "jsonl",
        &["node", &worker_s],
        &format!("[pool]\nmin = 1\nmax = 1\nmax_inflight_per_process = 256\n{long}"),
    );
    process::manifest(
        &tools,
        "xecho",
        "exec",
        &["cat"],
        &format!("[pool]\nmax = 16\n{long}"),
    );
    let nap = process::repo()
        .join("tools/examples/jsonl/nap.js")
        .display()
        .to_string();
    process::manifest(
        &tools,
        "nap",
        "jsonl",
        &["node", &nap],
        &format!("[pool]\nmax = 4\nmax_inflight_per_process = 256\n{long}"),
    );
    let upstream = match &a.upstream {
        Some(u) => u.split_whitespace().map(String::from).collect::<Vec<_>>(),
        None => {
            let exe = std::env::current_exe()?.with_file_name("toolplane");
            if !exe.exists() {
                return Err(format!(
                    "{} is missing: build it (cargo build --release -p toolplane-server) or name an upstream with --upstream",
                    exe.display()
                )
                .into());
            }
            let up_data = dir.path().join("up-data");
            std::fs::create_dir_all(&up_data)?;
            vec![
                exe.display().to_string(),
                "serve".into(),
                "--stdio".into(),
                "--data".into(),
                up_data.display().to_string(),
            ]
        }
    };
    let up_tool = a.upstream_tool.as_str();
    let up: Vec<&str> = upstream.iter().map(String::as_str).collect();
    process::manifest(
        &tools,
        "up",
        "mcp",
        &up,
        &format!("[pool]\nmax = 1\nmax_inflight_per_process = 256\n{long}"),
    );
    let member = format!("up.{up_tool}");
    // The same server over streamable HTTP, as a remote upstream (only
    // with the default upstream, which can serve HTTP).
    let remote = match &a.upstream {
        Some(_) => None,
        None => {
            let exe = std::env::current_exe()?.with_file_name("toolplane");
            let up_data = dir.path().join("rem-data");
            std::fs::create_dir_all(&up_data)?;
            let server = process::HttpServer::start(&exe, &up_data)?;
            std::fs::write(
                tools.join("rem.toml"),
                format!(
                    "name = \"rem\"\nruntime = \"remote\"\nurl = \"{}\"\n[pool]\nmax = 1\nmax_inflight_per_process = 256\n{long}",
                    server.url
                ),
            )?;
            Some(server)
        }
    };
    let registry = process::registry(&tools, &data)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let input = wasi::input(64);
    let mut direct = rt.block_on(async { Direct::start(&worker) })?;
    rt.block_on(async {
        direct.round(&input, 500, 8).await?;
        process::through(&registry, "jecho", &input, 500, 8)
            .await
            .map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(())
    })?;

    println!("## A jsonl worker (Node, echo), called directly and through toolplane\n");
    println!(
        "The same driver on one current-thread runtime: `direct` writes the request line to the worker's stdin and reads its answer; `toolplane` is `Registry::call` (schema check, pool, process host, the same worker program). {calls} calls per side and round, {rounds} rounds, interleaved; 64-byte input.\n"
    );
    overhead(&a.inflight, rounds, |k| {
        let t = rt.block_on(process::through(&registry, "jecho", &input, calls, k))?;
        let d = rt.block_on(direct.round(&input, calls, k))?;
        Ok((t, d))
    })?;
    rt.block_on(direct.stop());

    println!(
        "## An MCP server, called directly and through toolplane
"
    );
    let mcp = rt.block_on(process::DirectMcp::start(&upstream))?;
    rt.block_on(async {
        mcp.round(up_tool, &input, 500, 8).await?;
        process::through(&registry, &member, &input, 500, 8).await
    })?;
    println!(
        "The same driver on one current-thread runtime: `direct` is rmcp's client (the one toolplane's pool uses) on the driver's runtime, talking to `{}` over its stdio; `toolplane` is `Registry::call` of `{member}`, the same program as a `protocol = \"mcp\"` tool (schema check, pool, process host, rmcp's client there). {calls} calls per side and round, {rounds} rounds, interleaved; 64-byte input.\n",
        upstream.join(" ")
    );
    overhead(&a.inflight, rounds, |k| {
        let t = rt.block_on(process::through(&registry, &member, &input, calls, k))?;
        let d = rt.block_on(mcp.round(up_tool, &input, calls, k))?;
        Ok((t, d))
    })?;
    rt.block_on(mcp.stop());

    if let Some(server) = &remote {
        println!(
            "## A remote MCP server over streamable HTTP, called directly and through toolplane\n"
        );
        let member = format!("rem.{up_tool}");
        let direct = rt.block_on(process::DirectMcp::connect(&server.url))?;
        rt.block_on(async {
            direct.round(up_tool, &input, 500, 8).await?;
            process::through(&registry, &member, &input, 500, 8).await
        })?;
        println!(
            "The same driver on one current-thread runtime: `direct` is rmcp's streamable-HTTP client on the driver's runtime, talking to `toolplane serve --http` at {}; `toolplane` is `Registry::call` of `{member}`, the same server as a `runtime = \"remote\"` tool (schema check, pool, process host, rmcp's client there). {calls} calls per side and round, {rounds} rounds, interleaved; 64-byte input.\n",
            server.url
        );
        overhead(&a.inflight, rounds, |k| {
            let t = rt.block_on(process::through(&registry, &member, &input, calls, k))?;
            let d = rt.block_on(direct.round(up_tool, &input, calls, k))?;
            Ok((t, d))
        })?;
        rt.block_on(direct.stop());
    }

    println!("## The same work (echo, 64 bytes) as exec, jsonl and WASI, one call at a time\n");
    let names = ["exec (cat)", "jsonl (node)", "WASI echo"];
    let mut p50 = vec![Vec::new(); 3];
    for _ in 0..rounds {
        for (i, (tool, n)) in [
            ("xecho", (calls / 10).max(10)),
            ("jecho", calls),
            ("echo", calls),
        ]
        .iter()
        .enumerate()
        {
            let r = rt.block_on(process::through(&registry, tool, &input, *n, 1))?;
            eprintln!(
                "{tool}: p50 {:.1} µs, {:.0} calls/s",
                r.p50_us, r.calls_per_sec
            );
            p50[i].push(r.p50_us);
        }
    }
    println!(
        "{}",
        stats::table("p50 µs", Better::Lower, "WASI echo", &sides(&names, &p50))
    );

    println!(
        "## 1000 overlapping 500 ms sleeps on a pool of 4 Node processes (256 calls each at once)\n"
    );
    let sleep = br#"{"ms":500}"#;
    rt.block_on(process::through(
        &registry,
        "nap",
        b"{\"ms\":1}",
        1024,
        1024,
    ))
    .map_err(std::io::Error::other)?;
    let mut walls = Vec::new();
    for _ in 0..rounds.min(3) {
        let started = Instant::now();
        rt.block_on(process::through(&registry, "nap", sleep, 1000, 1000))?;
        walls.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let s = stats::summary(&walls);
    println!(
        "wall time: median {} ms, range {}..{} ms (one sleep: 500 ms), {} rounds\n",
        stats::fmt(s.median),
        stats::fmt(s.min),
        stats::fmt(s.max),
        walls.len()
    );
    drop(registry);

    println!("## Cold and warm starts\n");
    cold_starts(rounds.min(3), &worker_s)?;
    Ok(())
}

/// A jsonl worker's first call with `pool.min = 0` (the call starts it) and
/// `min = 1` (started at load); an MCP server from npm: the program's own
/// start-up (spawn, initialize, tools/list by a bare client), and
/// toolplane's load of it (the same, plus listing its members) and first
/// call, run by node and by npx.
fn cold_starts(replicas: usize, worker: &str) -> Result<(), Box<dyn std::error::Error>> {
    use toolplane_bench::process;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let input = wasi::input(64);
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    let mut add = |name: &str, ms: f64| match rows.iter_mut().find(|r| r.0 == name) {
        Some(r) => r.1.push(ms),
        None => rows.push((name.to_string(), vec![ms])),
    };
    let fs_server = process::repo()
        .join("tests/upstreams/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    if !fs_server.exists() {
        return Err(format!(
            "{} is missing: run tests/upstreams/setup.sh",
            fs_server.display()
        )
        .into());
    }
    let fs_s = fs_server.display().to_string();
    let upstreams = process::repo().join("tests/upstreams");
    for _ in 0..replicas {
        for min in [0, 1] {
            let dir = tempfile::TempDir::new()?;
            let (tools, data) = (dir.path().join("tools"), dir.path().join("data"));
            std::fs::create_dir_all(&tools)?;
            std::fs::create_dir_all(&data)?;
            process::manifest(
                &tools,
                "jecho",
                "jsonl",
                &["node", worker],
                &format!("[pool]\nmin = {min}\n"),
            );
            let registry = process::registry(&tools, &data)?;
            // min = 1: give the process its start-up, as a server would.
            std::thread::sleep(Duration::from_millis(500));
            let first = rt.block_on(process::through(&registry, "jecho", &input, 1, 1))?;
            let second = rt.block_on(process::through(&registry, "jecho", &input, 1, 1))?;
            add(
                &format!("jsonl node worker, pool.min = {min}: first call"),
                first.p50_us / 1e3,
            );
            add(
                &format!("jsonl node worker, pool.min = {min}: second call"),
                second.p50_us / 1e3,
            );
        }
        let started = Instant::now();
        let bare = toolplane_bench::mcp::Server::start(
            &format!("node {fs_s} /tmp"),
            "list_allowed_directories",
        )?;
        add(
            "server-filesystem by node, bare client: spawn + initialize + tools/list",
            started.elapsed().as_secs_f64() * 1e3,
        );
        drop(bare);
        for (how, command) in [
            (
                "node",
                vec!["node".to_string(), fs_s.clone(), "{data}".into()],
            ),
            (
                "npx",
                vec![
                    "npx".to_string(),
                    "--no-install".into(),
                    "mcp-server-filesystem".into(),
                    "{data}".into(),
                ],
            ),
        ] {
            let dir = tempfile::TempDir::new()?;
            let (tools, data) = (dir.path().join("tools"), dir.path().join("data"));
            std::fs::create_dir_all(&tools)?;
            std::fs::create_dir_all(&data)?;
            let command: Vec<&str> = command.iter().map(String::as_str).collect();
            let cwd = format!("cwd = {:?}\n", upstreams.display().to_string());
            process::manifest(&tools, "files", "mcp", &command, &cwd);
            let started = Instant::now();
            let registry = process::registry(&tools, &data)?;
            add(
                &format!("server-filesystem by {how}, toolplane: load (listed, callable)"),
                started.elapsed().as_secs_f64() * 1e3,
            );
            let first = rt.block_on(process::through(
                &registry,
                "files.list_allowed_directories",
                b"{}",
                1,
                1,
            ))?;
            add(
                &format!("server-filesystem by {how}, toolplane: first call after load"),
                first.p50_us / 1e3,
            );
        }
    }
    println!("| what | median ms | range ms |\n|---|---|---|");
    for (name, v) in &rows {
        let s = stats::summary(v);
        println!(
            "| {name} | {} | {}..{} |",
            stats::fmt(s.median),
            stats::fmt(s.min),
            stats::fmt(s.max)
        );
    }
    println!();
    Ok(())
}
