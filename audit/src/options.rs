//! How the log is written: its options.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// When a call's answer may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Once its record is in the ring: a crash loses the records not yet
    /// written, at most those of one commit interval (`max_delay` and the
    /// batch's own write and `fdatasync`) while the disk takes them; while
    /// it does not, those in the ring (at most `capacity`), and calls do
    /// not wait for room that is not coming (their records are dropped,
    /// counted).
    Async,
    /// Once its record is on disk: the answer waits for the batch's
    /// `fdatasync` (the worker that ran the call does not).
    BeforeAnswer,
}

/// What a call does when the ring is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Waits for room, at most `full_wait`; then the record is dropped
    /// (counted) and, before the answer, the call fails.
    Wait,
    /// Drops the record at once, counted (`async` only).
    DropAndCount,
}

/// How the log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Where its files are.
    pub dir: PathBuf,
    /// Whether a call's input is kept in its record.
    pub arguments: bool,
    /// A batch is written when this many records wait…
    pub max_batch: usize,
    /// …or this long after the last batch (`async`; before the answer a
    /// batch begins as soon as the last is on disk).
    pub max_delay: Duration,
    /// Records the ring holds.
    pub capacity: usize,
    /// Bytes of callers' inputs waiting in the ring to be written, when
    /// `arguments` keeps them: a record whose input does not fit goes
    /// without it (`arguments_omitted`, counted), so a slow disk cannot
    /// make the ring hold `capacity` inputs of the largest size.
    pub max_queued: usize,
    /// When the answer may go.
    pub durability: Durability,
    /// What a full ring does.
    pub on_full: OnFull,
    /// How long a call waits for room (`on_full = "wait"`).
    pub full_wait: Duration,
    /// A file is closed and a new one begun past this size.
    pub max_file: u64,
    /// Files kept (the oldest removed past it).
    pub keep_files: usize,
    /// Files older than this removed (`None`: kept by count only).
    pub keep_age: Option<Duration>,
    /// The node named in each record.
    pub node: Arc<str>,
}

impl Options {
    /// The defaults, writing to `dir`.
    pub fn new(dir: PathBuf) -> Options {
        Options {
            dir,
            arguments: false,
            max_batch: 256,
            max_delay: Duration::from_millis(2),
            capacity: 65_536,
            max_queued: 64 << 20,
            durability: Durability::Async,
            on_full: OnFull::Wait,
            full_wait: Duration::from_secs(1),
            max_file: 64 << 20,
            keep_files: 16,
            keep_age: None,
            node: Arc::from("local"),
        }
    }
}
