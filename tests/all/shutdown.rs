//! Shutdown drains within its grace, cancels the rest, and accounts for
//! every event; metrics merge the workers' histograms.

use std::time::Duration;

use toolplane_core::{Event, Outcome, OutcomeKind, Rejected, handler_fn};

use crate::support::{builder, run_all, sleeper};

#[test]
fn a_graceful_shutdown_finishes_everything_accepted() {
    let engine = builder(2).build(sleeper(5)).unwrap();
    let tool = engine.tool("t");
    let mut p = engine.producer();
    for i in 0..300u64 {
        p.submit(Event::new(tool, b"".as_slice()).with_key(i % 4))
            .unwrap();
    }
    // Keyed on 4 keys, 75 events each of 5 ms run one after another: the
    // shutdown has to wait for them, and does.
    let report = engine.shutdown(Duration::from_secs(20));
    assert!(report.is_balanced(), "{report:?}");
    assert_eq!(report.outcomes.get(OutcomeKind::Ok), 300, "{report:?}");
    assert!(
        report.shutdown_took >= Duration::from_millis(300),
        "{report:?}"
    );
    let mut n = 0;
    p.drain(|c| {
        assert_eq!(c.outcome, Outcome::Ok(Default::default()));
        n += 1;
    });
    assert_eq!(n, 300);
    assert!(matches!(
        p.submit(Event::new(tool, b"".as_slice())),
        Err(Rejected::ShuttingDown(_))
    ));
}

#[test]
fn a_short_grace_cancels_the_rest_in_order() {
    let engine = builder(1).build(sleeper(20)).unwrap();
    let tool = engine.tool("t");
    let mut p = engine.producer();
    for i in 0..50u64 {
        p.submit(Event::new(tool, b"".as_slice()).with_key(7).with_tag(i))
            .unwrap();
    }
    let report = engine.shutdown(Duration::from_millis(70));
    assert!(report.is_balanced(), "{report:?}");
    let ok = report.outcomes.get(OutcomeKind::Ok);
    let cancelled = report.outcomes.get(OutcomeKind::Cancelled);
    assert!(
        ok >= 1 && cancelled >= 1 && ok + cancelled == 50,
        "{report:?}"
    );
    let mut tags = Vec::new();
    p.drain(|c| tags.push((c.tag, c.outcome.kind())));
    assert_eq!(tags.len(), 50);
    // One key: the finished ones are a prefix, the cancelled the rest.
    let first_cancel = tags
        .iter()
        .position(|t| t.1 == OutcomeKind::Cancelled)
        .unwrap();
    assert!(tags[..first_cancel].iter().all(|t| t.1 == OutcomeKind::Ok));
    assert!(
        tags[first_cancel..]
            .iter()
            .all(|t| t.1 == OutcomeKind::Cancelled)
    );
}

#[test]
fn metrics_merge_counts_and_histograms() {
    let engine = builder(2)
        .build(handler_fn(|e| {
            std::thread::sleep(Duration::from_micros(50));
            Outcome::Ok(e.payload().clone())
        }))
        .unwrap();
    let tool = engine.tool("t");
    let mut p = engine.producer();
    let events = (0..400u64).map(|i| Event::new(tool, b"ab".as_slice()).with_key(i));
    run_all(&mut p, events, Duration::from_secs(10));
    crate::support::eventually(Duration::from_secs(5), "all 400 counted", || {
        engine.counters().outcomes.get(OutcomeKind::Ok) == 400
    });
    let m = engine.metrics();
    assert_eq!(m.stale_workers, 0);
    assert_eq!(m.accepted, 400);
    assert_eq!(m.in_flight, 0);
    assert_eq!(m.latency.service.len(), 400);
    assert_eq!(m.latency.end_to_end.len(), 400);
    let p50 = m.latency.service.value_at_quantile(0.5);
    assert!(p50 >= 50_000, "service p50 {p50} ns for a 50 us handler");
    assert!(m.latency.end_to_end.value_at_quantile(0.5) >= p50);
    assert!(m.workers.iter().all(|w| w.alive));
    assert!(engine.shutdown(Duration::from_secs(1)).is_balanced());
}
