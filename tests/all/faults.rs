//! Handler faults end in their outcome; the worker lives on.

use std::time::Duration;

use toolplane_core::{
    BuildError, Event, Handler, Outcome, OutcomeKind, StartError, WorkerContext, async_handler_fn,
    handler_fn,
};

use crate::support::{builder, drain_until, sleeper};

#[test]
fn a_panicking_handler_is_caught_and_the_worker_lives_on() {
    let engine = builder(1)
        .build(handler_fn(|e| {
            if e.payload().as_slice() == b"boom" {
                panic!("planted panic: boom");
            }
            Outcome::Ok(e.payload().clone())
        }))
        .unwrap();
    let tool = engine.tool("t");
    let mut p = engine.producer();
    for (i, body) in [b"boom".as_slice(), b"fine", b"boom", b"fine"]
        .into_iter()
        .enumerate()
    {
        p.submit(Event::new(tool, body).with_key(1).with_tag(i as u64))
            .unwrap();
    }
    let mut done = Vec::new();
    drain_until(&mut p, &mut done, 4, Duration::from_secs(10));
    done.sort_by_key(|c| c.tag);
    assert_eq!(
        done[0].outcome,
        Outcome::Panicked("planted panic: boom".into())
    );
    assert_eq!(done[1].outcome, Outcome::Ok(b"fine".as_slice().into()));
    assert_eq!(done[2].outcome.kind(), OutcomeKind::Panicked);
    assert_eq!(done[3].outcome, Outcome::Ok(b"fine".as_slice().into()));
    let report = engine.shutdown(Duration::from_secs(1));
    assert_eq!(report.outcomes.get(OutcomeKind::Panicked), 2);
    assert!(report.is_balanced());
}

#[test]
fn a_call_past_its_timeout_ends_in_timeout_and_frees_its_key() {
    let engine = builder(1)
        .call_timeout(Some(Duration::from_millis(30)))
        .build(async_handler_fn(|e| async move {
            if e.payload().as_slice() == b"hang" {
                std::future::pending::<()>().await;
            }
            Outcome::Ok(Default::default())
        }))
        .unwrap();
    let tool = engine.tool("t");
    let mut p = engine.producer();
    p.submit(Event::new(tool, b"hang".as_slice()).with_key(9).with_tag(0))
        .unwrap();
    p.submit(Event::new(tool, b"ok".as_slice()).with_key(9).with_tag(1))
        .unwrap();
    let mut done = Vec::new();
    drain_until(&mut p, &mut done, 2, Duration::from_secs(10));
    assert_eq!(done[0].tag, 0);
    assert_eq!(done[0].outcome, Outcome::Timeout);
    assert!(done[0].times.service(engine.clock()) >= Duration::from_millis(30));
    assert_eq!(
        done[1].outcome,
        Outcome::Ok(Default::default()),
        "the key's next event ran"
    );
    assert!(engine.shutdown(Duration::from_secs(1)).is_balanced());
}

#[derive(Clone)]
struct FailsOn(usize);

impl Handler for FailsOn {
    type Worker = toolplane_core::FnWorker<fn(Event) -> Outcome>;
    fn start(&self, cx: &WorkerContext) -> Result<Self::Worker, StartError> {
        if cx.worker == self.0 {
            return Err(format!("no instance pool for worker {}", cx.worker).into());
        }
        Err("unreachable in this test".into())
    }
}

#[test]
fn a_handler_that_cannot_start_fails_the_build_naming_the_worker() {
    let err = builder(1).build(FailsOn(0)).unwrap_err();
    let BuildError::WorkerStart { worker, reason } = &err else {
        panic!("{err}")
    };
    assert_eq!(*worker, 0);
    assert!(reason.contains("no instance pool for worker 0"), "{reason}");
    assert!(
        err.to_string().contains("worker 0 failed to start"),
        "{err}"
    );
}

#[test]
fn completions_of_a_dropped_producer_are_counted_undelivered() {
    let engine = builder(1).build(sleeper(20)).unwrap();
    let tool = engine.tool("t");
    let mut p = engine.producer();
    for _ in 0..10 {
        p.submit(Event::new(tool, b"".as_slice())).unwrap();
    }
    drop(p);
    let report = engine.shutdown(Duration::from_secs(5));
    assert!(report.is_balanced(), "{report:?}");
    assert_eq!(report.outcomes.get(OutcomeKind::Ok), 10);
    assert_eq!(report.undelivered, 10);
}
