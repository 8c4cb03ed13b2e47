//! The process host: one thread with a tokio runtime of its own that owns
//! every process tool's processes, pipes and supervisors.
//!
//! A call on a worker's reactor hands its work to the host and awaits the
//! answer (a `JoinHandle` is runtime-agnostic), so:
//! - a process's pipes are registered with one reactor that is always
//!   polled, whichever worker calls it next (tokio I/O is bound to the
//!   runtime it was registered with);
//! - a worker's reactor never forks: forks are made on one thread of their
//!   own that lives as long as the process (`spawn.rs`, `forker`), since
//!   the parent-death signal follows the thread that forked, and a fork
//!   can wait for the kernel (a cgroup join) without holding this
//!   reactor.
//!
//! Dropping the host (the last process tool and runtime holding it) stops
//! its runtime: every task is dropped, and with it every child (`kill_on_drop`
//! and the group killers).

use std::future::Future;
use std::sync::Arc;

use toolplane_core::Outcome;

/// A handle on the process host; clones share it.
#[derive(Clone)]
pub struct ProcessHost(Arc<Inner>);

struct Inner {
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for ProcessHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcessHost")
    }
}

impl ProcessHost {
    /// Starts the host's thread.
    pub fn start() -> std::io::Result<ProcessHost> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("toolplane-proc")
            .enable_all()
            .build()?;
        Ok(ProcessHost(Arc::new(Inner {
            handle: rt.handle().clone(),
            rt: Some(rt),
        })))
    }

    /// The host runtime's handle (it does not keep the host alive).
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.0.handle
    }

    /// Runs `work` on the host and waits for its outcome; dropping the
    /// returned future cancels `work`.
    pub(crate) async fn run<F>(&self, work: F) -> Outcome
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let mut task = Abort(self.0.handle.spawn(work));
        match (&mut task.0).await {
            Ok(o) => o,
            // Shut down, or the work panicked (a bug: say so).
            Err(e) if e.is_panic() => Outcome::Panicked("a process call panicked".into()),
            Err(_) => Outcome::Cancelled,
        }
    }
}

/// Aborts the task when dropped unfinished.
struct Abort(tokio::task::JoinHandle<Outcome>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}
