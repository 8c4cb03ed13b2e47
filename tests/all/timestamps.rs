//! The timestamps a completion carries are ordered: submitted, then
//! started, then finished, on every path.

use std::time::Duration;

use toolplane_core::{Call, Event, Outcome, WorkerHandler};

use crate::support::{builder, drain_until, submit_all};

/// Regression: a worker stamped the start of a batch's first call with the
/// time its pass began, which could precede the submission of an event
/// that arrived during the pass (seen as end-to-end < service in spans).
#[test]
fn no_call_starts_before_it_was_submitted() {
    struct Mixed;
    impl toolplane_core::Handler for Mixed {
        type Worker = Mixed;
        fn start(
            &self,
            _: &toolplane_core::WorkerContext,
        ) -> Result<Mixed, toolplane_core::StartError> {
            Ok(Mixed)
        }
    }
    impl WorkerHandler for Mixed {
        fn call(&mut self, e: Event, _: &mut toolplane_core::CallContext<'_>) -> Call {
            if e.tag().is_multiple_of(2) {
                Call::Done(Outcome::Ok(Default::default()))
            } else {
                Call::pending(async {
                    tokio::task::yield_now().await;
                    Outcome::Ok(Default::default())
                })
            }
        }
    }
    let engine = builder(2).build(Mixed).unwrap();
    let tool = engine.tool("t");
    let injector = engine.injector();
    let mut p = engine.producer();
    let mut done = Vec::new();
    for round in 0..200u64 {
        let events = (0..50u64).map(|i| {
            Event::new(tool, b"".as_slice())
                .with_tag(i)
                .with_key(round * 50 + i)
        });
        submit_all(&mut p, events, &mut done);
        let t = injector
            .submit(Event::new(tool, b"".as_slice()).with_tag(round))
            .unwrap();
        done.push(t.wait().unwrap());
        if round % 20 == 0 {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    drain_until(&mut p, &mut done, 200 * 51, Duration::from_secs(20));
    for c in &done {
        let t = c.times;
        assert!(
            t.submitted <= t.started && t.started <= t.finished,
            "{t:?} (tag {})",
            c.tag
        );
    }
    assert!(engine.shutdown(Duration::from_secs(1)).is_balanced());
}
