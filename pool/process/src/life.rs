//! What the pool knows of one long-lived process, whatever its protocol:
//! calls in flight and served, whether it ever answered, whether it was
//! asked to stop, and why it ended.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use toolplane_core::Outcome;

/// How long a process asked to stop (stdin closed) has to exit before it
/// is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// One process's life.
pub(crate) struct Life {
    /// Its number within the tool, for messages.
    pub(crate) serial: u64,
    pub(crate) pid: u32,
    pub(crate) started: Instant,
    /// The tool's name, for messages.
    pub(crate) tool: Arc<str>,
    /// Calls it is answering now.
    pub(crate) inflight: AtomicUsize,
    /// Calls it has taken.
    pub(crate) served: AtomicU64,
    /// It answered at least one call (it works).
    pub(crate) answered: AtomicBool,
    /// The pool asked it to stop (retired, idle, unloaded).
    pub(crate) stopping: AtomicBool,
    last_used: Mutex<Instant>,
    /// Asks its watcher to stop it gracefully, or to kill it now.
    pub(crate) stop: Notify,
    pub(crate) kill: Notify,
    /// Why it ended, once it has.
    exit: OnceLock<Arc<str>>,
    ended: Notify,
}

impl Life {
    pub(crate) fn new(serial: u64, pid: u32, tool: Arc<str>) -> Life {
        Life {
            serial,
            pid,
            started: Instant::now(),
            tool,
            inflight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            answered: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            last_used: Mutex::new(Instant::now()),
            stop: Notify::new(),
            kill: Notify::new(),
            exit: OnceLock::new(),
            ended: Notify::new(),
        }
    }

    /// Why it ended, if it has.
    pub(crate) fn exit(&self) -> Option<&Arc<str>> {
        self.exit.get()
    }

    /// Records why it ended (once) and wakes whoever waits for it.
    pub(crate) fn set_exit(&self, why: Arc<str>) {
        let _ = self.exit.set(why);
        self.ended.notify_waiters();
    }

    /// Why it ended, waiting up to `wait` for it to end (a call that saw its
    /// pipe close learns the status this way).
    pub(crate) async fn exit_within(&self, wait: Duration) -> Option<Arc<str>> {
        let ended = self.ended.notified();
        if let Some(why) = self.exit.get() {
            return Some(Arc::clone(why));
        }
        let _ = tokio::time::timeout(wait, ended).await;
        self.exit.get().cloned()
    }

    /// When it last finished a call (or started).
    pub(crate) fn last_used(&self) -> Instant {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Kills it now (its group; every call on it ends `Error`).
    pub(crate) fn kill(&self) {
        self.kill.notify_one();
    }

    /// The outcome of a call that found the process ended.
    pub(crate) fn ended(&self, why: &str) -> Outcome {
        Outcome::Error(format!("tool {}: {why}", self.tool).into())
    }
}
