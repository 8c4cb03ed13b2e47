//! Ring handoff, one producer thread and one consumer thread, u64 items
//! (a slot pointer's size, what the engine's rings carry): rtrb one at a
//! time and in chunks of up to 64 (the engine's batch), crossbeam's
//! `ArrayQueue`, crossbeam-channel and flume, all bounded at 1024 (the
//! engine's ring capacity).
//!
//! `cargo bench --workspace --profile release --bench criterion -- '^rings/'`

use std::hint::black_box;
use std::sync::{Arc, Mutex};

use criterion::{Criterion, Throughput};
use toolplane_bench::crew::Crew;

const CAPACITY: usize = 1024;
const CHUNK: usize = 64;

enum End<P, C> {
    Producer(P),
    Consumer(C),
}

/// Times `iters` items through one ring: thread 0 pushes them with `push`
/// (spinning while full), thread 1 takes them with `pop`, which returns
/// how many it took (spinning while empty).
fn handoff<P, C>(
    c: &mut Criterion,
    name: &str,
    ends: (P, C),
    push: fn(&mut P, u64, u64) -> u64,
    pop: fn(&mut C) -> u64,
) where
    P: Send + 'static,
    C: Send + 'static,
{
    let ends = Arc::new(Mutex::new(vec![
        Some(End::Producer(ends.0)),
        Some(End::Consumer(ends.1)),
    ]));
    let crew = Crew::start(
        2,
        move |i| ends.lock().expect("ends")[i].take().expect("one end each"),
        move |end: &mut End<P, C>, iters| match end {
            End::Producer(p) => {
                let mut sent = 0;
                while sent < iters {
                    let n = push(p, sent, iters - sent);
                    if n == 0 {
                        std::hint::spin_loop();
                    }
                    sent += n;
                }
            }
            End::Consumer(c) => {
                let mut got = 0;
                while got < iters {
                    let n = pop(c);
                    if n == 0 {
                        std::hint::spin_loop();
                    }
                    got += n;
                }
            }
        },
    );
    let mut g = c.benchmark_group("rings");
    g.throughput(Throughput::Elements(1));
    g.bench_function(name, |b| b.iter_custom(|iters| crew.run_each(iters)));
    g.finish();
}

pub fn rings(c: &mut Criterion) {
    handoff(
        c,
        "rtrb push-pop",
        rtrb::RingBuffer::<u64>::new(CAPACITY),
        |p, i, _| u64::from(p.push(i).is_ok()),
        |c| {
            c.pop().map_or(0, |v| {
                black_box(v);
                1
            })
        },
    );
    handoff(
        c,
        "rtrb chunks of 64",
        rtrb::RingBuffer::<u64>::new(CAPACITY),
        |p, i, left| {
            let n = p.slots().min(CHUNK).min(left as usize);
            if n == 0 {
                return 0;
            }
            let chunk = p.write_chunk_uninit(n).expect("n <= slots");
            chunk.fill_from_iter(i..) as u64
        },
        |c| {
            let n = c.slots().min(CHUNK);
            if n == 0 {
                return 0;
            }
            let chunk = c.read_chunk(n).expect("n <= slots");
            for v in chunk.into_iter() {
                black_box(v);
            }
            n as u64
        },
    );
    let q = Arc::new(crossbeam_queue::ArrayQueue::<u64>::new(CAPACITY));
    handoff(
        c,
        "crossbeam ArrayQueue",
        (q.clone(), q),
        |q, i, _| u64::from(q.push(i).is_ok()),
        |q| {
            q.pop().map_or(0, |v| {
                black_box(v);
                1
            })
        },
    );
    handoff(
        c,
        "crossbeam-channel bounded",
        crossbeam_channel::bounded::<u64>(CAPACITY),
        |tx, i, _| u64::from(tx.try_send(i).is_ok()),
        |rx| {
            rx.try_recv().map_or(0, |v| {
                black_box(v);
                1
            })
        },
    );
    handoff(
        c,
        "flume bounded",
        flume::bounded::<u64>(CAPACITY),
        |tx, i, _| u64::from(tx.try_send(i).is_ok()),
        |rx| {
            rx.try_recv().map_or(0, |v| {
                black_box(v);
                1
            })
        },
    );
}
