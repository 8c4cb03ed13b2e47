//! Under 10x overload memory stays bounded, every refusal is counted by
//! reason, and the engine recovers afterwards.

use std::time::{Duration, Instant};

use toolplane_core::{Event, Outcome, Priority, RejectReason, handler_fn};

use crate::support::{builder, drain_until, eventually, sleeper, submit_all};

/// Busy-waits `us` microseconds: a CPU-bound handler of known cost.
fn spin(us: u64) {
    let until = Instant::now() + Duration::from_micros(us);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[test]
fn overload_is_bounded_counted_and_recovered_from() {
    const RING: usize = 256;
    let engine = builder(2)
        .ring_capacity(RING)
        .max_inflight(4096)
        .build(handler_fn(|_e| {
            spin(20);
            Outcome::Ok(Default::default())
        }))
        .unwrap();
    let tool = engine.tool("spin");
    let mut p = engine.producer();
    let (mut accepted, mut rejected) = (0u64, [0u64; RejectReason::ALL.len()]);
    let mut done = Vec::new();
    // Two workers at 20 us a call serve about 100k/s; offer as fast as one
    // producer can (far beyond 10x), a quarter of it low priority, for
    // 300 ms, watching queue depth.
    let start = Instant::now();
    let mut i = 0u64;
    let mut max_depth = 0;
    let mut looked = Instant::now();
    while start.elapsed() < Duration::from_millis(300) {
        let priority = if i.is_multiple_of(4) {
            Priority::Low
        } else {
            Priority::Normal
        };
        match p.submit(
            Event::new(tool, b"".as_slice())
                .with_key(i)
                .with_priority(priority),
        ) {
            Ok(()) => accepted += 1,
            Err(r) => rejected[r.reason() as usize] += 1,
        }
        i += 1;
        if i.is_multiple_of(256) {
            p.drain(|c| done.push(c));
        }
        if looked.elapsed() >= Duration::from_millis(5) {
            looked = Instant::now();
            let m = engine.counters();
            for w in &m.workers {
                max_depth = max_depth.max(w.queue_depth);
            }
            assert!(m.in_flight <= 4096);
        }
    }
    assert!(
        max_depth <= RING as u64,
        "a worker's queue held {max_depth} events with ring capacity {RING}"
    );
    assert!(
        rejected[RejectReason::Full as usize] > 0,
        "no Full rejection: {rejected:?}"
    );
    assert!(
        rejected[RejectReason::Shed as usize] > 0,
        "no Shed rejection: {rejected:?}"
    );
    assert!(
        i >= 10 * accepted.max(1) / 2,
        "the offered load ({i}) was not well beyond what was accepted ({accepted})"
    );
    let m = engine.counters();
    assert_eq!(m.rejected.0, rejected, "rejections are counted by reason");
    assert_eq!(m.accepted, accepted);

    // Recovery: everything accepted completes, queues empty, and a normal
    // load afterwards is served in full.
    drain_until(
        &mut p,
        &mut done,
        accepted as usize,
        Duration::from_secs(30),
    );
    eventually(
        Duration::from_secs(5),
        "in-flight and queues back to 0",
        || {
            let m = engine.counters();
            m.in_flight == 0
                && m.workers
                    .iter()
                    .all(|w| w.queue_depth == 0 && w.calls_in_flight == 0)
        },
    );
    let before = done.len();
    submit_all(
        &mut p,
        (0..2000u64).map(|k| Event::new(tool, b"".as_slice()).with_key(k)),
        &mut done,
    );
    drain_until(&mut p, &mut done, before + 2000, Duration::from_secs(30));
    assert!(
        done.iter()
            .all(|c| c.outcome == Outcome::Ok(Default::default()))
    );
    let report = engine.shutdown(Duration::from_secs(1));
    assert!(report.is_balanced(), "{report:?}");
    assert_eq!(report.outcomes.total(), accepted + 2000);
}

#[test]
fn the_inflight_budget_refuses_with_its_own_reason() {
    let engine = builder(1).max_inflight(8).build(sleeper(50)).unwrap();
    let tool = engine.tool("slow");
    let mut p = engine.producer();
    let results: Vec<_> = (0..12)
        .map(|_| p.submit(Event::new(tool, b"".as_slice())))
        .collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 8, "max_inflight = 8");
    for r in &results[8..] {
        assert_eq!(
            r.as_ref().unwrap_err().reason(),
            RejectReason::InflightLimit
        );
    }
    let mut done = Vec::new();
    drain_until(&mut p, &mut done, 8, Duration::from_secs(10));
    // Credits came back: the budget admits again.
    assert!(p.submit(Event::new(tool, b"".as_slice())).is_ok());
    assert!(engine.shutdown(Duration::from_secs(1)).is_balanced());
}
