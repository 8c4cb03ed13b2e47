//! Spans and metrics:
//! - one worker batch of 64 events (the worker's own per-batch function,
//!   on this thread) with span sampling off, on every 64th event and on
//!   every event: the difference is the cost of recording a span;
//! - recording one event in the three latency histograms, as a worker
//!   does;
//! - merging a worker's histograms into a snapshot;
//! - a metrics snapshot of a running engine (a request to every worker
//!   and their histograms merged), with 1 and 2 workers.
//!
//! `cargo bench --workspace --profile release --bench criterion -- '^spans/'`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use toolplane_bench::pools::noop;
use toolplane_core::bench_hook::WorkerBatch;
use toolplane_core::{Engine, Latencies, handler_fn};

pub fn batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("spans/worker batch of 64");
    g.throughput(Throughput::Elements(64));
    for (name, every) in [
        ("spans off", 0u64),
        ("span every 64th", 64),
        ("span every event", 1),
    ] {
        let mut w = WorkerBatch::new(noop, 64, every);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    w.submit(64, 0);
                    let t = Instant::now();
                    black_box(w.pass());
                    total += t.elapsed();
                    w.reap();
                }
                total
            })
        });
    }
    g.finish();
}

pub fn histograms(c: &mut Criterion) {
    let mut g = c.benchmark_group("spans/histograms");
    let mut l = Latencies::default();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("record one event (3 histograms)", |b| {
        b.iter(|| {
            // A spread of values, as ticks of real events are.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (wait, service) = (x % 100_000 + 1, (x >> 32) % 1_000_000 + 1);
            l.queue_wait.saturating_record(wait);
            l.service.saturating_record(service);
            l.end_to_end.saturating_record(wait + service);
        })
    });
    let mut full = Latencies::default();
    for i in 1..100_000u64 {
        full.queue_wait.saturating_record(i * 7);
        full.service.saturating_record(i * 13);
        full.end_to_end.saturating_record(i * 20);
    }
    g.bench_function("merge a worker's histograms", |b| {
        let mut into = Latencies::default();
        b.iter(|| {
            into.queue_wait.add(&full.queue_wait).expect("same bounds");
            into.service.add(&full.service).expect("same bounds");
            into.end_to_end.add(&full.end_to_end).expect("same bounds");
        })
    });
    g.finish();
}

pub fn snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("spans/metrics snapshot");
    for workers in [1usize, 2] {
        let engine = Engine::builder()
            .workers(workers)
            .build(handler_fn(noop))
            .expect("engine builds");
        g.bench_function(
            BenchmarkId::from_parameter(format!("{workers} worker(s)")),
            |b| b.iter(|| black_box(engine.metrics())),
        );
        engine.shutdown(Duration::from_secs(5));
    }
    g.finish();
}
