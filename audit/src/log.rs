//! The writer: a call first holds a place in the ring (a permit of a
//! semaphore as large as the ring, waited for when it is full, so a call
//! that must not run without its record is refused before it runs), then
//! pushes its record there (crossbeam's bounded `ArrayQueue`: no lock, no
//! system call). One thread takes the records in batches, each batch one
//! `write` and one `fdatasync` (group commit). With `durability = "async"`
//! a batch every `max_delay` while records come (fewer syncs; nobody
//! waits), at once when the first comes after a quiet spell or when
//! `max_batch` wait. With `"before-answer"` callers wait, so a batch
//! begins as soon as the last one is on disk: it holds the records that
//! came during that `fdatasync`.
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
    /// The log is closed: nothing more is written.
    pub closed: bool,
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
    /// Records dropped: the ring stayed full (`on_full`), the disk failed
    /// at shutdown, or a call came after the log closed.
    pub dropped: AtomicU64,
    /// Calls that found the ring full and waited for room.
    pub full_waits: AtomicU64,
    /// Writes, syncs or new files that failed.
    pub errors: AtomicU64,
    /// Records whose input was left out: the record would have been larger
    /// than a frame holds.
    pub arguments_omitted: AtomicU64,
}

/// The audit log of a running server.
#[derive(Debug)]
pub struct AuditLog {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<Files>>>,
}

#[derive(Debug)]
struct Shared {
    opts: Options,
    /// Each record with the bytes of its input it holds.
    ring: ArrayQueue<(Record, usize)>,
    /// Places in the ring not held by a call: a permit per free slot.
    room: tokio::sync::Semaphore,
    /// Bytes of inputs the ring may still take (`arguments`): a permit
    /// per byte.
    bytes: tokio::sync::Semaphore,
    begun: AtomicU64,
    state: tokio::sync::watch::Sender<State>,
    stop: AtomicBool,
    /// Set once `close` has written the last records: a push after it is
    /// counted as dropped. (An atomic, so a push takes no lock.)
    closed: AtomicBool,
    /// Whether the last write failed: the state's `error` without its
    /// lock, for the check every call makes.
    failing: AtomicBool,
    /// The writer is parked for long (nothing came): the next push wakes it.
    idle: AtomicBool,
    writer: Mutex<Option<Thread>>,
    stats: Stats,
}

/// A place held in the ring for one call's record: pushed with
/// [`Slot::push`], or given back when dropped unused.
#[derive(Debug)]
pub struct Slot<'a> {
    log: &'a AuditLog,
    used: bool,
}

/// What a caller waits on for its record to be on disk.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl Slot<'_> {
    /// Puts `record` in the place held for it (never waits, never fails:
    /// the place was held).
    pub fn push(mut self, mut record: Record) -> Ticket {
        self.used = true;
        let s = &*self.log.shared;
        // Its input (`arguments`) only when the inputs already waiting
        // leave room for it (`max_queued`); else the record goes without
        // it, said in the record and counted. Never a wait: the call has
        // run, and a big input must not hold up the records behind it.
        let mut held = 0;
        if let Some(input) = &record.arguments {
            match u32::try_from(input.len())
                .ok()
                .and_then(|n| s.bytes.try_acquire_many(n).ok())
            {
                Some(p) => {
                    p.forget();
                    held = input.len();
                }
                None => {
                    record.arguments = None;
                    record.arguments_omitted = true;
                    s.stats.arguments_omitted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if s.closed.load(Ordering::Acquire) || s.ring.push((record, held)).is_err() {
            // After close (a call that outlived the drain), or a ring
            // fuller than its permits allow (a bug): counted, not hidden.
            s.bytes.add_permits(held);
            s.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        // A plain load first: while records come the writer is not idle,
        // and a push then writes no shared line.
        let idle = s.idle.load(Ordering::SeqCst) && s.idle.swap(false, Ordering::SeqCst);
        if idle || s.ring.len() >= s.opts.max_batch {
            s.wake();
        }
        Ticket(s.begun.load(Ordering::SeqCst))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.log.shared.room.add_permits(1);
        }
    }
}

impl AuditLog {
    /// Opens the log in `opts.dir` (made, mode 0700, if missing): a new
    /// file after the last one there, old files removed as `keep_files`
    /// and `keep_age` say, and the writer thread.
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
        let capacity = opts.capacity.max(1);
        let shared = Arc::new(Shared {
            ring: ArrayQueue::new(capacity),
            room: tokio::sync::Semaphore::new(capacity),
            bytes: tokio::sync::Semaphore::new(
                opts.max_queued.min(tokio::sync::Semaphore::MAX_PERMITS),
            ),
            opts,
            begun: AtomicU64::new(0),
            state: tokio::sync::watch::Sender::new(State::default()),
            stop: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            idle: AtomicBool::new(false),
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
        if !self.shared.failing.load(Ordering::Acquire) {
            return None;
        }
        self.shared.state.borrow().error.clone()
    }

    /// Holds a place in the ring for a call's record, before the call
    /// runs. A full ring: with `on_full = "drop-and-count"`, or `async`
    /// while writing fails (no room is coming), `None` at once (counted);
    /// with `"wait"`, waits for room up to `full_wait`.
    ///
    /// # Errors
    ///
    /// No room within `full_wait` ([`AuditError::Full`]; the caller decides
    /// whether the call may run without its record), or the log is closed.
    pub async fn reserve(&self) -> Result<Option<Slot<'_>>, AuditError> {
        let s = &*self.shared;
        if s.stop.load(Ordering::Relaxed) {
            s.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(AuditError::Closed);
        }
        let slot = || Slot {
            log: self,
            used: false,
        };
        if let Ok(p) = s.room.try_acquire() {
            p.forget();
            return Ok(Some(slot()));
        }
        let dead_disk = s.opts.durability == Durability::Async && self.failing().is_some();
        if s.opts.on_full == OnFull::DropAndCount || dead_disk {
            s.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        s.stats.full_waits.fetch_add(1, Ordering::Relaxed);
        s.wake();
        match tokio::time::timeout(s.opts.full_wait, s.room.acquire()).await {
            Ok(Ok(p)) => {
                p.forget();
                Ok(Some(slot()))
            }
            Ok(Err(_)) => Err(AuditError::Closed),
            Err(_) => {
                s.stats.dropped.fetch_add(1, Ordering::Relaxed);
                Err(AuditError::Full {
                    capacity: s.opts.capacity,
                    waited: s.opts.full_wait,
                })
            }
        }
    }

    /// Waits until the record of `ticket` is on disk.
    ///
    /// # Errors
    ///
    /// Writing fails ([`AuditError::NotWritten`]: the record stays queued
    /// and is written when the disk allows), or the log closed first.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), AuditError> {
        let g = ticket.0;
        let mut rx = self.shared.state.subscribe();
        let state = rx
            .wait_for(|st| st.durable > g || st.error.is_some() || st.closed)
            .await
            .map_err(|_| AuditError::Closed)?
            .clone();
        if state.durable > g {
            return Ok(());
        }
        match state.error {
            Some(e) => Err(AuditError::NotWritten(e)),
            None => Err(AuditError::Closed),
        }
    }

    /// Appends `record`: a place held, the record pushed, and with
    /// `durability = "before-answer"` on disk before this returns. `Ok`
    /// without a record written when the ring is full and `on_full` drops
    /// (counted).
    ///
    /// # Errors
    ///
    /// As [`AuditLog::reserve`] and [`AuditLog::durable`].
    pub async fn append(&self, record: Record) -> Result<(), AuditError> {
        let Some(slot) = self.reserve().await? else {
            return Ok(());
        };
        let ticket = slot.push(record);
        if self.shared.opts.durability == Durability::BeforeAnswer {
            self.durable(ticket).await?;
        }
        Ok(())
    }

    /// Stops the writer after it has written every record pushed so far;
    /// callers still waiting are told it closed.
    pub fn close(&self) {
        let s = &*self.shared;
        s.stop.store(true, Ordering::SeqCst);
        s.wake();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle
            && let Ok(mut files) = h.join()
        {
            // Records pushed by calls that held a place before the stop
            // and pushed after the writer's last look.
            let mut buf = Vec::new();
            let taken = encode_ring(s, &mut buf);
            if taken > 0 && files.commit(&buf).is_err() {
                s.stats.dropped.fetch_add(taken, Ordering::Relaxed);
            } else {
                s.stats.written.fetch_add(taken, Ordering::Relaxed);
            }
        }
        s.closed.store(true, Ordering::Release);
        s.state.send_modify(|st| st.closed = true);
        s.room.close();
        s.bytes.close();
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

/// How long the writer sleeps when nothing comes (a push wakes it).
const IDLE: Duration = Duration::from_secs(1);

/// How often old files are looked for when `keep_age` is set.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Takes every record the ring holds now, encoded into `buf`; how many
/// were framed.
fn encode_ring(s: &Shared, buf: &mut Vec<u8>) -> u64 {
    let n = s.ring.len();
    let mut json: Vec<u8> = Vec::with_capacity(1024);
    let mut taken = 0;
    let mut framed = 0;
    let mut bytes = 0usize;
    while taken < n {
        // `pop` waits out a slot that `len` counted and its caller is
        // still writing.
        let Some((mut r, held)) = s.ring.pop() else {
            std::hint::spin_loop();
            continue;
        };
        bytes += held;
        json.clear();
        if serde_json::to_writer(&mut json, &r).is_ok() && json.len() > frame::MAX_PAYLOAD {
            // Too large for a frame (its input, with `arguments`): the
            // input left out, said in the record and counted.
            r.arguments = None;
            r.arguments_omitted = true;
            s.stats.arguments_omitted.fetch_add(1, Ordering::Relaxed);
            json.clear();
            let _ = serde_json::to_writer(&mut json, &r);
        }
        taken += 1;
        if frame::encode(&json, buf) {
            framed += 1;
        } else {
            s.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    if taken > 0 {
        s.room.add_permits(taken);
        s.bytes.add_permits(bytes);
    }
    framed
}

fn writer(s: &Shared, mut files: Files) -> Files {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    // The batch in `buf`, when its write failed: its number and records.
    let mut failed: Option<(u64, u64)> = None;
    let mut pruned = Instant::now();
    loop {
        let stopping = s.stop.load(Ordering::SeqCst);
        let (g, taken) = match failed {
            Some(batch) => batch,
            None => {
                // A new batch: numbered, then the ring counted and emptied
                // of exactly what it held.
                let g = s.begun.fetch_add(1, Ordering::SeqCst) + 1;
                fence(Ordering::SeqCst);
                (g, encode_ring(s, &mut buf))
            }
        };
        match files.commit(&buf) {
            Ok(sync) => {
                if taken > 0 {
                    let st = &s.stats;
                    st.written.fetch_add(taken, Ordering::Relaxed);
                    st.batches.fetch_add(1, Ordering::Relaxed);
                    st.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    st.sync_ns
                        .fetch_add(sync.as_nanos() as u64, Ordering::Relaxed);
                }
                buf.clear();
                if failed.take().is_some() {
                    tracing::warn!("audit: writing again; the records held meanwhile are on disk");
                }
                s.failing.store(false, Ordering::Release);
                s.state.send_modify(|st| {
                    st.durable = g;
                    st.error = None;
                });
                // A new file is begun after a batch is durable, never as
                // part of it: a failure here leaves the batch written and
                // the current file in use, and is tried again next time.
                if let Err(e) = files.rotate_if_full() {
                    s.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("audit: {e}; writing on in the current file");
                }
            }
            Err(e) => {
                s.stats.errors.fetch_add(1, Ordering::Relaxed);
                if failed.is_none() {
                    tracing::error!(
                        "{e}; records are held (at most audit.capacity) and written when the disk takes them"
                    );
                }
                s.state.send_modify(|st| st.error = Some(Arc::new(e)));
                s.failing.store(true, Ordering::Release);
                if stopping {
                    s.stats.dropped.fetch_add(taken, Ordering::Relaxed);
                    return files;
                }
                // `buf` is kept and tried again, alone, until the disk
                // takes it: batch `g` stays the newest begun meanwhile, so
                // no caller counts a later one as its own.
                failed = Some((g, taken));
                std::thread::park_timeout(RETRY);
                continue;
            }
        }
        if stopping && s.ring.is_empty() {
            return files;
        }
        if files.keep_age.is_some() && pruned.elapsed() >= PRUNE_EVERY {
            files.prune();
            pruned = Instant::now();
        }
        if stopping || s.ring.len() >= s.opts.max_batch {
            continue;
        }
        if taken == 0 {
            // Quiet: sleep until a push says otherwise.
            s.idle.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if s.ring.is_empty() && !s.stop.load(Ordering::SeqCst) {
                std::thread::park_timeout(IDLE);
            }
            s.idle.store(false, Ordering::SeqCst);
        } else if s.opts.durability == Durability::Async {
            std::thread::park_timeout(s.opts.max_delay);
        }
        // Before the answer, callers wait: the next batch begins at once,
        // with the records that came during this one's `fdatasync`.
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

/// The index of a file named by [`file_name`] (ten digits or more, only
/// digits: nothing else in the directory is taken for one of ours).
pub fn file_index(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".log")?;
    if digits.len() < 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
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
        let index = match list(dir)?.last() {
            None => 1,
            Some((i, path)) => i.checked_add(1).ok_or_else(|| {
                AuditError::io(
                    path,
                    "numbering the file after",
                    std::io::Error::other("the last index there is"),
                )
            })?,
        };
        let (file, committed) = Files::create(dir, index)?;
        let mut files = Files {
            dir: dir.to_owned(),
            file,
            index,
            committed,
            max_file,
            keep_files,
            keep_age,
        };
        files.prune();
        Ok(files)
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
        let made = file
            .write_all(frame::MAGIC)
            .and_then(|()| file.sync_data())
            // The new name is durable too.
            .and_then(|()| File::open(dir)?.sync_all());
        if let Err(e) = made {
            // Not left half-made: the next try makes it again.
            let _ = std::fs::remove_file(&path);
            return Err(AuditError::io(&path, "making", e));
        }
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
        match written {
            Ok(t) => {
                self.committed += bytes.len() as u64;
                Ok(t)
            }
            Err(e) => {
                // What was written of it goes: the batch is written whole
                // or not at all, and tried again.
                let _ = self.file.set_len(self.committed);
                Err(AuditError::io(&path, "writing", e))
            }
        }
    }

    /// Begins the next file when this one is past `max_file`.
    fn rotate_if_full(&mut self) -> Result<(), AuditError> {
        if self.committed < self.max_file {
            return Ok(());
        }
        let path = self.dir.join(file_name(self.index));
        let next = self.index.checked_add(1).ok_or_else(|| {
            AuditError::io(
                &path,
                "numbering the file after",
                std::io::Error::other("the last index there is"),
            )
        })?;
        let (file, committed) = Files::create(&self.dir, next)?;
        self.file = file;
        self.index = next;
        self.committed = committed;
        self.prune();
        Ok(())
    }

    /// Removes the oldest files past `keep_files`, and those older than
    /// `keep_age`; never the one being written.
    fn prune(&mut self) {
        let Ok(files) = list(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let old = files.len().saturating_sub(self.keep_files);
        for (n, (i, path)) in files.iter().enumerate() {
            if *i >= self.index {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::{Item, read_all};
    use crate::record::sample as record;

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
        // The first push wakes the idle writer, which then sleeps for an
        // hour: the ring fills, and the rest are dropped and counted.
        for n in 0..10 {
            log.append(record(n)).await.unwrap();
        }
        let dropped = log.stats().dropped.load(Ordering::Relaxed);
        assert!((5..=6).contains(&dropped), "{dropped} dropped");
        log.close();
        let kept = keys(dir.path());
        assert_eq!(kept.len() as u64 + dropped, 10);
        assert_eq!(kept, (0..kept.len() as u64).collect::<Vec<_>>());

        let dir = tempfile::tempdir().unwrap();
        opts.dir = dir.path().to_owned();
        opts.on_full = OnFull::Wait;
        opts.full_wait = Duration::from_millis(500);
        let log = AuditLog::open(opts).unwrap();
        // A call that finds the ring full wakes the writer and gets room.
        for n in 0..10 {
            log.append(record(n)).await.unwrap();
        }
        assert!(log.stats().full_waits.load(Ordering::Relaxed) > 0);
        assert_eq!(log.stats().dropped.load(Ordering::Relaxed), 0);
        log.close();
        assert_eq!(keys(dir.path()), (0..10).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_place_held_and_given_back_is_free_again_and_close_wakes_the_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::new(dir.path().to_owned());
        opts.capacity = 1;
        opts.full_wait = Duration::from_millis(50);
        let log = AuditLog::open(opts).unwrap();
        let held = log.reserve().await.unwrap().unwrap();
        // The only place is held: another call waits, then is refused.
        assert!(matches!(log.reserve().await, Err(AuditError::Full { .. })));
        drop(held);
        let slot = log.reserve().await.unwrap().unwrap();
        let ticket = slot.push(record(1));
        log.durable(ticket).await.unwrap();
        log.close();
        assert!(matches!(log.reserve().await, Err(AuditError::Closed)));
        assert_eq!(keys(dir.path()), [1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inputs_waiting_in_the_ring_are_bounded_by_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::new(dir.path().to_owned());
        opts.arguments = true;
        opts.max_queued = 4 << 10;
        let log = AuditLog::open(opts).unwrap();
        let with = |key: u64, size: usize| {
            let mut r = record(key);
            r.arguments = Some(format!("\"{}\"", "x".repeat(size - 2)));
            r
        };
        // 3 KiB fits; written, it gives its bytes back, so the next 3 KiB
        // fits too; 5 KiB never does: its record goes without it. No call
        // waits for any of this.
        for (key, size) in [(1, 3 << 10), (2, 3 << 10), (3, 5 << 10)] {
            let slot = log.reserve().await.unwrap().unwrap();
            log.durable(slot.push(with(key, size))).await.unwrap();
        }
        assert_eq!(log.stats().arguments_omitted.load(Ordering::Relaxed), 1);
        assert_eq!(log.stats().full_waits.load(Ordering::Relaxed), 0);
        log.close();
        let got: Vec<(u64, Option<usize>, bool)> = read_all(dir.path())
            .unwrap()
            .into_iter()
            .map(|i| match i {
                Item::Record(r) => (
                    r.key.unwrap(),
                    r.arguments.as_ref().map(String::len),
                    r.arguments_omitted,
                ),
                Item::Problem(p) => panic!("{p}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, Some(3 << 10), false),
                (2, Some(3 << 10), false),
                (3, None, true)
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_file_that_cannot_be_made_does_not_fail_or_repeat_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::new(dir.path().to_owned());
        opts.durability = Durability::BeforeAnswer;
        opts.max_delay = Duration::from_millis(1);
        opts.max_file = 4096;
        let log = AuditLog::open(opts).unwrap();
        // The next file's name taken by a directory: rotation fails.
        let blocker = dir.path().join(file_name(2));
        std::fs::create_dir(&blocker).unwrap();
        for n in 0..60 {
            log.append(record(n)).await.unwrap();
        }
        assert!(log.stats().errors.load(Ordering::Relaxed) > 0);
        assert!(log.failing().is_none(), "the batches were written");
        std::fs::remove_dir(&blocker).unwrap();
        for n in 60..80 {
            log.append(record(n)).await.unwrap();
        }
        log.close();
        // Each record once, in order, the first file past its size.
        let got = keys(dir.path());
        assert_eq!(got, (0..80).collect::<Vec<_>>());
        assert!(list(dir.path()).unwrap().len() >= 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_too_large_for_a_frame_is_kept_without_its_input() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(Options::new(dir.path().to_owned())).unwrap();
        let mut r = record(7);
        // Control characters take six bytes each in JSON.
        r.arguments = Some("\u{1}".repeat(3 << 20));
        log.append(r).await.unwrap();
        log.close();
        let items = read_all(dir.path()).unwrap();
        match &items[..] {
            [Item::Record(r)] => {
                assert_eq!(r.key, Some(7));
                assert!(r.arguments.is_none() && r.arguments_omitted);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(log.stats().arguments_omitted.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn only_names_of_ten_digits_or_more_are_the_logs() {
        assert_eq!(file_index("audit-0000000012.log"), Some(12));
        for name in [
            "audit-+000000012.log",
            "audit-12.log",
            "audit-00000000x2.log",
            "x.log",
        ] {
            assert_eq!(file_index(name), None, "{name}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file_name(u64::MAX)), b"").unwrap();
        assert!(AuditLog::open(Options::new(dir.path().to_owned())).is_err());
    }
}
