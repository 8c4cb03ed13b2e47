//! Outcomes and completions: what comes back for every accepted event.
//!
//! Every accepted event ends in exactly one [`Outcome`]. The completion
//! carries the raw timestamps taken on the way (submitted, started,
//! finished), so a consumer that drains late does not inflate the engine's
//! latency: delivery lag is the consumer's own, measured apart.

use std::borrow::Cow;
use std::time::Duration;

use crate::admission::RejectReason;
use crate::event::{Event, Payload, ToolId};

/// How one accepted event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler succeeded with this output.
    Ok(Payload),
    /// The handler (or tool) reported an error.
    Error(Cow<'static, str>),
    /// The call ran past its deadline.
    Timeout,
    /// A sandboxed call trapped; the text names the trap.
    Trap(Cow<'static, str>),
    /// The handler panicked; the worker caught it and lives on.
    Panicked(Cow<'static, str>),
    /// The engine shut down before the call could finish.
    Cancelled,
    /// The tool refused the call for load, after the engine accepted it
    /// (a process tool's queue was full: [`RejectReason::Busy`]); the text
    /// names the tool and the limit. Like a refusal at admission, it asks
    /// the caller to retry later; unlike one, it is the event's outcome.
    Refused(RejectReason, Cow<'static, str>),
}

impl Outcome {
    /// The outcome's kind, without its data.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Ok(_) => OutcomeKind::Ok,
            Outcome::Error(_) => OutcomeKind::Error,
            Outcome::Timeout => OutcomeKind::Timeout,
            Outcome::Trap(_) => OutcomeKind::Trap,
            Outcome::Panicked(_) => OutcomeKind::Panicked,
            Outcome::Cancelled => OutcomeKind::Cancelled,
            Outcome::Refused(..) => OutcomeKind::Refused,
        }
    }

    /// Shorthand for an `Error` outcome with a message.
    pub fn error(message: impl Into<Cow<'static, str>>) -> Outcome {
        Outcome::Error(message.into())
    }
}

/// The kind of an [`Outcome`], usable as an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutcomeKind {
    /// See [`Outcome::Ok`].
    Ok = 0,
    /// See [`Outcome::Error`].
    Error = 1,
    /// See [`Outcome::Timeout`].
    Timeout = 2,
    /// See [`Outcome::Trap`].
    Trap = 3,
    /// See [`Outcome::Panicked`].
    Panicked = 4,
    /// See [`Outcome::Cancelled`].
    Cancelled = 5,
    /// See [`Outcome::Refused`].
    Refused = 6,
}

impl OutcomeKind {
    /// Every kind, in index order.
    pub const ALL: [OutcomeKind; 7] = [
        OutcomeKind::Ok,
        OutcomeKind::Error,
        OutcomeKind::Timeout,
        OutcomeKind::Trap,
        OutcomeKind::Panicked,
        OutcomeKind::Cancelled,
        OutcomeKind::Refused,
    ];

    /// A lowercase name, as used in span exports and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Ok => "ok",
            OutcomeKind::Error => "error",
            OutcomeKind::Timeout => "timeout",
            OutcomeKind::Trap => "trap",
            OutcomeKind::Panicked => "panicked",
            OutcomeKind::Cancelled => "cancelled",
            OutcomeKind::Refused => "refused",
        }
    }
}

/// Raw quanta timestamps of one event. Convert with the engine's clock
/// ([`Engine::clock`](crate::Engine::clock)); raw values keep the hot path
/// free of scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamps {
    /// When admission accepted the event.
    pub submitted: u64,
    /// When a worker called the handler (equal to `finished` for events
    /// cancelled before they started).
    pub started: u64,
    /// When the outcome was known.
    pub finished: u64,
}

impl Timestamps {
    /// Time spent queued before the handler ran.
    pub fn queue_wait(&self, clock: &quanta::Clock) -> Duration {
        clock.delta(self.submitted, self.started)
    }

    /// Time the handler took (including any time its call was parked).
    pub fn service(&self, clock: &quanta::Clock) -> Duration {
        clock.delta(self.started, self.finished)
    }

    /// Admission to outcome.
    pub fn end_to_end(&self, clock: &quanta::Clock) -> Duration {
        clock.delta(self.submitted, self.finished)
    }
}

/// The answer to one accepted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The event's tag, returned untouched.
    pub tag: u64,
    /// The event's tool.
    pub tool: ToolId,
    /// The event's key.
    pub key: Option<u64>,
    /// The worker that ran it.
    pub worker: u16,
    /// How it ended.
    pub outcome: Outcome,
    /// When it was submitted, started and finished.
    pub times: Timestamps,
}

/// Receives completions on the worker threads instead of the producers'
/// completion rings. Called concurrently from every worker; keep it short
/// (it runs on the hot path).
pub trait Sink: Send + Sync + 'static {
    /// One completion, on worker `worker`'s thread.
    fn complete(&self, worker: usize, completion: Completion);
}

impl<F> Sink for F
where
    F: Fn(usize, Completion) + Send + Sync + 'static,
{
    fn complete(&self, worker: usize, completion: Completion) {
        self(worker, completion);
    }
}

/// A recycled event slot. A producer moves an event into a slot from its
/// pool and sends the slot (a pointer) to a worker; the worker takes the
/// event out, writes the completion into the same slot and sends it back;
/// the producer takes the completion out and reuses the slot. The rings
/// carry 8-byte pointers, and each slot's cache lines cross between the
/// two cores once each way per event, instead of an event copy one way and
/// a completion copy the other.
#[derive(Debug, Default)]
pub(crate) enum Slot {
    #[default]
    Empty,
    Event(Event),
    Done(Completion),
}

/// A slot's storage: aligned to a cache line, so that a slot of up to 128
/// bytes spans exactly two lines (mimalloc's 144-byte size class would
/// otherwise straddle three).
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct SlotCell(Slot);

impl SlotCell {
    /// Takes the contents out, leaving the slot empty.
    #[inline]
    pub(crate) fn take(&mut self) -> Slot {
        std::mem::take(&mut self.0)
    }

    /// Fills the slot.
    #[inline]
    pub(crate) fn put(&mut self, slot: Slot) {
        self.0 = slot;
    }
}

/// A slot as it travels through the rings.
pub(crate) type SlotBox = Box<SlotCell>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Two cache lines per slot: see [`SlotCell`]. A field added to events
    /// or completions that breaks this costs throughput (PERF.md).
    #[test]
    fn a_slot_fits_two_cache_lines() {
        assert_eq!(
            size_of::<SlotCell>(),
            128,
            "slot {} bytes",
            size_of::<Slot>()
        );
        assert_eq!(align_of::<SlotCell>(), 64);
    }
}
