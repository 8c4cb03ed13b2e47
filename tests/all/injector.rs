//! The injector (many threads, async callers) and the sink.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use toolplane_core::{Event, InjectError, Outcome, Rejected, async_handler_fn, handler_fn};

use crate::support::{builder, eventually, sleeper};

#[test]
fn async_callers_under_a_multi_thread_runtime_get_their_answers() {
    let engine = builder(2)
        .build(async_handler_fn(|e| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Outcome::Ok(e.payload().clone())
        }))
        .unwrap();
    let tool = engine.tool("echo");
    let injector = engine.injector();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let calls = (0..500u64).map(|i| {
            let injector = injector.clone();
            tokio::spawn(async move {
                let body = i.to_le_bytes();
                let c = injector
                    .call(
                        Event::new(tool, body.as_slice())
                            .with_key(i % 10)
                            .with_tag(i),
                    )
                    .await?;
                assert_eq!(c.tag, i);
                assert_eq!(c.outcome, Outcome::Ok(body.as_slice().into()));
                Ok::<_, InjectError>(())
            })
        });
        for call in calls.collect::<Vec<_>>() {
            call.await.unwrap().unwrap();
        }
    });
    let report = engine.shutdown(Duration::from_secs(1));
    assert_eq!(report.accepted, 500);
    assert!(report.is_balanced());
}

#[test]
fn injector_and_producer_events_of_one_key_never_overlap() {
    let running = Arc::new(AtomicU64::new(0));
    let overlaps = Arc::new(AtomicU64::new(0));
    let (r, o) = (running.clone(), overlaps.clone());
    let engine = builder(2)
        .build(async_handler_fn(move |_e| {
            let (r, o) = (r.clone(), o.clone());
            async move {
                if r.fetch_add(1, Ordering::SeqCst) != 0 {
                    o.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                Outcome::Ok(Default::default())
            }
        }))
        .unwrap();
    let tool = engine.tool("t");
    let injector = engine.injector();
    let tickets: Vec<_> = (0..100)
        .map(|_| {
            injector
                .submit(Event::new(tool, b"".as_slice()).with_key(42))
                .unwrap()
        })
        .collect();
    let mut p = engine.producer();
    let mut sent = 0;
    while sent < 100 {
        if p.submit(Event::new(tool, b"".as_slice()).with_key(42))
            .is_ok()
        {
            sent += 1;
        }
        p.drain(|_| {});
    }
    for t in tickets {
        assert_eq!(t.wait().unwrap().outcome, Outcome::Ok(Default::default()));
    }
    let report = engine.shutdown(Duration::from_secs(10));
    assert!(report.is_balanced());
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "one key ran twice at once"
    );
}

#[test]
fn a_full_injector_queue_hands_the_event_back() {
    let engine = builder(1).ring_capacity(4).build(sleeper(100)).unwrap();
    let tool = engine.tool("t");
    let injector = engine.injector();
    // One key: the first call runs, the rest wait behind it; the queue
    // (capacity 4) and the per-key queue (capacity 4) fill.
    let mut tickets = Vec::new();
    let mut full = None;
    for i in 0..64u64 {
        match injector.submit(Event::new(tool, b"".as_slice()).with_key(1).with_tag(i)) {
            Ok(t) => tickets.push(t),
            Err(r) => {
                full = Some(r);
                break;
            }
        }
    }
    let Some(Rejected::Full(event)) = full else {
        panic!("expected Full, got {full:?}")
    };
    assert_eq!(event.key(), Some(1), "the event comes back whole");
    drop(tickets);
    let report = engine.shutdown(Duration::ZERO);
    assert!(report.is_balanced(), "{report:?}");
}

#[test]
fn a_sink_receives_every_completion_and_producers_never_drain() {
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let engine = builder(2)
        .ring_capacity(64)
        .sink(move |_worker: usize, c: toolplane_core::Completion| {
            assert_eq!(c.outcome, Outcome::Ok(Default::default()));
            s.fetch_add(1, Ordering::Relaxed);
        })
        .build(handler_fn(|_e| Outcome::Ok(Default::default())))
        .unwrap();
    let tool = engine.tool("t");
    let mut p = engine.producer();
    // Many times the rings' capacity: slots come back through the rings
    // and the producer reuses them without ever draining.
    let mut sent = 0u64;
    while sent < 20_000 {
        match p.submit(Event::new(tool, b"".as_slice()).with_key(sent)) {
            Ok(()) => sent += 1,
            Err(r) => assert!(
                matches!(r, Rejected::Full(_) | Rejected::InflightLimit(_)),
                "{r}"
            ),
        }
    }
    eventually(
        Duration::from_secs(10),
        "the sink saw every completion",
        || seen.load(Ordering::Relaxed) == 20_000,
    );
    assert_eq!(
        p.drain(|_| panic!("a sink engine sends no completion to producers")),
        0
    );
    let report = engine.shutdown(Duration::from_secs(1));
    assert!(report.is_balanced());
    assert_eq!(report.undelivered, 0);
}

/// A handler that counts the calls it starts and the call futures it
/// drops, and holds each call until `release` is notified (or 30 s pass).
#[derive(Default)]
struct Held {
    started: Arc<AtomicU64>,
    release: Arc<tokio::sync::Notify>,
    dropped: Arc<AtomicU64>,
}

impl Held {
    fn handler(&self) -> impl toolplane_core::Handler {
        let (started, release, dropped) = (
            Arc::clone(&self.started),
            Arc::clone(&self.release),
            Arc::clone(&self.dropped),
        );
        async_handler_fn(move |_e| {
            started.fetch_add(1, Ordering::SeqCst);
            let (release, dropped) = (release.clone(), dropped.clone());
            async move {
                // Counts the future's drop, whether it finished or not.
                struct OnDrop(Arc<AtomicU64>);
                impl Drop for OnDrop {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let _guard = OnDrop(dropped);
                tokio::select! {
                    () = release.notified() => Outcome::Ok(Default::default()),
                    () = tokio::time::sleep(Duration::from_secs(30)) => Outcome::Error("never released".into()),
                }
            }
        })
    }
}

#[test]
fn a_dropped_ticket_cancels_a_call_that_has_not_started() {
    let held = Held::default();
    let (started, release) = (&held.started, &held.release);
    let engine = builder(1)
        .max_concurrent_per_worker(1)
        .build(held.handler())
        .unwrap();
    let tool = engine.tool("t");
    let injector = engine.injector();
    let first = injector.submit(Event::new(tool, b"".as_slice())).unwrap();
    eventually(Duration::from_secs(5), "the first call started", || {
        started.load(Ordering::SeqCst) == 1
    });
    // The worker's only call slot is taken: the second waits in its queue.
    let second = injector.submit(Event::new(tool, b"".as_slice())).unwrap();
    second.cancel();
    release.notify_one();
    let c = first.wait().unwrap();
    assert_eq!(c.outcome, Outcome::Ok(Default::default()));
    eventually(Duration::from_secs(5), "the second event's outcome", || {
        engine.metrics().outcomes.total() == 2
    });
    let m = engine.metrics();
    assert_eq!(m.outcomes.get(toolplane_core::OutcomeKind::Cancelled), 1);
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "the cancelled event never reached the handler"
    );
    let report = engine.shutdown(Duration::from_secs(1));
    assert_eq!(report.accepted, 2);
    assert!(report.is_balanced());
}

#[test]
fn a_dropped_ticket_ends_a_running_call_at_once() {
    let held = Held::default();
    let (started, release, dropped) = (&held.started, &held.release, &held.dropped);
    let engine = builder(1).build(held.handler()).unwrap();
    let tool = engine.tool("t");
    let injector = engine.injector();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A caller that gives up after 50 ms drops its ticket.
        let r = tokio::time::timeout(
            Duration::from_millis(50),
            injector.call(Event::new(tool, b"".as_slice())),
        )
        .await;
        assert!(r.is_err(), "the held call cannot have answered");
    });
    assert_eq!(started.load(Ordering::SeqCst), 1);
    // The call waits on a timer and a notification, neither of which
    // fires: only the cancellation's wake-up ends it, well before 30 s.
    eventually(
        Duration::from_secs(5),
        "the running call was dropped",
        || dropped.load(Ordering::SeqCst) == 1,
    );
    eventually(Duration::from_secs(5), "its outcome was counted", || {
        engine
            .metrics()
            .outcomes
            .get(toolplane_core::OutcomeKind::Cancelled)
            == 1
    });
    // An answered ticket cancels nothing.
    let t = injector.submit(Event::new(tool, b"".as_slice())).unwrap();
    eventually(Duration::from_secs(5), "the next call started", || {
        started.load(Ordering::SeqCst) == 2
    });
    release.notify_one();
    assert_eq!(t.wait().unwrap().outcome, Outcome::Ok(Default::default()));
    let report = engine.shutdown(Duration::from_secs(1));
    assert_eq!(report.accepted, 2);
    assert_eq!(report.outcomes.get(toolplane_core::OutcomeKind::Ok), 1);
    assert_eq!(
        report.outcomes.get(toolplane_core::OutcomeKind::Cancelled),
        1
    );
    assert!(report.is_balanced());
}
