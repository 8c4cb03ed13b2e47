//! Helpers shared by the engine tests.

use std::time::{Duration, Instant};

use toolplane_core::{
    Completion, Engine, EngineBuilder, Event, Handler, Outcome, Producer, async_handler_fn,
};

/// A builder for tests: unpinned workers (tests share a small machine) and
/// a short idle spin.
pub fn builder(workers: usize) -> EngineBuilder {
    Engine::builder()
        .workers(workers)
        .pin_workers(false)
        .idle_spin(Duration::from_micros(20))
}

/// Submits every event, waiting while the engine is full and draining
/// completions into `out` as it goes.
pub fn submit_all(
    p: &mut Producer,
    events: impl IntoIterator<Item = Event>,
    out: &mut Vec<Completion>,
) {
    for mut event in events {
        loop {
            match p.submit_timeout(event, Duration::from_millis(1)) {
                Ok(()) => break,
                Err(r) => {
                    assert_ne!(
                        r.reason(),
                        toolplane_core::RejectReason::ShuttingDown,
                        "engine shut down under a test"
                    );
                    event = r.into_event();
                    p.drain(|c| out.push(c));
                }
            }
        }
        p.drain(|c| out.push(c));
    }
}

/// Submits every event (waiting while the engine is full) and drains until
/// each one has completed, failing after `timeout`; returns the
/// completions in the order they arrived.
pub fn run_all(
    p: &mut Producer,
    events: impl IntoIterator<Item = Event>,
    timeout: Duration,
) -> Vec<Completion> {
    let mut sent = 0;
    let mut done = Vec::new();
    submit_all(p, events.into_iter().inspect(|_| sent += 1), &mut done);
    drain_until(p, &mut done, sent, timeout);
    done
}

/// Drains until `out` holds `n` completions, failing after `timeout`.
pub fn drain_until(p: &mut Producer, out: &mut Vec<Completion>, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while out.len() < n {
        if p.drain(|c| out.push(c)) == 0 {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} completions after {timeout:?}",
                out.len()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Encodes two numbers as a payload.
pub fn pair(a: u64, b: u64) -> Vec<u8> {
    let mut v = a.to_le_bytes().to_vec();
    v.extend_from_slice(&b.to_le_bytes());
    v
}

/// Decodes [`pair`].
pub fn unpair(p: &[u8]) -> (u64, u64) {
    (
        u64::from_le_bytes(p[..8].try_into().unwrap()),
        u64::from_le_bytes(p[8..16].try_into().unwrap()),
    )
}

/// Waits until `cond` holds, failing with `what` after `timeout`. (Workers
/// publish their counters at the end of each pass, a moment after the
/// completions of that pass become visible.)
pub fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "not true after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A handler whose every call waits `ms` milliseconds on a timer (parked,
/// not blocking its worker), then succeeds with an empty output.
pub fn sleeper(ms: u64) -> impl Handler {
    async_handler_fn(move |_e| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Outcome::Ok(Default::default())
    })
}

/// Whether a process whose command line is `cmdline` (NUL-separated) is
/// alive (zombies, which have none, are not).
/// How many processes have `marker` in their command line.
pub fn running_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .count()
}

pub fn running(cmdline: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == cmdline.as_bytes()))
}
