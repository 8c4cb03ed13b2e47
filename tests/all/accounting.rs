//! accepted == ok + error + timeout + trap + panicked + cancelled, for
//! every sequence of submits, faults and an early shutdown.

use std::time::Duration;

use proptest::prelude::*;
use toolplane_core::{
    Call, CallContext, Engine, Event, Handler, Outcome, OutcomeKind, Priority, RejectReason,
    Rejected, StartError, WorkerContext, WorkerHandler,
};

use crate::support::builder;

/// What an event asks the handler to do (its first payload byte).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Ok,
    Error,
    Panic,
    AsyncOk(u8),
    AsyncPanic,
    AsyncSlow,
}

impl Kind {
    fn encode(self) -> [u8; 2] {
        match self {
            Kind::Ok => [0, 0],
            Kind::Error => [1, 0],
            Kind::Panic => [2, 0],
            Kind::AsyncOk(us) => [3, us],
            Kind::AsyncPanic => [4, 0],
            Kind::AsyncSlow => [5, 0],
        }
    }
}

#[derive(Clone)]
struct Faulty;

struct FaultyWorker;

impl Handler for Faulty {
    type Worker = FaultyWorker;
    fn start(&self, _cx: &WorkerContext) -> Result<FaultyWorker, StartError> {
        Ok(FaultyWorker)
    }
}

impl WorkerHandler for FaultyWorker {
    fn call(&mut self, event: Event, _cx: &mut CallContext<'_>) -> Call {
        let p = event.payload();
        match p[0] {
            0 => Call::Done(Outcome::Ok(Default::default())),
            1 => Call::Done(Outcome::error("planted error")),
            2 => panic!("planted panic (sync)"),
            3 => {
                let us = u64::from(p[1]) * 10;
                Call::pending(async move {
                    tokio::time::sleep(Duration::from_micros(us)).await;
                    Outcome::Ok(Default::default())
                })
            }
            4 => Call::pending(async {
                tokio::task::yield_now().await;
                panic!("planted panic (async)")
            }),
            _ => Call::pending(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Outcome::Ok(Default::default())
            }),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Submit {
        kind: Kind,
        key: Option<u8>,
        low: bool,
    },
    Drain,
    Pause(u8),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Ok),
        1 => Just(Kind::Error),
        1 => Just(Kind::Panic),
        3 => any::<u8>().prop_map(Kind::AsyncOk),
        1 => Just(Kind::AsyncPanic),
        1 => Just(Kind::AsyncSlow),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (kind(), proptest::option::of(0u8..6), any::<bool>())
            .prop_map(|(kind, key, low)| Op::Submit { kind, key, low }),
        2 => Just(Op::Drain),
        1 => (0u8..200).prop_map(Op::Pause),
    ]
}

/// Keeps the planted panics out of the test output; real ones still print.
fn quiet_planted_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let planted = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|s| s.starts_with("planted panic"));
            if !planted {
                default(info);
            }
        }));
    });
}

fn run(ops: &[Op], grace_ms: u64) -> Result<(), TestCaseError> {
    quiet_planted_panics();
    let engine: Engine = builder(2)
        .ring_capacity(8)
        .batch_size(4)
        .max_inflight(24)
        .queue_watermark(0.5)
        .max_concurrent_per_worker(8)
        .build(Faulty)
        .unwrap();
    let tool = engine.tool("faulty");
    let mut p = engine.producer();
    let mut accepted = 0u64;
    let mut rejected = [0u64; RejectReason::ALL.len()];
    let mut seen = [0u64; OutcomeKind::ALL.len()];
    let mut count = |c: toolplane_core::Completion| seen[c.outcome.kind() as usize] += 1;
    for op in ops {
        match op {
            Op::Submit { kind, key, low } => {
                let mut e = Event::new(tool, kind.encode().as_slice());
                if let Some(k) = key {
                    e = e.with_key(u64::from(*k));
                }
                if *low {
                    e = e.with_priority(Priority::Low);
                }
                match p.submit(e) {
                    Ok(()) => accepted += 1,
                    Err(r) => {
                        prop_assert_ne!(r.reason(), RejectReason::ShuttingDown);
                        rejected[r.reason() as usize] += 1;
                    }
                }
            }
            Op::Drain => {
                p.drain(&mut count);
            }
            Op::Pause(us) => std::thread::sleep(Duration::from_micros(u64::from(*us) * 10)),
        }
    }
    let report = engine.shutdown(Duration::from_millis(grace_ms));
    // Submits after shutdown are refused and handed back.
    let after = p.submit(Event::new(tool, Kind::Ok.encode().as_slice()));
    prop_assert!(matches!(after, Err(Rejected::ShuttingDown(_))));
    p.drain(&mut count);
    prop_assert!(report.is_balanced(), "{report:?}");
    prop_assert_eq!(report.accepted, accepted);
    prop_assert_eq!(report.rejected.0, rejected);
    let delivered: u64 = seen.iter().sum();
    prop_assert_eq!(delivered + report.undelivered, accepted);
    for kind in OutcomeKind::ALL {
        prop_assert!(seen[kind as usize] <= report.outcomes.get(kind), "{kind:?}");
    }
    if report.undelivered == 0 {
        prop_assert_eq!(seen, report.outcomes.0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn accepted_equals_the_sum_of_outcomes(
        ops in proptest::collection::vec(op(), 1..250),
        grace_ms in prop_oneof![Just(0u64), Just(5), Just(500)],
    ) {
        run(&ops, grace_ms)?;
    }
}

#[test]
fn a_zero_grace_shutdown_cancels_what_is_running() {
    quiet_planted_panics();
    let engine = builder(1).build(Faulty).unwrap();
    let tool = engine.tool("faulty");
    let mut p = engine.producer();
    for _ in 0..20 {
        p.submit(Event::new(tool, Kind::AsyncSlow.encode().as_slice()))
            .unwrap();
    }
    let report = engine.shutdown(Duration::ZERO);
    assert!(report.is_balanced(), "{report:?}");
    assert_eq!(
        report.outcomes.get(OutcomeKind::Cancelled),
        20,
        "{report:?}"
    );
    let mut cancelled = 0;
    p.drain(|c| {
        assert_eq!(c.outcome, Outcome::Cancelled);
        cancelled += 1;
    });
    assert_eq!(cancelled, 20);
}
