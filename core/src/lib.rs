//! toolplane-core: the engine of toolplane, a data plane for tool calls.
//!
//! An [`Engine`] runs one worker thread per core (pinned when asked). Each
//! [`Producer`] owns an rtrb SPSC ring to every worker; the [`Injector`]
//! serves many-thread and async callers. Events with the same key run on
//! the same worker, one at a time, in submission order; each worker is a
//! small reactor (a tokio current-thread runtime) that keeps up to
//! `max_concurrent_per_worker` waiting calls in flight. Admission is
//! bounded by a global in-flight budget, a shedding watermark for
//! low-priority events and full rings, and every refusal hands the event
//! back. Every accepted event ends in exactly one [`Outcome`]; shutdown
//! drains or cancels and reports `accepted == sum of outcomes`.
//!
//! Steady state on the producer path allocates nothing: events travel in
//! recycled, cache-line-aligned slots (the worker writes the completion
//! into the slot that brought the event), payloads up to
//! [`INLINE_PAYLOAD`] bytes are inline, and per-batch scratch lives in a
//! bumpalo arena. `core/tests/zero_alloc.rs` counts every allocation to
//! prove it.
//!
//! ```
//! use std::time::Duration;
//! use toolplane_core::{handler_fn, Engine, Event, Outcome};
//!
//! let engine = Engine::builder()
//!     .workers(2)
//!     .pin_workers(false)
//!     .build(handler_fn(|e| Outcome::Ok(e.payload().clone())))
//!     .unwrap();
//! let echo = engine.tool("echo");
//! let mut producer = engine.producer();
//! for i in 0..100u64 {
//!     producer.submit_timeout(Event::new(echo, b"hi".as_slice()).with_key(i % 7), Duration::from_secs(1)).unwrap();
//! }
//! let mut seen = 0;
//! while seen < 100 {
//!     seen += producer.drain(|c| assert!(matches!(c.outcome, Outcome::Ok(_))));
//! }
//! let report = engine.shutdown(Duration::from_secs(1));
//! assert_eq!(report.accepted, 100);
//! assert!(report.is_balanced());
//! ```

// The engine's lock-free parts are rtrb, crossbeam and flume, plus two
// small protocols on safe atomics (doorbell, admission gate) checked with
// loom and Miri. The one `unsafe` is `slice`'s two system calls.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod admission;
#[doc(hidden)]
pub mod bench_hook;
pub mod config;
mod doorbell;
mod engine;
mod event;
mod handler;
mod injector;
mod metrics;
mod outcome;
mod producer;
mod shared;
mod slice;
mod span;
mod sync;
mod tools;
mod worker;

pub use admission::{RejectReason, Rejected};
pub use config::{Config, ConfigError};
pub use engine::{BuildError, Engine, EngineBuilder};
pub use event::{Attached, Event, INLINE_PAYLOAD, Payload, Priority, ToolId};
pub use handler::{
    AsyncFnHandler, AsyncFnWorker, Call, CallContext, FnHandler, FnWorker, Handler, PendingCall,
    StartError, WorkerContext, WorkerHandler, async_handler_fn, handler_fn,
};
pub use injector::{InjectError, Injector, Lost, Ticket};
pub use metrics::{Latencies, Metrics, OutcomeCounts, RejectCounts, Report, WorkerMetrics};
pub use outcome::{Completion, Outcome, OutcomeKind, Sink, Timestamps};
pub use producer::Producer;
pub use span::{Span, SpanExport};
pub use tools::ToolTable;

pub use quanta::Clock;
