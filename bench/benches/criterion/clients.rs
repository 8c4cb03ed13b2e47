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

/// An OAuth access token's check: the signature and claims of a token not
/// seen before (each algorithm), and a token checked a moment ago (the
/// cache).
pub fn oauth(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (v, tokens) = toolplane_bench::clients::oauth(dir.path());
    let mut g = c.benchmark_group("clients/oauth");
    // Neither waits: the keys are held, so each check completes when
    // first polled.
    let ok = |r: Option<Result<_, _>>| assert!(r.is_some_and(|r| r.is_ok()));
    for (alg, t) in &tokens {
        g.bench_function(format!("{alg}: signature and claims"), |b| {
            b.iter(|| {
                ok(futures_util::FutureExt::now_or_never(
                    v.verify_uncached(black_box(t)),
                ))
            })
        });
    }
    let t = &tokens[0].1;
    g.bench_function("a token checked before (cached)", |b| {
        b.iter(|| {
            ok(futures_util::FutureExt::now_or_never(
                v.verify(black_box(t)),
            ))
        })
    });
    g.finish();
}
