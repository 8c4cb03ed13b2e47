//! Workers are reactors: calls that wait park, and the worker keeps many
//! of them in flight.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use toolplane_core::{
    Call, CallContext, Event, Handler, Outcome, StartError, WorkerContext, WorkerHandler,
};

use crate::support::{builder, drain_until, run_all};

/// Completes each call 10 ms later on a timer, and records how many calls
/// its worker had in flight at most.
#[derive(Clone)]
struct Sleeper {
    max: Arc<Mutex<Vec<usize>>>,
}

struct SleeperWorker {
    worker: usize,
    now: Rc<Cell<usize>>,
    max: Arc<Mutex<Vec<usize>>>,
}

impl Handler for Sleeper {
    type Worker = SleeperWorker;
    fn start(&self, cx: &WorkerContext) -> Result<SleeperWorker, StartError> {
        Ok(SleeperWorker {
            worker: cx.worker,
            now: Rc::default(),
            max: self.max.clone(),
        })
    }
}

impl WorkerHandler for SleeperWorker {
    fn call(&mut self, _event: Event, cx: &mut CallContext<'_>) -> Call {
        assert_eq!(cx.worker(), self.worker);
        self.now.set(self.now.get() + 1);
        {
            let mut max = self.max.lock().unwrap();
            max[self.worker] = max[self.worker].max(self.now.get());
        }
        let now = self.now.clone();
        Call::pending(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            now.set(now.get() - 1);
            Outcome::Ok(Default::default())
        })
    }
}

#[test]
fn a_timer_handler_keeps_over_100_calls_in_flight_per_worker() {
    let max = Arc::new(Mutex::new(vec![0; 2]));
    let engine = builder(2).build(Sleeper { max: max.clone() }).unwrap();
    let tool = engine.tool("sleep");
    let mut p = engine.producer();
    // Unkeyed events alternate between the two workers.
    let events = (0..600u64).map(|i| Event::new(tool, b"".as_slice()).with_tag(i));
    let done = run_all(&mut p, events, Duration::from_secs(30));
    assert!(
        done.iter()
            .all(|c| c.outcome == Outcome::Ok(Default::default()))
    );
    let max = max.lock().unwrap().clone();
    assert!(
        max.iter().all(|&m| m >= 100),
        "calls in flight per worker at most: {max:?}"
    );
    assert!(engine.shutdown(Duration::from_secs(1)).is_balanced());
}

/// Regression: with the cap reached and events still queued, the worker
/// used to count the queued events as work and spin without ever letting
/// its runtime fire the timers that would free the cap.
#[test]
fn no_stall_when_the_concurrency_cap_is_full() {
    let max = Arc::new(Mutex::new(vec![0; 1]));
    let engine = builder(1)
        .max_concurrent_per_worker(16)
        .build(Sleeper { max: max.clone() })
        .unwrap();
    let tool = engine.tool("sleep");
    let mut p = engine.producer();
    run_all(
        &mut p,
        (0..100u64).map(|_| Event::new(tool, b"".as_slice())),
        Duration::from_secs(30),
    );
    assert_eq!(
        max.lock().unwrap()[0],
        16,
        "max_concurrent_per_worker = 16 is reached, not passed"
    );
    assert!(engine.shutdown(Duration::from_secs(1)).is_balanced());
}

/// Regression: a worker that parks because a producer's completion ring is
/// full must be woken by that producer's drain, not only by its next
/// submit.
#[test]
fn a_drain_wakes_a_worker_parked_on_a_full_completion_ring() {
    let engine = builder(1)
        .ring_capacity(4)
        .build(toolplane_core::handler_fn(|_e| {
            Outcome::Ok(Default::default())
        }))
        .unwrap();
    let tool = engine.tool("t");
    let mut p = engine.producer();
    // Without draining: 8 completions fill the completion ring, 4 more
    // events fill the event ring, then the ring refuses.
    let mut accepted = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while accepted < 12 {
        assert!(
            std::time::Instant::now() < deadline,
            "accepted only {accepted}"
        );
        if p.submit(Event::new(tool, b"".as_slice())).is_ok() {
            accepted += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        p.submit(Event::new(tool, b"".as_slice())).is_err(),
        "both rings should be full"
    );
    // Drain only: the 4 queued events must now run without another submit.
    let mut done = Vec::new();
    drain_until(&mut p, &mut done, 12, Duration::from_secs(10));
    assert!(engine.shutdown(Duration::from_secs(1)).is_balanced());
}
