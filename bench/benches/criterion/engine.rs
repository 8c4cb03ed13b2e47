//! The engine, submit → complete: no-op native handler, one worker per
//! core but one (at least one), 1 and 2 producer threads released together
//! by a barrier; events unordered or ordered per key (64 keys); span
//! sampling off or on every event (to a callback that drops it).
//!
//! `cargo bench --workspace --profile release --bench criterion -- '^engine/'`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use toolplane_bench::crew::Crew;
use toolplane_bench::pools::noop;
use toolplane_core::{Engine, Event, Payload, Producer, SpanExport, ToolId, handler_fn};

/// Submits `share` events (bursts while the rings take them) and drains
/// until every one of them is complete.
fn submit_all(p: &mut Producer, tool: ToolId, keys: u64, share: u64) {
    let (mut sent, mut done) = (0u64, 0u64);
    while done < share {
        while sent < share {
            let mut e = Event::new(tool, Payload::new()).with_tag(sent);
            if keys > 0 {
                e = e.with_key(sent % keys);
            }
            if p.submit(e).is_err() {
                break;
            }
            sent += 1;
        }
        done += p.drain(|c| {
            black_box(c);
        }) as u64;
    }
}

pub fn engine(c: &mut Criterion) {
    let workers = core_affinity::get_core_ids()
        .map_or(1, |c| c.len())
        .saturating_sub(1)
        .max(1);
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    for producers in [1usize, 2] {
        for (order, keys) in [("unordered", 0u64), ("per-key ordered", 64)] {
            for spans in [false, true] {
                let mut b = Engine::builder().workers(workers);
                b = if spans {
                    b.sample_every(1)
                        .span_export(SpanExport::Callback(Arc::new(|s| {
                            black_box(s);
                        })))
                } else {
                    b.sample_every(0)
                };
                let engine = Arc::new(b.build(handler_fn(noop)).expect("engine builds"));
                let tool = engine.tool("noop");
                let e = engine.clone();
                let crew = Crew::start(
                    producers,
                    move |_| {
                        let mut p = e.producer();
                        p.preallocate();
                        p
                    },
                    move |p: &mut Producer, share| submit_all(p, tool, keys, share),
                );
                let id = BenchmarkId::new(
                    format!("{order}, spans {}", if spans { "on" } else { "off" }),
                    format!("{producers} producer(s)"),
                );
                g.bench_function(id, |b| b.iter_custom(|iters| crew.run(iters)));
                drop(crew);
                let engine = Arc::into_inner(engine).expect("the crew is gone");
                let report = engine.shutdown(Duration::from_secs(5));
                assert!(report.is_balanced(), "engine lost events: {report:?}");
            }
        }
    }
    g.finish();
}
