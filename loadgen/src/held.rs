//! What the machine took from the engine's workers during a run: the time
//! each worker was ready to run but another thread had its core (the
//! kernel's run-queue wait, `/proc/self/task/TID/schedstat`), and, for
//! information, the time the hypervisor took its core (`steal` in
//! `/proc/stat`, which some hypervisors also count while a cpu idles). A
//! latency failure is the machine's when the waits alone delay more events
//! than the percentile allows; the report says which (PERF.md, "The main
//! job beside a neighbour").
//!
//! A thread at nice 19 reads both every 10 ms (or later, when it waits):
//! cumulative counters, so a late read loses no time, it only blurs when a
//! hold began. A hold is a run of windows in each of which a worker lost
//! 2 ms or more and a quarter of the window or more.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// How often the counters are read.
const PERIOD: Duration = Duration::from_millis(10);

/// A window in which a worker lost less than this is not a hold: a worker
/// that wakes thousands of times a second waits tens of microseconds at
/// each wake-up (about 1 ms per 10 ms window beside a busy neighbour at
/// 10k events/s), which is scheduling, not a stall.
const HOLD_MIN_NS: u64 = 2_000_000;

/// One stretch of consecutive windows in which the machine held a worker.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hold {
    /// When it began, seconds from the start of the run.
    pub at_s: f64,
    /// How long the worker was kept from running, in milliseconds.
    pub ms: f64,
    /// The worker (its index in the engine).
    pub worker: usize,
}

/// What the machine took from the workers after the warm-up.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Held {
    /// Time the workers were ready but another thread ran on their core,
    /// wake-ups included.
    pub waited_ms: f64,
    /// Time the hypervisor took their cores (`steal`; on some hypervisors
    /// idle time too, so not part of the holds).
    pub stolen_ms: f64,
    /// Every hold, in time order.
    pub holds: Vec<Hold>,
}

impl Held {
    /// The time in holds.
    pub fn held_ms(&self) -> f64 {
        self.holds.iter().map(|h| h.ms).sum()
    }

    /// The longest hold.
    pub fn longest(&self) -> Option<&Hold> {
        self.holds.iter().max_by(|a, b| a.ms.total_cmp(&b.ms))
    }

    /// About how many events the holds alone made later than `limit`, at
    /// `rate` events/s spread over `workers`: an event that arrives during
    /// a hold waits for the rest of it, so a hold of `h` delays those of
    /// its first `h − limit` past the limit.
    pub fn late_past(&self, limit: Duration, rate: f64, workers: usize) -> u64 {
        let limit_ms = limit.as_secs_f64() * 1e3;
        let per_worker = rate / workers.max(1) as f64;
        self.holds
            .iter()
            .map(|h| (h.ms - limit_ms).max(0.0) / 1e3 * per_worker)
            .sum::<f64>()
            .round() as u64
    }
}

/// The running sampler.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Held>,
}

impl Sampler {
    /// Starts reading the counters of this process's engine workers
    /// (their kernel ids, `Engine::worker_tids`); `warmup`: how long from
    /// now not to count.
    ///
    /// Everything it needs is allocated here: its thread never calls the
    /// allocator. A thread that allocated once and then lived beside the
    /// run made the process hold 50–100 MiB more of mimalloc's arena
    /// resident (82 against 31 MiB at smoke's 3 s, the same sleeping loop
    /// without its first allocations at 31 MiB), which the soak's memory
    /// check would have charged to the engine.
    pub fn start(tids: Vec<i32>, warmup: Duration, run: Duration) -> std::io::Result<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let mut buf = vec![0u8; STAT_BUF];
        let tick_ns = 1_000_000_000 / clock_ticks();
        let workers: Vec<Worker> = tids
            .iter()
            .enumerate()
            .filter(|(_, t)| **t > 0)
            .filter_map(|(index, &tid)| {
                let (waited_ns, cpu) = worker_counters(tid, &mut buf)?;
                Some(Worker {
                    index,
                    tid,
                    waited_ns,
                    steal_ticks: steal_of(cpu, &mut buf).unwrap_or(0),
                    open: None,
                })
            })
            .collect();
        // Room for every hold the run can have: holds are separated by at
        // least one window, so at most one every other window per worker.
        let windows = (run + Duration::from_secs(5)).as_millis() / PERIOD.as_millis();
        let room = (windows as usize / 2 + 1) * workers.len().max(1);
        let held = Held {
            holds: Vec::with_capacity(room),
            ..Held::default()
        };
        let thread = std::thread::Builder::new()
            .name("loadgen-held".into())
            .spawn(move || {
                // Nice 19: it must not take the worker's core itself; a
                // late read only blurs when a hold began.
                let _ = rustix::process::setpriority_process(None, 19);
                sample(&flag, workers, held, buf, tick_ns, warmup)
            })?;
        Ok(Sampler { stop, thread })
    }

    /// Stops and returns what it saw.
    pub fn finish(self) -> Held {
        self.stop.store(true, Ordering::Relaxed);
        let mut held = self.thread.join().unwrap_or_default();
        held.holds.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        held
    }
}

/// Room for `/proc/stat`'s cpu lines (about 100 bytes a cpu) and a
/// thread's `stat`.
const STAT_BUF: usize = 64 << 10;

/// One worker's counters, and the hold it is in.
struct Worker {
    index: usize,
    tid: i32,
    waited_ns: u64,
    steal_ticks: u64,
    open: Option<Hold>,
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant of the C library.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).unwrap_or(100).max(1)
}

fn sample(
    stop: &AtomicBool,
    mut workers: Vec<Worker>,
    mut held: Held,
    mut buf: Vec<u8>,
    tick_ns: u64,
    warmup: Duration,
) -> Held {
    let start = Instant::now();
    let mut last_s = 0.0;
    // The room was made for the whole run (and 5 s more); a hold past it
    // would be a run far longer than planned, and is left out rather than
    // grow the vector here.
    let close = |held: &mut Held, h: Hold| {
        if held.holds.len() < held.holds.capacity() {
            held.holds.push(h);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(PERIOD);
        let counting = start.elapsed() >= warmup;
        let t_s = start.elapsed().as_secs_f64();
        let window_ns = ((t_s - last_s) * 1e9) as u64;
        let began_s = last_s;
        last_s = t_s;
        for w in &mut workers {
            let Some((waited, cpu)) = worker_counters(w.tid, &mut buf) else {
                continue;
            };
            let stolen = steal_of(cpu, &mut buf).unwrap_or(w.steal_ticks);
            let dw = waited.saturating_sub(w.waited_ns);
            let ds = stolen.saturating_sub(w.steal_ticks) * tick_ns;
            w.waited_ns = waited;
            w.steal_ticks = stolen;
            if !counting {
                continue;
            }
            held.waited_ms += dw as f64 / 1e6;
            held.stolen_ms += ds as f64 / 1e6;
            // Steal is not a hold: some hypervisors count an idle cpu's
            // time as stolen (a worker asleep for 200 ms "lost" 90 ms
            // here), and a task the host preempts is running, for its
            // kernel. Only the run queue says the worker was kept waiting.
            if dw >= HOLD_MIN_NS && dw >= window_ns / 4 {
                let h = w.open.get_or_insert(Hold {
                    at_s: began_s,
                    ms: 0.0,
                    worker: w.index,
                });
                h.ms += dw as f64 / 1e6;
            } else if let Some(h) = w.open.take() {
                close(&mut held, h);
            }
        }
    }
    for w in &mut workers {
        if let Some(h) = w.open.take() {
            close(&mut held, h);
        }
    }
    held
}

/// Reads `path` into `buf` without allocating (the path is short enough
/// for the standard library to make its C string on the stack).
fn read_into<'a>(path: &std::path::Path, buf: &'a mut [u8]) -> Option<&'a str> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    std::str::from_utf8(&buf[..n]).ok()
}

/// `/proc/self/task/TID/NAME` in a stack buffer.
fn task_path(tid: i32, name: &str, out: &mut [u8; 64]) -> Option<usize> {
    use std::io::Write as _;
    let mut w = &mut out[..];
    write!(w, "/proc/self/task/{tid}/{name}").ok()?;
    let left = w.len();
    Some(64 - left)
}

/// A thread's run-queue wait (ns) and the cpu it last ran on.
fn worker_counters(tid: i32, buf: &mut [u8]) -> Option<(u64, usize)> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut path = [0u8; 64];
    let n = task_path(tid, "schedstat", &mut path)?;
    let p = std::path::Path::new(std::ffi::OsStr::from_bytes(&path[..n]));
    let waited = read_into(p, buf)?.split_whitespace().nth(1)?.parse().ok()?;
    let n = task_path(tid, "stat", &mut path)?;
    let p = std::path::Path::new(std::ffi::OsStr::from_bytes(&path[..n]));
    let stat = read_into(p, buf)?;
    // Fields after the name, which is in parentheses and may hold spaces:
    // `processor` is field 39, the 37th after `) `.
    let after = stat.rsplit_once(") ")?.1;
    let cpu = after.split_whitespace().nth(36)?.parse().ok()?;
    Some((waited, cpu))
}

/// The `steal` ticks of `cpu` in `/proc/stat`.
fn steal_of(cpu: usize, buf: &mut [u8]) -> Option<u64> {
    let stat = read_into(std::path::Path::new("/proc/stat"), buf)?;
    for line in stat.lines() {
        let rest = line.strip_prefix("cpu")?;
        // Not the total line, `cpu  …`.
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let mut f = rest.split_whitespace();
        if f.next()?.parse::<usize>().ok() != Some(cpu) {
            continue;
        }
        // user nice system idle iowait irq softirq steal
        return f.nth(7)?.parse().ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_delays_past_the_limit_only_what_arrives_in_its_excess() {
        let held = Held {
            waited_ms: 40.0,
            stolen_ms: 0.0,
            holds: vec![
                Hold {
                    at_s: 6.1,
                    ms: 31.0,
                    worker: 0,
                },
                Hold {
                    at_s: 7.0,
                    ms: 1.5,
                    worker: 0,
                },
            ],
        };
        // 29 ms over a 2 ms limit at 10k/s: 290 events; the 1.5 ms hold none.
        assert_eq!(held.late_past(Duration::from_millis(2), 10_000.0, 1), 290);
        assert_eq!(held.late_past(Duration::from_millis(2), 10_000.0, 2), 145);
        assert_eq!(held.longest().map(|h| h.at_s), Some(6.1));
        assert_eq!(held.held_ms(), 32.5);
    }

    #[test]
    fn a_busy_neighbour_on_the_workers_core_is_seen() {
        // A "worker" pinned beside a thread that spins on the same cpu: the
        // kernel makes one wait for the other, and the sampler sees it.
        let cpu = rustix::thread::sched_getcpu();
        let mut one = rustix::thread::CpuSet::new();
        one.set(cpu);
        let spin = Arc::new(AtomicBool::new(true));
        let s2 = Arc::clone(&spin);
        let neighbour = std::thread::spawn(move || {
            let _ = rustix::thread::sched_setaffinity(None, &one);
            while s2.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let s3 = Arc::clone(&spin);
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            let _ = rustix::thread::sched_setaffinity(None, &one);
            let _ = tid_tx.send(rustix::thread::gettid().as_raw_nonzero().get());
            while s3.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let tid = tid_rx.recv().unwrap();
        let sampler = Sampler::start(vec![tid], Duration::ZERO, Duration::from_secs(1)).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let held = sampler.finish();
        spin.store(false, Ordering::Relaxed);
        neighbour.join().unwrap();
        worker.join().unwrap();
        // Two spinners share one cpu: each waits about half the time.
        assert!(held.waited_ms > 50.0, "{held:?}");
        assert!(!held.holds.is_empty(), "{held:?}");
    }
}
