//! The writer: calls push records into a bounded lock-free ring
//! (crossbeam's `ArrayQueue`: no lock and no system call for the caller),
//! and one thread takes them in batches, each batch one `write` and one
//! `fdatasync` (group commit): every `max_delay`, or sooner when
//! `max_batch` records wait.
//!
//! Durability is counted in batches. The writer numbers a batch (`begun`)
//! before it looks at the ring, and takes exactly the records the ring held
//! then; a caller that pushed its record, then read `begun = g`, has its
//! record in batch `g + 1` or earlier, so it waits until `durable > g`.
//! Both sides put a `SeqCst` fence between their two steps, so either the
//! writer's count of the ring sees the record or the caller sees the newer
//! batch number (and waits for the batch after it).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_queue::ArrayQueue;

use crate::error::AuditError;
use crate::frame;
use crate::options::{Durability, OnFull, Options};
use crate::record::Record;

/// What the writer has done, for `/readyz` and the callers waiting.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Batches on disk: every record of batch `n` and earlier is durable
    /// when this is `n`.
    pub durable: u64,
    /// Why the last write failed, while it is failing.
    pub error: Option<Arc<AuditError>>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records on disk.
    pub written: AtomicU64,
    /// Batches written (one `write` and one `fdatasync` each).
    pub batches: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
    /// Nanoseconds spent in `fdatasync`.
    pub sync_ns: AtomicU64,
    /// Records dropped because the ring stayed full (`on_full`).
    pub dropped: AtomicU64,
    /// Calls that found the ring full and waited for room.
    pub full_waits: AtomicU64,
    /// Writes or syncs that failed.
    pub errors: AtomicU64,
}

/// The audit log of a running server.
#[derive(Debug)]
pub struct AuditLog {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    opts: Options,
    ring: ArrayQueue<Record>,
    begun: AtomicU64,
    state: tokio::sync::watch::Sender<State>,
    room: tokio::sync::Notify,
    stop: AtomicBool,
    writer: Mutex<Option<Thread>>,
    stats: Stats,
}

impl AuditLog {
    /// Opens the log in `opts.dir` (made if missing): a new file after the
    /// last one there, and the writer thread.
    ///
    /// # Errors
    ///
    /// The directory or the file cannot be made or written.
    pub fn open(opts: Options) -> Result<AuditLog, AuditError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&opts.dir)
            .map_err(|e| AuditError::io(&opts.dir, "making", e))?;
        let files = Files::open(&opts.dir, opts.max_file, opts.keep_files, opts.keep_age)?;
        let shared = Arc::new(Shared {
            ring: ArrayQueue::new(opts.capacity.max(1)),
            opts,
            begun: AtomicU64::new(0),
            state: tokio::sync::watch::Sender::new(State::default()),
            room: tokio::sync::Notify::new(),
            stop: AtomicBool::new(false),
            writer: Mutex::new(None),
            stats: Stats::default(),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer(&s, files))
            .map_err(|e| AuditError::io(&shared.opts.dir, "starting the writer for", e))?;
        *shared.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread.thread().clone());
        Ok(AuditLog {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The options it runs with.
    pub fn options(&self) -> &Options {
        &self.shared.opts
    }

    /// Its counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Records waiting in the ring.
    pub fn queued(&self) -> usize {
        self.shared.ring.len()
    }

    /// Why writing fails, while it does.
    pub fn failing(&self) -> Option<Arc<AuditError>> {
        self.shared.state.borrow().error.clone()
    }

    /// Appends `record`. With `durability = "before-answer"` this returns
    /// once the record is on disk; with `"async"`, once it is in the ring.
    ///
    /// # Errors
    ///
    /// The ring stayed full for `full_wait` (`on_full = "wait"`; with
    /// `"drop-and-count"` a full ring drops the record, counted, without
    /// an error), or, before the answer, the write failed.
    pub async fn append(&self, record: Record) -> Result<(), AuditError> {
        let s = &*self.shared;
        let mut record = record;
        let mut waited: Option<Instant> = None;
        loop {
            // Registered before the push is tried, so a drain between the
            // failed push and the wait is not missed.
            let room = s.room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            match s.ring.push(record) {
                Ok(()) => break,
                Err(back) => record = back,
            }
            if s.opts.on_full == OnFull::DropAndCount {
                s.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let since = *waited.get_or_insert_with(|| {
                s.stats.full_waits.fetch_add(1, Ordering::Relaxed);
                Instant::now()
            });
            s.wake();
            let left = s.opts.full_wait.saturating_sub(since.elapsed());
            if left.is_zero() || tokio::time::timeout(left, room).await.is_err() {
                s.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(AuditError::Full {
                    capacity: s.opts.capacity,
                    waited: s.opts.full_wait,
                });
            }
        }
        if s.ring.len() >= s.opts.max_batch {
            s.wake();
        }
        if s.opts.durability == Durability::Async {
            return Ok(());
        }
        fence(Ordering::SeqCst);
        let g = s.begun.load(Ordering::SeqCst);
        let mut rx = s.state.subscribe();
        let state = rx
            .wait_for(|st| st.durable > g || st.error.is_some())
            .await
            .map_err(|_| AuditError::Closed)?
            .clone();
        match state.error {
            Some(e) if state.durable <= g => Err(AuditError::NotWritten(e)),
            _ => Ok(()),
        }
    }

    /// Appends `record` without waiting (from a destructor: a call whose
    /// caller went away); a full ring drops it, counted. Whether it was
    /// taken.
    pub fn try_append(&self, record: Record) -> bool {
        let s = &*self.shared;
        if s.ring.push(record).is_err() {
            s.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if s.ring.len() >= s.opts.max_batch {
            s.wake();
        }
        true
    }

    /// Stops the writer after it has written every record pushed so far.
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn wake(&self) {
        if let Some(t) = &*self.writer.lock().unwrap_or_else(|p| p.into_inner()) {
            t.unpark();
        }
    }
}

/// How long a failing write waits before it is tried again.
const RETRY: Duration = Duration::from_millis(500);

fn writer(s: &Shared, mut files: Files) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut json: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let stopping = s.stop.load(Ordering::SeqCst);
        if buf.is_empty() {
            // A new batch: numbered, then the ring counted and emptied of
            // exactly what it held.
            let g = s.begun.fetch_add(1, Ordering::SeqCst) + 1;
            fence(Ordering::SeqCst);
            let n = s.ring.len();
            let mut taken = 0;
            while taken < n {
                match s.ring.pop() {
                    Some(r) => {
                        json.clear();
                        if serde_json::to_writer(&mut json, &r).is_ok() {
                            frame::encode(&json, &mut buf);
                        }
                        taken += 1;
                    }
                    // Counted by `len` but still being written by its caller.
                    None => std::hint::spin_loop(),
                }
            }
            if taken > 0 {
                s.room.notify_waiters();
            }
            match files.commit(&buf) {
                Ok(sync) => {
                    if taken > 0 {
                        let st = &s.stats;
                        st.written.fetch_add(taken as u64, Ordering::Relaxed);
                        st.batches.fetch_add(1, Ordering::Relaxed);
                        st.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                        st.sync_ns
                            .fetch_add(sync.as_nanos() as u64, Ordering::Relaxed);
                    }
                    buf.clear();
                    s.state.send_replace(State {
                        durable: g,
                        error: None,
                    });
                }
                Err(e) => {
                    s.stats.errors.fetch_add(1, Ordering::Relaxed);
                    s.state.send_modify(|st| st.error = Some(Arc::new(e)));
                    // `buf` is kept and tried again, alone, until the disk
                    // takes it: batch `g` stays the newest begun meanwhile,
                    // so no caller counts a later one as its own.
                }
            }
        } else {
            // A failed batch, tried again; no new record is taken meanwhile
            // (the ring fills and `on_full` applies).
            let g = s.begun.load(Ordering::SeqCst);
            match files.commit(&buf) {
                Ok(_) => {
                    buf.clear();
                    s.state.send_replace(State {
                        durable: g,
                        error: None,
                    });
                    continue;
                }
                Err(e) => {
                    s.stats.errors.fetch_add(1, Ordering::Relaxed);
                    s.state.send_modify(|st| st.error = Some(Arc::new(e)));
                    if stopping {
                        return;
                    }
                    std::thread::park_timeout(RETRY);
                    continue;
                }
            }
        }
        if stopping && s.ring.is_empty() && buf.is_empty() {
            return;
        }
        if buf.is_empty() && s.ring.len() < s.opts.max_batch && !stopping {
            std::thread::park_timeout(s.opts.max_delay);
        }
    }
}

/// The files of the log: the one being written, its committed length, and
/// rotation.
struct Files {
    dir: PathBuf,
    file: File,
    index: u64,
    committed: u64,
    max_file: u64,
    keep_files: usize,
    keep_age: Option<Duration>,
}

/// The name of file `index`.
pub fn file_name(index: u64) -> String {
    format!("audit-{index:010}.log")
}

/// The index of a file named by [`file_name`].
pub fn file_index(name: &str) -> Option<u64> {
    name.strip_prefix("audit-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// The log's files in `dir`, oldest first.
///
/// # Errors
///
/// The directory cannot be read.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| AuditError::io(dir, "reading", e))? {
        let e = e.map_err(|e| AuditError::io(dir, "reading", e))?;
        if let Some(i) = e.file_name().to_str().and_then(file_index) {
            v.push((i, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

impl Files {
    fn open(
        dir: &Path,
        max_file: u64,
        keep_files: usize,
        keep_age: Option<Duration>,
    ) -> Result<Files, AuditError> {
        // Never appended to: the last file may end in a torn frame.
        let index = list(dir)?.last().map_or(1, |(i, _)| i + 1);
        let (file, committed) = Files::create(dir, index)?;
        Ok(Files {
            dir: dir.to_owned(),
            file,
            index,
            committed,
            max_file,
            keep_files,
            keep_age,
        })
    }

    fn create(dir: &Path, index: u64) -> Result<(File, u64), AuditError> {
        let path = dir.join(file_name(index));
        // Only the server's user reads it: records name clients and tools,
        // and may hold the calls' inputs (`arguments`).
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| AuditError::io(&path, "making", e))?;
        file.write_all(frame::MAGIC)
            .and_then(|()| file.sync_data())
            .map_err(|e| AuditError::io(&path, "writing", e))?;
        // The new name is durable too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| AuditError::io(dir, "syncing", e))?;
        Ok((file, frame::MAGIC.len() as u64))
    }

    /// Writes `bytes` and syncs; the time `fdatasync` took.
    fn commit(&mut self, bytes: &[u8]) -> Result<Duration, AuditError> {
        if bytes.is_empty() {
            return Ok(Duration::ZERO);
        }
        let path = self.dir.join(file_name(self.index));
        let written = self.file.write_all(bytes).and_then(|()| {
            let t = Instant::now();
            self.file.sync_data().map(|()| t.elapsed())
        });
        let sync = match written {
            Ok(t) => t,
            Err(e) => {
                // What was written of it goes: the batch is written whole
                // or not at all, and tried again.
                let _ = self.file.set_len(self.committed);
                return Err(AuditError::io(&path, "writing", e));
            }
        };
        self.committed += bytes.len() as u64;
        if self.committed >= self.max_file {
            self.rotate()?;
        }
        Ok(sync)
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        let (file, committed) = Files::create(&self.dir, self.index + 1)?;
        self.file = file;
        self.index += 1;
        self.committed = committed;
        let files = list(&self.dir)?;
        let now = SystemTime::now();
        let old = files.len().saturating_sub(self.keep_files);
        for (n, (i, path)) in files.iter().enumerate() {
            if *i == self.index {
                continue;
            }
            let aged = self.keep_age.is_some_and(|age| {
                std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > age)
            });
            if n < old || aged {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::{Item, read_all};

    fn record(n: u64) -> Record {
        Record {
            time_us: n,
            call: format!("{n:032x}"),
            client: Arc::from("bot"),
            tool: Arc::from("echo"),
            key: Some(n),
            outcome: "ok".into(),
            latency_us: 1,
            input_sha256: "0".repeat(64),
            input_bytes: 2,
            output_bytes: 2,
            trace: None,
            node: Arc::from("n1"),
            arguments: None,
        }
    }

    fn keys(dir: &Path) -> Vec<u64> {
        read_all(dir)
            .unwrap()
            .into_iter()
            .map(|i| match i {
                Item::Record(r) => r.key.unwrap(),
                Item::Problem(p) => panic!("{p}"),
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn before_the_answer_a_record_is_on_disk_and_close_writes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::new(dir.path().to_owned());
        opts.durability = Durability::BeforeAnswer;
        opts.max_delay = Duration::from_millis(5);
        let log = Arc::new(AuditLog::open(opts).unwrap());
        // From many tasks at once: each one's record is read back from the
        // file as soon as its append returns.
        let tasks: Vec<_> = (0..200u64)
            .map(|n| {
                let log = Arc::clone(&log);
                let dir = dir.path().to_owned();
                tokio::spawn(async move {
                    log.append(record(n)).await.unwrap();
                    assert!(keys(&dir).contains(&n), "record {n} not on disk");
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(log.stats().batches.load(Ordering::Relaxed) < 200, "batched");
        let mut async_opts = Options::new(dir.path().to_owned());
        async_opts.max_delay = Duration::from_secs(10);
        log.close();
        drop(log);
        // Async, closed before its (long) delay: close writes what is queued.
        let log = AuditLog::open(async_opts).unwrap();
        for n in 200..300 {
            log.append(record(n)).await.unwrap();
        }
        log.close();
        let mut got = keys(dir.path());
        got.sort_unstable();
        assert_eq!(got, (0..300).collect::<Vec<_>>());
        // Two runs, two files: a file is never appended to after a restart.
        assert_eq!(list(dir.path()).unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_rotate_by_size_and_are_kept_by_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::new(dir.path().to_owned());
        opts.durability = Durability::BeforeAnswer;
        opts.max_delay = Duration::from_millis(1);
        opts.max_file = 4096;
        opts.keep_files = 3;
        let log = AuditLog::open(opts).unwrap();
        for n in 0..400 {
            log.append(record(n)).await.unwrap();
        }
        log.close();
        let files = list(dir.path()).unwrap();
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(files[0].0 > 1, "the oldest removed: {files:?}");
        // What is left ends with the last records, in order.
        let got = keys(dir.path());
        assert_eq!(got.last(), Some(&399));
        assert!(got.windows(2).all(|w| w[0] + 1 == w[1]), "{got:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_ring_drops_and_counts_or_waits_then_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::new(dir.path().to_owned());
        opts.capacity = 4;
        opts.max_batch = 1000;
        opts.max_delay = Duration::from_secs(3600);
        opts.on_full = OnFull::DropAndCount;
        let log = AuditLog::open(opts.clone()).unwrap();
        // The writer takes its first (empty) batch at once, then sleeps.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for n in 0..10 {
            log.append(record(n)).await.unwrap();
        }
        assert_eq!(log.stats().dropped.load(Ordering::Relaxed), 6);
        log.close();
        assert_eq!(keys(dir.path()), [0, 1, 2, 3]);

        let dir = tempfile::tempdir().unwrap();
        opts.dir = dir.path().to_owned();
        opts.on_full = OnFull::Wait;
        opts.full_wait = Duration::from_millis(200);
        let log = AuditLog::open(opts).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A full ring wakes the writer: the waiting call gets room.
        for n in 0..10 {
            log.append(record(n)).await.unwrap();
        }
        assert!(log.stats().full_waits.load(Ordering::Relaxed) > 0);
        assert_eq!(log.stats().dropped.load(Ordering::Relaxed), 0);
        log.close();
        assert_eq!(keys(dir.path()), (0..10).collect::<Vec<_>>());
    }
}
