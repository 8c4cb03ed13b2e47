//! OpenTelemetry traces: what a call pays for its span when traces are on,
//! through the SDK's batch processor into an exporter that drops what it
//! gets (the export itself is the processor's thread's): a call that the
//! sampler leaves out (99 in 100 by default) and one it records (its
//! attributes, the engine's three phases as events, the span handed to the
//! processor's queue). With traces off a call builds no span at all.
//!
//! `cargo bench --workspace --profile release --bench criterion -- '^traces/'`

use std::hint::black_box;
use std::time::SystemTime;

use criterion::Criterion;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SpanData, SpanExporter};
use toolplane_server::CallResult;
use toolplane_server::otel::{Front, Phases, Tracing};

/// Takes every batch and drops it.
#[derive(Debug)]
struct Drop;

impl SpanExporter for Drop {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

pub fn per_call(c: &mut Criterion) {
    let caller = {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        toolplane_server::trace::from_headers(&h)
    };
    let now = SystemTime::now();
    let phases = Phases {
        queued: now,
        running: now,
        answered: now,
        worker: 1,
    };
    let mut g = c.benchmark_group("traces/per call");
    for (name, sampler) in [
        ("not sampled: start and end a span", Sampler::AlwaysOff),
        (
            "sampled: attributes, 3 events, handed to the batch processor",
            Sampler::AlwaysOn,
        ),
    ] {
        let t = Tracing::with_exporter(Drop, Some(sampler), "bench");
        g.bench_function(name, |b| {
            b.iter(|| {
                let span = t.start(&Front::Rest, Some(black_box("echo")), caller.as_ref());
                let passed = toolplane_server::trace::context_of(span.context());
                black_box(passed);
                span.end(Ok(()), CallResult::Ok, Some(phases));
            })
        });
        t.shutdown();
    }
    g.finish();
}
