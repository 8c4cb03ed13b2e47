//! A pool of long-lived processes for one tool: started at load (`pool.min`)
//! or on demand up to `pool.max`, each answering up to
//! `pool.max_inflight_per_process` calls at once, replaced after
//! `pool.recycle_after` calls, stopped after `pool.idle_timeout` idle above
//! `min`; calls beyond that wait (at most `pool.queue`) for a turn.
//!
//! Supervision: a process that ends without being asked to is replaced
//! (the calls in flight on it end `Error` with its exit status and stderr
//! tail). One that ends before it ever answered, within [`STABLE_AFTER`]
//! of starting, is a failure; the supervisor's verdict on failures (the
//! back-off, *down*) is [`crate::health`]. While down, calls fail at once
//! with the reason until a process starts and answers again, and `tools
//! list`, `/readyz` and `/metrics` show it failed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use toolplane_core::Outcome;

use super::health::Health;
use super::proc::Proc;
use super::shared::Shared;
use crate::error::{ListError, Unavailable};

/// A process that lived this long had started well, whatever ended it.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How often the supervisor looks at the pool.
const SUPERVISE_EVERY: Duration = Duration::from_millis(500);

/// The processes of one tool.
pub(crate) struct Warm {
    me: Weak<Warm>,
    shared: Arc<Shared>,
    /// The process host's runtime: processes start there (their pipes are
    /// its reactor's, their death signal its thread's), while calls run on
    /// the caller's reactor.
    host: tokio::runtime::Handle,
    state: Mutex<State>,
    /// A process became ready or ended, or a start failed.
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// Running, taking calls.
    procs: Vec<Arc<Proc>>,
    starting: usize,
    serial: u64,
    /// Failures in a row, the back-off, down or up.
    health: Health,
    closed: bool,
    /// No longer listed: processes stop once idle, none is kept for
    /// `pool.min` (`ProcessTool::retire`).
    retired: bool,
}

impl Warm {
    /// A pool for `shared`, its supervisor running on the current runtime
    /// (the process host's).
    pub(crate) fn start(shared: Arc<Shared>) -> Arc<Warm> {
        let noun = match shared.origin {
            super::shared::Origin::Spawn(_) => "processes",
            super::shared::Origin::Remote(_) => "sessions",
        };
        let warm = Arc::new_cyclic(|me| Warm {
            me: me.clone(),
            shared,
            host: tokio::runtime::Handle::current(),
            state: Mutex::new(State {
                health: Health::new(noun),
                ..State::default()
            }),
            changed: Notify::new(),
        });
        tokio::spawn(supervise(Arc::downgrade(&warm)));
        warm
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the tool is down (its processes keep failing, and the last
    /// reason), if it is.
    pub(crate) fn down(&self) -> Option<Arc<str>> {
        self.state().health.down().cloned()
    }

    /// Runs one call, on the caller's reactor (a process it needs started
    /// starts on the host).
    pub(crate) async fn call(
        &self,
        target: &str,
        input: &[u8],
        deadline: tokio::time::Instant,
        meta: toolplane_tool::CallMeta,
    ) -> Outcome {
        let s = &self.shared;
        let began = Instant::now();
        let turn = match s.turn(deadline).await {
            Ok(t) => t,
            Err(o) => return o,
        };
        let proc = match tokio::time::timeout_at(deadline, self.take()).await {
            Ok(Ok(p)) => p,
            Ok(Err(why)) => return Outcome::Error(format!("tool {}: {why}", s.name).into()),
            Err(_) => return Outcome::Timeout,
        };
        s.counters.queue_wait.record(began.elapsed());
        let served = Instant::now();
        let out = proc.call(target, input, deadline, meta).await;
        s.counters.service.record(served.elapsed());
        self.give_back(&proc);
        drop(turn);
        out
    }

    /// A process with room for one more call (counted in), started if none
    /// has room; or why there is none.
    async fn take(&self) -> Result<Arc<Proc>, Unavailable> {
        let cap = self.shared.pool.max_inflight_per_process;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait_until = {
                let mut st = self.state();
                if st.closed {
                    return Err(Unavailable::Unloaded);
                }
                let best = st
                    .procs
                    .iter()
                    .filter(|p| p.life.exit().is_none())
                    .min_by_key(|p| p.life.load());
                if let Some(p) = best.filter(|p| p.life.load() < cap) {
                    p.life.admit();
                    return Ok(Arc::clone(p));
                }
                // Down: fail at once, unless a process runs (the
                // supervisor's probe), which may answer and bring it up.
                if let Some(why) = st.health.down()
                    && best.is_none()
                {
                    return Err(Unavailable::Down(Arc::clone(why)));
                }
                let now = Instant::now();
                match st.health.retry_at() {
                    Some(at) if at > now => Some(at),
                    // A process is starting (the supervisor's for pool.min,
                    // or another caller's): its room comes first, rather
                    // than a start per waiting call.
                    _ if st.starting > 0 => Some(now + SUPERVISE_EVERY),
                    _ if st.procs.len() + st.starting < self.shared.pool.max => {
                        st.starting += 1;
                        None
                    }
                    // Every process busy or starting: wait for a change.
                    _ => Some(now + SUPERVISE_EVERY),
                }
            };
            match wait_until {
                None => {
                    let p = self.start_on_host().await?;
                    // A jsonl process takes calls at once (its stdin
                    // buffers them while it starts); an MCP one has
                    // finished its handshake.
                    p.life.admit();
                    return Ok(p);
                }
                Some(at) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(at.into()) => {}
                    }
                }
            }
        }
    }

    /// [`Warm::start_one`] on the process host; it finishes (and the new
    /// process joins the pool) even if the caller goes away.
    async fn start_on_host(&self) -> Result<Arc<Proc>, Unavailable> {
        let Some(me) = self.me.upgrade() else {
            self.state().starting -= 1;
            return Err(Unavailable::Unloaded);
        };
        match self.host.spawn(async move { me.start_one().await }).await {
            Ok(r) => r,
            Err(_) => Err(Unavailable::HostStopped),
        }
    }

    /// Starts a process (the caller counted it in `starting`); on the
    /// process host.
    async fn start_one(&self) -> Result<Arc<Proc>, Unavailable> {
        let s = &self.shared;
        let serial = {
            let mut st = self.state();
            st.serial += 1;
            st.serial
        };
        s.counters.starting.fetch_add(1, Ordering::Relaxed);
        let weak = self.me.clone();
        let started = Proc::start(s, serial, move |p| {
            if let Some(w) = weak.upgrade() {
                w.ended(p);
            }
        })
        .await;
        s.counters.starting.fetch_sub(1, Ordering::Relaxed);
        let mut st = self.state();
        st.starting -= 1;
        match started {
            Ok(p) if st.closed => {
                p.life.stop();
                Err(Unavailable::Unloaded)
            }
            Ok(p) => {
                s.counters.alive.fetch_add(1, Ordering::Relaxed);
                st.health.started(&s.name);
                st.procs.push(Arc::clone(&p));
                drop(st);
                self.changed.notify_waiters();
                Ok(p)
            }
            Err(e) => {
                let e = Arc::new(e);
                // A program that is not there fails every start the same
                // way: the tool is down at once (and still retried, with
                // back-off, in case someone installs it).
                let missing = e.program_missing();
                self.failed(&mut st, &e.to_string(), missing);
                drop(st);
                self.changed.notify_waiters();
                Err(Unavailable::Start(e))
            }
        }
    }

    /// The tools of an MCP upstream, from one of its processes (started if
    /// none runs).
    pub(crate) async fn members(&self) -> Result<Vec<crate::spec::Member>, ListError> {
        let p = self.take().await?;
        let listed = match &p.wire {
            super::proc::Wire::Mcp(up) => {
                let wait = self.shared.limits.startup_timeout;
                match tokio::time::timeout(wait, up.tools()).await {
                    Ok(listed) => listed.map_err(ListError::Upstream),
                    Err(_) => {
                        // It may be stuck as a whole: the next call starts afresh.
                        p.life.stop();
                        Err(ListError::Timeout(wait))
                    }
                }
            }
            super::proc::Wire::Jsonl(_) => Err(ListError::NotMcp),
        };
        p.life.not_a_call();
        if listed.is_ok() {
            p.life.mark_answered();
        }
        self.give_back(&p);
        listed
    }

    /// A failure (see [`Health::failed`]), counted as a restart.
    fn failed(&self, st: &mut State, why: &str, missing: bool) {
        self.shared
            .counters
            .restarts
            .fetch_add(1, Ordering::Relaxed);
        st.health
            .failed(&self.shared.name, why, missing, Instant::now());
    }

    /// A call on `p` finished.
    fn give_back(&self, p: &Arc<Proc>) {
        p.life.release();
        if p.life.answered() {
            self.state().health.answered(&self.shared.name);
        }
        let recycle = self
            .shared
            .pool
            .recycle_after
            .is_some_and(|n| p.life.served() >= n);
        if recycle {
            self.retire(p);
        }
        if p.life.load() == 0 && p.life.stopping() {
            p.life.stop();
        }
        self.changed.notify_waiters();
    }

    /// Takes `p` out of the pool; it stops once its calls are answered.
    fn retire(&self, p: &Arc<Proc>) {
        let mut st = self.state();
        if let Some(i) = st.procs.iter().position(|q| Arc::ptr_eq(q, p)) {
            st.procs.swap_remove(i);
            self.shared.counters.alive.fetch_sub(1, Ordering::Relaxed);
        }
        drop(st);
        p.life.retire();
        if p.life.load() == 0 {
            p.life.stop();
        }
    }

    /// `p` ended (its calls are answered already).
    fn ended(&self, p: &Arc<Proc>) {
        let why = Arc::clone(p.life.exit().expect("ended after finish"));
        let mut st = self.state();
        if let Some(i) = st.procs.iter().position(|q| Arc::ptr_eq(q, p)) {
            st.procs.swap_remove(i);
            self.shared.counters.alive.fetch_sub(1, Ordering::Relaxed);
        }
        if p.life.stopping() {
            tracing::debug!(tool = %self.shared.name, "{why}");
        } else {
            tracing::warn!(tool = %self.shared.name, "{why}");
            // A process that answered, or ran a while, had started well:
            // what ended it is not a crash loop.
            let early = !p.life.answered() && p.life.started.elapsed() < STABLE_AFTER;
            if early {
                self.failed(&mut st, &why, false);
            } else {
                self.shared
                    .counters
                    .restarts
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Keeps `min` running, stops idle processes above it.
    async fn tend(&self) {
        let spec = &self.shared.pool;
        let mut idle = Vec::new();
        let start = {
            let mut st = self.state();
            if st.closed {
                return;
            }
            let retired = st.retired;
            let min = if retired { 0 } else { spec.min };
            let mut running = st.procs.len();
            for p in &st.procs {
                if running > min
                    && p.life.load() == 0
                    && (retired || p.life.last_used().elapsed() >= spec.idle_timeout)
                {
                    idle.push(Arc::clone(p));
                    running -= 1;
                }
            }
            let ready = st.health.may_start(Instant::now());
            let start = if !ready || retired {
                0
            } else if st.health.down().is_some() && running + st.starting == 0 {
                // A probe: calls fail at once while down, so only the
                // supervisor tries again (after the back-off).
                1
            } else {
                spec.min.saturating_sub(running + st.starting)
            };
            st.starting += start;
            start
        };
        for p in &idle {
            tracing::debug!(tool = %self.shared.name, serial = p.life.serial, "idle: stopping");
            self.retire(p);
        }
        for i in 0..start {
            if self.start_one().await.is_err() {
                // The rest wait for the back-off.
                self.state().starting -= start - i - 1;
                break;
            }
        }
    }
}

impl Warm {
    /// Stops every process (stdin closed, killed if still running
    /// `STOP_GRACE` later) and takes no more calls; returns once they have
    /// ended, with how many there were.
    pub(crate) async fn close(&self) -> usize {
        let procs: Vec<Arc<Proc>> = {
            let mut st = self.state();
            st.closed = true;
            std::mem::take(&mut st.procs)
        };
        for p in &procs {
            self.shared.counters.alive.fetch_sub(1, Ordering::Relaxed);
            p.life.stop();
        }
        for p in &procs {
            p.life
                .exit_within(super::life::STOP_GRACE + Duration::from_secs(1))
                .await;
        }
        procs.len()
    }
}

impl Warm {
    /// See [`State::retired`]; the supervisor stops the idle processes at
    /// its next look.
    pub(crate) fn retire_all(&self) {
        self.state().retired = true;
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        st.closed = true;
        for p in st.procs.drain(..) {
            p.life.stop();
        }
    }
}

async fn supervise(warm: Weak<Warm>) {
    let mut tick = tokio::time::interval(SUPERVISE_EVERY);
    loop {
        tick.tick().await;
        let Some(w) = warm.upgrade() else { return };
        w.tend().await;
    }
}
