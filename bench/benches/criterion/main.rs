//! The criterion suites, one file per area, linked into one bench binary
//! (each binary that links wasmtime costs minutes of LTO, and CI compiles
//! every bench). Every group's name starts with its area, so a regex
//! filter runs one area:
//!
//! ```text
//! cargo bench --workspace --profile release --bench criterion -- '^rings/'
//! cargo bench --workspace --profile release --bench criterion -- '^engine/'
//! cargo bench --workspace --profile release --bench criterion -- '^spans/'
//! cargo bench --workspace --profile release --bench criterion -- '^wasi/'
//! cargo bench --workspace --profile release --bench criterion -- '^registry/'
//! cargo bench --workspace --profile release --bench criterion -- '^clients/'
//! cargo bench --workspace --profile release --bench criterion -- '^audit/'
//! cargo bench --workspace --profile release --bench criterion -- '^traces/'
//! ```
//!
//! The release profile and `--workspace` reuse the test build (`cargo
//! bench` alone would use the bench profile, `-p` other features; either
//! would compile wasmtime again). Fixtures of areas the filter leaves out
//! are still set up (a second or two), not measured.

mod audit;
mod clients;
mod engine;
mod registry;
mod rings;
mod spans;
mod traces;
mod wasi;

use criterion::Criterion;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // A process-per-call child (the `wasi` area's baseline) runs its call
    // and exits here.
    toolplane_bench::wasi::child_main();
    let mut c = Criterion::default().configure_from_args();
    rings::rings(&mut c);
    engine::engine(&mut c);
    spans::batch(&mut c);
    spans::histograms(&mut c);
    spans::snapshot(&mut c);
    wasi::calls(&mut c);
    registry::startup(&mut c);
    registry::hot_reload(&mut c);
    clients::check_per_call(&mut c);
    clients::oauth(&mut c);
    audit::per_call(&mut c);
    audit::throughput(&mut c);
    traces::per_call(&mut c);
    c.final_summary();
}
