//! Events: what a producer submits. An event names a tool, carries an
//! optional ordering key, a priority, a caller's tag, a payload, and what
//! the caller attaches for the handler.
//!
//! Payloads up to [`INLINE_PAYLOAD`] bytes live inline in the event
//! (smallvec), so the common small call moves through the rings without a
//! heap allocation. A larger payload spills to the heap once; the handler's
//! output [`Payload`] comes back in the completion, where a caller can
//! `clear()` it and reuse its buffer for the next event.

use std::any::Any;
use std::sync::Arc;

use smallvec::SmallVec;

/// Bytes a payload keeps inline before it spills to the heap.
pub const INLINE_PAYLOAD: usize = 48;

/// An event's or an outcome's bytes: inline up to [`INLINE_PAYLOAD`].
pub type Payload = SmallVec<[u8; INLINE_PAYLOAD]>;

/// A tool, as an index into the engine's [`ToolTable`](crate::ToolTable).
/// Interning names once keeps strings (and their reference counts) off the
/// hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ToolId(pub u32);

/// Admission priority. `Low` events are shed once their worker's ring is
/// fuller than `queue_watermark`; `Normal` events are only refused when the
/// ring is full or the in-flight budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// Refused only when the ring is full.
    #[default]
    Normal,
    /// Shed above the queue watermark.
    Low,
}

/// What a caller attaches to an event for its handler: the engine moves
/// it with the event and never looks inside; the handler takes it
/// ([`Event::take_attached`]) and downcasts it to the type the two agree
/// on (a server's per-call context: where progress goes, what it checked
/// already). Shared, so the caller can keep a handle to read what the
/// handler wrote into it.
pub type Attached = Arc<dyn Any + Send + Sync>;

/// One tool call to run.
///
/// # Examples
///
/// ```
/// use toolplane_core::{Event, Priority, ToolId};
///
/// let e = Event::new(ToolId(0), b"{\"x\":1}".as_slice())
///     .with_key(42)
///     .with_priority(Priority::Low)
///     .with_tag(7);
/// assert_eq!(e.key(), Some(42));
/// assert_eq!(e.payload().as_slice(), b"{\"x\":1}");
/// ```
#[derive(Debug, Clone)]
pub struct Event {
    pub(crate) tool: ToolId,
    pub(crate) key: Option<u64>,
    pub(crate) priority: Priority,
    pub(crate) tag: u64,
    /// Raw quanta timestamp stamped at admission.
    pub(crate) submitted: u64,
    pub(crate) payload: Payload,
    pub(crate) attached: Option<Attached>,
}

impl PartialEq for Event {
    /// Equal when every field is, the attachment by identity.
    fn eq(&self, other: &Event) -> bool {
        self.tool == other.tool
            && self.key == other.key
            && self.priority == other.priority
            && self.tag == other.tag
            && self.submitted == other.submitted
            && self.payload == other.payload
            && match (&self.attached, &other.attached) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for Event {}

impl Event {
    /// An unkeyed, normal-priority event. Unkeyed events are spread
    /// round-robin over the workers and carry no ordering promise.
    pub fn new(tool: ToolId, payload: impl Into<Payload>) -> Event {
        Event {
            tool,
            key: None,
            priority: Priority::Normal,
            tag: 0,
            submitted: 0,
            payload: payload.into(),
            attached: None,
        }
    }

    /// Sets the ordering key: events with the same key run on the same
    /// worker, one at a time, in the order one producer submitted them.
    #[must_use]
    pub fn with_key(mut self, key: u64) -> Event {
        self.key = Some(key);
        self
    }

    /// Sets the admission priority.
    #[must_use]
    pub fn with_priority(mut self, priority: Priority) -> Event {
        self.priority = priority;
        self
    }

    /// Sets the caller's tag, returned untouched in the completion (a
    /// request id, or the intended send time of an open-loop generator).
    #[must_use]
    pub fn with_tag(mut self, tag: u64) -> Event {
        self.tag = tag;
        self
    }

    /// Attaches `attached` for the handler (see [`Attached`]).
    #[must_use]
    pub fn with_attached(mut self, attached: Attached) -> Event {
        self.attached = Some(attached);
        self
    }

    /// What the caller attached, taken out (once).
    pub fn take_attached(&mut self) -> Option<Attached> {
        self.attached.take()
    }

    /// The tool to run.
    pub fn tool(&self) -> ToolId {
        self.tool
    }

    /// The ordering key, if any.
    pub fn key(&self) -> Option<u64> {
        self.key
    }

    /// The admission priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The caller's tag.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// The input bytes.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The input bytes, mutably (a handler may reuse them as its output).
    pub fn payload_mut(&mut self) -> &mut Payload {
        &mut self.payload
    }

    /// Takes the payload out, leaving an empty one.
    pub fn take_payload(&mut self) -> Payload {
        std::mem::take(&mut self.payload)
    }
}

/// The worker a key maps to: a Fibonacci-hash mix, then Lemire's
/// multiply-shift range reduction (no division on the hot path).
#[inline]
pub(crate) fn worker_for_key(key: u64, workers: usize) -> usize {
    let mixed = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((u128::from(mixed) * workers as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_workers() {
        let mut hits = [0usize; 4];
        for k in 0..4000u64 {
            hits[worker_for_key(k, 4)] += 1;
        }
        assert!(hits.iter().all(|&h| h > 800), "{hits:?}");
        assert_eq!(worker_for_key(7, 1), 0);
    }
}
