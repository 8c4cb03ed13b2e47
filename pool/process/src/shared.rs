//! What a process tool's calls, pool and supervisor share: the program,
//! the pool's shape and limits, the counters, the turns, a set's members.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use toolplane_core::{Outcome, RejectReason};

use super::remote::Remote;
use super::spawn::Launch;
use super::stats;
use crate::spec::{Member, PoolSpec, ProcessLimits, Protocol};

/// What a tool's calls, pool and supervisor share.
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) protocol: Protocol,
    /// Where its sessions come from: processes it starts, or a remote
    /// server.
    pub(crate) origin: Origin,
    pub(crate) pool: PoolSpec,
    pub(crate) limits: ProcessLimits,
    pub(crate) counters: stats::Counters,
    /// Turns: processes (exec) or call slots across processes.
    pub(crate) turns: Arc<tokio::sync::Semaphore>,
    /// A set's members now, and whom to tell when they change.
    pub(crate) members: std::sync::Mutex<Vec<Member>>,
    pub(crate) on_members: std::sync::Mutex<Option<MembersChanged>>,
    /// The data directory's limit, when its processes may write there
    /// (no `[permissions]`, or a write grant over or in it): a call is
    /// refused while the directory is at its limit, and each call asks
    /// for a walk when it ends (`toolplane_tool::quota`).
    pub(crate) quota: Option<Arc<toolplane_tool::quota::DataQuota>>,
}

/// Where a pooled tool's sessions come from.
pub(crate) enum Origin {
    /// A program it starts (`runtime = "process"`).
    Spawn(Launch),
    /// An MCP server elsewhere (`runtime = "remote"`).
    Remote(Remote),
}

/// Told when a set's members change (an upstream's `list_changed`).
pub type MembersChanged = Box<dyn Fn() + Send + Sync>;

impl Shared {
    /// Replaces a set's members and tells the registry.
    pub(crate) fn set_members(&self, members: Vec<Member>) {
        {
            let mut now = self.members.lock().unwrap_or_else(|p| p.into_inner());
            // A re-list that changed nothing tells nobody.
            if *now == members {
                return;
            }
            *now = members;
        }
        if let Some(f) = &*self.on_members.lock().unwrap_or_else(|p| p.into_inner()) {
            f();
        }
    }

    /// A turn, waiting for one (within `deadline`) when `pool.queue` calls
    /// are not waiting already; else the outcome to answer (`Refused`,
    /// [`RejectReason::Busy`], when the queue is full).
    pub(crate) async fn turn(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Outcome> {
        if let Ok(t) = Arc::clone(&self.turns).try_acquire_owned() {
            return Ok(t);
        }
        let c = &self.counters;
        if c.queued.fetch_add(1, Ordering::Relaxed) >= self.pool.queue as u64 {
            c.queued.fetch_sub(1, Ordering::Relaxed);
            c.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Outcome::Refused(
                RejectReason::Busy,
                format!(
                    "tool {} is busy: {} calls wait for a turn already (pool.queue = {}); retry later",
                    self.name, self.pool.queue, self.pool.queue
                )
                .into(),
            ));
        }
        // Counted out however the wait ends (the caller may go away).
        let _queued = Queued(c);
        let t = tokio::time::timeout_at(deadline, Arc::clone(&self.turns).acquire_owned()).await;
        match t {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(_)) => Err(Outcome::Cancelled),
            Err(_) => Err(Outcome::Timeout),
        }
    }
}

/// A call counted as waiting for a turn until dropped.
struct Queued<'a>(&'a stats::Counters);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}
