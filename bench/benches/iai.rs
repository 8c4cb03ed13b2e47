//! Instruction counts (iai-callgrind, under valgrind) of the hot-path
//! pieces whose work is deterministic:
//! - one batch of 64 no-op events through a worker (the worker's own
//!   per-batch function on this thread), with span sampling off and on
//!   every event (the difference is 64 span records);
//! - one fresh-instance `echo` call with a 64-byte input (pooled instance,
//!   fast entry), after a first call warmed the slot;
//! - a call's `[[clients]]` check (token, scope, rate, slot) with 1 and
//!   1000 clients configured;
//! - a call's audit record: a place held in the log's ring, the record
//!   built as the server builds it (the input's SHA-256 among it), pushed
//!   (the writer's thread, which writes it, is not counted);
//! - a call's span with traces on: started and ended unsampled (99 calls
//!   in 100 by default), and sampled (attributes, the engine's three
//!   phases, handed to the batch processor; its export thread is not
//!   counted).
//!
//! Run with `bench/iai.sh` (it installs the matching runner), which also
//! compares the counts with `bench/iai-baseline.json`.

use std::hint::black_box;
use std::time::Duration;

use futures_util::FutureExt;
use iai_callgrind::{library_benchmark, library_benchmark_group, main};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SpanData, SpanExporter};
use toolplane_audit::{AuditLog, Options, Record};
use toolplane_bench::pools::noop;
use toolplane_core::bench_hook::WorkerBatch;
use toolplane_core::{Event, Outcome};
use toolplane_pool::{PoolConfig, Registry, Runtime, builtin};

type Batch = WorkerBatch<fn(Event) -> Outcome>;

/// A worker with one batch of 64 events waiting, after one batch went
/// through (so the first-use costs are paid).
fn worker(sample_every: u64) -> Batch {
    let mut w = WorkerBatch::new(noop as fn(Event) -> Outcome, 64, sample_every);
    w.submit(64, 0);
    assert_eq!(w.pass(), 64);
    w.reap();
    assert_eq!(w.submit(64, 0), 64);
    w
}

#[library_benchmark]
#[bench::spans_off(setup = worker, args = (0))]
#[bench::span_every_event(setup = worker, args = (1))]
fn worker_batch_of_64(mut w: Batch) -> Batch {
    assert_eq!(black_box(w.pass()), 64);
    // Returned, so its drop is not counted.
    w
}

/// What a fresh echo call needs, kept alive past the measured call.
struct EchoFixture {
    registry: Registry,
    rt: tokio::runtime::Runtime,
    input: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn echo() -> EchoFixture {
    let dir = tempfile::TempDir::new().expect("a temporary directory");
    let tools = dir.path().join("tools");
    std::fs::create_dir_all(&tools).expect("tools directory");
    let b = builtin::get("echo").expect("echo is built in");
    std::fs::write(tools.join("echo.wasm"), b.module).expect("module");
    std::fs::write(tools.join("echo.toml"), b.manifest).expect("manifest");
    let runtime = Runtime::new(PoolConfig {
        instances: 2,
        cache_dir: Some(dir.path().join("cache")),
        // No epoch tick lands inside the measured call: a yield would
        // add a few hundred instructions at a random point.
        epoch_tick: Duration::from_secs(1),
        ..PoolConfig::default()
    })
    .expect("runtime");
    let registry = Registry::builder(runtime)
        .dir(&tools)
        .builtins(false)
        .watch(false)
        .loaders(1)
        .build()
        .expect("registry");
    assert!(registry.wait_loaded(Duration::from_secs(600)), "echo loads");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let input = toolplane_bench::wasi::input(64);
    let first = rt.block_on(registry.call("echo", &input));
    assert!(
        matches!(&first, Outcome::Ok(p) if p.as_slice() == input.as_slice()),
        "{first:?}"
    );
    EchoFixture {
        registry,
        rt,
        input,
        _dir: dir,
    }
}

#[library_benchmark]
#[bench::input_64_bytes(setup = echo)]
fn fresh_echo_call(f: EchoFixture) -> (EchoFixture, Outcome) {
    let out = f.rt.block_on(f.registry.call("echo", &f.input));
    (f, black_box(out))
}

type Clients = (toolplane_server::clients::Directory, String);

/// A client list of `n`, and the token of the one in the middle, after
/// one check (so the limiter's key exists, as it does in a running
/// server).
fn clients(n: usize) -> Clients {
    let d = toolplane_bench::clients::directory(n);
    let t = toolplane_bench::clients::token(n / 2);
    toolplane_bench::clients::check(&d, &t, "hash.sha256");
    (d, t)
}

#[library_benchmark]
#[bench::one_client(setup = clients, args = (1))]
#[bench::thousand_clients(setup = clients, args = (1000))]
fn client_check(f: Clients) -> Clients {
    black_box(toolplane_bench::clients::check(&f.0, &f.1, "hash.sha256"));
    f
}

/// An audit log on a temporary directory that took one record already.
struct AuditFixture {
    log: AuditLog,
    input: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn audit_record(input: &[u8]) -> Record {
    // As the server's `sha256_hex`.
    use sha2::Digest;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in sha2::Sha256::digest(input) {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 15)]));
    }
    Record {
        time_us: 1_796_000_000_000_000,
        call: format!("{:032x}", 7u128),
        client: std::sync::Arc::from("ci-bot"),
        tool: std::sync::Arc::from("echo"),
        key: None,
        outcome: "ok".to_string(),
        latency_us: 180,
        input_sha256: hex,
        input_bytes: input.len() as u64,
        output_bytes: 64,
        trace: None,
        node: std::sync::Arc::from("tp-1"),
        ran_on: None,
        subject: None,
        arguments: None,
        arguments_omitted: false,
    }
}

fn audit() -> AuditFixture {
    let dir = tempfile::TempDir::new().expect("a temporary directory");
    let log = AuditLog::open(Options::new(dir.path().to_owned())).expect("the audit log");
    let input = toolplane_bench::wasi::input(64);
    let slot = log
        .reserve()
        .now_or_never()
        .expect("a free place")
        .unwrap()
        .unwrap();
    slot.push(audit_record(&input));
    while log.queued() > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Past its max_delay (2 ms) the writer has parked idle, so the
    // measured push always finds it so (and wakes it): the same work in
    // every run.
    std::thread::sleep(Duration::from_millis(50));
    AuditFixture {
        log,
        input,
        _dir: dir,
    }
}

#[library_benchmark]
#[bench::hold_build_push(setup = audit)]
fn audit_push(f: AuditFixture) -> AuditFixture {
    // A free place is taken without waiting: the future is ready.
    let slot = f.log.reserve().now_or_never().unwrap().unwrap().unwrap();
    black_box(slot.push(audit_record(black_box(&f.input))));
    f
}

/// Takes every batch of spans and drops it.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

type Spans = (
    toolplane_server::otel::Tracing,
    toolplane_server::otel::Phases,
);

/// Traces on, every span sampled or none, after one span went through.
fn traces(sampled: bool) -> Spans {
    use toolplane_server::otel::{Front, Phases, Tracing};
    let sampler = if sampled {
        Sampler::AlwaysOn
    } else {
        Sampler::AlwaysOff
    };
    let t = Tracing::with_exporter(Discard, Some(sampler), "bench");
    let now = std::time::SystemTime::now();
    let phases = Phases {
        queued: now,
        running: now,
        answered: now,
        worker: 1,
    };
    t.start(&Front::Rest, Some("echo"), None).end(
        Ok(()),
        toolplane_server::CallResult::Ok,
        Some(phases),
    );
    (t, phases)
}

#[library_benchmark]
#[bench::not_sampled(setup = traces, args = (false))]
#[bench::sampled(setup = traces, args = (true))]
fn call_span(f: Spans) -> Spans {
    let span = f.0.start(
        &toolplane_server::otel::Front::Rest,
        Some(black_box("echo")),
        None,
    );
    let phases = span.is_sampled().then_some(f.1);
    span.end(Ok(()), toolplane_server::CallResult::Ok, phases);
    f
}

library_benchmark_group!(name = worker; benchmarks = worker_batch_of_64);
library_benchmark_group!(name = wasi; benchmarks = fresh_echo_call);
library_benchmark_group!(name = clients; benchmarks = client_check);
library_benchmark_group!(name = audit; benchmarks = audit_push);
library_benchmark_group!(name = traces; benchmarks = call_span);
main!(
    library_benchmark_groups = worker,
    wasi,
    clients,
    audit,
    traces
);
