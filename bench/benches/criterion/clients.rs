//! `[[clients]]`: what a call pays for its client's identity, scope, rate
//! and slot, against the single shared token it replaces (one SHA-256
//! and a constant-time compare), with 1 and 1000 clients configured.
//!
//! `cargo bench --workspace --profile release --bench criterion -- '^clients/'`

use std::hint::black_box;

use criterion::Criterion;
use toolplane_bench::clients::{check, directory, token};
use toolplane_server::config::TokenDigest;

pub fn check_per_call(c: &mut Criterion) {
    let mut g = c.benchmark_group("clients/per call");
    let shared = TokenDigest::of(&token(0));
    let t0 = token(0);
    g.bench_function("baseline: one shared token", |b| {
        b.iter(|| assert!(shared.matches(black_box(&t0))))
    });
    for n in [1usize, 1000] {
        let d = directory(n);
        let t = token(n / 2);
        g.bench_function(format!("{n} clients: token, scope, rate, slot"), |b| {
            b.iter(|| black_box(check(&d, black_box(&t), black_box("hash.sha256"))))
        });
    }
    g.finish();
}
