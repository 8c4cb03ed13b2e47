//! Per-key order: same key, same worker, one at a time, in each
//! producer's submission order, for outcomes and for side effects; while
//! calls of different keys overlap and finish out of submission order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use toolplane_core::{
    Call, CallContext, Event, Handler, Outcome, StartError, WorkerContext, WorkerHandler,
};

use crate::support::{builder, pair, run_all, unpair};

/// What the handler saw, in the order it saw it.
#[derive(Default)]
struct Log {
    /// key -> (producer, seq) in start order.
    started: HashMap<u64, Vec<(u64, u64)>>,
    /// keys whose call is running now.
    running: HashMap<u64, bool>,
    /// events that found their key already running.
    overlaps: usize,
    /// how many calls were running at once, at most.
    max_running: usize,
}

#[derive(Clone)]
struct Recorder(Arc<Mutex<Log>>);

struct RecorderWorker(Arc<Mutex<Log>>);

impl Handler for Recorder {
    type Worker = RecorderWorker;
    fn start(&self, _cx: &WorkerContext) -> Result<RecorderWorker, StartError> {
        Ok(RecorderWorker(self.0.clone()))
    }
}

impl WorkerHandler for RecorderWorker {
    fn call(&mut self, event: Event, _cx: &mut CallContext<'_>) -> Call {
        let key = event.key().expect("keyed");
        let (producer, seq) = unpair(event.payload());
        {
            let mut log = self.0.lock().unwrap();
            log.started.entry(key).or_default().push((producer, seq));
            if log.running.insert(key, true) == Some(true) {
                log.overlaps += 1;
            }
            let now = log.running.values().filter(|r| **r).count();
            log.max_running = log.max_running.max(now);
        }
        let log = self.0.clone();
        let finish = move || {
            log.lock().unwrap().running.insert(key, false);
            Outcome::Ok(pair(producer, seq).into())
        };
        // A third finish at once; the rest later, after a delay that varies
        // with the event, so keys finish out of submission order.
        match seq % 3 {
            0 => Call::Done(finish()),
            n => {
                let delay = Duration::from_micros(50 * ((key * 7 + seq) % 5 + n));
                Call::pending(async move {
                    tokio::time::sleep(delay).await;
                    finish()
                })
            }
        }
    }
}

#[test]
fn per_key_order_holds_across_producers_workers_and_keys() {
    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 600;
    const KEYS: u64 = 37;
    let log = Arc::new(Mutex::new(Log::default()));
    let engine = builder(2).build(Recorder(log.clone())).unwrap();
    let tool = engine.tool("record");
    std::thread::scope(|s| {
        for producer in 0..PRODUCERS {
            let engine = &engine;
            s.spawn(move || {
                let mut p = engine.producer();
                let events = (0..PER_PRODUCER).map(|seq| {
                    Event::new(tool, pair(producer, seq)).with_key((seq * 13 + producer) % KEYS)
                });
                let done = run_all(&mut p, events, Duration::from_secs(30));
                // Outcomes: per key, in this producer's submission order.
                let mut last: HashMap<u64, u64> = HashMap::new();
                for c in &done {
                    let Outcome::Ok(out) = &c.outcome else {
                        panic!("{:?}", c.outcome)
                    };
                    let (from, seq) = unpair(out);
                    assert_eq!(from, producer);
                    let key = c.key.unwrap();
                    if let Some(prev) = last.insert(key, seq) {
                        assert!(prev < seq, "key {key}: completion {seq} after {prev}");
                    }
                }
            });
        }
    });
    let report = engine.shutdown(Duration::from_secs(5));
    assert!(report.is_balanced(), "{report:?}");
    assert_eq!(report.accepted, PRODUCERS * PER_PRODUCER);
    let log = log.lock().unwrap();
    assert_eq!(log.overlaps, 0, "two calls of one key ran at once");
    // Side effects: each key's calls started in each producer's order.
    for (key, starts) in &log.started {
        let mut last: HashMap<u64, u64> = HashMap::new();
        for &(producer, seq) in starts {
            if let Some(prev) = last.insert(producer, seq) {
                assert!(
                    prev < seq,
                    "key {key}, producer {producer}: started {seq} after {prev}"
                );
            }
        }
    }
    assert!(
        log.max_running > 2,
        "different keys should overlap (max {})",
        log.max_running
    );
}
