//! WASI calls, per call, one after another on one thread: every mode of
//! `toolplane_bench::wasi` (a process per call, the naive embedding, the
//! pool's fresh instance with the command and the fast entry, reuse) on
//! `echo` and `hash.sha256`, with 64 B, 1 KiB and 64 KiB inputs.
//!
//! `cargo bench --workspace --profile release --bench criterion -- '^wasi/'`,
//! or one tool and mode, e.g. `-- '^wasi/echo/reuse'`. A process per call
//! takes milliseconds: its group runs 10 samples.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use toolplane_bench::wasi::{self, Fixture, Mode, Tool};
use toolplane_pool::PoolConfig;

pub fn calls(c: &mut Criterion) {
    let fixture = Fixture::new(PoolConfig::default()).expect("the WASI fixture starts");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    for tool in Tool::ALL {
        for mode in Mode::ALL {
            let mut g = c.benchmark_group(format!("wasi/{}/{}", tool.builtin(), mode.key()));
            if mode == Mode::Process {
                g.sample_size(10);
                g.measurement_time(Duration::from_secs(3));
            }
            let mut caller = fixture.caller(tool, mode);
            for size in [64usize, 1024, 64 * 1024] {
                let input = wasi::input(size);
                let first = rt.block_on(caller.call(&input));
                if let Err(e) = wasi::check(tool, &input, &first) {
                    panic!("{}: {e}", mode.name());
                }
                g.throughput(Throughput::Bytes(size as u64));
                g.bench_function(BenchmarkId::from_parameter(size), |b| {
                    b.iter_custom(|iters| {
                        rt.block_on(async {
                            let start = Instant::now();
                            for _ in 0..iters {
                                black_box(caller.call(&input).await);
                            }
                            start.elapsed()
                        })
                    })
                });
            }
            g.finish();
        }
    }
}
