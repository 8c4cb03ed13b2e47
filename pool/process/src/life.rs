//! What the pool knows of one long-lived process, whatever its protocol:
//! calls in flight and served, whether it ever answered, whether it was
//! asked to stop, and why it ended.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use toolplane_core::Outcome;

/// How long a process asked to stop (stdin closed) has to exit before it
/// is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// How long a process has, after one of its calls is cancelled, to show it
/// is not hung before it is killed: a jsonl worker answers the call, an MCP
/// server a ping.
pub const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// One process's life.
pub(crate) struct Life {
    /// Its number within the tool, for messages.
    pub(crate) serial: u64,
    pub(crate) pid: u32,
    pub(crate) started: Instant,
    /// The tool's name, for messages.
    pub(crate) tool: Arc<str>,
    /// Calls it is answering now.
    inflight: AtomicUsize,
    /// Calls it has taken.
    served: AtomicU64,
    /// It answered at least one call (it works).
    answered: AtomicBool,
    /// The pool asked it to stop (retired, idle, unloaded).
    stopping: AtomicBool,
    last_used: Mutex<Instant>,
    /// Asks its watcher to stop it gracefully, or to kill it now.
    stop: Notify,
    kill: Notify,
    /// Why it is to be killed, when the pool said (a remote session's
    /// broken transport).
    kill_why: OnceLock<String>,
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
            kill_why: OnceLock::new(),
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

    /// Calls it is answering now.
    pub(crate) fn load(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Calls it has taken.
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Takes a call: one more in flight and served.
    pub(crate) fn admit(&self) {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// What [`Life::admit`] took was not a call (a list of its tools):
    /// not counted as served.
    pub(crate) fn not_a_call(&self) {
        self.served.fetch_sub(1, Ordering::Relaxed);
    }

    /// A call it took is over.
    pub(crate) fn release(&self) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
    }

    /// It answered a call: it works.
    pub(crate) fn mark_answered(&self) {
        // Release pairs with the Acquire load in `answered`.
        self.answered.store(true, Ordering::Release);
    }

    /// Whether it ever answered a call.
    pub(crate) fn answered(&self) -> bool {
        // Acquire pairs with the Release store in `mark_answered`.
        self.answered.load(Ordering::Acquire)
    }

    /// Whether the pool asked it to stop.
    pub(crate) fn stopping(&self) -> bool {
        // Acquire pairs with the Release stores in `retire`, `stop`.
        self.stopping.load(Ordering::Acquire)
    }

    /// Marks it to stop once its calls are answered (the pool no longer
    /// gives it calls).
    pub(crate) fn retire(&self) {
        // Release pairs with the Acquire load in `stopping`.
        self.stopping.store(true, Ordering::Release);
    }

    /// Asks it to stop: stdin closes, and it is killed if it has not
    /// exited within [`STOP_GRACE`] (its watcher does both).
    pub(crate) fn stop(&self) {
        self.retire();
        self.stop.notify_one();
    }

    /// Kills it now (its group; every call on it ends `Error`).
    pub(crate) fn kill(&self) {
        self.kill.notify_one();
    }

    /// Kills it now, for `why` (the first reason given is kept).
    pub(crate) fn kill_because(&self, why: String) {
        let _ = self.kill_why.set(why);
        self.kill.notify_one();
    }

    /// Why [`Life::kill_because`] killed it, if it did.
    pub(crate) fn kill_why(&self) -> Option<String> {
        self.kill_why.get().cloned()
    }

    /// Resolves once it is asked to stop ([`Life::stop`]).
    pub(crate) async fn stop_asked(&self) {
        self.stop.notified().await;
    }

    /// Resolves once it is to be killed ([`Life::kill`]).
    pub(crate) async fn kill_asked(&self) {
        self.kill.notified().await;
    }

    /// The outcome of a call that found the process ended.
    pub(crate) fn ended(&self, why: &str) -> Outcome {
        Outcome::Error(format!("tool {}: {why}", self.tool).into())
    }
}
