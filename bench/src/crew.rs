//! Persistent threads that start a measured piece of work together, for
//! criterion's `iter_custom` across threads: each round hands every thread
//! its share of the iterations, releases them all at one barrier, and
//! times from the barrier to the last thread's end. Thread start-up and
//! per-thread set-up (an engine producer, a ring end) stay out of the
//! measurement.

use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A crew of threads; see the module docs.
#[derive(Debug)]
pub struct Crew {
    go: Vec<crossbeam_channel::Sender<u64>>,
    done: crossbeam_channel::Receiver<()>,
    barrier: Arc<Barrier>,
    threads: Vec<JoinHandle<()>>,
}

impl Crew {
    /// Starts `n` threads. Thread `i` builds its state with `make(i)` once,
    /// then runs `work(&mut state, share)` every round.
    pub fn start<S, M, W>(n: usize, make: M, work: W) -> Crew
    where
        M: Fn(usize) -> S + Send + Sync + 'static,
        W: Fn(&mut S, u64) + Send + Sync + 'static,
    {
        assert!(n > 0, "a crew needs a thread");
        let barrier = Arc::new(Barrier::new(n + 1));
        let (done_tx, done) = crossbeam_channel::unbounded();
        let make = Arc::new(make);
        let work = Arc::new(work);
        let mut go = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = crossbeam_channel::bounded::<u64>(1);
            go.push(tx);
            let (barrier, done_tx, make, work) =
                (barrier.clone(), done_tx.clone(), make.clone(), work.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("crew-{i}"))
                    .spawn(move || {
                        let mut state = make(i);
                        while let Ok(share) = rx.recv() {
                            barrier.wait();
                            work(&mut state, share);
                            if done_tx.send(()).is_err() {
                                return;
                            }
                        }
                    })
                    .expect("spawn a crew thread"),
            );
        }
        Crew {
            go,
            done,
            barrier,
            threads,
        }
    }

    /// Runs one round of `iters` iterations split over the threads, and
    /// returns the time from their common start to the last one's end.
    pub fn run(&self, iters: u64) -> Duration {
        let n = self.go.len() as u64;
        self.round(|i| iters / n + u64::from(i < iters % n))
    }

    /// Runs one round in which every thread gets all `iters` (the two ends
    /// of a ring each move every item), timed as [`Crew::run`].
    pub fn run_each(&self, iters: u64) -> Duration {
        self.round(|_| iters)
    }

    fn round(&self, share: impl Fn(u64) -> u64) -> Duration {
        let n = self.go.len() as u64;
        for (i, tx) in self.go.iter().enumerate() {
            tx.send(share(i as u64)).expect("crew thread alive");
        }
        self.barrier.wait();
        let start = Instant::now();
        for _ in 0..n {
            self.done.recv().expect("crew thread finished its share");
        }
        start.elapsed()
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        self.go.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
