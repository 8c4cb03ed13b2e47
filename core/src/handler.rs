//! Handlers: what the engine calls on its worker threads.
//!
//! A [`Handler`] is shared by all workers and starts one
//! [`WorkerHandler`] per worker, on that worker's thread, so per-worker
//! state (an instance pool, a scratch buffer) needs no locking and need not
//! be `Send`. A call either finishes at once ([`Call::Done`]) or returns a
//! future ([`Call::Pending`]) that the worker's reactor drives while it
//! runs other calls: that is how a worker keeps many waiting calls in
//! flight.
//!
//! The worker thread runs inside a tokio current-thread runtime, so a
//! pending call may use tokio timers, I/O and `spawn_blocking`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bumpalo::Bump;

use crate::event::Event;
use crate::outcome::Outcome;
use crate::tools::ToolTable;

/// The error a handler's per-worker start-up may fail with.
pub type StartError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A call still running: the worker polls it on its reactor.
pub type PendingCall = Pin<Box<dyn Future<Output = Outcome> + 'static>>;

/// Calls the engine makes; shared by every worker.
pub trait Handler: Send + Sync + 'static {
    /// The state each worker keeps.
    type Worker: WorkerHandler;

    /// Builds worker `cx.worker`'s state, on that worker's thread, inside
    /// its runtime.
    ///
    /// # Errors
    ///
    /// A start-up failure fails [`EngineBuilder::build`](crate::EngineBuilder::build)
    /// with the worker's index and this error.
    fn start(&self, cx: &WorkerContext) -> Result<Self::Worker, StartError>;
}

/// One worker's handler state.
pub trait WorkerHandler: 'static {
    /// Runs one event. A panic here (or in the returned future) is caught
    /// and becomes [`Outcome::Panicked`]; the worker and this state live
    /// on, so keep the state consistent across a panic or rebuild it.
    fn call(&mut self, event: Event, cx: &mut CallContext<'_>) -> Call;
}

/// What a call returned.
pub enum Call {
    /// The outcome, at once.
    Done(Outcome),
    /// A future the worker drives; the outcome comes when it resolves.
    Pending(PendingCall),
}

impl Call {
    /// Wraps a future as a pending call.
    pub fn pending(future: impl Future<Output = Outcome> + 'static) -> Call {
        Call::Pending(Box::pin(future))
    }
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Call::Done(o) => f.debug_tuple("Done").field(o).finish(),
            Call::Pending(_) => f.write_str("Pending(..)"),
        }
    }
}

/// What a worker's handler is told when it starts.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    /// This worker's index, `0..workers`.
    pub worker: usize,
    /// How many workers the engine runs.
    pub workers: usize,
    /// Calls this worker keeps in flight at most.
    pub max_concurrent: usize,
    /// The engine's tool names.
    pub tools: Arc<ToolTable>,
}

/// Per-call context.
#[derive(Debug)]
pub struct CallContext<'a> {
    pub(crate) worker: usize,
    pub(crate) scratch: &'a Bump,
}

impl CallContext<'_> {
    /// The worker running the call.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Scratch memory for the synchronous part of the call, reset after
    /// the worker's current batch: allocate freely, it costs a pointer
    /// bump and is never freed one by one. A pending call's future cannot
    /// borrow it (it outlives the batch).
    pub fn scratch(&self) -> &Bump {
        self.scratch
    }
}

/// A handler made of a synchronous closure, cloned into every worker.
///
/// # Examples
///
/// ```
/// use toolplane_core::{handler_fn, Outcome};
///
/// let upper = handler_fn(|event| {
///     Outcome::Ok(event.payload().to_ascii_uppercase().into())
/// });
/// # let _ = upper;
/// ```
pub fn handler_fn<F>(f: F) -> FnHandler<F>
where
    F: Fn(Event) -> Outcome + Clone + Send + Sync + 'static,
{
    FnHandler(f)
}

/// See [`handler_fn`].
#[derive(Debug, Clone)]
pub struct FnHandler<F>(F);

impl<F> Handler for FnHandler<F>
where
    F: Fn(Event) -> Outcome + Clone + Send + Sync + 'static,
{
    type Worker = FnWorker<F>;

    fn start(&self, _cx: &WorkerContext) -> Result<Self::Worker, StartError> {
        Ok(FnWorker(self.0.clone()))
    }
}

/// A worker's copy of a [`handler_fn`] closure.
#[derive(Debug)]
pub struct FnWorker<F>(F);

impl<F> WorkerHandler for FnWorker<F>
where
    F: Fn(Event) -> Outcome + Clone + Send + Sync + 'static,
{
    #[inline]
    fn call(&mut self, event: Event, _cx: &mut CallContext<'_>) -> Call {
        Call::Done((self.0)(event))
    }
}

/// A handler made of an async closure: every call is a future the worker's
/// reactor drives (tokio timers and I/O work inside it).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use toolplane_core::{async_handler_fn, Outcome};
///
/// let slow = async_handler_fn(|event| async move {
///     tokio::time::sleep(Duration::from_millis(10)).await;
///     Outcome::Ok(event.payload().clone())
/// });
/// # let _ = slow;
/// ```
pub fn async_handler_fn<F, Fut>(f: F) -> AsyncFnHandler<F>
where
    F: Fn(Event) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + 'static,
{
    AsyncFnHandler(f)
}

/// See [`async_handler_fn`].
#[derive(Debug, Clone)]
pub struct AsyncFnHandler<F>(F);

impl<F, Fut> Handler for AsyncFnHandler<F>
where
    F: Fn(Event) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + 'static,
{
    type Worker = AsyncFnWorker<F>;

    fn start(&self, _cx: &WorkerContext) -> Result<Self::Worker, StartError> {
        Ok(AsyncFnWorker(self.0.clone()))
    }
}

/// A worker's copy of an [`async_handler_fn`] closure.
#[derive(Debug)]
pub struct AsyncFnWorker<F>(F);

impl<F, Fut> WorkerHandler for AsyncFnWorker<F>
where
    F: Fn(Event) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + 'static,
{
    fn call(&mut self, event: Event, _cx: &mut CallContext<'_>) -> Call {
        Call::pending((self.0)(event))
    }
}
