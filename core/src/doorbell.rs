//! The doorbell: how an idle worker parks without ever missing an event,
//! while a busy one costs its producers no syscall.
//!
//! This is a two-flag Dekker handshake (the idea behind Vyukov's
//! eventcount and folly's `EventCount`):
//!
//! ```text
//! worker                               producer
//! state |= SLEEPING                    publish the event (ring tail, Release)
//! fence(SeqCst)            <pairs>     fence(SeqCst)
//! re-check its rings                   if state & SLEEPING: clear it, wake
//! nothing there? sleep
//! ```
//!
//! In the single total order of SeqCst fences, either the worker's comes
//! first, and then the producer's load sees `SLEEPING` and wakes it; or
//! the producer's comes first, and then the worker's re-check sees the
//! event. So a wake-up is never lost, and a producer only pays for a wake
//! (one unpark syscall) when the worker actually announced that it parks.
//! The `loom` tests below check this under every interleaving (up to three
//! preemptions), and the thread tests run under Miri.
//!
//! (An asymmetric pair, a compiler fence on the producer and
//! `membarrier(2)` on the parking worker, was measured and dropped: it
//! saved about 1.5 ns of a 22 ns submit and cost an IPI per park; see
//! PERF.md, "Producer barriers".)
//!
//! The same word carries a `CONTROL` bit: a control message (snapshot,
//! shutdown, new producer) is waiting on the worker's flume channel, so the
//! worker need not poll that channel on every pass.

use crate::sync::{AtomicU32, Ordering, fence};

const SLEEPING: u32 = 1;
const CONTROL: u32 = 2;

/// One worker's doorbell state. The waking itself (an `AtomicWaker`, or a
/// thread unpark in the loom model) is the caller's: the doorbell only says
/// when it is needed.
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    state: AtomicU32,
}

impl Doorbell {
    /// Worker: announce that it is about to park. The caller must re-check
    /// for work afterwards and call [`Doorbell::cancel_sleep`] if it finds
    /// some.
    pub(crate) fn announce_sleep(&self) {
        self.state.fetch_or(SLEEPING, Ordering::Relaxed);
        // Pairs with the fence in `needs_wake`: orders the SLEEPING store
        // before the worker's re-check of its rings.
        fence(Ordering::SeqCst);
    }

    /// Worker: it is awake again (found work, or was woken).
    pub(crate) fn cancel_sleep(&self) {
        if self.state.load(Ordering::Relaxed) & SLEEPING != 0 {
            self.state.fetch_and(!SLEEPING, Ordering::Relaxed);
        }
    }

    /// Producer, after publishing an event: whether the worker must be
    /// woken. Returns `true` at most once per announced sleep, so only one
    /// producer pays for the wake.
    #[inline]
    pub(crate) fn needs_wake(&self) -> bool {
        // Pairs with the fence in `announce_sleep`: orders the producer's
        // ring publication before this load of the worker's state.
        fence(Ordering::SeqCst);
        self.state.load(Ordering::Relaxed) & SLEEPING != 0
            && self.state.fetch_and(!SLEEPING, Ordering::Relaxed) & SLEEPING != 0
    }

    /// Controller: a control message was sent; the caller wakes the worker
    /// unconditionally afterwards.
    pub(crate) fn post_control(&self) {
        // Release pairs with the Acquire in `take_control`: the message sent
        // before this is visible once the worker sees the bit.
        self.state.fetch_or(CONTROL, Ordering::Release);
    }

    /// Worker: whether control messages are waiting; clears the bit.
    #[inline]
    pub(crate) fn take_control(&self) -> bool {
        self.state.load(Ordering::Relaxed) & CONTROL != 0
            // Acquire pairs with the Release in `post_control`.
            && self.state.fetch_and(!CONTROL, Ordering::Acquire) & CONTROL != 0
    }

    /// Worker: whether control messages are waiting, without clearing.
    pub(crate) fn has_control(&self) -> bool {
        self.state.load(Ordering::Acquire) & CONTROL != 0
    }
}

/// The worker side of the protocol as the tests drive it: consume until
/// `total` events were published, parking with `park` whenever none is
/// left. Written once over the `sync` shim's atomics, so the loom model
/// and the thread tests run the same code.
#[cfg(test)]
fn consume(bell: &Doorbell, published: &crate::sync::AtomicUsize, total: usize, park: impl Fn()) {
    let mut seen = 0;
    while seen < total {
        let now = published.load(Ordering::Acquire);
        if now > seen {
            seen = now;
            continue;
        }
        bell.announce_sleep();
        if published.load(Ordering::Acquire) > seen {
            bell.cancel_sleep();
            continue;
        }
        park();
        bell.cancel_sleep();
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize;
    use loom::thread;

    use super::*;

    /// A worker that parks when it sees no work must still receive every
    /// event a producer publishes: if a wake-up were lost, the worker
    /// would park forever and loom would report a deadlock.
    fn no_lost_wakeup(events: usize, producers: usize) {
        crate::sync::loom_model(move || {
            let bell = Arc::new(Doorbell::default());
            let published = Arc::new(AtomicUsize::new(0));
            let total = events * producers;
            let worker = {
                let (bell, published) = (bell.clone(), published.clone());
                thread::spawn(move || super::consume(&bell, &published, total, thread::park))
            };
            let worker_thread = worker.thread().clone();
            let handles: Vec<_> = (0..producers)
                .map(|_| {
                    let (bell, published, t) =
                        (bell.clone(), published.clone(), worker_thread.clone());
                    thread::spawn(move || {
                        for _ in 0..events {
                            published.fetch_add(1, Ordering::Release);
                            if bell.needs_wake() {
                                t.unpark();
                            }
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            worker.join().unwrap();
        });
    }

    #[test]
    fn loom_no_lost_wakeup_one_producer() {
        no_lost_wakeup(2, 1);
    }

    #[test]
    fn loom_no_lost_wakeup_two_producers() {
        no_lost_wakeup(1, 2);
    }

    /// A control message posted while the worker decides to park is seen.
    #[test]
    fn loom_control_is_not_lost() {
        crate::sync::loom_model(|| {
            let bell = Arc::new(Doorbell::default());
            let worker = {
                let bell = bell.clone();
                thread::spawn(move || {
                    loop {
                        if bell.take_control() {
                            return;
                        }
                        bell.announce_sleep();
                        if bell.has_control() {
                            bell.cancel_sleep();
                            continue;
                        }
                        thread::park();
                        bell.cancel_sleep();
                    }
                })
            };
            let t = worker.thread().clone();
            bell.post_control();
            t.unpark();
            worker.join().unwrap();
        });
    }
}

/// The same protocol on real threads: run by `cargo test`, and by Miri for
/// its data-race and weak-memory checks. Loop counts shrink under Miri, as rtrb's tests do.
#[cfg(all(test, not(loom)))]
mod thread_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    use super::Doorbell;

    #[test]
    fn every_published_event_is_seen_by_a_parking_worker() {
        let events = if cfg!(miri) { 30 } else { 100_000 };
        let bell = Arc::new(Doorbell::default());
        let published = Arc::new(AtomicUsize::new(0));
        let worker = {
            let (bell, published) = (bell.clone(), published.clone());
            thread::spawn(move || super::consume(&bell, &published, events, thread::park))
        };
        let t = worker.thread().clone();
        for _ in 0..events {
            published.fetch_add(1, Ordering::Release);
            if bell.needs_wake() {
                t.unpark();
            }
        }
        // Without the handshake the worker would park forever here.
        worker.join().unwrap();
    }

    #[test]
    fn control_messages_are_taken_once() {
        let bell = Doorbell::default();
        assert!(!bell.take_control());
        bell.post_control();
        assert!(bell.has_control());
        assert!(bell.take_control());
        assert!(!bell.take_control());
    }
}
