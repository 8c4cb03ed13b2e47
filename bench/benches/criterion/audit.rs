//! `[audit]`: what a call pays to hand its record to the log (the ring
//! push of a record as the server builds one), and how many records a
//! second the writer makes durable with group commit on this machine's
//! disk (one `write` + one `fdatasync` a batch).
//!
//! `cargo bench --workspace --profile release --bench criterion -- '^audit/'`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use futures_util::FutureExt;
use toolplane_audit::{AuditLog, Options, Record};

fn record(n: u64) -> Record {
    Record {
        time_us: 1_796_000_000_000_000 + n,
        call: format!("{:032x}", u128::from(n)),
        client: Arc::from("ci-bot"),
        tool: Arc::from("echo"),
        key: None,
        outcome: "ok".to_string(),
        latency_us: 180,
        input_sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        input_bytes: 64,
        output_bytes: 64,
        trace: None,
        node: Arc::from("tp-1"),
        ran_on: None,
        subject: None,
        arguments: None,
        arguments_omitted: false,
    }
}

/// The call path: a place held in the ring, the record built as the
/// server builds it (the input's SHA-256 among it), and pushed; against
/// building the record alone. Timed in runs of 4096 calls, the writer
/// emptying the ring between runs (untimed), so that no call finds it full.
pub fn per_call(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(Options::new(dir.path().to_owned())).unwrap();
    let input = [b'x'; 64];
    let build = |n: u64| {
        // As the server's `sha256_hex`.
        use sha2::Digest;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut r = record(n);
        let mut hex = String::with_capacity(64);
        for b in sha2::Sha256::digest(black_box(&input)) {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 15)]));
        }
        r.input_sha256 = hex;
        r
    };
    let mut g = c.benchmark_group("audit/per call");
    let mut n = 0u64;
    g.bench_function("hold a place, build the record, push it (async)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let run = left.min(4096);
                let t = Instant::now();
                for _ in 0..run {
                    n += 1;
                    // A free place is taken without waiting: the future is ready.
                    let slot = log.reserve().now_or_never().unwrap().unwrap().unwrap();
                    black_box(slot.push(build(black_box(n))));
                }
                total += t.elapsed();
                left -= run;
                while log.queued() > 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            total
        })
    });
    g.bench_function("baseline: build the record only", |b| {
        b.iter(|| {
            n += 1;
            black_box(build(black_box(n)))
        })
    });
    g.finish();
    assert_eq!(
        log.stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    log.close();
}

/// Records made durable a second: 100 000 records pushed from two threads
/// as fast as the ring takes them (`on_full = "wait"`), timed until the
/// last is on disk (`close`), for three batch sizes.
pub fn throughput(c: &mut Criterion) {
    const N: u64 = 100_000;
    let mut g = c.benchmark_group("audit/durable records");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    for max_batch in [64usize, 256, 1024] {
        g.bench_function(format!("max_batch {max_batch}, max_delay 2ms"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let mut opts = Options::new(dir.path().to_owned());
                    opts.max_batch = max_batch;
                    let log = Arc::new(AuditLog::open(opts).unwrap());
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_time()
                        .build()
                        .unwrap();
                    let t = Instant::now();
                    rt.block_on(async {
                        let tasks: Vec<_> = (0..2u64)
                            .map(|w| {
                                let log = Arc::clone(&log);
                                tokio::spawn(async move {
                                    for n in 0..N / 2 {
                                        log.append(record(w * N + n)).await.unwrap();
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    });
                    log.close();
                    total += t.elapsed();
                    assert_eq!(
                        log.stats()
                            .written
                            .load(std::sync::atomic::Ordering::Relaxed),
                        N
                    );
                }
                total
            })
        });
    }
    g.finish();
}
